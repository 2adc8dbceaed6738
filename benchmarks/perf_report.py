# The numbers and plots of docs/performance.md, side by side in one run:
# kube-proxy rules on first packets (reference walk vs compiled matcher vs the
# real kernel in throwaway network namespaces, measured here, as root) at 100;
# 1,000; 10,000; 100,000 services x 2 endpoints, and the conntrack table
# (inserts/s, lookups/s, bytes per entry) at 10k and 1M entries. Run:
#   python benchmarks/perf_report.py [--services 100,1000,10000,100000] [--out DIR]
# Writes DIR/performance.json (default benchmarks/results/) and docs/img/*.png
# (matplotlib, optional). Refuses to run on the matcher's pure twin (kdp._fastpath
# not built, or KDP_NO_EXTENSIONS=1) unless --allow-pure-twin, and then labels it
# "pure twin", never "compiled". The reference walk is capped at --budget s per size.
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from kdp import bench, bench_report, bench_rules, fast  # noqa: E402

def conntrack_section(log) -> list[dict]:
    from kdp.fast import conntrack as pure_ct
    out = []
    for n in (10_000, 1_000_000):
        r = bench.bench_conntrack(n, repeats=11)
        r["impl"] = bench_report.matcher_label()       # "compiled" or "pure twin"
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
    if "rulesets" not in doc:
        log("no plots: this performance.json predates the kernel rows (no 'rulesets'); rerun "
            "perf_report.py")
        return
    try:
        bench_report.plot_ready(os.path.join(img, "rules.png"))
    except bench.UsageError as e:
        log(f"no plots: {e}")
        return
    import matplotlib.pyplot as plt
    os.makedirs(img, exist_ok=True)
    bench_report.plot(doc, os.path.join(img, "rules.png"))
    ct = [r for r in doc.get("conntrack") or [] if r["impl"] == "compiled"]
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
        plt.close(fig)
    log(f"plots in {img}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", default="100,1000,10000,100000")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--img", default=os.path.join(ROOT, "docs", "img"))
    p.add_argument("--skip-conntrack", action="store_true")
    p.add_argument("--no-kernel", action="store_true", help="do not measure the real kernel")
    p.add_argument("--budget", type=float, default=30.0, help="reference walk seconds per size")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--packets", type=int, default=20000)
    p.add_argument("--allow-pure-twin", action="store_true",
                   help="measure even without kdp._fastpath (labelled 'pure twin')")
    p.add_argument("--plot-only", action="store_true", help="redraw from DIR/performance.json")
    a = p.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if a.plot_only:
        with open(os.path.join(a.out, "performance.json")) as fh:
            plots(json.load(fh), a.img, log)
        return 0
    if bench_report.matcher_label() != "compiled" and not a.allow_pure_twin:
        print("perf_report: kdp._fastpath is not loaded, so this would measure the matcher's "
              f"pure twin ({fast.IMPLEMENTATION}), not the compiled one. Build it (pip install "
              "-e . with Cython, or python setup.py build_ext --inplace; unset "
              "KDP_NO_EXTENSIONS), or pass --allow-pure-twin to measure the twin, labelled "
              "as such.", file=sys.stderr)
        return 2
    doc = {"machine": bench_report.metadata(a.repeats), "command": " ".join(sys.argv)}
    t0 = time.time()
    rulesets = []
    for n in [int(x) for x in a.services.split(",")]:
        rulesets.append(bench_rules.measure(
            bench_rules.synthetic(n, 2), packets=a.packets, repeats=a.repeats,
            impls=("reference", "compiled"), kernel=not a.no_kernel, batch=1_000_000,
            budget_s=a.budget, log=log))
    doc["rulesets"] = rulesets
    doc["rules"] = bench_report.spec_results(rulesets, 2)
    if not a.skip_conntrack:
        doc["conntrack"] = conntrack_section(log)
    doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["seconds"] = round(time.time() - t0, 1)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "performance.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
    plots(doc, a.img, log)
    print(bench_report.text(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
