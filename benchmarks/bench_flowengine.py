# bench_flowengine: where the fast path's time goes. Warms the flow cache on
# the demo cluster with a pcap of established flows (benchmarks/make_pcap.py),
# then times the engine alone over the whole pcap held in memory, three ways:
# output lines only (JSON), plus per-device captures, and the frame key alone
# (checksums + hash lookup, entries that replay nothing). Medians of --repeat.
#   python benchmarks/bench_flowengine.py [--frames 1000000] [--repeat 5]
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

import make_pcap  # noqa: E402

from kdp.fast import IMPLEMENTATION, FlowEngine  # noqa: E402
from kdp.emulator import Emulator  # noqa: E402
from kdp.runner import PcapRun  # noqa: E402


def warm(path: str, out_dir: str | None):
    emu = Emulator.demo(capture=False, trace=False)
    run = PcapRun(emu, "pod/default/client", io.BytesIO(), json_lines=True, out_dir=out_dir)
    counts = run.run(path)
    return run, counts


def time_engine(engine, buf: bytes, repeat: int, drain) -> list[float]:
    rates = []
    for _ in range(repeat):
        pos, index, now, frames = 24, 0, 0.0, 0
        t0 = time.perf_counter()
        while pos < len(buf):
            status, pos2, index2, now = engine.run(buf, pos, len(buf), index, now, 1e-6, False)
            frames += index2 - index
            index = index2
            drain()
            if status != 0 and pos2 < len(buf) and status == 1:
                incl = struct.unpack_from("<I", buf, pos2 + 8)[0]
                pos2 += 16 + incl                 # a miss: skip it (the reference is not timed)
                index += 1
            pos = pos2
            if status == 2:
                break
        rates.append(frames / (time.perf_counter() - t0))
    return rates


def replay_all(engine, buf: bytes) -> int:
    """One pass over the pcap, skipping misses; the frames replayed."""
    pos, index, now, frames = 24, 0, 0.0, 0
    while pos < len(buf):
        status, pos2, index2, now = engine.run(buf, pos, len(buf), index, now, 1e-6, False)
        frames += index2 - index
        index = index2
        if status == 1:
            pos2 += 16 + struct.unpack_from("<I", buf, pos2 + 8)[0]
            index += 1
        pos = pos2
        if status == 2:
            break
    return frames


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--flows", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "est.pcap")
        make_pcap.write_pcap(path, frames=a.frames, flows=a.flows, mix="established", seed=0)
        buf = open(path, "rb").read()
        results = {"implementation": IMPLEMENTATION, "frames": a.frames, "flows": a.flows}
        run, counts = warm(path, None)
        eng = run.engine
        results["lines"] = time_engine(eng, buf, a.repeat, eng.out_take)
        run_c, _ = warm(path, os.path.join(d, "caps"))
        engc = run_c.engine

        def drain_all():
            engc.out_take()
            for sid in range(len(run_c.sink_names)):
                engc.sink_take(sid)
        results["lines_and_captures"] = time_engine(engc, buf, a.repeat, drain_all)
        # records per replayed frame: one more pass over the pcap, then count them
        for sid in range(len(run_c.sink_names)):
            engc.sink_take(sid)
        n_frames = replay_all(engc, buf)
        records = 0
        for sid in range(len(run_c.sink_names)):
            data, off = engc.sink_take(sid), 0
            while off < len(data):
                off += 16 + struct.unpack_from("<I", data, off + 8)[0]
                records += 1
        results["capture_records_per_frame"] = round(records / max(1, n_frames), 2)
        # the key alone: the same keys, programs that do nothing, empty lines
        bare = FlowEngine(False)
        from kdp.fast.replay import frame_key
        pos, seen = 24, set()
        while pos < len(buf):
            incl = struct.unpack_from("<I", buf, pos + 8)[0]
            k = frame_key(buf[pos + 16:pos + 16 + incl])
            if k is not None and k not in seen:
                seen.add(k)
                bare.add(k, b"", b"", b"", b"", b"")
            pos += 16 + incl
        results["key_and_lookup"] = time_engine(bare, buf, a.repeat, bare.out_take)
        results["hits_in_warm_run"] = counts["fastpath_hits"]
    print(f"capture records per replayed frame: {results['capture_records_per_frame']}")
    for k in ("lines", "lines_and_captures", "key_and_lookup"):
        r = results[k]
        results[k] = {"median_frames_per_second": round(statistics.median(r)), "runs": [round(x) for x in r]}
        print(f"{k:<20} {results[k]['median_frames_per_second']:>12,} frames/s  "
              f"(runs: {', '.join(f'{x/1e6:.2f}M' for x in r)})")
    with open(os.path.join(HERE, "results", "flowengine.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
