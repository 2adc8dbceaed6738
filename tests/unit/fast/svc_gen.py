# Random clusters and first packets for the service matcher equivalence tests:
# Services of every kind (ClusterIP, NodePort, LoadBalancer with and without
# source ranges, externalIPs incl. a node's own address), both traffic
# policies, ClientIP affinity with short and default timeouts, health-check node
# ports, endpoints ready / serving+terminating / not ready on every node and on
# a node's own address (hostNetwork); kube-proxy options (masqueradeAll,
# clusterCIDR, the local detector, localhostNodePorts, nfacct). Built as kdp.k8s.model
# objects.
from __future__ import annotations

from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

from hypothesis import strategies as st

from kdp.k8s.model import (Cluster, ClusterConfig, Endpoint, KubeProxyConfig, Node, Service,
                           ServicePort)

NODE_IPS = [A("10.240.0.4"), A("10.240.0.5"), A("10.240.0.6")]
LB_IPS = [A("20.1.1.1"), A("20.1.1.2"), A("20.1.1.3")]
EXT_IPS = [A("198.51.100.7"), A("198.51.100.8")]
RANGES = [[N("203.0.113.0/24")], [N("10.240.0.0/16")], [N("203.0.113.0/24"), N("8.8.8.0/24")],
          [N("0.0.0.0/0")]]
CLIENTS = [A("203.0.113.9"), A("8.8.8.8"), A("198.51.100.77")]
SVC_PORTS = [80, 443, 53]


@st.composite
def endpoints(draw, port: ServicePort, nodes: list[Node], used: set):
    out = []
    for _ in range(draw(st.integers(0, 4))):
        node = draw(st.sampled_from(nodes))
        if draw(st.integers(0, 9)) == 0:
            ip = node.ip                                    # hostNetwork endpoint
        else:
            ip = node.pod_cidr.network_address + draw(st.integers(2, 7))
        state = draw(st.sampled_from(["ready"] * 5 + ["terminating", "notready", "gone"]))
        ready, serving, term = {"ready": (True, True, False), "terminating": (False, True, True),
                                "notready": (False, False, False),
                                "gone": (False, False, True)}[state]
        tport = draw(st.sampled_from([8080, 53, 9000]))
        if (ip, tport) in used:
            continue
        used.add((ip, tport))
        out.append(Endpoint(ip, tport, port.name, port.protocol, node.name, ready, serving, term))
    return out


@st.composite
def clusters(draw) -> Cluster:
    kp = KubeProxyConfig(masquerade_all=draw(st.booleans()),
                         cluster_cidr=draw(st.sampled_from([None, None, N("10.244.0.0/17")])),
                         localhost_node_ports=draw(st.booleans()), nfacct=draw(st.booleans()))
    if hasattr(kp, "detect_local_mode"):          # kube-proxy's local detector: ClusterCIDR or none
        kp.detect_local_mode = draw(st.sampled_from([None, None, "None"]))
    cfg = ClusterConfig(pod_cidr=N("10.244.0.0/16"), service_cidr=N("10.96.0.0/16"),
                        vnet_subnet=N("10.240.0.0/16"), kube_proxy=kp)
    nodes = [Node(f"n{i}", NODE_IPS[i], N(f"10.244.{i}.0/24"))
             for i in range(draw(st.integers(1, 3)))]
    services, node_ports, hcs = [], iter(range(30000, 30100)), iter(range(32000, 32100))
    for k in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
        n_ports = draw(st.integers(1, 2))
        ports = []
        for j in range(n_ports):
            proto = draw(st.sampled_from(["TCP", "TCP", "UDP"]))
            ports.append(ServicePort(SVC_PORTS[j] if j else draw(st.sampled_from(SVC_PORTS)),
                                     proto, f"p{j}" if n_ports > 1 or draw(st.booleans()) else None,
                                     8080, next(node_ports) if kind != "ClusterIP" else None))
        svc = Service("ns", f"s{k}", kind, A("10.96.0.0") + 10 + k, ports)
        if draw(st.integers(0, 3)) == 0:
            svc.external_ips = draw(st.lists(st.sampled_from(EXT_IPS + NODE_IPS[:1]),
                                             min_size=1, max_size=2, unique=True))
        if kind == "LoadBalancer":
            svc.load_balancer_ips = [LB_IPS[k % 3]] if draw(st.booleans()) else []
            if draw(st.booleans()):
                svc.load_balancer_source_ranges = draw(st.sampled_from(RANGES))
        local_ok = kind != "ClusterIP" or svc.external_ips
        svc.external_traffic_policy = draw(st.sampled_from(["Cluster", "Local"])) if local_ok \
            else "Cluster"
        svc.internal_traffic_policy = draw(st.sampled_from(["Cluster", "Cluster", "Local"]))
        if draw(st.integers(0, 2)) == 0:
            svc.session_affinity = "ClientIP"
            svc.affinity_timeout = draw(st.sampled_from([10, 60, 10800]))
        if kind == "LoadBalancer" and svc.external_traffic_policy == "Local":
            svc.health_check_node_port = next(hcs)
        used: set = set()
        for port in ports:
            svc.endpoints += draw(endpoints(port, nodes, used))
        services.append(svc)
    return Cluster(cfg, nodes, services=services)


def addresses_of(cluster: Cluster, node: str) -> dict[str, list[int]]:
    """Interesting sources, destinations and ports for first packets on `node`."""
    me = cluster.node(node)
    pods = [int(n.pod_cidr.network_address) + k for n in cluster.nodes for k in (2, 3, 5, 7)]
    eps = [int(e.ip) for s in cluster.services for e in s.endpoints]
    svc_ips = [int(s.cluster_ip) for s in cluster.services]
    ext = [int(ip) for s in cluster.services for ip in s.external_ips + s.load_balancer_ips]
    srcs = pods + eps + [int(me.ip), int(A("127.0.0.1")), int(me.pod_cidr.network_address) + 1,
                         int(NODE_IPS[1]), int(NODE_IPS[2])] + [int(c) for c in CLIENTS]
    dsts = svc_ips + ext + [int(me.ip), int(A("127.0.0.1")), int(NODE_IPS[1]), int(A("10.96.0.99")),
                            int(me.pod_cidr.network_address) + 1] + eps[:3]
    ports = sorted({p.port for s in cluster.services for p in s.ports}
                   | {p.node_port for s in cluster.services for p in s.ports if p.node_port}
                   | {s.health_check_node_port for s in cluster.services
                      if s.health_check_node_port} | {8080, 22})
    locals_ = [int(me.ip), int(A("127.0.0.1")), int(me.pod_cidr.network_address) + 1]
    targets = []                                    # (dst, dport, proto) a rule is written for
    for s in cluster.services:
        for p in s.ports:
            proto = 6 if p.protocol == "TCP" else 17
            targets.append((int(s.cluster_ip), p.port, proto))
            targets += [(int(ip), p.port, proto) for ip in s.external_ips + s.load_balancer_ips]
            if p.node_port:
                targets += [(d, p.node_port, proto) for d in locals_ + [int(NODE_IPS[1])]]
        if s.health_check_node_port:
            targets.append((int(me.ip), s.health_check_node_port, 6))
    return {"srcs": srcs, "dsts": dsts, "ports": ports, "locals": locals_, "targets": targets}


@st.composite
def first_packets(draw, cluster: Cluster, node: str):
    """(dt, proto, src, dst, sport, dport, in_local) with sources reused, so that
    affinity lists are hit, refreshed and expire."""
    a = addresses_of(cluster, node)
    proto = draw(st.sampled_from([6, 6, 6, 17, 17, 1]))
    src = draw(st.sampled_from(a["srcs"]))
    dst = draw(st.sampled_from(a["dsts"]))
    sport = draw(st.integers(1024, 65535))
    dport = draw(st.sampled_from(a["ports"]) | st.integers(1, 65535))
    if a["targets"] and draw(st.integers(0, 9)) < 7:
        dst, dport, proto = draw(st.sampled_from(a["targets"]))
    if proto == 1:
        sport, dport = draw(st.integers(0, 65535)), 8 << 8
    local = src in a["locals"] and draw(st.booleans())
    dt = draw(st.sampled_from([0.0, 0.0, 1.0, 5.0, 11.0, 61.0, 20000.0]))
    return dt, proto, src, dst, sport, dport, local
