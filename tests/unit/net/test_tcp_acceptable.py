# net.tcpstate: what a server socket accepts, as Linux 6.x (tcp_check_req,
# tcp_ack, tcp_data_queue): in SYN-RECEIVED only the ACK of the SYN-ACK (else
# RST, the request stays); later an ACK of unsent data or a too-old ACK drops
# the segment with a challenge ACK at most once per tcp_invalid_ratelimit;
# an old ACK within what the peer acknowledged is accepted without moving
# ts_recent; data received twice is ACKed again with a D-SACK block, not
# handed to the app again. (The kernel's answers to each of these are checked
# in tests/oracle/test_tcp_ack_oracle.py.)
import struct
from ipaddress import IPv4Address as A

from kdp import wire
from kdp.net.sockets import SocketTable
from kdp.net.tcpstate import parse_tcp_options

E = wire.Ether("02:00:00:00:00:02", "02:00:00:00:00:01", wire.ETH_P_IP)
C, S = A("10.0.0.1"), A("10.0.0.2")
AK, PA, FA = wire.ACK, wire.PSH | wire.ACK, wire.FIN | wire.ACK
SYN_OPTS = bytes.fromhex("020405b4" "0402080a" "00000001" "00000000" "01030307")   # MSS, SACK-perm, TS, WS 7


def seg(seq, ack, flags, data=b"", tsval=2):
    opts = b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, 0)
    return wire.finalize(wire.Packet(E, ip=wire.IPv4(C, S, wire.PROTO_TCP, 64, 1, 2),
                                     l4=wire.TCP(40000, 80, seq, ack & 0xFFFFFFFF, flags, 502, 0, 0, opts, data)))


class Echoes:
    name = "count"

    def __init__(self):
        self.got = []

    def datagram(self, payload, src, dst, now):
        return None, ""

    def stream(self, conn, data, now):
        self.got.append(data)
        return data, False, f"{len(data)} bytes echoed"


def connected(handshake=True):
    """A table whose listener counts what it is handed; (table, app, server ISN + 1)."""
    t, app = SocketTable("pod/x", seed=1), Echoes()
    t.listen(80, "TCP", "web", app)
    synack = t.deliver(wire.finalize(wire.Packet(E, ip=wire.IPv4(C, S, wire.PROTO_TCP, 64, 1, 2), l4=wire.TCP(
        40000, 80, 1000, 0, wire.SYN, 64240, 0, 0, SYN_OPTS))), 0.0).answers[0].l4
    una = synack.seq + 1
    if handshake:
        assert t.deliver(seg(1001, una, AK), 0.1).action == "accepted"
    return t, app, una


def test_synrecv_ack_not_for_the_synack_gets_rst_and_the_request_stays():
    t, app, una = connected(handshake=False)
    for bad in (una + 100, una - 1):
        d = t.deliver(seg(1001, bad, AK), 0.1)
        (rst,) = [a.l4 for a in d.answers]
        assert rst.flags == wire.RST and rst.seq == bad & 0xFFFFFFFF and "RST sent" in d.detail
    d = t.deliver(seg(1001, una, PA, b"hello"), 0.2)             # the right ACK still completes it
    assert app.got == [b"hello"] and d.answers[-1].l4.payload == b"hello"


def test_synrecv_segment_without_ack_is_dropped():
    t, app, una = connected(handshake=False)
    d = t.deliver(seg(1001, 0, wire.PSH, b"x"), 0.1)
    assert d.answers == [] and app.got == [] and "without ACK" in d.detail


def test_ack_of_unsent_data_gets_one_challenge_ack_per_half_second_and_is_dropped():
    t, app, una = connected()
    d = t.deliver(seg(1001, una + 100, PA, b"hi", tsval=7), 1.0)
    (ch,) = [a.l4 for a in d.answers]
    assert app.got == [] and "TCP_ACK_UNSENT_DATA" in d.detail and "challenge ACK sent" in d.detail
    assert ch.flags == AK and (ch.seq, ch.ack) == (una, 1001) and not ch.payload
    assert parse_tcp_options(ch.options)["ts"][1] == 2          # TSecr: ts_recent, not the refused segment's
    d = t.deliver(seg(1001, una + 100, PA, b"hi"), 1.3)
    assert d.answers == [] and "rate-limited" in d.detail
    assert len(t.deliver(seg(1001, una + 100, AK), 1.5).answers) == 1     # 500 ms later: answered again
    d = t.deliver(seg(1001, una, PA, b"hi"), 1.6)
    assert app.got == [b"hi"]


def test_too_old_ack_is_dropped_an_old_one_within_what_was_acked_is_taken():
    t, app, una = connected()
    t.deliver(seg(1001, una, PA, b"hello"), 1.0)                 # echoed: 5 bytes from us
    t.deliver(seg(1006, una + 5, AK, tsval=3), 1.1)              # acknowledged: bytes_acked 5
    d = t.deliver(seg(1006, una - 1, PA, b"x", tsval=4), 1.2)    # 6 bytes back: too old
    assert "TCP_TOO_OLD_ACK" in d.detail and app.got == [b"hello"] and len(d.answers) == 1
    d = t.deliver(seg(1006, una + 1, PA, b"yo", tsval=9), 2.0)   # 4 bytes back: old, accepted
    assert app.got == [b"hello", b"yo"]
    assert parse_tcp_options(d.answers[-1].l4.options)["ts"][1] == 3    # an old ACK leaves ts_recent


def test_no_challenge_ack_after_established():
    t, app, una = connected()
    t.deliver(seg(1001, una, FA), 1.0)                           # FIN: FIN-ACK, LAST_ACK
    d = t.deliver(seg(1002, una + 100, AK), 1.1)
    assert d.answers == [] and "TCP_ACK_UNSENT_DATA" in d.detail
    assert t.tcp                                                 # still in LAST_ACK
    assert t.deliver(seg(1002, una + 1, AK), 1.2).detail.startswith("final ACK")
    assert not t.tcp


def test_retransmitted_data_is_acked_again_with_dsack_and_not_handed_over_twice():
    t, app, una = connected()
    t.deliver(seg(1001, una, PA, b"hello", tsval=3), 1.0)
    d = t.deliver(seg(1001, una + 5, PA, b"hello", tsval=4), 1.1)
    (ack,) = [a.l4 for a in d.answers]
    assert app.got == [b"hello"] and "retransmitted" in d.detail
    assert ack.flags == AK and ack.ack == 1006 and ack.options[-10:] == b"\x05\x0a" + struct.pack("!II", 1001, 1006)
    d = t.deliver(seg(1003, una + 5, PA, b"llo, world", tsval=5), 1.2)   # 3 old bytes, 7 new
    assert app.got == [b"hello", b", world"]
    assert d.answers[0].l4.options[-8:] == struct.pack("!II", 1003, 1006) and d.answers[0].l4.ack == 1013
