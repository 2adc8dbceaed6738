# oracle.scenarios: what the oracle injects. A Scenario is a list of Steps,
# each one frame transmitted as it is on one device (kdp: Datapath.inject, as
# Emulator.send does; kernel: AF_PACKET on the same device). Frames come from
# kdp itself: the first IP frame kdp's own stack puts on the source's device
# for `emu.trace(src, dst, ...)` in a throwaway emulator (right MACs, TTL, IDs,
# options), then both sides start from empty neighbour/FDB state. Pods and
# ports are picked from the cluster, so every cluster gets the same catalogue;
# a scenario that does not apply (no second node, no UDP listener) is skipped.
# Service/NAT scenarios (needs_rules=True) run only with rules=True.
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Callable

from .. import wire


@dataclass
class Step:
    ns: str                      # kdp namespace name
    dev: str                     # device the frame is transmitted on
    frame: bytes | None
    label: str = ""
    # built per side from the frames that side's device received so far (for
    # segments that must acknowledge the peer's random ISN); frame is then None
    make: Callable[[list], bytes] | None = None


class StepError(Exception):
    """A dynamic step cannot be built from what came back (e.g. no SYN-ACK)."""


@dataclass
class Scenario:
    name: str
    description: str
    steps: list[Step]
    quiet: float = 0.2           # kernel side: settled when nothing moved for this long
    max_wait: float = 3.0
    needs_rules: bool = False
    # kdp namespace of a raw sender that must not answer with RSTs (a TCP session
    # driven step by step): kdp registers a client socket, the kernel drops the
    # namespace's outgoing RSTs in OUTPUT (before any capture point)
    silent_client: str | None = None


@dataclass
class Picks:
    client: object
    same_tcp: tuple | None = None        # (pod, port) on the client's node
    same_udp: tuple | None = None
    same_any: object = None
    remote_tcp: tuple | None = None      # (pod, port) on another node
    remote_udp: tuple | None = None
    remote_any: object = None
    other_node: object = None
    notes: list[str] = field(default_factory=list)


def _ports(pod, proto):
    return [p.port for c in pod.containers for p in c.ports if p.protocol == proto]


def pick(cluster) -> Picks | None:
    pods = [p for p in cluster.pods if not p.host_network]
    if not pods:
        return None
    client = next((p for p in pods if p.name == "client"), pods[0])
    pk = Picks(client)
    for p in pods:
        if p is client:
            continue
        same = p.node == client.node
        tcp, udp = _ports(p, "TCP"), _ports(p, "UDP")
        if same:
            pk.same_any = pk.same_any or p
            if tcp and pk.same_tcp is None:
                pk.same_tcp = (p, tcp[0])
            if udp and pk.same_udp is None:
                pk.same_udp = (p, udp[0])
        else:
            pk.remote_any = pk.remote_any or p
            if tcp and pk.remote_tcp is None:
                pk.remote_tcp = (p, tcp[0])
            if udp and pk.remote_udp is None:
                pk.remote_udp = (p, udp[0])
    pk.other_node = next((n for n in cluster.nodes if n.name != client.node), None)
    return pk


def closed_port(pod, proto: str) -> int:
    taken = set(_ports(pod, proto))
    return next(p for p in (7, 9, 81, 9999, 40000) if p not in taken)


def spec(pod) -> str:
    return f"pod/{pod.namespace}/{pod.name}"


def first_frame(cluster, seed: int, src: str, dst: str, **kw) -> Step:
    """The first IP frame kdp's stack of `src` transmits for trace(src, dst)."""
    from ..emulator import Emulator
    emu = Emulator(cluster, seed=seed)
    src_ns = emu.resolve(src).ns
    out = emu.trace(src, dst, **kw)
    for dev, direction, pkt in out.frames:
        if direction == "out" and dev.namespace is src_ns and pkt.ip is not None and dev.kind != "loopback":
            return Step(src_ns.name, dev.name, wire.emit(pkt), f"{src} -> {dst} {pkt.summary()}")
    raise LookupError(f"kdp puts no IP frame on a device of {src} for {dst}")


def _unused_ip(cluster, net) -> IPv4Address:
    used = {p.ip for p in cluster.pods} | {n.ip for n in cluster.nodes}
    used.add(cluster.config.gateway_ip)
    hosts = list(net.hosts()) if net.num_addresses <= 4096 else \
        [net.broadcast_address - i for i in range(2, 300)]
    for ip in reversed(hosts):
        if ip not in used and ip != net.network_address + 1:
            return ip
    raise LookupError(f"no unused address in {net}")


def catalogue(cluster, seed: int = 0) -> list[Scenario]:
    """Every scenario that applies to this cluster, in a fixed order."""
    pk = pick(cluster)
    if pk is None:
        return []
    c = spec(pk.client)
    out: list[Scenario] = []

    def add(name, desc, src, dst, **kw):
        try:
            out.append(Scenario(name, desc, [first_frame(cluster, seed, src, dst, **kw)]))
        except LookupError:
            pass

    azure = cluster.config.network_plugin == "azure"
    for where, tcp, udp, any_pod in (("same-node", pk.same_tcp, pk.same_udp, pk.same_any),
                                     ("cross-node", pk.remote_tcp, pk.remote_udp, pk.remote_any)):
        if tcp:
            add(f"{where}-tcp-syn", f"TCP SYN {c} -> {spec(tcp[0])}:{tcp[1]} (SYN-ACK, sender RST)",
                c, spec(tcp[0]), proto="tcp", dport=tcp[1])
        target = tcp[0] if tcp else any_pod
        if target is not None:
            port = closed_port(target, "TCP")
            add(f"{where}-tcp-closed", f"TCP SYN {c} -> {spec(target)}:{port} closed (RST)",
                c, spec(target), proto="tcp", dport=port)
            uport = closed_port(target, "UDP")
            add(f"{where}-udp-closed", f"UDP {c} -> {spec(target)}:{uport} closed (ICMP port unreachable)",
                c, spec(target), proto="udp", dport=uport)
            add(f"{where}-icmp-echo", f"ICMP echo {c} -> {spec(target)}", c, spec(target), proto="icmp")
        if udp:
            add(f"{where}-udp-open", f"UDP {c} -> {spec(udp[0])}:{udp[1]} echo (sender has no socket: "
                f"ICMP port unreachable back)", c, spec(udp[0]), proto="udp", dport=udp[1])
    own = f"node/{pk.client.node}"
    if pk.same_tcp:
        add("node-to-local-pod-tcp", f"TCP SYN {own} -> {spec(pk.same_tcp[0])}:{pk.same_tcp[1]}",
            own, spec(pk.same_tcp[0]), proto="tcp", dport=pk.same_tcp[1])
    if pk.remote_tcp:
        add("node-to-remote-pod-tcp", f"TCP SYN {own} -> {spec(pk.remote_tcp[0])}:{pk.remote_tcp[1]}",
            own, spec(pk.remote_tcp[0]), proto="tcp", dport=pk.remote_tcp[1])
    if pk.other_node is not None:
        other = f"node/{pk.other_node.name}"
        add("node-to-pod-icmp", f"ICMP echo {other} -> {c}", other, c, proto="icmp")
        add("pod-to-node-kubelet", f"TCP SYN {c} -> {other}:10250", c, other, proto="tcp", dport=10250)
    add("pod-to-own-node-kubelet", f"TCP SYN {c} -> {own}:10250", c, own, proto="tcp", dport=10250)
    remote = pk.remote_tcp[0] if pk.remote_tcp else pk.remote_any
    if remote is not None:
        add("ttl-expiry", f"TCP SYN TTL 1 {c} -> {spec(remote)} (time exceeded from the first router)",
            c, spec(remote), proto="tcp", dport=80, ttl=1)
        add("ttl-expiry-second-hop", f"TCP SYN TTL 2 {c} -> {spec(remote)} (time exceeded from the "
            f"second router)", c, spec(remote), proto="tcp", dport=80, ttl=2)
    if pk.other_node is not None:
        net = cluster.config.vnet_subnet if azure else pk.other_node.pod_cidr
        if net is not None:
            missing = _unused_ip(cluster, net)
            add("missing-ip", f"TCP SYN {c} -> {missing} (unused address in {net}: ARP fails, "
                f"ICMP host unreachable)", c, str(missing), proto="tcp", dport=80)
    if pk.same_tcp:
        add("same-node-ttl-1", f"TCP SYN TTL 1 {c} -> {spec(pk.same_tcp[0])} (bridged: no TTL check)",
            c, spec(pk.same_tcp[0]), proto="tcp", dport=pk.same_tcp[1], ttl=1)
    if pk.remote_tcp:
        r, port = pk.remote_tcp
        for name, what, corrupt in (("bad-ip-checksum", "IP header checksum", _bad_ip_csum),
                                    ("bad-tcp-checksum", "TCP checksum", _bad_l4_csum)):
            try:
                st = first_frame(cluster, seed, c, spec(r), proto="tcp", dport=port)
            except LookupError:
                continue
            st.frame = corrupt(st.frame)
            out.append(Scenario(name, f"TCP SYN {c} -> {spec(r)}:{port} with a wrong {what}", [st]))
    if cluster.config.docker_bridge is not None:
        d0 = cluster.config.docker_bridge
        add("pod-to-docker0", f"TCP SYN {c} -> {d0.ip}:22 (the node's docker0 address, link down)",
            c, str(d0.ip), proto="tcp", dport=22)
        add("pod-to-docker0-subnet", f"TCP SYN {c} -> {d0.network.network_address + 5}:80 (docker0's "
            f"subnet: its route is linkdown)", c, str(d0.network.network_address + 5), proto="tcp", dport=80)
    if pk.remote_tcp:
        sc = tcp_session(cluster, seed, c, spec(pk.remote_tcp[0]), pk.remote_tcp[1], "cross-node-tcp-session")
        if sc is not None:
            out.append(sc)
    _service_scenarios(cluster, seed, pk, out)
    add("pod-to-ext-tcp", f"TCP SYN {c} -> ext/93.184.216.34:443 (masqueraded by the node with rules)",
        c, "ext/93.184.216.34", proto="tcp", dport=443)
    add("pod-to-ext-udp", f"UDP {c} -> ext/1.1.1.1:53", c, "ext/1.1.1.1", proto="udp", dport=53)
    return out


def _service_scenarios(cluster, seed, pk, out: list) -> None:
    """Services need kube-proxy's rules on both sides (rules=True). With more
    than one endpoint the kernel's `statistic` choice is random: the oracle
    records the kernel's conntrack entries so kdp's choice can be forced."""
    c = spec(pk.client)
    tcp = [(s, p) for s in cluster.services for p in s.ports
           if s.cluster_ip is not None and p.protocol == "TCP" and s.endpoints]
    if tcp:
        svc, port = tcp[0]
        try:
            st = first_frame(cluster, seed, c, f"svc/{svc.namespace}/{svc.name}", proto="tcp", dport=port.port)
            out.append(Scenario("pod-to-clusterip-tcp", f"TCP SYN {c} -> svc/{svc.namespace}/{svc.name} "
                                f"{svc.cluster_ip}:{port.port} (DNAT to an endpoint)", [st], needs_rules=True))
        except LookupError:
            pass
    nodeport = [(s, p) for s in cluster.services for p in s.ports if p.node_port and p.protocol == "TCP"]
    if nodeport and pk.other_node is not None:
        svc, port = nodeport[0]
        try:
            st = first_frame(cluster, seed, c, f"node/{pk.other_node.name}", proto="tcp", dport=port.node_port)
            out.append(Scenario("pod-to-nodeport-tcp", f"TCP SYN {c} -> node/{pk.other_node.name}:"
                                f"{port.node_port} (svc/{svc.namespace}/{svc.name} NodePort)", [st],
                                needs_rules=True))
        except LookupError:
            pass


def tcp_session(cluster, seed, src, dst, dport, name, payload=b"hello oracle\n") -> Scenario | None:
    """SYN; ACK with data (echoed); FIN; ACK of the server's FIN — each client
    segment acknowledging what that side's server really sent."""
    try:
        syn = first_frame(cluster, seed, src, dst, proto="tcp", dport=dport)
    except LookupError:
        return None
    p = wire.parse(syn.frame)
    n = len(payload)
    steps = [syn,
             Step(syn.ns, syn.dev, None, f"ACK + {n} bytes", _segment(p, 1, payload, wire.PSH | wire.ACK, 0)),
             Step(syn.ns, syn.dev, None, "FIN", _segment(p, 2, b"", wire.FIN | wire.ACK, n)),
             Step(syn.ns, syn.dev, None, "ACK of the server's FIN", _segment(p, 3, b"", wire.ACK, n + 1))]
    return Scenario(name, f"TCP session {src} -> {dst}:{dport}: handshake, {n} bytes echoed, close "
                    f"(client RSTs suppressed)", steps, silent_client=syn.ns)


def _segment(syn, k: int, payload: bytes, flags: int, sent: int):
    from ..net.sockets import parse_tcp_options

    def make(inbound: list) -> bytes:
        segs = [q for q in inbound if q is not None and q.ip is not None and isinstance(q.l4, wire.TCP)
                and q.ip.src == syn.ip.dst and q.l4.sport == syn.l4.dport and q.l4.dport == syn.l4.sport]
        synack = next((q for q in segs if q.l4.flags & wire.SYN and q.l4.flags & wire.ACK), None)
        if synack is None:
            raise StepError("no SYN-ACK came back")
        rcv = (synack.l4.seq + 1) & 0xFFFFFFFF
        for q in segs:
            if q.l4.flags & wire.SYN:
                continue
            end = (q.l4.seq + len(q.l4.payload) + (1 if q.l4.flags & wire.FIN else 0)) & 0xFFFFFFFF
            if 0 < ((end - rcv) & 0xFFFFFFFF) < 1 << 30:
                rcv = end
        ts_syn = parse_tcp_options(syn.l4.options).get("ts", (0, 0))[0]
        ts_peer = next((parse_tcp_options(q.l4.options)["ts"][0] for q in reversed(segs)
                        if "ts" in parse_tcp_options(q.l4.options)), 0)
        opts = b"\x01\x01\x08\x0a" + struct.pack("!II", (ts_syn + k) & 0xFFFFFFFF, ts_peer)
        seg = wire.TCP(syn.l4.sport, syn.l4.dport, (syn.l4.seq + 1 + sent) & 0xFFFFFFFF, rcv, flags, 502,
                       0, 0, opts, payload)
        ip = replace(syn.ip, ident=(syn.ip.ident + k) & 0xFFFF)
        return wire.emit(wire.finalize(wire.Packet(syn.eth, ip=ip, l4=seg)))
    return make


def _bad_ip_csum(frame: bytes) -> bytes:
    b = bytearray(frame)
    b[24] ^= 0x5A                       # IP header checksum, high byte
    return bytes(b)


def _bad_l4_csum(frame: bytes) -> bytes:
    b = bytearray(frame)
    ihl = (b[14] & 0xF) * 4
    off = 14 + ihl + (16 if b[23] == wire.PROTO_TCP else 6 if b[23] == wire.PROTO_UDP else 2)
    b[off] ^= 0x5A
    return bytes(b)


def select(scenarios: list[Scenario], names: list[str] | None) -> list[Scenario]:
    if not names:
        return scenarios
    known = {s.name: s for s in scenarios}
    missing = [n for n in names if n not in known]
    if missing:
        from ..errors import UsageError
        raise UsageError(f"unknown scenario(s) {', '.join(missing)}; known: {', '.join(known)}")
    return [known[n] for n in names]
