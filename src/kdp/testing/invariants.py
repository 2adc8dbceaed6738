# testing.invariants: what an emulated Kubernetes cluster must keep, as
# functions a property test calls on an Emulator and the Outcome of a trace or
# send. Each raises InvariantViolation (an AssertionError) whose message names
# the flow, the hop (frame number, namespace, device, direction), the field, and
# what was expected against what was seen. Reads outcomes, captures and the
# public conntrack table API; never changes kdp's decisions.
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network

from .. import errors, wire
from ..conntrack.entry import DST_NAT, SRC_NAT
from ..conntrack.tuples import PROTO_ICMP, Tuple, packet_tuple, quoted_packet
from ..k8s.model import Endpoint, Pod, Service
from ..net.device import Bridge
from .strategies import Flow, service_port

__all__ = [
    "InvariantViolation", "pod_to_pod_without_nat", "node_to_pod_without_nat",
    "pod_sees_own_address", "service_reply_from_service_address", "delivered_to_ready_endpoint",
    "masquerade_where_kube_proxy_says", "conntrack_symmetric_and_expiring",
    "no_frame_lost_or_duplicated", "ttl_and_checksums_right", "same_seed_same_output",
    "acceptable_endpoints", "request_frames", "original_request", "from_pods",
]

TERMINAL = ("delivered", "dropped", "rejected")


class InvariantViolation(AssertionError):
    """An invariant of the Kubernetes network model (or of the kernel's
    behaviour kdp emulates) does not hold; the message says where and how."""


def _fail(what: str, detail: str) -> None:
    raise InvariantViolation(f"{what}: {detail}")


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


def _flow_text(outcome) -> str:
    req = request_frames(outcome)
    return req[0].pkt.summary() if req else "(no IP frame)"


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


def _probe(pod: Pod) -> tuple[str, int]:
    """A (proto, port) the pod answers on: a listening TCP/UDP port, else ICMP echo."""
    for p in pod.ports():
        if p.protocol in ("TCP", "UDP"):
            return p.protocol.lower(), p.port
    return "icmp", 0


def _node_addresses(emu, node: str) -> set[IPv4Address]:
    ns = emu.namespace(f"node/{node}")
    return {a.ip for d in ns.devices.values() for a in d.addresses if not a.ip.is_loopback}


# --- the Kubernetes network model -----------------------------------------------------

def _unchanged_path(outcome, frames: list[Seen], src: IPv4Address, dst: IPv4Address, what: str) -> None:
    for s in frames:
        got = (s.pkt.ip.src, s.pkt.ip.dst)
        if got != (src, dst):
            _fail(what, f"{s.where}: source/destination {got[0]} -> {got[1]}, expected "
                        f"{src} -> {dst} unchanged (flow {_flow_text(outcome)})")


def _no_nat_both_ways(emu, outcome, src_spec: str, dst_spec: str, src_ip, dst_ip, what: str) -> None:
    if outcome.disposition != "delivered" or outcome.delivered_to != dst_spec:
        _fail(what, f"{_flow_text(outcome)} ended {outcome.disposition} at "
                    f"{outcome.delivered_to} ({outcome.reason}), expected delivered to {dst_spec}")
    _unchanged_path(outcome, request_frames(outcome), src_ip, dst_ip, what)
    rep = outcome.reply
    if rep is None and outcome.packet.ip.proto == wire.PROTO_UDP:
        return                                  # a UDP server need not answer (DNS drops junk)
    if rep is None or rep.disposition != "delivered" or rep.delivered_to != src_spec:
        got = "no reply" if rep is None else f"reply {rep.disposition} at {rep.delivered_to} ({rep.reason})"
        _fail(what, f"{_flow_text(outcome)}: {got}, expected the answer delivered to {src_spec}")
    _unchanged_path(outcome, _reply_frames(outcome), dst_ip, src_ip, what + " (reply)")


def pod_to_pod_without_nat(emu, src_pod, dst_pod, proto: str | None = None,
                           dport: int | None = None, time: float | None = None):
    """A pod reaches another pod (any node pair) with source and destination
    addresses unchanged at every hop, and the answer comes back the same way.
    Traces one packet (to a port the destination listens on, else ICMP echo);
    returns the Outcome."""
    what = "pod-to-pod without NAT"
    s, d = _pod(emu, src_pod), _pod(emu, dst_pod)
    if proto is None:
        proto, dport = _probe(d)
    out = emu.trace(_pod_spec(s), _pod_spec(d), proto, None, dport, time)
    src_ip = request_frames(out)[0].pkt.ip.src if request_frames(out) else s.ip
    if src_ip != s.ip:
        _fail(what, f"pod {s.key} sent from {src_ip}, not its address {s.ip}")
    _no_nat_both_ways(emu, out, _pod_spec(s), _pod_spec(d), s.ip, d.ip, what)
    return out


def node_to_pod_without_nat(emu, node: str, dst_pod, proto: str | None = None,
                            dport: int | None = None, time: float | None = None):
    """A node reaches a pod with the source its own stack chose (the node IP,
    or its bridge address for a local pod) and the pod's address unchanged at
    every hop, and the answer comes back. Returns the Outcome."""
    what = "node-to-pod without NAT"
    node = node.split("/", 1)[1] if node.startswith("node/") else node
    d = _pod(emu, dst_pod)
    if proto is None:
        proto, dport = _probe(d)
    out = emu.trace(f"node/{node}", _pod_spec(d), proto, None, dport, time)
    req = request_frames(out)
    if not req:
        _fail(what, f"node/{node} -> {d.key}: no IP frame was sent ({out.disposition}, {out.reason})")
    src_ip = req[0].pkt.ip.src
    if src_ip not in _node_addresses(emu, node):
        _fail(what, f"{req[0].where}: node/{node} sent from {src_ip}, not one of its addresses")
    _no_nat_both_ways(emu, out, f"node/{node}", _pod_spec(d), src_ip, d.ip, what)
    return out


def pod_sees_own_address(emu, pod, peers=None, time: float | None = None) -> None:
    """The address a pod's own stack uses as source is its pod IP, its eth0
    carries that address, and every other pod (or `peers`) sees that address on
    arrival."""
    what = "pod sees its own address"
    p = _pod(emu, pod)
    if p.host_network:
        return
    eth0 = emu.namespace(_pod_spec(p)).devices["eth0"]
    if not eth0.has_address(p.ip):
        _fail(what, f"{p.key}: eth0 has {[str(a) for a in eth0.addresses]}, not the pod IP {p.ip}")
    others = [_pod(emu, x) for x in peers] if peers is not None else \
        [q for q in emu.cluster.pods if q is not p and not q.host_network]
    for q in others:
        proto, dport = _probe(q)
        out = emu.trace(_pod_spec(p), _pod_spec(q), proto, None, dport, time)
        req = request_frames(out)
        if req and req[0].pkt.ip.src != p.ip:
            _fail(what, f"{req[0].where}: {p.key}'s stack used source {req[0].pkt.ip.src}, "
                        f"not its address {p.ip}")
        if out.disposition == "delivered" and out.packet.ip.src != p.ip:
            _fail(what, f"{q.key} saw {p.key} as {out.packet.ip.src}, expected {p.ip} "
                        f"(flow {_flow_text(out)})")


# --- services -----------------------------------------------------------------------

def from_pods(emu, ip: IPv4Address, node: str | None = None) -> bool:
    """Whether kube-proxy's local-traffic detector on `node` counts a source as
    pod traffic: with the ClusterCIDR detector (kubenet, or a configured
    clusterCIDR) an address in that range; with the InterfaceNamePrefix detector
    (Azure CNI, as AKS runs it) a pod of that node, entering through its veth."""
    cfg = emu.cluster.config
    detector = getattr(cfg, "local_detector", None)
    mode, arg = detector if detector is not None else (
        ("ClusterCIDR", str(cfg.kube_proxy.cluster_cidr or cfg.pod_cidr)))
    if mode == "ClusterCIDR":
        return ip in IPv4Network(arg)
    if mode == "InterfaceNamePrefix":
        return any(p.ip == ip and not p.host_network and node in (None, p.node) for p in emu.cluster.pods)
    return False


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


def _service_request(emu, outcome, svc: Service, sp, what: str) -> Sent | None:
    sent = original_request(emu, outcome)
    if sent is None:
        if outcome.disposition == "delivered":
            _fail(what, f"delivered to {outcome.delivered_to} but no frame of the request was captured")
        return None
    t = sent.tuple
    if t.proto not in (wire.PROTO_TCP, wire.PROTO_UDP):
        _fail(what, f"{sent.summary()} is not a TCP/UDP service connection")
    if (t.dst, t.dport) not in _service_addresses(emu, svc, sp):
        _fail(what, f"{sent.summary()} is not addressed to service {svc.key} port {sp.name or sp.port}")
    return sent


def service_reply_from_service_address(emu, outcome, svc, port) -> None:
    """A service connection that was delivered is answered, and the answer the
    client gets comes from the address and port the client connected to (the
    ClusterIP, node IP:nodePort, load balancer or external IP), to the client's
    own address and port. ICMP errors quote the packet as the client sent it."""
    what = "service reply from the service address"
    svc = _service(emu, svc)
    sp = service_port(svc, port)
    sent = _service_request(emu, outcome, svc, sp, what)
    if sent is None or outcome.disposition != "delivered":
        return
    t, rep = sent.tuple, outcome.reply
    if rep is None and t.proto == wire.PROTO_UDP:
        return                                  # a UDP server need not answer (DNS drops junk)
    if rep is None or rep.disposition != "delivered" or rep.delivered_to != sent.client:
        got = "no reply" if rep is None else f"reply {rep.disposition} at {rep.delivered_to} ({rep.reason})"
        _fail(what, f"{sent.summary()} delivered to {outcome.delivered_to}: {got}, "
                    f"expected one at {sent.client}")
    r = rep.packet
    if isinstance(r.l4, wire.ICMP) and r.l4.type in wire.ICMP_ERROR_TYPES:
        q = quoted_packet(r.l4)
        if q is None or q.tuple != t:
            _fail(what, f"ICMP error at {sent.client} quotes {q.tuple if q else None}, "
                        f"expected the packet as sent ({t})")
        return
    got = (r.ip.src, r.ports[0])
    if got != (t.dst, t.dport):
        _fail(what, f"reply at {sent.client} comes from {got[0]}:{got[1]}, expected the service "
                    f"address {t.dst}:{t.dport} ({sent.summary()})")
    if (r.ip.dst, r.ports[1]) != (t.src, t.sport):
        _fail(what, f"reply at {sent.client} goes to {r.ip.dst}:{r.ports[1]}, expected the client "
                    f"{t.src}:{t.sport}")


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


def delivered_to_ready_endpoint(emu, outcome, svc, port) -> None:
    """A delivered service connection was translated to an endpoint of that
    service port that kube-proxy may choose (`acceptable_endpoints`: ready,
    traffic policies honoured) and reached that endpoint's pod on the endpoint's
    port. A connection with no acceptable endpoint is not delivered."""
    what = "delivered to a ready endpoint"
    svc = _service(emu, svc)
    sp = service_port(svc, port)
    sent = _service_request(emu, outcome, svc, sp, what)
    if sent is None or outcome.disposition != "delivered":
        return
    node, where = _dnat_node(outcome, sent)
    ok = acceptable_endpoints(emu, svc, sp, sent.tuple.src, sent.tuple.dst, node)
    names = ", ".join(f"{e.ip}:{e.port} ({e.pod})" for e in ok) or "none"
    if where is None:
        _fail(what, f"{sent.summary()} was delivered to {outcome.delivered_to} without being "
                    f"translated to an endpoint of {svc.key} (acceptable: {names})")
    got = (outcome.packet.ip.dst, outcome.packet.ports[1])
    match = [e for e in ok if (e.ip, e.port) == got]
    if not match:
        _fail(what, f"{sent.summary()} was translated by node {node} ({where.where}) and delivered "
                    f"to {outcome.delivered_to} as {got[0]}:{got[1]}, not an acceptable endpoint "
                    f"of {svc.key} port {sp.name or sp.port} (acceptable: {names})")
    if match[0].pod and outcome.delivered_to not in (f"pod/{match[0].pod}", f"node/{match[0].node}"):
        _fail(what, f"{sent.summary()}: endpoint {got[0]}:{got[1]} is pod {match[0].pod}, "
                    f"but it was delivered to {outcome.delivered_to}")


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


def masquerade_where_kube_proxy_says(emu, flow: Flow, outcome) -> None:
    """The source a delivered packet arrives with is where kube-proxy (and the
    node's egress masquerade) puts it: pod -> ClusterIP keeps the pod address
    unless it hairpins back to the client or masqueradeAll is set; other
    clients of a ClusterIP (nodes), and any client of a node port, load balancer
    or external IP with externalTrafficPolicy Cluster arrive from an address of
    the node that translated them; with externalTrafficPolicy Local, clients
    keep their address (except the node itself, and hairpins); pod -> outside
    is SNATed to its node's IP; everything else keeps its source."""
    what = "masquerade where kube-proxy says"
    if outcome.disposition != "delivered" or outcome.packet is None or outcome.packet.ip is None:
        return
    sent = original_request(emu, outcome)
    if sent is None:
        return
    t = sent.tuple
    kind, svc = _classify(emu, t.dst, t.proto, t.dport)
    node, _where = _dnat_node(outcome, sent)
    client_ns = sent.first.dev.namespace
    node = node or client_ns.node
    got = outcome.packet.ip.src
    label = f"{flow} ({kind}{' ' + svc.key if svc else ''})"
    if kind == "outside" and client_ns.kind == "pod":
        want = emu.cluster.node(client_ns.node).ip
        if got != want:
            _fail(what, f"{label}: pod egress arrived at {outcome.delivered_to} from {got}, "
                        f"expected SNAT to its node's IP {want}")
        return
    hairpin = outcome.packet.ip.dst == t.src
    if _expect_masquerade(emu, sent, kind, svc, node, hairpin):
        addrs = _node_addresses(emu, node)
        if got not in addrs:
            _fail(what, f"{label}: arrived at {outcome.delivered_to} from {got}, expected "
                        f"masquerade to an address of node {node} {sorted(map(str, addrs))}")
    elif got != t.src:
        _fail(what, f"{label}: arrived at {outcome.delivered_to} from {got}, expected the "
                    f"client address {t.src} kept")


# --- conntrack ----------------------------------------------------------------------

def _node_tables(emu):
    for ns in emu.topology.namespaces.values():
        nf = ns.netfilter
        if nf is not None and getattr(nf, "conntrack", None) is not None:
            yield ns.name, nf.conntrack


def _check_entry(where: str, e) -> None:
    """Reply tuple = inverse of the original after NAT: the side no NAT touched
    is the original's, mirrored (ports aside for ICMP, whose id NAT may change)."""
    what = "conntrack symmetric"
    o, r, inv = e.orig, e.reply, e.orig.invert()
    if inv is None:
        return
    if not e.status & (SRC_NAT | DST_NAT) and r != inv:
        _fail(what, f"{where} entry #{e.id} without NAT: reply tuple {r}, expected the inverse "
                    f"of the original {inv}")
    icmp = o.proto == PROTO_ICMP
    if r.proto != o.proto:
        _fail(what, f"{where} entry #{e.id}: reply protocol {r.proto}, original {o.proto}")
    if not e.status & DST_NAT and (r.src, icmp or r.sport) != (inv.src, icmp or inv.sport):
        _fail(what, f"{where} entry #{e.id} (no DNAT): reply source {r.src}:{r.sport}, expected "
                    f"the original destination {inv.src}:{inv.sport}")
    if not e.status & SRC_NAT and (r.dst, icmp or r.dport) != (inv.dst, icmp or inv.dport):
        _fail(what, f"{where} entry #{e.id} (no SNAT): reply destination {r.dst}:{r.dport}, "
                    f"expected the original source {inv.dst}:{inv.dport}")


def conntrack_symmetric_and_expiring(emu, now: float) -> None:
    """Every namespace's conntrack table: each live entry's reply tuple is the
    inverse of its original tuple after NAT (the untranslated side unchanged,
    no NAT -> exact inverse) and both tuples find the entry in its direction;
    each entry past its timeout at `now` is gone once looked up at `now` (the
    kernel's lazy expiry, what the next packet would do) and is not listed by
    `to_conntrack_l(now)`."""
    for where, table in _node_tables(emu):
        listing = table.to_conntrack_l(now).splitlines()
        for e in list(table):
            if e.timeout_at > now:
                _check_entry(where, e)
                for t, direction in ((e.orig, "original"), (e.reply, "reply")):
                    hit = table.lookup(t, now)
                    if hit is None or hit[0] is not e or hit[1] != direction:
                        _fail("conntrack symmetric", f"{where} entry #{e.id}: lookup of its {direction} "
                                                     f"tuple {t} at {now} found {hit}")
                continue
            fields = f" {e.orig.conntrack_fields()} "
            if any(fields in line + " " for line in listing):
                _fail("conntrack expiring", f"{where} entry #{e.id} ({e.orig}) timed out at "
                                            f"{e.timeout_at} but `conntrack -L` at {now} lists it")
            if table.lookup(e.orig, now) is not None or any(x is e for x in table):
                _fail("conntrack expiring", f"{where} entry #{e.id} ({e.orig}) timed out at "
                                            f"{e.timeout_at} and is still there at {now}")


# --- every frame --------------------------------------------------------------------

def _check_terminal(outcome, leg: str) -> None:
    what = "no frame lost"
    if outcome.disposition not in TERMINAL:
        _fail(what, f"{leg} ended with disposition {outcome.disposition!r}, not one of {TERMINAL}")
    if outcome.disposition == "delivered":
        if not outcome.delivered_to or outcome.packet is None:
            _fail(what, f"{leg} delivered but delivered_to={outcome.delivered_to!r}, "
                        f"packet={outcome.packet!r}")
    elif not outcome.reason or outcome.reason == errors.LOST:
        _fail(what, f"{leg} {outcome.disposition} without a named reason ({outcome.reason!r})")


def _unicast_flood(outcome) -> bool:
    """Whether a bridge flooded a unicast frame (its destination MAC not in the
    FDB): each copy then goes through br_netfilter and on by itself, so what the
    copies cause (a REJECT's answer, say) comes once per copy, as from the kernel."""
    return any(h.component == "bridge" and h.action == "flood" and "not in FDB" in h.detail
               for h in outcome.hops)


def no_frame_lost_or_duplicated(outcome) -> None:
    """The request (and the reply, if any) ended delivered, dropped or rejected,
    with a named reason when not delivered; every frame a veth or the underlay
    transmitted was received by its peer (or its drop is named); no device saw
    the same frame twice in the same direction (a bridge floods one copy per
    port, hairpin sends back out the ingress port in the other direction, and a
    retransmission is a new frame with new bytes) — unless a bridge flooded a
    unicast frame, whose copies each cause their own answers downstream, as in
    the kernel."""
    _check_terminal(outcome, "request")
    if outcome.reply is not None:
        _check_terminal(outcome.reply, "reply")
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
            _fail("no frame duplicated", f"frame #{i} {key[0]} {key[1]} {direction} {pkt.summary()} "
                                         f"was already seen as frame #{seen[key]}")
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
            _fail("no frame lost", f"frame #{i} {dev.namespace.name} {dev.name} out {pkt.summary()} "
                                   f"was never received by {[d.label for d in peers]}")


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


def ttl_and_checksums_right(outcome) -> None:
    """At every hop of every packet in outcome.frames: the IP header and L4
    checksums are valid (for packets that started valid: kdp's own and valid
    injected ones; 0x0000 for an all-zero message's 0xffff is the kernel's
    incremental update, accepted), the TTL is unchanged across veths, the
    underlay and bridges, and one lower after each router that forwarded it."""
    for lineage in _lineages(outcome).values():
        origin = lineage[0].pkt
        valid = wire.ip_checksum_ok(origin) and wire.l4_checksum_ok(origin)
        for j, f in enumerate(lineage):
            if valid and not wire.ip_checksum_ok(f.pkt):
                _fail("checksums", f"{f.where} {f.pkt.summary()}: bad IP header checksum "
                                   f"0x{f.pkt.ip.checksum:04x}")
            if valid and not _l4_checksum_ok(f.pkt):
                want = wire.l4_checksum_of(f.pkt.ip, f.pkt.l4)
                _fail("checksums", f"{f.where} {f.pkt.summary()}: bad {f.pkt.proto_name.upper()} "
                                   f"checksum 0x{f.pkt.l4.checksum:04x}, expected 0x{want:04x}")
            prev, how = _predecessor(lineage, j)
            if prev is None or f.dev.kind == "loopback":
                continue
            want = prev.pkt.ip.ttl - (1 if how == "route" else 0)
            if f.pkt.ip.ttl != want:
                _fail("TTL", f"{f.where} {f.pkt.summary()}: TTL {f.pkt.ip.ttl} after {how} hop from "
                             f"{prev.where} (TTL {prev.pkt.ip.ttl}), expected {want}")


# --- determinism --------------------------------------------------------------------

def _capture_records(emu) -> dict:
    return {k: [(t, d, wire.emit(p)) for t, p, d in v] for k, v in emu.captures.items()}


def _first_difference(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"byte {i}: 0x{x:02x} vs 0x{y:02x}"
    return f"lengths {len(a)} vs {len(b)}"


def _compare_results(ra, rb) -> None:
    la = ra if isinstance(ra, (list, tuple)) else [ra]
    lb = rb if isinstance(rb, (list, tuple)) else [rb]
    if len(la) != len(lb):
        _fail("same seed, same output", f"run returned {len(la)} results, then {len(lb)}")
    for i, (x, y) in enumerate(zip(la, lb)):
        if hasattr(x, "as_dict") and hasattr(y, "as_dict") and x.as_dict() != y.as_dict():
            _fail("same seed, same output", f"outcome #{i} differs: {x.as_dict()} vs {y.as_dict()}")


def same_seed_same_output(make_emulator, run) -> None:
    """Builds two emulators with make_emulator() (same cluster, same seed), runs
    run(emu) on each and compares every device's capture byte for byte (times,
    directions, frames) and the outcomes run returned."""
    runs = []
    for _ in range(2):
        emu = make_emulator()
        result = run(emu)
        runs.append((_capture_records(emu), result))
    (ca, ra), (cb, rb) = runs
    if sorted(ca) != sorted(cb):
        _fail("same seed, same output", f"devices with captures differ: "
                                        f"{sorted(set(ca) ^ set(cb))}")
    for key in sorted(ca):
        a, b = ca[key], cb[key]
        if len(a) != len(b):
            _fail("same seed, same output", f"{key[0]} {key[1]}: {len(a)} frames, then {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                _fail("same seed, same output",
                      f"{key[0]} {key[1]} frame #{i}: time {x[0]} vs {y[0]}, {x[1]} vs {y[1]}, "
                      f"{_first_difference(x[2], y[2])}")
    _compare_results(ra, rb)
