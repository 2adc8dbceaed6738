# net.sockets: what a Linux host's stack and the apps behind its ports answer
# (TCP through the table's TCP half, net.tcpstate).
from ipaddress import IPv4Address as A

from kdp import wire
from kdp.net.sockets import SocketTable
from kdp.net.tcpstate import parse_tcp_options

E = wire.Ether("02:00:00:00:00:02", "02:00:00:00:00:01", wire.ETH_P_IP)
C, S = A("10.0.0.1"), A("10.0.0.2")


def pkt(l4, proto):
    return wire.finalize(wire.Packet(E, ip=wire.IPv4(C, S, proto, 64, 1, 2), l4=l4))


def syn(port=80, options=b""):
    return pkt(wire.TCP(40000, port, 1000, 0, wire.SYN, 64240, 0, 0, options), wire.PROTO_TCP)


def table():
    t = SocketTable("pod/x", seed=1)
    t.listen(80, "TCP", "web")
    t.listen(53, "UDP", "dns")
    return t


def test_syn_to_listener_gets_synack_with_linux_options():
    opts = bytes.fromhex("020405b40402080a0000000100000000" "01030307")
    d = table().deliver(syn(options=opts), 0.0)
    a = d.answers[0]
    assert d.action == "answered" and a.l4.flags == wire.SYN | wire.ACK and a.l4.ack == 1001
    o = parse_tcp_options(a.l4.options)
    assert o["mss"] == 1460 and o["sack"] and o["ws"] == 7 and o["ts"][1] == 1     # tcp_rmem 6 MiB -> 7
    assert a.l4.window == 65160 and a.ip.ident == 0 and a.ip.flags == 2
    assert wire.l4_checksum_ok(a) and wire.ip_checksum_ok(a)


def test_syn_to_closed_port_gets_rst_ack():
    d = table().deliver(syn(port=81), 0.0)
    r = d.answers[0].l4
    assert d.action == "closed" and r.flags == wire.RST | wire.ACK and r.ack == 1001 and r.seq == 0


def test_data_is_echoed_and_fin_answered():
    t = table()
    synack = t.deliver(syn(), 0.0).answers[0].l4
    ack = pkt(wire.TCP(40000, 80, 1001, synack.seq + 1, wire.ACK, 502), wire.PROTO_TCP)
    assert t.deliver(ack, 0.1).action == "accepted"
    data = pkt(wire.TCP(40000, 80, 1001, synack.seq + 1, wire.PSH | wire.ACK, 502, payload=b"hi"), wire.PROTO_TCP)
    quick, echo = [a.l4 for a in t.deliver(data, 0.2).answers]
    assert quick.flags == wire.ACK and quick.payload == b"" and quick.ack == 1003     # quick ACK first
    assert echo.payload == b"hi" and echo.ack == 1003 and echo.seq == synack.seq + 1
    assert echo.window == 64240 >> 0                                 # no scaling offered
    more = pkt(wire.TCP(40000, 80, 1003, echo.seq + 2, wire.PSH | wire.ACK, 502, payload=b"yo"), wire.PROTO_TCP)
    assert [a.l4.payload for a in t.deliver(more, 0.25).answers] == [b"yo"]   # pingpong: ACK rides on data
    fin = pkt(wire.TCP(40000, 80, 1005, echo.seq + 4, wire.FIN | wire.ACK, 502), wire.PROTO_TCP)
    finack = t.deliver(fin, 0.3).answers[0].l4
    assert finack.flags == wire.FIN | wire.ACK and finack.ack == 1006


def test_udp_echo_and_closed_port():
    t = table()
    d = t.deliver(pkt(wire.UDP(5000, 53, 0, b"q"), wire.PROTO_UDP), 0.0)
    assert d.answers[0].l4.payload == b"q" and d.answers[0].l4.sport == 53
    d = t.deliver(pkt(wire.UDP(5000, 54, 0, b"q"), wire.PROTO_UDP), 0.0)
    icmp = d.answers[0]
    assert (icmp.l4.type, icmp.l4.code) == (3, 3) and icmp.ip.tos == 0xC0


def test_icmp_echo_reply_keeps_id_seq_payload():
    d = table().deliver(pkt(wire.ICMP(8, 0, 0, (7 << 16) | 3, b"abc"), wire.PROTO_ICMP), 0.0)
    r = d.answers[0]
    assert r.l4.type == 0 and r.l4.ident == 7 and r.l4.seq == 3 and r.l4.payload == b"abc"


def test_custom_app_behind_a_port():
    class Upper:
        def datagram(self, payload, src, dst, now):
            return payload.upper(), "uppercased"

        def stream(self, conn, data, now):
            conn["n"] = conn.get("n", 0) + 1
            return data.upper() * 1000, True, f"call {conn['n']}"

    t = SocketTable("pod/x", seed=1)
    t.listen(7, "UDP", "up", app=Upper())
    t.listen(7, "TCP", "up", app=Upper())
    assert t.deliver(pkt(wire.UDP(1, 7, 0, b"ab"), wire.PROTO_UDP), 0).answers[0].l4.payload == b"AB"
    sa = t.deliver(pkt(wire.TCP(40000, 7, 1, 0, wire.SYN), wire.PROTO_TCP), 0).answers[0].l4
    d = t.deliver(pkt(wire.TCP(40000, 7, 2, sa.seq + 1, wire.PSH | wire.ACK, 502, payload=b"xy"),
                      wire.PROTO_TCP), 0)
    sizes = [len(a.l4.payload) for a in d.answers]
    assert sizes == [0, 1460, 540, 0] and d.answers[-1].l4.flags == wire.FIN | wire.ACK  # ACK, MSS chunks, FIN


def test_client_socket_consumes_replies():
    t = table()
    t.add_client("tcp", C, 40000, S, 80)
    sa = wire.finalize(wire.Packet(E, ip=wire.IPv4(S, C, 6), l4=wire.TCP(80, 40000, 5, 1001, wire.SYN | wire.ACK)))
    assert t.deliver(sa, 0).action == "consumed"


def test_established_segments_count_ip_ids_up():
    t = table()
    opts = bytes.fromhex("020405b40402080a0000000100000000" "01030307")
    sa = t.deliver(syn(options=opts), 0.0).answers[0].l4
    data = pkt(wire.TCP(40000, 80, 1001, sa.seq + 1, wire.PSH | wire.ACK, 502, payload=b"a"), wire.PROTO_TCP)
    quick, echo = t.deliver(data, 0.1).answers
    assert echo.ip.ident == (quick.ip.ident + 1) & 0xFFFF and quick.ip.ident != 0
    assert echo.l4.window == 65160 >> 7


def test_time_wait_drops_the_last_ack_and_expires():
    t = table()
    sa = t.deliver(syn(), 0.0).answers[0].l4
    data = pkt(wire.TCP(40000, 80, 1001, sa.seq + 1, wire.PSH | wire.ACK, 502, payload=b"x"), wire.PROTO_TCP)
    t.deliver(data, 0.1)
    key = next(iter(t.tcp))
    t.tcp[key].state = "FIN_WAIT2"                                  # the server closed first
    fin = pkt(wire.TCP(40000, 80, 1002, t.tcp[key].snd_nxt, wire.FIN | wire.ACK, 502), wire.PROTO_TCP)
    assert t.deliver(fin, 0.2).answers[0].l4.flags == wire.ACK and t.tcp[key].state == "TIME_WAIT"
    late = pkt(wire.TCP(40000, 80, 1003, t.tcp[key].snd_nxt, wire.ACK, 502), wire.PROTO_TCP)
    assert t.deliver(late, 0.3).answers == []                      # no RST from TIME_WAIT
    assert t.deliver(late, 61.0).answers[0].l4.flags & wire.RST     # 60 s later the socket is gone
