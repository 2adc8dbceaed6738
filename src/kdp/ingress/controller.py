# ingress.controller: ingress-nginx as a socket app on the controller pods'
# HTTP port, and the installer that puts it (and the HTTP backend app) behind
# the sockets cni wired. For each complete request on a client connection the
# controller routes it (rules.IngressSet), picks one ready endpoint of the
# backend service (a keyed hash of the client connection and the request's
# number on it: deterministic, order-independent), opens its own TCP connection
# from its pod to the endpoint's pod IP and target port (never the ClusterIP;
# no kube-proxy NAT on that path), sends the request with the headers
# ingress-nginx sets (X-Real-IP, X-Forwarded-For = the client address as the
# controller sees it, the client's own X-Forwarded-For moved to
# X-Original-Forwarded-For, X-Forwarded-Host/-Port/-Proto, X-Request-ID,
# Connection: close), reads the response and relays it.
#
# Connections: the client side is HTTP/1.1 keep-alive as in ingress-nginx
# (`Connection: keep-alive`; the client closes), unless the client asked for
# `Connection: close` (or spoke HTTP/1.0 without keep-alive), or the request
# was malformed (400): then the controller closes after the response. The
# upstream side is one connection per request with `Connection: close` (as with
# upstream-keepalive-connections: 0): the backend answers and closes, the
# controller answers the FIN. No route: the controller's own default backend
# answers 404 (inside the controller pod, no connection); a backend without
# ready endpoints (or a missing service/port) 503; a refused or broken
# upstream connection 502.
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ..conntrack.keyed import keyed_hash
from ..net.tcpstate import TcpHandle
from .backend import BackendApp
from .http import (HOP_BY_HOP, Headers, HttpError, Request, Response, build_request, error_response,
                   http_date, normalize_path, parse_request, parse_response)
from .rules import IngressSet, Route, Upstream, check_backends, from_cluster, resolve_backend

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
CONTROLLER_NAME = "ingress-nginx"
DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {"host", "x-real-ip", "x-forwarded-for", "x-forwarded-host",
                                        "x-forwarded-port", "x-forwarded-proto", "x-forwarded-scheme",
                                        "x-scheme", "x-request-id", "x-original-forwarded-for",
                                        "content-length"}
HIDDEN_RESPONSE_HEADERS = HOP_BY_HOP | {"server", "date", "content-length", "x-pad"}


@dataclass
class ProxyRecord:
    """One request the controller handled, with what it did."""

    downstream: tuple                      # (client ip, client port, controller ip, port) as seen
    request: Request | None = None
    route: Route | None = None
    upstream: Upstream | None = None
    endpoint: object = None                # the chosen model.Endpoint
    handle: TcpHandle | None = None        # the upstream connection
    down: TcpHandle | None = None          # the client connection
    response: Response | None = None       # as relayed to the client
    status: int | None = None
    error: str | None = None
    buf: bytes = b""
    done: bool = False
    conn: dict = field(default_factory=dict, repr=False)

    @property
    def upstream_tuple(self) -> tuple | None:
        return self.handle.key if self.handle is not None else None

    def as_dict(self) -> dict:
        ep = self.endpoint
        return {"downstream": {"client": f"{self.downstream[0]}:{self.downstream[1]}",
                               "controller": f"{self.downstream[2]}:{self.downstream[3]}"},
                "request": self.request.as_dict() if self.request else None,
                "route": self.route.as_dict() if self.route else None,
                "upstream_problem": self.upstream.problem if self.upstream else None,
                "endpoint": {"ip": str(ep.ip), "port": ep.port, "pod": ep.pod} if ep else None,
                "upstream_connection": ({"local": f"{self.handle.key[0]}:{self.handle.key[1]}",
                                         "remote": f"{self.handle.key[2]}:{self.handle.key[3]}"}
                                        if self.handle else None),
                "status": self.status, "error": self.error}


class ControllerApp:
    """ingress-nginx in one controller pod."""

    name = "ingress-nginx"

    def __init__(self, cluster, iset: IngressSet, pod_key: str, seed: int = 0):
        self.cluster = cluster
        self.iset = iset
        self.pod_key = pod_key
        self.seed = seed
        self.log: list[ProxyRecord] = []

    def datagram(self, payload: bytes, src, dst, now: float):
        return None, "ingress-nginx serves no UDP here"

    # --- the client connection ------------------------------------------------
    def stream(self, conn: dict, data: bytes, now: float):
        conn["buf"] = conn.get("buf", b"") + data
        if conn.get("busy"):
            return b"", False, f"HTTP: {len(data)} bytes buffered while the previous request is proxied"
        if conn.get("closing"):
            return b"", False, "HTTP: data after the response that closes the connection: ignored"
        return self._next(conn, now)

    def _next(self, conn: dict, now: float):
        buf = conn["buf"]
        h: TcpHandle | None = conn.get("_handle")
        if h is not None:                 # (client ip, client port, controller ip, port)
            down = (h.key[2], h.key[3], h.key[0], h.key[1])
        else:
            down = (None, None, None, None)
        try:
            got = parse_request(buf)
        except HttpError as e:
            conn["buf"], conn["closing"] = b"", True
            rec = ProxyRecord(down, status=e.status, error=e.why, done=True, down=h, conn=conn)
            self.log.append(rec)
            rec.response = error_response(e.status, now)
            return rec.response.encode(), True, f"HTTP {e.status}: {e.why}; closing"
        if got is None:
            return b"", False, f"HTTP: {len(buf)} bytes buffered, request incomplete"
        req, used = got
        conn["buf"] = buf[used:]
        conn["n"] = conn.get("n", 0) + 1
        rec = ProxyRecord(down, req, down=h, conn=conn)
        self.log.append(rec)
        try:
            path = normalize_path(req.path)
        except HttpError as e:
            return self._local(rec, e.status, now, f"{req.request_line}: {e.why}", force_close=True)
        rec.route = route = self.iset.route(req.host, path)
        what = f"{req.method} {req.host or '(no host)'}{req.target if req.target.startswith('/') else path}"
        if route.backend is None:
            return self._local(rec, 404, now, f"{what}: {route.why}")
        rec.upstream = up = resolve_backend(self.cluster, route.backend)
        if up.problem:
            return self._local(rec, 503, now, f"{what}: {route.why}: {up.problem}")
        if h is None:                     # no socket layer behind us (the oracle's real sockets)
            return self._local(rec, 502, now, f"{what}: no socket context to open an upstream connection")
        pick = keyed_hash(self.seed, "ingress-upstream", self.pod_key, str(down[2]), down[3], str(down[0]),
                          down[1], conn["n"], seed_as_key=False) % len(up.endpoints)
        rec.endpoint = ep = up.endpoints[pick]
        data = self.upstream_request(req, down[0], down[3], rec)
        rec.handle = h.table.connect(down[2], ep.ip, ep.port, now, app=self, data=data, tag=rec,
                                     owner=f"{CONTROLLER_NAME} upstream")
        conn["busy"] = True
        return b"", False, (f"{what}: {route.why} -> {route.backend.describe()} -> endpoint "
                            f"{ep.ip}:{ep.port} ({ep.pod or 'no pod'}, {pick + 1} of "
                            f"{len(up.endpoints)}): connecting from {down[2]}:{rec.handle.key[1]}")

    def _local(self, rec: ProxyRecord, status: int, now: float, why: str, force_close: bool = False):
        """An answer the controller gives itself (default backend 404, 503, 502, 400)."""
        req = rec.request
        keep = req is not None and req.keep_alive and not force_close
        rec.status, rec.done = status, True
        rec.error = why if status != 404 else None
        rec.response = error_response(status, now, keep_alive=keep,
                                      head=req is not None and req.method == "HEAD")
        if not keep:
            rec.conn["closing"] = True
        src = "default backend" if status == 404 else "controller"
        return rec.response.encode(), not keep, f"{why} -> {status} from the {src}"

    def upstream_request(self, req: Request, client_ip, server_port: int, rec: ProxyRecord) -> bytes:
        """The request as ingress-nginx proxies it (proxy_set_header ... in nginx.conf)."""
        authority = req.authority or ""
        parts = (self.pod_key, str(client_ip), rec.downstream[1], len(self.log))
        rid = (f"{keyed_hash(self.seed, 'request-id', *parts, seed_as_key=False):016x}"
               f"{keyed_hash(self.seed, 'request-id-2', *parts, seed_as_key=False):016x}")
        h = Headers()
        h.add("Host", authority)
        h.add("X-Request-ID", rid)
        h.add("X-Real-IP", str(client_ip))
        h.add("X-Forwarded-For", str(client_ip))
        h.add("X-Forwarded-Host", authority)
        h.add("X-Forwarded-Port", str(server_port))
        h.add("X-Forwarded-Proto", "http")
        h.add("X-Forwarded-Scheme", "http")
        h.add("X-Scheme", "http")
        xff = req.headers.get_all("X-Forwarded-For")
        if xff:
            h.add("X-Original-Forwarded-For", ", ".join(xff))
        h.add("Connection", "close")
        for k, v in req.headers:
            if k.lower() not in DROPPED_REQUEST_HEADERS:
                h.add(k, v)
        if req.body or req.headers.get("Content-Length") is not None or \
                req.headers.get("Transfer-Encoding") is not None:
            h.add("Content-Length", str(len(req.body)))
        target = req.target if req.target.startswith("/") or req.target == "*" else \
            req.path + (f"?{req.query}" if req.query else "")
        return build_request(req.method, target, h.items, req.body, "HTTP/1.1")

    # --- the upstream connection ----------------------------------------------
    def on_upstream(self, uh: TcpHandle, data: bytes, now: float):
        rec: ProxyRecord = uh.tag
        if rec.done:
            return "late upstream data ignored"
        rec.buf += data
        return self._try_response(rec, now, eof=False)

    def on_closed(self, uh: TcpHandle, now: float):
        rec: ProxyRecord = uh.tag
        if not rec.done:
            self._try_response(rec, now, eof=True)

    def on_reset(self, uh: TcpHandle, why: str, now: float):
        rec: ProxyRecord = uh.tag
        if not rec.done:
            self._fail(rec, 502, f"upstream {uh.key[2]}:{uh.key[3]}: {why}", now)

    def _try_response(self, rec: ProxyRecord, now: float, eof: bool) -> str:
        try:
            got = parse_response(rec.buf, eof=eof, head_request=rec.request.method == "HEAD")
        except HttpError as e:
            return self._fail(rec, 502, e.why, now)
        if got is None:
            if eof:
                return self._fail(rec, 502, "upstream closed the connection without a response", now)
            return f"{len(rec.buf)} bytes of the upstream response buffered"
        resp, _ = got
        return self._relay(rec, resp, now)

    def _relay(self, rec: ProxyRecord, up: Response, now: float) -> str:
        keep = rec.request.keep_alive
        h = Headers([("Server", "nginx"), ("Date", http_date(now))])
        ctype = up.headers.get("Content-Type")
        if ctype is not None:
            h.add("Content-Type", ctype)
        h.add("Content-Length", str(len(up.body)))
        h.add("Connection", "keep-alive" if keep else "close")
        for k, v in up.headers:
            if k.lower() not in HIDDEN_RESPONSE_HEADERS and k.lower() != "content-type":
                h.add(k, v)
        body = b"" if rec.request.method == "HEAD" else up.body
        rec.response = Response("HTTP/1.1", up.status, up.reason, h, body)
        rec.status, rec.done = up.status, True
        return self._send_down(rec, rec.response, keep, now,
                               f"response {up.status} {up.reason} relayed to the client")

    def _fail(self, rec: ProxyRecord, status: int, why: str, now: float) -> str:
        keep = rec.request.keep_alive
        rec.status, rec.error, rec.done = status, why, True
        rec.response = error_response(status, now, keep_alive=keep)
        return self._send_down(rec, rec.response, keep, now, f"{why}: {status} to the client")

    def _send_down(self, rec: ProxyRecord, resp: Response, keep: bool, now: float, what: str) -> str:
        conn = rec.conn
        conn["busy"] = False
        if not keep:
            conn["closing"] = True
        if rec.down is not None:
            rec.down.send(resp.encode(), close=not keep, now=now)
            if keep and conn.get("buf"):        # a pipelined request waited
                out, close, _ = self._next(conn, now)
                if out or close:
                    rec.down.send(out, close=close, now=now)
        return what


# --- installing -----------------------------------------------------------------------

@dataclass
class IngressDeployment:
    """What install() put in place, for the CLI, the tour and tests."""

    iset: IngressSet
    controllers: list = field(default_factory=list)       # (Pod, ControllerApp)
    service: object = None                                 # the controller's Service
    backends: dict = field(default_factory=dict)           # "ns/name" -> (BackendApp, [ports])
    warnings: list[str] = field(default_factory=list)

    @property
    def lb_ip(self) -> IPv4Address | None:
        s = self.service
        return s.load_balancer_ips[0] if s is not None and s.load_balancer_ips else None

    @property
    def port(self) -> int:
        s = self.service
        return s.ports[0].port if s is not None and s.ports else 80

    def app_of(self, pod_key: str) -> ControllerApp | None:
        return next((a for p, a in self.controllers if p.key == pod_key), None)

    def records(self) -> list[ProxyRecord]:
        return [r for _, a in self.controllers for r in a.log]


def controller_pods(cluster) -> list:
    """ingress-nginx's controller pods: labelled app.kubernetes.io/name=ingress-nginx
    (and, when the label is there, app.kubernetes.io/component=controller)."""
    return [p for p in cluster.pods if p.labels.get(NAME_LABEL) == CONTROLLER_NAME
            and p.labels.get(COMPONENT_LABEL, "controller") == "controller"]


def controller_service(cluster, pods):
    """The Service selecting the controller pods (a LoadBalancer first)."""
    keys = {p.key for p in pods}
    found = [s for s in cluster.services if s.selector and any(
        p.namespace == s.namespace and all(p.labels.get(k) == v for k, v in s.selector.items())
        for p in pods)]
    found += [s for s in cluster.services if s not in found and any(e.pod in keys for e in s.endpoints)]
    found.sort(key=lambda s: (s.type != "LoadBalancer", not s.load_balancer_ips, s.namespace, s.name))
    return found[0] if found else None


RECOGNISED = (f"kdp recognises a controller by its pods' label {NAME_LABEL}={CONTROLLER_NAME}, "
              f"with {COMPONENT_LABEL}=controller when that label is set")


def no_controller(iset: IngressSet) -> str:
    """Why the Ingresses of iset go unserved when the cluster has no controller pod."""
    keys = [i.key for i in iset.ingresses]
    names = ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
    return (f"the cluster has no ingress-nginx controller pod, so Ingress{'es' * (len(keys) > 1)} "
            f"{names} {'are' if len(keys) > 1 else 'is'} not served and nothing answers HTTP for "
            f"{'their' if len(keys) > 1 else 'its'} hosts ({RECOGNISED})")


def no_lb_address(service, pods) -> str:
    """Why outside clients cannot reach the controller through a load balancer."""
    if service is None:
        return (f"no Service selects the ingress-nginx controller pods "
                f"({', '.join(p.key for p in pods)}): nothing outside the cluster reaches them")
    ports = ", ".join(f"{p.port}" + (f" (nodePort {p.node_port})" if p.node_port else "")
                      for p in service.ports)
    return (f"the ingress-nginx controller's Service {service.key} (type {service.type}, ports "
            f"{ports}) has no load balancer address (status.loadBalancer.ingress or "
            "spec.loadBalancerIP)")


def serving_warnings(cluster) -> list[str]:
    """What `kdp validate` warns about ingress: Ingresses no controller serves
    (no controller pod, or a class kdp does not model), a controller Service
    without a load balancer address, and backends that will answer 503."""
    if not cluster.ingresses and not cluster.ingress_classes:
        return []
    iset = from_cluster(cluster)
    pods = controller_pods(cluster)
    out = []
    if iset.ingresses and not pods:
        out += [f"Ingress {ing.key}: not served: the cluster has no ingress-nginx controller pod "
                f"({RECOGNISED})" for ing in iset.ingresses]
    out += [f"Ingress {key}: not served by ingress-nginx, the controller kdp models: {why}"
            for key, why in iset.ignored]
    if pods:
        service = controller_service(cluster, pods)
        if service is None or not service.load_balancer_ips:
            out.append(no_lb_address(service, pods) + ": its Ingresses' hosts do not resolve to it "
                       "for clients outside the cluster")
    return out + list(iset.warnings) + list(iset.conflicts) + check_backends(cluster, iset)


def _sockets(topo, pod):
    ns = topo.node_ns.get(pod.node) if pod.host_network else topo.pod_ns.get(pod.key)
    return ns.sockets if ns is not None else None


def install(topo, seed: int = 0) -> IngressDeployment | None:
    """ingress-nginx on the controller pods' HTTP ports (port 80 and ports named
    http), the HTTP backend on the ports that serve some Ingress backend.
    Decodes the cluster's Ingress objects (bad fields: ClusterInputError)."""
    cluster = topo.cluster
    pods = controller_pods(cluster)
    if not cluster.ingresses and not cluster.ingress_classes and not pods:
        return None
    iset = from_cluster(cluster)
    dep = IngressDeployment(iset, service=controller_service(cluster, pods))
    dep.warnings = list(iset.warnings) + list(iset.conflicts) + check_backends(cluster, iset)
    for pod in pods:
        socks = _sockets(topo, pod)
        if socks is None:
            continue
        app = ControllerApp(cluster, iset, pod.key, seed)
        ports = {p.port for p in pod.ports() if p.protocol == "TCP" and (p.port == 80 or p.name == "http")}
        for port in sorted(ports):
            lst = socks.listeners.get(("TCP", port))
            if lst is not None:
                socks.listen(port, "TCP", lst.owner, app)
        dep.controllers.append((pod, app))
    by_key = {p.key: p for p in cluster.pods}
    controllers = {p.key for p in pods}
    for ing in iset.ingresses:
        for b in ing.backends():
            for e in resolve_backend(cluster, b).endpoints:
                pod = by_key.get(e.pod) if e.pod else None
                if pod is None or pod.key in controllers:
                    continue
                socks = _sockets(topo, pod)
                lst = socks.listeners.get(("TCP", e.port)) if socks is not None else None
                if lst is None:
                    continue
                app, ports = dep.backends.get(pod.key) or (BackendApp(pod.key), [])
                if e.port not in ports:
                    ports.append(e.port)
                    socks.listen(e.port, "TCP", lst.owner, app)
                dep.backends[pod.key] = (app, ports)
    topo.ingress = dep
    return dep
