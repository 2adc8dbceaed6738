# TCP tracking: the kernel's state table, ASSURED, timeouts, RST, loose
# pick-up, invalid transitions and connection reuse after TIME_WAIT.
import pytest

from kdp.conntrack import ASSURED, SEEN_REPLY, Timeouts, packet_tuple
from kdp.conntrack.tcp import tcp_index, transition
from ct_helpers import A, B, table, tcp, tcp_session, track


def state(t):
    (e,) = t.entries()
    return e.tcp.state


def test_three_way_handshake_reaches_established_and_assured():
    t = table()
    syn, synack, ack = tcp_session(t)
    assert syn.new and syn.ctinfo == "NEW" and state(t) == "ESTABLISHED"
    assert synack.ctinfo == "ESTABLISHED_REPLY" and synack.direction == "reply"
    assert ack.ctinfo == "ESTABLISHED"
    e = t.entries()[0]
    assert e.status & ASSURED and e.status & SEEN_REPLY
    assert e.remaining(0.02) == pytest.approx(432000)


def test_states_and_timeouts_along_the_handshake():
    t = table(timeouts=Timeouts.kube_proxy())
    track(t, tcp(flags="S"), 0)
    e = t.entries()[0]
    assert (e.tcp.state, e.remaining(0)) == ("SYN_SENT", 120)
    assert not e.assured
    track(t, tcp(B, A, 80, 40000, "SA"), 1)
    assert (e.tcp.state, e.remaining(1)) == ("SYN_RECV", 60) and not e.assured
    track(t, tcp(flags="A"), 2)
    assert (e.tcp.state, e.remaining(2)) == ("ESTABLISHED", 86400) and e.assured


def test_fin_sequence_ends_in_time_wait():
    t = table(timeouts=Timeouts.kube_proxy())
    tcp_session(t)
    steps = [(tcp(A, B, 40000, 80, "FA"), "FIN_WAIT", 120),
             (tcp(B, A, 80, 40000, "A"), "CLOSE_WAIT", 3600),
             (tcp(B, A, 80, 40000, "FA"), "LAST_ACK", 30),
             (tcp(A, B, 40000, 80, "A"), "TIME_WAIT", 120)]
    for i, (p, st, tmo) in enumerate(steps):
        r = track(t, p, 10 + i)
        assert r.entry is not None and state(t) == st
        assert t.entries()[0].remaining(10 + i) == tmo


def test_rst_moves_to_close_with_ten_seconds():
    t = table()
    tcp_session(t)
    r = track(t, tcp(B, A, 80, 40000, "R"), 5)
    assert r.entry is not None and state(t) == "CLOSE"
    assert t.entries()[0].remaining(5) == 10
    assert t.lookup(packet_tuple(tcp()), 15.5) is None and len(t) == 0


def test_rst_answering_a_syn_deletes_the_entry_at_once():
    t = table()
    track(t, tcp(flags="S"), 0)
    r = track(t, tcp(B, A, 80, 40000, "RA"), 0.1)
    assert r.entry is not None and r.ctinfo == "ESTABLISHED_REPLY"   # still attached to the RST
    assert len(t) == 0
    assert any("removed" in ev for ev in r.events)


def test_syn_retransmit_does_not_renew_the_timeout():
    t = table()
    track(t, tcp(flags="S"), 0)
    track(t, tcp(flags="S"), 50)
    assert t.entries()[0].remaining(50) == pytest.approx(70)


@pytest.mark.parametrize("flags", ["SA", "F", "FA", "R", "RA", ""])
def test_packets_that_cannot_open_a_connection_are_invalid(flags):
    t = table()
    r = track(t, tcp(flags=flags))
    assert r.entry is None and r.ctinfo is None and r.invalid and len(t) == 0


@pytest.mark.parametrize("flags", ["SF", "SR", "FPU", "F"])
def test_invalid_flag_combinations(flags):
    t = table()
    tcp_session(t)
    r = track(t, tcp(flags=flags), 1)
    assert r.entry is None and r.invalid


def test_loose_pickup_of_a_mid_stream_ack():
    t = table()
    r = track(t, tcp(flags="A"), 0)
    e = r.entry
    assert r.new and e.tcp.state == "ESTABLISHED" and e.remaining(0) == 300   # unacknowledged
    track(t, tcp(B, A, 80, 40000, "A"), 1)
    assert not e.assured and e.remaining(1) == 300
    track(t, tcp(flags="PA"), 2)
    assert e.assured and e.remaining(2) == 432000


def test_no_pickup_without_loose():
    t = table(tcp_loose=False)
    r = track(t, tcp(flags="A"))
    assert r.entry is None and len(t) == 0
    assert track(t, tcp(flags="S")).entry is not None


def test_ack_before_syn_ack_is_invalid():
    t = table()
    track(t, tcp(flags="S"), 0)
    r = track(t, tcp(flags="A"), 0.5)
    assert r.entry is None and "SYN_SENT" in r.invalid
    assert state(t) == "SYN_SENT"


def test_ignored_packets_keep_the_entry_and_state():
    t = table()
    tcp_session(t)
    r = track(t, tcp(flags="S"), 1)              # SYN on an established connection: ignored
    assert r.entry is not None and state(t) == "ESTABLISHED"


def test_new_syn_after_time_wait_reopens():
    t = table()
    tcp_session(t)
    for i, p in enumerate([tcp(A, B, 40000, 80, "FA"), tcp(B, A, 80, 40000, "FA"),
                           tcp(A, B, 40000, 80, "A")]):
        track(t, p, 1 + i)
    assert state(t) == "TIME_WAIT"
    old = t.entries()[0]
    r = track(t, tcp(flags="S"), 5)
    assert r.new and r.entry is not old and state(t) == "SYN_SENT"
    assert any("reopen" in ev for ev in r.events)


def test_timeouts_expire_on_packet_time():
    t = table()
    tcp_session(t)
    e = t.entries()[0]
    assert t.lookup(e.orig, 432000.01) is not None
    assert t.lookup(e.orig, 432000.03) is None and len(t) == 0


def test_transition_table_spot_checks():
    assert transition("original", "SYN", "NONE") == "SYN_SENT"
    assert transition("reply", "SYN", "SYN_SENT") == "SYN_SENT2"
    assert transition("original", "SYNACK", "SYN_SENT2") == "SYN_RECV"
    assert transition("reply", "ACK", "SYN_SENT") == "IGNORE"
    assert transition("original", "FIN", "CLOSE_WAIT") == "LAST_ACK"
    assert transition("reply", "SYNACK", "ESTABLISHED") == "IGNORE"
    assert tcp_index(0x12) == "SYNACK" and tcp_index(0x14) == "RST" and tcp_index(0x11) == "FIN"
