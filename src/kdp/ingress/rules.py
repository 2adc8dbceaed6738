# ingress.rules: Ingress and IngressClass as ingress-nginx reads them (the API
# objects and their decoding are k8s.ingressapi's): which Ingresses belong to
# the controller (class), merging them into nginx `server`s per host the way
# ingress-nginx does, and routing one request (host, path) to a backend
# service port and on to its ready endpoints.
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
from ipaddress import IPv4Address

from ..errors import ClusterInputError, KdpError
from ..k8s.ingressapi import CLASS_ANNOTATION, Backend, Ingress, IngressClass, IngressPath, decode_objects
from ..k8s.load import RawObject, Report
from ..k8s.model import Cluster, Endpoint, Service, ServicePort

CONTROLLER = "k8s.io/ingress-nginx"                       # ingress-nginx's --controller-class
ANNOTATION_CLASS = "nginx"                                # ingress-nginx's --ingress-class
CATCH_ALL = "_"
_WILDCARD_LABEL = re.compile(r"^[\w-]+$")                 # ingress-nginx: ~^(?<subdomain>[\w-]+)\.suffix$


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
    every: list[Ingress] = field(default_factory=list)   # all the cluster's Ingresses, as given

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
                      ignored, servers, conflicts, every=list(ingresses))


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
