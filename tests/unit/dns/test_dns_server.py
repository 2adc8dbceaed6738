# Tests of dns.server: the CoreDNS app on bytes: response header and flags,
# FORMERR/NOTIMP/BADVERS/REFUSED, ignored responses and runts, TC when a UDP
# answer exceeds 512 bytes (or the EDNS size), EDNS echo, TCP length framing
# with queries split over segments, and random input never crashing it.
from __future__ import annotations

import struct

import pytest
from dns_helpers import ask, cluster
from hypothesis import given, settings
from hypothesis import strategies as st

from kdp.dns import wire
from kdp.dns.server import CoreDnsApp, ResolverApp
from kdp.dns.wire import Edns, Message, Question
from kdp.dns.zone import CoreDNS, Upstream

BIG = """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: big, namespace: data}
spec:
  replicas: 40
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec:
      containers: [{name: c, image: x, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: big, namespace: data}
spec:
  clusterIP: None
  selector: {app: big}
  ports: [{name: http, port: 80}]
"""


@pytest.fixture(scope="module")
def app():
    return CoreDnsApp(CoreDNS(cluster(extra=BIG)))


def test_response_header_mirrors_the_query(app):
    q = wire.query("web.default.svc.cluster.local", "A", 4242)
    q.cd = True
    raw, detail = app.respond(q.encode(), tcp=False)
    m = wire.decode(raw)
    assert (m.id, m.qr, m.opcode, m.rd, m.cd, m.aa, m.ra, m.tc) == (4242, True, 0, True, True, True, True, False)
    assert m.questions == q.questions and m.edns is None
    assert "NOERROR, 1 answer" in detail


def test_question_case_is_echoed(app):
    m = ask(app, "Web.DEFAULT.svc.cluster.local")
    assert m.questions[0].name == "Web.DEFAULT.svc.cluster.local." == m.answers[0].name


def test_nxdomain_message(app):
    m = ask(app, "nope.default.svc.cluster.local")
    assert m.rcode == wire.NXDOMAIN and m.flag_names() == ["qr", "aa", "rd"]
    assert [wire.type_name(r.rtype) for r in m.authority] == ["SOA"]


def test_malformed_query_gets_formerr_with_its_id(app):
    q = wire.query("web.default.svc.cluster.local", "A", 77).encode()
    raw, detail = app.respond(q[:-3], tcp=False)
    m = wire.decode(raw)
    assert (m.id, m.qr, m.rcode, m.questions) == (77, True, wire.FORMERR, [])
    assert "FORMERR" in detail


@pytest.mark.parametrize("counts", [(0, 0, 0, 0), (2, 0, 0, 0), (1, 2, 0, 0), (1, 0, 2, 0), (1, 0, 0, 3)])
def test_header_counts_checked_before_parsing(app, counts):
    raw = struct.pack("!HHHHHH", 5, 0x0100, *counts)
    m = wire.decode(app.respond(raw, tcp=False)[0])
    assert (m.id, m.rcode) == (5, wire.FORMERR)


@pytest.mark.parametrize("opcode", [wire.OP_IQUERY, wire.OP_STATUS, wire.OP_NOTIFY, wire.OP_UPDATE])
def test_other_opcodes_are_not_implemented(app, opcode):
    q = Message(9, opcode=opcode, questions=[Question("cluster.local.", wire.SOA_T)])
    m = wire.decode(app.respond(wire.encode(q), tcp=False)[0])
    assert (m.id, m.qr, m.opcode, m.rcode) == (9, True, opcode, wire.NOTIMP)


def test_responses_and_runts_are_not_answered(app):
    resp = Message(1, qr=True, questions=[Question("x.", wire.A)])
    assert app.respond(wire.encode(resp), tcp=False)[0] is None
    assert app.respond(b"kdp probe\n", tcp=False)[0] is None
    assert app.datagram(b"", None, None, 0.0)[0] is None


def test_edns_version_1_is_badvers(app):
    q = wire.query("web.default.svc.cluster.local", "A", 3, edns=Edns(1232, version=1))
    m = wire.decode(app.respond(q.encode(), tcp=False)[0])
    assert m.rcode == wire.BADVERS and m.edns is not None and m.answers == []


def test_other_classes_are_refused(app):
    q = Message(3, rd=True, questions=[Question("version.bind.", wire.TXT, wire.CLASS_CH)])
    assert wire.decode(app.respond(q.encode(), tcp=False)[0]).rcode == wire.REFUSED


def test_edns_is_echoed_with_the_clients_size_and_do_bit(app):
    m = ask(app, "web.default.svc.cluster.local", edns=Edns(1400, do=True))
    assert m.edns == Edns(1400, 0, 0, True, 0, ())


def test_udp_answer_over_512_bytes_without_edns_is_truncated(app):
    raw, detail = app.respond(wire.query("big.data.svc.cluster.local", "A", 1).encode(), tcp=False)
    m = wire.decode(raw)
    assert len(raw) <= 512 and m.tc and 0 < len(m.answers) < 40
    assert "TC" in detail


def test_edns_udp_size_is_honoured(app):
    q = lambda size: wire.query("big.data.svc.cluster.local", "A", 1, edns=Edns(size)).encode()  # noqa: E731
    raw, _ = app.respond(q(4096), tcp=False)
    m = wire.decode(raw)
    assert not m.tc and len(m.answers) == 40 and len(raw) > 512
    raw, _ = app.respond(q(600), tcp=False)
    m = wire.decode(raw)
    assert m.tc and len(raw) <= 600 and m.edns is not None
    raw, _ = app.respond(q(100), tcp=False)                           # below 512 counts as 512
    assert 400 < len(raw) <= 512


def test_srv_truncation_counts_the_additional_records(app):
    raw, _ = app.respond(wire.query("_http._tcp.big.data.svc.cluster.local", "SRV", 1).encode(), tcp=False)
    assert wire.decode(raw).tc


def tcp_frame(msg: bytes) -> bytes:
    return struct.pack("!H", len(msg)) + msg


def test_tcp_is_never_truncated_and_length_framed(app):
    conn: dict = {}
    out, close, detail = app.stream(conn, tcp_frame(wire.query("big.data.svc.cluster.local", "A", 8).encode()), 0.0)
    n = struct.unpack_from("!H", out)[0]
    assert len(out) == n + 2 and not close
    m = wire.decode(out[2:])
    assert not m.tc and len(m.answers) == 40 and m.id == 8


def test_tcp_query_split_over_segments_is_buffered(app):
    data = tcp_frame(wire.query("web.default.svc.cluster.local", "A", 11).encode())
    conn: dict = {}
    outs, details = [], []
    for i in range(len(data)):                                       # one byte per segment
        out, close, detail = app.stream(conn, data[i:i + 1], 0.0)
        outs.append(out)
        details.append(detail)
        assert not close
    assert all(o == b"" for o in outs[:-1]) and "buffered" in details[-2]
    m = wire.decode(outs[-1][2:])
    assert m.id == 11 and m.answers
    assert conn["dns_buf"] == b""


def test_two_tcp_queries_in_one_segment(app):
    a = tcp_frame(wire.query("web.default.svc.cluster.local", "A", 1).encode())
    b = tcp_frame(wire.query("nope.default.svc.cluster.local", "A", 2).encode())
    out, close, _ = app.stream({}, a + b[:5], 0.0)
    conn = {"dns_buf": b[:5]}
    first = wire.decode(out[2:])
    assert first.id == 1
    out2, _, _ = app.stream(conn, b[5:], 0.0)
    assert wire.decode(out2[2:]).rcode == wire.NXDOMAIN


def test_tcp_runt_closes_the_connection(app):
    out, close, _ = app.stream({}, tcp_frame(b"\x00\x01"), 0.0)
    assert out == b"" and close


def test_resolver_app_serves_only_the_upstream():
    r = ResolverApp(Upstream(cluster().config.dns_upstream))
    m = wire.decode(r.respond(wire.query("example.com", "A", 1).encode(), tcp=False)[0])
    assert m.rcode == wire.NOERROR and not m.aa and m.ra
    m = wire.decode(r.respond(wire.query("web.default.svc.cluster.local", "A", 1).encode(), tcp=False)[0])
    assert m.rcode == wire.NXDOMAIN


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_get_formerr_or_nothing_never_a_crash(app, raw):
    out, detail = app.respond(raw, tcp=False)
    if out is None:
        return
    m = wire.decode(out)
    assert m.qr
    if len(raw) >= 2:
        assert m.id == struct.unpack_from("!H", raw)[0]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 40))
def test_random_tcp_streams_never_crash(app, raw, cut):
    conn: dict = {}
    app.stream(conn, raw[:cut], 0.0)
    app.stream(conn, raw[cut:], 0.0)


parts = st.sampled_from(["web", "db", "db-0", "big", "default", "data", "kube-system", "svc", "pod",
                         "cluster", "local", "_http", "_tcp", "_pg", "10-244-0-2", "1-2-3", "dns",
                         "dns-version", "ns", "in-addr", "arpa", "10", "2", "0", "example", "com",
                         "WEB", "x\\.y", "\\255"])


@settings(max_examples=600, deadline=None)
@given(st.lists(parts, min_size=0, max_size=8), st.sampled_from(sorted(wire.TYPES.values()) + [99, 0]),
       st.booleans())
def test_any_question_gets_a_well_formed_answer(app, labels, qtype, edns):
    name = ".".join(labels) + "."
    q = wire.Message(1, rd=True, questions=[Question(name if labels else ".", qtype)],
                     edns=Edns(1232) if edns else None)
    raw, _ = app.respond(wire.encode(q), tcp=False)
    m = wire.decode(raw)
    assert m.qr and m.id == 1 and m.rcode in (wire.NOERROR, wire.NXDOMAIN, wire.SERVFAIL, wire.FORMERR)
    assert len(raw) <= (1232 if edns else 512)
