# k8s.cloudlb: the cloud load balancer in front of LoadBalancer services, as
# Azure's (and GCP's) work: frontends on the services' ingress IPs, a backend
# pool of nodes, health probes (the node port for externalTrafficPolicy
# Cluster; kube-proxy's /healthz on the health check node port for Local,
# healthy only where the node has a ready local endpoint), and a 5-tuple hash
# choosing a healthy node. The packet goes to the node with its destination
# unchanged (floating IP / direct server return); kube-proxy does the rest.
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from .. import errors
from ..conntrack.keyed import keyed_hash
from ..wire import Packet, TCP, UDP
from .model import Cluster, Service, ServicePort


@dataclass
class Frontend:
    ip: IPv4Address
    port: int
    protocol: str
    service: Service
    service_port: ServicePort
    backends: list[tuple[str, IPv4Address]] = field(default_factory=list)   # all nodes (name, ip)
    healthy: list[tuple[str, IPv4Address]] = field(default_factory=list)
    probe: str = ""


@dataclass(frozen=True)
class Choice:
    node: str | None
    node_ip: IPv4Address | None
    detail: str
    reason: str | None = None


class CloudLoadBalancer:
    def __init__(self, cluster: Cluster, seed: int = 0):
        self.seed = seed
        self.frontends: dict[tuple[IPv4Address, str, int], Frontend] = {}
        nodes = [(n.name, n.ip) for n in cluster.nodes]
        for svc in cluster.services:
            if svc.type != "LoadBalancer":
                continue
            for ip in svc.load_balancer_ips:
                for sp in svc.ports:
                    fe = Frontend(ip, sp.port, sp.protocol, svc, sp, list(nodes))
                    fe.healthy, fe.probe = self._health(svc, sp, nodes)
                    self.frontends[(ip, sp.protocol, sp.port)] = fe

    @staticmethod
    def _health(svc: Service, sp: ServicePort, nodes) -> tuple[list, str]:
        if svc.external_traffic_policy == "Local":
            local = {e.node for e in svc.endpoints_for(sp) if e.ready}
            probe = f"HTTP :{svc.health_check_node_port}/healthz (kube-proxy: 200 where a local endpoint is ready)"
            return [n for n in nodes if n[0] in local], probe
        return list(nodes), f"TCP :{sp.node_port} (node port)"

    def addresses(self) -> set[IPv4Address]:
        return {fe.ip for fe in self.frontends.values()}

    def pick(self, src: IPv4Address, sport: int, dst: IPv4Address, dport: int, proto: str,
             n: int) -> int:
        """Which of n healthy backends the 5-tuple hash picks (the flow cache
        redraws it for a megaflow's frames: kdp.datapath.megaflow)."""
        return keyed_hash(self.seed, "lb", str(src), sport, str(dst), dport, proto, seed_as_key=False) % n

    def choose(self, pkt: Packet) -> Choice | None:
        """None when pkt is not for a frontend address at all."""
        ip = pkt.ip
        if ip is None or ip.dst not in self.addresses():
            return None
        l4 = pkt.l4
        if not isinstance(l4, (TCP, UDP)):
            return Choice(None, None, f"no load-balancing rule for {pkt.proto_name} to {ip.dst}",
                          errors.LB_NO_RULE)
        proto = "TCP" if isinstance(l4, TCP) else "UDP"
        fe = self.frontends.get((ip.dst, proto, l4.dport))
        if fe is None:
            return Choice(None, None, f"no load-balancing rule for {ip.dst}:{l4.dport}/{proto}",
                          errors.LB_NO_RULE)
        if not fe.healthy:
            return Choice(None, None, f"{fe.service.key}: no healthy backend (probe {fe.probe})",
                          errors.LB_NO_BACKEND)
        node, node_ip = fe.healthy[self.pick(ip.src, l4.sport, ip.dst, l4.dport, proto, len(fe.healthy))]
        return Choice(node, node_ip, f"{fe.service.key} {ip.dst}:{l4.dport}/{proto} -> node {node} "
                      f"({len(fe.healthy)}/{len(fe.backends)} healthy by {fe.probe}); destination unchanged")
