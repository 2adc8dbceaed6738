# The flow cache's recorder decides "the conntrack entry changed" from a
# snapshot of the entry (datapath.flowcache._ct_state): every field but the
# timeout, and the fields of protocol-state objects hanging off the entry.
from ipaddress import IPv4Address

from kdp.conntrack.entry import ConntrackEntry, TcpInfo
from kdp.conntrack.tuples import Tuple
from kdp.datapath.flowcache import _ct_state


def _entry() -> ConntrackEntry:
    t = Tuple(6, IPv4Address("10.244.0.2"), IPv4Address("10.2.0.2"), 40000, 80)
    e = ConntrackEntry(t, t.invert(), 1.0, id=7, status=8, timeout_at=61.0)
    e.tcp = TcpInfo("SYN_SENT", "SYN", "original")
    return e


def test_timeout_and_refresh_are_not_state():
    e = _entry()
    before = _ct_state(e)
    e.timeout_at, e.refresh = 500.0, 120.0
    assert _ct_state(e) == before


def test_status_tcp_state_and_close_flags_are_state():
    for change in (lambda e: setattr(e, "status", e.status | 2),
                   lambda e: setattr(e.tcp, "state", "ESTABLISHED"),
                   lambda e: e.tcp.close_init.__setitem__(1, True),
                   lambda e: setattr(e, "mark", 0x4000)):
        e = _entry()
        before = _ct_state(e)
        change(e)
        assert _ct_state(e) != before


def test_a_protocol_state_object_is_compared_by_its_fields():
    class Proto:                       # as SCTP's per-entry state: a plain mutable object
        def __init__(self):
            self.state, self.vtag = "COOKIE_WAIT", [0, 0]

    e = _entry()
    e.extra = Proto()
    before = _ct_state(e)
    e.extra.vtag[1] = 0xABCD
    assert _ct_state(e) != before
