# bench_classes: `kdp run` per traffic class (benchmarks/traffic.py), the fast
# path beside the reference (`--no-fastpath`) in one run, alternating, medians
# of --repeat runs; each run a child process (`kdp run CLUSTER --pcap P --at
# ATTACH --json`, ATTACH the class's sender: the client pod, the outside host,
# or `auto` for the mix), frames/s from its JSON summary (the frames' time
# only: the summary's `seconds` start after the cluster is loaded; the rest of
# the child's wall time is reported as setup). Also checks that both modes
# printed the same lines (sha256 of stdout). Writes a JSON report.
#
# With --kernel (root), the kernel's rate on the same frames is measured in the
# same run (bench_kernel_classes.py: the cluster built in throwaway network
# namespaces by kdp's kernel oracle), in each --proxy-mode, so every class gets
# kdp/kernel ratios. --services N runs on the cluster with N extra ClusterIP
# Services (the 10,000-service cluster). --plot draws frames/s per class (fast,
# reference, kernel per mode; log scale; matplotlib, the `plot` extra);
# --replot draws saved reports without running anything.
#
#   python benchmarks/bench_classes.py --frames 5000 --repeat 5 --kernel
#   python benchmarks/bench_classes.py --classes udp-pod,icmp-echo --frames 2000 --repeat 3
#   python benchmarks/bench_classes.py --services 10000 --kernel --results benchmarks/results/classes-10k.json
#   python benchmarks/bench_classes.py --replot benchmarks/results/classes.json \
#       benchmarks/results/classes-10k.json --plot docs/classes.svg
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "src")
sys.path.insert(0, HERE)
sys.path.insert(0, SRC)

import traffic  # noqa: E402

# the classes that matter on the 10,000-service cluster (new flows to ClusterIPs)
SERVICES_CLASSES = "syn-clusterip,udp-new-clusterip"


def run_once(cluster: str, pcap: str, fastpath: bool, raw: bool = False,
             at: str = traffic.CLIENT_AT) -> tuple[dict, str, float]:
    """One `kdp run` (live replay, the default: the sender's flows own their
    answers, as an application's sockets would; raw: injected as recorded).
    Returns the summary, the sha256 of the frame lines and the child's wall time."""
    argv = [sys.executable, "-m", "kdp.cli", "run", cluster, "--pcap", pcap, "--at", at,
            "--json"] + (["--raw"] if raw else [])
    if not fastpath:
        argv.append("--no-fastpath")
    env = {k: v for k, v in os.environ.items() if k not in ("KDP_NO_EXTENSIONS", "KDP_FASTPATH_VALIDATE")}
    env["PYTHONPATH"] = os.pathsep.join([SRC] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {out.returncode}\n{out.stderr.decode()[-2000:]}")
    lines = out.stdout.splitlines()
    summary = json.loads(lines[-1])["summary"]
    digest = hashlib.sha256(b"\n".join(lines[:-1])).hexdigest()
    return summary, digest, wall


def kernel_rates(tmp: str, classes: list[str], a) -> dict:
    """{mode: {"classes": {class: the kernel's rate}, build info}} on the same
    frames (bench_kernel_classes), or {} with a note when the kernel cannot be
    measured here."""
    import bench_kernel_classes as K
    from kdp.oracle import netns as N
    why = N.available()
    if why:
        print(f"kernel not measured: {why}", flush=True)
        return {}
    for cls in classes:
        if cls in K.NOT_DRIVEN:
            print(f"{cls}: the kernel is not measured: {K.NOT_DRIVEN[cls]}", flush=True)
    out = {}
    for mode in a.proxy_mode.split(","):
        cluster = traffic.write_cluster(os.path.join(tmp, f"kernel-{mode}"), a.services, mode)
        info: dict = {}
        rows = K.measure_classes(cluster, classes, a.frames, a.repeat, a.seed, services=a.services, info=info)
        print(f"kernel [{mode}]: cluster built in {info['kernel_build_seconds']} s "
              f"({info['ruleset_lines']} ruleset lines loaded); "
              + ", ".join(f"{c} {r['median_frames_per_second']:,.0f}/s" for c, r in rows.items()), flush=True)
        out[mode] = dict(info, classes=rows)
    return out


def implementation() -> str:
    out = subprocess.run([sys.executable, "-c", "import kdp.fast as f; print(f.IMPLEMENTATION)"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC})
    return out.stdout.strip() or "unknown"


def measure_class(cluster: str, pcap: str, cls: str, a) -> dict:
    fast, ref, digests, hits, setup, flows = [], [], set(), [], [], None
    at = traffic.ATTACH[cls]
    for _ in range(a.repeat):
        s, d, wall = run_once(cluster, pcap, True, a.raw, at)
        fast.append(s["frames_per_second"])
        hits.append(s.get("fastpath_hits", 0))
        setup.append(wall - s["seconds"])
        digests.add(d)
        flows = s.get("outcomes", {}).get("flows")
        if not a.fast_only:
            s, d, wall = run_once(cluster, pcap, False, a.raw, at)
            ref.append(s["frames_per_second"])
            setup.append(wall - s["seconds"])
            digests.add(d)
    ref = ref or [math.nan]
    return {"at": at, "fast_median": statistics.median(fast), "fast_range": [min(fast), max(fast)],
            "reference_median": statistics.median(ref), "reference_range": [min(ref), max(ref)],
            "ratio": round(statistics.median(fast) / statistics.median(ref), 2),
            "fastpath_hits": statistics.median(hits), "identical_output": len(digests) == 1,
            "setup_seconds_median": round(statistics.median(setup), 2), "flows": flows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="kdp run per traffic class: fast path vs reference (vs the kernel).")
    p.add_argument("--classes", help=f"default: all ({','.join(traffic.CLASSES)}); "
                   f"with --services: {SERVICES_CLASSES}")
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--services", type=int, default=0,
                   help="N extra ClusterIP Services in the cluster (traffic.py; 10000: the 10,000-service cluster)")
    p.add_argument("--kernel", action="store_true",
                   help="also measure the real kernel on the same frames (root; throwaway namespaces)")
    p.add_argument("--proxy-mode", default="iptables,nftables",
                   help="kube-proxy modes the kernel is measured in (default both: iptables,nftables)")
    p.add_argument("--raw", action="store_true", help="kdp run --raw (no live replay)")
    p.add_argument("--fast-only", action="store_true",
                   help="measure the fast path only (long pcaps: the reference would take minutes)")
    p.add_argument("--results", default=os.path.join(HERE, "results", "classes.json"))
    p.add_argument("--plot", metavar="FILE.svg", help="draw frames/s per class (matplotlib)")
    p.add_argument("--replot", nargs="+", metavar="RESULTS.json",
                   help="draw --plot from saved reports (one panel each) and exit")
    p.add_argument("--table", metavar="RESULTS.json", help="print a saved report as a Markdown table and exit")
    a = p.parse_args(argv)
    if a.table:
        with open(a.table) as fh:
            print(table(json.load(fh)))
        return 0
    if a.replot:
        if not a.plot:
            p.error("--replot needs --plot FILE.svg")
        docs = []
        for path in a.replot:
            with open(path) as fh:
                docs.append(json.load(fh))
        plot(docs, a.plot)
        print(f"written {a.plot}")
        return 0
    for mode in a.proxy_mode.split(","):
        if mode not in ("iptables", "nftables"):
            p.error(f"--proxy-mode {mode}: iptables or nftables")
    classes = [c for c in (a.classes or (SERVICES_CLASSES if a.services else ",".join(traffic.CLASSES))).split(",") if c]
    for c in classes:
        if c not in traffic.CLASSES:
            p.error(f"--classes: unknown class {c!r} (one of {', '.join(traffic.CLASSES)})")
    impl = implementation()
    doc = {"frames": a.frames, "repeat": a.repeat, "seed": a.seed, "implementation": impl,
           "services": a.services, "mode": "raw" if a.raw else "live",
           "command": " ".join(["python", "benchmarks/bench_classes.py"] + (argv if argv is not None else sys.argv[1:])),
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "load_before": [round(x, 2) for x in os.getloadavg()],
           "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                       "python": platform.python_version(), "cpu": platform.processor()},
           "classes": {}}
    with tempfile.TemporaryDirectory(prefix="kdp-classes-") as tmp:
        cluster = traffic.write_cluster(os.path.join(tmp, "cluster"), a.services)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kdp.cli", "validate", cluster], capture_output=True,
                       env={**os.environ, "PYTHONPATH": SRC}, check=True)
        doc["cluster_validate_seconds"] = round(time.perf_counter() - t0, 2)
        kernel = kernel_rates(tmp, classes, a) if a.kernel else {}
        doc["kernel"] = {m: {k: v for k, v in info.items() if k != "classes"} for m, info in kernel.items()}
        for cls in classes:
            pcap = os.path.join(tmp, f"{cls}.pcap")
            traffic.write_pcap(pcap, cls, a.frames, a.seed, a.services)
            row = measure_class(cluster, pcap, cls, a)
            row["kernel"], row["fast_over_kernel"] = {}, {}
            for mode, info in kernel.items():
                k = info["classes"].get(cls)
                if k is None:
                    continue
                row["kernel"][mode] = {"median": k["median_frames_per_second"], "range": k["range"],
                                       "counted_of_sent": k["counted_of_sent"]}
                row["fast_over_kernel"][mode] = round(row["fast_median"] / k["median_frames_per_second"], 3)
            doc["classes"][cls] = row
            print(f"{cls:20s} fast {row['fast_median']:>9,.0f}/s  reference {row['reference_median']:>7,.0f}/s  "
                  f"x{row['ratio']:<5} hits {row['fastpath_hits']:>6}  identical {row['identical_output']}  "
                  f"setup {row['setup_seconds_median']} s"
                  + "".join(f"  kernel[{m}] {k['median']:>8,.0f}/s fast/kernel {row['fast_over_kernel'][m]}"
                            for m, k in row["kernel"].items()), flush=True)
            save(doc, a.results)                # each class as it is done: a long run stopped keeps them
    doc["load_after"] = [round(x, 2) for x in os.getloadavg()]
    save(doc, a.results)
    print(f"[{impl}] {a.frames} frames per class, median of {a.repeat}; load {doc['load_before'][0]} -> "
          f"{doc['load_after'][0]}; written {a.results}")
    if a.plot:
        plot([doc], a.plot)
        print(f"written {a.plot}")
    return 0


def save(doc: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(path + ".tmp", path)


def table(doc: dict) -> str:
    """The report as a Markdown table: medians, ratios, cache hits, flows."""
    def n(v):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.0f}"

    def r(v):
        return "—" if v is None else (f"{v:.3f}" if v < 0.1 else f"{v:.2f}")
    out = ["| class | fast path | `--no-fastpath` | fast / ref | cache hits | kernel, iptables | kernel, "
           "nftables | fast / kernel (iptables, nftables) | flows opened / completed / reset |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cls, row in doc["classes"].items():
        k, fk = row.get("kernel", {}), row.get("fast_over_kernel", {})
        f = row.get("flows") or {}
        out.append(f"| {cls} | {n(row['fast_median'])} | {n(row['reference_median'])} | {row['ratio']:.2f}x | "
                   f"{n(row['fastpath_hits'])} | {n(k.get('iptables', {}).get('median'))} | "
                   f"{n(k.get('nftables', {}).get('median'))} | {r(fk.get('iptables'))}, {r(fk.get('nftables'))} | "
                   f"{f.get('opened', '—')} / {f.get('completed', '—')} / {f.get('reset', '—')} |")
    return "\n".join(out)


def plot(docs: list[dict], path: str) -> None:
    """frames/s per class, one panel per report: fast path, reference and the
    kernel in each proxy mode measured, on a log scale."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'kdp[plot]'") from None
    matplotlib.rcParams["svg.hashsalt"] = "kdp"          # the same file for the same numbers
    widths = [max(4, len(d["classes"])) for d in docs]
    fig, axes = plt.subplots(1, len(docs), figsize=(1.0 * sum(widths) + 2, 5.2), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    series = [("fast path", lambda r: r["fast_median"], "#1f77b4"),
              ("--no-fastpath", lambda r: r["reference_median"], "#ff7f0e"),
              ("kernel, iptables", lambda r: r.get("kernel", {}).get("iptables", {}).get("median",
                                                                                  r.get("kernel_median")), "#2ca02c"),
              ("kernel, nftables", lambda r: r.get("kernel", {}).get("nftables", {}).get("median"), "#9467bd")]
    for ax, d in zip(axes[0], docs):
        names = list(d["classes"])
        w = 0.8 / len(series)
        for j, (label, get, color) in enumerate(series):
            xs, ys = [], []
            for i, c in enumerate(names):
                v = get(d["classes"][c])
                if v is not None and not (isinstance(v, float) and math.isnan(v)) and v > 0:
                    xs.append(i + (j - (len(series) - 1) / 2) * w)
                    ys.append(v)
            if ys:
                ax.bar(xs, ys, width=w, label=label, color=color)
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("frames/s (median)")
        where = f"+{d['services']:,} Services" if d.get("services") else "the benchmark cluster"
        ax.set_title(f"{where}: {d['frames']:,} frames, median of {d['repeat']}", fontsize=9)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
