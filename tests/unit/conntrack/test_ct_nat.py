# NAT bindings on entries (nf_nat_core): keeping the source port, by-source
# reuse, keyed-hash port search, address choice by jhash2, exhausted ranges,
# and rewriting packets (incl. ICMP errors) from a binding.
from ipaddress import IPv4Address as IP

from kdp import wire
from kdp.checksum import inet_checksum
from kdp.conntrack import (DST, SRC, NatContext, NatRange, Tuple, conntrack_in, icmp_reply_translation,
                           jhash2, keyed_hash, manip_packet, null_binding, setup_nat)
from ct_helpers import A, B, table, tcp, udp

NODE = IP("10.224.0.4")


def new_entry(t, pkt, now=0.0):
    return conntrack_in(t, pkt, now, prerouting=True).entry


def masq(t, pkt, seed=0, ns="node/a", **flags):
    e = new_entry(t, pkt)
    setup_nat(NatContext(t, 0.0, seed, ns), e, SRC, NatRange(NODE, NODE, **flags))
    return e


def test_jhash2_matches_the_kernel():
    # values computed with include/linux/jhash.h compiled in C
    assert jhash2([0x0500F40A, 0, 0, 0], 0) == 3486513198
    assert jhash2([0x0500F40A, 0, 0, 0], 0x08080808) == 332756695
    assert jhash2([0x0500F40A], 7) == 1850909764


def test_keyed_hash_depends_on_every_part():
    base = keyed_hash(1, "a", 2)
    assert base == keyed_hash(1, "a", 2)
    assert len({base, keyed_hash(2, "a", 2), keyed_hash(1, "b", 2), keyed_hash(1, "a", 3)}) == 4


def test_source_nat_keeps_the_port_when_the_reply_tuple_is_free():
    t = table()
    e = masq(t, udp(A, "8.8.8.8", 5000, 53))
    assert e.reply == Tuple(17, IP("8.8.8.8"), NODE, 53, 5000) and e.status & 0x10
    assert t.confirm(e, 0)


def test_source_nat_repicks_from_a_keyed_offset_on_clash():
    picks = []
    for seed in (0, 0, 1):
        t = table()
        assert t.confirm(masq(t, udp(A, "8.8.8.8", 5000, 53), seed), 0)
        e = masq(t, udp("10.244.0.9", "8.8.8.8", 5000, 53), seed)
        assert e.reply.dport != 5000 and 1024 <= e.reply.dport <= 65535
        assert t.confirm(e, 0)
        picks.append(e.reply.dport)
    assert picks[0] == picks[1] != picks[2]


def test_random_fully_never_keeps_the_port_by_preference():
    ports = set()
    for i in range(20):
        t = table()
        e = masq(t, udp(A, "8.8.8.8", 5000 + i, 53), random_fully=True)
        ports.add(e.reply.dport - (5000 + i))
    assert len(ports) > 15
    t1, t2 = table(), table()
    assert masq(t1, udp(), 3, random_fully=True).reply == masq(t2, udp(), 3, random_fully=True).reply
    assert masq(table(), udp(), 3, "node/a", random_fully=True).reply != \
        masq(table(), udp(), 3, "node/b", random_fully=True).reply


def test_port_range_exhausted_returns_a_taken_tuple_and_confirm_refuses():
    t = table()
    rng = NatRange(NODE, NODE, 1000, 1001)
    for sport in (1, 2):
        e = new_entry(t, udp(A, "8.8.8.8", sport, 53))
        setup_nat(NatContext(t, 0.0), e, SRC, rng)
        assert t.confirm(e, 0)
    e = new_entry(t, udp(A, "8.8.8.8", 3, 53))
    setup_nat(NatContext(t, 0.0), e, SRC, rng)
    assert e.reply.dport in (1000, 1001) and not t.confirm(e, 0)


def test_by_source_mapping_is_reused_for_a_new_destination():
    t = table()
    assert t.confirm(masq(t, udp(A, "8.8.8.8", 5000, 53)), 0)
    e = masq(t, udp("10.244.0.9", "8.8.8.8", 5000, 53))
    null_binding(NatContext(t, 0.0), e, DST)
    assert t.confirm(e, 0)
    mapped = e.reply.dport
    e2 = masq(t, udp("10.244.0.9", "1.1.1.1", 5000, 53))
    assert e2.reply.dport == mapped


def test_snat_address_range_choice_is_the_kernels_jhash():
    t = table()
    e = new_entry(t, udp(A, "8.8.8.8", 5000, 53))
    setup_nat(NatContext(t, 0.0), e, SRC, NatRange(IP("192.0.2.10"), IP("192.0.2.13")))
    j = jhash2([int.from_bytes(IP(A).packed, "little"), 0, 0, 0],
               int.from_bytes(IP("8.8.8.8").packed, "little"))
    assert int(e.reply.dst) == int(IP("192.0.2.10")) + ((j * 4) >> 32)
    e2 = new_entry(table(), udp(A, "8.8.8.8", 5000, 53))
    setup_nat(NatContext(t, 0.0), e2, SRC, NatRange(IP("192.0.2.10"), IP("192.0.2.13"),
                                                      persistent=True))
    j0 = jhash2([int.from_bytes(IP(A).packed, "little"), 0, 0, 0], 0)
    assert int(e2.reply.dst) == int(IP("192.0.2.10")) + ((j0 * 4) >> 32)


def test_dnat_without_port_range_never_moves_the_port():
    t = table()
    e = new_entry(t, tcp(A, "10.0.12.34", 40000, 80))
    setup_nat(NatContext(t, 0.0), e, DST, NatRange(IP(B), IP(B)))
    assert e.reply == Tuple(6, IP(B), IP(A), 80, 40000) and e.status & 0x20


def test_manip_packet_both_directions_with_incremental_checksums():
    t = table()
    e = new_entry(t, tcp(A, "10.0.12.34", 40000, 80))
    setup_nat(NatContext(t, 0.0), e, DST, NatRange(IP(B), IP(B), 8080, 8080))
    p, ev = manip_packet(tcp(A, "10.0.12.34", 40000, 80), e, "original", DST)
    assert (str(p.ip.dst), p.l4.dport) == (B, 8080) and ev == "nat dnat 10.0.12.34:80 -> 10.244.1.6:8080"
    assert wire.ip_checksum_ok(p) and wire.l4_checksum_ok(p)
    same, ev = manip_packet(p, e, "original", SRC)          # no SNAT binding: untouched
    assert same is p and ev is None
    back, ev = manip_packet(tcp(B, A, 8080, 40000, "SA"), e, "reply", SRC)
    assert (str(back.ip.src), back.l4.sport) == ("10.0.12.34", 80) and str(ev).startswith("nat un-dnat")
    assert wire.l4_checksum_ok(back)


def test_icmp_reply_translation_rewrites_inner_and_outer():
    from scapy.layers.inet import ICMP, IP as SIP, UDP
    from scapy.layers.l2 import Ether
    t = table()
    e = new_entry(t, udp(A, "10.0.0.10", 5000, 53))
    setup_nat(NatContext(t, 0.0), e, DST, NatRange(IP(B), IP(B), 5353, 5353))
    t.confirm(e, 0)
    inner = bytes(SIP(src=A, dst=B, id=9) / UDP(sport=5000, dport=5353) / b"query")
    err = wire.parse(bytes(Ether() / SIP(src=B, dst=A) / ICMP(type=3, code=3) / inner))
    r = conntrack_in(t, err, 1, prerouting=True)
    assert r.ctinfo == "RELATED_REPLY"
    out, ev = icmp_reply_translation(err, e, "reply", SRC)
    assert str(out.ip.src) == "10.0.0.10" and wire.ip_checksum_ok(out) and wire.l4_checksum_ok(out)
    q = out.l4.payload
    assert q[16:20] == IP("10.0.0.10").packed and int.from_bytes(q[22:24], "big") == 53
    assert inet_checksum(q[:20]) == 0
    orig_udp = wire.parse(bytes(Ether() / SIP(src=A, dst="10.0.0.10", id=9) /
                                UDP(sport=5000, dport=53) / b"query"))
    assert q[20:] == wire.emit(orig_udp)[34:]          # inner UDP checksum fixed incrementally
    same, _ = icmp_reply_translation(err, e, "reply", DST)   # DST manip: nothing to undo
    assert same is err
