# ingress.rules and k8s.ingressapi: Ingress/IngressClass decoding and
# validation, which Ingresses the controller serves, merging, and the matching
# rules of the Ingress spec (exact and wildcard hosts, Exact/Prefix/
# ImplementationSpecific paths, longest match, Exact over Prefix, defaultBackend,
# the controller's 404), then backends resolved to endpoints with named and
# numbered ports.
from __future__ import annotations

from ipaddress import IPv4Address as A

import pytest

from kdp.errors import ClusterInputError
from kdp.ingress.http import normalize_path
from kdp.ingress.rules import CATCH_ALL, build_set, from_cluster, resolve_backend
from kdp.k8s import demo_cluster, demo_text, load_cluster_text
from kdp.k8s.ingressapi import Backend, IngressPath, decode_objects
from kdp.k8s.load import Report, parse_text
from kdp.k8s.model import Cluster, ClusterConfig

NGINX = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "nginx"},
         "spec": {"controller": "k8s.io/ingress-nginx"}}
OTHER = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "traefik"},
         "spec": {"controller": "traefik.io/ingress-controller"}}


def path(p, svc, port=80, ptype="Prefix"):
    key = "number" if isinstance(port, int) else "name"
    out = {"pathType": ptype, "backend": {"service": {"name": svc, "port": {key: port}}}}
    if p is not None:
        out["path"] = p
    return out


def rule(host, *paths):
    r = {"http": {"paths": list(paths)}}
    if host is not None:
        r["host"] = host
    return r


def ing(name, *rules, ns="default", cls="nginx", default=None, created=None, annotations=None):
    meta = {"name": name, "namespace": ns}
    if created:
        meta["creationTimestamp"] = created
    if annotations:
        meta["annotations"] = annotations
    spec = {}
    if cls:
        spec["ingressClassName"] = cls
    if rules:
        spec["rules"] = list(rules)
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def iset(*ingresses, classes=(NGINX,)):
    return from_cluster(Cluster(ClusterConfig(), ingresses=list(ingresses), ingress_classes=list(classes)))


def to(s, host, p):
    """The service a request for host and path goes to (None: the controller's 404)."""
    r = s.route(host, normalize_path(p))
    return r.backend.service if r.backend else None


# --- the spec's path matching table (kubernetes.io/docs/concepts/services-networking/ingress) ---

@pytest.mark.parametrize("ptype, rule_path, request_path, match", [
    ("Prefix", "/", "/anything/at/all", True),
    ("Exact", "/foo", "/foo", True),
    ("Exact", "/foo", "/bar", False),
    ("Exact", "/foo", "/foo/", False),
    ("Exact", "/foo/", "/foo", False),
    ("Exact", "/Foo", "/foo", False),                      # case-sensitive
    ("Prefix", "/foo", "/foo", True),
    ("Prefix", "/foo", "/foo/", True),
    ("Prefix", "/foo/", "/foo", True),                     # trailing slash ignored
    ("Prefix", "/foo/", "/foo/", True),
    ("Prefix", "/aaa/bb", "/aaa/bbb", False),
    ("Prefix", "/aaa/bbb", "/aaa/bbb", True),
    ("Prefix", "/aaa/bbb/", "/aaa/bbb", True),
    ("Prefix", "/aaa/bbb", "/aaa/bbb/", True),
    ("Prefix", "/aaa/bbb", "/aaa/bbb/ccc", True),
    ("Prefix", "/aaa/bbb", "/aaa/bbbxyz", False),          # element-wise, not a string prefix
    ("Prefix", "/foo/bar", "/foo/bar/baz", True),
    ("Prefix", "/foo/bar", "/foo/barbaz", False),
    ("Prefix", "/aaa", "/ccc", False),
    ("ImplementationSpecific", "/foo", "/foo/bar", True),  # treated as Prefix
    ("ImplementationSpecific", "/foo", "/foobar", False),
    ("ImplementationSpecific", "", "/x", True),             # an empty path is `/`
])
def test_spec_path_table(ptype, rule_path, request_path, match):
    p = IngressPath(rule_path, ptype, Backend("default", "s", 80), "default/i", "spec")
    assert p.matches(request_path) is match


def test_longest_prefix_wins():
    s = iset(ing("i", rule("h.com", path("/", "root"), path("/aaa", "aaa"), path("/aaa/bbb", "bbb"))))
    assert to(s, "h.com", "/aaa/ccc") == "aaa"
    assert to(s, "h.com", "/aaa/bbb") == "bbb"
    assert to(s, "h.com", "/aaa/bbb/c") == "bbb"
    assert to(s, "h.com", "/ccc") == "root"
    assert to(s, "h.com", "/aaabbb") == "root"


def test_exact_beats_prefix_at_equal_length_but_not_a_longer_prefix():
    s = iset(ing("i", rule("h.com", path("/foo", "prefix"), path("/foo", "exact", ptype="Exact"),
                           path("/foo/bar", "longer"))))
    assert to(s, "h.com", "/foo") == "exact"
    assert to(s, "h.com", "/foo/") == "prefix"
    assert to(s, "h.com", "/foo/x") == "prefix"
    assert to(s, "h.com", "/foo/bar/x") == "longer"
    s = iset(ing("i", rule("h.com", path("/foo/", "prefix-slash"), path("/foo", "exact", ptype="Exact"))))
    assert to(s, "h.com", "/foo") == "exact"        # /foo/ counts as /foo: equal length, Exact wins


def test_exact_longer_than_prefix_wins_and_exact_only_matches_whole_path():
    s = iset(ing("i", rule("h.com", path("/a", "a"), path("/a/b/c", "abc", ptype="Exact"))))
    assert to(s, "h.com", "/a/b/c") == "abc"
    assert to(s, "h.com", "/a/b/c/d") == "a"


def test_request_path_is_normalised_like_nginx_uri():
    s = iset(ing("i", rule("h.com", path("/", "root"), path("/api", "api"))))
    for p in ("/api", "//api", "/%61pi/x", "/x/../api/", "/./api"):
        assert to(s, "h.com", p) == "api", p
    assert to(s, "h.com", "/api?x=1".split("?")[0]) == "api"


def test_hosts_exact_and_case_insensitive_with_port_stripped_by_the_caller():
    s = iset(ing("i", rule("foo.bar.com", path("/", "foo")), rule("bar.com", path("/", "bar"))))
    assert to(s, "foo.bar.com", "/") == "foo"
    assert to(s, "FOO.bar.COM", "/") == "foo"
    assert to(s, "bar.com.", "/") == "bar"          # trailing dot
    assert to(s, "baz.com", "/") is None            # no rule: the controller's 404


def test_wildcard_host_matches_exactly_one_label():
    s = iset(ing("i", rule("*.foo.com", path("/", "wild"))))
    assert to(s, "bar.foo.com", "/") == "wild"
    assert to(s, "baz.bar.foo.com", "/") is None
    assert to(s, "foo.com", "/") is None
    assert to(s, ".foo.com", "/") is None
    assert s.serves_host("x.foo.com") and not s.serves_host("foo.com")


def test_exact_host_beats_wildcard():
    s = iset(ing("i", rule("*.foo.com", path("/", "wild")), rule("api.foo.com", path("/", "api"))))
    assert to(s, "api.foo.com", "/") == "api"
    assert to(s, "www.foo.com", "/") == "wild"


def test_rule_without_host_matches_any_host_not_named_by_a_rule():
    s = iset(ing("i", rule(None, path("/", "any")), rule("named.com", path("/named", "named"))))
    assert to(s, "whatever.example", "/x") == "any"
    assert to(s, "", "/x") == "any"                 # HTTP/1.0 without Host
    assert to(s, "named.com", "/named") == "named"
    r = s.route("named.com", "/other")              # ingress-nginx: the host's server, not `_`
    assert r.backend is None and r.server == "named.com"


def test_default_backend_of_an_ingress_without_rules_is_the_catch_all():
    s = iset(ing("fallback", default="catchall"), ing("i", rule("h.com", path("/app", "app"))))
    assert to(s, "unknown.com", "/") == "catchall"
    assert s.servers[CATCH_ALL].root_from == "default/fallback"
    assert to(s, "h.com", "/app") == "app"
    assert to(s, "h.com", "/other") is None          # the host's own default: the controller's 404


def test_default_backend_of_an_ingress_with_rules_covers_its_hosts():
    s = iset(ing("i", rule("h.com", path("/app", "app")), default="hostdefault"))
    assert to(s, "h.com", "/elsewhere") == "hostdefault"
    assert to(s, "h.com", "/app/x") == "app"
    r = s.route("other.com", "/")
    assert r.backend is None and "404" in r.why


def test_no_match_and_no_default_is_the_controllers_404():
    s = iset(ing("i", rule("h.com", path("/app", "app", ptype="Exact"))))
    r = s.route("h.com", "/app/x")
    assert r.backend is None and r.match is None and "default backend (404)" in r.why


def test_several_ingresses_are_merged_per_host():
    s = iset(ing("web", rule("shop.com", path("/", "web"))),
             ing("api", rule("shop.com", path("/api", "api")), ns="backend"))
    assert to(s, "shop.com", "/api/items") == "api"
    assert to(s, "shop.com", "/about") == "web"
    r = s.route("shop.com", "/api")
    assert r.match.ingress == "backend/api" and r.backend.namespace == "backend"


def test_conflicting_paths_the_oldest_ingress_wins():
    s = iset(ing("young", rule("h.com", path("/x", "young")), created="2024-06-01T00:00:00Z"),
             ing("old", rule("h.com", path("/x", "old")), created="2023-01-01T00:00:00Z"))
    assert to(s, "h.com", "/x") == "old"
    assert len(s.conflicts) == 1 and "default/young" in s.conflicts[0] and "default/old" in s.conflicts[0]


def test_conflicting_paths_without_timestamps_first_by_namespace_then_name():
    s = iset(ing("b", rule("h.com", path("/x", "from-b"))), ing("a", rule("h.com", path("/x/", "from-a"))),
             ing("a", rule("h.com", path("/x", "from-zz-a")), ns="zz"))
    assert to(s, "h.com", "/x") == "from-a"          # default/a < default/b < zz/a; /x/ == /x for Prefix
    assert len(s.conflicts) == 2


def test_exact_and_prefix_same_path_do_not_conflict():
    s = iset(ing("a", rule("h.com", path("/x", "p"))), ing("b", rule("h.com", path("/x", "e", ptype="Exact"))))
    assert not s.conflicts and to(s, "h.com", "/x") == "e" and to(s, "h.com", "/x/y") == "p"


def test_only_the_controllers_class_is_served():
    s = iset(ing("mine", rule("a.com", path("/", "a"))),
             ing("theirs", rule("b.com", path("/", "b")), cls="traefik"),
             ing("ghost", rule("c.com", path("/", "c")), cls="nope"),
             ing("classless", rule("d.com", path("/", "d")), cls=None),
             ing("annotated", rule("e.com", path("/", "e")), cls=None,
                 annotations={"kubernetes.io/ingress.class": "nginx"}),
             classes=(NGINX, OTHER))
    assert [i.name for i in s.ingresses] == ["annotated", "mine"]
    assert {k for k, _ in s.ignored} == {"default/theirs", "default/ghost", "default/classless"}
    assert to(s, "b.com", "/") is None and to(s, "e.com", "/") == "e"


def test_a_default_ingress_class_takes_classless_ingresses():
    default = {**NGINX, "metadata": {"name": "nginx", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}}}
    s = iset(ing("classless", rule("d.com", path("/", "d")), cls=None), classes=(default, OTHER))
    assert to(s, "d.com", "/") == "d"


# --- decoding: precise problems -------------------------------------------------------

def problems(*bodies, classes=(NGINX,)):
    with pytest.raises(ClusterInputError) as e:
        iset(*bodies, classes=classes)
    return {(p.kind, p.name, p.field): p.message for p in e.value.problems}


@pytest.mark.parametrize("paths, field, text", [
    ([{"path": "/x", "backend": {"service": {"name": "s", "port": {"number": 80}}}}],
     "spec.rules[0].http.paths[0].pathType", "required"),
    ([path("/x", "s", ptype="Regex")], "spec.rules[0].http.paths[0].pathType", "unsupported value"),
    ([path("x", "s")], "spec.rules[0].http.paths[0].path", "absolute path"),
    ([path(None, "s", ptype="Exact")], "spec.rules[0].http.paths[0].path", "absolute path"),
    ([path("/a//b", "s")], "spec.rules[0].http.paths[0].path", "must not contain '//'"),
    ([path("/a/..", "s")], "spec.rules[0].http.paths[0].path", "must not end with '/..'"),
    ([path("/x", "S_bad")], "spec.rules[0].http.paths[0].backend.service.name", "RFC 1035"),
    ([path("/x", "s", 0)], "spec.rules[0].http.paths[0].backend.service.port.number", "out of range"),
    ([path("/x", "s", "Not-A-Name")], "spec.rules[0].http.paths[0].backend.service.port.name", "port name"),
    ([{"path": "/x", "pathType": "Prefix", "backend": {"service": {"name": "s"}}}],
     "spec.rules[0].http.paths[0].backend.service.port", "port name or number is required"),
    ([{"path": "/x", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {
        "number": 80, "name": "http"}}}}],
     "spec.rules[0].http.paths[0].backend.service.port", "cannot set both"),
    ([{"path": "/x", "pathType": "Prefix", "backend": {}}],
     "spec.rules[0].http.paths[0].backend", "one backend type"),
    ([{"path": "/x", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}},
                                                         "resource": {"kind": "Bucket", "name": "b"}}}],
     "spec.rules[0].http.paths[0].backend.resource", "cannot set both"),
    ([], "spec.rules[0].http.paths", "at least one path"),
])
def test_bad_paths_are_precise_problems(paths, field, text):
    body = ing("bad", {"host": "h.com", "http": {"paths": paths}})
    found = problems(body)
    assert ("Ingress", "bad", field) in found, found
    assert text in found[("Ingress", "bad", field)]


@pytest.mark.parametrize("host, text", [
    ("10.0.0.1", "not an IP address"),
    ("foo.*.com", "first label"),
    ("*", "first label"),
    ("Foo.com", "RFC 1123"),
    ("foo.com:80", "without a port"),
])
def test_bad_hosts(host, text):
    found = problems(ing("bad", rule(host, path("/", "s"))))
    assert text in found[("Ingress", "bad", "spec.rules[0].host")]


def test_an_ingress_needs_rules_or_a_default_backend():
    assert "either `defaultBackend` or `rules`" in problems(ing("empty"))[("Ingress", "empty", "spec")]


def test_bad_creation_timestamp_and_ingress_class():
    found = problems(ing("t", rule("h.com", path("/", "s")), created="yesterday"),
                     classes=({"kind": "IngressClass", "apiVersion": "networking.k8s.io/v1",
                               "metadata": {"name": "x"}, "spec": {"controller": "nginx"}},))
    assert "RFC 3339" in found[("Ingress", "t", "metadata.creationTimestamp")]
    assert "domain-prefixed path" in found[("IngressClass", "x", "spec.controller")]
    found = problems(classes=({"kind": "IngressClass", "apiVersion": "networking.k8s.io/v1",
                               "metadata": {"name": "x"}, "spec": {}},))
    assert "required" in found[("IngressClass", "x", "spec.controller")]


def test_problems_carry_file_and_line_when_decoded_from_the_loader():
    text = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  rules:
  - host: shop.example
    http:
      paths:
      - path: relative
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
"""
    report = Report()
    ings, _ = decode_objects(parse_text("in.yaml", text, report), report)
    assert ings == []
    (p,) = report.problems
    assert (p.file, p.line, p.namespace, p.name, p.field) == (
        "in.yaml", 9, "shop", "web", "spec.rules[0].http.paths[0].path")


def test_emulator_build_reports_bad_ingresses():
    from kdp.emulator import Emulator
    bad = demo_text() + """
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: default}
spec:
  ingressClassName: nginx
  rules: [{host: 1.2.3.4, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: nginx, port: {number: 80}}}}]}}]
"""
    with pytest.raises(ClusterInputError) as e:
        Emulator(load_cluster_text(bad))
    assert any(p.field == "spec.rules[0].host" and p.name == "broken" for p in e.value.problems)


# --- backends: named and numbered ports, endpoints ------------------------------------------

def test_backends_resolve_to_ready_endpoints_with_target_ports():
    c = demo_cluster()
    by_number = resolve_backend(c, Backend("backend", "service-a", 80))
    assert by_number.problem is None and {e.port for e in by_number.endpoints} == {8080}
    assert len(by_number.endpoints) == 2
    pods = {p.ip for p in c.pods if p.labels.get("app") == "service-a"}
    assert {e.ip for e in by_number.endpoints} == pods
    by_name = resolve_backend(c, Backend("default", "nginx", port_name="http"))
    assert by_name.problem is None and len(by_name.endpoints) == 3
    assert {e.port for e in by_name.endpoints} == {80}
    ips = [e.ip for e in by_name.endpoints]
    assert ips == sorted(ips, key=lambda a: int(A(a)))        # a stable order to hash into


@pytest.mark.parametrize("backend, text", [
    (Backend("backend", "service-a", 8080), "has no TCP port 8080"),
    (Backend("default", "nginx", port_name="https"), "has no TCP port 'https'"),
    (Backend("default", "nope", 80), "does not exist"),
    (Backend("backend", "nginx", 80), "does not exist"),      # only the Ingress's own namespace
    (Backend("default", None, resource="Bucket/b"), "not a service backend"),
])
def test_unresolvable_backends_explain_why(backend, text):
    up = resolve_backend(demo_cluster(), backend)
    assert up.endpoints == [] and text in up.problem


def test_demo_ingresses():
    from kdp.ingress.rules import from_cluster as fc
    s = fc(demo_cluster())
    assert [i.key for i in s.ingresses] == ["backend/shop-api", "default/shop"]
    assert s.hosts() == ["shop.example.com"] and not s.conflicts and not s.ignored
    assert to(s, "shop.example.com", "/api/items") == "service-a"
    assert to(s, "shop.example.com", "/apix") == "nginx"
    assert to(s, "shop.example.com", "/") == "nginx"
    assert to(s, "other.example.com", "/") is None


def test_build_set_is_order_independent():
    bodies = [ing("a", rule("h.com", path("/x", "a"))), ing("b", rule("h.com", path("/x", "b"))),
              ing("c", rule("h.com", path("/y", "c")))]
    one = iset(*bodies)
    two = iset(*reversed(bodies))
    assert [(p.path, p.ingress) for p in one.servers["h.com"].paths] == \
        [(p.path, p.ingress) for p in two.servers["h.com"].paths]
    assert build_set([], []).route("x", "/").backend is None
