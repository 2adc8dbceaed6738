# testing.upstream: what real kube-proxy documents (or leaves open
# upstream) that breaks the plain reading of an invariant, as named
# predicates over (emu, flow, outcome). The invariants of kdp.testing consult
# them and check the upstream behaviour instead; a custom invariant can call
# them to skip or special-case the same flows. Reads the cluster model and the
# outcome only.
from __future__ import annotations

from typing import Callable, NamedTuple

from .strategies import Flow, flow_service

__all__ = ["KnownException", "KNOWN_EXCEPTIONS", "asymmetric_local_node_port", "hairpin_off",
           "known_exceptions", "translating_node", "from_pods"]


class KnownException(NamedTuple):
    """A documented exception: its name, the upstream reference, what happens,
    and the predicate (emu, flow, outcome) -> bool that recognises it."""

    name: str
    reference: str
    summary: str
    applies: Callable


def from_pods(emu, ip, node: str | None = None) -> bool:
    """Whether kube-proxy's local-traffic detector on `node` counts source
    `ip` as pod traffic: with the ClusterCIDR detector (kubenet, or a
    configured clusterCIDR) an address in that range, wherever the pod runs;
    with the InterfaceNamePrefix detector (Azure CNI, as AKS runs it) a pod of
    that node, entering through its own veth."""
    from ipaddress import IPv4Network
    cfg = emu.cluster.config
    mode, arg = cfg.local_detector
    if mode == "ClusterCIDR":
        return ip in IPv4Network(arg)
    if mode == "InterfaceNamePrefix":
        return any(p.ip == ip and not p.host_network and node in (None, p.node) for p in emu.cluster.pods)
    return False


def translating_node(emu, flow) -> str | None:
    """The node whose kube-proxy rules translate a flow to a service
    address: the client's own node for a ClusterIP, load balancer or external
    IP reached from inside the cluster (KUBE-SERVICES intercepts them in
    OUTPUT/PREROUTING there), the addressed node for a nodePort (only
    `--dst-type LOCAL` addresses enter KUBE-NODEPORTS). None when it depends
    on the outside world (an outside client's load balancer or external IP)."""
    sf = flow_service(emu.cluster, flow)
    if sf is None:
        return None
    kind, _, rest = sf.flow.src.partition("/")
    if sf.kind == "node-port":
        ip = emu.resolve(sf.flow.dst).ip
        return next((n.name for n in emu.cluster.nodes if n.ip == ip), None)
    if kind == "pod":
        return emu.cluster.pod(*rest.split("/", 1)).node
    if kind == "node":
        return rest
    return None


def asymmetric_local_node_port(emu, flow, outcome=None) -> bool:
    """kubernetes/kubernetes#74383: a pod calls the nodePort of *another*
    node, whose Service has externalTrafficPolicy: Local, and that node's
    local-traffic detector counts the pod as pod traffic (ClusterCIDR: kubenet
    or a configured clusterCIDR). kube-proxy there sends pod traffic to every
    endpoint (KUBE-EXT -> KUBE-SVC) without SNAT (Local keeps the source), so
    an endpoint on any node but the addressed one answers the pod directly:
    the reply never passes the node that translated the request. Where a node
    forwards that answer, a TCP SYN-ACK is INVALID there (KUBE-FORWARD drops
    it); otherwise the answer arrives from the endpoint's own address. True when the flow is
    such a call and (given the outcome) it arrived unmasqueraded at an
    endpoint that is not on the addressed node (a pod reaching itself is
    masqueraded by its KUBE-SEP chain, and answered symmetrically). Azure
    CNI's interface detector sees no pod traffic there: only local endpoints,
    symmetric."""
    flow = Flow(*flow)
    sf = flow_service(emu.cluster, flow)
    if sf is None or sf.kind != "node-port" or sf.service.external_traffic_policy != "Local":
        return False
    if not flow.src.startswith("pod/"):
        return False
    pod = emu.cluster.pod(*flow.src.split("/", 2)[1:])
    if pod.host_network:
        return False
    target = translating_node(emu, flow)
    if target is None or target == pod.node or not from_pods(emu, pod.ip, target):
        return False
    if outcome is None or outcome.disposition != "delivered" or outcome.packet is None:
        return True
    if outcome.packet.ip.src != pod.ip:
        return False            # masqueraded (a hairpin to itself: KUBE-SEP marks it): symmetric
    reached = outcome.packet.ip.dst
    ep = next((e for e in sf.service.endpoints if e.ip == reached), None)
    return ep is None or ep.node != target


def hairpin_off(emu, flow, outcome=None) -> bool:
    """kubelet's --hairpin-mode (kdp: ClusterConfig hairpinMode): a pod
    reaching itself through a Service it backs needs its bridge port's
    hairpin flag (hairpin-veth); with promiscuous-bridge or none the bridge
    never sends a frame back out the port it came in on, so the connection is
    dropped (bridge-no-hairpin). True when the flow comes from a pod attached
    to a bridge port without the hairpin flag, addresses a Service its own
    node translates (not another node's nodePort: that comes back routed),
    and that pod is one of the Service port's endpoints (with the outcome: it
    was translated to the pod itself)."""
    flow = Flow(*flow)
    if not flow.src.startswith("pod/"):
        return False
    pod = emu.cluster.pod(*flow.src.split("/", 2)[1:])
    if pod.host_network:
        return False
    sf = flow_service(emu.cluster, flow)
    if sf is None or not any(e.ip == pod.ip for e in sf.service.endpoints_for(sf.port)):
        return False
    if translating_node(emu, flow) != pod.node:
        return False                    # translated elsewhere: it comes back routed, not bridged
    port = emu.namespace(flow.src).devices["eth0"].peer
    if port is None or port.master is None or getattr(port, "hairpin", False):
        return False
    if outcome is not None and outcome.packet is not None and outcome.packet.ip is not None:
        return outcome.packet.ip.dst == pod.ip
    return True


KNOWN_EXCEPTIONS = (
    KnownException("asymmetric-local-node-port", "kubernetes/kubernetes#74383",
                   "pod -> another node's nodePort with externalTrafficPolicy: Local under the "
                   "ClusterCIDR detector: DNAT to any endpoint without SNAT, the answer bypasses "
                   "the translating node (dropped as INVALID where forwarded, else from the endpoint "
                   "address)",
                   asymmetric_local_node_port),
    KnownException("hairpin-off", "kubelet --hairpin-mode",
                   "a pod reaching itself through its Service over a bridge port without the hairpin "
                   "flag (hairpinMode promiscuous-bridge or none): dropped, bridge-no-hairpin",
                   hairpin_off),
)


def known_exceptions(emu, flow, outcome=None) -> list[KnownException]:
    """The known exceptions that apply to this flow (and outcome)."""
    return [k for k in KNOWN_EXCEPTIONS if k.applies(emu, flow, outcome)]
