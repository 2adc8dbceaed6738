# _pureflow: the pure-Python twin of the flow cache's replay engine in
# _fastpath (_fp_flowcache.pxi). It keys raw frames, finds cached decisions,
# checks the state they rest on (conntrack and FDB slots), replays them on the
# frame's bytes (captures into per-device pcap buffers, the output line) and
# stops at the first frame it cannot replay. Layouts: kdp.contract. What is
# cached, and when it is forgotten, is kdp.datapath.flowcache's business.
from __future__ import annotations

import math
import struct

from .contract import (FLOW_KEY_LEN, FLOW_OP, FLOW_OVERWRITE, FLOW_TEMPLATE, OP_CAPTURE, OP_CT,
                       OP_FDB_CHECK, OP_FDB_LEARN, OP_GEN_RST)
from ..io import pcap_record  # noqa: F401  (the record format both twins write)

IMPLEMENTATION = "python"
HIT, MISS, END = 0, 1, 2
_REC = {False: struct.Struct("<IIII"), True: struct.Struct(">IIII")}


def _sum16(b: bytes, start: int, end: int) -> int:
    s = 0
    for i in range(start, end - 1, 2):
        s += (b[i] << 8) | b[i + 1]
    if (end - start) & 1:
        s += b[end - 1] << 8
    return s


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def adjust(check: int, delta: int) -> int:
    """RFC 1624 eqn. 3 with a precomputed sum of ~old+new words."""
    return (~_fold(((~check) & 0xFFFF) + delta)) & 0xFFFF


def frame_key(f: bytes, carry_psh: bool = False) -> bytes | None:
    """The bytes a cached decision is keyed on, or None when the frame is not
    one the cache replays (not IPv4/TCP/UDP without options or fragments, or a
    bad IP or L4 checksum). Everything else in the frame is carried through;
    with carry_psh also TCP's PSH bit (when no rule reads TCP flags)."""
    n = len(f)
    if n < 34 or f[12] != 0x08 or f[13] != 0x00 or f[14] != 0x45:
        return None
    total = (f[16] << 8) | f[17]
    if total < 28 or 14 + total > n or ((f[20] << 8) | f[21]) & 0x3FFF:
        return None
    if _fold(_sum16(f, 14, 34)) != 0xFFFF:
        return None
    proto, end = f[23], 14 + total
    seg = total - 20
    if proto == 6:
        if seg < 20 or (f[46] >> 4) * 4 < 20 or (f[46] >> 4) * 4 > seg:
            return None
        csum_at = 50
    elif proto == 17:
        if seg < 8 or (f[40] == 0 and f[41] == 0):
            return None
        csum_at = 40
    else:
        return None
    s = _sum16(f, 26, 34) + proto + seg + _sum16(f, 34, end) - ((f[csum_at] << 8) | f[csum_at + 1])
    c = (~_fold(s)) & 0xFFFF
    if proto == 17 and c == 0:
        c = 0xFFFF
    if c != ((f[csum_at] << 8) | f[csum_at + 1]):
        return None
    # TCP: the length is carried through (no decision reads it); UDP: kept,
    # since the output line shows the payload length
    key = f[0:16] + (b"\0\0" if proto == 6 else f[16:18]) + f[20:24] + f[26:38]
    if proto == 6:
        key += bytes([f[46], f[47] & ~0x08 if carry_psh else f[47]])
    else:
        key += f[38:40]
    assert len(key) == FLOW_KEY_LEN
    return key


_FLAG_NAMES = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"))


def flag_str(flags: int) -> bytes:
    """kdp.wire.tcp_flag_str as bytes (the output line's "flags")."""
    return ("".join(n for bit, n in _FLAG_NAMES if flags & bit) or "none").encode()


def rst_source(base: bytes, f: bytes, mode: int, flag_len: int) -> bytes:
    """tcp_v4_send_reset()'s segment for frame f, from the entry's recorded RST:
    only seq or ack differ from one frame to the next (mode 1: the frame had
    ACK; mode 2: ack = seq + payload + flag_len, the SYN/FIN count)."""
    if mode == 1:
        seq, ack = f[42:46], b"\0\0\0\0"
    else:
        payload = ((f[16] << 8) | f[17]) - 20 - (f[46] >> 4) * 4
        v = (int.from_bytes(f[38:42], "big") + payload + flag_len) & 0xFFFFFFFF
        seq, ack = b"\0\0\0\0", v.to_bytes(4, "big")
    delta = 0
    for old, new in ((base[38:42], seq), (base[42:46], ack)):
        for i in (0, 2):
            delta += ((~((old[i] << 8) | old[i + 1])) & 0xFFFF) + ((new[i] << 8) | new[i + 1])
    csum = adjust((base[50] << 8) | base[51], delta)
    return base[:38] + seq + ack + base[46:50] + csum.to_bytes(2, "big") + base[52:]


def apply_template(src: bytes, blob: bytes, off: int) -> bytes:
    """A capture: the source's bytes (to its IP total length) with the recorded
    header fields written over and both checksums adjusted."""
    n_over, ipdelta, l4delta, kind = FLOW_TEMPLATE.unpack_from(blob, off)
    end = 14 + ((src[16] << 8) | src[17])
    out = bytearray(src[:end])
    p = off + FLOW_TEMPLATE.size
    for _ in range(n_over):
        pos, val = FLOW_OVERWRITE.unpack_from(blob, p)
        out[pos] = val
        p += FLOW_OVERWRITE.size
    c = adjust((src[24] << 8) | src[25], ipdelta)
    out[24], out[25] = c >> 8, c & 0xFF
    if kind:
        at = 50 if kind == 6 else 40
        c = adjust((src[at] << 8) | src[at + 1], l4delta)
        if kind == 17 and c == 0:
            c = 0xFFFF
        out[at], out[at + 1] = c >> 8, c & 0xFF
    return bytes(out)


class _Entry:
    __slots__ = ("key", "ops", "blob", "rst", "prefix", "suffix", "tail", "hits", "last_now", "live",
                 "ip_bytes")

    def __init__(self, key, prog, blob, rst, prefix, suffix, tail):
        self.key, self.blob, self.rst = key, blob, rst
        self.ops = [FLOW_OP.unpack_from(prog, i) for i in range(0, len(prog), FLOW_OP.size)]
        self.prefix, self.suffix, self.tail = prefix, suffix, tail
        self.hits, self.last_now, self.live, self.ip_bytes = 0, 0.0, True, 0


class FlowEngine:
    """Cached decisions keyed by frame_key(); conntrack timeouts and FDB update
    times in slots (the hot copy while frames are replayed; kdp.datapath.flowcache
    writes them back before the reference path runs); per-device pcap buffers."""

    def __init__(self, capture: bool, text: bool = False):
        self.capture, self.text = capture, text
        self.carry_psh = False
        self.entries: list[_Entry | None] = []
        self.index: dict[bytes, int] = {}
        self.ct: list[float] = []
        self.fdb: list[float] = []
        self.sinks: list[bytearray] = []
        self.out = bytearray()
        self.dirty_ct: set[int] = set()
        self.dirty_fdb: set[int] = set()
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
        frame's TCP flags + tail."""
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

    def take_hits(self, eid: int) -> tuple[int, float, int]:
        """Replays since the last call, the last one's time and the sum of the
        frames' IP total lengths (rule byte counters)."""
        e = self.entries[eid]
        n, b, e.hits, e.ip_bytes = e.hits, e.ip_bytes, 0, 0
        return n, e.last_now, b

    def take_dirty_slots(self) -> tuple[list[int], list[int]]:
        """Slots changed since the last call (entries' hits stay pending)."""
        out = (sorted(self.dirty_ct), sorted(self.dirty_fdb))
        self.dirty_ct, self.dirty_fdb = set(), set()
        return out

    def take_dirty(self) -> tuple[list[int], list[int], list[int]]:
        """Slots and entries changed since the last call."""
        entries, self.dirty_entries = sorted(self.dirty_entries), set()
        return self.take_dirty_slots() + (entries,)

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

    def predict(self, eid: int, frame: bytes, now: float, index: int):
        """What replaying the frame would do, changing nothing: (line bytes,
        [(sink, pcap record)], {ct slot: value}, {fdb slot: value}) or None
        when a check fails."""
        e = self.entries[eid]
        if e is None or not e.live or not self._check(e, now):
            return None
        ct, fdb, caps = {}, {}, []
        srcs = [frame, None]
        for code, a, b, slot, x, _y in e.ops:
            if code == OP_CT:
                if not math.isnan(x):
                    ct[slot] = now + x
            elif code == OP_FDB_LEARN:
                fdb[slot] = now
            elif code == OP_GEN_RST:
                srcs[1] = rst_source(e.rst, frame, a, slot)
            elif code == OP_CAPTURE and self.capture:
                caps.append((b, pcap_record(now, apply_template(srcs[a], e.blob, slot))))
        return self._line(e, index, frame), caps, ct, fdb

    def _line(self, e: _Entry, index: int, frame: bytes) -> bytes:
        tail = b"" if e.tail is None else flag_str(frame[47]) + e.tail
        if self.text:
            return e.prefix + b"#" + str(index).ljust(5).encode() + e.suffix + tail
        return e.prefix + str(index).encode() + e.suffix + tail

    def run(self, buf, pos: int, end: int, index: int, now: float, unit: float,
            big_endian: bool, limit: int = -1):
        """Replay records of a classic pcap buffer from pos until a frame is not
        a hit (MISS: pos is at its record) or the buffer holds no whole record
        (END). Returns (status, pos, index, now)."""
        rec = _REC[big_endian]
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
            line, caps, ct, fdb = got
            for slot, v in ct.items():
                self.ct[slot] = v
                self.dirty_ct.add(slot)
            for slot, v in fdb.items():
                self.fdb[slot] = v
                self.dirty_fdb.add(slot)
            for sink, record in caps:
                self.sinks[sink] += record
            self.out += line
            e = self.entries[eid]
            e.hits += 1
            e.last_now = n2
            e.ip_bytes += (frame[16] << 8) | frame[17]
            self.dirty_entries.add(eid)
            now, index, pos, done = n2, index + 1, pos + 16 + incl, done + 1
