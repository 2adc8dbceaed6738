# k8s.ingressapi: networking.k8s.io/v1 Ingress and IngressClass as the API
# server validates them: the objects (backends, rules, paths with the spec's
# Exact/Prefix/ImplementationSpecific matching) and their decoding with precise
# problems at file, line and field path. The loader checks them here; what an
# ingress controller makes of them (class selection, merging, routing) is
# ingress.rules'.
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from ipaddress import ip_address

from . import names
from .load import Fields, RawObject, Report
from .model import Source

DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"          # deprecated, still honoured
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
