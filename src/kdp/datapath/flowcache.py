# datapath.flowcache: the Open vSwitch idea applied to kdp. The reference walk
# stays the authority; while it handles a frame a Recorder notes what the
# decision rested on (conntrack entries and the timeouts they got, FDB entries
# learnt and looked up, sockets that answered without changing, rule counters)
# and anything that makes it unrepeatable (a new entry, a state change, a
# volatile rule, an app, ARP). A repeatable decision becomes a cache entry: a
# replay program for the engine (kdp.fast.FlowEngine: compiled, or its pure
# twin) keyed by the frame's headers, whose every capture is derived from the
# frame and checked byte for byte against what the reference produced. State
# the engine touches lives in slots, written back before the reference runs
# again; entries are forgotten when what they rest on changes (the datapath's
# change log, Datapath.watch: kdp.watch).
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field

from .. import wire
from ..fast.replay import ICMP_ERROR, answer_source, apply_template, error_source, rst_source
from ..conntrack.entry import SEEN_REPLY
from ..conntrack.tuples import Tuple
from .megaflow import SPORT, STEP_EVENTS, Branch, Megaflows, Step, guards_of, recipes_of, syn_signature
from ..fast.contract import (FLOW_OP, FLOW_OVERWRITE, FLOW_TEMPLATE, OP_ANSWER, OP_CAPTURE, OP_CT,
                             OP_FDB_CHECK, OP_FDB_LEARN, OP_GEN_RST)

# Header bytes a capture may differ in from its source: MACs, TTL, addresses,
# ports (checksums are adjusted, everything else is carried through).
_REWRITABLE = frozenset(range(0, 12)) | {22} | frozenset(range(26, 38))
_CHECKSUMS = {6: {24, 25, 50, 51}, 17: {24, 25, 40, 41}}


class Recorder:
    """What one reference run rested on and changed (see module comment)."""

    def __init__(self, datapath) -> None:
        self.dp = datapath
        self.counted: list = []
        self.guards: list = []
        self.begin()

    def begin(self) -> None:
        self.ops: list[tuple] = []
        self.problems: list[str] = []
        self.before: dict[int, tuple] = {}
        self.found: dict[int, list] = {}
        self.socks: dict[int, object] = {}
        self.deps: set = set()
        self.rst: bytes | None = None
        self.answer: bytes | None = None       # a template answer (Delivery.template), as the stack sent it
        self.new_entries: list = []            # (table, entry) conntrack allocated (a new flow)
        self.created: list = []                # (table, entry) confirmed, in order (kdp.datapath.megaflow)
        self.deliveries: list = []             # (table, segment as delivered, Delivery)
        self.socket_problems: list[str] = []   # sockets changed: a megaflow's socket steps, if anything
        self.lb_picks: list = []               # the cloud load balancer's 5-tuple draws (Branch.lb)
        self.guards.clear()                    # the statistic draws by flow hash made
        self.legs: list[str] = []              # the leg of each entry of counted
        self.counted.clear()
        self.generation = self.dp.watch.generation

    # --- called from the reference path --------------------------------------
    def ct_before(self, table, entry) -> None:
        if id(entry) not in self.before:
            self.before[id(entry)] = (entry, _ct_state(entry))
        self.found.setdefault(id(table), [table, 0])[1] += 1

    def ct_result(self, table, res) -> None:
        e = res.entry
        if e is not None and res.new and not res.drop:
            self.new_entries.append((table, e))     # a new flow: a megaflow, if confirmed
            return
        if e is not None and not res.drop and any(e is c for _t, c in self.created):
            return                                  # (an ICMP error about it): its recipe's final state
        if e is None or res.new or res.drop or id(e) not in self.before:
            self.problems.append("conntrack did not find an established entry")
            return
        if e.orig.proto == wire.PROTO_SCTP:
            self.problems.append("SCTP is left to the reference path")
            return
        now = self.dp.now
        bound = math.inf
        if e.orig.proto == wire.PROTO_UDP and e.status & SEEN_REPLY and now <= e.udp_stream_at:
            bound = e.udp_stream_at
        self.ops.append(("ct", table, e, e.refresh, bound))

    def lb_pick(self, lb, pkt, choice) -> None:
        ip, l4 = pkt.ip, pkt.l4
        proto = "TCP" if isinstance(l4, wire.TCP) else "UDP"
        fe = lb.frontends[(ip.dst, proto, l4.dport)]
        n = len(fe.healthy)
        self.lb_picks.append((lb, ip.src, l4.sport, ip.dst, l4.dport, proto, n,
                              lb.pick(ip.src, l4.sport, ip.dst, l4.dport, proto, n)))

    def ct_confirmed(self, table, entry) -> None:
        self.created.append((table, entry))

    def fdb_learn(self, br, mac: str, port) -> None:
        e = br.fdb.get(mac)
        if e is not None and e.local:
            return
        if e is None or e.port is not port:
            self.problems.append(f"{br.name} learns {mac}")
            self.dp.watch.touch(("fdb", id(br), mac))
            return
        self.ops.append(("fdb_learn", br, mac))

    def fdb_lookup(self, br, mac: str, out) -> None:
        if out is None:
            self.problems.append(f"{br.name} floods {mac}")
            return
        e = br.fdb.get(mac)
        if e is not None and not e.local:
            self.ops.append(("fdb_check", br, mac))

    def delivery(self, table, pkt, res) -> None:
        self.deliveries.append((table, pkt, res))         # (frozen packets: emitted if a step is built)
        if res.template is not None:
            # an echo (UDP echo app, ICMP echo reply: the request mirrored) or an
            # ICMP error quoting the request: only its IP ID is drawn, from the
            # namespace's ip_idents
            if len(res.answers) != 1 or self.answer is not None or self.rst is not None:
                self.problems.append("more than one answer")
                return
            kind, idents, bucket = res.template
            self.answer = wire.emit(res.answers[0])
            # an ICMP error quotes the datagram as delivered: its bytes are the quote's template
            delivered = wire.emit(pkt) if kind == ICMP_ERROR else None
            self.ops.append(("answer", kind, idents, bucket, delivered))
        elif not res.stateless:
            self.socket_problems.append(f"socket layer: {res.detail}")
            return
        ip, l4 = pkt.ip, pkt.l4
        self.socks[id(table)] = table
        if isinstance(l4, wire.ICMP):
            return                       # echo and echo reply: no socket lookup by port
        self.deps.add(("sock", id(table), (ip.dst, l4.dport, ip.src, l4.sport)))
        if res.template is not None:
            return
        if res.answers:
            a = res.answers[0]
            if len(res.answers) > 1 or not isinstance(a.l4, wire.TCP) or not a.l4.flags & wire.RST \
                    or self.rst is not None or self.answer is not None:
                self.problems.append("an answer other than one RST")
            else:
                self.rst = wire.emit(a)

    # --- after the run ---------------------------------------------------------
    def finish(self) -> list:
        """Tokens of state this run changed; problems say whether it may be cached."""
        changed = []
        if None in self.counted:
            self.problems.append("a volatile rule was evaluated")
        created = {id(e) for _t, e in self.created}
        if any(id(e) not in created for _t, e in self.new_entries):
            self.problems.append("a new conntrack entry was not confirmed")
        for eid, (entry, state) in self.before.items():
            if eid not in created and _ct_state(entry) != state:
                changed.append(("ct", eid))
                self.problems.append("the conntrack entry changed")
        if self.dp.watch.generation != self.generation:
            self.problems.append("routes, rules, neighbours or listeners changed")
        if not self.new_entries:              # (a new flow's: its megaflow's socket steps)
            self.problems.extend(self.socket_problems)
        return changed


# Entry fields that are not part of the state a cached decision rests on: the
# timeout (slots carry it) and the recorder's own note of the last refresh.
_CT_VOLATILE = ("timeout_at", "refresh")


def _ct_state(e) -> tuple:
    """Everything of a conntrack entry but its timeout, as a comparable tuple:
    every field (so a field added later is covered too), and of a field that
    is a mutable object (TCP or SCTP protocol state) its own fields."""
    return tuple(v if v.__class__ in _PLAIN else _value_state(v)
                 for k, v in vars(e).items() if k not in _CT_VOLATILE)


_PLAIN = frozenset({int, float, str, bool, type(None), Tuple})   # immutable, compared by value


def _value_state(v):
    if v.__class__ in _PLAIN:
        return v
    if isinstance(v, list):
        return tuple(_value_state(x) for x in v)
    if hasattr(v, "__dict__"):
        return tuple(_value_state(x) for x in vars(v).values())
    return v


# How a rule a cached entry passes counts bytes per replay: the frame's IP
# length (the request leg), its answer's (an OP_ANSWER's reply leg), or fixed.
LEN_FIXED, LEN_REQUEST, LEN_ANSWER = 0, 1, 2


@dataclass
class Meta:
    """The Python side of one cache entry: what to write back per hit."""

    counted: list
    found: list
    socks: list
    disposition: str
    tokens: list = field(default_factory=list)
    ipid: list = field(default_factory=list)      # IP ID slots its answer draws from
    answer_kind: int = 0                          # its OP_ANSWER's kind (0: none)
    outcome: tuple | None = None       # kdp.outcomes' record of the frame the entry was built from


class FlowCache:
    """Cache entries, slots and their write-back; invalidation by token."""

    def __init__(self, engine, datapath) -> None:
        self.engine, self.dp = engine, datapath
        self.meta: dict[int, Meta] = {}
        self.by_token: dict = {}
        self.ct_slots: dict[int, int] = {}         # id(entry) -> slot (ct_slot_entry holds it)
        self.fdb_slots: dict[tuple, int] = {}      # (id(br), mac) -> slot
        self.ct_slot_entry: dict[int, object] = {}
        self.fdb_slot_key: dict[int, tuple] = {}
        self.ipid_slots: dict[tuple, int] = {}      # (id(ip_idents), bucket) -> slot
        self.ipid_slot_key: dict[int, tuple] = {}   # slot -> (ip_idents, bucket)
        self.removed: list = []
        self.tally: dict[str, int] = {}            # replayed frames per disposition
        self.on_hits = None                        # (Meta, hits, IP bytes, last time): kdp run's outcomes
        datapath.bind_watch()
        self.watch = datapath.watch
        self.generation = self.watch.generation
        self.recorder = Recorder(datapath)
        self.megaflows = Megaflows()               # new flows (kdp.datapath.megaflow)
        self.megaflows_on = False                  # no rule reads the source port
        self._branches = 0
        self.carry_psh = False
        # id(ruleset) -> (ruleset, reads TCP flags): a ruleset is scanned once (rules
        # change by loading a new one), not at every generation change
        self._flag_readers: dict[int, tuple] = {}
        self._nft_readers: dict[int, tuple] = {}    # id(nft engine) -> (engine, reads a source port)
        self._set_carry_psh()
        datapath.rec = self.recorder
        self.idents = []                            # every namespace's ip_idents (their .changed noted)
        for ns in datapath.namespaces.values():
            nf = ns.netfilter
            if nf is not None:
                nf.counted = self.recorder.counted
                nf.conntrack.recorder = self.recorder
                nf.conntrack.on_remove = self._ct_removed
            if ns.sockets is not None:
                ns.sockets.idents.changed = set()
                self.idents.append(ns.sockets.idents)
        self.watch.tokens = []

    def _set_carry_psh(self) -> None:
        """PSH changes no decision unless a rule reads TCP flags (--tcp-flags,
        --syn); then it stays in the key. Call with no entries cached."""
        known, self._flag_readers = self._flag_readers, {}
        for ns in self.dp.namespaces.values():
            if ns.netfilter is not None:
                rs = ns.netfilter.ruleset
                hit = known.get(id(rs))
                self._flag_readers[id(rs)] = hit if hit is not None and hit[0] is rs else \
                    (rs, _reads_tcp_flags(rs), _reads_sport(rs))
        self.carry_psh = not any(reads for _rs, reads, _s in self._flag_readers.values())
        self.engine.set_carry_psh(self.carry_psh)
        # a new flow's decision is a megaflow (keyed without the source port) only
        # where no rule (iptables or nftables) reads that port
        nfts = [ns.netfilter.nft for ns in self.dp.namespaces.values()
                if ns.netfilter is not None and ns.netfilter.nft is not None]
        self.megaflows_on = not any(sport for _rs, _f, sport in self._flag_readers.values()) \
            and not any(self._nft_reads_sport(e) for e in nfts)
        for ns in self.dp.namespaces.values():
            if ns.netfilter is not None:
                ns.netfilter.guards = self.recorder.guards if self.megaflows_on else None

    def _nft_reads_sport(self, engine) -> bool:
        hit = self._nft_readers.get(id(engine))
        if hit is None or hit[0] is not engine:
            hit = self._nft_readers[id(engine)] = (engine, any(
                _NFT_SPORT.search(rule.text) for table in engine.tables
                for chain in table.chains.values() for rule in chain.rules))
        return hit[1]

    # --- slots ----------------------------------------------------------------
    def _ct_slot(self, entry) -> int:
        slot = self.ct_slots.get(id(entry))
        if slot is None:
            slot = self.ct_slots[id(entry)] = self.engine.ct_new(entry.timeout_at)
            self.ct_slot_entry[slot] = entry
        return slot

    def _fdb_slot(self, br, mac: str) -> int:
        k = (id(br), mac)
        slot = self.fdb_slots.get(k)
        if slot is None:
            slot = self.fdb_slots[k] = self.engine.fdb_new(br.fdb[mac].updated)
            self.fdb_slot_key[slot] = (br, mac)
        return slot

    def _ipid_slot(self, idents, bucket: int) -> int:
        k = (id(idents), bucket)
        slot = self.ipid_slots.get(k)
        if slot is None:
            counter, tstamp, key = idents.state(bucket)
            slot = self.ipid_slots[k] = self.engine.ipid_new(counter, tstamp, key)
            self.ipid_slot_key[slot] = (idents, bucket)
        return slot

    def _ct_removed(self, entry) -> None:
        slot = self.ct_slots.pop(id(entry), None)
        if slot is not None:
            self.engine.ct_set(slot, -math.inf)
            self.ct_slot_entry.pop(slot, None)
        self.removed.append(("ct", id(entry)))

    def write_back(self, full: bool = True) -> None:
        """The engine's hot state into the reference objects: conntrack
        timeouts and FDB ages always; with full, also what only the output reads
        (rule counters, conntrack statistics, dispositions, socket clocks)."""
        if full:
            cts, fdbs, ipids, entries = self.engine.take_dirty()
        else:
            (cts, fdbs, ipids), entries = self.engine.take_dirty_slots(), ()
        for slot in cts:
            e = self.ct_slot_entry.get(slot)
            if e is not None:
                e.timeout_at = self.engine.ct_get(slot)
        for slot in fdbs:
            br, mac = self.fdb_slot_key[slot]
            fe = br.fdb.get(mac)
            if fe is not None:
                fe.updated = self.engine.fdb_get(slot)
        for slot in ipids:
            idents, bucket = self.ipid_slot_key[slot]
            idents.state(bucket)[:2] = self.engine.ipid_get(slot)
        for eid in entries:
            self._apply_hits(eid)

    def _apply_hits(self, eid: int) -> None:
        n, last, ip_bytes, answer_bytes = self.engine.take_hits(eid)
        m = self.meta.get(eid)
        if not n or m is None:
            return
        self.tally[m.disposition] = self.tally.get(m.disposition, 0) + n
        if self.on_hits is not None:
            self.on_hits(m, n, ip_bytes, last)
        for obj, nbytes, length in m.counted:
            obj.packets += n
            obj.bytes += ip_bytes if length == LEN_REQUEST else answer_bytes if length == LEN_ANSWER \
                else n * nbytes
        for table, k in m.found:
            table.stats["found"] += n * k
        for t in m.socks:
            t._now = max(t._now, last)

    def close(self) -> None:
        """Stop watching: the reference objects no longer report to this cache."""
        if self.dp.rec is self.recorder:
            self.dp.rec = None
        for ns in self.dp.namespaces.values():
            nf = ns.netfilter
            if nf is not None and nf.counted is self.recorder.counted:
                nf.counted = None
                nf.guards = None
                nf.conntrack.recorder = None
                nf.conntrack.on_remove = None
        for idents in self.idents:
            idents.changed = None
        self.watch.tokens = None

    def _forget_changed(self, tokens: list) -> None:
        """Forget the entries resting on what changed (everything, when the
        generation moved)."""
        watch = self.watch
        tokens = tokens + self.removed + (watch.tokens or [])
        self.removed = []
        if watch.tokens is not None:
            watch.tokens.clear()
        if watch.generation != self.generation:
            self.generation = watch.generation
            self.forget_all()
            self._set_carry_psh()
        for tok in tokens:
            for eid in self.by_token.pop(tok, ()):
                self._forget(eid)

    def settle(self) -> None:
        """Forget what changes outside a reference run touched (a megaflow's
        new entries and sockets: expiries they swept, tokens they touched), so
        that the change log does not grow between reference runs."""
        if self.removed or self.watch.tokens:
            self._forget_changed([])
        self._sync_idents()

    def _sync_idents(self) -> None:
        """ip_idents buckets the reference objects drew from since the last
        call into the engine's IP ID slots."""
        for idents in self.idents:
            if idents.changed:
                for bucket in idents.changed:
                    slot = self.ipid_slots.get((id(idents), bucket))
                    if slot is not None:
                        self.engine.ipid_set(slot, *idents.state(bucket)[:2])
                idents.changed.clear()

    def revalidate(self) -> None:
        """After a change from outside the walk (an API call between frames)."""
        self._forget_changed([])
        for slot, entry in self.ct_slot_entry.items():
            self.engine.ct_set(slot, entry.timeout_at)
        for slot, (br, mac) in self.fdb_slot_key.items():
            fe = br.fdb.get(mac)
            self.engine.fdb_set(slot, fe.updated if fe is not None else -math.inf)
        for slot, (idents, bucket) in self.ipid_slot_key.items():
            self.engine.ipid_set(slot, *idents.state(bucket)[:2])

    # --- after each reference run ---------------------------------------------
    def after_run(self) -> list[str]:
        """Forget what the run changed; refresh the slots it touched. Returns
        the problems that keep this run's decision out of the cache."""
        rec = self.recorder
        self._forget_changed(rec.finish())
        self._sync_idents()
        for op in rec.ops:
            if op[0] == "ct":
                slot = self.ct_slots.get(id(op[2]))
                if slot is not None:
                    self.engine.ct_set(slot, op[2].timeout_at)
            elif op[0] == "answer":
                continue
            else:
                slot = self.fdb_slots.get((id(op[1]), op[2]))
                fe = op[1].fdb.get(op[2])
                if slot is not None and fe is not None:
                    self.engine.fdb_set(slot, fe.updated)
        return rec.problems

    def predict_recorded(self, eid: int, frame: bytes, now: float, index: int, sources=()):
        """The engine's replay of the frame an entry was just built from, at the
        reference's time: its answer's IP ID slots rewound to just before the
        reference drew (counter - 1 in the same jiffy draws what it drew)."""
        saved = [(slot, self.engine.ipid_get(slot)) for slot in self.meta[eid].ipid]
        for slot, (counter, tstamp) in saved:
            self.engine.ipid_set(slot, (counter - 1) & 0xFFFFFFFF, tstamp)
        try:
            return self.engine.predict(eid, frame, now, index, *sources[1:3])
        finally:
            for slot, (counter, tstamp) in saved:
                self.engine.ipid_set(slot, counter, tstamp)

    def forget(self, eid: int) -> None:
        self._forget(eid)

    def _forget(self, eid: int) -> None:
        if eid in self.meta:
            self._apply_hits(eid)            # replays not yet counted
            del self.meta[eid]
            self.engine.remove(eid)
            self.megaflows.forget(eid)

    def forget_all(self) -> None:
        for eid in list(self.meta):
            self._forget(eid)
        self.by_token.clear()
        self.megaflows.clear()

    # --- building an entry ------------------------------------------------------
    def build_megaflow(self, frame: bytes, key: bytes, disposition: str, sink_of,
                       captured: list) -> int | str:
        """Make the recorded run of a new flow a megaflow branch (kdp.datapath.
        megaflow): the engine entry replaying what is not conntrack, and the
        recipes and draws that make the rest; its engine id, else why not."""
        rec = self.recorder
        if not self.megaflows_on:
            return "a rule reads the source port"
        if frame[23] not in (6, 17):
            return "a new flow of a protocol other than TCP and UDP"
        sport = (frame[34] << 8) | frame[35]
        recipes = recipes_of(rec.created, sport, self.dp.now)
        if isinstance(recipes, str):
            return recipes
        guards = guards_of(rec.guards, rec.created)
        if isinstance(guards, str):
            return guards
        lb = []
        for balancer, src, lb_sport, dst, dport, proto, n, index in rec.lb_picks:
            if lb_sport != sport:
                return "the cloud load balancer hashed a port other than the frame's"
            lb.append((balancer, src, dst, dport, proto, n, index))
        steps, sources, syn = (), None, None
        if rec.socket_problems:
            got = self._socket_steps(frame, sport)
            if isinstance(got, str):
                return got
            steps, sources = got
            syn = syn_signature(frame)
            if syn is None:
                return "the SYN's TCP options do not parse"
        self._branches += 1
        # a key no frame has (its IP length bytes are 0 in every frame's key)
        own = bytes(16) + b"\x01\x00" + struct.pack("<Q", self._branches) + bytes(10)
        self.built_sources = sources or ()     # (the runner checks the branch's replay with them)
        eid = self.build(frame, own, (b"", b""), disposition, sink_of, captured, new_flow=True,
                         sources=sources)
        if isinstance(eid, int):
            self.megaflows.add(key, Branch(guards, recipes, eid, steps, syn, tuple(lb)))
        return eid

    def _socket_steps(self, frame: bytes, sport: int) -> tuple | str:
        """The recorded run's deliveries as socket steps (kdp.datapath.megaflow)
        and the sources they make: (steps, [the frame, each answer]); else why not."""
        rec = self.recorder
        if frame[23] != 6 or frame[47] & (wire.SYN | wire.ACK | wire.RST | wire.FIN) != wire.SYN:
            return rec.socket_problems[0]             # (socket steps start from a SYN)
        if rec.answer is not None:
            return "a template answer beside socket steps"
        srcs = [frame[:14 + ((frame[16] << 8) | frame[17])]]
        steps = []
        for table, pkt, res in rec.deliveries:
            if res.event not in STEP_EVENTS or res.template is not None:
                return f"socket layer: {res.detail}"
            seg = wire.emit(pkt)
            for which, src in enumerate(srcs):
                tmpl = derive_template(src, seg)
                if tmpl is not None and apply_template(src, tmpl, 0) == seg:
                    break
            else:
                return "a delivered segment is not derived from the frame or an answer"
            lip, lport, rip, rport = pkt.ip.dst, pkt.l4.dport, pkt.ip.src, pkt.l4.sport
            if (lport == sport) == (rport == sport):
                return "the frame's source port is not one port of a socket the SYN reached"
            key = (lip, SPORT if lport == sport else lport, rip, SPORT if rport == sport else rport)
            answers = [wire.emit(a) for a in res.answers]
            steps.append(Step(table, which, tmpl, key, res.event, tuple(len(a) - 14 for a in answers)))
            srcs.extend(answers)
        if len(srcs) > 3:
            return "more than two answers to a SYN"
        return tuple(steps), srcs

    def build(self, frame: bytes, key: bytes, line: tuple, disposition: str,
              sink_of, captured: list, new_flow: bool = False,
              sources: list | None = None) -> int | str:
        """Make the recorded run a cache entry: its id, else why not. captured:
        (device, bytes) of every capture the run made, in order. new_flow: a
        megaflow branch's entry (the entries the run created are not its slots).
        sources: a megaflow's socket steps' [frame, answers...], which the
        caller hands to the engine per frame (no RST or answer of its own)."""
        rec = self.recorder
        created = {id(e) for _t, e in rec.created}
        if rec.new_entries and not new_flow:
            return "a new flow (a megaflow branch, kdp.datapath.megaflow)"
        src0 = frame[:14 + ((frame[16] << 8) | frame[17])]
        srcs = [src0, None, None] if sources is None else list(sources) + [None] * (3 - len(sources))
        prog = bytearray()
        if rec.rst is not None and sources is None:
            flags = frame[47]
            if flags & wire.ACK:
                mode, flag_len = 1, 0
            else:
                mode = 2
                flag_len = (1 if flags & wire.SYN else 0) + (1 if flags & wire.FIN else 0)
            prog += FLOW_OP.pack(OP_GEN_RST, mode, 0, flag_len, 0.0, 0.0)
            srcs[1] = rst_source(rec.rst, src0, mode, flag_len)
            if srcs[1] != rec.rst:
                return "the RST is not tcp_v4_send_reset's"
        tokens = set(rec.deps)
        ipid_used: list[int] = []
        blob = bytearray()
        answer_kind = 0
        for op in rec.ops:
            if op[0] == "ct":
                _, _table, entry, refresh, bound = op
                if id(entry) in created:
                    continue                  # made by the branch's recipe
                if new_flow:
                    return "a new flow that also rests on an existing entry"
                slot = self._ct_slot(entry)
                prog += FLOW_OP.pack(OP_CT, 0, 0, slot, math.nan if refresh is None else refresh, bound)
                tokens.add(("ct", id(entry)))
            elif op[0] == "answer":
                if sources is not None:
                    return "a template answer beside socket steps"
                _, kind, idents, bucket, delivered = op
                ans = rec.answer
                ident = (ans[18] << 8) | ans[19]
                code = x = 0
                if kind == ICMP_ERROR:
                    # the quote is the frame as delivered: a template of the frame
                    quote = derive_template(src0, delivered)
                    if quote is None or apply_template(src0, quote, 0)[12:] != delivered[12:]:
                        return "the delivered datagram is not derived from the frame"
                    x, code = float(len(blob)), (ans[34] << 8) | ans[35]
                    blob += quote
                    srcs[2] = error_source(delivered, ans[34], ans[35], ident)
                else:
                    srcs[2] = answer_source(src0, kind, ident)
                # the request mirrored, but for what NAT rewrote on its way in
                # (a Service's address and port: the answer leaves the endpoint's)
                tmpl = derive_template(srcs[2], ans)
                if tmpl is None or apply_template(srcs[2], tmpl, 0)[12:] != ans[12:]:
                    return "the answer is not the request's echo"
                ipid_slot = self._ipid_slot(idents, bucket)
                ipid_used.append(ipid_slot)
                answer_kind = kind
                prog += FLOW_OP.pack(OP_ANSWER, kind, code, ipid_slot, x, 0.0)
            else:
                kind, br, mac = op
                slot = self._fdb_slot(br, mac)
                if kind == "fdb_learn":
                    prog += FLOW_OP.pack(OP_FDB_LEARN, 0, 0, slot, 0.0, 0.0)
                else:
                    prog += FLOW_OP.pack(OP_FDB_CHECK, 0, 0, slot, br.ageing, 0.0)
                tokens.add(("fdb", id(br), mac))
        if sources is not None:               # the steps check their sockets per frame
            tokens = {t for t in tokens if t[0] != "sock"}
        for dev, got in captured:
            for which in (0, 1, 2):
                src = srcs[which]
                if src is None:
                    continue
                tmpl = derive_template(src, got)
                if tmpl is None:
                    continue
                if apply_template(src, tmpl, 0) != got:
                    continue
                off = len(blob)
                blob += tmpl
                prog += FLOW_OP.pack(OP_CAPTURE, which, sink_of(dev), off, 0.0, 0.0)
                break
            else:
                return f"capture on {dev.label} is not derived from the frame"
        if len(rec.legs) != len(rec.counted):
            return "rule counters outside a hook"
        # a template answer's length follows its request's: the reply leg's rules
        # count the answers' lengths as the engine sums them (LEN_ANSWER)
        lengths = {"request": len(src0) - 14,
                   "reply": len(rec.answer) - 14 if rec.answer else len(rec.rst) - 14 if rec.rst else None}
        counted = [(o, n, LEN_REQUEST if leg == "request" else
                    LEN_ANSWER if answer_kind and leg == "reply" else LEN_FIXED)
                   for (o, n), leg in zip(rec.counted, rec.legs)]
        if sources is not None:
            # every segment's length is the recorded one (the SYN's length and
            # options are part of what its steps check): counted as recorded
            counted = [(o, n, LEN_FIXED) for o, n in rec.counted]
        elif any(lengths.get(leg) != n for (_o, n), leg in zip(rec.counted, rec.legs)):
            return "a rule counted a length other than its leg's"
        m = Meta(counted, [tuple(v) for v in rec.found.values()],
                 list(rec.socks.values()), disposition, sorted(tokens, key=repr), ipid_used, answer_kind)
        eid = self.engine.add(key, bytes(prog), bytes(blob), rec.rst or b"", *line)
        self.meta[eid] = m
        for tok in m.tokens:
            self.by_token.setdefault(tok, set()).add(eid)
        return eid


def _reads_tcp_flags(ruleset) -> bool:
    """A rule of ruleset tests TCP flags (--tcp-flags, --syn)."""
    return any(m.name == "tcp" and getattr(m, "flags", None) is not None
               for table in ruleset.tables.values() for chain in table.chains.values()
               for rule in chain.rules for m in rule.matches)


_SPORT_OPTIONS = re.compile(r"--(sport|source-port|sports|source-ports|ports|ctorigsrcport|"
                            r"ctorigdstport|ctreplsrcport|ctrepldstport)\b")


_NFT_SPORT = re.compile(r"\bsport\b|proto-src|proto-dst")


def _reads_sport(ruleset) -> bool:
    """A rule of ruleset may test a flow's source port (or a conntrack port)."""
    return any(_SPORT_OPTIONS.search(rule.text or "")
               for table in ruleset.tables.values() for chain in table.chains.values()
               for rule in chain.rules)


def derive_template(src: bytes, got: bytes) -> bytes | None:
    """The template that turns src into got, if got differs from src only in
    rewritable header fields (and checksums); None otherwise."""
    if len(src) != len(got) or len(src) < 34:
        return None
    proto = src[23]
    kind = proto if proto in (6, 17) else 0
    checksums = _CHECKSUMS.get(kind, {24, 25})
    over = []
    for i in range(len(src)):
        if src[i] != got[i]:
            if i in _REWRITABLE:
                over.append((i, got[i]))
            elif i not in checksums:
                return None
    if kind == 0 and any(p >= 34 for p, _ in over):
        return None
    ipdelta = sum(_word_delta(src, got, i) for i in (14, 16, 18, 20, 22, 26, 28, 30, 32))
    l4delta = sum(_word_delta(src, got, i) for i in (26, 28, 30, 32, 34, 36)) if kind else 0
    out = bytearray(FLOW_TEMPLATE.pack(len(over), ipdelta, l4delta, kind))
    for pos, val in over:
        out += FLOW_OVERWRITE.pack(pos, val)
    return bytes(out)


def _word_delta(a: bytes, b: bytes, i: int) -> int:
    old, new = (a[i] << 8) | a[i + 1], (b[i] << 8) | b[i + 1]
    return 0 if old == new else ((~old) & 0xFFFF) + new
