# fast.flowengine: the pure-Python twin of the flow cache's replay engine
# (kdp._fastpath.FlowEngine, fast/flowengine.pxi). It finds cached decisions
# by frame key, checks the state they rest on (conntrack and FDB slots),
# replays them on the frame's bytes (captures into per-device pcap buffers,
# the output line) and stops at the first frame it cannot replay. The byte
# helpers are kdp.fast.replay's, the layouts kdp.fast.contract's; what is
# cached, and when it is forgotten, is kdp.datapath.flowcache's business.
from __future__ import annotations

import math

from ..net.ipident import draw
from .contract import FLOW_OP, OP_ANSWER, OP_CAPTURE, OP_CT, OP_FDB_CHECK, OP_FDB_LEARN, OP_GEN_RST
from .replay import (END, HIT, ICMP_ERROR, MISS, RECORD_HEADER, answer_ip_length, answer_source,
                     apply_template, error_source, frame_key, line_var, pcap_record, rst_source)

IMPLEMENTATION = "python"


class _Entry:
    __slots__ = ("key", "ops", "blob", "rst", "prefix", "suffix", "tail", "hits", "last_now", "live",
                 "ip_bytes", "answer_bytes", "answer_kind")

    def __init__(self, key, prog, blob, rst, prefix, suffix, tail):
        self.key, self.blob, self.rst = key, blob, rst
        self.ops = [FLOW_OP.unpack_from(prog, i) for i in range(0, len(prog), FLOW_OP.size)]
        self.prefix, self.suffix, self.tail = prefix, suffix, tail
        self.hits, self.last_now, self.live, self.ip_bytes = 0, 0.0, True, 0
        self.answer_bytes = 0
        self.answer_kind = next((a for code, a, *_ in self.ops if code == OP_ANSWER), 0)


class FlowEngine:
    """Cached decisions keyed by frame_key(); conntrack timeouts, FDB update
    times and ip_idents buckets in slots (the hot copy while frames are replayed;
    kdp.datapath.flowcache writes them back before the reference path runs);
    per-device pcap buffers."""

    def __init__(self, capture: bool, text: bool = False):
        self.capture, self.text = capture, text
        self.carry_psh = False
        self.entries: list[_Entry | None] = []
        self.index: dict[bytes, int] = {}
        self.ct: list[float] = []
        self.fdb: list[float] = []
        self.ipid: list[list[int]] = []           # [counter, tstamp, draw key]
        self.sinks: list[bytearray] = []
        self.out = bytearray()
        self.dirty_ct: set[int] = set()
        self.dirty_fdb: set[int] = set()
        self.dirty_ipid: set[int] = set()
        self.dirty_entries: set[int] = set()

    # --- slots, sinks, entries ---------------------------------------------
    def ct_new(self, value: float) -> int:
        self.ct.append(value)
        return len(self.ct) - 1

    def ct_get(self, slot: int) -> float:
        return self.ct[slot]

    def ct_set(self, slot: int, value: float) -> None:
        self.ct[slot] = value

    def fdb_new(self, value: float) -> int:
        self.fdb.append(value)
        return len(self.fdb) - 1

    def fdb_get(self, slot: int) -> float:
        return self.fdb[slot]

    def fdb_set(self, slot: int, value: float) -> None:
        self.fdb[slot] = value

    def ipid_new(self, counter: int, tstamp: int, key: int) -> int:
        self.ipid.append([counter, tstamp, key])
        return len(self.ipid) - 1

    def ipid_get(self, slot: int) -> tuple[int, int]:
        return self.ipid[slot][0], self.ipid[slot][1]

    def ipid_set(self, slot: int, counter: int, tstamp: int) -> None:
        self.ipid[slot][0], self.ipid[slot][1] = counter, tstamp

    def sink_new(self) -> int:
        self.sinks.append(bytearray())
        return len(self.sinks) - 1

    def sink_append(self, sink: int, t: float, data: bytes) -> None:
        self.sinks[sink] += pcap_record(t, data)

    def sink_take(self, sink: int) -> bytes:
        b = bytes(self.sinks[sink])
        self.sinks[sink].clear()
        return b

    def buffered(self) -> int:
        return sum(len(s) for s in self.sinks) + len(self.out)

    def out_take(self) -> bytes:
        b = bytes(self.out)
        self.out.clear()
        return b

    def set_carry_psh(self, on: bool) -> None:
        """Key TCP frames without their PSH bit (the caller forgets every entry)."""
        self.carry_psh = bool(on)

    def add(self, key: bytes, prog: bytes, blob: bytes, rst: bytes, prefix: bytes,
            suffix: bytes, tail: bytes | None = None) -> int:
        """tail: when not None, the line is prefix + index + suffix + the
        frame's TCP flags or UDP payload length (replay.line_var) + tail."""
        self.entries.append(_Entry(key, prog, blob, rst, prefix, suffix, tail))
        eid = len(self.entries) - 1
        self.index[key] = eid
        return eid

    def remove(self, eid: int) -> None:
        e = self.entries[eid]
        if e is not None and e.live:
            e.live = False
            if self.index.get(e.key) == eid:
                del self.index[e.key]

    def take_hits(self, eid: int) -> tuple[int, float, int, int]:
        """Replays since the last call, the last one's time, the sum of the
        frames' IP total lengths and of their answers' (rule byte counters)."""
        e = self.entries[eid]
        n, b, a = e.hits, e.ip_bytes, e.answer_bytes
        e.hits = e.ip_bytes = e.answer_bytes = 0
        return n, e.last_now, b, a

    def take_dirty_slots(self) -> tuple[list[int], list[int], list[int]]:
        """Conntrack, FDB and IP ID slots changed since the last call
        (entries' hits stay pending)."""
        out = (sorted(self.dirty_ct), sorted(self.dirty_fdb), sorted(self.dirty_ipid))
        self.dirty_ct, self.dirty_fdb, self.dirty_ipid = set(), set(), set()
        return out

    def take_dirty(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """Slots and entries changed since the last call."""
        entries, self.dirty_entries = sorted(self.dirty_entries), set()
        return self.take_dirty_slots() + (entries,)

    def key(self, frame: bytes) -> bytes | None:
        """The frame's flow key (kdp.fast.replay.frame_key), None when it is not replayable."""
        return frame_key(frame, self.carry_psh)

    def lookup(self, frame: bytes) -> int:
        key = frame_key(frame, self.carry_psh)
        return -1 if key is None else self.index.get(key, -1)

    # --- replay --------------------------------------------------------------
    def _check(self, e: _Entry, now: float) -> bool:
        for code, _a, _b, slot, x, y in e.ops:
            if code == OP_CT:
                if not (now < self.ct[slot] and now <= y):
                    return False
            elif code == OP_FDB_CHECK:
                if now - self.fdb[slot] > x:
                    return False
        return True

    def predict(self, eid: int, frame: bytes, now: float, index: int,
                src1: bytes | None = None, src2: bytes | None = None):
        """What replaying the frame would do, changing nothing: (line bytes,
        [(sink, pcap record)], {ct slot: value}, {fdb slot: value},
        {IP ID slot: (counter, tstamp)}) or None when a check fails. src1,
        src2: the caller's sources 1 and 2 (a megaflow's socket steps'
        answers; the entry has no RST or answer op of its own)."""
        e = self.entries[eid]
        if e is None or not e.live or not self._check(e, now):
            return None
        ct, fdb, ipid, caps = {}, {}, {}, []
        srcs = [frame, src1, src2]
        for code, a, b, slot, x, _y in e.ops:
            if code == OP_CT:
                if not math.isnan(x):
                    ct[slot] = now + x
            elif code == OP_FDB_LEARN:
                fdb[slot] = now
            elif code == OP_GEN_RST:
                srcs[1] = rst_source(e.rst, frame, a, slot)
            elif code == OP_ANSWER:
                counter, tstamp = ipid.get(slot, self.ipid[slot][:2])
                ident, counter, tstamp = draw(counter, tstamp, self.ipid[slot][2], now)
                ipid[slot] = (counter, tstamp)
                if a == ICMP_ERROR:
                    delivered = apply_template(frame, e.blob, int(x))
                    srcs[2] = error_source(delivered, b >> 8, b & 0xFF, ident & 0xFFFF)
                else:
                    srcs[2] = answer_source(frame, a, ident & 0xFFFF)
            elif code == OP_CAPTURE and self.capture:
                if srcs[a] is None:
                    raise ValueError(f"flow cache entry {eid} replays a source the caller did not give")
                caps.append((b, pcap_record(now, apply_template(srcs[a], e.blob, slot))))
        return self._line(e, index, frame), caps, ct, fdb, ipid

    def _line(self, e: _Entry, index: int, frame: bytes) -> bytes:
        tail = b"" if e.tail is None else line_var(frame) + e.tail
        if self.text:
            return e.prefix + b"#" + str(index).ljust(5).encode() + e.suffix + tail
        return e.prefix + str(index).encode() + e.suffix + tail

    def out_append(self, data: bytes) -> None:
        """Append a line the caller made (a megaflow branch's: kdp.datapath.megaflow)."""
        self.out += data

    def check(self, eid: int, now: float) -> bool:
        """Whether entry eid's checks pass at now (a live entry)."""
        e = self.entries[eid] if 0 <= eid < len(self.entries) else None
        return e is not None and e.live and self._check(e, now)

    def commit(self, eid: int, frame: bytes, now: float, src1: bytes | None = None,
               src2: bytes | None = None) -> None:
        """Replay entry eid on frame (its checks passed) without its output
        line: slots, captures, hit counts (the caller writes the line); src1,
        src2 as for predict()."""
        e = self.entries[eid] if 0 <= eid < len(self.entries) else None
        if e is None or not e.live:
            raise ValueError(f"no live flow cache entry {eid}")
        _line, caps, ct, fdb, ipid = self.predict(eid, frame, now, 0, src1, src2)
        self._apply(eid, frame, now, caps, ct, fdb, ipid)

    def run(self, buf, pos: int, end: int, index: int, now: float, unit: float,
            big_endian: bool, limit: int = -1):
        """Replay records of a classic pcap buffer from pos until a frame is not
        a hit (MISS: pos is at its record) or the buffer holds no whole record
        (END). Returns (status, pos, index, now)."""
        rec = RECORD_HEADER[big_endian]
        done = 0
        while True:
            if limit >= 0 and done >= limit:
                return HIT, pos, index, now
            if end - pos < 16:
                return END, pos, index, now
            sec, frac, incl, _orig = rec.unpack_from(buf, pos)
            if end - pos - 16 < incl:
                return END, pos, index, now
            frame = bytes(buf[pos + 16:pos + 16 + incl])
            eid = self.lookup(frame)
            if eid < 0:
                return MISS, pos, index, now
            t = sec + frac * unit
            n2 = now if now >= t else t
            got = self.predict(eid, frame, n2, index)
            if got is None:
                return MISS, pos, index, now
            line, caps, ct, fdb, ipid = got
            self._apply(eid, frame, n2, caps, ct, fdb, ipid)
            self.out += line
            now, index, pos, done = n2, index + 1, pos + 16 + incl, done + 1

    def _apply(self, eid: int, frame: bytes, now: float, caps, ct, fdb, ipid) -> None:
        """A replay's effects (predict's values) made real, but its line."""
        for slot, v in ct.items():
            self.ct[slot] = v
            self.dirty_ct.add(slot)
        for slot, (counter, tstamp) in ipid.items():
            self.ipid[slot][0], self.ipid[slot][1] = counter, tstamp
            self.dirty_ipid.add(slot)
        for slot, v in fdb.items():
            self.fdb[slot] = v
            self.dirty_fdb.add(slot)
        for sink, record in caps:
            self.sinks[sink] += record
        e = self.entries[eid]
        e.hits += 1
        e.last_now = now
        e.ip_bytes += (frame[16] << 8) | frame[17]
        if e.answer_kind:
            e.answer_bytes += answer_ip_length(frame, e.answer_kind)
        self.dirty_entries.add(eid)
