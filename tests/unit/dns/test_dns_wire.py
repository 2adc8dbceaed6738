# Tests of dns.wire: the RFC 1035 codec (every record type, name compression
# and decompression with loop protection, EDNS0), text output, truncation, and
# malformed input raising DnsFormatError only (hypothesis on random bytes).
from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdp.dns import wire
from kdp.dns.wire import MX, RR, SOA, SRV, DnsFormatError, Edns, Message, Question


def full_message() -> Message:
    zone = "cluster.local."
    return Message(
        0xBEEF, qr=True, aa=True, rd=True, ra=True, rcode=wire.NXDOMAIN,
        questions=[Question("web.default.svc.cluster.local.", wire.A)],
        answers=[RR("web.default.svc.cluster.local.", wire.A, 5, IPv4Address("10.2.0.7")),
                 RR("web.default.svc.cluster.local.", wire.AAAA, 5, IPv6Address("fd00::7")),
                 RR("a.default.svc.cluster.local.", wire.CNAME, 5, "web.default.svc.cluster.local."),
                 RR("7.0.2.10.in-addr.arpa.", wire.PTR, 5, "web.default.svc.cluster.local."),
                 RR(zone, wire.NS, 5, "ns.dns.cluster.local."),
                 RR("_http._tcp.web.default.svc.cluster.local.", wire.SRV_T, 5,
                    SRV(0, 100, 80, "web.default.svc.cluster.local.")),
                 RR("example.com.", wire.MX_T, 300, MX(10, "mail.example.com.")),
                 RR("dns-version.cluster.local.", wire.TXT, 28800, (b"1.1.0", b"two \"words\"")),
                 RR("x.example.com.", 99, 60, b"\x01\x02\x03")],
        authority=[RR(zone, wire.SOA_T, 5, SOA("ns.dns.cluster.local.", "hostmaster.cluster.local.",
                                                1, 7200, 1800, 86400, 5))],
        additional=[RR("ns.dns.cluster.local.", wire.A, 5, IPv4Address("10.2.0.10"))],
        edns=Edns(1232, do=True, options=((10, b"cookie12"),)))


def test_every_record_type_round_trips():
    m = full_message()
    back = wire.decode(wire.encode(m))
    assert back == m
    assert wire.encode(back) == wire.encode(m)


def test_header_fields_and_counts():
    raw = wire.encode(full_message())
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", raw)
    assert (ident, qd, an, ns, ar) == (0xBEEF, 1, 9, 1, 2)          # OPT counts as additional
    assert flags == 0x8000 | 0x0400 | 0x0100 | 0x0080 | wire.NXDOMAIN


def test_names_are_compressed_on_output_and_decompressed_on_input():
    m = Message(1, questions=[Question("web.default.svc.cluster.local.", wire.A)],
                answers=[RR("web.default.svc.cluster.local.", wire.A, 5, IPv4Address("10.2.0.7")),
                         RR("db.default.svc.cluster.local.", wire.A, 5, IPv4Address("10.2.0.8"))])
    raw = wire.encode(m)
    assert raw[12 + 31 + 4:12 + 31 + 6] == b"\xc0\x0c"          # the answer's owner points at the question
    assert b"\x02db\xc0\x10" in raw                                # db + pointer to default.svc...
    assert raw.count(b"cluster") == 1
    assert wire.decode(raw) == m


def test_compression_is_case_insensitive_but_keeps_the_case_written_first():
    m = Message(1, questions=[Question("WEB.Default.svc.cluster.local.", wire.A)],
                answers=[RR("web.default.svc.cluster.local.", wire.A, 5, IPv4Address("10.2.0.7"))])
    back = wire.decode(wire.encode(m))
    assert back.answers[0].name == "WEB.Default.svc.cluster.local."    # as the pointer leads
    assert wire.canonical(back.answers[0].name) == "web.default.svc.cluster.local."


def test_srv_target_is_not_compressed_but_can_be_pointed_at():
    m = Message(1, answers=[RR("_h._tcp.web.ns.svc.cluster.local.", wire.SRV_T, 5,
                               SRV(0, 100, 80, "web.ns.svc.cluster.local.")),
                            RR("web.ns.svc.cluster.local.", wire.A, 5, IPv4Address("10.2.0.1"))])
    raw = wire.encode(m)
    srv_rdata = raw.index(b"\x00\x00\x00\x64\x00\x50") + 6
    assert raw[srv_rdata:srv_rdata + 4] == b"\x03web"              # written out in full
    assert wire.decode(raw) == m


def test_pointer_loops_and_forward_pointers_are_rejected():
    header = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0)
    with pytest.raises(DnsFormatError, match="backwards"):          # points at itself
        wire.decode(header + b"\xc0\x0c\x00\x01\x00\x01")
    with pytest.raises(DnsFormatError, match="backwards"):          # label then pointer to its start
        wire.decode(header + b"\x01a\xc0\x0c\x00\x01\x00\x01")
    with pytest.raises(DnsFormatError, match="backwards"):          # forward pointer
        wire.decode(header + b"\xc0\x0e\x01a\x00\x00\x01\x00\x01")
    two = struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0)                   # a -> b -> a
    with pytest.raises(DnsFormatError):
        wire.decode(two + b"\x01a\xc0\x12\x00\x01\x00\x01" + b"\x01b\xc0\x0c\x00\x01\x00\x01")


@pytest.mark.parametrize("body, why", [
    (b"\x40abc", "label type"), (b"\x80abc", "label type"), (b"\x05ab", "past the end"),
    (b"\x01a", "past the end"), (b"\xc0", "pointer"),
])
def test_bad_labels(body, why):
    with pytest.raises(DnsFormatError, match=why):
        wire.decode(struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + body)


def test_names_over_255_octets_are_rejected_both_ways():
    long = ".".join(["a" * 63] * 4) + "."
    with pytest.raises(DnsFormatError, match="255"):
        wire.name_labels(long)
    raw = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) \
        + b"\x00\x00\x01\x00\x01"
    with pytest.raises(DnsFormatError, match="255"):
        wire.decode(raw)
    with pytest.raises(DnsFormatError, match="63"):
        wire.name_labels("a" * 64 + ".com")
    with pytest.raises(DnsFormatError, match="empty label"):
        wire.name_labels("a..com")


def test_escaped_labels_round_trip():
    name = "we\\.ird\\032label\\255.example."
    labels = wire.name_labels(name)
    assert labels == (b"we.ird label\xff", b"example")
    assert wire.labels_to_name(labels) == name
    m = Message(2, questions=[Question(name, wire.TXT)])
    assert wire.decode(wire.encode(m)).questions[0].name == name


@pytest.mark.parametrize("raw, why", [
    (b"\x00" * 11, "shorter than a DNS header"),
    (struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x00\x00\x01", "past the end"),
    (struct.pack("!HHHHHH", 1, 0, 0, 1, 0, 0) + b"\x00\x00\x01\x00\x01\x00\x00\x00\x05\x00\x05abcd",
     "past the end"),
    (struct.pack("!HHHHHH", 1, 0, 0, 1, 0, 0) + b"\x00\x00\x01\x00\x01\x00\x00\x00\x05\x00\x03abc",
     "not 4"),
    (struct.pack("!HHHHHH", 1, 0, 0, 0, 0, 0) + b"junk", "trailing"),
    (struct.pack("!HHHHHH", 1, 0, 0, 1, 0, 0) + b"\x00\x00\x05\x00\x01\x00\x00\x00\x05\x00\x04\x01a\x00\x00",
     "extra octets"),
    (struct.pack("!HHHHHH", 1, 0, 0, 1, 0, 0) + b"\x00\x00\x10\x00\x01\x00\x00\x00\x05\x00\x03\x05ab",
     "TXT"),
])
def test_malformed_messages(raw, why):
    with pytest.raises(DnsFormatError, match=why):
        wire.decode(raw)


def test_edns_opt_record_is_parsed():
    q = wire.query("example.com", "A", 9, edns=Edns(4096, do=True, options=((3, b""), (10, b"12345678"))))
    back = wire.decode(wire.encode(q))
    assert back.edns == Edns(4096, 0, 0, True, 0, ((3, b""), (10, b"12345678")))
    assert back.additional == []


def test_extended_rcode_lives_in_the_opt_record():
    m = Message(3, qr=True, rcode=wire.BADVERS, edns=Edns(1232))
    raw = wire.encode(m)
    assert raw[3] & 0xF == 0                                       # BADVERS = 16: header bits 0
    assert wire.decode(raw).rcode == wire.BADVERS
    with pytest.raises(DnsFormatError, match="OPT"):
        wire.encode(Message(3, rcode=wire.BADVERS))


def test_opt_rules():
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    hdr = lambda an, ar: struct.pack("!HHHHHH", 1, 0, 0, an, 0, ar)    # noqa: E731
    with pytest.raises(DnsFormatError, match="more than one OPT"):
        wire.decode(hdr(0, 2) + opt + opt)
    with pytest.raises(DnsFormatError, match="outside the additional"):
        wire.decode(hdr(1, 0) + opt)
    with pytest.raises(DnsFormatError, match="root"):
        wire.decode(hdr(0, 1) + b"\x01a" + opt)
    with pytest.raises(DnsFormatError, match="option"):
        wire.decode(hdr(0, 1) + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x02\x00\x0a")


def test_text_like_dig():
    text = full_message().to_text()
    assert ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 48879" in text
    assert ";; flags: qr aa rd ra; QUERY: 1, ANSWER: 9, AUTHORITY: 1, ADDITIONAL: 2" in text
    assert "; EDNS: version: 0, flags: do; udp: 1232" in text
    assert ";web.default.svc.cluster.local.\t\tIN\tA" in text
    assert "_http._tcp.web.default.svc.cluster.local.\t5\tIN\tSRV\t0 100 80 web.default.svc.cluster.local." in text
    assert ("cluster.local.\t5\tIN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local. "
            "1 7200 1800 86400 5") in text
    assert 'dns-version.cluster.local.\t28800\tIN\tTXT\t"1.1.0" "two \\"words\\""' in text
    assert "x.example.com.\t60\tIN\tTYPE99\t\\# 3 010203" in text


def test_truncate_keeps_what_fits_and_sets_tc():
    m = Message(4, qr=True, questions=[Question("many.ns.svc.cluster.local.", wire.A)],
                answers=[RR("many.ns.svc.cluster.local.", wire.A, 5, IPv4Address(f"10.244.0.{i}"))
                         for i in range(1, 61)])
    assert len(wire.encode(m)) > 512
    cut, raw = wire.truncate(m, 512)
    assert cut.tc and len(raw) <= 512 and 0 < len(cut.answers) < 60
    assert cut.answers == m.answers[:len(cut.answers)]
    assert len(raw) + 16 > 512                                     # one more would not fit
    same, raw2 = wire.truncate(m, 4096)
    assert same is m and not same.tc and raw2 == wire.encode(m)


def test_query_builder():
    q = wire.query("Service-A.backend", "SRV", 77)
    assert (q.id, q.rd, q.qr, q.questions) == (77, True, False, [Question("Service-A.backend.", wire.SRV_T)])
    assert wire.type_code("type99") == 99
    with pytest.raises(DnsFormatError):
        wire.type_code("BOGUS")


# --- property tests --------------------------------------------------------------------

@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_dns_format_error(raw):
    try:
        m = wire.decode(raw)
    except DnsFormatError:
        return
    assert wire.decode(wire.encode(m)) == m


@settings(max_examples=800, deadline=None)
@given(st.binary(min_size=12, max_size=200))
def test_random_bodies_behind_a_plausible_header(body):
    raw = struct.pack("!HHHHHH", 7, 0x0100, 1, body[0] % 3, body[1] % 3, body[2] % 3) + body[3:]
    try:
        wire.decode(raw)
    except DnsFormatError:
        pass


labels = st.binary(min_size=1, max_size=20)
names = st.lists(labels, min_size=0, max_size=5).map(wire.labels_to_name)
rrs = st.one_of(
    st.builds(lambda n, t, a: RR(n, wire.A, t, IPv4Address(a)), names, st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1)),
    st.builds(lambda n, t: RR(n, wire.CNAME, t, n), names, st.integers(0, 2**32 - 1)),
    st.builds(lambda n, p, w, port, tgt: RR(n, wire.SRV_T, 5, SRV(p, w, port, tgt)), names,
              st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535), names),
    st.builds(lambda n, s: RR(n, wire.TXT, 5, tuple(s)), names, st.lists(st.binary(max_size=40), max_size=3)),
)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 65535), names, st.integers(0, 65535), st.lists(rrs, max_size=6),
       st.lists(rrs, max_size=3))
def test_generated_messages_round_trip(ident, qname, qtype, answers, extra):
    m = Message(ident, qr=True, rd=True, questions=[Question(qname, qtype)], answers=answers,
                additional=extra)
    back = wire.decode(wire.encode(m))
    assert [wire.canonical(r.name) for r in back.answers] == [wire.canonical(r.name) for r in answers]
    assert [r.data if r.rtype != wire.CNAME else wire.canonical(r.data) for r in back.answers] == \
        [r.data if r.rtype != wire.CNAME else wire.canonical(r.data) for r in answers]
    assert wire.decode(wire.encode(back)) == back
