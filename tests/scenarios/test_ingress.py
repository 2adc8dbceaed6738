# The ingress controller end to end in the demo cluster, as packets: an outside
# client's HTTP request reaches ingress-nginx through the cloud load balancer
# and kube-proxy's DNAT, the controller routes it by host and path, connects
# from its own pod IP straight to a backend pod IP (no ClusterIP, no NAT),
# forwards the request with X-Forwarded-* and relays the backend's answer; TCP
# handshakes, a request split over two segments, FIN both ways; the default
# backend's 404, 503 and 400; then `kdp http` and the tour's stop.
from __future__ import annotations

import argparse
import json
from ipaddress import IPv4Address as A

import pytest

from kdp import cli_http as http_cli
from kdp import wire
from kdp.emulator import Emulator
from kdp.errors import UsageError
from kdp.ingress.client import http_request
from kdp.ingress.http import parse_response
from kdp.k8s import demo_text, load_cluster_text

LB_IP = A("20.50.60.80")
CLIENT = "ext/198.51.100.20"
CLIENT_IP = A("198.51.100.20")
URL = "http://shop.example.com/api/items"


@pytest.fixture
def emu():
    return Emulator.demo()


def controller(emu):
    return next(p for p in emu.cluster.pods if p.namespace == "ingress-nginx")


def pods(emu, app):
    return {p.ip: p for p in emu.cluster.pods if p.labels.get("app") == app}


def syns_at(ex, ns_prefix):
    """SYNs (no ACK) received on the eth0 of namespaces starting with ns_prefix."""
    return [p for d, direction, p in ex.frames() if direction == "in" and d.name == "eth0"
            and d.namespace.name.startswith(ns_prefix) and isinstance(p.l4, wire.TCP)
            and p.l4.flags & (wire.SYN | wire.ACK) == wire.SYN]


def test_outside_request_reaches_the_controller_through_the_lb_and_kube_proxy(emu):
    ex = http_request(emu, CLIENT, URL)
    ctl = controller(emu)
    assert ex.status == 200 and ex.address == LB_IP and "ingress host" in ex.how
    client = ex.connection("client")
    assert client.served_by == f"pod/ingress-nginx/{ctl.name}"
    syn = client.segments[0]
    assert syn.flags == "S" and syn.sent == f"{CLIENT_IP}:{ex.client[1]} > {LB_IP}:80"
    assert syn.path == ["ext", "edge", f"node/{ctl.node}", f"pod/ingress-nginx/{ctl.name}"]
    assert syn.received == f"{CLIENT_IP}:{ex.client[1]} > {ctl.ip}:80"        # DNAT, client IP kept
    assert syn.nat.startswith(f"dst {LB_IP}:80 -> {ctl.ip}:80 at node/{ctl.node}")
    hops = ex.steps[0][1].hops
    lb = [h for h in hops if h.component == "underlay" and h.action == "balance"]
    assert lb and f"node {ctl.node}" in lb[0].detail and "1/3 healthy" in lb[0].detail
    assert any("KUBE-EXT-" in h.detail and "=> match" in h.detail for h in hops)
    # the controller saw the client's own address (externalTrafficPolicy Local)
    (rec,) = ex.records
    assert rec.downstream[:2] == (CLIENT_IP, ex.client[1]) and rec.downstream[2] == ctl.ip


def test_the_controller_connects_from_its_pod_ip_straight_to_a_backend_pod(emu):
    ex = http_request(emu, CLIENT, URL)
    ctl = controller(emu)
    backends = pods(emu, "service-a")
    (rec,) = ex.records
    assert rec.endpoint.ip in backends and rec.endpoint.port == 8080
    syns = syns_at(ex, "pod/backend/")
    assert len(syns) == 1
    syn = syns[0]
    assert syn.ip.src == ctl.ip and syn.ip.dst in backends and syn.l4.dport == 8080
    assert syn.l4.sport == rec.handle.key[1] and 32768 <= syn.l4.sport < 61000
    opts = syn.l4.options
    assert opts[:4] == bytes.fromhex("020405b4")                                # Linux's SYN options
    cluster_ip = emu.cluster.service("backend", "service-a").cluster_ip
    up = ex.connection("upstream")
    assert up.local == f"{ctl.ip}:{syn.l4.sport}" and up.remote == f"{syn.ip.dst}:8080"
    assert all(s.nat is None for s in up.segments)                             # no NAT at all
    assert not any(p.ip.dst == cluster_ip or p.ip.src == cluster_ip
                   for _, _, p in ex.frames() if p.ip is not None)             # never the ClusterIP
    assert up.served_by == f"pod/backend/{backends[syn.ip.dst].name}"


def test_forwarded_headers_and_the_body_naming_the_backend_pod(emu):
    ex = http_request(emu, CLIENT, URL, headers=[("X-Forwarded-For", "203.0.113.9")])
    (rec,) = ex.records
    pod = emu.cluster.pod("backend", rec.endpoint.pod.split("/")[1])
    body = ex.response.body.decode()
    assert body.startswith(f"pod backend/{pod.name}\nrequest: GET /api/items HTTP/1.1\n")
    for line in (f"x-forwarded-for: {CLIENT_IP}", f"x-real-ip: {CLIENT_IP}",
                 "x-forwarded-host: shop.example.com", "x-forwarded-proto: http",
                 "x-forwarded-port: 80", "x-original-forwarded-for: 203.0.113.9",
                 "host: shop.example.com"):
        assert line in body.splitlines(), line
    served = emu.topology.ingress.backends[pod.key][0].served[-1]
    assert dict((k.lower(), v) for k, v in served["headers"])["x-forwarded-for"] == str(CLIENT_IP)
    h = ex.response.headers
    assert h.get("Server") == "nginx" and h.get("X-Pod") == pod.key and h.get("Connection") == "keep-alive"
    assert int(h.get("Content-Length")) == len(ex.response.body)


def test_paths_route_to_their_services(emu):
    nginx, svc_a = pods(emu, "nginx"), pods(emu, "service-a")
    for path, group in (("/", nginx), ("/api", svc_a), ("/api/", svc_a), ("/api/v1/x", svc_a),
                        ("/apix", nginx), ("/shop/api", nginx)):
        ex = http_request(emu, CLIENT, f"http://shop.example.com{path}")
        (rec,) = ex.records
        assert ex.status == 200 and rec.endpoint.ip in group, path
        assert ex.response.body.decode().startswith(f"pod {group[rec.endpoint.ip].namespace}/"), path


def test_unknown_host_gets_the_default_backends_404_and_no_upstream(emu):
    ex = http_request(emu, CLIENT, f"http://{LB_IP}/", headers=[("Host", "nope.example.org")])
    assert ex.status == 404 and b"<center><h1>404 Not Found</h1></center>" in ex.response.body
    assert ex.connection("upstream") is None and not syns_at(ex, "pod/backend/") \
        and not syns_at(ex, "pod/default/")
    (rec,) = ex.records
    assert rec.route.backend is None and "default backend (404)" in rec.route.why
    ex = http_request(emu, CLIENT, f"http://{LB_IP}/")                          # Host: the IP
    assert ex.status == 404


def test_the_request_is_split_and_buffered_and_both_sides_close(emu):
    ex = http_request(emu, CLIENT, URL)
    assert len(ex.request_segments) == 2 and sum(ex.request_segments) == len(ex.request.raw)
    assert [n for n, _ in ex.steps] == ["handshake", "request 1/2", "request 2/2", "close"]
    segs = [(s.direction, s.flags, s.length) for s in ex.connection("client").segments]
    first, second = ex.request_segments
    assert segs[:7] == [("->", "S", 0), ("<-", "S.", 0), ("->", ".", 0), ("->", "P.", first),
                        ("<-", ".", 0), ("->", "P.", second), ("<-", ".", 0)]     # only an ACK after 1/2
    assert segs[-4:] == [("->", ".", 0), ("->", "F.", 0), ("<-", "F.", 0), ("->", ".", 0)]
    up = [(s.direction, s.flags) for s in ex.connection("upstream").segments]
    assert up[:4] == [("->", "S"), ("<-", "S."), ("->", "."), ("->", "P.")]
    assert ("<-", "F.") in up and up[-2:] == [("->", "F."), ("<-", ".")]        # FIN both ways
    for ns in emu.topology.namespaces.values():                                 # nothing left open
        assert ns.sockets is None or not ns.sockets.open_connections(), ns.name


def test_connection_close_makes_the_controller_close_first(emu):
    ex = http_request(emu, CLIENT, URL, headers=[("Connection", "close")])
    assert ex.status == 200 and ex.response.headers.get("Connection") == "close"
    segs = [(s.direction, s.flags) for s in ex.connection("client").segments]
    # the response, the controller's FIN, the client ACKs both, then closes its side
    assert segs[-6:] == [("<-", "P."), ("<-", "F."), ("->", "."), ("->", "."), ("->", "F."), ("<-", ".")]
    for ns in emu.topology.namespaces.values():
        assert ns.sockets is None or not ns.sockets.open_connections(), ns.name


def test_endpoint_choice_is_deterministic_and_spreads(emu):
    again = Emulator.demo()
    picks = set()
    for _ in range(12):
        a, b = http_request(emu, CLIENT, URL), http_request(again, CLIENT, URL)
        assert a.records[0].endpoint == b.records[0].endpoint and a.response.body == b.response.body
        picks.add(a.records[0].endpoint.ip)
    assert picks == set(pods(emu, "service-a"))


def test_a_pod_reaches_the_ingress_host_through_kube_proxy_without_the_cloud_lb(emu):
    ex = http_request(emu, "pod/default/client", "http://shop.example.com/api")
    client_ip = emu.cluster.pod("default", "client").ip
    assert ex.status == 200 and f"x-forwarded-for: {client_ip}" in ex.response.body.decode()
    assert not any(h.action == "balance" for _, o in ex.steps for h in o.hops)


def test_a_pod_resolves_cluster_names_by_dns_and_reaches_the_backend_app_directly(emu):
    ex = http_request(emu, "pod/default/client", "http://nginx.default/x")
    assert ex.resolution is not None and ex.resolution.ok
    assert ex.address == emu.cluster.service("default", "nginx").cluster_ip
    assert ex.status == 200 and ex.response.headers.get("Server") == "kdp-backend"
    assert ex.records == [] and ex.connection("upstream") is None


def raw_exchange(emu, payload: bytes):
    """A client socket on the outside sending payload to the LB; what came back."""
    ext = emu.namespace("ext")
    got = []

    class Reader:
        def on_upstream(self, h, data, now):
            got.append(data)

    h = ext.sockets.connect(CLIENT_IP, LB_IP, 80, 0.0, app=Reader(), auto_close=False)
    for p in ext.sockets.flush():
        emu.datapath.originate(ext, p, 0.0)
    h.send(payload)
    for p in ext.sockets.flush():
        emu.datapath.originate(ext, p, 0.0)
    return h, b"".join(got)


def test_a_malformed_request_gets_400_and_the_controller_closes(emu):
    h, data = raw_exchange(emu, b"\x16\x03\x01garbage that is not HTTP\r\n\r\n")
    resp, _ = parse_response(data)
    assert resp.status == 400 and resp.headers.get("Connection") == "close"
    assert h.state == "CLOSE_WAIT"                      # the controller's FIN arrived


def test_a_backend_without_endpoints_gets_503_and_a_resource_backend_too():
    extra = """
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  selector: {app: nobody}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: empty, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - host: empty.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: empty, port: {name: http}}}}
  - host: "*.wild.example.com"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: nginx, port: {number: 80}}}}
"""
    emu = Emulator(load_cluster_text(demo_text() + extra))
    dep = emu.topology.ingress
    assert any("no ready endpoints" in w for w in dep.warnings)
    ex = http_request(emu, CLIENT, "http://empty.example.com/")
    assert ex.status == 503 and ex.connection("upstream") is None
    assert "no ready endpoints" in ex.records[0].error
    ok = http_request(emu, CLIENT, "http://a.wild.example.com/")
    assert ok.status == 200 and ok.address == LB_IP
    with pytest.raises(UsageError):                    # two labels: no rule names it, no DNS
        http_request(emu, CLIENT, "http://a.b.wild.example.com/")
    miss = http_request(emu, CLIENT, f"http://{LB_IP}/", headers=[("Host", "a.b.wild.example.com")])
    assert miss.status == 404


def test_refused_upstream_connection_is_a_502():
    extra = """
---
apiVersion: v1
kind: Service
metadata: {name: closed, namespace: default}
spec:
  selector: {app: nginx}
  ports: [{name: other, port: 81, targetPort: 81}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: closed, namespace: default}
spec:
  ingressClassName: nginx
  rules: [{host: closed.example.com, http: {paths: [{path: /, pathType: Prefix,
           backend: {service: {name: closed, port: {number: 81}}}}]}}]
"""
    emu = Emulator(load_cluster_text(demo_text() + extra))
    ex = http_request(emu, CLIENT, "http://closed.example.com/")
    assert ex.status == 502 and "connection refused" in ex.records[0].error
    up = [(s.direction, s.flags) for s in ex.connection("upstream").segments]
    assert up == [("->", "S"), ("<-", "R.")]


def test_the_demo_wiring():
    emu = Emulator.demo()
    dep = emu.topology.ingress
    ctl = controller(emu)
    assert dep.lb_ip == LB_IP and dep.service.key == "ingress-nginx/ingress-nginx-controller"
    assert dep.service.external_traffic_policy == "Local"
    assert [p.key for p, _ in dep.controllers] == [ctl.key]
    lst = emu.namespace(f"pod/ingress-nginx/{ctl.name}").sockets.listeners[("TCP", 80)]
    assert lst.app.name == "ingress-nginx"
    assert set(dep.backends) == {p.key for p in emu.cluster.pods if p.labels.get("app") in ("nginx", "service-a")}
    a_pod = next(p for p in emu.cluster.pods if p.labels.get("app") == "service-a")
    socks = emu.namespace(f"pod/backend/{a_pod.name}").sockets.listeners
    assert socks[("TCP", 8080)].app.name == "http-backend" and socks[("TCP", 9090)].app.name == "echo"
    assert not dep.warnings


def test_http_command_text_and_json(capsys):
    parser = argparse.ArgumentParser()
    http_cli.add_parser(parser.add_subparsers())
    a = parser.parse_args(["http", "demo", "--from", CLIENT, "--url", URL, "-H", "X-Test: 1"])
    assert a.func(a) == 0
    out = capsys.readouterr().out
    assert "> GET /api/items HTTP/1.1" in out and "< HTTP/1.1 200 OK" in out
    assert "== client connection" in out and "== controller -> backend connection" in out
    assert "as if the public DNS pointed there" in out and "cloud load balancer" in out
    a = parser.parse_args(["http", "demo", "--from", CLIENT, "--url", URL, "--json"])
    assert a.func(a) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["response"]["status"] == 200 and d["address"] == str(LB_IP)
    assert [c["name"] for c in d["connections"]] == ["client", "upstream"]
    assert d["ingress"][0]["route"]["ingress"] == "backend/shop-api"
    assert d["ingress"][0]["route"]["path_type"] == "Prefix"
    assert [s["step"] for s in d["steps"]] == ["handshake", "request 1/2", "request 2/2", "close"]
    with pytest.raises(UsageError):
        http_cli._headers(["no-colon"])
    with pytest.raises(UsageError):
        http_request(Emulator.demo(), CLIENT, "https://shop.example.com/")


def test_the_tour_has_an_ingress_stop():
    from kdp.tour import run_tour
    lines = []
    assert run_tour(echo=lines.append) == 0
    text = "\n".join(lines)
    ingress = text.split("== Ingress:")[1].split("== DNS:")[0]
    lb = text.split("== Ingress:")[0].rsplit("== ", 1)[1]
    assert lb.split(".", 1)[1].strip().startswith("LoadBalancer")            # right after the LB stop
    assert f"kdp http demo --from {CLIENT} --url {URL}" in ingress
    assert "HTTP/1.1 200 OK: pod backend/service-a-" in ingress
