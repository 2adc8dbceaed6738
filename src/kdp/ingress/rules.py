# ingress.rules: networking.k8s.io/v1 Ingress and IngressClass as the API server
# validates them and ingress-nginx reads them: decoding with precise problems,
# which Ingresses belong to the controller (class), merging them into nginx
# `server`s per host the way ingress-nginx does, and routing one request
# (host, path) to a backend service port and on to its ready endpoints.
#
# Matching (the Ingress spec, as ingress-nginx implements it):
# - server: the request's host (lowercase, no port) picks the server of the rule
#   with exactly that host, else the wildcard rule `*.suffix` whose `*` covers
#   exactly one label, else the catch-all server `_` that holds the rules
#   without host (nginx's default_server) - so a rule without host matches any
#   host no rule names.
# - path: Exact compares the whole path (case-sensitive); Prefix compares
#   `/`-separated elements, trailing slash ignored (`/foo/bar` matches
#   `/foo/bar/baz`, not `/foo/barbaz`); ImplementationSpecific is treated as
#   Prefix. The longest matching path wins; at equal length Exact beats Prefix.
#   The request path is nginx's $uri (percent-decoded, `//` merged, dot segments
#   resolved).
# - no path matches: the host's default, which is the spec.defaultBackend of the
#   first Ingress that named the host (ingress-nginx), else, for the catch-all
#   server, the defaultBackend of the first Ingress without rules; else the
#   controller's own default backend (404).
# Merging: Ingresses of the controller's class are taken oldest first
# (metadata.creationTimestamp; missing counts as oldest), ties by namespace/name.
# When two Ingresses define the same host + path + type, the first in that order
# wins and the other's path is ignored (reported in `conflicts`), as ingress-nginx does.
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from ipaddress import IPv4Address, ip_address

from ..errors import ClusterInputError, KdpError
from ..k8s import names
from ..k8s.load import Fields, RawObject, Report
from ..k8s.model import Cluster, Endpoint, Service, ServicePort, Source

CONTROLLER = "k8s.io/ingress-nginx"                       # ingress-nginx's --controller-class
DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"          # deprecated, still honoured
ANNOTATION_CLASS = "nginx"                                # ingress-nginx's --ingress-class
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CATCH_ALL = "_"
_WILDCARD_LABEL = re.compile(r"^[\w-]+$")                 # ingress-nginx: ~^(?<subdomain>[\w-]+)\.suffix$


# --- the objects ---------------------------------------------------------------------

@dataclass(frozen=True)
class Backend:
    namespace: str
    service: str | None
    port_number: int | None = None
    port_name: str | None = None
    resource: str | None = None            # "Kind/name" of a resource backend (not served)

    @property
    def port(self) -> int | str | None:
        return self.port_number if self.port_number is not None else self.port_name

    def describe(self) -> str:
        if self.service is None:
            return f"resource {self.resource} (in {self.namespace})"
        return f"service {self.namespace}/{self.service}:{self.port}"

    def as_dict(self) -> dict:
        return {"namespace": self.namespace, "service": self.service,
                "port": self.port, "resource": self.resource}


@dataclass(frozen=True)
class IngressPath:
    path: str                              # as written ("" for an ImplementationSpecific catch-all)
    path_type: str                         # Exact | Prefix | ImplementationSpecific
    backend: Backend
    ingress: str                           # NS/NAME of the Ingress
    field: str                             # spec.rules[0].http.paths[1]

    @property
    def exact(self) -> bool:
        return self.path_type == "Exact"

    @property
    def norm(self) -> str:
        """The path compared: Prefix/ImplementationSpecific without its trailing slash."""
        p = self.path or "/"
        return p if self.exact else (p.rstrip("/") or "/")

    @property
    def length(self) -> int:
        return len(self.norm)

    def matches(self, path: str) -> bool:
        if self.exact:
            return path == self.path
        if self.norm == "/":
            return path.startswith("/")
        want = self.norm.split("/")
        got = (path.rstrip("/") or "/").split("/")
        return got[:len(want)] == want

    def describe(self) -> str:
        return f"{self.path or '/'} ({self.path_type})"


@dataclass
class IngressRule:
    host: str | None
    paths: list[IngressPath]
    field: str


@dataclass
class Ingress:
    namespace: str
    name: str
    class_name: str | None                 # spec.ingressClassName
    annotation_class: str | None           # metadata.annotations[kubernetes.io/ingress.class]
    default_backend: Backend | None
    rules: list[IngressRule]
    created: datetime | None = None
    source: Source = field(default_factory=Source)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def order(self) -> tuple:
        return (self.created or EPOCH, self.namespace, self.name)

    def backends(self) -> list[Backend]:
        out = [self.default_backend] if self.default_backend else []
        return out + [p.backend for r in self.rules for p in r.paths]


@dataclass
class IngressClass:
    name: str
    controller: str
    is_default: bool = False
    source: Source = field(default_factory=Source)


# --- decoding -----------------------------------------------------------------------

def _backend(f: Fields, namespace: str) -> Backend | None:
    if not isinstance(f.raw(), dict):
        f.error((), "required field is missing" if not f.has() else "must be a mapping (a backend)")
        return None
    has_svc, has_res = f.has("service"), f.has("resource")
    if has_svc and has_res:
        f.error(("resource",), "cannot set both service and resource backends")
        return None
    if not has_svc and not has_res:
        f.error((), "one backend type must be specified: service or resource")
        return None
    if has_res:
        kind, name = f.str("resource", "kind", required=True), f.str("resource", "name", required=True)
        if kind and name:
            f.warn(("resource",), f"resource backend {kind}/{name}: ingress-nginx serves only "
                   "service backends; requests routed here get 503")
            return Backend(namespace, None, resource=f"{kind}/{name}")
        return None
    sf = f.at("service")
    f.map("service")
    name = sf.str("name", required=True)
    sf.check(("name",), name, names.dns1035_label)
    if not isinstance(sf.raw("port"), dict):
        sf.error(("port",), "port name or number is required" if not sf.has("port")
                 else "must be a mapping with `number` or `name`")
        return None
    has_num, has_name = sf.has("port", "number"), sf.has("port", "name")
    if has_num and has_name:
        sf.error(("port",), "cannot set both port name and port number")
        return None
    if not has_num and not has_name:
        sf.error(("port",), "port name or number is required")
        return None
    number = sf.int("port", "number", lo=1, hi=65535) if has_num else None
    pname = sf.str("port", "name") if has_name else None
    sf.check(("port", "name"), pname, names.iana_svc_name)
    if name is None or (number is None and pname is None):
        return None
    return Backend(namespace, name, number, pname)


def _host(f: Fields, host: str | None) -> str | None:
    if host is None:
        return None
    if host == "":
        return None
    try:
        ip_address(host)
    except ValueError:
        pass
    else:
        f.error(("host",), f"{host!r} must be a DNS name, not an IP address")
        return None
    if ":" in host:
        f.error(("host",), f"{host!r} must be a DNS name without a port")
        return None
    if host.startswith("*."):
        msg = names.dns1123_subdomain(host[2:])
        if msg:
            f.error(("host",), f"a wildcard host must be `*.` followed by a DNS subdomain: {msg}")
            return None
    elif "*" in host:
        f.error(("host",), f"{host!r}: a wildcard is only allowed as the first label (`*.foo.com`)")
        return None
    elif msg := names.dns1123_subdomain(host):
        f.error(("host",), msg)
        return None
    return host


def _path(f: Fields, ns: str, ing: str, where: str) -> IngressPath | None:
    if not isinstance(f.raw(), dict):
        f.error((), "must be a mapping (a path)")
        return None
    path = f.str("path", default="")
    ptype = f.str("pathType", required=True)
    ok = True
    if ptype is not None and ptype not in PATH_TYPES:
        f.error(("pathType",), f"unsupported value {ptype!r}: must be one of {', '.join(PATH_TYPES)}")
        ok = False
    if path and not path.startswith("/"):
        f.error(("path",), f"{path!r} must be an absolute path (start with /)")
        ok = False
    elif ptype in ("Exact", "Prefix"):
        if not path:
            f.error(("path",), f"must be an absolute path (start with /) for pathType {ptype}")
            ok = False
        else:
            for bad in ("//", "/./", "/../", "%2f", "%2F"):
                if bad in path:
                    f.error(("path",), f"{path!r} must not contain {bad!r}")
                    ok = False
                    break
            else:
                for bad in ("/..", "/."):
                    if path.endswith(bad):
                        f.error(("path",), f"{path!r} must not end with {bad!r}")
                        ok = False
                        break
    backend = _backend(f.at("backend"), ns)
    if not ok or ptype is None or backend is None:
        return None
    return IngressPath(path, ptype, backend, ing, where)


def _timestamp(f: Fields) -> datetime | None:
    text = f.str("metadata", "creationTimestamp")
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        f.error(("metadata", "creationTimestamp"), f"{text!r} is not an RFC 3339 time "
                "(like 2024-05-01T12:00:00Z)")
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def decode_ingress(obj: RawObject, report: Report) -> Ingress | None:
    """One Ingress, every bad field a problem at its file, line and path."""
    f = Fields(obj, report)
    ns = obj.namespace or "default"
    f.check(("metadata", "name"), obj.name, names.dns1123_subdomain)
    before = len(report.problems)
    spec = f.map("spec", required=True)
    class_name = f.str("spec", "ingressClassName")
    f.check(("spec", "ingressClassName"), class_name, names.dns1123_subdomain)
    annotations = f.strmap("metadata", "annotations")
    default = _backend(f.at("spec", "defaultBackend"), ns) if f.has("spec", "defaultBackend") else None
    rules = []
    for i, rf in enumerate(f.items("spec", "rules")):
        if not isinstance(rf.raw(), dict):
            rf.error((), "must be a mapping (a rule)")
            continue
        host = _host(rf, rf.str("host"))
        paths = []
        if rf.has("http"):
            rf.map("http")
            plist = rf.list("http", "paths", required=True)
            if isinstance(rf.raw("http", "paths"), list) and not plist:
                rf.error(("http", "paths"), "must have at least one path")
            for j, pf in enumerate(rf.items("http", "paths")):
                p = _path(pf, ns, f"{ns}/{obj.name}", f"spec.rules[{i}].http.paths[{j}]")
                if p is not None:
                    paths.append(p)
        rules.append(IngressRule(host, paths, f"spec.rules[{i}]"))
    if isinstance(spec, dict) and not f.has("spec", "rules") and not f.has("spec", "defaultBackend") \
            and len(report.problems) == before:
        f.error(("spec",), "either `defaultBackend` or `rules` must be specified")
    if f.list("spec", "tls"):
        f.warn(("spec", "tls"), "TLS is not modelled: the controller serves plain HTTP on port 80 only")
    created = _timestamp(f)
    if len(report.problems) != before:
        return None
    return Ingress(ns, obj.name, class_name, annotations.get(CLASS_ANNOTATION), default, rules,
                   created, obj.source)


def decode_ingress_class(obj: RawObject, report: Report) -> IngressClass | None:
    f = Fields(obj, report)
    before = len(report.problems)
    f.check(("metadata", "name"), obj.name, names.dns1123_subdomain)
    f.map("spec", required=True)
    ctl = f.str("spec", "controller", required=True)
    if ctl is not None:
        if len(ctl) > 250:
            f.error(("spec", "controller"), "must be no more than 250 characters")
        prefix, slash, path = ctl.partition("/")
        if not slash or not path or names.dns1123_subdomain(prefix):
            f.error(("spec", "controller"), f"{ctl!r} must be a domain-prefixed path, "
                    "like k8s.io/ingress-nginx")
    annotations = f.strmap("metadata", "annotations")
    default = annotations.get(DEFAULT_CLASS)
    if default is not None and default not in ("true", "false"):
        f.error(("metadata", "annotations", DEFAULT_CLASS), f"must be \"true\" or \"false\", got {default!r}")
    if len(report.problems) != before or ctl is None:
        return None
    return IngressClass(obj.name, ctl, default == "true", obj.source)


def decode_objects(objects: list[RawObject], report: Report) -> tuple[list[Ingress], list[IngressClass]]:
    """The Ingresses and IngressClasses among objects (with their file and line)."""
    ings, classes = [], []
    for obj in objects:
        if obj.kind == "Ingress":
            if (i := decode_ingress(obj, report)) is not None:
                ings.append(i)
        elif obj.kind == "IngressClass":
            if (c := decode_ingress_class(obj, report)) is not None:
                classes.append(c)
    return ings, classes


def _raw(kind: str, body: dict) -> RawObject:
    """A RawObject for a body the loader kept as a plain dict (no lines left)."""
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    ns = meta.get("namespace") if kind == "Ingress" else None
    return RawObject(kind, str(body.get("apiVersion", "")), str(meta.get("name", "")),
                     ns if isinstance(ns, str) else ("default" if kind == "Ingress" else None),
                     body, "<input>", None)


# --- the controller's view ---------------------------------------------------------

@dataclass
class Server:
    """An nginx server block: one per host named by a rule, `_` for the rest."""

    host: str
    paths: list[IngressPath] = field(default_factory=list)
    root: Backend | None = None            # no path matched: this, else the controller's 404
    root_from: str | None = None           # the Ingress that set root

    @property
    def wildcard(self) -> bool:
        return self.host.startswith("*.")


@dataclass
class Route:
    """Where one request goes."""

    host: str
    path: str                              # the normalised path matched on
    server: str                            # the server's host (`_` for the catch-all)
    match: IngressPath | None
    backend: Backend | None                # None: the controller's default backend (404)
    why: str

    @property
    def ingress(self) -> str | None:
        if self.match is not None:
            return self.match.ingress
        return None

    def as_dict(self) -> dict:
        m = self.match
        return {"host": self.host, "path": self.path, "server": self.server,
                "ingress": m.ingress if m else None,
                "rule_path": (m.path or "/") if m else None,
                "path_type": m.path_type if m else None,
                "backend": self.backend.as_dict() if self.backend else None,
                "default_backend": self.backend is None, "why": self.why}


@dataclass
class Upstream:
    """A backend resolved to the service's ready endpoints."""

    backend: Backend
    service: Service | None
    port: ServicePort | None
    endpoints: list[Endpoint]
    problem: str | None = None             # why there is nothing to send to (503)


@dataclass
class IngressSet:
    """What the controller serves: its classes, its Ingresses in merge order, the servers."""

    controller: str
    classes: list[IngressClass]
    ingresses: list[Ingress]               # the controller's, oldest first
    ignored: list[tuple[str, str]]         # (NS/NAME, why) of Ingresses of other classes
    servers: dict[str, Server]
    conflicts: list[str]
    warnings: list[str] = field(default_factory=list)

    def hosts(self) -> list[str]:
        return [h for h in self.servers if h != CATCH_ALL]

    def serves_host(self, host: str) -> bool:
        """Does a rule name this host (exactly or by wildcard)?"""
        return self.server_for(host).host != CATCH_ALL

    def server_for(self, host: str) -> Server:
        host = host.lower().rstrip(".")
        s = self.servers.get(host)
        if s is not None and host != CATCH_ALL:
            return s
        first, _, rest = host.partition(".")
        if rest and _WILDCARD_LABEL.match(first):
            w = self.servers.get(f"*.{rest}")
            if w is not None:
                return w
        return self.servers[CATCH_ALL]

    def route(self, host: str, path: str) -> Route:
        """The backend of a request for host (no port) and path (normalised)."""
        host = host.lower().rstrip(".")
        srv = self.server_for(host)
        best, best_key = None, None
        for i, p in enumerate(srv.paths):
            if p.matches(path):
                key = (p.length, p.exact, -i)
                if best_key is None or key > best_key:
                    best, best_key = p, key
        sname = "catch-all server `_` (rules without host)" if srv.host == CATCH_ALL else \
            f"server {srv.host}"
        if best is not None:
            return Route(host, path, srv.host, best, best.backend,
                         f"{sname}: {path} matches {best.describe()} of Ingress {best.ingress} "
                         f"({best.field}), the longest match")
        if srv.root is not None:
            return Route(host, path, srv.host, None, srv.root,
                         f"{sname}: no path matches {path}: defaultBackend of Ingress {srv.root_from}")
        return Route(host, path, srv.host, None, None,
                     f"{sname}: no path matches {path}: the controller's default backend (404)")


def owned(ing: Ingress, mine: set[str], defaults: list[IngressClass], controller: str) -> str | None:
    """None when the controller serves ing, else why not."""
    if ing.class_name is not None:
        if ing.class_name in mine:
            return None
        return f"ingressClassName {ing.class_name!r} is not a class of {controller}"
    if ing.annotation_class is not None:
        if ing.annotation_class in mine or ing.annotation_class == ANNOTATION_CLASS:
            return None
        return f"annotation {CLASS_ANNOTATION}={ing.annotation_class!r} names another controller"
    if any(c.controller == controller for c in defaults) and len(defaults) == 1:
        return None
    return "no ingressClassName and no default IngressClass of this controller"


def build_set(ingresses: list[Ingress], classes: list[IngressClass],
              controller: str = CONTROLLER) -> IngressSet:
    mine = {c.name for c in classes if c.controller == controller}
    defaults = [c for c in classes if c.is_default]
    ours, ignored = [], []
    for ing in ingresses:
        why = owned(ing, mine, defaults, controller)
        if why is None:
            ours.append(ing)
        else:
            ignored.append((ing.key, why))
    ours.sort(key=lambda i: i.order)
    servers = {CATCH_ALL: Server(CATCH_ALL)}
    conflicts: list[str] = []
    for ing in ours:                        # the catch-all's default: first Ingress without rules
        if ing.default_backend is not None and not ing.rules:
            if servers[CATCH_ALL].root is None:
                servers[CATCH_ALL].root, servers[CATCH_ALL].root_from = ing.default_backend, ing.key
            else:
                conflicts.append(f"Ingress {ing.key}: defaultBackend ignored: the catch-all "
                                 f"server already uses Ingress {servers[CATCH_ALL].root_from}'s")
    for ing in ours:                        # servers: the first Ingress naming a host sets its default
        for rule in ing.rules:
            host = rule.host or CATCH_ALL
            if host not in servers:
                servers[host] = Server(host, root=ing.default_backend,
                                       root_from=ing.key if ing.default_backend else None)
    for ing in ours:
        for rule in ing.rules:
            srv = servers[rule.host or CATCH_ALL]
            for p in rule.paths:
                same = next((q for q in srv.paths if q.exact == p.exact and q.norm == p.norm), None)
                if same is not None:
                    conflicts.append(f"Ingress {p.ingress} {p.field}: path {p.describe()} for host "
                                     f"{srv.host} ignored: Ingress {same.ingress} ({same.field}) "
                                     "defines it first (older, or first by namespace/name)")
                    continue
                srv.paths.append(p)
    return IngressSet(controller, [c for c in classes if c.controller == controller], ours,
                      ignored, servers, conflicts)


def from_cluster(cluster: Cluster, controller: str = CONTROLLER) -> IngressSet:
    """Decode the cluster's Ingress and IngressClass objects (kept raw by the
    loader) and merge the controller's; bad fields raise ClusterInputError."""
    report = Report()
    objs = [_raw("IngressClass", b) for b in cluster.ingress_classes] + \
           [_raw("Ingress", b) for b in cluster.ingresses]
    ings, classes = decode_objects(objs, report)
    if report.problems:
        raise ClusterInputError(report.problems)
    iset = build_set(ings, classes, controller)
    iset.warnings = list(dict.fromkeys(report.warnings))
    return iset


def resolve_backend(cluster: Cluster, backend: Backend) -> Upstream:
    """The service port a backend names and its ready endpoints, sorted."""
    if backend.service is None:
        return Upstream(backend, None, None, [], f"{backend.describe()}: not a service backend")
    try:
        svc = cluster.service(backend.namespace, backend.service)
    except KeyError:
        return Upstream(backend, None, None, [], f"service {backend.namespace}/{backend.service} "
                        "does not exist")
    if svc.type == "ExternalName":
        return Upstream(backend, svc, None, [], f"service {svc.key} is ExternalName "
                        f"({svc.external_name}): not modelled as an ingress backend")
    if backend.port_number is not None:
        sp = next((p for p in svc.ports if p.port == backend.port_number and p.protocol == "TCP"), None)
    else:
        sp = next((p for p in svc.ports if p.name == backend.port_name and p.protocol == "TCP"), None)
    if sp is None:
        return Upstream(backend, svc, None, [], f"service {svc.key} has no TCP port {backend.port!r}")
    eps = sorted((e for e in svc.endpoints_for(sp) if e.ready),
                 key=lambda e: (int(IPv4Address(e.ip)), e.port))
    if not eps:
        return Upstream(backend, svc, sp, [], f"service {svc.key} port {backend.port} has no ready endpoints")
    return Upstream(backend, svc, sp, eps)


def check_backends(cluster: Cluster, iset: IngressSet) -> list[str]:
    """Warnings for backends that will answer 503 (what ingress-nginx logs)."""
    out = []
    for ing in iset.ingresses:
        for b in dict.fromkeys(ing.backends()):
            up = resolve_backend(cluster, b)
            if up.problem:
                out.append(f"Ingress {ing.key}: {b.describe()}: {up.problem} (requests get 503)")
    return out


class IngressError(KdpError):
    """An ingress request cannot be made as asked."""
