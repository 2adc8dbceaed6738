# wire: parse/emit round trips against Scapy, checksums, kernel-style rewrites.
from ipaddress import IPv4Address as A

import pytest
from hypothesis import given, strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from kdp import wire
from kdp.checksum import pure_csum_replace

E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


@pytest.mark.parametrize("frame", [
    E / IP(src="10.0.0.1", dst="10.0.0.2", ttl=7, id=99) / TCP(sport=1, dport=80, flags="S", options=[("MSS", 1460)]),
    E / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5353, dport=53) / b"query",
    E / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, id=7, seq=3) / (b"x" * 56),
    Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2",
                                                                   hwsrc="02:00:00:00:00:01"),
])
def test_parse_emit_round_trip_matches_scapy_bytes(frame):
    raw = bytes(frame)
    pkt = wire.parse(raw)
    assert wire.emit(pkt) == raw
    assert wire.ip_checksum_ok(pkt) and wire.l4_checksum_ok(pkt)


def test_fields_are_parsed():
    pkt = wire.parse(bytes(E / IP(src="10.0.0.1", dst="10.0.0.2", ttl=7) / TCP(sport=1234, dport=80, flags="SA")))
    assert pkt.ip.src == A("10.0.0.1") and pkt.ip.ttl == 7
    assert pkt.l4.sport == 1234 and pkt.l4.flags == wire.SYN | wire.ACK
    assert pkt.proto_name == "tcp" and pkt.ports == (1234, 80)


def test_ethernet_padding_is_stripped_like_the_kernel():
    raw = bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    pkt = wire.parse(raw + b"\x00" * 18)
    assert wire.emit(pkt) == raw


@pytest.mark.parametrize("raw,msg", [
    (b"\x00" * 10, "shorter than an Ethernet header"),
    (bytes(E)[:12] + b"\x08\x00" + b"\x45" + b"\x00" * 5, "shorter than 20"),
    (bytes(E)[:12] + b"\x08\x00" + b"\x65" + b"\x00" * 30, "version 6"),
])
def test_malformed_frames_raise(raw, msg):
    with pytest.raises(wire.MalformedFrame, match=msg):
        wire.parse(raw)


def test_finalize_matches_scapy_checksums():
    pkt = wire.Packet(wire.Ether("02:00:00:00:00:02", "02:00:00:00:00:01", 0x800),
                      ip=wire.IPv4(A("10.0.0.1"), A("10.0.0.2"), 17, 64, 5, 2),
                      l4=wire.UDP(1000, 53, 0, b"abc"))
    raw = wire.emit(wire.finalize(pkt))
    s = Ether(raw)
    del s[IP].chksum, s[UDP].chksum
    assert bytes(Ether(bytes(s))) == raw


@given(ttl=st.integers(2, 255), src=st.integers(1, 2**32 - 2), sport=st.integers(1, 65535),
       proto=st.sampled_from(["tcp", "udp"]))
def test_incremental_rewrites_equal_full_recompute(ttl, src, sport, proto):
    l4 = TCP(sport=1, dport=80) if proto == "tcp" else UDP(sport=1, dport=80)
    pkt = wire.parse(bytes(E / IP(src="10.0.0.1", dst="10.0.0.2", ttl=ttl) / l4 / b"data"))
    out = wire.rewrite_addr(wire.decrement_ttl(pkt), src=A(src), sport=sport)
    assert out.ip.ttl == ttl - 1 and out.ip.src == A(src) and out.l4.sport == sport
    assert wire.ip_checksum_ok(out) and wire.l4_checksum_ok(out)


def test_rewrite_keeps_a_wrong_checksum_wrong_like_the_kernel():
    pkt = wire.parse(bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=80, chksum=0x1234)))
    assert not wire.l4_checksum_ok(pkt)
    out = wire.rewrite_addr(pkt, dst=A("10.9.9.9"), dport=8080)
    assert not wire.l4_checksum_ok(out)


def test_udp_zero_checksum_stays_zero_on_rewrite():
    pkt = wire.parse(bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2, chksum=0)))
    out = wire.rewrite_addr(pkt, src=A("1.2.3.4"), sport=999)
    assert out.l4.checksum == 0 and wire.l4_checksum_ok(out)


def test_icmp_echo_id_rewrite():
    pkt = wire.parse(bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, id=7, seq=1)))
    out = wire.rewrite_addr(pkt, src=A("10.0.0.9"), sport=4000)
    assert out.l4.ident == 4000 and out.l4.seq == 1 and wire.l4_checksum_ok(out)


def test_summaries_are_readable():
    pkt = wire.parse(bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=80, flags="S")))
    assert pkt.summary() == "TCP 10.0.0.1:1 > 10.0.0.2:80 [S] ttl 64"


@given(st.integers(0, 0xFFFF), st.integers(1, 255), st.integers(0, 255))
def test_decrement_ttl_checksum_is_csum_replace_of_the_ttl_word(check, ttl, proto):
    # decrement_ttl computes RFC 1624's update on ints; it must be csum_replace's
    pkt = wire.Packet(wire.Ether("02:00:00:00:00:01", "02:00:00:00:00:02", wire.ETH_P_IP),
                      ip=wire.IPv4(A("10.0.0.1"), A("10.0.0.2"), proto, ttl, 1, 2, 0, 0, check))
    out = wire.decrement_ttl(pkt)
    assert out.ip.ttl == ttl - 1
    assert out.ip.checksum == pure_csum_replace(check, bytes([ttl, proto]), bytes([ttl - 1, proto]))


def test_ip_checksum_ok_is_not_fooled_by_a_rewritten_header():
    # the last header checked is remembered by identity: a new header object is checked afresh
    pkt = wire.finalize(wire.Packet(wire.Ether("02:00:00:00:00:01", "02:00:00:00:00:02", wire.ETH_P_IP),
                                    ip=wire.IPv4(A("10.0.0.1"), A("10.0.0.2"), 17, 64, 7),
                                    l4=wire.UDP(1000, 53, 0, b"x")))
    assert wire.ip_checksum_ok(pkt) and wire.ip_checksum_ok(pkt)
    ip = pkt.ip
    bad = wire.Packet(pkt.eth, ip=wire.IPv4(ip.src, ip.dst, ip.proto, ip.ttl, ip.ident, ip.flags, ip.frag,
                                            ip.tos, ip.checksum ^ 1), l4=pkt.l4)
    assert not wire.ip_checksum_ok(bad)
    assert wire.ip_checksum_ok(pkt)
