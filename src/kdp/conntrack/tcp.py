# conntrack.tcp: TCP connection tracking as nf_conntrack_proto_tcp.c does it —
# the state transition table, flag validation, new-connection rules (loose
# pick-up), RST/reopen handling, timeouts and ASSURED. No sequence-window
# tracking (kdp behaves as with nf_conntrack_tcp_be_liberal=1 for windows).
from __future__ import annotations

from kdp.wire import ACK, FIN, RST, SYN, URG

from .entry import ASSURED, ORIGINAL, SEEN_REPLY, ConntrackEntry, TcpInfo
from .timeouts import Timeouts

STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
          "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")
_IDX = {s: i for i, s in enumerate(STATES)}
IV, IG = "INVALID", "IGNORE"
sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2 = STATES

# tcp_conntracks[dir][index][old state] (Linux 6.x).
_TABLE = {
    ORIGINAL: {
        #          sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
        "SYN":    (sSS, sSS, IG,  IG,  IG,  IG,  IG,  sSS, sSS, sS2),
        "SYNACK": (IV,  IV,  sSR, IV,  IV,  IV,  IV,  IV,  IV,  sSR),
        "FIN":    (IV,  IV,  sFW, sFW, sLA, sLA, sLA, sTW, sCL, IV),
        "ACK":    (sES, IV,  sES, sES, sCW, sCW, sTW, sTW, sCL, IV),
        "RST":    (IV,  sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
        "NONE":   (IV,  IV,  IV,  IV,  IV,  IV,  IV,  IV,  IV,  IV),
    },
    "reply": {
        "SYN":    (IV,  sS2, IV,  IV,  IV,  IV,  IV,  sSS, IV,  sS2),
        "SYNACK": (IV,  sSR, IG,  IG,  IG,  IG,  IG,  IG,  IG,  sSR),
        "FIN":    (IV,  IV,  sFW, sFW, sLA, sLA, sLA, sTW, sCL, IV),
        "ACK":    (IV,  IG,  sSR, sES, sCW, sCW, sTW, sTW, sCL, IG),
        "RST":    (IV,  sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
        "NONE":   (IV,  IV,  IV,  IV,  IV,  IV,  IV,  IV,  IV,  IV),
    },
}

# tcp_valid_flags[]: flag combinations (ignoring ECE, CWR, PSH) conntrack accepts.
_VALID_FLAGS = frozenset({SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK,
                          FIN | ACK | URG, ACK, ACK | URG})

# outcomes of tcp_packet()
ACCEPT, INVALID, KILL, REOPEN = "accept", "invalid", "kill", "reopen"


def tcp_index(flags: int) -> str:
    """get_conntrack_index()."""
    if flags & RST:
        return "RST"
    if flags & SYN:
        return "SYNACK" if flags & ACK else "SYN"
    if flags & FIN:
        return "FIN"
    if flags & ACK:
        return "ACK"
    return "NONE"


def flags_valid(flags: int) -> bool:
    return (flags & (FIN | SYN | RST | ACK | URG)) in _VALID_FLAGS


def transition(direction: str, index: str, old: str) -> str:
    return _TABLE[direction][index][_IDX[old]]


def tcp_new_ok(flags: int, loose: bool) -> bool:
    """tcp_new(): may this packet open an entry? A SYN may; a mid-stream
    packet (pure ACK) only with nf_conntrack_tcp_loose=1."""
    new_state = transition(ORIGINAL, tcp_index(flags), sNO)
    if new_state == sSS:
        return True
    return new_state not in (IV, IG) and loose


def tcp_packet(e: ConntrackEntry, direction: str, flags: int, timeouts: Timeouts,
               now: float) -> tuple[str, str, str]:
    """tcp_packet(): advance the entry's TCP state for one packet.
    Returns (outcome, old_state, new_state)."""
    if e.tcp is None:
        e.tcp = TcpInfo()
    info = e.tcp
    e.refresh = None
    old = info.state
    index = tcp_index(flags)
    new = transition(direction, index, old)
    d = 0 if direction == ORIGINAL else 1

    if new == sSS and _IDX[old] >= _IDX[sTW]:
        # A SYN on a closed/aborted connection: reopen (delete and look up again).
        if any(info.close_init) or (info.last_dir == direction and info.last_index == "RST"):
            return REOPEN, old, new
        new = IG
    if new == IG:
        info.last_index, info.last_dir = index, direction
        return ACCEPT, old, old
    if new == IV:
        return INVALID, old, old

    info.last_index, info.last_dir, info.state = index, direction, new
    if old != new and new == sFW:
        info.close_init[d] = True
    timeout = timeouts.tcp_close if index == "RST" else timeouts.tcp(new)

    if not e.status & SEEN_REPLY:
        if flags & RST:
            return KILL, old, new          # only a RST came back: forget it at once
        if index == "SYN" and old == sSS:
            return ACCEPT, old, new        # SYN retransmit does not renew the timeout
        if new == sES and timeout > timeouts.tcp_unack:
            timeout = timeouts.tcp_unack   # picked up mid-stream, no reply yet
    elif not e.status & ASSURED and old in (sSR, sES) and new == sES:
        e.status |= ASSURED
    e.timeout_at = now + timeout
    e.refresh = timeout
    return ACCEPT, old, new
