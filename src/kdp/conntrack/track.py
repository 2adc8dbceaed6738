# conntrack.track: nf_conntrack_in() — for one packet at PREROUTING/OUTPUT,
# find or create the entry, run the protocol tracker (TCP/UDP/ICMP/SCTP/generic),
# classify ICMP errors as RELATED to the connection they quote, and say what
# rules will see (ctinfo) or why the packet is INVALID. Does not rewrite
# packets (conntrack.nat) and does not confirm (the table's confirm()).
from __future__ import annotations

from kdp import errors
from kdp.wire import (ICMP, PROTO_ICMP, PROTO_TCP, PROTO_UDP, SCTP, TCP, UDP, Packet,
                      l4_checksum_ok, sctp_chunks, tcp_flag_str)

from . import sctp as sctpct
from . import tcp as tcpct
from .events import Event
from .entry import (ASSURED, ESTABLISHED, ESTABLISHED_REPLY, NEW, ORIGINAL, RELATED,
                    RELATED_REPLY, REPLY, SEEN_REPLY, ConntrackEntry, TcpInfo, ctinfo_state)
from .table import ConntrackTable
from .tuples import ICMP_VALID_NEW, Tuple, is_icmp_error, packet_tuple, quoted_packet

NR_ICMP_TYPES = 18
UDP_STREAM_AFTER = 2.0      # seconds a UDP flow must live before it may become a stream


class CtResult:
    """What conntrack decided for one packet. entry None and drop None means
    the packet goes on untracked as INVALID (`invalid` says why). (A plain
    class with slots, not a dataclass: one is made per packet at each hook
    that tracks.)"""

    __slots__ = ("entry", "direction", "ctinfo", "new", "drop", "invalid", "evicted", "events")

    def __init__(self, entry: ConntrackEntry | None = None, direction: str | None = None,
                 ctinfo: str | None = None, new: bool = False, drop: str | None = None,
                 invalid: str | None = None, evicted: list[ConntrackEntry] | None = None,
                 events: list | None = None):
        self.entry, self.direction, self.ctinfo, self.new = entry, direction, ctinfo, new
        self.drop, self.invalid = drop, invalid
        self.evicted = [] if evicted is None else evicted
        self.events = [] if events is None else events      # texts (str(), built only when read)

    def __eq__(self, other) -> bool:
        if other.__class__ is not CtResult:
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return "CtResult(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def conntrack_in(table: ConntrackTable, pkt: Packet, now: float, *,
                 prerouting: bool) -> CtResult:
    rec = table.recorder
    if rec is not None:
        res = _conntrack_in(table, pkt, now, prerouting)
        rec.ct_result(table, res)
        return res
    return _conntrack_in(table, pkt, now, prerouting)


def _conntrack_in(table: ConntrackTable, pkt: Packet, now: float, prerouting: bool) -> CtResult:
    if pkt.ip is None:
        return CtResult(invalid="not an IPv4 packet")
    if is_icmp_error(pkt):
        return _icmp_error(table, pkt, now, prerouting)
    t = packet_tuple(pkt)
    if t is None:
        return _invalid(table, "no tuple (fragment or truncated L4 header)")
    why = _proto_error(table, pkt, prerouting)
    if why:
        return _invalid(table, why)
    carried: list[str] = []
    for _attempt in range(2):
        res = _resolve(table, pkt, t, now)
        res.events[:0] = carried
        if res.entry is None:
            return res
        if table.recorder is not None and not res.new:
            table.recorder.ct_before(table, res.entry)
        outcome = _handle(table, res, pkt, now)
        if outcome == tcpct.REOPEN:
            table.remove(res.entry)
            carried = res.events + [f"conntrack reopen: old entry {res.entry.orig} removed"]
            continue
        if outcome == tcpct.INVALID:
            return _invalid(table, res.invalid or "invalid state transition", res.events)
        if outcome == tcpct.KILL:
            table.remove(res.entry)
            res.events.append("conntrack entry removed (RST before any reply)")
        if res.direction == REPLY and not res.entry.status & SEEN_REPLY:
            res.entry.status |= SEEN_REPLY
        return res
    return _invalid(table, "reopen loop")


def _invalid(table: ConntrackTable, why: str, events: list[str] | None = None) -> CtResult:
    table.stats["invalid"] += 1
    ev = list(events or [])
    ev.append(f"conntrack invalid: {why}")
    return CtResult(invalid=why, events=ev)


def _proto_error(table: ConntrackTable, pkt: Packet, prerouting: bool) -> str | None:
    """The l4proto->error() checks: bad flags, bad checksum (PREROUTING only)."""
    l4 = pkt.l4
    if isinstance(l4, TCP) and not tcpct.flags_valid(l4.flags):
        return "invalid tcp flag combination"
    if isinstance(l4, ICMP) and l4.type > NR_ICMP_TYPES:
        return f"invalid icmp type {l4.type}"
    if prerouting and table.checksum and isinstance(l4, (TCP, UDP, ICMP, SCTP)) \
            and not l4_checksum_ok(pkt):
        return f"bad {pkt.proto_name} checksum"
    return None


def _resolve(table: ConntrackTable, pkt: Packet, t: Tuple, now: float) -> CtResult:
    """resolve_normal_ct(): look up, or allocate an unconfirmed entry."""
    hit = table.lookup(t, now)
    if hit is not None:
        entry, direction = hit
        table.stats["found"] += 1
        if direction == REPLY:
            ctinfo = ESTABLISHED_REPLY
        else:
            ctinfo = ESTABLISHED if entry.status & SEEN_REPLY else NEW
        return CtResult(entry, direction, ctinfo, events=[Event("conntrack {} ({}) {}", ctinfo_state(ctinfo).lower(), direction, entry.orig)])
    reply = t.invert()
    if reply is None:
        return _invalid(table, f"cannot invert {t}")
    ok, evicted = table.make_room(t, now)
    events = [Event("conntrack early-drop {}", e.orig) for e in evicted]
    if not ok:
        events.append("nf_conntrack: table full, dropping packet")
        return CtResult(drop=errors.CONNTRACK_FULL, events=events)
    entry = table.new_entry(t, reply, now)
    if t.proto == PROTO_TCP:
        entry.tcp = TcpInfo()
    elif t.proto == PROTO_UDP:
        entry.udp_stream_at = now + UDP_STREAM_AFTER
    events.append(Event("conntrack new {}", t))
    return CtResult(entry, ORIGINAL, NEW, new=True, evicted=evicted, events=events)


def _handle(table: ConntrackTable, res: CtResult, pkt: Packet, now: float) -> str:
    """The per-protocol packet() handler; refreshes the timeout."""
    e, tmo = res.entry, table.timeouts
    l4 = pkt.l4
    if isinstance(l4, TCP):
        if res.new and not tcpct.tcp_new_ok(l4.flags, table.tcp_loose):
            res.invalid = f"tcp [{tcp_flag_str(l4.flags)}] cannot open a connection"
            return tcpct.INVALID
        outcome, old, new = tcpct.tcp_packet(e, res.direction, l4.flags, tmo, now)
        if outcome == tcpct.INVALID:
            res.invalid = f"tcp [{tcp_flag_str(l4.flags)}] invalid in state {old} ({res.direction})"
        elif old != new:
            res.events.append(Event("conntrack tcp {} -> {}", old, new))
        return outcome
    if isinstance(l4, SCTP):
        return _sctp(res, l4, tmo, now)
    if pkt.ip.proto == PROTO_UDP:
        if e.status & SEEN_REPLY:
            extra, stream = tmo.udp, False
            if now > e.udp_stream_at:
                extra, stream = tmo.udp_stream, not e.status & ASSURED
            e.timeout_at, e.refresh = now + extra, extra
            if stream:
                e.status |= ASSURED
                res.events.append("conntrack udp stream: ASSURED")
        else:
            e.timeout_at, e.refresh = now + tmo.udp, tmo.udp
        return tcpct.ACCEPT
    if pkt.ip.proto == PROTO_ICMP:
        e.refresh = None
        if e.orig.icmp_type not in ICMP_VALID_NEW:
            res.invalid = f"icmp type {e.orig.icmp_type} cannot open a connection"
            return tcpct.INVALID
        e.timeout_at, e.refresh = now + tmo.icmp, tmo.icmp
        return tcpct.ACCEPT
    e.timeout_at, e.refresh = now + tmo.generic, tmo.generic
    return tcpct.ACCEPT


def _sctp(res: CtResult, sh: SCTP, tmo, now: float) -> str:
    """nf_conntrack_sctp_packet(): chunk checks, a new entry's first chunks, then
    the verification tags and the state table (conntrack.sctp)."""
    e = res.entry
    chunks = sctp_chunks(sh)
    why = sctpct.basic_checks(chunks)
    if why is None and (res.new or e.sctp is None):
        why = sctpct.sctp_new(e, sh, chunks)
    if why is not None:
        res.invalid = why
        return tcpct.INVALID
    outcome, old, new, why = sctpct.sctp_packet(e, res.direction, sh, chunks, tmo, now,
                                                confirmed=not res.new)
    if outcome == tcpct.INVALID:
        res.invalid = why
    elif old != new:
        res.events.append(f"conntrack sctp {old} -> {new}")
    return outcome


def _icmp_error(table: ConntrackTable, pkt: Packet, now: float, prerouting: bool) -> CtResult:
    """nf_conntrack_icmpv4_error() + nf_conntrack_inet_error(): an ICMP error
    is RELATED to the entry of the packet it quotes."""
    if prerouting and table.checksum and not l4_checksum_ok(pkt):
        return _invalid(table, "bad icmp checksum")
    q = quoted_packet(pkt.l4)
    if q is None:
        return _invalid(table, "icmp error quotes no trackable packet")
    inner = q.tuple.invert()
    if inner is None:
        return _invalid(table, f"icmp error about untrackable {q.tuple}")
    hit = table.lookup(inner, now)
    if hit is None:
        return _invalid(table, f"icmp error about unknown connection {q.tuple}")
    entry, direction = hit
    if entry.tuple(direction).dst != pkt.ip.dst:
        return _invalid(table, f"icmp error outer daddr {pkt.ip.dst} != "
                               f"{entry.tuple(direction).dst}")
    ctinfo = RELATED_REPLY if direction == REPLY else RELATED
    return CtResult(entry, direction, ctinfo,
                    events=[Event("conntrack related ({}) {}", direction, entry.orig)])
