# testing.invariants: what an emulated Kubernetes cluster must keep, each as
# a function of one shape, invariant(emu, flow, outcome=None): the Emulator,
# the Flow traced and the Outcome of emu.trace(*flow) (traced here when None).
# Each checks the flows it is about and passes the others, consults the known
# exceptions of kube-proxy (kdp.testing.upstream), and raises
# InvariantViolation naming the node, namespace, device and hook or rule
# where it broke and the `kdp trace` command that replays the flow. Reads
# outcomes, captures, the model and the conntrack table; only
# endpoint_reachable traces more (steering kube-proxy's random endpoint
# choice through Netfilter.force_statistic, restored after).
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from .. import errors, wire
from ..conntrack.entry import DST_NAT, SRC_NAT
from ..conntrack.tuples import PROTO_ICMP, Tuple, packet_tuple, quoted_packet
from ..datapath import Outcome
from ..k8s.model import Endpoint, Pod, Service
from ..net.device import Bridge
from .upstream import asymmetric_local_node_port, from_pods, hairpin_off, translating_node
from .strategies import Flow, ServiceFlow, flow_service, service_port
from .violation import InvariantViolation, Where, end_where, frame_where, hop_where, nat_where

__all__ = [
    "InvariantViolation", "Where", "INVARIANTS", "check_flow",
    "pod_to_pod_without_nat", "node_to_pod_without_nat", "pod_sees_own_address",
    "service_reply_from_service_address", "delivered_to_ready_endpoint", "endpoint_reachable",
    "service_covered", "masquerade_where_kube_proxy_says", "conntrack_symmetric_and_expiring",
    "no_frame_lost_or_duplicated", "ttl_and_checksums_right", "same_seed_same_output",
    "acceptable_endpoints", "request_frames", "original_request", "from_pods",
]

TERMINAL = ("delivered", "dropped", "rejected")


# --- the one shape ------------------------------------------------------------------

class _Check:
    """One invariant applied to one flow: names it in every violation."""

    def __init__(self, name: str, emu, flow, outcome):
        self.name, self.emu, self.flow, self.outcome = name, emu, flow, outcome

    def fail(self, detail: str, where: Where | None = None) -> None:
        raise InvariantViolation(self.name, detail, where, self.flow, self.emu)


def _begin(name: str, emu, flow, outcome) -> _Check:
    """Normalise (emu, flow, outcome): flow to a Flow, outcome traced when None."""
    if not hasattr(emu, "trace"):
        raise TypeError(f"{name}: the first argument is the Emulator, got {type(emu).__name__}")
    try:
        flow = Flow(*flow)
    except TypeError:
        raise TypeError(f"{name}(emu, flow, outcome=None): flow is a Flow (src, dst, proto, sport, "
                        f"dport), got {flow!r}") from None
    if outcome is None:
        outcome = emu.trace(*flow)
    elif not isinstance(outcome, Outcome):
        raise TypeError(f"{name}: outcome is what emu.trace(*flow) returned, got "
                        f"{type(outcome).__name__}")
    return _Check(name, emu, flow, outcome)


def _deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(f"{old} is deprecated: call {new} (kdp.testing's one invariant shape)",
                  DeprecationWarning, stacklevel=stacklevel)


def _is_flow(x) -> bool:
    return isinstance(x, tuple) and len(x) == 5


# --- following one packet through outcome.frames ------------------------------------

@dataclass(frozen=True)
class Seen:
    """One capture of a packet: frame number in outcome.frames, device, direction."""

    index: int
    dev: object = field(repr=False)
    direction: str
    pkt: wire.Packet = field(repr=False)

    def __repr__(self) -> str:
        return f"<Seen {self.where} {self.pkt.summary()}>"

    @property
    def where(self) -> str:
        return f"frame #{self.index} {self.dev.namespace.name} {self.dev.name} {self.direction}"


def _identity(pkt: wire.Packet):
    """What stays the same for one packet across hops: NAT changes addresses and
    ports, routers the TTL and MACs, checksums follow; the sender's IP id and the
    L4 content do not."""
    ip, l4 = pkt.ip, pkt.l4
    if isinstance(l4, wire.TCP):
        body = ("tcp", l4.seq, l4.ack, l4.flags, l4.payload)
    elif isinstance(l4, wire.UDP):
        body = ("udp", l4.payload)
    elif isinstance(l4, wire.ICMP) and l4.type in wire.ICMP_ERROR_TYPES:
        body = ("icmp-error", l4.type, l4.code, len(l4.payload))
    elif isinstance(l4, wire.ICMP):
        body = ("icmp", l4.type, l4.code, l4.seq, l4.payload)
    else:
        body = ("ip", pkt.payload)
    return ip.proto, ip.ident, body


def _ip_frames(outcome) -> list[Seen]:
    return [Seen(i, d, direction, p) for i, (d, direction, p) in enumerate(outcome.frames)
            if p.ip is not None]


def _lineages(outcome) -> dict:
    out: dict = {}
    for s in _ip_frames(outcome):
        out.setdefault(_identity(s.pkt), []).append(s)
    return out


def request_frames(outcome) -> list[Seen]:
    """Every capture of the packet the request started with, in order (the
    packet that was delivered, dropped or rejected at the end)."""
    seen = _ip_frames(outcome)
    if not seen:
        return []
    end = outcome.packet
    key = _identity(end) if end is not None and end.ip is not None else _identity(seen[0].pkt)
    return [s for s in seen if _identity(s.pkt) == key]


def _reply_frames(outcome) -> list[Seen]:
    rep = outcome.reply
    if rep is None or rep.packet is None or rep.packet.ip is None:
        return []
    key = _identity(rep.packet)
    return [s for s in _ip_frames(outcome) if _identity(s.pkt) == key]


def _frame_place(outcome, s: Seen, leg: str) -> Where:
    """A frame's place, with the NAT rule of its namespace when one matched."""
    w = frame_where(s)
    nat = nat_where(outcome, leg, namespace=s.dev.namespace.name)
    return replace(w, rule=nat.rule, hook=f"{w.hook}; NAT in {nat.hook}") if nat is not None else w


def _leg(outcome) -> str:
    """How a leg ended, in words: `delivered to X` or `dropped (reason)` (the
    place goes in the violation's `at:` line)."""
    if outcome.disposition == "delivered":
        return f"delivered to {outcome.delivered_to}"
    return f"{outcome.disposition} ({outcome.reason or 'no reason'})"


def _ended(outcome) -> str:
    where = end_where(outcome, "request")
    at = f" at {where.namespace}" if where is not None else ""
    return f"{outcome.disposition}{at} ({outcome.reason or 'no reason'})"


# --- names -> model objects ----------------------------------------------------------

def _pod(emu, pod) -> Pod:
    if isinstance(pod, Pod):
        return pod
    parts = str(pod).split("/")
    if parts[0] == "pod":
        parts = parts[1:]
    return emu.cluster.pod(parts[0], parts[1])


def _service(emu, svc) -> Service:
    if isinstance(svc, Service):
        return svc
    parts = str(svc).split("/")
    if parts[0] == "svc":
        parts = parts[1:]
    return emu.cluster.service(parts[0], parts[1])


def _pod_spec(pod: Pod) -> str:
    return f"node/{pod.node}" if pod.host_network else f"pod/{pod.namespace}/{pod.name}"


def _own_pod(emu, spec: str) -> Pod | None:
    """The pod behind pod/NS/NAME when it has its own network namespace."""
    if not spec.startswith("pod/"):
        return None
    try:
        p = _pod(emu, spec)
    except (KeyError, IndexError):
        return None
    return None if p.host_network else p


def _probe_flow(emu, src: str, pod: Pod) -> Flow:
    """A flow to a port the pod answers on: a declared TCP/UDP port, else ICMP echo."""
    for p in pod.ports():
        if p.protocol in ("TCP", "UDP"):
            return Flow(src, _pod_spec(pod), p.protocol.lower(), None, p.port)
    return Flow(src, _pod_spec(pod), "icmp", None, 0)


def _node_addresses(emu, node: str) -> set[IPv4Address]:
    ns = emu.namespace(f"node/{node}")
    return {a.ip for d in ns.devices.values() for a in d.addresses if not a.ip.is_loopback}


# --- the Kubernetes network model -----------------------------------------------------

def _unchanged_path(cx: _Check, frames: list[Seen], src, dst, leg: str) -> None:
    for s in frames:
        got = (s.pkt.ip.src, s.pkt.ip.dst)
        if got != (src, dst):
            cx.fail(f"{'reply' if leg == 'reply' else 'request'} {s.pkt.summary()}: source/destination "
                    f"{got[0]} -> {got[1]}, expected {src} -> {dst} unchanged",
                    _frame_place(cx.outcome, s, leg))


def _no_nat_both_ways(cx: _Check, src_spec: str, dst_spec: str, src_ip, dst_ip) -> None:
    out = cx.outcome
    if out.disposition != "delivered" or out.delivered_to != dst_spec:
        cx.fail(f"request {_leg(out)}, expected delivered to {dst_spec}", end_where(out, "request"))
    _unchanged_path(cx, request_frames(out), src_ip, dst_ip, "request")
    rep = out.reply
    if rep is None and out.packet.ip.proto == wire.PROTO_UDP:
        return                                  # a UDP server need not answer (DNS drops junk)
    if rep is None or rep.disposition != "delivered" or rep.delivered_to != src_spec:
        got = "no reply" if rep is None else f"reply {_leg(rep)}"
        where = end_where(out, "reply" if rep is not None else "request")
        cx.fail(f"{got}, expected the answer delivered to {src_spec}", where)
    _unchanged_path(cx, _reply_frames(out), dst_ip, src_ip, "reply")


def pod_to_pod_without_nat(emu, flow, outcome=None, *legacy, **legacy_kw):
    """Kubernetes: every pod can reach every other pod, on any node, without
    NAT. Applies to flows from a pod to a pod (each with its own network
    namespace; a pod to itself goes over lo). Holds when the request is
    delivered to the destination pod with source and destination addresses
    unchanged at every captured frame, and the answer (if the server sends
    one; a UDP server may stay silent) comes back to the client unchanged.
    Known exceptions: none. Returns the Outcome."""
    if not _is_flow(flow):                     # 0.1: (emu, src_pod, dst_pod, proto, dport, time)
        _deprecated("pod_to_pod_without_nat(emu, src_pod, dst_pod)",
                    "pod_to_pod_without_nat(emu, Flow(src, dst, proto, sport, dport))")
        return _legacy_pair(pod_to_pod_without_nat, emu, _pod_spec(_pod(emu, flow)), outcome,
                            *legacy, **legacy_kw)
    cx = _begin("pod-to-pod without NAT", emu, flow, outcome)
    a, b = _own_pod(emu, cx.flow.src), _own_pod(emu, cx.flow.dst)
    if a is None or b is None:
        return cx.outcome
    req = request_frames(cx.outcome)
    if req and req[0].pkt.ip.src != a.ip:
        cx.fail(f"pod {a.key} sent from {req[0].pkt.ip.src}, not its address {a.ip}",
                frame_where(req[0]))
    _no_nat_both_ways(cx, _pod_spec(a), _pod_spec(b), a.ip, b.ip)
    return cx.outcome


def node_to_pod_without_nat(emu, flow, outcome=None, *legacy, **legacy_kw):
    """Kubernetes: agents on a node (system daemons, kubelet) can reach every
    pod on every node without NAT. Applies to flows from node/NAME to a pod
    with its own network namespace. Holds when the request leaves with a
    source the node owns (its stack picks the node IP, or its bridge address
    for a local pod), is delivered with both addresses unchanged at every
    frame, and the answer comes back unchanged. Known exceptions: none.
    Returns the Outcome."""
    if not _is_flow(flow):                     # 0.1: (emu, node, dst_pod, proto, dport, time)
        _deprecated("node_to_pod_without_nat(emu, node, dst_pod)",
                    "node_to_pod_without_nat(emu, Flow('node/NAME', 'pod/NS/NAME', proto, sport, dport))")
        node = flow if str(flow).startswith("node/") else f"node/{flow}"
        return _legacy_pair(node_to_pod_without_nat, emu, node, outcome, *legacy, **legacy_kw)
    cx = _begin("node-to-pod without NAT", emu, flow, outcome)
    b = _own_pod(emu, cx.flow.dst)
    if not cx.flow.src.startswith("node/") or b is None:
        return cx.outcome
    node = cx.flow.src.split("/", 1)[1]
    req = request_frames(cx.outcome)
    if not req:
        cx.fail(f"no IP frame was sent ({cx.outcome.disposition}, {cx.outcome.reason})",
                end_where(cx.outcome, "request"))
    src_ip = req[0].pkt.ip.src
    if src_ip not in _node_addresses(emu, node):
        cx.fail(f"node/{node} sent from {src_ip}, not one of its addresses", frame_where(req[0]))
    _no_nat_both_ways(cx, f"node/{node}", _pod_spec(b), src_ip, b.ip)
    return cx.outcome


def _legacy_pair(fn, emu, src: str, dst_pod, proto=None, dport=None, time=None):
    d = _pod(emu, dst_pod)
    flow = _probe_flow(emu, src, d)
    if proto is not None:
        flow = flow._replace(proto=proto, dport=dport)
    out = emu.trace(*flow, time=time)
    return fn(emu, flow, out)


def pod_sees_own_address(emu, flow, outcome=None, *legacy, **legacy_kw):
    """Kubernetes: the IP a pod sees itself as is the same IP others see it
    as. Applies to flows from a pod with its own network namespace. Holds when
    its eth0 carries the pod IP, its stack sends from that IP, and a pod it
    reaches directly sees that IP as the source. Known exceptions: none (a
    masquerade on the way is reported here and by
    masquerade_where_kube_proxy_says). Returns the Outcome."""
    if not _is_flow(flow):                     # 0.1: (emu, pod, peers=None, time=None)
        _deprecated("pod_sees_own_address(emu, pod, peers)",
                    "pod_sees_own_address(emu, Flow('pod/NS/NAME', ...)) for each flow")
        p = _pod(emu, flow)
        peers = outcome if outcome is not None else legacy_kw.get("peers")
        time = legacy[0] if legacy else legacy_kw.get("time")
        others = [_pod(emu, x) for x in peers] if peers is not None else \
            [q for q in emu.cluster.pods if q is not p and not q.host_network]
        if p.host_network:
            return None
        for q in others:
            f = _probe_flow(emu, _pod_spec(p), q)
            pod_sees_own_address(emu, f, emu.trace(*f, time=time))
        return None
    cx = _begin("pod sees its own address", emu, flow, outcome)
    p = _own_pod(emu, cx.flow.src)
    if p is None:
        return cx.outcome
    ns = emu.namespace(_pod_spec(p))
    eth0 = ns.devices["eth0"]
    if not eth0.has_address(p.ip):
        cx.fail(f"{p.key}: eth0 has {[str(a) for a in eth0.addresses]}, not the pod IP {p.ip}",
                Where(ns.node, ns.name, "eth0", "address"))
    out = cx.outcome
    req = request_frames(out)
    if req and req[0].pkt.ip.src != p.ip:
        cx.fail(f"{p.key}'s stack used source {req[0].pkt.ip.src}, not its address {p.ip}",
                frame_where(req[0]))
    q = _own_pod(emu, cx.flow.dst)
    if q is not None and out.disposition == "delivered" and out.delivered_to == _pod_spec(q) \
            and out.packet.ip.src != p.ip:
        changed = next((s for s in req if s.pkt.ip.src != p.ip), None)
        cx.fail(f"{q.key} saw {p.key} as {out.packet.ip.src}, expected {p.ip}",
                _frame_place(out, changed, "request") if changed else end_where(out))
    return cx.outcome


# --- services -----------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    """The request as the client's application sent it: before the NAT its own
    node may do in OUTPUT/POSTROUTING, which happens before any capture."""

    first: Seen = field(repr=False)  # its first capture (possibly already translated)
    tuple: Tuple
    client: str                 # pod/NS/NAME, node/NAME or ext/ADDR

    def summary(self) -> str:
        return f"{self.client} {self.tuple}"


_SUMMARY = re.compile(r"^(TCP|UDP) ([\d.]+):(\d+) > ([\d.]+):(\d+) |^ICMP ([\d.]+) > ([\d.]+) ")


def original_request(emu, outcome) -> Sent | None:
    """What the client sent, or None when no frame of the request was captured
    (a REJECT/DROP in the sender's own OUTPUT hook). A node's own packet may be
    translated in its OUTPUT/POSTROUTING hooks before any capture: its stack's
    `route output` hop records it as built."""
    req = request_frames(outcome)
    if not req:
        return None
    first = req[0]
    ns = first.dev.namespace
    t = packet_tuple(first.pkt)
    for h in outcome.hops:
        if h.leg == "request" and h.component == "route" and h.action == "output":
            m = _SUMMARY.match(h.detail)
            if m and m.group(1):
                t = Tuple(wire.PROTO_TCP if m.group(1) == "TCP" else wire.PROTO_UDP,
                          IPv4Address(m.group(2)), IPv4Address(m.group(4)),
                          int(m.group(3)), int(m.group(5)))
            elif m:
                t = replace(t, src=IPv4Address(m.group(6)), dst=IPv4Address(m.group(7)))
            break
    client = f"ext/{t.src}" if ns.kind == "external" else ns.name
    return Sent(first, t, client)


def _dnat_node(outcome, sent: Sent) -> tuple[str | None, Seen | None]:
    """The node whose netfilter changed the request's destination, and the first
    capture showing the change."""
    for s in request_frames(outcome):
        if (s.pkt.ip.dst, s.pkt.ports[1]) != (sent.tuple.dst, sent.tuple.dport):
            ns = s.dev.namespace
            return (ns.node if ns.kind == "node" else None), s
    return None, None


def _service_addresses(emu, svc: Service, sp) -> set[tuple[IPv4Address, int]]:
    addrs = set()
    if svc.cluster_ip is not None:
        addrs.add((svc.cluster_ip, sp.port))
    addrs |= {(ip, sp.port) for ip in list(svc.external_ips) + list(svc.load_balancer_ips)}
    if sp.node_port:
        for n in emu.cluster.nodes:
            addrs |= {(ip, sp.node_port) for ip in _node_addresses(emu, n.name)}
    return addrs


def _service_request(cx: _Check, svc: Service, sp) -> Sent | None:
    out = cx.outcome
    sent = original_request(cx.emu, out)
    if sent is None:
        if out.disposition == "delivered":
            cx.fail(f"delivered to {out.delivered_to} but no frame of the request was captured",
                    end_where(out))
        return None
    t = sent.tuple
    if t.proto not in (wire.PROTO_TCP, wire.PROTO_UDP, wire.PROTO_SCTP):
        cx.fail(f"{sent.summary()} is not a TCP/UDP/SCTP service connection", frame_where(sent.first))
    if (t.dst, t.dport) not in _service_addresses(cx.emu, svc, sp):
        cx.fail(f"{sent.summary()} is not addressed to service {svc.key} port {sp.name or sp.port}",
                frame_where(sent.first))
    return sent


def _service_flow(cx: _Check) -> ServiceFlow | None:
    return flow_service(cx.emu.cluster, cx.flow)


def _legacy_service(name: str, fn, emu, outcome, svc, port):
    """0.1 shape (emu, outcome, svc, port): the flow is read back from the outcome."""
    _deprecated(f"{name}(emu, outcome, svc, port)", f"{name}(emu, flow, outcome)")
    sent = original_request(emu, outcome)
    if sent is None:
        return outcome
    t = sent.tuple
    svc = _service(emu, svc)
    sp = service_port(svc, port)
    dst = f"svc/{svc.namespace}/{svc.name}" if t.dst == svc.cluster_ip else str(t.dst)
    proto = {wire.PROTO_TCP: "tcp", wire.PROTO_UDP: "udp"}.get(t.proto, "icmp")
    flow = Flow(sent.client, dst, proto, t.sport, t.dport)
    sf = flow_service(emu.cluster, flow)
    if sf is None or sf.service is not svc or sf.port != sp:     # says what it is addressed to
        _service_request(_Check(name, emu, flow, outcome), svc, sp)
    return fn(emu, flow, outcome)


def service_reply_from_service_address(emu, flow, outcome=None, *legacy):
    """Kubernetes Services: a client talks to the Service's address; kube-proxy
    un-NATs the answer, so it comes from the address and port the client used
    (ClusterIP, node IP:nodePort, load balancer or external IP), to the
    client's own address and port. Applies to flows addressed to a service
    that were delivered. Holds when the answer is delivered to the client from
    that address (ICMP errors quoting the packet as the client sent it); a UDP
    server may stay silent. Known exceptions: kubernetes#74383
    (asymmetric_local_node_port): the answer bypasses the translating node, so
    it is dropped on the way (TCP: INVALID in KUBE-FORWARD) or arrives from the
    endpoint's own address, never from the service address; that is what is
    checked then. Returns the Outcome."""
    if isinstance(flow, Outcome):               # 0.1: (emu, outcome, svc, port)
        return _legacy_service("service_reply_from_service_address",
                               service_reply_from_service_address, emu, flow, outcome, *legacy)
    cx = _begin("service reply from the service address", emu, flow, outcome)
    sf = _service_flow(cx)
    if sf is None:
        return cx.outcome
    out = cx.outcome
    sent = _service_request(cx, sf.service, sf.port)
    if sent is None or out.disposition != "delivered":
        return out
    t, rep = sent.tuple, out.reply
    if rep is None and t.proto == wire.PROTO_UDP:
        return out                              # a UDP server need not answer (DNS drops junk)
    if asymmetric_local_node_port(emu, cx.flow, out):
        endpoint = (out.packet.ip.dst, out.packet.ports[1])
        if rep is not None and rep.disposition == "delivered" and rep.packet is not None:
            got = (rep.packet.ip.src, rep.packet.ports[0])
            if got != endpoint:
                cx.fail(f"kubernetes#74383: the answer bypasses the translating node, so it must come "
                        f"from the endpoint {endpoint[0]}:{endpoint[1]}, but it came from "
                        f"{got[0]}:{got[1]} ({sent.summary()})", end_where(out, "reply"))
        return out
    if rep is None or rep.disposition != "delivered" or rep.delivered_to != sent.client:
        got = "no reply" if rep is None else f"reply {_leg(rep)}"
        cx.fail(f"{sent.summary()} delivered to {out.delivered_to}: {got}, expected one at {sent.client}",
                end_where(out, "reply" if rep is not None else "request"))
    r = rep.packet
    where = end_where(out, "reply")
    if isinstance(r.l4, wire.ICMP) and r.l4.type in wire.ICMP_ERROR_TYPES:
        q = quoted_packet(r.l4)
        if q is None or q.tuple != t:
            cx.fail(f"ICMP error at {sent.client} quotes {q.tuple if q else None}, expected the packet "
                    f"as sent ({t})", where)
        return out
    got = (r.ip.src, r.ports[0])
    if got != (t.dst, t.dport):
        cx.fail(f"reply at {sent.client} comes from {got[0]}:{got[1]}, expected the service address "
                f"{t.dst}:{t.dport} ({sent.summary()})", where)
    if (r.ip.dst, r.ports[1]) != (t.src, t.sport):
        cx.fail(f"reply at {sent.client} goes to {r.ip.dst}:{r.ports[1]}, expected the client "
                f"{t.src}:{t.sport}", where)
    return out


def _usable(eps: list[Endpoint]) -> list[Endpoint]:
    """Ready endpoints; when none is ready, the serving terminating ones."""
    return [e for e in eps if e.ready] or [e for e in eps if e.serving and e.terminating]


def acceptable_endpoints(emu, svc, port, client_ip: IPv4Address, vip: IPv4Address,
                         node: str | None) -> list[Endpoint]:
    """The endpoints a connection from client_ip to the service address vip may
    reach when `node` translated it: ready endpoints (or, when none is, the
    serving terminating ones); only the node's own with internalTrafficPolicy
    Local (ClusterIP), and with externalTrafficPolicy Local (node ports, load
    balancer and external IPs) for clients that are neither pods (see
    `from_pods`) nor the node itself."""
    svc = _service(emu, svc)
    sp = service_port(svc, port)
    eps = svc.endpoints_for(sp)
    local = [e for e in eps if e.node == node]
    if vip == svc.cluster_ip:
        return _usable(local) if svc.internal_traffic_policy == "Local" else _usable(eps)
    inside = from_pods(emu, client_ip, node) or (node is not None and client_ip in _node_addresses(emu, node))
    if svc.external_traffic_policy == "Local" and not inside:
        return _usable(local)
    return _usable(eps)


def _endpoint_names(eps: list[Endpoint]) -> str:
    return ", ".join(f"{e.ip}:{e.port} ({e.pod})" for e in eps) or "none"


def delivered_to_ready_endpoint(emu, flow, outcome=None, *legacy):
    """Kubernetes Services: traffic goes only to ready endpoints (to serving
    terminating ones when none is ready), honouring the traffic policies:
    internalTrafficPolicy Local keeps ClusterIP traffic on the client's node,
    externalTrafficPolicy Local keeps outside traffic on the node it arrived
    at. Applies to flows addressed to a service that were delivered. Holds
    when the request was translated to such an endpoint (acceptable_endpoints)
    and reached that endpoint's pod on the endpoint's port. Known exceptions:
    pod traffic to an external address with externalTrafficPolicy Local may
    use any endpoint (kube-proxy short-circuits it to the Service's chain;
    encoded in acceptable_endpoints). Returns the Outcome."""
    if isinstance(flow, Outcome):               # 0.1: (emu, outcome, svc, port)
        return _legacy_service("delivered_to_ready_endpoint", delivered_to_ready_endpoint,
                               emu, flow, outcome, *legacy)
    cx = _begin("delivered to a ready endpoint", emu, flow, outcome)
    sf = _service_flow(cx)
    if sf is None:
        return cx.outcome
    out = cx.outcome
    svc, sp = sf.service, sf.port
    sent = _service_request(cx, svc, sp)
    if sent is None or out.disposition != "delivered":
        return out
    node, where = _dnat_node(out, sent)
    ok = acceptable_endpoints(emu, svc, sp, sent.tuple.src, sent.tuple.dst, node)
    names = _endpoint_names(ok)
    if where is None:
        cx.fail(f"{sent.summary()} was delivered to {out.delivered_to} without being translated to an "
                f"endpoint of {svc.key} (acceptable: {names})", end_where(out))
    got = (out.packet.ip.dst, out.packet.ports[1])
    match = [e for e in ok if (e.ip, e.port) == got]
    place = nat_where(out, "request", kinds=("DNAT",)) or _frame_place(out, where, "request")
    if not match:
        cx.fail(f"{sent.summary()} was translated by node {node} and delivered to {out.delivered_to} "
                f"as {got[0]}:{got[1]}, not an acceptable endpoint of {svc.key} port "
                f"{sp.name or sp.port} (acceptable: {names})", place)
    if match[0].pod and out.delivered_to not in (f"pod/{match[0].pod}", f"node/{match[0].node}"):
        cx.fail(f"{sent.summary()}: endpoint {got[0]}:{got[1]} is pod {match[0].pod}, but it was "
                f"delivered to {out.delivered_to}", end_where(out))
    return out


# --- endpoint reachability -----------------------------------------------------------

def _dnat_target(nf, table: str, chain: str | None):
    """(ip, port) the chain DNATs to (its first DNAT rule), or None."""
    if chain is None:
        return None
    try:
        rules = nf.ruleset.chain(table, chain).rules
    except KeyError:
        return None
    for r in rules:
        t = r.target
        if t is not None and getattr(t, "name", "") == "DNAT" and getattr(t, "range", None) is not None:
            return t.range.min_ip, t.range.min_port
    return None


def _dnat_rules_to(nf, ip, port, svc: Service) -> list[str]:
    """nat/CHAIN#N of every rule of svc (kube-proxy comments its rules with
    "NS/NAME:PORT") that DNATs to ip:port."""
    out = []
    for name, chain in nf.ruleset.tables["nat"].chains.items():
        for i, r in enumerate(chain.rules, 1):
            t = r.target
            if t is not None and getattr(t, "name", "") == "DNAT" and getattr(t, "range", None) is not None \
                    and t.range.min_ip == ip and t.range.min_port in (None, port) \
                    and f'"{svc.key}' in r.text:
                out.append(f"nat/{name}#{i}")
    return out


def _last_rule(outcome, namespace: str, needle: str = "", leg: str = "request",
               matched: bool = True) -> Where | None:
    """The last netfilter rule (whose text holds `needle`) that a leg met in
    that namespace: that matched, or (matched=False) matched or not."""
    hops = [h for h in outcome.hops if h.leg == leg and h.namespace == namespace
            and h.component == "netfilter" and needle in h.detail
            and ("=> match" in h.detail or (not matched and "=> no match" in h.detail))]
    return hop_where(hops[-1]) if hops else None


def _steer(emu, ep: Endpoint):
    """Make every node's `-m statistic --mode random` rules match exactly when
    their chain DNATs to ep, and hide ClientIP-affinity memory (the `recent`
    lists), for one probe. Returns the undo."""
    from ..netfilter.recent import RecentTables
    saved, nft_undo = [], []
    for ns in emu.topology.node_ns.values():
        nf = ns.netfilter
        if nf is None:
            continue

        def force(q, nf=nf):
            rule = nf.ruleset.chain(q.table, q.chain).rules[q.rule_number - 1]
            dnat = _dnat_target(nf, q.table, getattr(rule.target, "chain", None))
            return dnat is not None and dnat[0] == ep.ip and dnat[1] in (None, ep.port)

        saved.append((nf, nf.force_statistic, nf.recent))
        nf.force_statistic, nf.recent = force, RecentTables()
        nft = getattr(nf, "nft", None)
        if nft is not None:                  # nftables mode: numgen vmaps, affinity sets
            nft.force_choice = lambda label, chain, _t, e=nft: _nft_dnats_to(e, label, chain, ep)
            nft_undo.append((nft, nft.hide_dynamic_elements()))

    def undo():
        for nf, forced, recent in saved:
            nf.force_statistic, nf.recent = forced, recent
        for nft, restore in nft_undo:
            nft.force_choice = None
            restore()
    return undo


def _nft_dnats_to(engine, label: str, chain: str, ep: Endpoint) -> bool:
    """The nftables chain's `dnat to` statement goes to ep (kube-proxy's endpoint chains)."""
    got = engine.dnat_of(label, chain)
    return got is not None and got[0] == ep.ip and got[1] in (None, ep.port)


def endpoint_reachable(emu, flow, outcome=None):
    """Kubernetes Services: every ready endpoint of a Service is reachable
    through each of its addresses from every client that may use it. Applies
    to flows addressed to a service from a pod or a node (any address), or
    from outside (node ports and external IPs; load balancers with
    externalTrafficPolicy Cluster). For every endpoint acceptable for this
    client and translating node (acceptable_endpoints), it traces one more
    connection like the flow (a fresh source port) with kube-proxy's random
    choice steered to that endpoint on every node (and ClientIP affinity
    memory hidden for the probe), and holds when each probe is delivered to
    its endpoint's pod on the endpoint's port. It catches an endpoint missing
    from a node's rules (traffic silently shifts to the others). Known
    exceptions: a pod reaching itself over a bridge port without the hairpin
    flag (hairpin_off) is dropped, as checked then; an outside client's load
    balancer with externalTrafficPolicy Local is not probed (the cloud load
    balancer picks the node per connection). Returns the Outcome of the flow
    itself."""
    cx = _begin("endpoint reachable", emu, flow, outcome)
    sf = _service_flow(cx)
    if sf is None:
        return cx.outcome
    out, f = cx.outcome, cx.flow
    outside = f.src.startswith("ext/")
    if outside and (sf.kind == "cluster-ip" or (sf.kind == "load-balancer"
                                                 and sf.service.external_traffic_policy == "Local")):
        return out
    sent = original_request(emu, out)
    client_ip = sent.tuple.src if sent is not None else emu.resolve(f.src).ip
    vip = emu.resolve(f.dst).ip
    node = (_dnat_node(out, sent)[0] if sent is not None else None) or translating_node(emu, f)
    if node is None:
        return out
    svc, sp = sf.service, sf.port
    for ep in acceptable_endpoints(emu, svc, sp, client_ip, vip, node):
        undo = _steer(emu, ep)
        try:
            probe = emu.trace(f.src, f.dst, f.proto, None, f.dport)
        finally:
            undo()
        want = (ep.ip, ep.port)
        got = (probe.packet.ip.dst, probe.packet.ports[1]) if probe.packet is not None and \
            probe.packet.ip is not None else None
        if got == want and hairpin_off(emu, f, probe):
            if probe.disposition != "dropped" or probe.reason != "bridge-no-hairpin":
                cx.fail(f"hairpin: {f.src} reaching itself ({ep.ip}:{ep.port}) through {svc.key} over a "
                        f"bridge port without the hairpin flag must be dropped (bridge-no-hairpin), "
                        f"but it was {_ended(probe)}", end_where(probe))
            continue
        pod_ok = ep.pod is None or probe.delivered_to in (f"pod/{ep.pod}", f"node/{ep.node}")
        if probe.disposition == "delivered" and got == want and pod_ok:
            continue
        rules = _dnat_rules_to(emu.namespace(f"node/{node}").netfilter, ep.ip, ep.port, svc)
        why = (f"node {node}'s rules of {svc.key} that DNAT to it: {', '.join(rules)}" if rules else
               f"no nat rule of {svc.key} on node {node} DNATs to {ep.ip}:{ep.port}")
        ended = (f"delivered to {probe.delivered_to} as {got[0]}:{got[1]}" if probe.disposition == "delivered"
                 and got else _ended(probe))
        place = _last_rule(probe, f"node/{node}", f"-> {ep.ip}:{ep.port}", matched=False) or \
            nat_where(probe, "request", kinds=("DNAT",), namespace=f"node/{node}") or \
            _last_rule(probe, f"node/{node}", f'"{svc.key}') or end_where(probe)
        cx.fail(f"endpoint {ep.ip}:{ep.port} (pod {ep.pod}, node {ep.node}) of {svc.key} port "
                f"{sp.name or sp.port} is not reachable from {f.src} through {f.dst}:{f.dport}: with "
                f"kube-proxy's random choice steered to it, the connection was {ended} ({why})", place)
    return out


# --- service coverage ----------------------------------------------------------------

def _selected(emu, svc: Service) -> list[Pod]:
    sel = svc.selector or {}
    return [p for p in emu.cluster.pods if p.namespace == svc.namespace and sel
            and all(p.labels.get(k) == v for k, v in sel.items())]


def service_covered(emu, flow, outcome=None):
    """Your manifests: a Service you send traffic to selects pods, and each of
    its ports has a ready endpoint (else kube-proxy rejects the connection:
    "has no endpoints"). Applies to flows addressed to a Service that has a
    selector. Holds when the selector matches at least one pod of the
    Service's namespace and the addressed port has at least one ready
    endpoint. Known exceptions: none; but kdp.testing's generated clusters
    break it on purpose (some of their Services select nothing), so it is not
    in INVARIANTS: add it for your own clusters. Returns the Outcome."""
    cx = _begin("service covered", emu, flow, outcome)
    sf = _service_flow(cx)
    if sf is None or sf.service.selector is None:
        return cx.outcome
    svc, sp = sf.service, sf.port
    out = cx.outcome
    sel = ",".join(f"{k}={v}" for k, v in sorted((svc.selector or {}).items())) or "(empty)"
    pods = _selected(emu, svc)
    if not pods:
        cx.fail(f"service {svc.key} selects {sel}, which no pod in namespace {svc.namespace} carries: "
                f"it has no endpoints, and the connection was {_ended(out)}", end_where(out))
    if not [e for e in svc.endpoints_for(sp) if e.ready]:
        why = []
        for p in pods:
            named = isinstance(sp.target_port, str) and sp.target_port not in {c.name for c in p.ports()}
            why.append(f"{p.key} " + ("not ready" if not p.ready else "terminating" if p.terminating
                                      else f"declares no port named {sp.target_port!r}" if named
                                      else "not an endpoint"))
        cx.fail(f"port {sp.name or sp.port} of service {svc.key} (selector {sel}, targetPort "
                f"{sp.target_port or sp.port}) has no ready endpoint: {'; '.join(why)}; the connection "
                f"was {_ended(out)}", end_where(out))
    return out


# --- masquerade ------------------------------------------------------------------------

def _classify(emu, ip: IPv4Address, proto: int, dport: int | None):
    """(kind, service) of a destination: cluster-ip / external (node port, load
    balancer or external IP) with its Service, or pod / node / cluster / outside."""
    c = emu.cluster
    name = wire.PROTO_NAMES.get(proto, "")
    for svc in c.services:
        for sp in svc.ports:
            if sp.protocol.lower() != name:
                continue
            if ip == svc.cluster_ip and dport == sp.port:
                return "cluster-ip", svc
            if ip in list(svc.external_ips) + list(svc.load_balancer_ips) and dport == sp.port:
                return "external", svc
            if sp.node_port and sp.node_port == dport and \
                    any(ip in _node_addresses(emu, n.name) for n in c.nodes):
                return "external", svc
    if any(ip == p.ip for p in c.pods):
        return "pod", None
    if any(ip in _node_addresses(emu, n.name) for n in c.nodes):
        return "node", None
    if any(ip in n for n in c.config.no_masquerade) or ip in c.config.service_cidr:
        return "cluster", None
    return "outside", None


def _expect_masquerade(emu, sent: Sent, kind: str, svc, node, hairpin: bool) -> bool:
    kp = emu.cluster.config.kube_proxy
    inside = from_pods(emu, sent.tuple.src, node)
    if kind == "cluster-ip":
        return kp.masquerade_all or not inside or hairpin
    if kind == "external":
        if svc.external_traffic_policy != "Local":
            return True
        local_src = sent.client == f"node/{node}"
        return hairpin or (not inside and local_src)
    return False


def _snat_place(outcome, sent: Sent) -> Where | None:
    """The SNAT/MASQUERADE rule that matched, else the first frame whose
    source changed."""
    w = nat_where(outcome, "request", kinds=("SNAT", "MASQUERADE"))
    if w is not None:
        return w
    for s in request_frames(outcome):
        if s.pkt.ip.src != sent.tuple.src:
            return frame_where(s)
    return end_where(outcome)


def masquerade_where_kube_proxy_says(emu, flow, outcome=None):
    """kube-proxy and the node's ip-masq-agent: the source a delivered packet
    arrives with is where they put it. pod -> ClusterIP keeps the pod address
    unless it hairpins back to the client or masqueradeAll is set; other
    clients of a ClusterIP (nodes), and any client of a node port, load
    balancer or external IP with externalTrafficPolicy Cluster arrive from an
    address of the node that translated them; with externalTrafficPolicy
    Local, clients keep their address (except the node itself, and
    hairpins); pod -> outside is SNATed to its node's IP; everything else
    keeps its source. Applies to every delivered flow. Known exceptions:
    none beyond those rules (kubernetes#74383 keeps the pod address, as
    checked). Returns the Outcome."""
    cx = _begin("masquerade where kube-proxy says", emu, flow, outcome)
    out = cx.outcome
    if out.disposition != "delivered" or out.packet is None or out.packet.ip is None:
        return out
    sent = original_request(emu, out)
    if sent is None:
        return out
    t = sent.tuple
    kind, svc = _classify(emu, t.dst, t.proto, t.dport)
    node, _where = _dnat_node(out, sent)
    client_ns = sent.first.dev.namespace
    node = node or client_ns.node
    got = out.packet.ip.src
    label = f"{kind}{' ' + svc.key if svc else ''}"
    if kind == "outside" and client_ns.kind == "pod":
        want = emu.cluster.node(client_ns.node).ip
        if got != want:
            cx.fail(f"pod egress ({label}) arrived at {out.delivered_to} from {got}, expected SNAT to "
                    f"its node's IP {want}", _snat_place(out, sent))
        return out
    hairpin = out.packet.ip.dst == t.src
    if _expect_masquerade(emu, sent, kind, svc, node, hairpin):
        addrs = _node_addresses(emu, node)
        if got not in addrs:
            place = nat_where(out, "request", kinds=("DNAT",)) or end_where(out)
            cx.fail(f"({label}) arrived at {out.delivered_to} from {got}, expected masquerade to an "
                    f"address of node {node} {sorted(map(str, addrs))}", place)
    elif got != t.src:
        cx.fail(f"({label}) arrived at {out.delivered_to} from {got}, expected the client address "
                f"{t.src} kept", _snat_place(out, sent))
    return out


# --- conntrack ----------------------------------------------------------------------

def _node_tables(emu):
    for ns in emu.topology.namespaces.values():
        nf = ns.netfilter
        if nf is not None and getattr(nf, "conntrack", None) is not None:
            yield ns, nf.conntrack


def _entry_where(ns, e) -> Where:
    return Where(ns.node, ns.name, "-", "conntrack table", f"entry #{e.id}")


def _check_entry(cx: _Check, ns, e) -> None:
    """Reply tuple = inverse of the original after NAT: the side no NAT touched
    is the original's, mirrored (ports aside for ICMP, whose id NAT may change)."""
    o, r, inv = e.orig, e.reply, e.orig.invert()
    if inv is None:
        return

    def fail(detail: str) -> None:
        cx.fail(detail, _entry_where(ns, e))
    if not e.status & (SRC_NAT | DST_NAT) and r != inv:
        fail(f"entry #{e.id} without NAT: reply tuple {r}, expected the inverse of the original {inv}")
    icmp = o.proto == PROTO_ICMP
    if r.proto != o.proto:
        fail(f"entry #{e.id}: reply protocol {r.proto}, original {o.proto}")
    if not e.status & DST_NAT and (r.src, icmp or r.sport) != (inv.src, icmp or inv.sport):
        fail(f"entry #{e.id} (no DNAT): reply source {r.src}:{r.sport}, expected the original "
             f"destination {inv.src}:{inv.sport}")
    if not e.status & SRC_NAT and (r.dst, icmp or r.dport) != (inv.dst, icmp or inv.dport):
        fail(f"entry #{e.id} (no SNAT): reply destination {r.dst}:{r.dport}, expected the original "
             f"source {inv.dst}:{inv.dport}")


def conntrack_symmetric_and_expiring(emu, flow=None, outcome=None):
    """The kernel's conntrack, which kube-proxy's NAT relies on: in every
    namespace's table, each live entry's reply tuple is the inverse of its
    original tuple after NAT (the untranslated side unchanged, no NAT -> the
    exact inverse) and both tuples find the entry in their direction; each
    entry past its timeout at the emulator's current time is gone once looked
    up (the kernel's lazy expiry, what the next packet would do) and is not
    listed by `conntrack -L`. Applies after every flow (flow=None: checks the
    tables now, tracing nothing). Known exceptions: none. Returns the
    Outcome (None without a flow)."""
    if isinstance(flow, (int, float)) and not isinstance(flow, bool):     # 0.1: (emu, now)
        _deprecated("conntrack_symmetric_and_expiring(emu, now)",
                    "conntrack_symmetric_and_expiring(emu, flow, outcome)")
        _check_tables(_Check("conntrack symmetric", emu, None, None), emu, float(flow))
        return None
    if flow is None:
        cx = _Check("conntrack symmetric", emu, None, outcome)
    else:
        cx = _begin("conntrack symmetric", emu, flow, outcome)
    _check_tables(cx, emu, emu.datapath.now)
    return cx.outcome


def _check_tables(cx: _Check, emu, now: float) -> None:
    for ns, table in _node_tables(emu):
        entries = list(table)
        for e in entries:
            if e.timeout_at > now:
                _check_entry(cx, ns, e)
                for t, direction in ((e.orig, "original"), (e.reply, "reply")):
                    hit = table.lookup(t, now)
                    if hit is None or hit[0] is not e or hit[1] != direction:
                        cx.fail(f"entry #{e.id}: lookup of its {direction} tuple {t} at {now} found {hit}",
                                _entry_where(ns, e))
        expired = [e for e in entries if e.timeout_at <= now]
        listing = table.to_conntrack_l(now).splitlines() if expired else []
        for e in expired:
            fields = f" {e.orig.conntrack_fields()} "
            if any(fields in line + " " for line in listing):
                cx.fail(f"conntrack expiring: entry #{e.id} ({e.orig}) timed out at {e.timeout_at} but "
                        f"`conntrack -L` at {now} lists it", _entry_where(ns, e))
            if table.lookup(e.orig, now) is not None or any(x is e for x in table):
                cx.fail(f"conntrack expiring: entry #{e.id} ({e.orig}) timed out at {e.timeout_at} and is "
                        f"still there at {now}", _entry_where(ns, e))


# --- every frame --------------------------------------------------------------------

def _check_terminal(cx: _Check, outcome, leg: str) -> None:
    where = end_where(cx.outcome, leg)
    if outcome.disposition not in TERMINAL:
        cx.fail(f"{leg} ended with disposition {outcome.disposition!r}, not one of {TERMINAL}", where)
    if outcome.disposition == "delivered":
        if not outcome.delivered_to or outcome.packet is None:
            cx.fail(f"{leg} delivered but delivered_to={outcome.delivered_to!r}, "
                    f"packet={outcome.packet!r}", where)
    elif not outcome.reason or outcome.reason == errors.LOST:
        cx.fail(f"{leg} {outcome.disposition} without a named reason ({outcome.reason!r})", where)


def _unicast_flood(outcome) -> bool:
    """Whether a bridge flooded a unicast frame (its destination MAC not in the
    FDB): each copy then goes through br_netfilter and on by itself, so what the
    copies cause (a REJECT's answer, say) comes once per copy, as from the kernel."""
    return any(h.component == "bridge" and h.action == "flood" and "not in FDB" in h.detail
               for h in outcome.hops)


def no_frame_lost_or_duplicated(emu, flow=None, outcome=None):
    """The kernel's datapath: every packet ends somewhere named. Applies to
    every flow (and to what emu.send returns: no_frame_lost_or_duplicated(emu,
    None, outcome)). Holds when the request (and the reply, if any) ended
    delivered, dropped or rejected, with a named reason when not delivered;
    every frame a veth or the underlay transmitted was received by its peer
    (or its drop is named); no device saw the same frame twice in the same
    direction (a bridge floods one copy per port, hairpin sends back out the
    ingress port in the other direction, a retransmission is a new frame with
    new bytes). Known exceptions: a bridge flooding a unicast frame (each copy
    is filtered and answered on its own, as in the kernel), a loop kdp cut
    short. Returns the Outcome."""
    return _outcome_invariant("no frame lost", "no_frame_lost_or_duplicated", _frames_check,
                              emu, flow, outcome)


def _need(outcome, name: str):
    if not isinstance(outcome, Outcome):
        raise TypeError(f"{name}(emu, flow, outcome): give the flow, or the outcome of emu.send()")
    return outcome


def _outcome_invariant(title: str, name: str, check, emu, flow, outcome):
    """The shape of the invariants that read only an Outcome: (emu, flow, outcome=None), or
    (emu, None, outcome) for what emu.send returned, or 0.1's (outcome), deprecated."""
    if isinstance(emu, Outcome):                # 0.1: (outcome)
        _deprecated(f"{name}(outcome)", f"{name}(emu, flow, outcome)", stacklevel=4)
        check(_Check(title, None, None, emu), emu)
        return emu
    cx = _begin(title, emu, flow, outcome) if flow is not None else \
        _Check(title, emu, None, _need(outcome, name))
    check(cx, cx.outcome)
    return cx.outcome


def _frames_check(cx: _Check, outcome) -> None:
    _check_terminal(cx, outcome, "request")
    if outcome.reply is not None:
        _check_terminal(cx, outcome.reply, "reply")
    looped = any(h.action == "drop" and errors.HOP_LIMIT in h.detail for h in outcome.hops)
    if looped:                  # kdp cut a loop short: repeats and unreceived frames are expected
        return
    frames = outcome.frames
    raws = [wire.emit(p) for _d, _dir, p in frames]
    flooded = _unicast_flood(outcome)
    seen: dict = {}
    for i, ((dev, direction, pkt), raw) in enumerate(zip(frames, raws)):
        key = (dev.namespace.name, dev.name, direction, raw)
        if key in seen and not flooded:
            cx.name = "no frame duplicated"
            cx.fail(f"{pkt.summary()} was already seen as frame #{seen[key]}",
                    frame_where(Seen(i, dev, direction, pkt)))
        seen[key] = i
    for i, (dev, direction, pkt) in enumerate(frames):
        if direction != "out" or dev.kind == "loopback" or isinstance(dev, Bridge):
            continue
        if dev.peer is not None:
            peers = [dev.peer]
        elif dev.segment is not None:
            peers = [d for d in dev.segment.devices if d is not dev]
        else:
            continue
        got = any(d in peers and dir2 == "in" and raws[k] == raws[i]
                  for k, (d, dir2, _p) in enumerate(frames[i + 1:], start=i + 1))
        ends = {(d.namespace.name, d.name) for d in [dev] + peers}
        named = any(h.action == "drop" and (h.namespace, h.device) in ends for h in outcome.hops)
        if not got and not named:
            cx.fail(f"{pkt.summary()} sent out of {dev.namespace.name} {dev.name} was never received by "
                    f"{[d.label for d in peers]}", frame_where(Seen(i, dev, direction, pkt)))


def _predecessor(lineage: list[Seen], j: int) -> tuple[Seen | None, str]:
    """The capture this one follows from, and how: link (veth/underlay), bridge
    or route."""
    f = lineage[j]
    dev = f.dev
    for p in reversed(lineage[:j]):
        pd = p.dev
        if f.direction == "in":
            if isinstance(dev, Bridge):
                if p.direction == "in" and pd.master is dev:
                    return p, "bridge"
            elif p.direction == "out" and (pd is dev.peer or (
                    dev.segment is not None and pd.segment is dev.segment and pd is not dev)):
                return p, "link"
        elif dev.master is not None:                 # out of a bridge port: bridged
            if (p.direction, pd) == ("out", dev.master) or (p.direction == "in" and pd.master is dev.master):
                return p, "bridge"
        elif p.direction == "in" and pd.namespace is dev.namespace and pd.master is None:
            return p, "route"
    return None, "origin"


def _l4_checksum_ok(pkt: wire.Packet) -> bool:
    """Valid, or the one's-complement twin of a valid zero: an incremental
    update of a message whose words sum to zero leaves 0x0000 where a full
    computation gives 0xffff (RFC 1624; the kernel's csum_replace does it too)."""
    if wire.l4_checksum_ok(pkt):
        return True
    return pkt.l4.checksum == 0 and wire.l4_checksum_of(pkt.ip, pkt.l4) == 0xFFFF


def ttl_and_checksums_right(emu, flow=None, outcome=None):
    """The kernel's IPv4 forwarding: at every hop of every packet in
    outcome.frames the IP header and L4 checksums are valid (for packets that
    started valid: kdp's own and valid injected ones), the TTL is unchanged
    across veths, the underlay and bridges, and one lower after each router
    that forwarded it. Applies to every flow (and to what emu.send returns:
    ttl_and_checksums_right(emu, None, outcome)). Known exceptions: 0x0000
    where an all-zero message's full checksum is 0xffff (the kernel's
    incremental update leaves it; RFC 1624). Returns the Outcome."""
    return _outcome_invariant("TTL and checksums", "ttl_and_checksums_right", _ttl_check,
                              emu, flow, outcome)


def _ttl_check(cx: _Check, outcome) -> None:
    for lineage in _lineages(outcome).values():
        origin = lineage[0].pkt
        valid = wire.ip_checksum_ok(origin) and wire.l4_checksum_ok(origin)
        for j, f in enumerate(lineage):
            if valid and not wire.ip_checksum_ok(f.pkt):
                cx.name = "checksums"
                cx.fail(f"{f.pkt.summary()}: bad IP header checksum 0x{f.pkt.ip.checksum:04x}",
                        frame_where(f))
            if valid and not _l4_checksum_ok(f.pkt):
                want = wire.l4_checksum_of(f.pkt.ip, f.pkt.l4)
                cx.name = "checksums"
                cx.fail(f"{f.pkt.summary()}: bad {f.pkt.proto_name.upper()} checksum "
                        f"0x{f.pkt.l4.checksum:04x}, expected 0x{want:04x}", frame_where(f))
            prev, how = _predecessor(lineage, j)
            if prev is None or f.dev.kind == "loopback":
                continue
            want = prev.pkt.ip.ttl - (1 if how == "route" else 0)
            if f.pkt.ip.ttl != want:
                cx.name = "TTL"
                cx.fail(f"{f.pkt.summary()}: TTL {f.pkt.ip.ttl} after {how} hop from {prev.where} "
                        f"(TTL {prev.pkt.ip.ttl}), expected {want}", frame_where(f))


# --- all of them ------------------------------------------------------------------------

INVARIANTS = (
    pod_to_pod_without_nat, node_to_pod_without_nat, pod_sees_own_address,
    service_reply_from_service_address, delivered_to_ready_endpoint, endpoint_reachable,
    masquerade_where_kube_proxy_says, conntrack_symmetric_and_expiring,
    no_frame_lost_or_duplicated, ttl_and_checksums_right,
)


def check_flow(emu, flow, outcome=None, invariants=INVARIANTS):
    """Run every invariant of `invariants` (default INVARIANTS: all that hold
    on any cluster kdp builds; add service_covered for your own manifests, or
    your own functions of the same shape) on one flow, tracing it first when
    outcome is None. Returns the Outcome."""
    flow = Flow(*flow)
    if outcome is None:
        outcome = emu.trace(*flow)
    for inv in invariants:
        inv(emu, flow, outcome)
    return outcome


# --- determinism --------------------------------------------------------------------

def _capture_records(emu) -> dict:
    return {k: [(t, d, wire.emit(p)) for t, p, d in v] for k, v in emu.captures.items()}


def _first_difference(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"byte {i}: 0x{x:02x} vs 0x{y:02x}"
    return f"lengths {len(a)} vs {len(b)}"


def _compare_results(cx: _Check, ra, rb) -> None:
    la = ra if isinstance(ra, (list, tuple)) else [ra]
    lb = rb if isinstance(rb, (list, tuple)) else [rb]
    if len(la) != len(lb):
        cx.fail(f"run returned {len(la)} results, then {len(lb)}")
    for i, (x, y) in enumerate(zip(la, lb)):
        if hasattr(x, "as_dict") and hasattr(y, "as_dict") and x.as_dict() != y.as_dict():
            cx.fail(f"outcome #{i} differs: {x.as_dict()} vs {y.as_dict()}", end_where(x))


def same_seed_same_output(make_emulator, run) -> None:
    """kdp's own promise, not a Kubernetes rule: builds two emulators with
    make_emulator() (same cluster, same seed), runs run(emu) on each and
    compares every device's capture byte for byte (times, directions, frames)
    and the outcomes run returned. A determinism check of a whole run, so its
    shape differs from the invariants'."""
    runs = []
    for _ in range(2):
        emu = make_emulator()
        result = run(emu)
        runs.append((emu, _capture_records(emu), result))
    (emu, ca, ra), (_, cb, rb) = runs
    cx = _Check("same seed, same output", None, None, None)
    if sorted(ca) != sorted(cb):
        cx.fail(f"devices with captures differ: {sorted(set(ca) ^ set(cb))}")
    for key in sorted(ca):
        a, b = ca[key], cb[key]
        ns = emu.topology.namespaces.get(key[0])
        place = Where(ns.node if ns else None, key[0], key[1], "capture")
        if len(a) != len(b):
            cx.fail(f"{key[0]} {key[1]}: {len(a)} frames, then {len(b)}", place)
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                cx.fail(f"{key[0]} {key[1]} frame #{i}: time {x[0]} vs {y[0]}, {x[1]} vs {y[1]}, "
                        f"{_first_difference(x[2], y[2])}", replace(place, frame=i))
    _compare_results(cx, ra, rb)
