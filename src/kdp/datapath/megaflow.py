# datapath.megaflow: new flows in the flow cache (Open vSwitch's megaflows with
# ct(commit, nat)). A reference run that creates conntrack entries (a new
# connection: DNAT to the endpoint the statistic rules drew by the flow's hash,
# the endpoint node's own entry) rests on the frame's source port only through
# those entries' tuples and those draws. Such a decision is kept under the
# frame's key without its source port, as one *branch* per outcome of the draws
# seen so far: the draws (guards), the entries to create (recipes: their
# tuples with the source port left open, status, mark, timeouts) and an engine
# entry replaying the rest (captures, answers, FDB; kdp.datapath.flowcache).
# A later frame of the same shape redraws for its own tuple (flow_hash, as the
# reference does), takes the branch the draws select, checks that every entry
# it would create is free in its table (no live entry on either tuple, no
# earlier generation of the tuple, room in the table), and creates them as the
# reference would (new_entry, confirm). Anything else goes to the reference.
from __future__ import annotations

from dataclasses import dataclass

from ..conntrack.entry import CONFIRMED, DYING, SRC_NAT, TcpInfo
from ..conntrack.keyed import fast_flow_hash as flow_hash, random31
from ..conntrack.track import UDP_STREAM_AFTER
from ..conntrack.tuples import Tuple

SPORT = -1          # a recipe's port that is the frame's source port


@dataclass(frozen=True)
class Recipe:
    """One conntrack entry a branch creates: its tuples with the frame's source
    port open (SPORT), and every other field as the reference left it."""

    table: object
    orig: tuple                 # (proto, src, dst, sport, dport), SPORT where the frame's
    reply: tuple
    status: int
    mark: int
    masq_dev: str | None
    timeout: float              # timeout_at = now + timeout (the last refresh's value)
    udp_stream: bool            # udp_stream_at = now + UDP_STREAM_AFTER (else 0.0)
    tcp: tuple | None           # (state, last_index, last_dir, close_init) or None
    removed: bool = False       # gone again before the run ended (a RST before any reply)

    def tuples(self, sport: int) -> tuple[Tuple, Tuple]:
        return _tuple(self.orig, sport), _tuple(self.reply, sport)


@dataclass(frozen=True)
class Branch:
    guards: tuple               # (seed, point, recipe index, test): the draws (see _repeats)
    recipes: tuple
    eid: int                    # the engine entry replaying the rest (kdp.datapath.flowcache)


def _tuple(t: tuple, sport: int) -> Tuple:
    proto, src, dst, a, b = t
    return Tuple(proto, src, dst, sport if a == SPORT else a, sport if b == SPORT else b)


def _template(t: Tuple, sport: int, at_sport: bool, at_dport: bool) -> tuple | None:
    """t with the frame's source port opened where expected; None when the port
    appears anywhere else (which port is the frame's would be ambiguous)."""
    a = SPORT if at_sport and t.sport == sport else t.sport
    b = SPORT if at_dport and t.dport == sport else t.dport
    if (at_sport and a != SPORT) or (at_dport and b != SPORT) or sport in (a, b):
        return None
    return (t.proto, t.src, t.dst, a, b)


def recipes_of(created: list, sport: int, now: float) -> tuple | str:
    """The recipes of the entries a recorded run created (table, entry), in
    the order they were confirmed; else why they cannot be made again."""
    out = []
    tables = set()
    for table, e in created:
        if id(table) in tables:
            return "two new entries in one table"
        tables.add(id(table))
        if e.sctp is not None or e.orig.proto not in (6, 17):
            return "a new entry of a protocol other than TCP and UDP"
        orig = _template(e.orig, sport, True, False)
        reply = _template(e.reply, sport, False, True)
        if orig is None or reply is None:
            return "the new entry's tuples are not the frame's port (NAT chose a port)"
        if e.created != now:
            return "the new entry's creation time is not the packet's"
        if e.status & DYING:            # made, confirmed and removed: only its traces stay
            out.append(Recipe(table, orig, reply, e.status & ~DYING, e.mark, e.masq_dev, 0.0,
                              False, None, removed=True))
            continue
        if e.refresh is None or now + e.refresh != e.timeout_at:
            return "the new entry's timeout is not the packet's"
        stream = e.orig.proto == 17
        if e.udp_stream_at != (now + UDP_STREAM_AFTER if stream else 0.0):
            return "the new entry's UDP stream time is not the packet's"
        tcp = None if e.tcp is None else (e.tcp.state, e.tcp.last_index, e.tcp.last_dir,
                                          tuple(e.tcp.close_init))
        out.append(Recipe(table, orig, reply, e.status, e.mark, e.masq_dev, e.refresh, stream, tcp))
    return tuple(out)


def guards_of(draws: list, created: list) -> tuple | str:
    """The statistic draws a recorded run made, on the entries it created."""
    where = {id(e): i for i, (_t, e) in enumerate(created)}
    out = []
    for seed, point, entry, test in draws:
        i = where.get(id(entry))
        if i is None:
            return "a draw on an entry the run did not create"
        out.append((seed, point, i, test))
    return tuple(out)


class Megaflows:
    """Branches by the frame's key without its source port."""

    def __init__(self) -> None:
        self.shapes: dict[bytes, list[Branch]] = {}
        self.by_eid: dict[int, bytes] = {}

    @staticmethod
    def shape(key: bytes) -> bytes:
        return key[:30] + b"\0\0" + key[32:]

    def add(self, key: bytes, branch: Branch) -> None:
        shape = self.shape(key)
        self.shapes.setdefault(shape, []).append(branch)
        self.by_eid[branch.eid] = shape

    def forget(self, eid: int) -> None:
        shape = self.by_eid.pop(eid, None)
        if shape is not None:
            left = [b for b in self.shapes.get(shape, ()) if b.eid != eid]
            if left:
                self.shapes[shape] = left
            else:
                self.shapes.pop(shape, None)

    def clear(self) -> None:
        self.shapes.clear()
        self.by_eid.clear()

    def select(self, key: bytes, sport: int) -> tuple | None:
        """(branch, its entries' tuples) for the branch whose draws this source
        port repeats, if any. Each draw is the reference's: by the new entry's
        original tuple and generation (a tuple the table saw before draws anew)."""
        branches = self.shapes.get(self.shape(key))
        if not branches:
            return None
        draws: dict = {}          # the branches of a shape share most draws: each made once
        for b in branches:
            for seed, point, i, test in b.guards:
                r = b.recipes[i]
                k = (seed, point, r.orig, id(r.table))
                h = draws.get(k)
                if h is None:
                    orig = _tuple(r.orig, sport)
                    h = draws[k] = flow_hash(seed, point, orig.proto, orig.src._ip, orig.dst._ip,
                                             orig.sport, orig.dport, r.table.generation(orig))
                if not _repeats(test, h):
                    break
            else:
                return b, [r.tuples(sport) for r in b.recipes]
        return None


def _repeats(test: tuple, h: int) -> bool:
    """Whether the draw hash h gives what the recorded draw gave: the statistic
    match's ("below", probability, matched): random31(h) < probability; nftables'
    ("numgen", modulus, number): reciprocal_scale(h >> 32, modulus)."""
    kind, a, b = test
    if kind == "below":
        return (random31(h) < a) == b
    return (((h >> 32) * a) >> 32) == b


def free(branch: Branch, tuples: list, now: float) -> bool:
    """Every entry the branch would create is free: no live entry on either
    tuple, room in the table, no earlier source NAT mapping to reuse."""
    for r, (orig, reply) in zip(branch.recipes, tuples):
        t = r.table
        if t.max_entries and len(t) + 1 >= t.max_entries:
            return False
        if t.lookup(orig, now) is not None or t.lookup(reply, now) is not None:
            return False
        if r.status & SRC_NAT and t.by_source(orig.proto, orig.src, orig.sport):
            return False                 # nf_nat would reuse that connection's mapping
    return True


def predicted_entries(branch: Branch, tuples: list, now: float) -> list:
    """What create() will make, as entry_fields() describes made entries."""
    return [(id(r.table), orig, reply, r.status | (DYING if r.removed else 0), r.mark, r.masq_dev,
             now) + ((None, None, None) if r.removed else
                     (now + r.timeout, now + UDP_STREAM_AFTER if r.udp_stream else 0.0, r.tcp))
            for r, (orig, reply) in zip(branch.recipes, tuples)]


def entry_fields(created: list) -> list:
    """The fields of entries a reference run made ((table, entry) as confirmed)
    that a branch's recipes make again (KDP_FASTPATH_VALIDATE compares them)."""
    return [(id(t), e.orig, e.reply, e.status, e.mark, e.masq_dev, e.created) +
            ((None, None, None) if e.status & DYING else
             (e.timeout_at, e.udp_stream_at, None if e.tcp is None else
              (e.tcp.state, e.tcp.last_index, e.tcp.last_dir, tuple(e.tcp.close_init))))
            for t, e in created]


def create(branch: Branch, tuples: list, now: float) -> None:
    """Make the branch's entries as the reference does (new_entry, confirm)."""
    for r, (orig, reply) in zip(branch.recipes, tuples):
        table = r.table
        rec, table.recorder = table.recorder, None      # (the flow cache's: no run to record)
        try:
            _make(table, r, orig, reply, now)
        finally:
            table.recorder = rec


def _make(table, r: Recipe, orig: Tuple, reply: Tuple, now: float) -> None:
    e = table.new_entry(orig, reply, now)
    e.status = r.status & ~CONFIRMED        # confirm() sets it
    e.mark, e.masq_dev = r.mark, r.masq_dev
    e.refresh = r.timeout
    e.timeout_at = now + r.timeout
    if r.udp_stream:
        e.udp_stream_at = now + UDP_STREAM_AFTER
    if r.tcp is not None:
        state, last_index, last_dir, close_init = r.tcp
        e.tcp = TcpInfo(state, last_index, last_dir, list(close_init))
    if not table.confirm(e, now):
        raise AssertionError(f"megaflow: {orig} was free but its entry clashed")
    if r.removed:
        table.remove(e)


