# Two emulators in one process: each datapath owns the change log its flow
# cache revalidates against (Datapath.watch). Two `kdp run`-style runs
# (PcapRun, flow cache on, rule changes as events) interleaved frame block by
# frame block give the same lines, captures, tables, counters and summary
# (fast path hits included) as each run alone on a fresh emulator.
#
#   A: client (n1) --frames--> cbr0 n1 --> web-1 (n1), and via the edge to ext;
#      then one frame from client's port that carries web-1's MAC as source
#      (the FDB entry of web-1 moves to client's port)
#   B: client (n1) --frames--> web-2, the Service web, ext; a rule change on n2
#
# With one change log shared by the process the interleaved runs differ from
# the lone ones in two ways: B's rule change and neighbour entries move A's
# generation, so A forgets its cached flows (fewer fast path hits); and B's
# cache closing stops the log recording tokens, so the move of web-1's FDB
# entry in A goes unheard and A replays "delivered to web-1" for frames the
# reference drops as not-for-this-host.
import io
import os
import struct
import threading

from kdp.emulator import Emulator
from kdp.runner import PcapRun

from .svc_cluster import svc_cluster
from .test_flowcache import _frame, _mac, drop_8080, write_traffic

SYN, ACK = 0x02, 0x10


def write_spoof_traffic(path: str, emu: Emulator) -> None:
    """client's flows to web-1 and ext, a new flow now and then (a frame the
    cache cannot replay), and at frame 38 a frame with web-1's MAC as source."""
    c = emu.cluster
    client = emu.attach_device("pod/default/client")
    cbr0 = emu.topology.node_ns["n1"].devices["cbr0"]
    web1 = emu.topology.pod_ns["default/web-1"].devices["eth0"]
    dsts = {"web-1": (c.pod("default", "web-1").ip.packed, 8080, 40000),
            "ext": (bytes([93, 184, 216, 34]), 443, 40001),
            "web-1b": (c.pod("default", "web-1").ip.packed, 8080, 40002),
            "web-1c": (c.pod("default", "web-1").ip.packed, 8080, 40003)}
    pairs = [("web-1", ACK, False), ("ext", ACK, False)]
    plan = [("web-1", SYN, False), ("ext", SYN, False)] + pairs * 10        # 0-21
    plan += [("web-1b", SYN, False)] + pairs * 4                           # 22-30
    plan += [("web-1c", SYN, False)] + pairs * 3                           # 31-37
    plan += [("ext", ACK, True)] + [("web-1", ACK, False)] * 6             # 38-44
    t, out = 1.0, [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for i, (who, flags, spoof) in enumerate(plan):
        t += 0.01
        ip, port, sport = dsts[who]
        src_mac = web1.mac if spoof else client.mac
        f = _frame(_mac(src_mac), _mac(cbr0.mac), c.pod("default", "client").ip.packed, ip, sport, port,
                   flags, 1000 + 17 * i, 5 + 3 * i, i, b"")
        sec = int(t)
        out.append(struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(f), len(f)) + f)
    with open(path, "wb") as fh:
        fh.write(b"".join(out))


class Baton:
    """Runs callables in threads one at a time: a run hands over to the next
    unfinished one when its frame count reaches one of its switch points.
    log: (run, frames it had done) at each hand-over."""

    def __init__(self, n: int):
        self.n, self.turn, self.done, self.log = n, 0, set(), []
        self.cv = threading.Condition()

    def _next(self, me: int) -> int:
        for k in range(1, self.n + 1):
            if (me + k) % self.n not in self.done:
                return (me + k) % self.n
        return me

    def progress(self, me: int, points: list[int]):
        seen, todo = [0], sorted(points)

        def cb(n: int) -> None:
            seen[0] += n
            while todo and seen[0] >= todo[0]:
                todo.pop(0)
                with self.cv:
                    self.log.append((me, seen[0]))
                    self.turn = self._next(me)
                    self.cv.notify_all()
                    self.cv.wait_for(lambda: self.turn == me)
        return cb

    def run(self, fns: list) -> list:
        results: list = [("error", RuntimeError("did not finish"))] * self.n

        def body(me: int) -> None:
            with self.cv:
                self.cv.wait_for(lambda: self.turn == me)
            try:
                results[me] = ("ok", fns[me]())
            except BaseException as e:          # noqa: BLE001 - raised in the test below
                results[me] = ("error", e)
            with self.cv:
                self.done.add(me)
                self.turn = self._next(me)
                self.cv.notify_all()
        threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(self.n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=300)
        for status, value in results:
            if status == "error":
                raise value
        return [value for _status, value in results]


def start(tmp, name: str, pcap: str, events: dict, progress=None):
    """A run ready to go, and what to read back from it afterwards."""
    emu = Emulator(svc_cluster(), seed=3, capture=False, trace=False)
    out, d = io.BytesIO(), os.path.join(tmp, name)
    run = PcapRun(emu, "pod/default/client", out, json_lines=True, out_dir=d, events=dict(events),
                  progress=progress)

    def go() -> tuple:
        summary = run.run(pcap)
        files = {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}
        tables = {n.name: (emu.topology.node_ns[n.name].netfilter.conntrack.to_conntrack_l(emu.datapath.now),
                           emu.topology.node_ns[n.name].netfilter.ruleset.to_iptables_save(counters=True))
                  for n in emu.cluster.nodes}
        return out.getvalue(), files, tables, summary
    return go


def test_interleaved_runs_on_two_emulators_are_each_as_if_alone(tmp_path):
    a_pcap, b_pcap = str(tmp_path / "a.pcap"), str(tmp_path / "b.pcap")
    write_spoof_traffic(a_pcap, Emulator(svc_cluster(), capture=False))
    b_traffic = [(0.01, f, "S", 0) for f in (0, 3, 8)] + [(0.01, (0, 3, 8)[i % 3], "A", i % 2) for i in range(60)]
    write_traffic(b_pcap, Emulator(svc_cluster(), capture=False), b_traffic)
    a_events, b_events = {4: drop_8080}, {30: drop_8080}

    alone_a = start(str(tmp_path), "alone-a", a_pcap, a_events)()
    alone_b = start(str(tmp_path), "alone-b", b_pcap, b_events)()
    lines = alone_a[0].decode().splitlines()
    assert all('"disposition": "delivered"' in ln for ln in lines[32:38])
    assert all('"reason": "not-for-this-host"' in ln for ln in lines[39:])
    assert alone_a[3]["fastpath_hits"] > 10 and alone_b[3]["fastpath_hits"] > 40

    # A hands over when its count passes 8 and 24, B at 20 (counts move by whole
    # replayed batches): A runs frames 0-21, B 0-29, A 22-30, B 30 to the end (its
    # rule change at 30; then its cache closes), A 31 to the end: it learns web-1
    # and ext again, web-1's FDB entry moves at 38, and the frames to web-1 after
    # it must not be replayed
    baton = Baton(2)
    got_a, got_b = baton.run([start(str(tmp_path), "mixed-a", a_pcap, a_events, baton.progress(0, [8, 24])),
                              start(str(tmp_path), "mixed-b", b_pcap, b_events, baton.progress(1, [20]))])
    for name, got, alone in (("A", got_a, alone_a), ("B", got_b, alone_b)):
        assert got[0] == alone[0], f"{name}: output lines differ from the run alone"
        assert got[1] == alone[1], f"{name}: captures differ from the run alone"
        assert got[2] == alone[2], f"{name}: conntrack tables or counters differ from the run alone"
        assert got[3] == alone[3], f"{name}: summary (fast path hits) differs from the run alone"
    assert baton.log == [(0, 22), (1, 30), (0, 31)]      # the schedule above, as it ran


def test_a_rule_change_in_one_emulator_leaves_the_others_cached_flows(tmp_path):
    """B's rules change while A's run is between frames: A's next miss (frame
    22) must not make A forget the flows it cached (with one log for the
    process it did: the flows of frames 23-30 were learnt again)."""
    a_pcap = str(tmp_path / "a.pcap")
    write_spoof_traffic(a_pcap, Emulator(svc_cluster(), capture=False))
    alone = start(str(tmp_path), "alone", a_pcap, {})()
    emu_b = Emulator(svc_cluster(), seed=3, capture=False, trace=False)
    changed = []

    def change_b(n: int) -> None:
        if n > 1 and not changed:                # the engine replayed frames 6-21
            drop_8080(emu_b)
            changed.append(n)
    got = start(str(tmp_path), "mixed", a_pcap, {}, change_b)()
    assert changed == [16]
    assert got[3] == alone[3], "A's fast path hits changed with B's rules"
    assert got[:3] == alone[:3]
