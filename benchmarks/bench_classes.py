# bench_classes: `kdp run` per traffic class (benchmarks/traffic.py), the fast
# path beside the reference (`--no-fastpath`) in one run, alternating, medians
# of --repeat runs; each run a child process (`kdp run CLUSTER --pcap P --at
# pod/default/client --json`), frames/s from its JSON summary. Also checks that
# both modes printed the same lines (sha256 of stdout). Writes a JSON report.
#
# With --kernel (root), the kernel's rate on the same frames is measured in the
# same run (bench_kernel_classes.py: the cluster built in throwaway network
# namespaces by kdp's kernel oracle), so every class gets kdp/kernel ratios.
#
#   python benchmarks/bench_classes.py --frames 5000 --repeat 5 --kernel
#   python benchmarks/bench_classes.py --classes udp-pod,icmp-echo --frames 2000 --repeat 3
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "src")
sys.path.insert(0, HERE)
sys.path.insert(0, SRC)

import traffic  # noqa: E402


def run_once(cluster: str, pcap: str, fastpath: bool, raw: bool = False) -> tuple[dict, str]:
    """One `kdp run` (live replay, the default: the client's flows own their
    answers, as an application's sockets would; raw: injected as recorded)."""
    argv = [sys.executable, "-m", "kdp.cli", "run", cluster, "--pcap", pcap, "--at", traffic.CLIENT_AT,
            "--json"] + (["--raw"] if raw else [])
    if not fastpath:
        argv.append("--no-fastpath")
    env = {k: v for k, v in os.environ.items() if k not in ("KDP_NO_EXTENSIONS", "KDP_FASTPATH_VALIDATE")}
    env["PYTHONPATH"] = os.pathsep.join([SRC] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = subprocess.run(argv, capture_output=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {out.returncode}\n{out.stderr.decode()[-2000:]}")
    lines = out.stdout.splitlines()
    summary = json.loads(lines[-1])["summary"]
    digest = hashlib.sha256(b"\n".join(lines[:-1])).hexdigest()
    return summary, digest


def kernel_rates(cluster: str, classes: list[str], a) -> dict:
    """{class: the kernel's rate} on the same frames (bench_kernel_classes),
    or {} with a note when the kernel cannot be measured here."""
    import bench_kernel_classes as K
    from kdp.oracle import netns as N
    why = N.available()
    if why:
        print(f"kernel not measured: {why}", flush=True)
        return {}
    return K.measure_classes(cluster, classes, a.frames, a.repeat, a.seed)


def implementation() -> str:
    out = subprocess.run([sys.executable, "-c", "import kdp.fast as f; print(f.IMPLEMENTATION)"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC})
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="kdp run per traffic class: fast path vs reference.")
    p.add_argument("--classes", default=",".join(traffic.CLASSES))
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kernel", action="store_true",
                   help="also measure the real kernel on the same frames (root; throwaway namespaces)")
    p.add_argument("--raw", action="store_true", help="kdp run --raw (no live replay)")
    p.add_argument("--fast-only", action="store_true",
                   help="measure the fast path only (long pcaps: the reference would take minutes)")
    p.add_argument("--results", default=os.path.join(HERE, "results", "classes.json"))
    a = p.parse_args(argv)
    classes = [c for c in a.classes.split(",") if c]
    impl = implementation()
    doc = {"frames": a.frames, "repeat": a.repeat, "seed": a.seed, "implementation": impl,
           "mode": "raw" if a.raw else "live", "load_before": os.getloadavg()[0],
           "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                       "python": platform.python_version(), "cpu": platform.processor()},
           "classes": {}}
    with tempfile.TemporaryDirectory(prefix="kdp-classes-") as tmp:
        cluster = traffic.write_cluster(os.path.join(tmp, "cluster"))
        kernel = kernel_rates(cluster, classes, a) if a.kernel else {}
        for cls in classes:
            pcap = os.path.join(tmp, f"{cls}.pcap")
            traffic.write_pcap(pcap, cls, a.frames, a.seed)
            fast, ref, digests, hits = [], [], set(), []
            for _ in range(a.repeat):
                s, d = run_once(cluster, pcap, True, a.raw)
                fast.append(s["frames_per_second"])
                hits.append(s.get("fastpath_hits", 0))
                digests.add(d)
                if not a.fast_only:
                    s, d = run_once(cluster, pcap, False, a.raw)
                    ref.append(s["frames_per_second"])
                    digests.add(d)
            ref = ref or [math.nan]
            row = {"fast_median": statistics.median(fast), "fast_range": [min(fast), max(fast)],
                   "reference_median": statistics.median(ref), "reference_range": [min(ref), max(ref)],
                   "ratio": round(statistics.median(fast) / statistics.median(ref), 2),
                   "fastpath_hits": statistics.median(hits), "identical_output": len(digests) == 1}
            k = kernel.get(cls)
            if k is not None:
                row["kernel_median"] = k["median_frames_per_second"]
                row["kernel_range"] = k["range"]
                row["fast_over_kernel"] = round(row["fast_median"] / row["kernel_median"], 3)
            doc["classes"][cls] = row
            print(f"{cls:15s} fast {row['fast_median']:>10,.0f}/s  reference {row['reference_median']:>8,.0f}/s  "
                  f"x{row['ratio']:<6} hits {row['fastpath_hits']:>6}  identical {row['identical_output']}"
                  + (f"  kernel {row['kernel_median']:>9,.0f}/s  fast/kernel {row['fast_over_kernel']}"
                     if k is not None else ""), flush=True)
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    with open(a.results, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"[{impl}] {a.frames} frames per class, median of {a.repeat}; written {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
