# net.tcpstate active connections, through net.sockets.SocketTable: an app's connect() (keyed ephemeral port,
# SYN with Linux's options), the ACK and queued data on the SYN-ACK, data and
# FIN handed to the app, close from either side, RST, and sends an app makes on
# an accepted connection later (TcpHandle.send) - between two SocketTables
# wired back to back, no datapath.
from ipaddress import IPv4Address as A

from kdp import wire
from kdp.net.sockets import SocketTable
from kdp.net.tcpstate import parse_tcp_options

C, S = A("10.0.0.1"), A("10.0.0.2")


class Collect:
    def __init__(self):
        self.data, self.events = b"", []

    def on_connected(self, h, now):
        self.events.append("connected")

    def on_upstream(self, h, data, now):
        self.data += data
        self.events.append(f"data {len(data)}")
        return "collected"

    def on_closed(self, h, now):
        self.events.append("closed")

    def on_reset(self, h, why, now):
        self.events.append(f"reset: {why}")


def pair():
    c, s = SocketTable("pod/client", seed=3), SocketTable("pod/server", seed=3)
    s.listen(80, "TCP", "web")
    return c, s


def shuttle(c, s, pkts, now=0.0, limit=50):
    """Deliver packets back and forth until nothing is left; everything that crossed."""
    seen, todo = [], [(p, s if p.ip.dst == S else c) for p in pkts]
    while todo and limit:
        limit -= 1
        p, dst = todo.pop(0)
        seen.append(p)
        for a in dst.deliver(p, now).answers:
            todo.append((a, s if a.ip.dst == S else c))
    return seen


def flags(pkts):
    return [(("C>S" if p.ip.src == C else "S>C"), wire.tcp_flag_str(p.l4.flags), len(p.l4.payload)) for p in pkts]


def test_connect_sends_a_linux_syn_from_a_keyed_ephemeral_port():
    c, _ = pair()
    h = c.connect(C, S, 80, 1.0)
    (syn,) = c.flush()
    assert syn.l4.flags == wire.SYN and syn.l4.window == 64240 and syn.ip.flags == 2
    assert (syn.ip.src, syn.ip.dst, syn.l4.dport) == (C, S, 80) and 32768 <= syn.l4.sport < 61000
    o = parse_tcp_options(syn.l4.options)
    assert o["mss"] == 1460 and o["sack"] and o["ws"] == 7 and o["ts"][1] == 0
    assert syn.l4.options[:4] == bytes.fromhex("020405b4") and syn.l4.options[-4:] == bytes.fromhex("01030307")
    assert wire.l4_checksum_ok(syn) and wire.ip_checksum_ok(syn)
    assert h.state == "SYN_SENT" and h.key == (C, syn.l4.sport, S, 80)
    again, _ = pair()
    again.connect(C, S, 80, 1.0)
    assert again.flush()[0].l4.sport == syn.l4.sport                # same seed, same port
    h2 = c.connect(C, S, 80, 1.0)
    assert h2.key[1] != h.key[1]                                     # next connect, next port


def test_handshake_queued_data_echo_and_close_from_the_client():
    c, s = pair()
    app = Collect()
    h = c.connect(C, S, 80, 0.0, app=app, data=b"hello")
    seen = shuttle(c, s, c.flush())
    assert flags(seen) == [("C>S", "S", 0), ("S>C", "S.", 0), ("C>S", ".", 0), ("C>S", "P.", 5),
                           ("S>C", ".", 0), ("S>C", "P.", 5), ("C>S", ".", 0)]
    assert app.data == b"hello" and app.events == ["connected", "data 5"]
    assert h.state == "ESTABLISHED"
    ack = seen[2].l4
    assert ack.seq == seen[0].l4.seq + 1 and ack.ack == seen[1].l4.seq + 1
    assert ack.window == 502 and parse_tcp_options(ack.options)["ts"][1] == parse_tcp_options(
        seen[1].l4.options)["ts"][0]                                  # TSecr echoes the server
    h.close()
    seen = shuttle(c, s, c.flush())
    assert flags(seen) == [("C>S", "F.", 0), ("S>C", "F.", 0), ("C>S", ".", 0)]
    assert h.state == "CLOSED" and not c.open_connections() and not s.open_connections()


def test_the_server_closing_first_is_answered_with_fin_ack_or_waits():
    class CloseAfterReply:
        name = "once"

        def stream(self, conn, data, now):
            return b"bye", True, "answered and closing"

    for auto, expect in ((True, [("S>C", ".", 0), ("S>C", "P.", 3), ("S>C", "F.", 0), ("C>S", ".", 0),
                                 ("C>S", "F.", 0), ("S>C", ".", 0)]),
                         (False, [("S>C", ".", 0), ("S>C", "P.", 3), ("S>C", "F.", 0), ("C>S", ".", 0),
                                  ("C>S", ".", 0)])):
        c, s = pair()
        s.listen(80, "TCP", "web", CloseAfterReply())
        app = Collect()
        h = c.connect(C, S, 80, 0.0, app=app, auto_close=auto)
        shuttle(c, s, c.flush())
        h.send(b"x")
        seen = shuttle(c, s, c.flush())
        assert flags(seen[1:]) == expect, auto
        assert app.events[-1] == "closed" and app.data == b"bye"
        if auto:
            assert not c.open_connections() and not s.open_connections()
        else:
            assert h.state == "CLOSE_WAIT"
            h.close()
            assert flags(shuttle(c, s, c.flush())) == [("C>S", "F.", 0), ("S>C", ".", 0)]
            assert not c.open_connections() and not s.open_connections()


def test_connection_refused_reaches_the_app():
    c, s = pair()
    app = Collect()
    h = c.connect(C, S, 81, 0.0, app=app, data=b"x")
    seen = shuttle(c, s, c.flush())
    assert flags(seen) == [("C>S", "S", 0), ("S>C", "R.", 0)]
    assert app.events == ["reset: connection refused"] and h.reset == "connection refused"
    assert h.state == "CLOSED" and not c.open_connections()


def test_data_before_the_handshake_waits_and_large_data_is_segmented():
    c, s = pair()
    h = c.connect(C, S, 80, 0.0, app=Collect())
    assert h.send(b"early") == 0                  # queued until the SYN-ACK
    seen = shuttle(c, s, c.flush())
    assert flags(seen)[3] == ("C>S", "P.", 5)
    n = h.send(b"z" * 4000)
    pkts = c.flush()
    assert n == 3 and [len(p.l4.payload) for p in pkts] == [1448, 1448, 1104]   # MSS minus timestamps
    assert [p.l4.seq for p in pkts] == [pkts[0].l4.seq, pkts[0].l4.seq + 1448, pkts[0].l4.seq + 2896]


def test_an_app_answers_an_accepted_connection_later_through_its_handle():
    class Later:
        name = "later"

        def __init__(self):
            self.conns = []

        def stream(self, conn, data, now):
            self.conns.append(conn["_handle"])
            return b"", False, "will answer later"

    c, s = pair()
    later = Later()
    s.listen(80, "TCP", "web", later)
    app = Collect()
    h = c.connect(C, S, 80, 0.0, app=app, data=b"q")
    shuttle(c, s, c.flush())
    (sh,) = later.conns
    assert sh.side == "server" and sh.key == (S, 80, C, h.key[1]) and sh.state == "ESTABLISHED"
    sh.send(b"answer", close=True)
    seen = shuttle(c, s, s.flush())
    assert flags(seen) == [("S>C", "P.", 6), ("S>C", "F.", 0), ("C>S", ".", 0), ("C>S", "F.", 0),
                           ("S>C", ".", 0)]
    assert app.data == b"answer" and not c.open_connections() and not s.open_connections()


def test_packets_an_app_queues_during_a_delivery_leave_with_it():
    class Proxy:
        """On data, opens a connection elsewhere: the SYN leaves with the answer."""
        name = "proxy"

        def __init__(self, table):
            self.table = table

        def stream(self, conn, data, now):
            self.table.connect(S, A("10.0.0.3"), 8080, now)
            return b"", False, "connecting upstream"

    c, s = pair()
    s.listen(80, "TCP", "web", Proxy(s))
    h = c.connect(C, S, 80, 0.0, data=b"go")
    syn = c.flush()
    synack = s.deliver(syn[0], 0.0).answers
    ack_and_data = c.deliver(synack[0], 0.0).answers
    d = s.deliver(ack_and_data[1], 0.0)
    assert d.action == "answered"
    assert [(str(p.ip.dst), wire.tcp_flag_str(p.l4.flags)) for p in d.answers] == [
        ("10.0.0.1", "."), ("10.0.0.3", "S")]
    assert not s.outbox
