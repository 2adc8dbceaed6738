# bench_report: what `kdp bench rules` (and benchmarks/perf_report.py) say about
# a run — the machine and build it ran on (CPU model, cores, kernel, Python,
# Cython, whether the matcher was really compiled or its pure twin, kdp version
# and commit), the text table and the plot (matplotlib, an optional extra).
# Reads results; measures nothing.
from __future__ import annotations

import os
import platform
import subprocess

from .errors import UsageError

PURE_TWIN = "pure twin"


def matcher_label() -> str:
    """'compiled' only when the C kernel is loaded; never for the pure twin."""
    from . import fast
    return "compiled" if fast.IMPLEMENTATION == "cython" else PURE_TWIN


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        r = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"
    return (r.stdout.strip() + ("+dirty" if dirty else "")) if r.returncode == 0 else "unknown"


def metadata(repeats: int | None = None) -> dict:
    from . import __version__, fast
    try:
        import Cython
        cython = Cython.__version__
    except ImportError:
        cython = None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "cython": cython,
            "matcher": matcher_label(), "matcher_module": fast.IMPLEMENTATION,
            "kdp_version": __version__, "kdp_commit": _commit(), "repeats": repeats,
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def spec_results(rulesets: list[dict], endpoints: int | None) -> list[dict]:
    """The spec's flat `results` (shared/spec/cli.md), one per (ruleset,
    implementation), extended with the percentiles; the compiled matcher's
    pure twin is called "pure twin", never "compiled"."""
    out = []
    for r in rulesets:
        k = r.get("kernel") or {}
        for impl, d in (("reference", r.get("reference")), (matcher_label(), r.get("compiled")),
                        ("kernel", k.get("uniform"))):
            if not d or "per_second" not in d:
                continue
            out.append({"impl": impl, "services": r["services"], "endpoints": endpoints,
                        "new_flows_per_second": d["per_second"],
                        "rules_evaluated_per_first_packet": d.get("rules_per_packet"),
                        "seconds": round(1 / d["per_second"], 9),
                        "p50_us": d["p50_us"], "p90_us": d["p90_us"], "p99_us": d["p99_us"]})
    return out


def _us(d: dict | None, key: str = "p50_us") -> str:
    if not d or key not in d:
        return "-"
    v = d[key]
    return f"{v:.3f}" if v < 10 else f"{v:,.1f}"


def text(doc: dict) -> str:
    meta = doc["machine"]
    out = []
    for r in doc["rulesets"]:
        c = r["compile"]
        out.append(f"{r['ruleset']}: {r['services']} service rules, {r['lines']} lines, "
                   f"{r['first_packets']} first packets")
        out.append(f"  matcher program: {c['compiled_rules']} of {c['kube_services_rules']} nat "
                   f"KUBE-SERVICES rules; {c['first_packets_to_reference']} first packets to "
                   f"the reference walk")
        for item in c["to_reference"][:10]:
            out.append(f"    to the reference walk: {item['chain']}: {item['why']}")
        if len(c["to_reference"]) > 10:
            out.append(f"    ... and {len(c['to_reference']) - 10} more (see --json)")
        out.append(f"  {'implementation':<22} {'per second':>12} {'range':>23} {'p50 µs':>9} "
                   f"{'p90 µs':>9} {'p99 µs':>9} {'best µs':>9} {'worst µs':>9} "
                   f"{'rules/pkt':>9}")
        rows = [(r.get("reference"), "reference walk"), (r.get("compiled"), meta["matcher"])]
        k = r.get("kernel", {})
        rows += [(k.get("uniform"), "kernel (iptables)"), (k.get("no_rules"), "kernel, no rules")]
        for d, name in rows:
            if not d:
                continue
            if "skipped" in d:
                out.append(f"  {name:<22} skipped: {d['skipped']}")
                continue
            rng = d.get("range")
            rng = f"{rng[0]:,.0f}-{rng[1]:,.0f}" if rng else "-"
            best = d.get("best") or (k.get("best") if name.startswith("kernel (") else None)
            worst = d.get("worst") or (k.get("worst") if name.startswith("kernel (") else None)
            out.append(f"  {name:<22} {d['per_second']:>12,.0f} {rng:>23} {_us(d):>9} "
                       f"{_us(d, 'p90_us'):>9} {_us(d, 'p99_us'):>9} {_us(best):>9} "
                       f"{_us(worst):>9} {d.get('rules_per_packet', '-'):>9}")
        if "skipped" in k:
            out.append(f"  kernel: skipped: {k['skipped']}")
        out.append(f"  best/worst: the first packet's rule at position {r['best_position']} / "
                   f"{r['worst_position']} of nat KUBE-SERVICES")
        dd = r["decisions"]
        out.append(f"  decisions: {dd['compared']} compared with the reference walk, "
                   f"{dd['differ']} differ")
    out.append(f"machine: {meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}, "
               f"Python {meta['python']}, Cython {meta['cython'] or 'not installed'}, matcher: "
               f"{meta['matcher']} ({meta['matcher_module']}), kdp {meta['kdp_version']} "
               f"({meta['kdp_commit']}), {meta['repeats']} repeats (median and range), "
               f"load {meta['loadavg']}")
    return "\n".join(out)


def plot_ready(path: str):
    """matplotlib's pyplot, or a UsageError saying what is missing."""
    if not path.endswith((".svg", ".png")):
        raise UsageError(f"--plot {path}: give a .svg or .png file name")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'kdp[plot]' "
                         "(or pip install matplotlib)") from None
    return plt


def plot(doc: dict, path: str) -> None:
    """Cost per first packet (p50) vs Services, per implementation."""
    plt = plot_ready(path)
    rs = sorted(doc["rulesets"], key=lambda r: r["services"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [("reference", None, "reference walk (kdp)", "o-"),
              ("compiled", None, f"{doc['machine']['matcher']} matcher (kdp)", "s-"),
              ("kernel", "uniform", "kernel, iptables", "^--"),
              ("kernel", "no_rules", "kernel, no rules", "v:")]
    for key, sub, label, style in series:
        xs, ys = [], []
        for r in rs:
            d = r.get(key) or {}
            d = d.get(sub) if sub else d
            if d and "p50_us" in d:
                xs.append(r["services"])
                ys.append(d["p50_us"])
        if xs:
            ax.loglog(xs, ys, style, label=label)
    ax.set(xlabel="Services in nat KUBE-SERVICES", ylabel="µs per first packet (median)",
           title="kube-proxy rules: cost of a first packet")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    m = doc["machine"]
    fig.text(0.01, 0.01, f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, kdp "
                         f"{m['kdp_commit']}", fontsize=6)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise UsageError(f"--plot {path}: {e.strerror or e}") from None
    plt.close(fig)
