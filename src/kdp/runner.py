# runner: `kdp run`'s batch driver. Reads the pcap in large blocks and hands
# them to the flow cache's engine, which replays every frame whose decision it
# holds; the first frame it cannot replay goes through the reference path
# (recorded, and cached when repeatable), then the engine resumes. Per-frame
# lines stream to the output and per-device pcaps to files, so memory does not
# grow with the pcap. With the fast path off every frame takes the reference
# path; KDP_FASTPATH_VALIDATE=1 runs both on every cached frame and raises on
# any difference. Output is the same byte for byte in every mode.
from __future__ import annotations

import json
import os
from typing import BinaryIO

from . import errors, wire
from .fast import FlowEngine
from .fast.replay import HIT, RECORD_HEADER, answer_ip_length, frame_key
from .datapath.flowcache import LEN_ANSWER, LEN_REQUEST, FlowCache
from .datapath.megaflow import (create, dry_steps, entry_fields, free, predicted_entries, run_steps,
                                sockets_free)
from .errors import KdpError
from .capfile import CaptureReader, check_length
from .io import PCAP_HEADER, pcap_record, truncated_record
from .livetcp import LiveTcp, translated_text
from .outcomes import Outcomes
from .senders import Senders
from .render import packet_fields

BLOCK = 4 << 20                 # bytes of pcap read per block
FLUSH_AT = 16 << 20             # buffered capture/output bytes that trigger a write


class FastpathMismatch(KdpError):
    """KDP_FASTPATH_VALIDATE=1 found the fast path and the reference disagreeing."""


def run_record(index: int, outcome, err: str | None) -> dict:
    if outcome is None:
        return {"index": index, "disposition": "dropped", "reason": errors.MALFORMED,
                "delivered_to": None, "packet": None, "error": err}
    return {"index": index, "disposition": outcome.disposition, "reason": outcome.reason,
            "delivered_to": outcome.delivered_to,
            "packet": packet_fields(outcome.packet) if outcome.packet is not None else None}


def run_line(r: dict) -> str:
    where = r["delivered_to"] or r["reason"]
    p = r["packet"] or {}
    port = lambda key: f":{p[key]}" if p.get(key) is not None else ""     # none for ICMP, ARP
    return (f"#{r['index']:<5} {r['disposition']:<9} {where or '-':<40} "
            f"{p.get('proto', '?')} {p.get('src')}{port('sport')} > {p.get('dst')}{port('dport')}"
            + (translated_text(r) if "translated" in r else ""))


class PcapRun:
    def __init__(self, emu, at: str, out: BinaryIO, *, json_lines: bool, out_dir: str | None,
                 fastpath: bool = True, validate: bool | None = None, progress=None,
                 events=None, engine=None, apps: bool = True, live: bool = False):
        self.emu, self.out, self.json = emu, out, json_lines
        # --at auto: each frame at its sender's device (kdp.senders), else all at one
        self.senders = Senders(emu) if at == "auto" else None
        if not apps:                            # --apps off: pods' sockets consume, never answer
            for ns in emu.topology.namespaces.values():
                if ns.kind == "pod" and ns.sockets is not None:
                    ns.sockets.silent = True
        self.dev = emu.attach_device(at) if self.senders is None else None
        # live TCP replay (kdp.livetcp): flows the capture opens from the attachment
        # point (--at auto: from each sender) with apps on; --raw and --apps off (the
        # capture holds the answers: no live peer) inject raw
        self.live = (LiveTcp(self.dev) if live and apps and (self.dev is None
                                                             or self.dev.namespace.sockets is not None)
                     else None)
        self._declined = False                  # the last reference frame was rewritten: not cached
        self._live_syn = False                  # it opened a capture-owned TCP flow (a megaflow may)
        self.dp = emu.datapath
        self.out_dir = out_dir
        self.fastpath = fastpath
        self.validate = (os.environ.get("KDP_FASTPATH_VALIDATE", "") not in ("", "0")
                         if validate is None else validate) and fastpath
        self.progress = progress or (lambda n: None)
        self.macs = emu.link_macs(self.dev) if self.dev is not None else None
        self.reader = None
        self.engine = (engine or FlowEngine)(bool(out_dir), not json_lines)
        self.cache = FlowCache(self.engine, self.dp) if fastpath else None
        self.outcomes = Outcomes(emu.cluster)
        self._record = None                      # the outcomes record of the last reference frame
        if self.cache is not None:
            self.cache.on_hits = lambda m, n, ip_bytes, last: \
                m.outcome is not None and self.outcomes.add(m.outcome, n, ip_bytes, last)
        # megaflow branch -> (the run record it was built from, its JSON line cut
        # around index, source port and UDP length, or None); its outcomes record
        self.branch_records: dict[int, tuple] = {}
        self.branch_outcomes: dict[int, tuple] = {}
        self.sinks: dict[tuple[str, str], int] = {}
        self.sink_names: list[str] = []
        self.files: set[int] = set()
        self.counts = {"frames": 0, "delivered": 0, "dropped": 0, "rejected": 0}
        if self.senders is not None:
            self.counts["skipped"] = 0
        if self.live is not None:
            self.counts["translated"] = 0
        self.hits = 0
        self.validated = 0
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            self.dp.captures = None
            self.dp.capture_sink = self._capture
        self._collect: list | None = None
        self.events = sorted((events or {}).items())

    # --- captures -------------------------------------------------------------
    def sink_of(self, dev) -> int:
        key = (dev.namespace.name, dev.name)
        sid = self.sinks.get(key)
        if sid is None:
            sid = self.sinks[key] = self.engine.sink_new()
            self.sink_names.append(self.emu.capture_file_name(*key))
        return sid

    def _capture(self, dev, now: float, pkt) -> None:
        if self._collect is not None:
            self._collect.append((self.sink_of(dev), now, wire.emit(pkt)))
            return
        self.engine.sink_append(self.sink_of(dev), now, wire.emit(pkt))

    def _flush(self, final: bool = False) -> None:
        data = self.engine.out_take()
        if data:
            self.out.write(data)
        if not self.out_dir or (not final and self.engine.buffered() < FLUSH_AT):
            return
        for sid, name in enumerate(self.sink_names):
            data = self.engine.sink_take(sid)
            if not data and sid in self.files:
                continue
            path = os.path.join(self.out_dir, name + ".pcap")
            with open(path, "ab" if sid in self.files else "wb") as f:
                if sid not in self.files:
                    f.write(PCAP_HEADER)
                    self.files.add(sid)
                f.write(data)

    # --- the run --------------------------------------------------------------
    def run(self, path: str) -> dict:
        reader = CaptureReader(path, self.macs, BLOCK)
        self.reader = reader
        try:
            with reader:
                self._run_blocks(reader, path)
        finally:
            # also when the pcap turns out truncated: what was processed is kept
            if self.cache is not None:
                self.cache.write_back()
                self.cache.close()
                for disposition, n in self.cache.tally.items():
                    self.counts[disposition] += n
                self.cache.tally.clear()
            self._flush(final=True)
        return dict(self.counts, fastpath_hits=self.hits)

    def _event(self, index: int) -> int:
        """Run the events due before frame index; the frames until the next one."""
        while self.events and self.events[0][0] <= index:
            _, fn = self.events.pop(0)
            if self.cache is not None:
                self.cache.write_back()
            fn(self.emu)
            if self.cache is not None:
                # the callable may change anything (devices, sysctls, endpoints),
                # not only what kdp.watch hears of: start the cache afresh
                self.cache.forget_all()
                self.cache.revalidate()
        return self.events[0][0] - index if self.events else -1

    def _run_blocks(self, reader: CaptureReader, path: str) -> None:
        """Blocks of classic pcap records (kdp.capfile makes them of every
        format it reads) through the engine, misses through the reference."""
        rec = RECORD_HEADER[reader.big]
        blocks = reader.blocks()
        buf = b""
        pos = 0
        eof = False
        while True:
            index = self.counts["frames"]
            limit = self._event(index)
            unit = reader.unit
            if self.cache is not None and not self.validate:
                status, pos2, index2, now2 = self.engine.run(buf, pos, len(buf), index, self.dp.now,
                                                             unit, reader.big, limit)
                if index2 != index:
                    self._hits(index2 - index)
                    self.dp.now = now2
                    pos, index = pos2, index2
                if status == HIT:                # stopped for an event
                    continue
            left = len(buf) - pos
            if left >= 16:
                check_length(path, index, rec.unpack_from(buf, pos)[2])
            if left < 16 or left - 16 < rec.unpack_from(buf, pos)[2]:
                if eof:
                    if left:
                        self._truncated(path, buf, pos, rec)
                    return
                chunk = next(blocks, b"")
                eof = not chunk
                buf = buf[pos:] + chunk          # the unread rest and the next block
                pos = 0
                continue
            sec, frac, incl, _orig = rec.unpack_from(buf, pos)
            frame = bytes(buf[pos + 16:pos + 16 + incl])
            t = sec + frac * unit
            if self.validate:
                self._validated(frame, t, index)
            elif not self._megaflow(frame, t, index):
                self._slow(frame, t, index)
            pos += 16 + incl
            if self.engine.buffered() >= FLUSH_AT:
                self._flush()

    def _hits(self, n: int) -> None:
        """n frames were replayed (their lines are in the engine's output)."""
        self.hits += n
        self.counts["frames"] += n
        self.progress(n)
        if self.engine.buffered() >= FLUSH_AT:
            self._flush()

    def _truncated(self, path: str, buf, pos: int, rec) -> None:
        self._flush()
        n, left = self.counts["frames"], len(buf) - pos
        if left < 16:
            raise truncated_record(path, n, left)
        raise truncated_record(path, n, left - 16, rec.unpack_from(buf, pos)[2])

    # --- one frame through the reference ----------------------------------------
    def _emit_record(self, r: dict) -> bytes:
        self.counts["frames"] += 1
        self.counts[r["disposition"]] = self.counts.get(r["disposition"], 0) + 1   # skipped: live replay
        self.progress(1)
        return ((json.dumps(r) if self.json else run_line(r)) + "\n").encode()

    def _reference(self, frame: bytes, t: float, index: int):
        try:
            pkt = wire.parse(frame)
        except wire.MalformedFrame as e:
            r, outcome, resets = run_record(index, None, str(e)), None, ()
        else:
            dev, self._declined, sent = self.dev, False, frame
            self._live_syn = False
            if self.senders is not None:
                dev, sent, skip, self._declined = self.senders.resolve(frame)
                if sent is not frame:
                    pkt = wire.parse(sent)
            live = None
            if self.live is not None and dev is not None:
                action, live = self.live.outbound(sent, pkt, dev if self.senders is not None else None)
                if action == "skip":
                    dev, skip, live = None, live, None
                elif action == "live":
                    rewritten, self._declined = self._declined, True   # the capture's flow: its translation is state
                    self._live_syn = not rewritten and (pkt.l4.flags & (wire.SYN | wire.ACK) == wire.SYN and live["frame"] is None
                                      and not live["translated"] and live["unacceptable"] is None
                                      and live["retransmission"] is None)
                    if live["frame"] is not None:
                        pkt = wire.parse(live["frame"])
                        self.counts["translated"] += 1
                else:
                    live = None
            if dev is None:
                outcome, resets = None, ()
                r = {"index": index, "disposition": "skipped", "reason": skip, "delivered_to": None,
                     "packet": packet_fields(pkt)}
            else:
                outcome = self.dp.inject(dev, pkt, t)
                r, resets = run_record(index, outcome, None), self.dp.resets
                if live is not None:
                    r["translated"] = live["translated"]
                    r["unacceptable"] = live["unacceptable"]
                    r["retransmission"] = live["retransmission"]
                    if live["retransmission"]:
                        self.counts["retransmitted"] = self.counts.get("retransmitted", 0) + 1
        self._record = Outcomes.record(r, resets, frame)
        ip_bytes = (frame[16] << 8) | frame[17] if len(frame) >= 18 and frame[12:14] == b"\x08\x00" else 0
        self.outcomes.add(self._record, 1, ip_bytes, self.dp.now)
        return r, outcome

    def _slow(self, frame: bytes, t: float, index: int) -> None:
        cache = self.cache
        if cache is not None:
            cache.write_back(full=False)
            cache.recorder.begin()
        r, outcome = self._reference(frame, t, index)
        line = self._emit_record(r)
        self._flush()
        self.out.write(line)
        if cache is None:
            return
        problems = cache.after_run()
        if outcome is None or problems:
            return
        self._learn(frame, r, line)

    def _branch_for(self, frame: bytes, now: float):
        """(branch, its new entries' tuples) when frame is a new flow of a shape
        a megaflow branch knows and everything the branch would create is free
        (kdp.datapath.megaflow); else None: the reference decides."""
        cache = self.cache
        if cache is None or not cache.megaflows.shapes or self.senders is not None:
            return None
        key = self.engine.key(frame)
        if key is None:
            return None
        hit = cache.megaflows.select(key, (frame[34] << 8) | frame[35])
        if hit is None or not self.engine.check(hit[0].eid, now):
            return None
        cache.write_back(full=False)           # the tables' timeouts as the engine left them
        if not free(*hit, now) or (self.live is not None and frame[23] == 17
                                   and not self.live.udp_claimable(frame)):
            return None
        if hit[0].steps and not sockets_free(hit[0], frame, self.live):
            return None
        return hit

    def _megaflow(self, frame: bytes, t: float, index: int) -> bool:
        """A new flow a megaflow branch replays: its conntrack entries made as
        the reference makes them, the rest replayed by the engine. False: the
        reference decides."""
        now = max(self.dp.now, t)
        hit = self._branch_for(frame, now)
        if hit is None:
            return False
        branch, tuples = hit
        if self.live is not None and frame[23] == 17:
            self.live.claim_udp(frame)
        srcs = ()
        if branch.steps:                       # a SYN: the sockets' part through the real socket code
            if self.live is not None and self.live.outbound(frame, wire.parse(frame))[0] != "live":
                raise AssertionError("megaflow: live replay did not claim a SYN sockets_free() admitted")
            create(branch, tuples, now)
            srcs = run_steps(branch, frame, now)
        else:
            create(branch, tuples, now)
        self.dp.now = now
        self.engine.commit(branch.eid, frame, now, *srcs[1:3])
        self.engine.out_append(self._branch_line(branch.eid, index, frame))
        self.cache.settle()                    # what the new entries and socket changed
        disposition, reason, delivered_to, resets, flow = self.branch_outcomes[branch.eid]
        # the flow as the frame sent it: the shape's, with the frame's source port and TCP flags
        flow = (flow[0], flow[1], (frame[34] << 8) | frame[35], flow[3], flow[4],
                frame[47] if frame[23] == 6 else 0)
        self.outcomes.add((disposition, reason, delivered_to, resets, flow), 1,
                          (frame[16] << 8) | frame[17], now)
        self._hits(1)
        return True

    def _branch_line(self, eid: int, index: int, frame: bytes) -> bytes:
        r, pieces = self.branch_records[eid]
        if pieces is None:
            return self._line_of(self._branch_record(r, index, frame))
        return b"%s%d%s%d%s%d%s" % (        # the JSON line: its three fields spliced in
            pieces[0], index, pieces[1], (frame[34] << 8) | frame[35], pieces[2],
            ((frame[38] << 8) | frame[39]) - 8, pieces[3])

    @staticmethod
    def _branch_record(r: dict, index: int, frame: bytes) -> dict:
        """A megaflow branch's run record for another frame of its shape: the
        index, and the source port, UDP payload length and TCP flags (PSH is
        not in the key) the frame carries."""
        p = dict(r["packet"], sport=(frame[34] << 8) | frame[35])
        if "length" in p:
            p["length"] = ((frame[38] << 8) | frame[39]) - 8
        if "flags" in p:
            p["flags"] = wire.tcp_flag_str(frame[47])
        return dict(r, index=index, packet=p)

    def _line_of(self, r: dict) -> bytes:
        return ((json.dumps(r) if self.json else run_line(r)) + "\n").encode()

    def _validated(self, frame: bytes, t: float, index: int) -> None:
        """KDP_FASTPATH_VALIDATE=1: predict with the engine, run the reference,
        and refuse to go on if they differ in anything the run would show."""
        eid = self.engine.lookup(frame)
        now = max(self.dp.now, t)
        pred = self.engine.predict(eid, frame, now, index) if eid >= 0 else None
        made = None                              # a megaflow branch's new entries, as predicted
        if pred is None:
            hit = self._branch_for(frame, now)
            if hit is not None:
                branch, tuples = hit
                eid, made = branch.eid, predicted_entries(branch, tuples, now)
                srcs = dry_steps(branch, frame, now, self.live) if branch.steps else ()
                pred = self.engine.predict(eid, frame, now, index, *srcs[1:3])
            if pred is None:
                self._slow(frame, t, index)
                return
            pred = (self._branch_line(eid, index, frame),) + tuple(pred[1:])
        line, caps, ct, fdb, ipid = pred
        cache = self.cache
        meta = cache.meta[eid]
        cache.write_back()
        cache.recorder.begin()
        self._collect = []
        try:
            r, outcome = self._reference(frame, t, index)
        finally:
            got, self._collect = self._collect, None
        ref_line = self._emit_record(r)
        ref_caps = [(sid, pcap_record(tm, data)) for sid, tm, data in got]
        diffs = []
        if ref_line != line:
            diffs.append(f"line: reference {ref_line!r}, fast path {line!r}")
        if self.out_dir and ref_caps != caps:
            diffs.append(f"captures: reference {len(ref_caps)} records, fast path {len(caps)}; "
                         f"first difference at {_first_diff(ref_caps, caps)}")
        for slot, v in ct.items():
            e = cache.ct_slot_entry.get(slot)
            if e is None or e.timeout_at != v:
                diffs.append(f"conntrack slot {slot}: reference {getattr(e, 'timeout_at', None)}, fast path {v}")
        for slot, v in fdb.items():
            br, mac = cache.fdb_slot_key[slot]
            if br.fdb[mac].updated != v:
                diffs.append(f"FDB {br.name} {mac}: reference {br.fdb[mac].updated}, fast path {v}")
        for slot, v in ipid.items():
            idents, bucket = cache.ipid_slot_key[slot]
            if tuple(idents.state(bucket)[:2]) != v:
                diffs.append(f"ip_idents bucket {bucket} of {idents.ns_name}: reference "
                             f"{tuple(idents.state(bucket)[:2])}, fast path {v}")
        ip_len = (frame[16] << 8) | frame[17]
        counted = [(id(o), n) for o, n in cache.recorder.counted if o is not None]
        answer_len = answer_ip_length(frame, meta.answer_kind) if meta.answer_kind else 0
        expect = [(id(o), ip_len if length == LEN_REQUEST else answer_len if length == LEN_ANSWER else n)
                  for o, n, length in meta.counted]
        if counted != expect:
            diffs.append("rule counters differ")
        if made is not None:
            got_made = entry_fields(cache.recorder.created)
            if got_made != made:
                diffs.append(f"new conntrack entries: reference {got_made}, fast path {made}")
        problems = cache.after_run()
        if problems:
            diffs.append(f"the reference changed state the cached decision rests on: {problems[0]}")
        if diffs:
            raise FastpathMismatch(f"frame {index}: fast path and reference differ: " + "; ".join(diffs))
        for sid, tm, data in got:
            self.engine.sink_append(sid, tm, data)
        self._flush()
        self.out.write(ref_line)
        self.validated += 1
        self.hits += 1

    def _learn(self, frame: bytes, r: dict, line: bytes) -> None:
        """Cache the decision just recorded for frame (output line `line`)."""
        key = frame_key(frame, self.cache.carry_psh)
        if key is None or (self._declined and not (self._live_syn and self.cache.recorder.new_entries)):
            return
        if self.cache.recorder.new_entries:
            self._learn_megaflow(frame, key, r, line)
            return
        parts = self._line_parts(r, line)
        if parts is None:
            return
        captured = [(dev, wire.emit(pkt)) for dev, _d, pkt in self.dp.frames_seen]
        eid = self.cache.build(frame, key, parts, r["disposition"], self.sink_of, captured)
        if isinstance(eid, int):
            self.cache.meta[eid].outcome = self._record
            if not self._replays_as_recorded(eid, frame, r["index"], captured, line):
                self.cache.forget(eid)

    def _replays_as_recorded(self, eid: int, frame: bytes, index: int, captured: list,
                             line: bytes | None = None, sources=()) -> bool:
        """The engine that will replay entry eid gives back what the reference
        just did for frame: its captures, and its line unless None (a megaflow
        branch's line is made by the runner; sources: its socket steps')."""
        got = self.cache.predict_recorded(eid, frame, self.dp.now, index, sources)
        want = [(self.sink_of(dev), pcap_record(self.dp.now, data))
                for dev, data in captured] if self.out_dir else []
        return got is not None and got[1] == want and (line is None or got[0] == line)

    def _learn_megaflow(self, frame: bytes, key: bytes, r: dict, line: bytes) -> None:
        """Make the new flow just recorded a megaflow branch, when its line and
        captures come back from another frame of its shape as they came now."""
        if self.senders is not None or r["packet"] is None or \
                self._line_of(self._branch_record(r, r["index"], frame)) != line:
            return
        if ("translated" in r and not self._live_syn) or self._record[4] is None or frame[14] != 0x45:
            return                               # (live replay's fields: the reference says them)
        captured = [(dev, wire.emit(pkt)) for dev, _d, pkt in self.dp.frames_seen]
        eid = self.cache.build_megaflow(frame, key, r["disposition"], self.sink_of, captured)
        if not isinstance(eid, int):
            return
        if not self._replays_as_recorded(eid, frame, r["index"], captured,
                                         sources=self.cache.built_sources):
            self.cache.forget(eid)
            return
        self.branch_records[eid] = (r, self._line_pieces(r, line))
        self.branch_outcomes[eid] = self._record

    def _line_pieces(self, r: dict, line: bytes) -> tuple | None:
        """The JSON line of a UDP branch record cut around its index, source
        port and payload length (None: format it per frame)."""
        p = r["packet"]
        if not self.json or p.get("proto") != "udp" or "length" not in p:
            return None
        marks = (-987654321, -987654322, -987654323)
        text = self._line_of(dict(r, index=marks[0], packet=dict(p, sport=marks[1], length=marks[2])))
        cut = []
        for m in marks:
            head, sep, text = text.partition(str(m).encode())
            if not sep or str(m).encode() in text:
                return None
            cut.append(head)
        pieces = (*cut, text)
        again = b"%s%d%s%d%s%d%s" % (pieces[0], r["index"], pieces[1], p["sport"], pieces[2],
                                    p["length"], pieces[3])
        return pieces if again == line else None

    def _line_parts(self, r: dict, line: bytes) -> tuple:
        """(prefix, suffix[, tail]) cut from the frame's own line: the line is
        prefix + index + suffix, or with a tail prefix + index + suffix + a
        field of the frame (kdp.fast.replay.line_var) + tail: the TCP flags when
        PSH is carried through the key, UDP's payload length (not in the key)."""
        digits = len(str(r["index"]))
        if not self.json:                        # "#" + the index padded to 5 + the rest
            return b"", line[1 + max(5, digits):]
        head = b'{"index": '
        rest = line[len(head) + digits:]
        packet = r["packet"] or {}
        flags, length = packet.get("flags"), packet.get("length")
        if flags is not None and self.cache.carry_psh:
            end = f'"flags": "{flags}"}}}}\n'.encode()
            if rest.endswith(end):
                return head, rest[:len(rest) - len(end) + 10], b'"}}\n'
        if length is not None and packet.get("proto") == "udp":
            end = f'"length": {length}}}}}\n'.encode()
            if not rest.endswith(end):
                return None                      # the length is not in the key: it must be spliced
            return head, rest[:len(rest) - len(end) + 10], b'}}\n'
        return head, rest


def _first_diff(a: list, b: list) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))
