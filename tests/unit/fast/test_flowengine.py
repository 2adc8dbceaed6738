# The flow cache's replay engine: the compiled FlowEngine and its pure twin
# (kdp.fast.flowengine, over kdp.fast.replay) key, template, generate RSTs and write pcap records byte for byte
# alike, on random frames (Hypothesis) and on the edge cases of the checksums.
import math
import struct

import pytest
from hypothesis import given, settings, strategies as st

from kdp.fast import IMPLEMENTATION, replay
from kdp.fast.contract import FLOW_OP, OP_CAPTURE, OP_CT, OP_FDB_CHECK, OP_FDB_LEARN, OP_GEN_RST
from kdp.fast.flowengine import FlowEngine as PureFlowEngine
from kdp.io import pcap_record
from kdp.datapath.flowcache import derive_template

compiled = pytest.mark.skipif(IMPLEMENTATION != "cython", reason="compiled module not loaded")


def _csum(b: bytes) -> int:
    return (~replay._fold(replay._sum16(b, 0, len(b)))) & 0xFFFF


def tcp_frame(src=b"\x0a\xf4\x00\x02", dst=b"\x0a\xf4\x02\x03", sport=40000, dport=80, flags=0x10,
              seq=101, ack=5, ident=7, ttl=64, payload=b"", opts=b"", window=64240) -> bytes:
    doff = (20 + len(opts)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0) + opts + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
    c = _csum(pseudo + seg)
    seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(seg), ident, 0x4000, ttl, 6, 0) + src + dst
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + seg


def udp_frame(payload=b"hello", ident=3) -> bytes:
    src, dst = b"\x0a\xf4\x00\x02", b"\x08\x08\x08\x08"
    seg = struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload
    c = _csum(src + dst + struct.pack("!BBH", 0, 17, len(seg)) + seg) or 0xFFFF
    seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(seg), ident, 0, 64, 17, 0) + src + dst
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + seg


def engines():
    out = [PureFlowEngine]
    if IMPLEMENTATION == "cython":
        from kdp._fastpath import FlowEngine
        out.append(FlowEngine)
    return out


frames = st.builds(tcp_frame, seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
                   ident=st.integers(0, 0xFFFF), flags=st.sampled_from([0x10, 0x18, 0x02, 0x11, 0x04]),
                   payload=st.binary(max_size=64), window=st.integers(0, 0xFFFF),
                   ttl=st.integers(1, 255))


def test_key_ignores_carried_fields_and_keeps_the_rest():
    a = replay.frame_key(tcp_frame(seq=1, ack=2, ident=3, payload=b"x"))
    b = replay.frame_key(tcp_frame(seq=9, ack=8, ident=7, payload=b"yyyy", window=5))
    assert a is not None and a == b
    assert replay.frame_key(tcp_frame(ttl=63)) != a
    assert replay.frame_key(tcp_frame(flags=0x18)) != a
    assert replay.frame_key(tcp_frame(dport=81)) != a


def test_frames_the_cache_must_not_replay_have_no_key():
    f = tcp_frame()
    assert replay.frame_key(f[:-1] + bytes([f[-1] ^ 1])) is None     # urgent pointer: checksum breaks
    bad_tcp = bytearray(f)
    bad_tcp[50] ^= 0xFF                       # TCP checksum
    assert replay.frame_key(bytes(bad_tcp)) is None
    bad_ip = bytearray(f)
    bad_ip[24] ^= 0xFF                        # IP header checksum
    assert replay.frame_key(bytes(bad_ip)) is None
    frag = bytearray(f)
    frag[20] |= 0x20                          # MF
    assert replay.frame_key(bytes(frag)) is None
    nocsum = bytearray(udp_frame())
    nocsum[40:42] = b"\0\0"                   # UDP without checksum
    assert replay.frame_key(bytes(nocsum)) is None
    assert replay.frame_key(f[:30]) is None


@compiled
@settings(max_examples=150, deadline=None)
@given(frames)
def test_compiled_and_pure_key_alike(f):
    from kdp._fastpath import FlowEngine
    e = FlowEngine(False)
    p = PureFlowEngine(False)
    key = replay.frame_key(f)
    for eng in (e, p):
        eng.add(key, b"", b"", b"", b"[", b"]\n")
    assert e.lookup(f) == p.lookup(f) == 0
    corrupt = f[:50] + bytes([f[50] ^ 0x5A]) + f[51:]
    assert e.lookup(corrupt) == p.lookup(corrupt) == -1


@settings(max_examples=150, deadline=None)
@given(frames, st.integers(0, 0xFFFF), st.integers(1, 254))
def test_template_reproduces_a_rewrite_and_its_checksums(f, port, ttl):
    """A NAT-like rewrite done by hand (fields, then checksums recomputed in
    full) is what the template gives, for any carried fields."""
    got = bytearray(f)
    got[0:6] = b"\xaa\xbb\xcc\xdd\xee\xff"
    got[22] = ttl
    got[30:34] = b"\x0a\xf4\x01\x09"
    got[36:38] = struct.pack("!H", port)
    got[24:26] = b"\0\0"
    got[24:26] = struct.pack("!H", _csum(bytes(got[14:34])))
    total = (got[16] << 8) | got[17]
    seg = bytes(got[34:14 + total])
    seg0 = seg[:16] + b"\0\0" + seg[18:]
    got[50:52] = struct.pack("!H", _csum(bytes(got[26:34]) + struct.pack("!BBH", 0, 6, len(seg)) + seg0))
    tmpl = derive_template(f, bytes(got))
    assert tmpl is not None
    assert replay.apply_template(f, tmpl, 0) == bytes(got)


def test_template_refuses_changes_outside_the_header_fields():
    f = tcp_frame(payload=b"abcd")
    got = bytearray(f)
    got[-1] ^= 1
    assert derive_template(f, bytes(got)) is None
    got = bytearray(f)
    got[18] ^= 1                              # IP ID is carried, never rewritten
    assert derive_template(f, bytes(got)) is None


@settings(max_examples=100, deadline=None)
@given(frames)
def test_rst_from_the_recorded_one_matches_tcp_v4_send_reset(f):
    from kdp import wire
    from kdp.net.replies import tcp_reset
    pkt = wire.parse(f)
    expect = wire.emit(tcp_reset(pkt.ip, pkt.l4))
    base = wire.emit(tcp_reset(pkt.ip, wire.parse(tcp_frame(flags=f[47], seq=1, ack=2)).l4))
    flags = f[47]
    mode = 1 if flags & 0x10 else 2
    flag_len = 0 if mode == 1 else (1 if flags & 0x02 else 0) + (1 if flags & 0x01 else 0)
    assert replay.rst_source(base, f, mode, flag_len) == expect


def _program(sink: int, tmpl_off: int, ct_slot: int, fdb_slot: int, rst: bool) -> bytes:
    prog = b""
    if rst:
        prog += FLOW_OP.pack(OP_GEN_RST, 1, 0, 0, 0.0, 0.0)
    prog += FLOW_OP.pack(OP_CT, 0, 0, ct_slot, 10.0, math.inf)
    prog += FLOW_OP.pack(OP_FDB_CHECK, 0, 0, fdb_slot, 300.0, 0.0)
    prog += FLOW_OP.pack(OP_FDB_LEARN, 0, 0, fdb_slot, 0.0, 0.0)
    prog += FLOW_OP.pack(OP_CAPTURE, 0, sink, tmpl_off, 0.0, 0.0)
    if rst:
        prog += FLOW_OP.pack(OP_CAPTURE, 1, sink, tmpl_off, 0.0, 0.0)
    return prog


def _pcap(records) -> bytes:
    out = b""
    for t, f in records:
        sec = int(t)
        out += struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(f), len(f)) + f
    return out


@pytest.mark.parametrize("text", [False, True])
def test_both_engines_replay_a_pcap_alike(text):
    """Same lines, same capture records, same slots, same stop on expiry."""
    first = tcp_frame()
    recs = [(1.0 + i * 0.25, tcp_frame(seq=100 + i, ack=7 * i, ident=i, payload=b"p" * (i % 5)))
            for i in range(40)]
    recs.append((100.0, tcp_frame(seq=1)))           # past the conntrack slot: a miss
    buf = _pcap(recs)
    results = []
    for cls in engines():
        eng = cls(True, text)
        sink = eng.sink_new()
        ct = eng.ct_new(5.0)
        fdb = eng.fdb_new(0.5)
        tmpl = derive_template(first, first[:6] + b"\x01\x02\x03\x04\x05\x06" + first[12:])
        base = tcp_frame(flags=0x04, sport=80, dport=40000, seq=5, ack=0)
        eng.add(replay.frame_key(first), _program(sink, 0, ct, fdb, True), tmpl, base, b"<", b">\n")
        status, pos, index, now = eng.run(buf, 0, len(buf), 0, 0.0, 1e-6, False)
        results.append((status, pos, index, now, eng.out_take(), eng.sink_take(sink), eng.ct_get(ct),
                        eng.fdb_get(fdb), eng.take_hits(0), eng.take_dirty()))
    assert results[0][0] == replay.MISS and results[0][2] == 40
    assert all(r == results[0] for r in results[1:])


def test_pcap_records_round_like_write_pcap():
    import os
    import tempfile
    from kdp.io import write_pcap
    times = [0.0, 1.0000005, 2.9999996, 12345.000001, 7.0000015, 1e9 + 0.5]
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.pcap")
        write_pcap(p, [(t, b"ab") for t in times])
        data = open(p, "rb").read()[24:]
    want = b"".join(pcap_record(t, b"ab") for t in times)
    assert data == want
    for cls in engines():
        eng = cls(True)
        s = eng.sink_new()
        for t in times:
            eng.sink_append(s, t, b"ab")
        assert eng.sink_take(s) == want


# --- ICMP echo, UDP lengths and echo answers (OP_ANSWER) ----------------------

def icmp_frame(typ=8, code=0, ident=0x1234, seq=1, payload=b"ping", ip_id=9, ttl=64) -> bytes:
    src, dst = b"\x0a\xf4\x00\x02", b"\x0a\xf4\x01\x03"
    msg = struct.pack("!BBHHH", typ, code, 0, ident, seq) + payload
    msg = msg[:2] + struct.pack("!H", _csum(msg)) + msg[4:]
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(msg), ip_id, 0, ttl, 1, 0) + src + dst
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + msg


def test_icmp_echo_is_keyed_on_its_identifier_not_its_sequence():
    a = replay.frame_key(icmp_frame(seq=1, payload=b"x", ip_id=1))
    assert a is not None
    assert replay.frame_key(icmp_frame(seq=900, payload=b"longer payload", ip_id=77)) == a
    assert replay.frame_key(icmp_frame(ident=0x4321)) != a
    assert replay.frame_key(icmp_frame(typ=0)) not in (None, a)     # echo reply: keyed, apart
    assert replay.frame_key(icmp_frame(ttl=9)) != a
    # errors quote a header conntrack reads: never keyed; nor a bad checksum
    assert replay.frame_key(icmp_frame(typ=3, code=3)) is None
    bad = bytearray(icmp_frame())
    bad[36] ^= 1
    assert replay.frame_key(bytes(bad)) is None


def test_udp_is_keyed_without_its_length_but_must_fill_the_ip_payload():
    a = replay.frame_key(udp_frame(payload=b"a"))
    assert a == replay.frame_key(udp_frame(payload=b"a much longer payload", ident=99))
    short = bytearray(udp_frame(payload=b"abcdef"))
    short[38:40] = struct.pack("!H", 10)      # UDP length short of the IP payload
    assert replay.frame_key(bytes(short)) is None


@compiled
@settings(max_examples=150, deadline=None)
@given(st.sampled_from([0, 8]), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=80),
       st.binary(max_size=80))
def test_compiled_and_pure_key_icmp_and_udp_alike(typ, ident, seq, p1, p2):
    from kdp._fastpath import FlowEngine
    for f, g in ((icmp_frame(typ=typ, ident=ident, seq=seq, payload=p1), icmp_frame(typ=typ, ident=ident, payload=p2)),
                 (udp_frame(payload=p1, ident=seq), udp_frame(payload=p2))):
        e, p = FlowEngine(False), PureFlowEngine(False)
        for eng in (e, p):
            eng.add(replay.frame_key(f), b"", b"", b"", b"[", b"]\n")
        assert e.lookup(f) == p.lookup(f) == e.lookup(g) == p.lookup(g) == 0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_answer_source_is_what_the_stack_answers(payload, ident, seq, ip_id):
    """answer_source (OP_ANSWER's source) gives the very bytes the socket layer
    sends: the UDP echo app's datagram and the stack's ICMP echo reply."""
    from kdp import wire
    from kdp.net.sockets import SocketTable
    for f, kind in ((udp_frame(payload=payload, ident=seq), replay.ECHO_UDP),
                    (icmp_frame(ident=ident, seq=seq, payload=payload), replay.ECHO_ICMP)):
        pkt = wire.parse(f)
        table = SocketTable("pod", seed=5)
        table.listen(53, "UDP", "app")
        res = table.deliver(pkt, 12.5)
        assert res.template is not None and res.template[0] == kind and len(res.answers) == 1
        sent = wire.emit(res.answers[0])
        got = replay.answer_source(f, kind, (sent[18] << 8) | sent[19])
        assert got[14:] == sent[14:]


def _echo_program(sink: int, ipid_slot: int) -> bytes:
    from kdp.fast.contract import OP_ANSWER
    return (FLOW_OP.pack(OP_CAPTURE, 0, sink, 0, 0.0, 0.0)
            + FLOW_OP.pack(OP_ANSWER, replay.ECHO_UDP, 0, ipid_slot, 0.0, 0.0)
            + FLOW_OP.pack(OP_CAPTURE, 2, sink, 0, 0.0, 0.0))


@pytest.mark.parametrize("text", [False, True])
def test_both_engines_replay_echo_answers_alike(text):
    """A cached echo: both engines draw the answers' IP IDs from the slot as
    kdp.net.ipident does (several per jiffy, then after gaps), splice UDP's
    payload length into the line, and write the same captures."""
    from kdp.net.ipident import IpIdents
    first = udp_frame()
    times = [1.0, 1.001, 1.002, 1.5, 7.25, 7.25, 300.0, 300.004]
    recs = [(t, udp_frame(payload=b"q" * i, ident=i)) for i, t in enumerate(times)]
    buf = _pcap(recs)
    results = []
    for cls in engines():
        eng = cls(True, text)
        sink = eng.sink_new()
        slot = eng.ipid_new(4000000000, 0, 0xDEADBEEF12345678)
        tmpl = derive_template(first, first)
        eng.add(replay.frame_key(first), _echo_program(sink, slot), tmpl, b"", b"<", b" len=", b">\n")
        status, pos, index, now = eng.run(buf, 0, len(buf), 0, 0.0, 1e-6, False)
        results.append((status, index, eng.out_take(), eng.sink_take(sink), eng.ipid_get(slot),
                        eng.take_dirty()))
    assert results[0][0] == replay.END and results[0][1] == len(times)
    assert all(r == results[0] for r in results[1:])
    # the IDs are kdp.net.ipident's draws from the same bucket state
    idents = IpIdents(0, "x")
    idents._buckets[7] = [4000000000, 0, 0xDEADBEEF12345678]
    want = [idents.reserve(7, t) & 0xFFFF for t in times]
    caps = results[0][3]
    got, pos = [], 0
    while pos < len(caps):
        n = struct.unpack_from("<I", caps, pos + 8)[0]
        rec = caps[pos + 16:pos + 16 + n]
        pos += 16 + n
        if rec[26:30] == b"\x08\x08\x08\x08":          # the answer (from the server's address)
            got.append((rec[18] << 8) | rec[19])
    assert got == want
    assert results[0][4] == tuple(idents._buckets[7][:2])
    assert (b"len=0>" in results[0][2]) and (b"len=7>" in results[0][2])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=40))
def test_both_engines_build_icmp_echo_replies_as_the_stack(ident, seq, payload):
    """ICMP echo replies from a cached entry: both engines give the stack's
    bytes, its checksum computed in full (never the other zero of one's
    complement), whatever the request's identifier, sequence and payload."""
    from kdp import wire
    from kdp.fast.contract import OP_ANSWER
    from kdp.net.sockets import SocketTable
    f = icmp_frame(ident=ident, seq=seq, payload=payload)
    table = SocketTable("pod", seed=5)
    sent = wire.emit(table.deliver(wire.parse(f), 3.0).answers[0])
    prog = (FLOW_OP.pack(OP_ANSWER, replay.ECHO_ICMP, 0, 0, 0.0, 0.0)
            + FLOW_OP.pack(OP_CAPTURE, 2, 0, 0, 0.0, 0.0))
    tmpl = derive_template(f, f)
    for cls in engines():
        eng = cls(True)
        eng.sink_new()
        counter, tstamp, key = table.idents.state(table.idents.bucket(f"10.244.1.3", "10.244.0.2", 1))
        eng.ipid_new((counter - 1) & 0xFFFFFFFF, tstamp, key)
        eng.add(replay.frame_key(f), prog, tmpl, b"", b"<", b">\n")
        line, caps, _ct, _fdb, _ipid = eng.predict(0, f, 3.0, 0)
        assert caps[0][1][16:][14:] == sent[14:]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=700), st.integers(1, 255), st.integers(0, 0xFFFF))
def test_both_engines_build_a_closed_ports_icmp_error_as_the_stack(payload, ttl, seq):
    """A closed UDP port's ICMP port unreachable from a cached entry: both
    engines give icmp_send()'s bytes, quoting the datagram as delivered (here
    one hop later: TTL - 1) up to 548 bytes, whatever its length."""
    from kdp import wire
    from kdp.fast.contract import OP_ANSWER
    from kdp.net.sockets import SocketTable
    f = udp_frame(payload=payload, ident=seq)
    delivered = bytearray(f)
    delivered[0:6] = b"\x0a\x0b\x0c\x0d\x0e\x0f"
    delivered[22] = ttl
    delivered[24:26] = b"\0\0"
    delivered[24:26] = struct.pack("!H", _csum(bytes(delivered[14:34])))
    delivered = bytes(delivered)
    table = SocketTable("pod", seed=5)
    res = table.deliver(wire.parse(delivered), 3.0)
    assert res.template is not None and res.template[0] == replay.ICMP_ERROR
    sent = wire.emit(res.answers[0])
    assert replay.error_source(delivered, 3, 3, (sent[18] << 8) | sent[19])[14:] == sent[14:]
    quote = derive_template(f, delivered)
    prog = (FLOW_OP.pack(OP_ANSWER, replay.ICMP_ERROR, 0x0303, 0, float(0), 0.0)
            + FLOW_OP.pack(OP_CAPTURE, 2, 0, len(quote), 0.0, 0.0))
    ans_tmpl = derive_template(sent, sent)
    for cls in engines():
        eng = cls(True)
        eng.sink_new()
        counter, tstamp, key = table.idents.state(res.template[2])
        eng.ipid_new((counter - 1) & 0xFFFFFFFF, tstamp, key)
        eng.add(replay.frame_key(f), prog, quote + ans_tmpl, b"", b"<", b">\n")
        _line, caps, _ct, _fdb, _ipid = eng.predict(0, f, 3.0, 0)
        assert caps[0][1][16:][14:] == sent[14:]
