# reference_cpu: the reference path's CPU time per traffic class, this tree
# against another kdp tree (an older commit), runs alternating, the minimum of
# --repeat runs each (CPU time, process_time: what other jobs on a shared
# machine take is not counted; the minimum is the least disturbed run). Each
# run is one child process timing `kdp run CLUSTER --pcap P --at
# pod/default/client --json --no-fastpath --raw` (without --raw for trees that
# predate it).
#
#   git worktree add /tmp/kdp-old <commit> && (cd /tmp/kdp-old && python setup.py -q build_ext --inplace)
#   python benchmarks/reference_cpu.py --other /tmp/kdp-old/src --frames 3000 --repeat 5
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
sys.path.insert(0, HERE)

import traffic  # noqa: E402

CHILD = r"""
import os, sys, time
from kdp.cli import build_parser, main
argv = ["run", sys.argv[1], "--pcap", sys.argv[2], "--at", sys.argv[3], "--json", "--no-fastpath"]
try:                                    # trees before live TCP replay have no --raw (raw was all)
    build_parser().parse_args(argv + ["--raw"])
    argv.append("--raw")
except SystemExit:
    pass
out, sys.stdout = sys.stdout, open(os.devnull, "w")
t = time.process_time()
main(argv)
sys.stdout = out
print(time.process_time() - t)
"""


def cpu(src: str, cluster: str, pcap: str) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", CHILD, cluster, pcap, traffic.CLIENT_AT],
                         capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Reference path CPU time per class: this tree vs --other.")
    p.add_argument("--other", required=True, help="the src directory of the other kdp tree")
    p.add_argument("--classes", default=",".join(traffic.CLASSES))
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kdp-refcpu-") as tmp:
        cluster = traffic.write_cluster(os.path.join(tmp, "cluster"))
        print(f"{'class':15s} {'other (s)':>10s} {'this (s)':>10s} {'gain':>6s}")
        for cls in [c for c in a.classes.split(",") if c]:
            pcap = os.path.join(tmp, f"{cls}.pcap")
            traffic.write_pcap(pcap, cls, a.frames, a.seed)
            other, this = [], []
            for _ in range(a.repeat):
                other.append(cpu(a.other, cluster, pcap))
                this.append(cpu(SRC, cluster, pcap))
            print(f"{cls:15s} {min(other):10.3f} {min(this):10.3f} {min(other) / min(this):5.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
