# k8s.model: the resolved cluster as kdp sees it after loading, validation and
# the mini control plane ran: plain dataclasses with every address filled in.
# Owns no logic beyond small lookups; loading lives in k8s.load, filling-in in
# k8s.controlplane, wiring into namespaces in k8s.cni.
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network


@dataclass(frozen=True)
class Source:
    """Where an object came from, for error messages (FILE[:LINE])."""

    file: str = "<builtin>"
    line: int | None = None


@dataclass
class KubeProxyConfig:
    mode: str = "iptables"
    masquerade_all: bool = False
    cluster_cidr: IPv4Network | None = None      # defaults to the pod CIDR
    detect_local_mode: str | None = None         # ClusterCIDR | InterfaceNamePrefix | None; None: per plugin
    interface_name_prefix: str = "azv"           # InterfaceNamePrefix mode (AKS Azure CNI: azv)
    localhost_node_ports: bool = True
    conntrack_max: int = 131072
    conntrack_tcp_established: int = 86400
    conntrack_tcp_close_wait: int = 3600
    nfacct: bool = False                         # the node kernel has xt_nfacct (kube-proxy probes it)
    # --nodeport-addresses: None = every local address (the default); else "primary" and/or
    # CIDRs (IPv4Network) whose local addresses take NodePorts
    node_port_addresses: tuple | None = None
    iptables_random_fully: bool = True           # the iptables binary knows MASQUERADE --random-fully
    conntrack_tcp_be_liberal: bool = False       # net.netfilter.nf_conntrack_tcp_be_liberal=1


@dataclass
class ExternalHost:
    """An off-cluster host reachable through the edge router (ext/ADDR)."""

    address: IPv4Address
    tcp_ports: tuple[int, ...] = (80, 443)
    udp_ports: tuple[int, ...] = (53,)


@dataclass(frozen=True)
class UpstreamRecord:
    """A record of the static upstream DNS zone (ClusterConfig spec.dns.upstream.records):
    what CoreDNS's `forward` (and the VNet's DNS, for nodes) answers outside the cluster domain."""

    name: str                                     # absolute, lowercase, trailing dot
    type: str                                     # A | AAAA | CNAME | PTR | TXT | SRV | MX
    value: str
    ttl: int = 300


@dataclass
class ClusterConfig:
    name: str = "kdp"
    network_plugin: str = "kubenet"               # kubenet | azure
    pod_cidr: IPv4Network = IPv4Network("10.244.0.0/16")
    node_pod_prefix: int = 24                     # kubenet: size of each node's pod CIDR
    service_cidr: IPv4Network = IPv4Network("10.0.0.0/16")
    dns_service_ip: IPv4Address = IPv4Address("10.0.0.10")
    docker_bridge: IPv4Interface = IPv4Interface("172.17.0.1/16")
    vnet_subnet: IPv4Network = IPv4Network("10.240.0.0/16")
    cluster_domain: str = "cluster.local"
    node_port_range: tuple[int, int] = (30000, 32767)
    hairpin_mode: str = "hairpin-veth"            # hairpin-veth | promiscuous-bridge | none
    max_pods_per_node: int = 110                  # azure CNI: IPs reserved per node
    kube_proxy: KubeProxyConfig = field(default_factory=KubeProxyConfig)
    external_hosts: list[ExternalHost] = field(default_factory=list)
    non_masquerade_cidrs: list[IPv4Network] | None = None   # ip-masq-agent; None: AKS defaults
    dns_upstream: list[UpstreamRecord] | None = None        # None: no upstream DNS (SERVFAIL)
    source: Source = field(default_factory=Source)

    @property
    def no_masquerade(self) -> list[IPv4Network]:
        """Destinations pod traffic reaches without SNAT (azure-ip-masq-agent's
        nonMasqueradeCIDRs as AKS configures them: the pod CIDR (kubenet) and the VNet)."""
        if self.non_masquerade_cidrs is not None:
            return list(self.non_masquerade_cidrs)
        if self.network_plugin == "kubenet":
            return [self.pod_cidr, self.vnet_subnet]
        return [self.vnet_subnet]

    @property
    def local_detector(self) -> tuple[str, str | None]:
        """kube-proxy's local-traffic detector as AKS configures it: ClusterCIDR
        (the pod CIDR) for kubenet, InterfaceNamePrefix `azv` for Azure CNI,
        whose pods share the VNet with the nodes. (mode, CIDR or prefix)."""
        kp = self.kube_proxy
        mode = kp.detect_local_mode or ("ClusterCIDR" if self.network_plugin == "kubenet" or kp.cluster_cidr
                                        else "InterfaceNamePrefix")
        if mode == "ClusterCIDR":
            return mode, str(kp.cluster_cidr or self.pod_cidr)
        if mode == "InterfaceNamePrefix":
            return mode, kp.interface_name_prefix
        return "None", None

    @property
    def gateway_ip(self) -> IPv4Address:
        """The VNet/underlay router: first usable address of the vnet subnet."""
        return self.vnet_subnet.network_address + 1


@dataclass
class Node:
    name: str
    ip: IPv4Address
    pod_cidr: IPv4Network | None                  # kubenet; None for azure CNI
    labels: dict[str, str] = field(default_factory=dict)
    source: Source = field(default_factory=Source)
    rules_file: str | None = None                 # load this iptables-save dump instead of generating


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"                         # TCP | UDP | SCTP
    name: str | None = None


@dataclass
class Container:
    name: str
    image: str = ""
    ports: list[ContainerPort] = field(default_factory=list)


@dataclass
class Pod:
    namespace: str
    name: str
    node: str
    ip: IPv4Address
    labels: dict[str, str] = field(default_factory=dict)
    containers: list[Container] = field(default_factory=list)
    ready: bool = True
    terminating: bool = False
    host_network: bool = False
    owner: str | None = None                      # "Deployment/NAME" when expanded from one
    uid: str = ""
    hostname: str | None = None
    subdomain: str | None = None
    source: Source = field(default_factory=Source)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def ports(self) -> list[ContainerPort]:
        return [p for c in self.containers for p in c.ports]


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str | None = None
    target_port: int | str = 0                    # number, or a container port name
    node_port: int | None = None


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of one service port, as an EndpointSlice entry says it."""

    ip: IPv4Address
    port: int
    port_name: str | None                         # the service port's name
    protocol: str = "TCP"
    node: str | None = None
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    pod: str | None = None                        # "ns/name" of the target pod
    hostname: str | None = None


@dataclass
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"                       # ClusterIP | NodePort | LoadBalancer | ExternalName
    cluster_ip: IPv4Address | None = None         # None: headless (or ExternalName)
    ports: list[ServicePort] = field(default_factory=list)
    selector: dict[str, str] | None = None
    external_ips: list[IPv4Address] = field(default_factory=list)
    load_balancer_ips: list[IPv4Address] = field(default_factory=list)
    load_balancer_source_ranges: list[IPv4Network] = field(default_factory=list)
    external_traffic_policy: str = "Cluster"      # Cluster | Local
    internal_traffic_policy: str = "Cluster"
    session_affinity: str = "None"                # None | ClientIP
    affinity_timeout: int = 10800
    health_check_node_port: int | None = None
    external_name: str | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    source: Source = field(default_factory=Source)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def endpoints_for(self, port: ServicePort) -> list[Endpoint]:
        return [e for e in self.endpoints if e.port_name == port.name and e.protocol == port.protocol]


@dataclass
class Cluster:
    config: ClusterConfig
    nodes: list[Node] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    ingresses: list[dict] = field(default_factory=list)        # raw objects, used by the ingress issue
    ingress_classes: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)           # e.g. "skipped unknown kind Foo"

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def pod(self, namespace: str, name: str) -> Pod:
        for p in self.pods:
            if p.namespace == namespace and p.name == name:
                return p
        raise KeyError(f"{namespace}/{name}")

    def service(self, namespace: str, name: str) -> Service:
        for s in self.services:
            if s.namespace == namespace and s.name == name:
                return s
        raise KeyError(f"{namespace}/{name}")
