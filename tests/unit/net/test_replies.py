# net.replies: the answers built without a socket: tcp_v4_send_reset() and
# icmp_send(), at the IP layer with a blank Ethernet header.
from ipaddress import IPv4Address as A

from kdp import wire
from kdp.net.replies import BLANK_ETH, icmp_error, tcp_reset

E = wire.Ether("02:00:00:00:00:02", "02:00:00:00:00:01", wire.ETH_P_IP)
C, S = A("10.0.0.1"), A("10.0.0.2")


def test_ack_without_connection_gets_rst_with_its_ack_number():
    r = tcp_reset(wire.IPv4(C, S, 6), wire.TCP(40000, 80, 5, 777, wire.ACK))
    assert r.l4.flags == wire.RST and r.l4.seq == 777


def test_syn_without_connection_gets_rst_ack_for_the_syn():
    r = tcp_reset(wire.IPv4(C, S, 6), wire.TCP(40000, 80, 1000, 0, wire.SYN, payload=b"ab"))
    assert r.l4.flags == wire.RST | wire.ACK and r.l4.seq == 0 and r.l4.ack == 1003
    assert (r.ip.src, r.ip.dst, r.l4.sport, r.l4.dport) == (S, C, 80, 40000) and r.eth == BLANK_ETH


def test_icmp_error_quotes_the_offending_header_and_its_first_bytes():
    p = wire.finalize(wire.Packet(E, ip=wire.IPv4(C, S, wire.PROTO_UDP, 64, 7, 2),
                                  l4=wire.UDP(40000, 53, 0, b"q" * 20)))
    e = icmp_error(p, wire.ICMP_DEST_UNREACH, wire.ICMP_PORT_UNREACH, 99, src=A("10.0.0.9"))
    udp = wire.emit_l4(p.l4)
    assert e.l4.type == 3 and e.l4.code == 3 and e.l4.payload == wire.ip_header(p.ip, len(udp)) + udp
    assert (e.ip.src, e.ip.dst, e.ip.ident, e.ip.tos) == (A("10.0.0.9"), C, 99, 0xC0)
    assert wire.ip_checksum_ok(e)
