# testing.strategies: public Hypothesis strategies for property tests of the
# Kubernetes network model: random clusters (generated as YAML and loaded
# through kdp.k8s.load_cluster_text, so the control plane allocates pod IPs,
# ClusterIPs, nodePorts and endpoints as for real input), the endpoints and
# service addresses of a cluster, flows between them, raw frames and pcap-like
# streams. Owns no kdp behaviour; must not reach into the datapath.
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import NamedTuple

import yaml
from hypothesis import strategies as st

from .. import wire
from ..k8s import load_cluster_text
from ..k8s.cni import EDGE_LINK
from ..k8s.model import Cluster, Service, ServicePort

__all__ = [
    "Flow", "ServiceTarget", "SERVICE_TYPES", "cluster_specs", "cluster_texts", "clusters",
    "render_cluster", "pod_endpoints", "node_endpoints", "service_targets", "ext_addresses",
    "flows", "frames", "pcap_streams", "service_port", "cluster_networks",
]

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "Headless")
APPS = ("web", "api", "db")                     # pod labels; services select one (or "none")
POD_PORTS = (80, 8080, 53, 9090)                # container port numbers drawn from here
PORT_NAMES = ("http", "alt", "dns")             # container port names (named targetPorts)
SERVICE_PORTS = (80, 53, 443)
LB_POOL = IPv4Network("20.0.0.0/24")            # status.loadBalancer.ingress addresses
EXTERNAL_IP_POOL = IPv4Network("198.51.100.0/24")
NODE_TCP_PORTS = (22, 10250, 10256)             # what every node listens on
EXT_PORTS = (("tcp", 80), ("tcp", 443), ("udp", 53))


class Flow(NamedTuple):
    """One packet to trace: `emu.trace(*flow)` (src, dst, proto, sport, dport)."""

    src: str
    dst: str
    proto: str
    sport: int
    dport: int


class ServiceTarget(NamedTuple):
    """One address a service answers on: dst is `svc/NS/NAME` (its ClusterIP), a
    node IP (NodePort), a load balancer IP or an external IP."""

    svc: str                    # "svc/NS/NAME"
    dst: str                    # what to pass as trace()'s DST
    port: int                   # the destination port on dst
    proto: str                  # "tcp" | "udp"
    kind: str                   # cluster-ip | node-port | load-balancer | external-ip
    port_name: str | None       # the service port's name


# --- clusters ---------------------------------------------------------------------

def _pod_spec(draw, i: int, nodes: list[str], namespaces: tuple[str, ...]) -> dict:
    ports: list[dict] = []
    used: set[tuple[int, str]] = set()
    free_names = list(PORT_NAMES)
    containers = []
    for c in range(draw(st.integers(1, 2))):
        cports = []
        for _ in range(draw(st.integers(0 if c else 1, 2))):
            port = draw(st.sampled_from(POD_PORTS))
            proto = draw(st.sampled_from(("TCP", "UDP")))
            if (port, proto) in used:
                continue
            used.add((port, proto))
            entry = {"containerPort": port, "protocol": proto}
            if free_names and draw(st.booleans()):
                entry["name"] = free_names.pop(draw(st.integers(0, len(free_names) - 1)))
            cports.append(entry)
        ports += cports
        containers.append({"name": f"c{c}", "image": "example/app", "ports": cports})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"p{i}", "namespace": draw(st.sampled_from(namespaces[:1] * 2 + namespaces)),
                        "labels": {"app": draw(st.sampled_from(APPS))}},
           "spec": {"containers": containers}}
    node = draw(st.none() | st.sampled_from(nodes))
    if node is not None:
        pod["spec"]["nodeName"] = node
    state = draw(st.sampled_from(("ready",) * 4 + ("not-ready", "terminating")))
    if state == "not-ready":
        pod["status"] = {"conditions": [{"type": "Ready", "status": "False"}]}
    elif state == "terminating":
        pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return pod


def _service_spec(draw, i: int, kind: str, pods: list[dict], external_ips: bool) -> dict:
    n_ports = draw(st.integers(1, 2))
    ports, seen = [], set()
    for j in range(n_ports):
        port, proto = draw(st.sampled_from(SERVICE_PORTS)), draw(st.sampled_from(("TCP", "UDP")))
        if (port, proto) in seen:
            continue
        seen.add((port, proto))
        sp = {"name": f"p{j}", "port": port, "protocol": proto}
        target = draw(st.sampled_from(("same", "number", "name")))
        if target == "number":
            sp["targetPort"] = draw(st.sampled_from(POD_PORTS))
        elif target == "name":
            sp["targetPort"] = draw(st.sampled_from(PORT_NAMES))
        ports.append(sp)
    # mostly select the app of some pod, in that pod's namespace; sometimes nothing
    like = draw(st.sampled_from(pods))["metadata"]
    app = draw(st.sampled_from((like["labels"]["app"],) * 3 + ("none",)))
    spec: dict = {"selector": {"app": app}, "ports": ports}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": f"s{i}", "namespace": like["namespace"]}, "spec": spec}
    if kind == "Headless":
        spec["clusterIP"] = "None"
        return svc
    spec["type"] = kind
    if kind in ("NodePort", "LoadBalancer") or (external_ips and draw(st.booleans())):
        spec["externalTrafficPolicy"] = draw(st.sampled_from(("Cluster", "Local")))
    spec["internalTrafficPolicy"] = draw(st.sampled_from(("Cluster", "Local")))
    if draw(st.booleans()):
        spec["sessionAffinity"] = "ClientIP"
    if kind == "LoadBalancer":
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": str(LB_POOL[10 + i])}]}}
    if external_ips and kind == "ClusterIP" and "externalTrafficPolicy" in spec:
        spec["externalIPs"] = [str(EXTERNAL_IP_POOL[10 + i])]
    return svc


@st.composite
def cluster_specs(draw, max_nodes: int = 3, max_pods: int = 6,
                  plugins: tuple[str, ...] = ("kubenet", "azure"),
                  service_types: tuple[str, ...] = SERVICE_TYPES, max_services: int = 4,
                  hairpin_modes: tuple[str, ...] = ("hairpin-veth", "promiscuous-bridge"),
                  namespaces: tuple[str, ...] = ("default", "team-a"),
                  external_ips: bool = True, masquerade_all: tuple[bool, ...] = (False,),
                  cluster_cidrs: tuple[str | None, ...] = (None,)) -> list[dict]:
    """The manifests of a random cluster, as a list of Kubernetes objects
    (a ClusterConfig first). See `clusters` for what varies."""
    n_nodes = draw(st.integers(1, max_nodes))
    nodes = [f"n{k}" for k in range(1, n_nodes + 1)]
    config = {"apiVersion": "kdp.dev/v1alpha1", "kind": "ClusterConfig",
              "metadata": {"name": "prop"},
              "spec": {"networkPlugin": draw(st.sampled_from(plugins)),
                       "podCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/16",
                       "dnsServiceIP": "10.96.0.10", "vnetSubnet": "10.240.0.0/16",
                       "hairpinMode": draw(st.sampled_from(hairpin_modes)),
                       "nodes": [{"name": n} for n in nodes],
                       "kubeProxy": {"masqueradeAll": draw(st.sampled_from(masquerade_all))}}}
    cidr = draw(st.sampled_from(cluster_cidrs))
    if cidr is not None:
        config["spec"]["kubeProxy"]["clusterCIDR"] = cidr
    objs: list[dict] = [config]
    objs += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
             for ns in namespaces if ns not in ("default", "kube-system")]
    pods = [_pod_spec(draw, i, nodes, namespaces) for i in range(draw(st.integers(1, max_pods)))]
    objs += pods
    if service_types:
        kinds = draw(st.lists(st.sampled_from(service_types), max_size=max_services))
        objs += [_service_spec(draw, i, k, pods, external_ips) for i, k in enumerate(kinds)]
    return objs


def render_cluster(objs: list[dict]) -> str:
    """Manifests -> one multi-document YAML text."""
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=None)


def cluster_texts(**kw) -> st.SearchStrategy[str]:
    """The YAML text of a random cluster (same arguments as `clusters`)."""
    return cluster_specs(**kw).map(render_cluster)


def _load(text: str) -> Cluster:
    return load_cluster_text(text, file="hypothesis.yaml")


def clusters(max_nodes: int = 3, max_pods: int = 6,
             plugins: tuple[str, ...] = ("kubenet", "azure"),
             service_types: tuple[str, ...] = SERVICE_TYPES, **kw) -> st.SearchStrategy[Cluster]:
    """Valid, resolved clusters: 1..max_nodes nodes, 1..max_pods pods (1-2
    containers each with TCP/UDP ports, never two on the same port/protocol, some
    named; pinned to a node or scheduled; ready, not ready or terminating), and up
    to `max_services` services of `service_types` ("ClusterIP", "NodePort",
    "LoadBalancer" with a status ingress IP, "Headless"): selectors matching some
    pods or none, numbered/named/implicit target ports, external and internal
    traffic policies, ClientIP affinity, some with externalIPs. Generated as YAML
    and loaded with `kdp.k8s.load_cluster_text`, so addresses, nodePorts and
    endpoints come from kdp's control plane. Extra keywords: `max_services`,
    `hairpin_modes`, `namespaces`, `external_ips` (bool), `masquerade_all` and
    `cluster_cidrs` (kube-proxy's clusterCIDR; None: its default) as tuples of
    the values to draw from."""
    return cluster_texts(max_nodes=max_nodes, max_pods=max_pods, plugins=plugins,
                         service_types=service_types, **kw).map(_load)


# --- endpoints of a cluster -------------------------------------------------------

def pod_endpoints(cluster: Cluster, host_network: bool = False) -> list[str]:
    """`pod/NS/NAME` of every pod (with its own network namespace unless host_network)."""
    return [f"pod/{p.namespace}/{p.name}" for p in cluster.pods if host_network or not p.host_network]


def node_endpoints(cluster: Cluster) -> list[str]:
    return [f"node/{n.name}" for n in cluster.nodes]


def service_targets(cluster: Cluster, kinds: tuple[str, ...] = (
        "cluster-ip", "node-port", "load-balancer", "external-ip")) -> list[ServiceTarget]:
    """Every (address, port, protocol) a service answers on: its ClusterIP
    (`svc/NS/NAME`), every node's IP with each nodePort, its load balancer IPs
    and external IPs. Headless and ExternalName services have none."""
    out: list[ServiceTarget] = []
    for svc in cluster.services:
        if svc.cluster_ip is None:
            continue
        spec = f"svc/{svc.namespace}/{svc.name}"
        for sp in svc.ports:
            proto = sp.protocol.lower()
            if proto not in ("tcp", "udp"):
                continue
            found = [("cluster-ip", spec, sp.port)]
            if sp.node_port:
                found += [("node-port", str(n.ip), sp.node_port) for n in cluster.nodes]
            found += [("load-balancer", str(ip), sp.port) for ip in svc.load_balancer_ips]
            found += [("external-ip", str(ip), sp.port) for ip in svc.external_ips]
            out += [ServiceTarget(spec, dst, port, proto, kind, sp.name)
                    for kind, dst, port in found if kind in kinds]
    return out


def cluster_networks(cluster: Cluster) -> list[IPv4Network]:
    """Every range and address that is inside the cluster (not an outside host)."""
    cfg = cluster.config
    nets = [cfg.pod_cidr, cfg.service_cidr, cfg.vnet_subnet, cfg.docker_bridge.network, EDGE_LINK]
    for svc in cluster.services:
        nets += [IPv4Network(f"{ip}/32") for ip in list(svc.load_balancer_ips) + list(svc.external_ips)]
    return nets


_SPECIAL = [IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3")]


def ext_addresses(cluster: Cluster) -> st.SearchStrategy[IPv4Address]:
    """Unicast IPv4 addresses of hosts outside the cluster (not in the pod,
    service, VNet or docker ranges, not a load balancer or external IP, not
    loopback, link-local or multicast)."""
    banned = cluster_networks(cluster) + _SPECIAL
    well_known = st.sampled_from([IPv4Address(a) for a in ("93.184.216.34", "8.8.8.8", "1.1.1.1",
                                                            "203.0.113.5", "192.168.1.20")])
    anywhere = st.integers(int(IPv4Address("1.0.0.1")), int(IPv4Address("223.255.255.254"))).map(IPv4Address)
    return (well_known | anywhere).filter(lambda ip: not any(ip in n for n in banned))


def _pod_target(draw, cluster: Cluster, spec: str) -> tuple[str, int]:
    _, ns, name = spec.split("/", 2)
    ports = [(p.protocol.lower(), p.port) for p in cluster.pod(ns, name).ports()
             if p.protocol in ("TCP", "UDP")]
    choices = ports + [("icmp", 0), (draw(st.sampled_from(("tcp", "udp"))), draw(st.sampled_from(POD_PORTS)))]
    return draw(st.sampled_from(choices))


@st.composite
def flows(draw, cluster: Cluster, sources: tuple[str, ...] = ("pod", "node", "ext"),
          targets: tuple[str, ...] = ("pod", "node", "ext", "service")) -> Flow:
    """A flow between endpoints of `cluster`: from a pod, a node or an outside
    host (`ext/ADDR`) to a pod, a node, an outside host or a service address
    (ClusterIP as `svc/NS/NAME`, nodePorts on node IPs, load balancer and
    external IPs). Ports are ones something listens on, mostly."""
    src_choices = {"pod": pod_endpoints(cluster), "node": node_endpoints(cluster), "ext": [None]}
    kinds = [k for k in sources if src_choices[k]]
    src_kind = draw(st.sampled_from(kinds))
    src = draw(st.sampled_from(src_choices[src_kind]))
    if src is None:
        src = f"ext/{draw(ext_addresses(cluster))}"
    svc = service_targets(cluster)
    dst_choices = {"pod": bool(pod_endpoints(cluster)), "node": True, "ext": True, "service": bool(svc)}
    dst_kind = draw(st.sampled_from([k for k in targets if dst_choices[k]]))
    if dst_kind == "service":
        t = draw(st.sampled_from(svc))
        dst, proto, dport = t.dst, t.proto, t.port
    elif dst_kind == "pod":
        dst = draw(st.sampled_from(pod_endpoints(cluster)))
        proto, dport = _pod_target(draw, cluster, dst)
    elif dst_kind == "node":
        dst = draw(st.sampled_from(node_endpoints(cluster)))
        proto, dport = draw(st.sampled_from([("tcp", p) for p in NODE_TCP_PORTS] + [("icmp", 0)]))
    else:
        dst = f"ext/{draw(ext_addresses(cluster))}"
        proto, dport = draw(st.sampled_from(list(EXT_PORTS) + [("icmp", 0)]))
    sport = draw(st.integers(32768, 60999))
    return Flow(src, dst, proto, sport, dport)


# --- raw frames -------------------------------------------------------------------

def _addresses(emu) -> list[IPv4Address]:
    c = emu.cluster
    out = [p.ip for p in c.pods] + [n.ip for n in c.nodes]
    for s in c.services:
        out += ([s.cluster_ip] if s.cluster_ip else []) + list(s.load_balancer_ips) + list(s.external_ips)
    return sorted(set(out)) or [IPv4Address("10.240.0.4")]


def _macs(emu) -> list[str]:
    return sorted({d.mac for ns in emu.topology.namespaces.values() for d in ns.devices.values()
                   if d.kind != "loopback"})


def _gateway_mac(emu, dev) -> str | None:
    """The MAC the endpoint's default gateway answers ARP with: the device
    holding the gateway address behind the veth (kubenet's cbr0) or on the
    underlay (the edge router), else the veth peer itself (Azure CNI's proxy
    ARP)."""
    rt = dev.namespace.routes.lookup(IPv4Address("8.8.8.8"))        # the default route
    gw = rt.via if rt is not None else None
    if dev.peer is not None:
        near = [dev.peer] + list(dev.peer.namespace.devices.values())
    else:
        near = list(dev.segment.devices) if dev.segment is not None else []
    for d in near:
        if gw is not None and d.has_address(gw):
            return d.mac
    return dev.peer.mac if dev.peer is not None else None


@st.composite
def _l4(draw, ip_proto: int):
    if ip_proto == wire.PROTO_TCP:
        flags = draw(st.sampled_from((wire.SYN, wire.SYN | wire.ACK, wire.ACK, wire.RST,
                                      wire.FIN | wire.ACK, wire.PSH | wire.ACK, 0)))
        return wire.TCP(draw(st.integers(1, 65535)), draw(st.sampled_from(POD_PORTS + (22, 10250, 30000))),
                        draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)), flags,
                        payload=draw(st.binary(max_size=24)))
    if ip_proto == wire.PROTO_UDP:
        return wire.UDP(draw(st.integers(1, 65535)), draw(st.sampled_from(POD_PORTS + (443,))),
                        payload=draw(st.binary(max_size=24)))
    typ = draw(st.sampled_from((wire.ICMP_ECHO, wire.ICMP_ECHOREPLY, wire.ICMP_DEST_UNREACH)))
    return wire.ICMP(typ, 3 if typ == wire.ICMP_DEST_UNREACH else 0,
                     rest=draw(st.integers(0, 2**32 - 1)), payload=draw(st.binary(max_size=32)))


@st.composite
def _frame(draw, emu, at: str, valid: bool, as_scapy: bool, arp: bool):
    dev = emu.attach_device(at)
    addrs = _addresses(emu)
    gateway = _gateway_mac(emu, dev)
    macs = _macs(emu)
    others = st.sampled_from(macs + ["ff:ff:ff:ff:ff:ff"])
    dst_mac = draw(st.just(gateway) | others if gateway else others)     # half to the gateway
    own = emu.resolve(at).ip
    if not valid and draw(st.integers(0, 9)) == 0:
        typ = draw(st.sampled_from((wire.ETH_P_ARP, 0x86DD, 0x88CC) if arp else (0x86DD, 0x88CC)))
        if typ == wire.ETH_P_ARP:
            req = wire.ARP(draw(st.sampled_from((1, 2))), dev.mac, own, "00:00:00:00:00:00",
                           draw(st.sampled_from(addrs)))
            pkt = wire.Packet(wire.Ether(dst_mac, dev.mac, typ), arp=req)
        else:
            pkt = wire.Packet(wire.Ether(dst_mac, dev.mac, typ), payload=draw(st.binary(max_size=40)))
        raw = wire.emit(pkt)
    else:
        ip_proto = draw(st.sampled_from((wire.PROTO_TCP, wire.PROTO_UDP, wire.PROTO_ICMP)))
        src = own if valid or draw(st.booleans()) else draw(st.sampled_from(addrs))
        dst = draw(st.sampled_from(addrs) | ext_addresses(emu.cluster))
        ttl = draw(st.sampled_from((64, 64, 1, 2, 255)) if valid else st.integers(0, 255))
        ip = wire.IPv4(src, dst, ip_proto, ttl, draw(st.integers(0, 0xFFFF)), 2)
        if not valid and draw(st.integers(0, 7)) == 0:
            ip = wire.IPv4(src, dst, ip_proto, ttl, ip.ident, draw(st.sampled_from((0, 1, 3))),
                           draw(st.integers(0, 0x1FFF)))
        pkt = wire.finalize(wire.Packet(wire.Ether(dst_mac, dev.mac, wire.ETH_P_IP), ip=ip,
                                        l4=draw(_l4(ip_proto))))
        raw = bytearray(wire.emit(pkt))
        if not valid:
            for _ in range(draw(st.integers(0, 2))):          # flip a byte (checksums, lengths...)
                i = draw(st.integers(14, len(raw) - 1))
                raw[i] ^= draw(st.integers(1, 255))
            if draw(st.integers(0, 7)) == 0:
                raw = raw[:draw(st.integers(0, len(raw)))]
        raw = bytes(raw)
    if as_scapy:
        from scapy.layers.l2 import Ether
        return Ether(raw)
    return raw


def frames(emu, at: str, valid: bool = True, as_scapy: bool = False, arp: bool = True):
    """Raw Ethernet frames to transmit on `at`'s eth0 with `emu.send(frame, at)`:
    from the endpoint's own MAC to its gateway, another device of the cluster
    or broadcast; IPv4 TCP/UDP/ICMP between cluster and outside addresses, with
    correct checksums. valid=False adds spoofed sources, any TTL, fragments,
    flipped bytes (bad checksums, lengths, versions), truncation, ARP (unless
    arp=False) and unknown ethertypes. Bytes, or Scapy packets with as_scapy=True."""
    return _frame(emu, at, valid, as_scapy, arp)


@st.composite
def pcap_streams(draw, emu, at: str, min_size: int = 1, max_size: int = 12, start: float = 0.0,
                 max_gap: float = 400.0, valid: bool = True, arp: bool = True
                 ) -> list[tuple[float, bytes]]:
    """A list of (timestamp, frame bytes) with non-decreasing timestamps (whole
    microseconds, as a pcap stores them) from `start`; gaps up to `max_gap`
    seconds, so conntrack, ARP and FDB entries expire in between. Feed it to
    `emu.send_many(stream, at)` or `kdp.io.write_pcap(path, stream)`."""
    raws = draw(st.lists(frames(emu, at, valid=valid, arp=arp), min_size=min_size, max_size=max_size))
    gaps = draw(st.lists(st.one_of(st.integers(0, 2_000_000), st.integers(0, int(max_gap * 1e6))),
                         min_size=len(raws), max_size=len(raws)))
    t, out = int(start * 1e6), []
    for raw, gap in zip(raws, gaps):
        t += gap
        out.append((t / 1e6, raw))
    return out


def service_port(svc: Service, port) -> ServicePort:
    """The ServicePort of svc named `port` (a name, a number or the object)."""
    if isinstance(port, ServicePort):
        return port
    for sp in svc.ports:
        if port in (sp.name, sp.port):
            return sp
    raise KeyError(f"service {svc.key} has no port {port!r}")
