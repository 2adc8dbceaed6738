# k8s.cni: wires a resolved Cluster into kernel objects the way the network
# plugin and kubelet do on real nodes: per node a root namespace (lo, eth0 on
# the underlay, cbr0 for kubenet, docker0, routes), per pod the pause
# container's namespace joined to the node by a veth pair, the edge router to
# the outside world, and the sockets the containers listen on (echo apps;
# assembly puts CoreDNS and the ingress controller behind theirs).
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from ..addr import stable_hex, stable_mac
from ..net.device import Bridge, Device, Segment
from ..net.namespace import Namespace
from ..net.route import Route
from ..net.sockets import SocketTable
from .cloudlb import CloudLoadBalancer
from .model import Cluster, Node, Pod

AZURE_GATEWAY_MAC = "12:34:56:78:9a:bc"      # the MAC Azure's VNet gateway answers with
EDGE_LINK = IPv4Network("169.254.255.0/30")  # edge router <-> the outside world
NODE_PORTS = ((22, "sshd"), (10250, "kubelet"), (10256, "kube-proxy"))


@dataclass
class Topology:
    cluster: Cluster
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    underlay: Segment = field(default_factory=lambda: Segment("underlay"))
    pod_ns: dict[str, Namespace] = field(default_factory=dict)     # "ns/name" -> namespace
    node_ns: dict[str, Namespace] = field(default_factory=dict)    # node name -> namespace
    host_veth: dict[str, Device] = field(default_factory=dict)     # "ns/name" -> host-side veth
    ingress: object = None          # ingress.controller.IngressDeployment, when the cluster has one

    def add(self, ns: Namespace) -> Namespace:
        self.namespaces[ns.name] = ns
        return ns


def veth_name(cluster: Cluster, pod: Pod) -> str:
    prefix = "azv" if cluster.config.network_plugin == "azure" else "veth"
    return prefix + stable_hex(cluster.config.name, pod.namespace, pod.name, length=8)


def build(cluster: Cluster, seed: int = 0, rules: dict[str, tuple[str, str]] | None = None) -> Topology:
    """rules: node name -> (iptables-save text, source name) replacing the generated rules."""
    topo = Topology(cluster)
    for node in cluster.nodes:
        _node(topo, node, seed, rules or {})
    _edge(topo, seed)
    for pod in cluster.pods:
        if pod.host_network:
            socks = topo.node_ns[pod.node].sockets
            for c in pod.containers:
                for p in c.ports:
                    socks.listen(p.port, p.protocol, f"{pod.name}/{c.name}")
        else:
            _pod(topo, pod, seed)
    return topo


def _lo(ns: Namespace) -> None:
    lo = ns.add_device(Device("lo", "loopback", "00:00:00:00:00:00", mtu=65536))
    lo.addresses.append(IPv4Interface("127.0.0.1/8"))


def _node(topo: Topology, node: Node, seed: int, rules: dict) -> None:
    cfg = topo.cluster.config
    ns = topo.add(Namespace(f"node/{node.name}", "node", node.name, ip_forward=True, owner=node))
    topo.node_ns[node.name] = ns
    _lo(ns)
    eth0 = ns.add_device(Device("eth0", "ether", stable_mac(cfg.name, "node", node.name, oui="00:0d:3a")))
    ns.add_address(eth0, IPv4Interface(f"{node.ip}/{cfg.vnet_subnet.prefixlen}"))
    topo.underlay.attach(eth0)
    ns.routes.add(Route(IPv4Network("0.0.0.0/0"), "eth0", via=cfg.gateway_ip))
    if cfg.network_plugin == "kubenet":
        gw = node.pod_cidr.network_address + 1
        br = ns.add_device(Bridge("cbr0", "bridge", stable_mac(cfg.name, "cbr0", node.name)))
        ns.add_address(br, IPv4Interface(f"{gw}/{node.pod_cidr.prefixlen}"))
        br.promisc = cfg.hairpin_mode == "promiscuous-bridge"
        for other in topo.cluster.nodes:
            if other.name != node.name and other.pod_cidr is not None:
                ns.routes.add(Route(other.pod_cidr, "eth0", via=other.ip))
    else:
        eth0.proxy_arp = True                  # answers the VNet for the pods behind it
    d0 = ns.add_device(Bridge("docker0", "bridge", stable_mac(cfg.name, "docker0", node.name, oui="02:42")))
    ns.add_address(d0, cfg.docker_bridge, linkdown=True)
    ns.sockets = SocketTable(ns.name, seed)
    for port, owner in NODE_PORTS:
        ns.sockets.listen(port, "TCP", owner)
    ns.netfilter = node_netfilter(topo.cluster, node, ns, seed, rules.get(node.name))


def _edge(topo: Topology, seed: int) -> None:
    cfg = topo.cluster.config
    edge = topo.add(Namespace("edge", "router", "edge", ip_forward=True))
    _lo(edge)
    eth0 = edge.add_device(Device("eth0", "ether", AZURE_GATEWAY_MAC))
    edge.add_address(eth0, IPv4Interface(f"{cfg.gateway_ip}/{cfg.vnet_subnet.prefixlen}"))
    topo.underlay.attach(eth0)
    for node in topo.cluster.nodes:            # the VNet route table (kubenet's per-node routes)
        if node.pod_cidr is not None:
            edge.routes.add(Route(node.pod_cidr, "eth0", via=node.ip))
    hosts = list(EDGE_LINK.hosts())
    ext0 = edge.add_device(Device("ext0", "veth", stable_mac(cfg.name, "edge", "ext0")))
    edge.add_address(ext0, IPv4Interface(f"{hosts[0]}/{EDGE_LINK.prefixlen}"))
    edge.routes.add(Route(IPv4Network("0.0.0.0/0"), "ext0", via=hosts[1]))
    edge.sockets = SocketTable(edge.name, seed)
    edge.lb = CloudLoadBalancer(topo.cluster, seed)
    # externalIPs: the cluster admin routes them to a node (here: the first one)
    ext_ips = sorted({ip for s in topo.cluster.services for ip in s.external_ips})
    if topo.cluster.nodes:
        for ip in ext_ips:
            edge.routes.add(Route(IPv4Network(f"{ip}/32"), "eth0", via=topo.cluster.nodes[0].ip))

    ext = topo.add(Namespace("ext", "external", "internet", catch_all=True))
    ext.local_exclude = tuple(n for n in (cfg.pod_cidr, cfg.service_cidr, cfg.vnet_subnet,
                                           cfg.docker_bridge.network, EDGE_LINK) if n is not None) + \
        tuple(IPv4Network(f"{ip}/32") for ip in sorted(edge.lb.addresses() | set(ext_ips)))
    _lo(ext)
    peer = ext.add_device(Device("eth0", "veth", stable_mac(cfg.name, "ext", "eth0")))
    ext.add_address(peer, IPv4Interface(f"{hosts[1]}/{EDGE_LINK.prefixlen}"))
    ext.routes.add(Route(IPv4Network("0.0.0.0/0"), "eth0", via=hosts[0]))
    ext0.peer, peer.peer = peer, ext0
    ext.sockets = SocketTable(ext.name, seed)
    hosts_cfg = cfg.external_hosts
    tcp = sorted({p for h in hosts_cfg for p in h.tcp_ports}) if hosts_cfg else [80, 443]
    udp = sorted({p for h in hosts_cfg for p in h.udp_ports}) if hosts_cfg else [53]
    for p in tcp:
        ext.sockets.listen(p, "TCP", "external server")
    for p in udp:
        ext.sockets.listen(p, "UDP", "external server")


def _pod(topo: Topology, pod: Pod, seed: int) -> None:
    cfg = topo.cluster.config
    node = topo.cluster.node(pod.node)
    host = topo.node_ns[pod.node]
    ns = topo.add(Namespace(f"pod/{pod.namespace}/{pod.name}", "pod", pod.node, owner=pod))
    topo.pod_ns[pod.key] = ns
    _lo(ns)
    eth0 = ns.add_device(Device("eth0", "veth", stable_mac(cfg.name, "pod", pod.namespace, pod.name)))
    hv = host.add_device(Device(veth_name(topo.cluster, pod), "veth",
                                stable_mac(cfg.name, "veth", pod.namespace, pod.name)))
    eth0.peer, hv.peer = hv, eth0
    topo.host_veth[pod.key] = hv
    if cfg.network_plugin == "kubenet":
        ns.add_address(eth0, IPv4Interface(f"{pod.ip}/{node.pod_cidr.prefixlen}"))
        ns.routes.add(Route(IPv4Network("0.0.0.0/0"), "eth0", via=node.pod_cidr.network_address + 1))
        br = host.devices["cbr0"]
        br.add_port(hv)
        hv.hairpin = cfg.hairpin_mode == "hairpin-veth"
    else:                                      # azure CNI, transparent mode
        ns.add_address(eth0, IPv4Interface(f"{pod.ip}/{cfg.vnet_subnet.prefixlen}"))
        ns.routes.add(Route(IPv4Network("0.0.0.0/0"), "eth0", via=cfg.gateway_ip))
        hv.proxy_arp = True
        host.routes.add(Route(IPv4Network(f"{pod.ip}/32"), hv.name, scope="link"))
    ns.sockets = SocketTable(ns.name, seed)
    for c in pod.containers:
        for p in c.ports:
            if p.protocol in ("TCP", "UDP", "SCTP"):
                ns.sockets.listen(p.port, p.protocol, c.name)


def node_netfilter(cluster: Cluster, node: Node, ns: Namespace, seed: int = 0, dump=None):
    """The node's netfilter: kube-proxy's, kubelet's and the CNI's rules (or a
    loaded dump: iptables-save, or `nft list ruleset` for kube-proxy's nftables
    table) and a conntrack table sized and timed as kube-proxy configures it.
    In nftables mode kube-proxy's rules are its `ip kube-proxy` table (an
    nftables engine at the hooks) and kubelet's and ip-masq-agent's stay
    iptables rules."""
    from ..conntrack import ConntrackTable, Timeouts
    from ..netfilter import Netfilter, parse_iptables_save
    from .kubeproxy import node_rules
    kp = cluster.config.kube_proxy
    nft = None
    if dump is None:
        text, source = node_rules(cluster, node.name), f"kube-proxy rules of {node.name}"
        if kp.mode == "nftables":
            from .kubeproxy_nft import node_ruleset
            nft = (node_ruleset(cluster, node.name), f"kube-proxy nftables rules of {node.name}")
            text, source = _iptables_beside_nft(cluster, node.name), f"kubelet rules of {node.name}"
    else:
        text, source = dump
        if is_nft_dump(text):
            nft = dump
            text, source = _iptables_beside_nft(cluster, node.name), f"kubelet rules of {node.name}"
    table = ConntrackTable(max_entries=kp.conntrack_max,
                           timeouts=Timeouts.kube_proxy(established=kp.conntrack_tcp_established,
                                                        close_wait=kp.conntrack_tcp_close_wait),
                           seed=seed)
    nf = Netfilter(parse_iptables_save(text, source=source), table, info=ns, seed=seed)
    if nft is not None:
        nf.attach_nft(nft_engine(nft[0], nft[1], ns.name, seed))
    return nf


def _iptables_beside_nft(cluster: Cluster, node_name: str) -> str:
    """What stays iptables on an nftables-mode node: kubelet's and ip-masq-agent's rules."""
    from dataclasses import replace
    from .kubeproxy import _Gen, node_options
    return _Gen(cluster, node_name, replace(node_options(cluster), kube_proxy=False)).run()


def is_nft_dump(text: str) -> bool:
    """An `nft list ruleset` dump (or `nft -f` input) rather than iptables-save."""
    for line in text.splitlines():
        word = line.strip().split(" ", 1)[0]
        if word and not word.startswith("#"):
            return word in ("table", "add", "flush", "delete", "define", "include")
    return False


def nft_engine(text: str, source: str, ns_name: str, seed: int):
    from ..netfilter.nft import parse_ruleset
    from ..netfilter.nft.engine import NftEngine
    return NftEngine(parse_ruleset(text, source), source, ns_name, seed)


def gateway_of(topo: Topology, pod: Pod) -> IPv4Address:
    cfg = topo.cluster.config
    if cfg.network_plugin == "kubenet":
        return topo.cluster.node(pod.node).pod_cidr.network_address + 1
    return cfg.gateway_ip
