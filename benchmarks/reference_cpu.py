# reference_cpu: the reference path's CPU time per traffic class, this tree
# against another kdp tree (an older commit), runs alternating, the minimum of
# --repeat runs each (CPU time, process_time: what other jobs on a shared
# machine take is not counted; the minimum is the least disturbed run). Each
# run is one child process timing (the frames: PcapRun.run, not the imports and
# the cluster's build) `kdp run CLUSTER --pcap P --at
# pod/default/client --json --no-fastpath --raw` (without --raw for trees that
# predate it; with --live, never: live TCP replay, kdp run's default). Also
# the median of the summary's frames_per_second (wall time: what a shared
# machine's other jobs take is in it).
#
#   git worktree add /tmp/kdp-old <commit> && (cd /tmp/kdp-old && python setup.py -q build_ext --inplace)
#   python benchmarks/reference_cpu.py --other /tmp/kdp-old/src --frames 3000 --repeat 5
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
sys.path.insert(0, HERE)

import traffic  # noqa: E402

CHILD = r"""
import os, sys, time
from kdp import runner
from kdp.cli import build_parser, main
run, spent = runner.PcapRun.run, []


def timed(self, path):
    t = time.process_time()
    try:
        return run(self, path)
    finally:
        spent.append(time.process_time() - t)


runner.PcapRun.run = timed
argv = ["run", sys.argv[1], "--pcap", sys.argv[2], "--at", sys.argv[3], "--json", "--no-fastpath"]
try:                                    # trees before live TCP replay have no --raw (raw was all)
    if sys.argv[4] != "live":
        build_parser().parse_args(argv + ["--raw"])
        argv.append("--raw")
except SystemExit:
    pass
out, sys.stdout = sys.stdout, open(sys.argv[5], "w")
main(argv)
sys.stdout.close()
sys.stdout = out
print(spent[0])
"""


def cpu(src: str, cluster: str, pcap: str, live: bool) -> tuple[float, float]:
    """(CPU seconds of the run, the summary's frames_per_second)."""
    env = {**os.environ, "PYTHONPATH": src}
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as lines:
        out = subprocess.run([sys.executable, "-c", CHILD, cluster, pcap, traffic.CLIENT_AT,
                              "live" if live else "raw", lines.name],
                             capture_output=True, text=True, env=env, check=True)
        summary = json.loads(lines.read().strip().splitlines()[-1])["summary"]
    return float(out.stdout.strip().splitlines()[-1]), summary["frames_per_second"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Reference path CPU time per class: this tree vs --other.")
    p.add_argument("--other", required=True, help="the src directory of the other kdp tree")
    p.add_argument("--classes", default=",".join(traffic.CLASSES))
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--live", action="store_true", help="live TCP replay (kdp run's default), not --raw")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kdp-refcpu-") as tmp:
        cluster = traffic.write_cluster(os.path.join(tmp, "cluster"))
        print(f"{'class':15s} {'other (s)':>10s} {'this (s)':>10s} {'gain':>6s} "
              f"{'other f/s':>10s} {'this f/s':>10s}")
        for cls in [c for c in a.classes.split(",") if c]:
            pcap = os.path.join(tmp, f"{cls}.pcap")
            traffic.write_pcap(pcap, cls, a.frames, a.seed)
            other, this = [], []
            for _ in range(a.repeat):
                other.append(cpu(a.other, cluster, pcap, a.live))
                this.append(cpu(SRC, cluster, pcap, a.live))
            o, t = min(c for c, _ in other), min(c for c, _ in this)
            fo, ft = (statistics.median(f for _, f in runs) for runs in (other, this))
            print(f"{cls:15s} {o:10.3f} {t:10.3f} {o / t:5.2f}x {fo:10,.0f} {ft:10,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
