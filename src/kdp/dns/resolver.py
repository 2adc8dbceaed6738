# dns.resolver: a pod's (or node's) stub resolver, as glibc's res_nsearch runs
# it, with every query a real packet through the emulator: resolv.conf from the
# dnsPolicy, the search list and ndots, one UDP query per candidate name from
# the pod's own stack (source port from the seeded keyed hash), the reply read
# off the wire, TCP (handshake, length-framed query, close) when the reply is
# truncated. The result keeps each query with its packet outcomes for traces.
#
# resolv.conf: a pod (dnsPolicy ClusterFirst) gets `nameserver <kube-dns IP>`,
# `search <ns>.svc.<zone> svc.<zone> <zone>`, `options ndots:5`. Nodes, hostNetwork pods
# (whose ClusterFirst falls back to Default) and outside hosts use the node's resolv.conf:
# `nameserver 168.63.129.16` (Azure's VNet DNS, modelled as the upstream static zone) and no
# search list, so cluster names do not resolve there, as on a real node.
# glibc's order: a name with a trailing dot is asked as is, only; a name with at least ndots
# dots is asked as is first, then with each search suffix; other names go through the search
# list first and are asked as is last. NXDOMAIN, NODATA and SERVFAIL go on to the next
# candidate; an answer ends the search; no reply (or an ICMP error) tries the next nameserver
# and then ends the search list (the name is still asked as is once if it was not yet).
# One query type per name (like `host -t`), no EDNS (glibc's default), one attempt per server.
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address

from .. import wire as pw
from ..conntrack.keyed import keyed_hash
from ..errors import UsageError
from ..k8s.coredns import VNET_DNS
from . import wire
from .wire import DnsFormatError, Message

DNS_PORT = 53
CLIENT_WINDOW = 502


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[IPv4Address, ...]
    search: tuple[str, ...]
    ndots: int
    policy: str                        # ClusterFirst | Default

    def text(self) -> str:
        lines = [f"nameserver {ns}" for ns in self.nameservers]
        if self.search:
            lines.append("search " + " ".join(self.search))
        if self.ndots != 1:
            lines.append(f"options ndots:{self.ndots}")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        return {"policy": self.policy, "nameservers": [str(n) for n in self.nameservers],
                "search": list(self.search), "ndots": self.ndots}


def resolv_conf(emu, src: str) -> ResolvConf:
    """What kubelet writes into the source's /etc/resolv.conf."""
    c = emu.cluster
    kind, _, rest = src.partition("/")
    if kind == "pod":
        ns, _, name = rest.partition("/")
        try:
            pod = c.pod(ns, name)
        except KeyError:
            raise UsageError(f"{src}: no such pod in the cluster") from None
        if not pod.host_network:
            domain = c.config.cluster_domain.rstrip(".")
            try:
                dns = c.service("kube-system", "kube-dns").cluster_ip or c.config.dns_service_ip
            except KeyError:
                dns = c.config.dns_service_ip
            return ResolvConf((dns,), (f"{pod.namespace}.svc.{domain}", f"svc.{domain}", domain),
                              5, "ClusterFirst")
    return ResolvConf((VNET_DNS,), (), 1, "Default")


def search_names(name: str, conf: ResolvConf) -> list[str]:
    """The names glibc asks for, in order (absolute, with a trailing dot)."""
    if name.endswith("."):
        return [wire.fqdn(name)]
    dots = len(wire.name_labels(name)) - 1
    out = [wire.fqdn(name)] if dots >= conf.ndots else []
    out += [wire.fqdn(f"{name}.{d}") for d in conf.search]
    if dots < conf.ndots:
        out.append(wire.fqdn(name))
    return out


def is_dns_name(spec: str) -> bool:
    """A DST that is neither an endpoint form (KIND/...) nor an IP: a name to resolve."""
    if not spec or "/" in spec:
        return False
    try:
        ip_address(spec)
        return False
    except ValueError:
        pass
    try:
        return bool(wire.name_labels(spec))
    except DnsFormatError:
        return False


# --- results --------------------------------------------------------------------------

@dataclass
class Exchange:
    """One query and its response, with the packets' outcomes."""

    name: str
    qtype: int
    server: IPv4Address
    transport: str                      # udp | tcp
    source: IPv4Address
    sport: int
    query: Message
    response: Message | None = None
    outcomes: list = field(default_factory=list)    # the datapath Outcome of each packet sent
    answered_by: str | None = None      # where the query packet was delivered
    dnat: str | None = None             # "10.2.0.10:53 -> 10.244.1.3:53"
    error: str | None = None

    @property
    def rcode(self) -> str:
        if self.response is None:
            return self.error or "no response"
        return wire.rcode_name(self.response.rcode)

    @property
    def truncated(self) -> bool:
        return self.response is not None and self.response.tc

    def summary(self) -> str:
        r = self.response
        res = self.rcode
        if r is not None:
            n = len(r.answers)
            res += (f", {n} answer{'s' * (n != 1)}" if n else "") + (" (TC)" if r.tc else "")
        where = f", answered by {self.answered_by}" if self.answered_by else ""
        nat = f" (DNAT {self.dnat})" if self.dnat else ""
        return (f"{self.name} {wire.type_name(self.qtype)} {self.transport} {self.source}:{self.sport}"
                f" -> {self.server}:{DNS_PORT}{nat}{where}: {res}")

    def as_dict(self, hops: bool = True) -> dict:
        return {"name": self.name, "type": wire.type_name(self.qtype), "server": str(self.server),
                "port": DNS_PORT, "transport": self.transport, "source": str(self.source),
                "sport": self.sport, "rcode": self.rcode, "truncated": self.truncated,
                "answered_by": self.answered_by, "dnat": self.dnat, "error": self.error,
                "query": wire.message_dict(self.query),
                "response": wire.message_dict(self.response) if self.response else None,
                "packets": [o.as_dict(with_hops=hops) for o in self.outcomes]}


@dataclass
class Resolution:
    source: str
    name: str
    qtype: int
    conf: ResolvConf
    queries: list[Exchange] = field(default_factory=list)
    status: str = "no query"            # NOERROR (answered) | NXDOMAIN | NODATA | SERVFAIL | ...
    response: Message | None = None     # the answer, else the last response received

    @property
    def ok(self) -> bool:
        return self.status == "NOERROR"

    @property
    def answers(self) -> list:
        return list(self.response.answers) if self.ok and self.response else []

    @property
    def addresses(self) -> list:
        return [rr.data for rr in self.answers if rr.rtype in (wire.A, wire.AAAA)]

    @property
    def server_query(self) -> Exchange | None:
        """The exchange whose response is `response`."""
        return next((q for q in reversed(self.queries) if q.response is self.response), None)

    def as_dict(self, hops: bool = True) -> dict:
        return {"source": self.source, "name": self.name, "type": wire.type_name(self.qtype),
                "resolv_conf": self.conf.as_dict(), "status": self.status,
                "answers": [wire.rr_dict(r) for r in self.answers],
                "addresses": [str(a) for a in self.addresses],
                "response": wire.message_dict(self.response) if self.response else None,
                "queries": [q.as_dict(hops) for q in self.queries]}

    def text(self) -> str:
        lines = [f"; kdp resolve {self.name} {wire.type_name(self.qtype)} from {self.source}",
                 f"; resolv.conf (dnsPolicy {self.conf.policy}): "
                 + "; ".join(self.conf.text().strip().splitlines()),
                 ";; queries:"]
        lines += [f";; {i:>2}. {q.summary()}" for i, q in enumerate(self.queries, 1)]
        if self.response is not None:
            lines += ["", self.response.to_text(), ""]
            q = self.server_query
            if q is not None:
                lines.append(f";; SERVER: {q.server}#{DNS_PORT}({q.server}) ({q.transport.upper()})"
                             + (f", answered by {q.answered_by}" if q.answered_by else ""))
        lines.append(f";; status: {self.status}" + (
            f" ({', '.join(str(a) for a in self.addresses)})" if self.addresses else ""))
        return "\n".join(lines)


# --- the resolver ---------------------------------------------------------------------

def resolve(emu, src: str, name: str, qtype: str | int = "A", time: float | None = None) -> Resolution:
    """Resolve name from SRC (pod/NS/NAME, node/NAME or ext/ADDR) as its stub
    resolver would, every query a packet through the emulator."""
    ep = emu.resolve(src)
    if ep.ns is None or ep.ns.sockets is None:
        raise UsageError(f"{src}: names are resolved from pod/, node/ or ext/ endpoints")
    try:
        qt = wire.type_code(qtype)
    except DnsFormatError as e:
        raise UsageError(f"--type {qtype}: {e}") from None
    if qt == wire.PTR and wire.is_ip_literal(name):
        name = ".".join(reversed(str(ip_address(name)).split("."))) + ".in-addr.arpa."
    conf = resolv_conf(emu, src)
    try:
        names = search_names(name, conf)
    except DnsFormatError as e:
        raise UsageError(f"{name!r} is not a DNS name: {e}") from None
    res = Resolution(src, name, qt, conf)
    got_nodata = got_servfail = False
    tried_as_is, as_is = False, wire.fqdn(name)
    stop_search = False
    for cand in names:
        if stop_search and not (cand == as_is and not tried_as_is):
            continue
        tried_as_is |= cand == as_is
        resp = _query_servers(emu, ep, src, conf, cand, qt, res, time)
        if resp is None:
            res.status = "timeout"
            stop_search = True
            continue
        res.response = resp
        if resp.rcode == wire.NOERROR and resp.answers:
            res.status = "NOERROR"
            return res
        if resp.rcode == wire.NOERROR:
            got_nodata = True
        elif resp.rcode == wire.SERVFAIL:
            got_servfail = True
        elif resp.rcode != wire.NXDOMAIN:
            stop_search = True
        if name.endswith("."):
            break
    if res.response is not None:
        last = wire.rcode_name(res.response.rcode) if res.response.rcode != wire.NOERROR else "NODATA"
        res.status = "NODATA" if got_nodata else "SERVFAIL" if got_servfail else last
    return res


def _query_servers(emu, ep, src, conf, qname, qt, res, time) -> Message | None:
    """Ask each nameserver in turn until one answers (UDP, then TCP on TC)."""
    for server in conf.nameservers:
        ex = _udp(emu, ep, src, server, qname, qt, time)
        res.queries.append(ex)
        if ex.response is not None and ex.response.tc:
            tex = _tcp(emu, ep, src, server, ex.query, time)
            res.queries.append(tex)
            if tex.response is not None:
                return tex.response
            return ex.response              # glibc keeps the truncated answer when TCP fails
        if ex.response is not None:
            return ex.response
    return None


def _seq(emu) -> int:
    n = getattr(emu, "_dns_queries", 0) + 1
    emu._dns_queries = n
    return n


def _now(emu, time):
    return emu.datapath.now if time is None else float(time)


def _source(emu, ep, src, server) -> IPv4Address:
    ip = ep.ip if ep.kind == "ext" else emu.datapath.route_source(ep.ns, server)
    if ip is None:
        raise UsageError(f"{src} has no route to its nameserver {server}")
    return ip


def _udp(emu, ep, src, server, qname, qt, time) -> Exchange:
    n = _seq(emu)
    sport = 32768 + keyed_hash(emu.seed, "dns-sport", src, qname, qt, "udp", n, seed_as_key=False) % 28232
    ident = keyed_hash(emu.seed, "dns-id", src, qname, qt, n, seed_as_key=False) & 0xFFFF
    q = wire.query(qname, qt, ident)
    sip = _source(emu, ep, src, server)
    ex = Exchange(qname, qt, server, "udp", sip, sport, q)
    ipid = keyed_hash(emu.seed, "dns-ipid", src, n, seed_as_key=False) & 0xFFFF
    pkt = emu.build(sip, server, "udp", sport, DNS_PORT, ident=ipid, payload=q.encode(), time=time)
    ep.ns.sockets.add_client("udp", sip, sport, server, DNS_PORT)
    out = emu.datapath.originate(ep.ns, pkt, _now(emu, time))
    ex.outcomes.append(out)
    _where(ex, out, server)
    rep = out.reply
    if rep is None or rep.disposition != "delivered" or rep.packet is None:
        ex.error = f"no response ({out.reason or out.disposition})" if out.disposition != "delivered" \
            else "no response"
        return ex
    p = rep.packet
    if isinstance(p.l4, pw.ICMP):
        ex.error = f"ICMP {pw.icmp_str(p.l4)}"
        return ex
    if not isinstance(p.l4, pw.UDP) or (p.ip.src, p.l4.sport, p.l4.dport) != (server, DNS_PORT, sport):
        ex.error = f"unexpected reply {p.summary()}"
        return ex
    ex.response, ex.error = _check(p.l4.payload, q)
    return ex


def _tcp(emu, ep, src, server, q: Message, time) -> Exchange:
    """The same query over TCP: handshake, the 2-byte length and the query, the
    response (in as many segments as it takes), then the client closes."""
    n = _seq(emu)
    question = q.questions[0]
    sport = 32768 + keyed_hash(emu.seed, "dns-sport", src, question.name, question.qtype, "tcp", n,
                               seed_as_key=False) % 28232
    sip = _source(emu, ep, src, server)
    ex = Exchange(question.name, question.qtype, server, "tcp", sip, sport, q)
    now = _now(emu, time)
    ipid = keyed_hash(emu.seed, "dns-ipid", src, n, seed_as_key=False) & 0xFFFF
    syn = emu.build(sip, server, "tcp", sport, DNS_PORT, ident=ipid, time=time)
    ep.ns.sockets.add_client("tcp", sip, sport, server, DNS_PORT)
    out = emu.datapath.originate(ep.ns, syn, now)
    ex.outcomes.append(out)
    _where(ex, out, server)
    synack = out.reply.packet if out.reply is not None and out.reply.disposition == "delivered" else None
    if synack is None or not isinstance(synack.l4, pw.TCP) or \
            synack.l4.flags & (pw.SYN | pw.ACK) != (pw.SYN | pw.ACK):
        ex.error = "TCP connection refused" if synack is not None and isinstance(synack.l4, pw.TCP) \
            else "TCP connection failed (no SYN-ACK)"
        return ex
    seq, ack = (syn.l4.seq + 1) & 0xFFFFFFFF, (synack.l4.seq + 1) & 0xFFFFFFFF

    def send(flags: int, payload: bytes = b""):
        nonlocal ipid
        ipid = (ipid + 1) & 0xFFFF
        pkt = pw.finalize(pw.Packet(syn.eth, ip=pw.IPv4(sip, server, pw.PROTO_TCP, 64, ipid, 2),
                                    l4=pw.TCP(sport, DNS_PORT, seq, ack, flags, CLIENT_WINDOW, 0, 0,
                                              b"", payload)))
        o = emu.datapath.originate(ep.ns, pkt, now)
        ex.outcomes.append(o)
        got = [e.packet for e in emu.datapath.ends["reply"]
               if e.disposition == "delivered" and e.where == ep.ns.name and e.packet is not None
               and isinstance(e.packet.l4, pw.TCP) and e.packet.ip.src == server]
        return o, got

    send(pw.ACK)
    data = struct.pack("!H", len(q.encode())) + q.encode()
    _, segs = send(pw.PSH | pw.ACK, data)
    seq = (seq + len(data)) & 0xFFFFFFFF
    stream = b"".join(s.l4.payload for s in sorted(
        (s for s in segs if s.l4.payload), key=lambda s: (s.l4.seq - ack) & 0xFFFFFFFF))
    ack = (ack + len(stream)) & 0xFFFFFFFF
    server_fin = any(s.l4.flags & pw.FIN for s in segs)
    if server_fin:
        ack = (ack + 1) & 0xFFFFFFFF
    _, segs = send(pw.FIN | pw.ACK)
    seq = (seq + 1) & 0xFFFFFFFF
    if not server_fin and any(s.l4.flags & pw.FIN for s in segs):
        ack = (ack + 1) & 0xFFFFFFFF
        send(pw.ACK)
    if len(stream) < 2 or len(stream) < 2 + struct.unpack_from("!H", stream)[0]:
        ex.error = "no response over TCP"
        return ex
    ex.response, ex.error = _check(stream[2:2 + struct.unpack_from("!H", stream)[0]], q)
    return ex


def _where(ex: Exchange, out, server: IPv4Address) -> None:
    if out.disposition == "delivered":
        ex.answered_by = out.delivered_to
        p = out.packet
        if p is not None and p.ip is not None and p.ip.dst != server:
            ex.dnat = f"{server}:{DNS_PORT} -> {p.ip.dst}:{p.ports[1]}"


def _check(payload: bytes, q: Message) -> tuple[Message | None, str | None]:
    """The response if it answers q (id and question), as glibc's res_send checks."""
    try:
        m = wire.decode(payload)
    except DnsFormatError as e:
        return None, f"malformed response: {e}"
    if not m.qr or m.id != q.id:
        return None, f"response id {m.id} does not match the query's {q.id}"
    asked = q.questions[0]
    if m.questions and (len(m.questions) != 1 or m.questions[0].qtype != asked.qtype
                        or wire.canonical(m.questions[0].name) != wire.canonical(asked.name)):
        return None, "response is for another question"
    return m, None



def resolve_then_trace(emu, src: str, name: str, qtype: str | int = "A", time: float | None = None,
                       **trace_kw):
    """Resolve name from src, then trace a packet from src to the first address
    (to svc/NS/NAME when it is a service's cluster IP, so the service's port is
    the default). Returns (Resolution, Outcome or None when nothing resolved)."""
    res = resolve(emu, src, name, qtype, time)
    addrs = [a for a in res.addresses if a.version == 4]
    if not addrs:
        return res, None
    ip = addrs[0]
    svc = next((s for s in emu.cluster.services if s.cluster_ip == ip), None)
    if svc is not None:
        return res, emu.trace(src, f"svc/{svc.namespace}/{svc.name}", time=time, **trace_kw)
    headless = _headless_service(emu, res, ip)
    if headless is not None and trace_kw.get("dport") is None and trace_kw.get("proto") != "icmp":
        trace_kw = dict(trace_kw, **_headless_port(headless, ip, trace_kw.get("proto"), name))
    return res, emu.trace(src, str(ip), time=time, **trace_kw)


def _headless_service(emu, res: Resolution, ip):
    """The headless Service whose name (or a pod's hostname under it) was
    answered with ip, else None."""
    q = res.server_query
    if q is None:
        return None
    labels = q.name.rstrip(".").split(".")
    tail = ["svc"] + emu.cluster.config.cluster_domain.strip(".").split(".")
    if len(labels) < len(tail) + 2 or labels[-len(tail):] != tail:
        return None
    ns, name = labels[-len(tail) - 1], labels[-len(tail) - 2]
    svc = next((s for s in emu.cluster.services if (s.namespace, s.name) == (ns, name)), None)
    if svc is None or svc.cluster_ip is not None or not any(e.ip == ip for e in svc.endpoints):
        return None
    return svc


def _headless_port(svc, ip, proto: str | None, name: str) -> dict:
    """dport (and proto) for a trace to ip, an endpoint of the headless svc: the
    port the endpoint serves the Service's first port (of proto) on."""
    for sp in svc.ports:
        if proto is not None and sp.protocol.lower() != proto:
            continue
        ep = next((e for e in svc.endpoints if e.ip == ip and e.port_name == sp.name
                   and e.protocol == sp.protocol), None)
        if ep is not None and ep.protocol.lower() in ("tcp", "udp"):
            return {"dport": ep.port, "proto": ep.protocol.lower()}
    have = ", ".join(f"{p.port}/{p.protocol}" for p in svc.ports) or "none"
    raise UsageError(f"{name}: headless Service {svc.namespace}/{svc.name} has no "
                     f"{(proto or 'TCP or UDP').upper()} port on {ip} (its ports: {have}); give --dport")
