# SCTP on the wire (issue 13 item 1): CRC32c, parse/emit round trip, NAT rewrite
# with a fresh CRC, and agreement with an independent decoder (scapy).
from ipaddress import IPv4Address as A

import pytest

from kdp import wire
from kdp.checksum import crc32c


def _pkt(sport=5000, dport=80):
    return wire.finalize(wire.Packet(wire.Ether("02:00:00:00:00:02", "02:00:00:00:00:01", wire.ETH_P_IP),
                                     ip=wire.IPv4(A("10.0.0.1"), A("10.0.0.2"), wire.PROTO_SCTP, ident=7),
                                     l4=wire.SCTP(sport, dport, 0, 0, wire.sctp_init(0xA1B2C3D4, 99))))


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283 and crc32c(b"") == 0


def test_parse_emit_round_trip_and_checksum():
    p = _pkt()
    raw = wire.emit(p)
    q = wire.parse(raw)
    assert q == p and wire.l4_checksum_ok(q) and wire.emit(q) == raw
    assert [c.name for c in wire.sctp_chunks(q.l4)] == ["INIT"] and q.ports == (5000, 80)
    assert q.summary() == "SCTP 10.0.0.1:5000 > 10.0.0.2:80 [INIT] vtag 0x0 ttl 64"


def test_nat_rewrite_recomputes_the_crc():
    p = _pkt()
    for kw in ({"dport": 9999, "dst": A("10.244.1.2")}, {"sport": 40000, "src": A("10.240.0.4")},
               {"dst": A("10.9.9.9")}):
        q = wire.rewrite_addr(p, **kw)
        assert wire.l4_checksum_ok(q) and wire.ip_checksum_ok(q), kw
    bad = wire.Packet(p.eth, ip=p.ip, l4=wire.SCTP(5000, 80, 0, 1, p.l4.chunks))
    assert not wire.l4_checksum_ok(bad)
    assert wire.l4_checksum_ok(wire.rewrite_addr(bad, dport=81))     # the kernel recomputes, too


def test_scapy_reads_the_same_packet():
    scapy = pytest.importorskip("scapy.layers.sctp")
    from scapy.layers.l2 import Ether
    raw = wire.emit(wire.rewrite_addr(_pkt(), dport=9999))
    s = Ether(raw)
    sh = s[scapy.SCTP]
    assert (sh.sport, sh.dport, sh.tag) == (5000, 9999, 0)
    assert s.haslayer(scapy.SCTPChunkInit) and s[scapy.SCTPChunkInit].init_tag == 0xA1B2C3D4
    assert bytes(s) == raw
    rebuilt = s.copy()
    del rebuilt[scapy.SCTP].chksum                   # scapy computes the CRC32c itself
    assert bytes(rebuilt) == raw
