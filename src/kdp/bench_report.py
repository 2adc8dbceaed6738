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


def tag_modes(rulesets: list[dict]) -> list[str] | None:
    """When a run measured kube-proxy's nftables mode: every ruleset says its mode (an
    iptables walk does no set lookups: 0) and the modes measured are returned; else None
    and the rulesets are left as an iptables-only run always printed them."""
    if not any(r.get("mode") == "nftables" for r in rulesets):
        return None
    for i, r in enumerate(rulesets):
        if "mode" not in r:
            rulesets[i] = r = {"mode": "iptables"} | r
            ref = r.get("reference")
            if ref and "per_second" in ref:
                ref["set_lookups_per_packet"] = 0.0
    return list(dict.fromkeys(r["mode"] for r in rulesets))


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
            row = {"impl": impl, "services": r["services"], "endpoints": endpoints,
                   "new_flows_per_second": d["per_second"],
                   "rules_evaluated_per_first_packet": d.get("rules_per_packet"),
                   "seconds": round(1 / d["per_second"], 9),
                   "p50_us": d["p50_us"], "p90_us": d["p90_us"], "p99_us": d["p99_us"]}
            if "mode" in r:
                row = {"mode": r["mode"]} | row | {
                    "set_lookups_per_first_packet": d.get("set_lookups_per_packet"),
                    "chains_per_first_packet": d.get("chains_per_packet")}
            out.append(row)
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
        nft = r.get("mode") == "nftables"
        if nft:
            out.append(f"{r['ruleset']}: {r['services']} service-ips elements, {r['lines']} "
                       f"lines of nft transaction (+ {r['iptables_lines']} of iptables), "
                       f"{r['first_packets']} first packets")
            out.append(f"  matcher program: {c['compiled_rules']} of "
                       f"{c['service_ips_elements']} service-ips elements (the Services' "
                       f"program, endpoint draws re-pointed at numgen); "
                       f"{c['first_packets_to_reference']} first packets to the reference walk")
        else:
            out.append(f"{r['ruleset']}: {r['services']} service rules, {r['lines']} lines, "
                       f"{r['first_packets']} first packets")
            out.append(f"  matcher program: {c['compiled_rules']} of {c['kube_services_rules']} "
                       f"nat KUBE-SERVICES rules; {c['first_packets_to_reference']} first "
                       f"packets to the reference walk")
        for item in c["to_reference"][:10]:
            out.append(f"    to the reference walk: {item['chain']}: {item['why']}")
        if len(c["to_reference"]) > 10:
            out.append(f"    ... and {len(c['to_reference']) - 10} more (see --json)")
        out.append(f"  {'implementation':<22} {'per second':>12} {'range':>23} {'p50 µs':>9} "
                   f"{'p90 µs':>9} {'p99 µs':>9} {'best µs':>9} {'worst µs':>9} "
                   f"{'rules/pkt':>9}")
        rows = [(r.get("reference"), "reference walk"), (r.get("compiled"), meta["matcher"])]
        k = r.get("kernel", {})
        rows += [(k.get("uniform"), "kernel (nftables)" if nft else "kernel (iptables)"),
                 (k.get("no_rules"), "kernel, no rules")]
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
        ref = r.get("reference") or {}
        if "set_lookups_per_packet" in ref:
            chains = (f", {ref['chains_per_packet']} chains entered"
                      if "chains_per_packet" in ref else "")
            out.append(f"  reference walk per first packet: {ref['rules_per_packet']} rules"
                       f"{chains}, {ref['set_lookups_per_packet']} set/verdict-map lookups")
        if nft:
            out.append("  best/worst: first packets to the first / last element of the "
                       "service-ips verdict map (rule 1 of chain services either way)")
        else:
            out.append(f"  best/worst: the first packet's rule at position {r['best_position']} "
                       f"/ {r['worst_position']} of nat KUBE-SERVICES")
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
    """Cost per first packet (p50) vs Services, per implementation (per mode and
    implementation, with the reference walk's rules per first packet beside, when the
    run measured the nftables mode)."""
    if doc.get("modes"):
        return plot_modes(doc, path)
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


def plot_modes(doc: dict, path: str) -> None:
    """iptables vs nftables, log-log, as the KEP-3866 blog draws it: µs per first packet
    (median) of the reference walk, the compiled matcher and the kernel against the number
    of Services (left), and the reference walk's rules and set lookups per first packet
    (right)."""
    plt = plot_ready(path)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = {"reference": "tab:blue", "compiled": "tab:green", "kernel": "tab:red",
              "no_rules": "tab:gray"}
    styles = {"iptables": ("-", "o"), "nftables": ("--", "s")}
    impls = [("reference", None, "reference walk"),
             ("compiled", None, f"{doc['machine']['matcher']} matcher"),
             ("kernel", "uniform", "kernel")]
    for mode in doc["modes"]:
        rs = sorted((r for r in doc["rulesets"] if r.get("mode") == mode),
                    key=lambda r: r["services"])
        line, marker = styles.get(mode, ("-.", "^"))
        for key, sub, label in impls:
            xs, ys = [], []
            for r in rs:
                d = r.get(key) or {}
                d = d.get(sub) if sub else d
                if d and "p50_us" in d:
                    xs.append(r["services"])
                    ys.append(d["p50_us"])
            if xs:
                ax.loglog(xs, ys, line, marker=marker, color=colors[key],
                          label=f"{label}, {mode}")
        xs = [r["services"] for r in rs if "rules_per_packet" in (r.get("reference") or {})]
        ys = [r["reference"]["rules_per_packet"] for r in rs
              if "rules_per_packet" in (r.get("reference") or {})]
        if xs:
            ax2.loglog(xs, ys, line, marker=marker, color="tab:blue",
                       label=f"rules evaluated, {mode}")
        ls = [(r["services"], r["reference"]["set_lookups_per_packet"]) for r in rs
              if (r.get("reference") or {}).get("set_lookups_per_packet")]
        if ls:
            ax2.loglog(*zip(*ls), line, marker=marker, color="tab:purple",
                       label=f"set/map lookups, {mode}")
    for mode in doc["modes"]:          # the kernel's fixed path, once
        rs = sorted((r for r in doc["rulesets"] if r.get("mode") == mode),
                    key=lambda r: r["services"])
        pts = [(r["services"], r["kernel"]["no_rules"]["p50_us"]) for r in rs
               if "p50_us" in ((r.get("kernel") or {}).get("no_rules") or {})]
        if pts:
            ax.loglog(*zip(*pts), ":", marker="v", color=colors["no_rules"],
                      label="kernel, no rules")
            break
    ax.set(xlabel="Services", ylabel="µs per first packet (median)",
           title="first-packet cost: iptables vs nftables")
    ax2.set(xlabel="Services", ylabel="per first packet (reference walk)",
            title="rules evaluated, set lookups")
    for a in (ax, ax2):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    m = doc["machine"]
    fig.text(0.01, 0.01, f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, kdp "
                         f"{m['kdp_commit']}, load {m['loadavg']}", fontsize=6)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    try:
        fig.savefig(path)
    except OSError as e:
        raise UsageError(f"--plot {path}: {e.strerror or e}") from None
    plt.close(fig)
