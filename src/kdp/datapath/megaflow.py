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
#
# A TCP SYN to a listener also changes sockets: the listener's request sock
# answers SYN-ACK (its ISN and timestamps are the frame's own), the client's
# stack resets it (no socket) or kdp run's capture-owned socket takes it (live
# replay). Such a branch keeps *socket steps*: each delivery of the recorded
# run, the segment as delivered (a template of the frame or of an earlier
# step's answer) and what it did. A later frame checks that none of the sockets
# the steps touch exist yet and that its TCP options are the recorded ones but
# for the timestamps, then the steps run the real socket code on its own
# segments, and their answers are the sources the engine derives the
# answers' captures from.
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from .. import wire
from ..fast.replay import apply_template

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
class Step:
    """One delivery of a new connection's recorded run (Delivery.event)."""

    table: object               # the namespace's SocketTable
    source: int                 # the segment is a template of: 0 the frame, k the k-th answer
    template: bytes             # kdp.fast.replay.apply_template's blob (offset 0)
    key: tuple                  # the socket's (local ip, port, remote ip, port), SPORT open
    event: str
    answers: tuple              # the IP total length of each answer it sent


@dataclass(frozen=True)
class Branch:
    guards: tuple               # (seed, point, recipe index, test): the draws (see _repeats)
    recipes: tuple
    eid: int                    # the engine entry replaying the rest (kdp.datapath.flowcache)
    steps: tuple = ()           # socket steps (Step), in delivery order
    syn: tuple | None = None    # with steps: (IP total length, TCP options with TSval/TSecr zeroed)
    lb: tuple = ()              # the cloud load balancer's draws: (balancer, src, dst, dport, proto, n, pick)


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
                if all(lb.pick(src, sport, dst, dport, proto, n) == pick
                       for lb, src, dst, dport, proto, n, pick in b.lb):
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




# --- socket steps -------------------------------------------------------------
STEP_EVENTS = frozenset({"syn", "rst", "closed", "live"})


def syn_signature(frame: bytes) -> tuple | None:
    """What a SYN's answers rest on besides its addresses and ports: its IP
    total length and TCP options, their timestamps zeroed (the SYN-ACK echoes
    the frame's own). None when the options do not parse."""
    end = 34 + (frame[46] >> 4) * 4
    opts = bytearray(frame[54:end])
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2 or i + opts[i + 1] > len(opts):
            return None
        if kind == 8 and opts[i + 1] == 10:
            opts[i + 2:i + 10] = bytes(8)
        i += opts[i + 1]
    return frame[16:18], bytes(opts)


def step_key(key: tuple, sport: int) -> tuple:
    lip, lport, rip, rport = key
    return lip, sport if lport == SPORT else lport, rip, sport if rport == SPORT else rport


def sockets_free(branch: Branch, frame: bytes, live, dev=None) -> bool:
    """A frame of a branch with socket steps meets what the recorded run met:
    the same options (but timestamps) and length, no socket yet on any 4-tuple
    the steps touch, no capture-owned flow for it (live replay)."""
    if syn_signature(frame) != branch.syn:
        return False
    sport = (frame[34] << 8) | frame[35]
    for st in branch.steps:
        key = step_key(st.key, sport)
        t = st.table
        if key in t.tcp or key in t.capture_owned or ("tcp", *key) in t.clients:
            return False
    if live is not None:
        key = (IPv4Address(frame[26:30]), sport, IPv4Address(frame[30:34]),
               (frame[36] << 8) | frame[37])
        if key in live.flows or (key[0], key[1]) in live.by_local:
            return False
    return True


class StepDiverged(AssertionError):
    """A socket step did not do what the recorded run's did (a flow cache bug:
    sockets_free() admits only frames that take the recorded path)."""


def run_steps(branch: Branch, frame: bytes, now: float) -> list:
    """Deliver the frame's segments as the recorded run did, through the real
    socket code: [the frame, each answer in order] (Ethernet frames, the
    answers' MACs blank, as the sockets emitted them)."""
    srcs = [frame]
    for st in branch.steps:
        seg = apply_template(srcs[st.source], st.template, 0)
        res = st.table.deliver(wire.parse(seg), now)
        lengths = tuple(len(wire.emit(a)) - 14 for a in res.answers)
        if res.event != st.event or lengths != st.answers or res.template is not None:
            raise StepDiverged(f"socket step {st.event} on {st.table.ns_name} did "
                               f"{res.event or res.detail!r} for {seg.hex()}")
        srcs.extend(wire.emit(a) for a in res.answers)
    return srcs


def dry_steps(branch: Branch, frame: bytes, now: float, live, dev=None) -> list:
    """run_steps() (after live replay's claim of the SYN, when live) leaving
    every socket as it was: KDP_FASTPATH_VALIDATE's prediction."""
    sport = (frame[34] << 8) | frame[35]
    saved = []
    for st in branch.steps:
        key = step_key(st.key, sport)
        for d in (st.table.tcp, st.table.capture_owned):
            saved.append((d, key, d.get(key, _ABSENT)))
        saved.append((st.table, "_now", st.table._now))
    if live is not None:
        key = (IPv4Address(frame[26:30]), sport, IPv4Address(frame[30:34]),
               (frame[36] << 8) | frame[37])
        saved.append((live.flows, key, live.flows.get(key, _ABSENT)))
        saved.append((live.by_local, key[:2], live.by_local.get(key[:2], _ABSENT)))
        table = live.table if dev is None else dev.namespace.sockets
        if table is not None:
            saved.append((table.capture_owned, key, table.capture_owned.get(key, _ABSENT)))
    try:
        if live is not None:
            live.outbound(frame, wire.parse(frame), dev)
        return run_steps(branch, frame, now)
    finally:
        for d, key, v in reversed(saved):
            if isinstance(d, dict):
                if v is _ABSENT:
                    d.pop(key, None)
                else:
                    d[key] = v
            else:
                setattr(d, key, v)


_ABSENT = object()
