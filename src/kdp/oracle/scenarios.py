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

import re
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
    # driven step by step): kdp registers a client socket for every SYN step, the
    # kernel drops the namespace's outgoing RSTs in OUTPUT (before any capture point)
    silent_client: str | None = None
    # which of the kernel's random choices (conntrack: endpoint, SNAT port) kdp is
    # forced to: "all"; "first" (only the first step's connection: session affinity,
    # where later flows must follow kdp's own `recent` match); "none"
    force: str = "all"
    # kernel-only plumbing kdp models elsewhere: (kdp namespace, `ip route` spec)
    # added before the steps and deleted after (the cloud LB: a route on the edge
    # for the LB IP via the node kdp's load balancer chose)
    kernel_routes: list = field(default_factory=list)
    # sysctls written in the real twin for this scenario only ({kdp ns: {key: value}}),
    # restored afterwards; a key the kernel refuses makes the scenario unsupported
    kernel_sysctls: dict = field(default_factory=dict)
    # what kdp's own trace of the first step did (disposition, reason, delivered to),
    # for tests and the report
    kdp_outcome: str = ""
    # `kdp run --apps off`: every pod's stack consumes what reaches it and answers
    # nothing (a capture holds both sides). kdp: the pods' SocketTables are silent;
    # the kernel: `iptables -A INPUT -j DROP` in each pod's namespace (after the
    # device tap, the pod's conntrack-free PREROUTING and routing; before any socket)
    apps_off: bool = False


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
    return trace_first(cluster, seed, src, dst, **kw)[0]


def trace_first(cluster, seed: int, src: str, dst: str, **kw):
    """(first_frame's Step, kdp's Outcome of that trace in a throwaway emulator)."""
    from ..emulator import Emulator
    emu = Emulator(cluster, seed=seed)
    src_ns = emu.resolve(src).ns
    out = emu.trace(src, dst, **kw)
    for dev, direction, pkt in out.frames:
        if direction == "out" and dev.namespace is src_ns and pkt.ip is not None and dev.kind != "loopback":
            return Step(src_ns.name, dev.name, wire.emit(pkt), f"{src} -> {dst} {pkt.summary()}"), out
    raise LookupError(f"kdp puts no IP frame on a device of {src} for {dst}")


def flows(cluster, seed: int, src: str, dst: str, sports, **kw) -> list[Step]:
    """One first frame per source port: kdp's first frame for the first port,
    the others the same frame with another source port (and the IP ID and TCP
    ISN advanced, so no two flows look alike), checksums recomputed. One kdp
    trace instead of one per flow."""
    sports = list(sports)
    if not sports:
        return []
    base = first_frame(cluster, seed, src, dst, sport=sports[0], **kw)
    p = wire.parse(base.frame)
    out = [base]
    for i, sp in enumerate(sports[1:], 1):
        ip = replace(p.ip, ident=(p.ip.ident + i) & 0xFFFF)
        l4 = replace(p.l4, sport=sp)
        if isinstance(l4, wire.TCP):
            l4 = replace(l4, seq=(l4.seq + i * 0x01000193) & 0xFFFFFFFF)
        q = wire.finalize(wire.Packet(p.eth, ip=ip, l4=l4))
        out.append(Step(base.ns, base.dev, wire.emit(q), f"{src} -> {dst} {q.summary()}"))
    return out


def outcome_text(out) -> str:
    """kdp's verdict of a trace in one line: `delivered to X`, `dropped (reason)`."""
    text = out.disposition
    if out.delivered_to:
        text += f" to {out.delivered_to}"
    if out.reason:
        text += f" ({out.reason})"
    return text


def _unused_ip(cluster, net) -> IPv4Address:
    used = {p.ip for p in cluster.pods} | {n.ip for n in cluster.nodes}
    used.add(cluster.config.gateway_ip)
    hosts = list(net.hosts()) if net.num_addresses <= 4096 else \
        [net.broadcast_address - i for i in range(2, 300)]
    for ip in reversed(hosts):
        if ip not in used and ip != net.network_address + 1:
            return ip
    raise LookupError(f"no unused address in {net}")


def catalogue(cluster, seed: int = 0, full: bool = False) -> list[Scenario]:
    """Every scenario that applies to this cluster, in a fixed order. full:
    also the service scenarios (several endpoints, sessions through a
    ClusterIP, hairpin, node ports and load balancers from outside, REJECT,
    affinity, conntrack table full); `kdp oracle` runs them, the core set
    (tests/oracle/test_agreement.py) does not."""
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
    _service_scenarios(cluster, seed, pk, out, full)
    add("pod-to-ext-tcp", f"TCP SYN {c} -> ext/93.184.216.34:443 (masqueraded by the node with rules)",
        c, "ext/93.184.216.34", proto="tcp", dport=443)
    add("pod-to-ext-udp", f"UDP {c} -> ext/1.1.1.1:53", c, "ext/1.1.1.1", proto="udp", dport=53)
    out += sctp_scenarios(cluster, seed, pk)
    return out


def sctp_scenarios(cluster, seed: int, pk) -> list[Scenario]:
    """SCTP Services (kube-proxy's `-m sctp` rules, SCTP conntrack, NAT with the
    CRC32c recomputed): an INIT to a ClusterIP with endpoints (DNAT, then the
    endpoint's answer: an ABORT, or ICMP protocol unreachable where the kernel has
    no sctp module, RELATED and un-NATed with the quoted SCTP header's CRC32c
    recomputed), one to a NodePort from outside (masqueraded), one to a Service
    without endpoints (REJECT). Only for clusters with SCTP Service ports."""
    out: list[Scenario] = []
    c = spec(pk.client)

    def add(name, desc, src, dst, **kw):
        try:
            st, o = trace_first(cluster, seed, src, dst, proto="sctp", **kw)
        except LookupError:
            return
        out.append(Scenario(name, desc, [st], needs_rules=True, kdp_outcome=outcome_text(o)))

    for svc in cluster.services:
        if svc.cluster_ip is None:
            continue
        for port in (p for p in svc.ports if p.protocol == "SCTP"):
            ready = _ready(svc, port)
            kind = "with-endpoints" if ready else "no-endpoints"
            if any(sc.name == f"sctp-clusterip-{kind}" for sc in out):
                continue
            add(f"sctp-clusterip-{kind}", f"SCTP INIT {c} -> {_svc_spec(svc)}:{port.port} "
                f"({'DNAT to an endpoint' if ready else 'REJECT: no endpoints'})",
                c, str(svc.cluster_ip), dport=port.port)
            if ready and port.node_port and not any(sc.name == "sctp-nodeport" for sc in out):
                node = cluster.nodes[0]
                add("sctp-nodeport", f"SCTP INIT ext/{EXT_CLIENT} -> {node.name}:{port.node_port} "
                    f"(NodePort, masqueraded --random-fully)", f"ext/{EXT_CLIENT}", str(node.ip),
                    dport=port.node_port)
    return out


EXT_CLIENT = "198.18.0.9"         # an outside client (RFC 2544 benchmark range): ext/ADDR
MULTI_FLOWS = 24                  # flows to a multi-endpoint ClusterIP: P(no flow picks a given one of
                                  # 3 endpoints) = (2/3)^24 < 1e-4
AFFINITY_FLOWS = 6
UDP_FLOWS = 16                    # to a 2-endpoint service, one local: P(one kind never drawn) = 2^-15
LB_HOP = re.compile(r"cloud load balancer: .* -> node (\S+) \(")


def _svc_spec(svc) -> str:
    return f"svc/{svc.namespace}/{svc.name}"


def _ready(svc, port) -> list:
    return [e for e in svc.endpoints_for(port) if e.ready]


def _eps_pods(eps) -> set:
    return {e.pod for e in eps if e.pod}


def _tcp_ports(cluster, **want):
    """(service, port, ready endpoints) of TCP service ports with a ClusterIP,
    filtered by the keyword predicates on the service."""
    out = []
    for s in cluster.services:
        if s.cluster_ip is None or s.type == "ExternalName":
            continue
        if any(getattr(s, k) != v for k, v in want.items()):
            continue
        for p in s.ports:
            if p.protocol == "TCP":
                out.append((s, p, _ready(s, p)))
    return out


def _node_ip(cluster, name):
    return next(n.ip for n in cluster.nodes if n.name == name)


def _lb_node(out) -> str | None:
    for h in out.hops:
        m = LB_HOP.search(h.detail)
        if m:
            return m.group(1)
    return None


def _outside(cluster, ranges=(), inside: bool = True) -> str:
    """An outside client address: inside the first of `ranges`, or (inside=False)
    outside all of them."""
    if inside and ranges:
        return str(ranges[0].network_address + min(5, ranges[0].num_addresses - 1))
    for cand in (EXT_CLIENT, "8.8.8.8", "192.0.2.77", "100.64.9.9"):
        if not any(IPv4Address(cand) in r for r in ranges):
            return cand
    raise LookupError("no outside address outside the source ranges")


def _service_scenarios(cluster, seed, pk, out: list, full: bool = True) -> None:
    """Services need kube-proxy's rules on both sides (rules=True). With more
    than one endpoint the kernel's `statistic` choice is random, and so is the
    port MASQUERADE --random-fully picks: the oracle records the kernel's
    conntrack entries and forces kdp's choices to them (oracle.force)."""
    c = spec(pk.client)
    cnode = pk.client.node
    client_key = f"{pk.client.namespace}/{pk.client.name}"
    pods = {f"{p.namespace}/{p.name}": p for p in cluster.pods if not p.host_network}

    def add(name, desc, src, dst, scenario_kw=None, **kw):
        try:
            st, o = trace_first(cluster, seed, src, dst, **kw)
        except LookupError:
            return None
        sc = Scenario(name, desc, [st], needs_rules=True, kdp_outcome=outcome_text(o),
                      **(scenario_kw or {}))
        out.append(sc)
        return sc, o

    tcp = _tcp_ports(cluster)
    # endpoints only on other nodes (and reachable under the internal policy): whichever
    # endpoint the kernel draws, the path has the same shape (DNAT, routed to another node)
    remote = [(s, p, e) for s, p, e in tcp if e and all(x.node != cnode for x in e)
              and s.internal_traffic_policy == "Cluster" and s.session_affinity != "ClientIP"]
    remote.sort(key=lambda x: -len(x[2]))
    plain = remote or [(s, p, e) for s, p, e in tcp if e]
    if plain:
        svc, port, _ = plain[0]
        add("pod-to-clusterip-tcp", f"TCP SYN {c} -> {_svc_spec(svc)} {svc.cluster_ip}:{port.port} "
            f"(DNAT to an endpoint)", c, _svc_spec(svc), proto="tcp", dport=port.port)
    if not full:
        dns = _dns_query_scenario(cluster, seed, c)
        if dns is not None:
            out.append(dns)
        _nodeport_from_pod(cluster, seed, pk, out)
        return
    if remote:
        svc, port, eps = remote[0]
        sc = tcp_session(cluster, seed, c, _svc_spec(svc), port.port, "clusterip-tcp-session")
        if sc is not None:
            sc.needs_rules = True
            sc.description = (f"TCP session {c} -> {_svc_spec(svc)} {svc.cluster_ip}:{port.port} ({len(eps)} "
                              f"endpoint(s), all on other nodes): handshake, data echoed, close; every reply "
                              f"un-DNATed to the service address (client RSTs suppressed)")
            out.append(sc)

    # several endpoints, one on the client's node (bridged DNAT) and remote ones
    multi = [(s, p, e) for s, p, e in tcp if len(e) >= 2 and s.session_affinity != "ClientIP"
             and s.internal_traffic_policy == "Cluster" and client_key not in _eps_pods(e)]
    multi.sort(key=lambda x: (not ({e.node for e in x[2]} >= {cnode} and len({e.node for e in x[2]}) > 1),
                              x[0].type != "ClusterIP" or bool(x[0].external_ips), -len(x[2])))
    if multi:
        svc, port, eps = multi[0]
        try:
            steps = flows(cluster, seed, c, _svc_spec(svc), range(40000, 40000 + MULTI_FLOWS), proto="tcp",
                          dport=port.port)
        except LookupError:
            steps = []
        if steps:
            local = sum(e.node == cnode for e in eps)
            out.append(Scenario("clusterip-several-endpoints",
                                f"{len(steps)} TCP SYNs {c} -> {_svc_spec(svc)} {svc.cluster_ip}:{port.port} "
                                f"({len(eps)} endpoints, {local} on the client's node: bridged DNAT; the "
                                f"rest routed to other nodes)", steps, quiet=0.05, needs_rules=True))
        add("node-to-clusterip", f"TCP SYN node/{cnode} -> {_svc_spec(svc)} {svc.cluster_ip}:{port.port} "
            f"(KUBE-MARK-MASQ: masqueraded --random-fully)", f"node/{cnode}", _svc_spec(svc),
            proto="tcp", dport=port.port)

    # an endpoint on the sender's node and nowhere else: bridged DNAT, deterministic
    for s, p, eps in tcp:
        nodes = {e.node for e in eps}
        if len(nodes) != 1:
            continue
        node = next(iter(nodes))
        sender = next((q for k, q in pods.items() if q.node == node and k not in _eps_pods(eps)), None)
        if sender is not None:
            add("clusterip-same-node-endpoint", f"TCP SYN {spec(sender)} -> {_svc_spec(s)} "
                f"{s.cluster_ip}:{p.port} (its endpoint is on the same node: DNAT in the bridge, "
                f"frame stays bridged, TTL kept)", spec(sender), _svc_spec(s), proto="tcp", dport=p.port)
            break

    # hairpin: a pod reaching itself through its service (it is the only endpoint)
    for s, p, eps in tcp:
        if len(eps) == 1 and eps[0].pod in pods:
            me = pods[eps[0].pod]
            mode = cluster.config.hairpin_mode
            what = {"hairpin-veth": "delivered, masqueraded to the bridge address",
                    "none": "dropped: the bridge port has no hairpin"}.get(mode, mode)
            add("hairpin-via-service", f"TCP SYN {spec(me)} -> {_svc_spec(s)} {s.cluster_ip}:{p.port}, its "
                f"only endpoint is itself (hairpin mode {mode}: {what})", spec(me), _svc_spec(s),
                proto="tcp", dport=p.port)
            break

    # sticky services: the kernel's first choice forced, later flows follow `recent`
    sticky = [(s, p, e) for s, p, e in tcp if s.session_affinity == "ClientIP" and len(e) >= 2
              and client_key not in _eps_pods(e)]
    if sticky:
        svc, port, eps = sticky[0]
        try:
            steps = flows(cluster, seed, c, _svc_spec(svc), range(41000, 41000 + AFFINITY_FLOWS), proto="tcp",
                          dport=port.port)
        except LookupError:
            steps = []
        if steps:
            out.append(Scenario("session-affinity", f"{len(steps)} TCP SYNs {c} -> {_svc_spec(svc)} "
                                f"{svc.cluster_ip}:{port.port} (ClientIP affinity, {len(eps)} endpoints): "
                                f"only the first flow's endpoint is forced, the others must follow the "
                                f"`recent` list on both sides", steps, quiet=0.05, needs_rules=True,
                                force="first"))

    # no endpoints: REJECT (ICMP port unreachable); only remote ones with internalTrafficPolicy Local: DROP
    empty = [(s, p) for s, p, e in tcp if not e and not s.endpoints_for(p)]
    if empty:
        svc, port = empty[0]
        add("clusterip-no-endpoints", f"TCP SYN {c} -> {_svc_spec(svc)} {svc.cluster_ip}:{port.port} "
            f"(no endpoints: REJECT, ICMP port unreachable back)", c, _svc_spec(svc), proto="tcp", dport=port.port)
    itp = [(s, p) for s, p, e in tcp if s.internal_traffic_policy == "Local" and e
           and all(x.node != cnode for x in e)]
    if itp:
        svc, port = itp[0]
        add("clusterip-itp-local-remote-only", f"TCP SYN {c} -> {_svc_spec(svc)} {svc.cluster_ip}:{port.port} "
            f"(internalTrafficPolicy Local, no endpoint on the client's node: DROP)", c, _svc_spec(svc),
            proto="tcp", dport=port.port)

    udp = [(s, p, _ready(s, p)) for s in cluster.services if s.cluster_ip is not None for p in s.ports
           if p.protocol == "UDP" and _ready(s, p) and client_key not in _eps_pods(_ready(s, p))
           and s.internal_traffic_policy == "Cluster" and s.session_affinity != "ClientIP"]
    if udp:
        svc, port, eps = udp[0]
        # with endpoints on the client's node and elsewhere, enough flows that both kinds are drawn
        n = 1 if len({e.node == cnode for e in eps}) == 1 else UDP_FLOWS
        try:
            steps = flows(cluster, seed, c, _svc_spec(svc), range(43000, 43000 + n), proto="udp", dport=port.port)
        except LookupError:
            steps = []
        if steps:
            out.append(Scenario("clusterip-udp", f"{len(steps)} UDP datagram(s) {c} -> {_svc_spec(svc)} "
                                f"{svc.cluster_ip}:{port.port} ({len(eps)} endpoints; DNAT, the answer "
                                f"un-DNATed, the raw sender's ICMP port unreachable translated back)", steps,
                                quiet=0.05, needs_rules=True))
    dns = _dns_query_scenario(cluster, seed, c)
    if dns is not None:
        out.append(dns)
    _nodeport_from_pod(cluster, seed, pk, out)
    nodeport = [(s, p) for s in cluster.services for p in s.ports if p.node_port and p.protocol == "TCP"]
    ext = f"ext/{EXT_CLIENT}"
    np_cluster = [(s, p, _ready(s, p)) for s, p in nodeport if s.external_traffic_policy == "Cluster"
                  and _ready(s, p) and not s.load_balancer_source_ranges]
    np_cluster.sort(key=lambda x: x[0].type != "NodePort")
    if np_cluster:
        svc, port, _ = np_cluster[0]
        ip = _node_ip(cluster, cnode)
        add("nodeport-ext-cluster", f"TCP SYN {ext} -> node/{cnode} {ip}:{port.node_port} ({_svc_spec(svc)} "
            f"externalTrafficPolicy Cluster: DNAT to any endpoint, masqueraded --random-fully)", ext, str(ip),
            proto="tcp", dport=port.node_port)
    np_local = [(s, p, _ready(s, p)) for s, p in nodeport if s.external_traffic_policy == "Local"
                and _ready(s, p) and not s.load_balancer_source_ranges]
    np_local.sort(key=lambda x: x[0].type != "NodePort")
    if np_local:
        svc, port, eps = np_local[0]
        with_ep = [n for n in cluster.nodes if any(e.node == n.name for e in eps)]
        without = [n for n in cluster.nodes if not any(e.node == n.name for e in eps)]
        if with_ep:
            n = with_ep[0]
            add("nodeport-ext-local", f"TCP SYN {ext} -> node/{n.name} {n.ip}:{port.node_port} ({_svc_spec(svc)} "
                f"externalTrafficPolicy Local, endpoint on this node: client address kept)", ext, str(n.ip),
                proto="tcp", dport=port.node_port)
        if without:
            n = without[0]
            add("nodeport-ext-local-no-endpoint", f"TCP SYN {ext} -> node/{n.name} {n.ip}:{port.node_port} "
                f"({_svc_spec(svc)} externalTrafficPolicy Local, no endpoint on this node: DROP)", ext,
                str(n.ip), proto="tcp", dport=port.node_port)

    # load balancer IPs from outside: kdp's edge is a cloud LB forwarding to a node with the
    # destination unchanged; the kernel twin gets a route for the LB IP via the node kdp chose
    lbs = [(s, p, ip) for s in cluster.services if s.type == "LoadBalancer" for ip in s.load_balancer_ips
           for p in s.ports if p.protocol == "TCP" and _ready(s, p)]

    def add_lb(name, desc, src, svc, port, lb_ip):
        got = add(name, desc, src, str(lb_ip), proto="tcp", dport=port.port)
        if got is None:
            return
        sc, o = got
        node = _lb_node(o)
        if node is not None:
            ip = _node_ip(cluster, node)
            sc.kernel_routes.append(("edge", f"{lb_ip}/32 via {ip}"))
            sc.description += f"; kdp's cloud LB chose node/{node}: the real edge routes {lb_ip} via {ip}"

    plain_lb = [x for x in lbs if not x[0].load_balancer_source_ranges]
    if plain_lb:
        svc, port, ip = plain_lb[0]
        add_lb("lb-ext", f"TCP SYN {ext} -> {ip}:{port.port} ({_svc_spec(svc)} LoadBalancer, "
               f"externalTrafficPolicy {svc.external_traffic_policy})", ext, svc, port, ip)
    ingress = [x for x in plain_lb if x[0].namespace == "ingress-nginx" and x[0] is not (plain_lb[0][0])]
    if ingress:                        # the ingress controller's own LoadBalancer: the client leg
        svc, port, ip = ingress[0]
        add_lb("ingress-lb-ext", f"TCP SYN {ext} -> {ip}:{port.port} ({_svc_spec(svc)}: the ingress "
               f"controller's LoadBalancer, externalTrafficPolicy {svc.external_traffic_policy})",
               ext, svc, port, ip)
    ranged = [x for x in lbs if x[0].load_balancer_source_ranges]
    if ranged:
        svc, port, ip = ranged[0]
        rngs = svc.load_balancer_source_ranges
        ok, bad = _outside(cluster, rngs, True), _outside(cluster, rngs, False)
        add_lb("lb-source-range-allowed", f"TCP SYN ext/{ok} -> {ip}:{port.port} ({_svc_spec(svc)} "
               f"loadBalancerSourceRanges {', '.join(map(str, rngs))}: allowed)", f"ext/{ok}", svc, port, ip)
        add_lb("lb-source-range-blocked", f"TCP SYN ext/{bad} -> {ip}:{port.port} ({_svc_spec(svc)} "
               f"loadBalancerSourceRanges {', '.join(map(str, rngs))}: blocked by KUBE-PROXY-FIREWALL)",
               f"ext/{bad}", svc, port, ip)
    extips = [(s, p, ip) for s, p, e in tcp if e for ip in s.external_ips]
    if extips:
        svc, port, ip = extips[0]
        add("externalip-ext", f"TCP SYN {ext} -> {ip}:{port.port} ({_svc_spec(svc)} externalIPs: the edge "
            f"routes it to a node; DNAT, masqueraded)", ext, str(ip), proto="tcp", dport=port.port)

    full = conntrack_full(cluster, seed, pk)
    if full is not None:
        out.append(full)


def _nodeport_from_pod(cluster, seed, pk, out: list) -> None:
    c = spec(pk.client)
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


def conntrack_full(cluster, seed, pk) -> Scenario | None:
    """kube-proxy's conntrackMax small (<= 16): that many assured connections
    fill the client node's table, the next SYN is dropped. The kernel twin
    needs the same net.netfilter.nf_conntrack_max in the node's namespace;
    kernels where it is global (read-only outside the init namespace) make the
    scenario unsupported rather than touch the host."""
    limit = cluster.config.kube_proxy.conntrack_max
    if not 0 < limit <= 16:
        return None
    targets = [(s, p) for s, p, e in _tcp_ports(cluster) if e]
    if not targets:
        return None
    svc, port = targets[0]
    c = spec(pk.client)
    try:
        syns = flows(cluster, seed, c, _svc_spec(svc), range(45000, 45001 + limit), proto="tcp", dport=port.port)
    except LookupError:
        return None
    steps = []
    for i, syn in enumerate(syns):
        steps.append(syn)
        if i < limit:
            steps.append(Step(syn.ns, syn.dev, None, f"flow {i}: ACK (assured)",
                              _segment(wire.parse(syn.frame), 1, b"", wire.ACK, 0)))
    return Scenario("conntrack-table-full", f"{limit} assured TCP connections {c} -> {_svc_spec(svc)} fill "
                    f"node/{pk.client.node}'s conntrack table (conntrackMax {limit}); the next SYN is dropped",
                    steps, quiet=0.05, needs_rules=True, silent_client=steps[0].ns,
                    kernel_sysctls={f"node/{pk.client.node}": {"net.netfilter.nf_conntrack_max": limit}})


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


def tcp_steps(cluster, seed, src, dst, dport, name, plan, sport=None, description="") -> Scenario | None:
    """A TCP conversation written step by step: the SYN, then per plan item
    (label, flags, payload, sent, ack_delta) a segment `sent` bytes after the
    ISN acknowledging all the peer sent so far plus ack_delta (a wrong ACK
    when not 0), each side's from what its server really sent."""
    try:
        syn = first_frame(cluster, seed, src, dst, proto="tcp", dport=dport,
                          **({"sport": sport} if sport is not None else {}))
    except LookupError:
        return None
    p = wire.parse(syn.frame)
    steps = [syn] + [Step(syn.ns, syn.dev, None, label, _segment(p, k + 1, data, flags, sent, delta))
                     for k, (label, flags, data, sent, delta) in enumerate(plan)]
    return Scenario(name, description or f"TCP {src} -> {dst}:{dport}: " + "; ".join(x[0] for x in plan)
                    + " (client RSTs suppressed)", steps, silent_client=syn.ns)


def live_replay_session(cluster, seed, src, dst, dport, name, payload=b"GET / HTTP/1.0\r\n\r\n",
                        rec_isn: int = 5000, rec_ts: int = 7000, retransmit: bool = False) -> Scenario | None:
    """A recorded client conversation (SYN; ACK; request; ACK of the echo;
    FIN; ACK of the server's FIN), recorded against a server whose ISN was
    rec_isn and TSval rec_ts, sent as `kdp run`'s live TCP replay sends it:
    each later segment translated by kdp.livetcp from what that side's server
    really sent (its ISN and TSval), the same code on both sides. retransmit:
    the request is in the recording twice (the client retransmitted it)."""
    from ..livetcp import replayed
    from ..net.tcpstate import parse_tcp_options
    try:
        syn = first_frame(cluster, seed, src, dst, proto="tcp", dport=dport)
    except LookupError:
        return None
    p = wire.parse(syn.frame)
    n = len(payload)
    ts_syn = parse_tcp_options(p.l4.options).get("ts", (0, 0))[0]

    def rec(k: int, flags: int, data: bytes, sent: int) -> bytes:
        opts = b"\x01\x01\x08\x0a" + struct.pack("!II", (ts_syn + k) & 0xFFFFFFFF, rec_ts)
        seg = wire.TCP(p.l4.sport, p.l4.dport, (p.l4.seq + 1 + sent) & 0xFFFFFFFF,
                       (rec_isn + 1 + sent) & 0xFFFFFFFF, flags, 502, 0, 0, opts, data)
        ip = replace(p.ip, ident=(p.ip.ident + k) & 0xFFFF)
        return wire.emit(wire.finalize(wire.Packet(p.eth, ip=ip, l4=seg)))
    A, PA, FA = wire.ACK, wire.PSH | wire.ACK, wire.FIN | wire.ACK
    # (an echo server: the recorded server sent back as many bytes as the client sent)
    plan = [("ACK", A, b"", 0), (f"{n} bytes", PA, payload, 0)] \
        + ([(f"the {n} bytes again (retransmission)", PA, payload, 0)] if retransmit else []) \
        + [("ACK of the echo", A, b"", n), ("FIN", FA, b"", n), ("ACK of the server's FIN", A, b"", n + 1)]
    recorded = [syn.frame] + [rec(k, flags, data, sent) for k, (_l, flags, data, sent) in enumerate(plan, 1)]
    labels = [label for label, *_rest in plan]
    steps = [syn] + [Step(syn.ns, syn.dev, None, f"{labels[k - 1]} (live replay)",
                          lambda inbound, k=k: replayed(recorded, k, inbound)) for k in range(1, len(recorded))]
    sc = Scenario(name, f"recorded TCP conversation {src} -> {dst}:{dport} replayed live: acks and "
                  f"timestamp echo translated into the real server's sequence space (client RSTs "
                  f"suppressed)", steps, silent_client=syn.ns)
    sc.recorded = recorded
    return sc


def _segment(syn, k: int, payload: bytes, flags: int, sent: int, ack_delta: int = 0):
    """Step k's segment of the connection `syn` opened: `sent` bytes after the
    ISN, acknowledging all that came back (plus ack_delta: a wrong ack)."""
    from ..net.tcpstate import parse_tcp_options

    def make(inbound: list) -> bytes:
        segs = [q for q in inbound if q is not None and q.ip is not None and isinstance(q.l4, wire.TCP)
                and q.ip.src == syn.ip.dst and q.l4.sport == syn.l4.dport and q.l4.dport == syn.l4.sport]
        synack = next((q for q in segs if q.l4.flags & wire.SYN and q.l4.flags & wire.ACK), None)
        if synack is None:
            raise StepError("no SYN-ACK came back")
        rcv = (synack.l4.seq + 1) & 0xFFFFFFFF
        for q in segs:
            if q.l4.flags & (wire.SYN | wire.RST):      # a RST's sequence number is no data
                continue
            end = (q.l4.seq + len(q.l4.payload) + (1 if q.l4.flags & wire.FIN else 0)) & 0xFFFFFFFF
            if 0 < ((end - rcv) & 0xFFFFFFFF) < 1 << 30:
                rcv = end
        ts_syn = parse_tcp_options(syn.l4.options).get("ts", (0, 0))[0]
        ts_peer = next((parse_tcp_options(q.l4.options)["ts"][0] for q in reversed(segs)
                        if "ts" in parse_tcp_options(q.l4.options)), 0)
        opts = b"\x01\x01\x08\x0a" + struct.pack("!II", (ts_syn + k) & 0xFFFFFFFF, ts_peer)
        seg = wire.TCP(syn.l4.sport, syn.l4.dport, (syn.l4.seq + 1 + sent) & 0xFFFFFFFF,
                       (rcv + ack_delta) & 0xFFFFFFFF, flags, 502,
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


def _dns_query_scenario(cluster, seed: int, client: str):
    """A real DNS query from the client to kube-dns: DNATed to a CoreDNS pod, whose
    answer (the same CoreDNS app on both sides) comes back un-DNATed from the DNS
    service IP; the raw sender has no socket, so its ICMP port unreachable is
    translated back to the CoreDNS pod too."""
    from ..dns.wire import Message, Question, type_code
    try:
        svc = cluster.service("kube-system", "kube-dns")
    except KeyError:
        return None
    port = next((p for p in svc.ports if p.protocol == "UDP" and p.port == 53), None)
    if svc.cluster_ip is None or port is None or not _ready(svc, port):
        return None
    query = Message(id=0x4B44, rd=True, questions=[Question(
        f"kube-dns.kube-system.svc.{cluster.config.cluster_domain}.", type_code("A"))]).encode()
    try:
        step = first_frame(cluster, seed, client, "svc/kube-system/kube-dns", proto="udp", sport=44053,
                           dport=53, payload=query)
    except LookupError:
        return None
    return Scenario("dns-query", f"DNS query {client} -> kube-dns {svc.cluster_ip}:53 for kube-dns.kube-system "
                    f"(DNAT to a CoreDNS pod, the A answer un-DNATed)", [step], quiet=0.05, needs_rules=True)


def two_sided_replay(cluster, seed: int, frames: list[bytes], name: str, description: str) -> Scenario:
    """A capture holding both sides of a conversation, replayed as `kdp run
    --at auto --apps off` replays it: each frame transmitted at its sender's
    device (kdp.senders, the same code: by source MAC, else source IP, with
    the header that sender's stack writes) and every pod silent (apps_off).
    Frames `--at auto` skips (a Service IP's, no host's) are left out; their
    indexes and reasons are in the scenario's `skipped`."""
    from ..emulator import Emulator
    from ..senders import Senders
    senders = Senders(Emulator(cluster, seed=seed, capture=False))
    steps, skipped = [], []
    for i, raw in enumerate(frames):
        dev, frame, reason, _rewritten = senders.resolve(raw)
        if dev is None:
            skipped.append((i, reason))
            continue
        steps.append(Step(dev.namespace.name, dev.name, frame, f"#{i} at {dev.namespace.name} {dev.name}"))
    sc = Scenario(name, description + " (--at auto --apps off: each frame at its sender, pods silent)",
                  steps, needs_rules=True, apps_off=True)
    sc.skipped = skipped
    return sc
