# conntrack.sctp: SCTP connection tracking as nf_conntrack_proto_sctp.c (Linux 6.4+)
# does it — the chunk checks, the verification-tag checks, the state transition
# table per chunk and direction, the states' timeouts and ASSURED on ESTABLISHED.
# No multi-homing (a secondary path's HEARTBEAT opens its own entry, as in the
# kernel, but nothing ties it to the primary one).
from __future__ import annotations

from kdp.wire import SCTP, SCTP_FLAG_T, Chunk, sctp_chunks

from .entry import ASSURED, ORIGINAL, REPLY, ConntrackEntry, SctpInfo
from .tcp import ACCEPT, INVALID
from .timeouts import Timeouts

STATES = ("NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
          "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT")
sNO, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS = STATES
sIV = None                                  # SCTP_CONNTRACK_MAX: invalid

INIT, INIT_ACK, SACK, HEARTBEAT, HEARTBEAT_ACK, ABORT, SHUTDOWN, SHUTDOWN_ACK, ERROR, \
    COOKIE_ECHO, COOKIE_ACK, SHUTDOWN_COMPLETE = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14
DATA = 0

# sctp_conntracks[dir][chunk row][old state]; chunks not listed keep the state.
_ROWS = (INIT, INIT_ACK, ABORT, SHUTDOWN, SHUTDOWN_ACK, ERROR, COOKIE_ECHO, COOKIE_ACK,
         SHUTDOWN_COMPLETE, HEARTBEAT, HEARTBEAT_ACK)
_TABLE = {
    ORIGINAL: (
        #  sNO  sCL  sCW  sCE  sES  sSS  sSR  sSA  sHS
        (sCL, sCL, sCW, sCE, sES, sCL, sCL, sSA, sCW),    # init
        (sCL, sCL, sCW, sCE, sES, sSS, sSR, sSA, sCL),    # init_ack
        (sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),    # abort
        (sCL, sCL, sCW, sCE, sSS, sSS, sSR, sSA, sCL),    # shutdown
        (sSA, sCL, sCW, sCE, sES, sSA, sSA, sSA, sSA),    # shutdown_ack
        (sCL, sCL, sCW, sCE, sES, sSS, sSR, sSA, sCL),    # error
        (sCL, sCL, sCE, sCE, sES, sSS, sSR, sSA, sCL),    # cookie_echo
        (sCL, sCL, sCW, sES, sES, sSS, sSR, sSA, sCL),    # cookie_ack
        (sCL, sCL, sCW, sCE, sES, sSS, sSR, sCL, sCL),    # shutdown_comp
        (sHS, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS),    # heartbeat
        (sCL, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS),    # heartbeat_ack
    ),
    REPLY: (
        (sIV, sCL, sCW, sCE, sES, sSS, sSR, sSA, sIV),
        (sIV, sCW, sCW, sCE, sES, sSS, sSR, sSA, sIV),
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sIV),
        (sIV, sCL, sCW, sCE, sSR, sSS, sSR, sSA, sIV),
        (sIV, sCL, sCW, sCE, sES, sSA, sSA, sSA, sIV),
        (sIV, sCL, sCW, sCL, sES, sSS, sSR, sSA, sIV),
        (sIV, sCL, sCE, sCE, sES, sSS, sSR, sSA, sIV),
        (sIV, sCL, sCW, sES, sES, sSS, sSR, sSA, sIV),
        (sIV, sCL, sCW, sCE, sES, sSS, sSR, sCL, sIV),
        (sIV, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS),
        (sIV, sCL, sCW, sCE, sES, sSS, sSR, sSA, sES),
    ),
}
_IDX = {s: i for i, s in enumerate(STATES)}
_ROW = {c: i for i, c in enumerate(_ROWS)}
_VTAG_EXEMPT = frozenset({INIT, SHUTDOWN_COMPLETE, COOKIE_ECHO, ABORT, SHUTDOWN_ACK, HEARTBEAT,
                          HEARTBEAT_ACK})
HEARTBEAT_VTAG_FAILED = 1


def new_state(direction: str, old: str, chunk: int) -> str | None:
    """sctp_new_state(): None is invalid."""
    row = _ROW.get(chunk)
    return old if row is None else _TABLE[direction][row][_IDX[old]]


def timeout(tmo: Timeouts, state: str) -> float:
    return getattr(tmo, "sctp_" + ("closed" if state == sNO else state.lower()))


def basic_checks(chunks: list[Chunk]) -> str | None:
    """do_basic_checks(): why the chunk list is invalid, or None."""
    if not chunks:
        return "sctp packet without chunks"
    flag = False
    for n, c in enumerate(chunks):
        flag = flag or c.type in (INIT, INIT_ACK, SHUTDOWN_COMPLETE)
        if (c.type in (COOKIE_ACK, COOKIE_ECHO) or flag) and n != 0:
            return f"sctp {c.name} chunk not alone or not first"
        if c.length == 0:
            return "sctp zero-length chunk"
    return None


def _init_tag(c: Chunk) -> int | None:
    return int.from_bytes(c.value[:4], "big") if len(c.value) >= 16 else None


def sctp_new(e: ConntrackEntry, sh: SCTP, chunks: list[Chunk]) -> str | None:
    """sctp_new(): a first packet may open an entry; why not, or None."""
    types = {c.type for c in chunks}
    if types & {ABORT, SHUTDOWN_COMPLETE, COOKIE_ACK}:
        return "sctp out-of-the-blue ABORT, SHUTDOWN COMPLETE or COOKIE ACK"
    info = e.sctp = SctpInfo()
    for c in chunks:
        st = new_state(ORIGINAL, sNO, c.type)
        if st in (sNO, sIV):
            return f"sctp {c.name} cannot open a connection"
        if c.type == INIT:
            tag = _init_tag(c)
            if sh.vtag or tag is None:
                return "sctp INIT with a nonzero verification tag" if sh.vtag else \
                    "sctp INIT chunk too short"
            info.vtag[1] = tag
        elif c.type == HEARTBEAT:
            info.vtag[0] = sh.vtag
        elif c.type == SHUTDOWN_ACK:
            info.vtag[1] = sh.vtag
    return None


def sctp_packet(e: ConntrackEntry, direction: str, sh: SCTP, chunks: list[Chunk], tmo: Timeouts,
                now: float, confirmed: bool) -> tuple[str, str, str, str | None]:
    """nf_conntrack_sctp_packet() after the checks above: (outcome, old state, new
    state, why invalid). Refreshes the timeout unless the packet is ignored."""
    info = e.sctp
    d, o = (0, 1) if direction == ORIGINAL else (1, 0)
    types = {c.type for c in chunks}
    if not types & _VTAG_EXEMPT and sh.vtag != info.vtag[d]:
        return INVALID, info.state, info.state, \
            f"sctp verification tag {sh.vtag:#x} != {info.vtag[d]:#x} ({direction})"
    old = new = info.state
    ignore = False
    for c in chunks:
        bad = None
        if c.type == INIT and sh.vtag != 0:
            bad = "sctp INIT with a nonzero verification tag"
        elif c.type in (ABORT, SHUTDOWN_COMPLETE):
            want = info.vtag[o] if c.flags & SCTP_FLAG_T else info.vtag[d]
            if sh.vtag != want:
                bad = f"sctp {c.name} verification tag {sh.vtag:#x} != {want:#x}"
        elif c.type == COOKIE_ECHO and sh.vtag != info.vtag[d]:
            bad = f"sctp COOKIE ECHO verification tag {sh.vtag:#x} != {info.vtag[d]:#x}"
        elif c.type == COOKIE_ACK:
            info.init = [False, False]
        elif c.type in (HEARTBEAT, HEARTBEAT_ACK):
            if info.vtag[d] == 0:
                info.vtag[d] = sh.vtag
            elif sh.vtag != info.vtag[d]:
                if DATA in types or ignore:
                    bad = f"sctp {c.name} verification tag {sh.vtag:#x} != {info.vtag[d]:#x}"
                elif c.type == HEARTBEAT:
                    info.flags |= HEARTBEAT_VTAG_FAILED
                    info.last_dir = direction
                    ignore = True
                    continue
                elif not info.flags & HEARTBEAT_VTAG_FAILED or info.last_dir == direction:
                    bad = f"sctp HEARTBEAT ACK verification tag {sh.vtag:#x} != {info.vtag[d]:#x}"
                else:
                    info.flags &= ~HEARTBEAT_VTAG_FAILED
                    info.vtag[d], info.vtag[o] = sh.vtag, 0
            elif info.flags & HEARTBEAT_VTAG_FAILED:
                info.flags &= ~HEARTBEAT_VTAG_FAILED
        if bad:
            return INVALID, old, new, bad
        old = info.state
        new = new_state(direction, old, c.type)
        if new is sIV:
            return INVALID, old, old, f"sctp {c.name} invalid in state {old} ({direction})"
        if c.type == INIT:
            tag = _init_tag(c)
            if tag is None:
                return INVALID, old, old, "sctp INIT chunk too short"
            if old == sNO or info.vtag[o] != tag:
                if info.init[d] and info.init[o]:
                    info.init[o] = False
                info.init[d] = True
            info.vtag[o] = tag
            if new == sCL and old == sCL and confirmed:
                ignore = True           # a retransmitted INIT does not keep the entry alive
        elif c.type == INIT_ACK:
            tag = _init_tag(c)
            if tag is None:
                return INVALID, old, old, "sctp INIT ACK chunk too short"
            vtag = info.vtag[o]
            if (not info.init[o] and vtag and vtag != tag) or \
                    (info.init[d] and info.init[o] and vtag != tag):
                return INVALID, old, old, "sctp INIT ACK tag does not match the INIT"
            info.vtag[o] = tag
        info.state = new
        if old != new and new == sES:
            e.status |= ASSURED
    if ignore:
        e.refresh = None
        return ACCEPT, old, new, None
    t = timeout(tmo, new)
    e.timeout_at, e.refresh = now + t, t
    return ACCEPT, old, new, None
