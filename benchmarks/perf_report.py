# The numbers and plots of docs/performance.md, side by side in one run:
# kube-proxy rules on first packets (reference iptables walk vs compiled matcher)
# at 100; 1,000; 10,000; 100,000 services x 2 endpoints, and the conntrack table
# (inserts/s, lookups/s, bytes per entry) at 10k and 1M entries. Run:
#   python benchmarks/perf_report.py [--services 100,1000,10000,100000] [--out DIR]
# Writes DIR/performance.json (default benchmarks/results/) and docs/img/*.png
# (matplotlib, optional). The reference walk is capped at ~30 s per size.
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from kdp import bench, fast  # noqa: E402


def machine() -> dict:
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, shell=True).stdout.strip()
        except OSError:
            return ""
    return {"nproc": run("nproc"), "lscpu": run("lscpu | head -20"), "kernel": platform.release(),
            "python": platform.python_version(), "implementation": fast.IMPLEMENTATION,
            "loadavg_start": os.getloadavg()}


def conntrack_section(log) -> list[dict]:
    from kdp.fast import conntrack as pure_ct
    out = []
    for n in (10_000, 1_000_000):
        r = bench.bench_conntrack(n, repeats=11)
        r["impl"] = fast.IMPLEMENTATION
        out.append(r)
        log(f"conntrack {n}: {r['inserts_per_second']:,.0f} inserts/s, "
            f"{r['lookups_per_second']:,.0f} lookups/s, {r['bytes_per_entry']} B/entry "
            f"(entry struct {r['entry_size']} B)")
    r = bench.bench_conntrack(10_000, repeats=2, impl=pure_ct.CtTable)
    r["impl"] = "reference"
    out.append(r)
    log(f"conntrack reference 10000: {r['inserts_per_second']:,.0f} inserts/s, "
        f"{r['lookups_per_second']:,.0f} lookups/s")
    return out


def plots(doc: dict, img: str, log) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots (pip install matplotlib)")
        return
    os.makedirs(img, exist_ok=True)
    rules = doc["rules"]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for impl, style in (("reference", "o-"), ("compiled", "s-")):
        rs = [r for r in rules if r["impl"] == impl]
        ax[0].loglog([r["services"] for r in rs], [r["new_flows_per_second"] for r in rs], style,
                     label=impl)
        ax[1].loglog([r["services"] for r in rs],
                     [r["rules_evaluated_per_first_packet"] for r in rs], style, label=impl)
    ax[0].axhline(50e6, color="grey", ls=":", lw=1, label="target 50M/s")
    # the real kernel on this kind of machine (shared/reference/linux.md): new UDP flows/s
    ax[0].loglog([1, 1000, 10000], [146e3, 74e3, 12.4e3], "^--", color="red", lw=1,
                 label="real kernel, iptables mode")
    ax[0].loglog([1, 10000], [150e3, 150e3], "v--", color="purple", lw=1,
                 label="real kernel, nftables mode")
    ax[0].set(xlabel="services (2 endpoints each)", ylabel="new flows / s",
              title="first-packet decisions per second")
    ax[1].set(xlabel="services (2 endpoints each)", ylabel="rules evaluated",
              title="rules evaluated per first packet")
    for a in ax:
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(img, "rules.png"), dpi=110)
    ct = [r for r in doc["conntrack"] if r["impl"] == "cython"]
    if ct:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [f"{r['entries']:,}" for r in ct]
        w = 0.38
        ax.bar([i - w / 2 for i in range(len(ct))], [r["lookups_per_second"] / 1e6 for r in ct], w,
               label="lookups")
        ax.bar([i + w / 2 for i in range(len(ct))], [r["inserts_per_second"] / 1e6 for r in ct], w,
               label="inserts")
        ax.axhline(20, color="grey", ls=":", lw=1, label="lookup target 20M/s")
        ax.set_xticks(range(len(ct)), xs)
        ax.set(xlabel="entries", ylabel="million / s", title="compiled conntrack")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(img, "conntrack.png"), dpi=110)
    log(f"plots in {img}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", default="100,1000,10000,100000")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--img", default=os.path.join(ROOT, "docs", "img"))
    p.add_argument("--skip-conntrack", action="store_true")
    p.add_argument("--plot-only", action="store_true", help="redraw from DIR/performance.json")
    a = p.parse_args()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if a.plot_only:
        with open(os.path.join(a.out, "performance.json")) as fh:
            plots(json.load(fh), a.img, print)
        return 0
    doc = {"machine": machine(), "command": " ".join(sys.argv)}
    t0 = time.time()
    doc["rules"] = bench.run_rules([int(x) for x in a.services.split(",")], 2,
                                   ("reference", "compiled"), log=log, compiled_repeats=21,
                                   details=True)
    if not a.skip_conntrack:
        doc["conntrack"] = conntrack_section(log)
    doc["machine"]["loadavg_end"] = os.getloadavg()
    doc["seconds"] = round(time.time() - t0, 1)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "performance.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
    plots(doc, a.img, log)
    print(json.dumps({"rules": doc["rules"], "conntrack": doc.get("conntrack")}, indent=1,
                     default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
