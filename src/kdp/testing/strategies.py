# testing.strategies: public Hypothesis strategies for property tests of the
# Kubernetes network model: random clusters (generated as YAML and loaded
# through kdp.k8s.load_cluster_text, so the control plane allocates pod IPs,
# ClusterIPs, nodePorts and endpoints as for real input; they print as their
# YAML), the endpoints and service addresses of a cluster, flows between them
# (narrowed by what they target, without filtering), the Service and port a
# flow addresses, raw frames and pcap-like streams. Owns no kdp behaviour;
# must not reach into the datapath.
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import NamedTuple

import yaml
from hypothesis import strategies as st

from .. import wire
from ..k8s.cni import EDGE_LINK
from ..k8s.model import Cluster, Service, ServicePort
from .replay import ClusterText, ManifestCluster, cluster_from_yaml

__all__ = [
    "Flow", "ServiceTarget", "ServiceFlow", "SERVICE_TYPES", "SERVICE_KINDS", "PROTOCOLS",
    "TRAFFIC_POLICIES", "cluster_specs", "cluster_texts", "clusters", "render_cluster",
    "pod_endpoints", "node_endpoints", "service_targets", "ext_addresses", "flows", "service_flows",
    "flow_service", "every_flow", "frames", "pcap_streams", "service_port", "cluster_networks",
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
SERVICE_KINDS = ("cluster-ip", "node-port", "load-balancer", "external-ip")
PROTOCOLS = ("tcp", "udp", "icmp")
TRAFFIC_POLICIES = ("Cluster", "Local")
SOURCE_KINDS = ("pod", "node", "ext")
TARGET_KINDS = ("pod", "node", "ext", "service")


class Flow(NamedTuple):
    """One packet to trace: `emu.trace(*flow)` (src, dst, proto, sport, dport).
    src: pod/NS/NAME, node/NAME or ext/ADDR; dst: the same, svc/NS/NAME (a
    ClusterIP) or an IPv4 address (a node IP with a nodePort, a load balancer
    or external IP)."""

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


class ServiceFlow(NamedTuple):
    """A flow to a service address with the Service and ServicePort it
    addresses: what service_flows() draws and flow_service() finds."""

    flow: Flow
    service: Service
    port: ServicePort
    kind: str                   # cluster-ip | node-port | load-balancer | external-ip

    @property
    def policy(self) -> str:
        """The traffic policy that governs this flow: internalTrafficPolicy
        for a ClusterIP, externalTrafficPolicy for the others."""
        svc = self.service
        return svc.internal_traffic_policy if self.kind == "cluster-ip" else svc.external_traffic_policy


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


def _service_spec(draw, i: int, kind: str, pods: list[dict], external_ips: bool,
                  etps: tuple[str, ...], itps: tuple[str, ...]) -> dict:
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
        spec["externalTrafficPolicy"] = draw(st.sampled_from(etps))
    spec["internalTrafficPolicy"] = draw(st.sampled_from(itps))
    if draw(st.booleans()):
        spec["sessionAffinity"] = "ClientIP"
    if kind == "LoadBalancer":
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": str(LB_POOL[10 + i])}]}}
    if external_ips and kind == "ClusterIP" and "externalTrafficPolicy" in spec:
        spec["externalIPs"] = [str(EXTERNAL_IP_POOL[10 + i])]
    return svc


def cluster_specs(max_nodes: int = 3, max_pods: int = 6,
                  plugins: tuple[str, ...] = ("kubenet", "azure"),
                  service_types: tuple[str, ...] = SERVICE_TYPES, max_services: int = 4,
                  hairpin_modes: tuple[str, ...] = ("hairpin-veth", "promiscuous-bridge"),
                  namespaces: tuple[str, ...] = ("default", "team-a"),
                  external_ips: bool = True, masquerade_all: tuple[bool, ...] = (False,),
                  cluster_cidrs: tuple[str | None, ...] = (None,), min_services: int = 0,
                  external_traffic_policies: tuple[str, ...] = TRAFFIC_POLICIES,
                  internal_traffic_policies: tuple[str, ...] = TRAFFIC_POLICIES) -> list[dict]:
    """The manifests of a random cluster, as a list of Kubernetes objects
    (a ClusterConfig first). See `clusters` for what varies."""
    _check_choices("plugins", plugins, ("kubenet", "azure"))
    _check_choices("service_types", service_types, SERVICE_TYPES, empty_ok=True)
    _check_choices("external_traffic_policies", external_traffic_policies, TRAFFIC_POLICIES)
    _check_choices("internal_traffic_policies", internal_traffic_policies, TRAFFIC_POLICIES)
    if not 0 <= min_services <= max_services:
        raise ValueError(f"cluster_specs: min_services={min_services} must be between 0 and "
                         f"max_services={max_services}")
    if min_services and not service_types:
        raise ValueError("cluster_specs: min_services > 0 needs at least one service type")
    return _cluster_specs(max_nodes, max_pods, plugins, service_types, max_services, hairpin_modes,
                          namespaces, external_ips, masquerade_all, cluster_cidrs, min_services,
                          external_traffic_policies, internal_traffic_policies)


def _check_choices(name: str, got, allowed, empty_ok: bool = False) -> None:
    if isinstance(got, str):
        raise TypeError(f"{name}={got!r}: give a tuple of values, e.g. ({got!r},)")
    bad = [g for g in got if g not in allowed]
    if bad or (not got and not empty_ok):
        raise ValueError(f"{name}={tuple(got)!r}: expected {'' if empty_ok else 'one or more of '}"
                         f"{', '.join(map(repr, allowed))}")


@st.composite
def _cluster_specs(draw, max_nodes, max_pods, plugins, service_types, max_services, hairpin_modes,
                   namespaces, external_ips, masquerade_all, cluster_cidrs, min_services, etps,
                   itps) -> list[dict]:
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
        kinds = draw(st.lists(st.sampled_from(service_types), min_size=min_services,
                              max_size=max_services))
        objs += [_service_spec(draw, i, k, pods, external_ips, etps, itps) for i, k in enumerate(kinds)]
    return objs


def render_cluster(objs: list[dict]) -> ClusterText:
    """Manifests -> one multi-document YAML text (a str that prints as the
    YAML itself; `.save(path)` writes it for `kdp trace PATH`)."""
    return ClusterText(yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=None))


def cluster_texts(**kw) -> st.SearchStrategy[ClusterText]:
    """The YAML text of a random cluster (same arguments as `clusters`)."""
    return cluster_specs(**kw).map(render_cluster)


def _load(text: str) -> ManifestCluster:
    cluster = cluster_from_yaml(text, file="hypothesis.yaml")
    cluster.generated = True
    return cluster


def clusters(max_nodes: int = 3, max_pods: int = 6,
             plugins: tuple[str, ...] = ("kubenet", "azure"),
             service_types: tuple[str, ...] = SERVICE_TYPES, **kw) -> st.SearchStrategy[ManifestCluster]:
    """Valid, resolved clusters: 1..max_nodes nodes, 1..max_pods pods (1-2
    containers each with TCP/UDP ports, never two on the same port/protocol, some
    named; pinned to a node or scheduled; ready, not ready or terminating), and
    `min_services`..`max_services` (default 0..4) services of `service_types`
    ("ClusterIP", "NodePort", "LoadBalancer" with a status ingress IP,
    "Headless"): selectors matching some pods or none, numbered/named/implicit
    target ports, external and internal traffic policies (drawn from
    `external_traffic_policies` and `internal_traffic_policies`, default both
    "Cluster" and "Local"), ClientIP affinity, some with externalIPs.
    Generated as YAML and loaded with `kdp.k8s.load_cluster_text`, so
    addresses, nodePorts and endpoints come from kdp's control plane. Each is
    a ManifestCluster: it prints as its YAML (in falsifying examples too) and
    `.save(path)` writes it for `kdp trace`. Extra keywords: `hairpin_modes`,
    `namespaces`, `external_ips` (bool), `masquerade_all` and `cluster_cidrs`
    (kube-proxy's clusterCIDR; None: its default) as tuples of the values to
    draw from. To make flows() always find a target you narrow it to, narrow
    the clusters the same way (e.g. service_types=("NodePort",),
    min_services=1, external_traffic_policies=("Local",))."""
    return cluster_texts(max_nodes=max_nodes, max_pods=max_pods, plugins=plugins,
                         service_types=service_types, **kw).map(_load)


# --- endpoints of a cluster -------------------------------------------------------

def pod_endpoints(cluster: Cluster, host_network: bool = False) -> list[str]:
    """`pod/NS/NAME` of every pod (with its own network namespace unless host_network)."""
    return [f"pod/{p.namespace}/{p.name}" for p in cluster.pods if host_network or not p.host_network]


def node_endpoints(cluster: Cluster) -> list[str]:
    return [f"node/{n.name}" for n in cluster.nodes]


def service_targets(cluster: Cluster, kinds: tuple[str, ...] = SERVICE_KINDS) -> list[ServiceTarget]:
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


# --- flows ---------------------------------------------------------------------------

def _spec_of(item) -> str:
    """A kind or endpoint spec; Service objects become svc/NS/NAME."""
    if isinstance(item, Service):
        return f"svc/{item.namespace}/{item.name}"
    if not isinstance(item, str):
        raise TypeError(f"expected a kind or an endpoint like 'pod/NS/NAME', got {item!r}")
    return item


def _split(items, kinds: tuple[str, ...], what: str, cluster: Cluster) -> tuple[list[str], list[str]]:
    """(kinds, endpoint specs) named in sources/targets, each checked."""
    if isinstance(items, str):
        raise TypeError(f"{what}={items!r}: give a tuple, e.g. ({items!r},)")
    ks, specs = [], []
    for item in map(_spec_of, items):
        if item in kinds:
            ks.append(item)
            continue
        kind, _, rest = item.partition("/")
        allowed = [k for k in kinds if k != "service"] + (["svc"] if "service" in kinds else [])
        if kind not in allowed or not rest:
            raise ValueError(f"{what}: {item!r} is neither one of {kinds} nor an endpoint "
                             f"({', '.join(k + '/...' for k in allowed)})")
        try:
            if kind == "pod":
                cluster.pod(*rest.split("/", 1))
            elif kind == "node":
                cluster.node(rest)
            elif kind == "svc":
                cluster.service(*rest.split("/", 1))
            else:
                ip_address(rest)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{what}: {item!r}: no such {kind} in the cluster") from None
        specs.append(item)
    return ks, specs


def _pod_ports(cluster: Cluster, spec: str, protocols: tuple[str, ...]) -> st.SearchStrategy:
    """(proto, port) to send to a pod: a port it declares, a port from
    POD_PORTS (maybe closed) or ICMP echo, among `protocols`."""
    _, ns, name = spec.split("/", 2)
    declared = [(p.protocol.lower(), p.port) for p in cluster.pod(ns, name).ports()
                if p.protocol.lower() in protocols]
    parts = []
    if declared:
        parts.append(st.sampled_from(declared))
    if "icmp" in protocols:
        parts.append(st.just(("icmp", 0)))
    l4 = [p for p in ("tcp", "udp") if p in protocols]
    if l4:
        parts.append(st.tuples(st.sampled_from(l4), st.sampled_from(POD_PORTS)))
    return st.one_of(parts)


class _Targets:
    """The destinations flows() may draw, computed once per call."""

    def __init__(self, cluster: Cluster, targets, service_kinds, traffic_policies, protocols):
        kinds, specs = _split(targets, TARGET_KINDS, "targets", cluster)
        bad = [k for k in service_kinds if k not in SERVICE_KINDS]
        if bad or isinstance(service_kinds, str):
            raise ValueError(f"service_kinds={service_kinds!r}: expected a tuple of {SERVICE_KINDS}")
        if isinstance(traffic_policies, str) or any(p not in TRAFFIC_POLICIES for p in traffic_policies):
            raise ValueError(f"traffic_policies={traffic_policies!r}: expected a tuple of {TRAFFIC_POLICIES}")
        if isinstance(protocols, str) or any(p not in PROTOCOLS for p in protocols) or not protocols:
            raise ValueError(f"protocols={protocols!r}: expected a tuple of {PROTOCOLS}")
        self.pods = [x for x in pod_endpoints(cluster) if "pod" in kinds or x in specs]
        self.nodes = [x for x in node_endpoints(cluster) if "node" in kinds or x in specs]
        self.ext_fixed = [x for x in specs if x.startswith("ext/")]
        self.ext_any = "ext" in kinds
        wanted_svcs = {x for x in specs if x.startswith("svc/")}
        self.services = [t for t in service_targets(cluster, tuple(service_kinds))
                         if ("service" in kinds or t.svc in wanted_svcs) and t.proto in protocols
                         and _policy(cluster, t) in traffic_policies]
        self.protocols = tuple(protocols)
        self.node_ports = [("tcp", p) for p in NODE_TCP_PORTS if "tcp" in protocols] + \
            ([("icmp", 0)] if "icmp" in protocols else [])
        self.ext_ports = [x for x in EXT_PORTS if x[0] in protocols] + \
            ([("icmp", 0)] if "icmp" in protocols else [])

    def strategy(self, cluster: Cluster) -> st.SearchStrategy | None:
        parts = []
        if self.pods:
            parts.append(st.sampled_from(self.pods).flatmap(
                lambda dst: _pod_ports(cluster, dst, self.protocols).map(lambda pp: (dst, *pp))))
        if self.nodes and self.node_ports:
            parts.append(st.tuples(st.sampled_from(self.nodes), st.sampled_from(self.node_ports))
                         .map(lambda x: (x[0], *x[1])))
        if (self.ext_any or self.ext_fixed) and self.ext_ports:
            addrs = st.sampled_from(self.ext_fixed) if self.ext_fixed else st.nothing()
            if self.ext_any:
                addrs = addrs | ext_addresses(cluster).map(lambda ip: f"ext/{ip}")
            parts.append(st.tuples(addrs, st.sampled_from(self.ext_ports)).map(lambda x: (x[0], *x[1])))
        if self.services:
            parts.append(st.sampled_from(self.services).map(lambda t: (t.dst, t.proto, t.port)))
        return st.one_of(parts) if parts else None


def _policy(cluster: Cluster, t: ServiceTarget) -> str:
    svc = cluster.service(*t.svc.split("/")[1:])
    return svc.internal_traffic_policy if t.kind == "cluster-ip" else svc.external_traffic_policy


def _sources(cluster: Cluster, sources) -> st.SearchStrategy | None:
    kinds, specs = _split(sources, SOURCE_KINDS, "sources", cluster)
    fixed = [x for x in pod_endpoints(cluster) if "pod" in kinds] + \
        [x for x in node_endpoints(cluster) if "node" in kinds] + specs
    parts = [st.sampled_from(fixed)] if fixed else []
    if "ext" in kinds:
        parts.append(ext_addresses(cluster).map(lambda ip: f"ext/{ip}"))
    return st.one_of(parts) if parts else None


def _nothing_for(cluster: Cluster, why: str) -> st.SearchStrategy:
    """No flow fits: for a generated cluster Hypothesis discards the example;
    for your own cluster that is a mistake in the test, said at once."""
    if getattr(cluster, "generated", False):
        return st.nothing()
    raise ValueError(f"flows: {why}")


def flows(cluster: Cluster, sources=SOURCE_KINDS, targets=None, *,
          service_kinds: tuple[str, ...] = SERVICE_KINDS,
          traffic_policies: tuple[str, ...] = TRAFFIC_POLICIES,
          protocols: tuple[str, ...] = PROTOCOLS) -> st.SearchStrategy[Flow]:
    """Flows between endpoints of `cluster`, for `emu.trace(*flow)`.

    sources: kinds ("pod", "node", "ext": an outside host) and/or endpoints
    ("pod/NS/NAME", "node/NAME", "ext/ADDR"). targets: kinds ("pod", "node",
    "ext", "service": every service address) and/or endpoints (the same, plus
    "svc/NS/NAME" or a Service: that Service's addresses); default all four
    kinds, or only "service" when service_kinds or traffic_policies narrow.
    service_kinds: which service addresses ("cluster-ip", "node-port": every
    node IP with the nodePort, "load-balancer", "external-ip").
    traffic_policies: services whose governing policy is one of these
    (internalTrafficPolicy for a ClusterIP, externalTrafficPolicy otherwise).
    protocols: "tcp", "udp", "icmp" (services: tcp and udp only).

    Narrowing picks from what matches; nothing is filtered away. When nothing
    in a generated cluster matches, the example is discarded (narrow
    clusters() alike); for any other cluster that is a ValueError naming what
    is missing. Source ports are drawn from the ephemeral range."""
    narrowed = tuple(service_kinds) != SERVICE_KINDS or tuple(traffic_policies) != TRAFFIC_POLICIES
    if targets is None:
        targets = ("service",) if narrowed else TARGET_KINDS
    dsts = _Targets(cluster, targets, service_kinds, traffic_policies, protocols)
    src = _sources(cluster, sources)
    dst = dsts.strategy(cluster)
    if src is None:
        return _nothing_for(cluster, f"no source among {tuple(sources)} in this cluster")
    if dst is None:
        have = sorted({f"{t.svc} {t.kind} {t.proto} ({_policy(cluster, t)})"
                       for t in service_targets(cluster)}) or ["none"]
        return _nothing_for(cluster, f"no target among targets={tuple(targets)} with service_kinds="
                                     f"{tuple(service_kinds)}, traffic_policies={tuple(traffic_policies)}, "
                                     f"protocols={tuple(protocols)}; the cluster's service addresses: "
                                     f"{'; '.join(have)}")
    return st.builds(lambda s, d, sport: Flow(s, d[0], d[1], sport, d[2]),
                     src, dst, st.integers(32768, 60999))


def _dst_ip(cluster: Cluster, dst: str) -> IPv4Address | None:
    kind, _, rest = dst.partition("/")
    try:
        if kind == "svc":
            return cluster.service(*rest.split("/", 1)).cluster_ip
        if kind == "node":
            return cluster.node(rest).ip
        if kind == "pod":
            return cluster.pod(*rest.split("/", 1)).ip
        if kind == "ext":
            return IPv4Address(rest)
        return IPv4Address(dst)
    except (KeyError, TypeError, ValueError):
        return None


def flow_service(cluster: Cluster, flow) -> ServiceFlow | None:
    """The Service and port `flow` addresses (its ClusterIP, any node's IP
    with a nodePort, a load balancer or external IP, on the service port's
    protocol), or None when it addresses no service."""
    flow = Flow(*flow)
    ip = _dst_ip(cluster, flow.dst)
    if ip is None or flow.proto not in ("tcp", "udp"):
        return None
    node_ips = {n.ip for n in cluster.nodes}
    for svc in cluster.services:
        for sp in svc.ports:
            if sp.protocol.lower() != flow.proto:
                continue
            if svc.cluster_ip is not None and ip == svc.cluster_ip and flow.dport == sp.port:
                return ServiceFlow(flow, svc, sp, "cluster-ip")
            if sp.node_port and flow.dport == sp.node_port and ip in node_ips:
                return ServiceFlow(flow, svc, sp, "node-port")
            if ip in svc.load_balancer_ips and flow.dport == sp.port:
                return ServiceFlow(flow, svc, sp, "load-balancer")
            if ip in svc.external_ips and flow.dport == sp.port:
                return ServiceFlow(flow, svc, sp, "external-ip")
    return None


def service_flows(cluster: Cluster, sources=SOURCE_KINDS, targets=("service",), **narrow
                  ) -> st.SearchStrategy[ServiceFlow]:
    """Flows to service addresses, each with the Service and ServicePort it
    addresses (ServiceFlow: flow, service, port, kind). Same arguments as
    flows(); targets are services (all, or "svc/NS/NAME" ones)."""
    return flows(cluster, sources, targets, **narrow).map(lambda f: flow_service(cluster, f))


def every_flow(cluster: Cluster, sources=SOURCE_KINDS, targets=None, *,
               service_kinds: tuple[str, ...] = SERVICE_KINDS,
               traffic_policies: tuple[str, ...] = TRAFFIC_POLICIES,
               protocols: tuple[str, ...] = PROTOCOLS, sport: int = 40000,
               ext: str = "ext/203.0.113.5") -> list[Flow]:
    """Every source against every target once, for a sweep (e.g.
    @pytest.mark.parametrize over your own cluster): each pod and node to each
    service address and port, to each pod on each port it declares (ICMP echo
    when it declares none) and to each node on ICMP; the outside host `ext` to
    each node port, load balancer and external IP. Same narrowing as flows()
    (default targets: pods, nodes and services); source ports count up from
    `sport`."""
    narrowed = tuple(service_kinds) != SERVICE_KINDS or tuple(traffic_policies) != TRAFFIC_POLICIES
    if targets is None:
        targets = ("service",) if narrowed else ("pod", "node", "service")
    dsts = _Targets(cluster, targets, service_kinds, traffic_policies, protocols)
    kinds, specs = _split(sources, SOURCE_KINDS, "sources", cluster)
    srcs = [x for x in pod_endpoints(cluster) if "pod" in kinds] + \
        [x for x in node_endpoints(cluster) if "node" in kinds] + specs + ([ext] if "ext" in kinds else [])
    ends: list[tuple[str, str, int, bool]] = []            # (dst, proto, port, from outside too)
    for spec in dsts.pods:
        _, ns, name = spec.split("/", 2)
        ports = [(p.protocol.lower(), p.port) for p in cluster.pod(ns, name).ports()
                 if p.protocol.lower() in dsts.protocols]
        if not ports and "icmp" in dsts.protocols:
            ports = [("icmp", 0)]
        ends += [(spec, proto, port, False) for proto, port in ports]
    if "icmp" in dsts.protocols:
        ends += [(spec, "icmp", 0, False) for spec in dsts.nodes]
    ends += [(t.dst, t.proto, t.port, t.kind != "cluster-ip") for t in dsts.services]
    out = []
    for src in srcs:
        outside = src.startswith("ext/")
        for dst, proto, port, public in ends:
            if outside and not public:          # outside hosts reach only public service addresses
                continue
            out.append(Flow(src, dst, proto, sport + len(out), port))
    return out


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
