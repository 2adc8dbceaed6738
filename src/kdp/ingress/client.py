# ingress.client: an HTTP/1.1 client (like curl) on a pod, node or outside
# host, every segment a packet through the emulator: it resolves the URL's host,
# opens a TCP connection from its own socket (SYN with Linux's options, the
# kernel's ACK on the SYN-ACK), writes the request (in two segments when it is
# longer than SPLIT_OVER bytes, so the server has to buffer), reads the response,
# then closes (FIN both ways). The result keeps each packet's outcome, the
# controller's decision and both connections summarised hop by hop: the
# client's (through the cloud load balancer and kube-proxy to the controller)
# and the controller's own to the backend pod.
#
# Host resolution: an IPv4 address is used as is; a host the ingress
# controller serves (a rule's host, exactly or by wildcard) goes to the
# controller's load balancer IP, as if the public DNS pointed it there (from
# any source); any other name is resolved by the source's stub resolver, as
# packets (kdp.dns.resolver: cluster names from pods through kube-dns).
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from urllib.parse import urlsplit

from .. import wire
from ..errors import UsageError
from ..wire import TCP
from .controller import no_controller, no_lb_address
from .http import Headers, HttpError, Request, Response, build_request, parse_response

SPLIT_OVER = 64                 # requests longer than this go out in two segments
USER_AGENT = "kdp-http/1.0"


@dataclass
class Segment:
    """One TCP segment of a connection as it travelled."""

    direction: str              # -> (from the side that opened the connection) | <-
    flags: str
    seq: int
    ack: int
    length: int
    sent: str                   # "src:port > dst:port" as it left
    received: str | None        # ... as it arrived (differs when NATed)
    path: list[str]             # the namespaces it went through
    delivered_to: str | None
    nat: str | None             # where the addresses changed

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def text(self) -> str:
        nat = f"  [{self.nat}]" if self.nat else ""
        return (f"{self.direction} [{self.flags:<3}] {self.length:>5} B  {self.sent}  "
                f"{' > '.join(self.path)}{nat}")


@dataclass
class Connection:
    name: str                   # client | upstream
    local: str                  # "ip:port" of the side that opened it
    remote: str                 # "ip:port" it connected to
    served_by: str | None       # the namespace the first segment reached
    via: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"name": self.name, "local": self.local, "remote": self.remote,
                "served_by": self.served_by, "via": self.via,
                "segments": [s.as_dict() for s in self.segments]}


@dataclass
class HttpExchange:
    source: str
    url: str
    host: str
    address: IPv4Address
    port: int
    how: str                    # how the host was resolved
    request: Request
    request_segments: list[int] = field(default_factory=list)
    response: Response | None = None
    error: str | None = None
    steps: list[tuple[str, object]] = field(default_factory=list)      # (name, Outcome)
    records: list = field(default_factory=list)                         # controller ProxyRecords
    connections: list[Connection] = field(default_factory=list)
    resolution: object = None                                          # dns Resolution, if any
    client: tuple | None = None                                        # (ip, port)

    @property
    def ok(self) -> bool:
        return self.response is not None

    @property
    def status(self) -> int | None:
        return self.response.status if self.response is not None else None

    def connection(self, name: str) -> Connection | None:
        return next((c for c in self.connections if c.name == name), None)

    def frames(self):
        return [f for _, o in self.steps for f in o.frames]

    def as_dict(self, hops: bool = False) -> dict:
        return {"source": self.source, "url": self.url, "host": self.host,
                "address": str(self.address), "port": self.port, "resolved_by": self.how,
                "client": f"{self.client[0]}:{self.client[1]}" if self.client else None,
                "request": self.request.as_dict(), "request_segments": self.request_segments,
                "response": self.response.as_dict() if self.response else None,
                "error": self.error,
                "ingress": [r.as_dict() for r in self.records],
                "connections": [c.as_dict() for c in self.connections],
                "resolution": self.resolution.as_dict(hops=False) if self.resolution else None,
                "steps": [{"step": n, "outcome": o.as_dict(with_hops=hops)} for n, o in self.steps]}


class _Reader:
    """The client socket's app: collects the response bytes."""

    def __init__(self, head: bool):
        self.data = b""
        self.head = head
        self.closed = False
        self.reset: str | None = None

    def on_upstream(self, h, data: bytes, now: float):
        self.data += data
        return f"client read {len(data)} bytes"

    def on_closed(self, h, now: float):
        self.closed = True

    def on_reset(self, h, why: str, now: float):
        self.reset = why

    def response(self) -> Response | None:
        got = parse_response(self.data, eof=self.closed, head_request=self.head)
        return got[0] if got else None


def _target(emu, src: str, host: str, port: int):
    """(address, how, Resolution or None) for the URL's host."""
    try:
        ip = ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.version != 4:
            raise UsageError(f"{host}: only IPv4 is modelled")
        return ip, "an IPv4 address", None
    dep = getattr(emu.topology, "ingress", None)
    if dep is not None and dep.iset.serves_host(host):
        if not dep.controllers:
            raise UsageError(f"{host} is a host of an Ingress, but {no_controller(dep.iset)}")
        if dep.lb_ip is None:
            raise UsageError(f"{host} is a host of an Ingress, but "
                             f"{no_lb_address(dep.service, [p for p, _ in dep.controllers])}: "
                             + _reach_instead(emu, dep, host))
        return dep.lb_ip, (f"ingress host: the controller's load balancer {dep.lb_ip} "
                           f"({dep.service.key}), as if the public DNS pointed there"), None
    from ..dns.resolver import resolve
    res = resolve(emu, src, host)
    addrs = [a for a in res.addresses if a.version == 4]
    if not addrs:
        raise UsageError(f"{host}: cannot resolve from {src} ({res.status}) and no Ingress rule "
                         "names it (to send it to the controller anyway, put the controller's "
                         f"address in the URL and add --header 'Host: {host}')")
    return addrs[0], f"DNS from {src}: {res.status} ({len(res.queries)} quer{'y' if len(res.queries) == 1 else 'ies'})", res


def _reach_instead(emu, dep, host: str) -> str:
    """How to send the request to the controller without a load balancer address."""
    svc = dep.service
    if svc is None:
        pod = dep.controllers[0][0]
        return f"send it to a controller pod: --url http://{pod.ip}/ --header 'Host: {host}' (from inside the cluster)"
    port = svc.ports[0] if svc.ports else None
    if port is not None and port.node_port:
        node = emu.cluster.nodes[0]
        return (f"send it to a node's NodePort instead: --url http://{node.ip}:{port.node_port}/ "
                f"--header 'Host: {host}'")
    return (f"send it to the Service's cluster IP from inside the cluster instead: --url "
            f"http://{svc.cluster_ip}:{port.port if port else 80}/ --header 'Host: {host}'")


def http_request(emu, src: str, url: str, method: str = "GET", headers=(), data: bytes | None = None,
                 time: float | None = None, split: int | None = None) -> HttpExchange:
    """Run one HTTP request from SRC (pod/NS/NAME, node/NAME or ext/ADDR) to url as
    packets. headers: (name, value) pairs added to (or replacing) the defaults."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        raise UsageError(f"{url}: only http:// URLs (TLS is not modelled)")
    if not parts.hostname:
        raise UsageError(f"{url}: no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise UsageError(f"{url}: invalid port") from None
    host = parts.hostname
    ep = emu.resolve(src)
    if ep.ns is None or ep.ns.sockets is None:
        raise UsageError(f"{src}: a client runs on pod/, node/ or ext/ endpoints")
    addr, how, res = _target(emu, src, host, port)
    now = emu.datapath.now if time is None else float(time)
    sip = ep.ip if ep.kind == "ext" else emu.datapath.route_source(ep.ns, addr)
    if sip is None:
        raise UsageError(f"{src} has no route to {addr}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = parts.netloc.rsplit("@", 1)[-1]
    h = Headers([("Host", authority), ("User-Agent", USER_AGENT), ("Accept", "*/*")])
    for k, v in headers:
        if k.lower() in ("host", "user-agent", "accept"):
            h.set(k, v) if v != "" else h.remove(k)
        else:
            h.add(k, v)
    body = data or b""
    if data is not None:
        h.set("Content-Length", str(len(body)))
    raw = build_request(method, target, h.items, body)
    req = Request(method, target, "HTTP/1.1", h, body, raw)
    ex = HttpExchange(src, url, host, addr, port, how, req, resolution=res)
    dep = getattr(emu.topology, "ingress", None)
    seen = {id(r) for r in dep.records()} if dep is not None else set()

    socks = ep.ns.sockets
    reader = _Reader(method == "HEAD")
    handle = socks.connect(sip, addr, port, now, app=reader, auto_close=False, owner="kdp http")
    ex.client = (sip, handle.key[1])

    def step(name: str) -> None:
        for pkt in socks.flush():
            ex.steps.append((name, emu.datapath.originate(ep.ns, pkt, now)))

    step("handshake")
    if handle.state != "ESTABLISHED":
        first = ex.steps[0][1]
        ex.error = reader.reset or (f"no connection: SYN {first.disposition}"
                                    + (f" ({first.reason})" if first.reason else ""))
        _cleanup(socks, handle)
    else:
        cut = split if split is not None else (len(raw) // 2 if len(raw) > SPLIT_OVER else 0)
        pieces = [raw[:cut], raw[cut:]] if 0 < cut < len(raw) else [raw]
        for i, piece in enumerate(pieces, 1):
            handle.send(piece, now=now)
            ex.request_segments.append(len(piece))
            step(f"request {i}/{len(pieces)}" if len(pieces) > 1 else "request")
        try:
            ex.response = reader.response()
        except HttpError as e:
            ex.error = f"malformed response: {e.why}"
        if ex.response is None and ex.error is None:
            ex.error = reader.reset or "no (complete) response"
        if handle.state in ("ESTABLISHED", "CLOSE_WAIT"):
            handle.close(now=now)
            step("close")
        _cleanup(socks, handle)
    if dep is not None:
        ex.records = [r for r in dep.records() if id(r) not in seen]   # what the controller did
    ex.connections = summarise(emu, ex)
    return ex


def _cleanup(socks, handle) -> None:
    """A connection that did not close cleanly leaves no socket behind (TIME_WAIT etc.)."""
    conn = socks.tcp.get(handle.key)
    if conn is not None and conn.handle is handle:
        del socks.tcp[handle.key]


# --- summaries --------------------------------------------------------------------------

def _ends(pkt) -> tuple:
    return (pkt.ip.src, pkt.l4.sport), (pkt.ip.dst, pkt.l4.dport)


def _addr(e) -> str:
    return f"{e[0]}:{e[1]}"


def summarise(emu, ex: HttpExchange) -> list[Connection]:
    """The client connection and each upstream connection, segment by segment."""
    ups = [(r, r.handle.key) for r in ex.records if r.handle is not None]
    up_ends = {frozenset({(k[0], k[1]), (k[2], k[3])}): i for i, (_, k) in enumerate(ups)}
    cport = ex.client[1] if ex.client else None
    groups: dict = {}
    order: list = []
    for dev, direction, pkt in ex.frames():
        if pkt.ip is None or not isinstance(pkt.l4, TCP):
            continue
        ends = frozenset(_ends(pkt))
        if ends in up_ends:
            conn = ("upstream", up_ends[ends])
        elif cport is not None and cport in (pkt.l4.sport, pkt.l4.dport):
            conn = ("client", 0)
        else:
            continue
        l4 = pkt.l4
        key = (conn, pkt.ip.ident, l4.seq, l4.ack, l4.flags, len(l4.payload))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append((dev, direction, pkt))
    conns: list[Connection] = []
    client = Connection("client", f"{ex.client[0]}:{ex.client[1]}" if ex.client else "?",
                        f"{ex.address}:{ex.port}", None)
    conns.append(client)
    uconns = []
    for r, k in ups:
        c = Connection("upstream", f"{k[0]}:{k[1]}", f"{k[2]}:{k[3]}", None)
        c.via.append(f"ingress-nginx ({_pod_of(emu, k[0])}) connects to the endpoint's pod IP "
                     f"directly: no ClusterIP, no kube-proxy DNAT")
        uconns.append(c)
        conns.append(c)
    for key in order:
        conn = client if key[0][0] == "client" else uconns[key[0][1]]
        frames = groups[key]
        first, last = frames[0][2], frames[-1][2]
        opener = client.local if conn is client else conn.local
        sent_src = _addr(_ends(first)[0])
        direction = "->" if sent_src == opener or (conn is client and first.l4.sport == cport) else "<-"
        path: list[str] = []
        nat_at = None
        for dev, _d, pkt in frames:
            name = dev.namespace.name
            if not path or path[-1] != name:
                path.append(name)
            if nat_at is None and _ends(pkt) != _ends(first):
                nat_at = name
        delivered = next((d.namespace.name for d, dr, _p in reversed(frames) if dr == "in"), None)
        sent = f"{_addr(_ends(first)[0])} > {_addr(_ends(first)[1])}"
        received = f"{_addr(_ends(last)[0])} > {_addr(_ends(last)[1])}"
        nat = None
        if _ends(first) != _ends(last):
            (s0, d0), (s1, d1) = _ends(first), _ends(last)
            what = []
            if d0 != d1:
                what.append(f"dst {_addr(d0)} -> {_addr(d1)}")
            if s0 != s1:
                what.append(f"src {_addr(s0)} -> {_addr(s1)}")
            nat = ", ".join(what) + (f" at {nat_at}" if nat_at else "")
        seg = Segment(direction, wire.tcp_flag_str(first.l4.flags), first.l4.seq, first.l4.ack,
                      len(first.l4.payload), sent, received if received != sent else None,
                      path, delivered, nat)
        conn.segments.append(seg)
        if conn.served_by is None and direction == "->" and delivered:
            conn.served_by = delivered
    if ex.steps:
        hops = ex.steps[0][1].hops
        lb = next((h for h in hops if h.component == "underlay" and h.action == "balance"), None)
        if lb is not None:
            client.via.append(lb.detail)
        dnat = next((h for h in hops if "nat dnat" in h.detail), None)
        if dnat is not None:
            client.via.append(f"kube-proxy on {dnat.namespace}: {dnat.detail.split('] ', 1)[-1]}")
        snat = next((h for h in hops if "nat snat" in h.detail), None)
        if snat is not None:
            client.via.append(f"{snat.namespace}: {snat.detail.split('] ', 1)[-1]} "
                              "(the server sees the node's address, not the client's)")
    return conns


def _pod_of(emu, ip) -> str:
    for p in emu.cluster.pods:
        if p.ip == ip and not p.host_network:
            return f"pod/{p.namespace}/{p.name}"
    return str(ip)
