# bench_cli: the `kdp bench rules` command line (also `python -m kdp.bench
# rules`): its options, which rulesets a run measures, the report. The
# measuring lives in kdp.bench (synthetic workloads, the compiled matcher's
# timing), kdp.bench_rules (any ruleset, reference/compiled/kernel) and
# kdp.bench_report (text, JSON, plots).
from __future__ import annotations

import json
import sys

from . import bench
from .cli_common import add_proxy_mode
from .errors import UsageError

MODES = ("iptables", "nftables")
KERNEL_LOAD_BUDGET_S = 900.0


def _counts(text: str) -> list[int]:
    try:
        out = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--services {text}: give numbers like 100,1000") from None
    if not out or any(n < 1 for n in out):
        raise UsageError(f"--services {text}: each count must be at least 1")
    return out


def _modes(text: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in out if x not in MODES]
    if not out or bad:
        raise UsageError(f"--mode {text}: give iptables, nftables or iptables,nftables")
    return list(dict.fromkeys(out))


def add_parser(subparsers) -> None:
    """Register `kdp bench rules` on the CLI's subparsers."""
    import argparse
    examples = """examples:
  kdp bench rules --mode iptables,nftables --services 100,1000,10000 --plot modes.svg
  kdp bench rules --cluster demo --node aks-nodepool1-71771131-vmss000000 --proxy-mode nftables
  kdp bench rules --rules node.rules --json          # node.rules: `iptables-save` on a node

The kernel's own cost is measured in throwaway network namespaces when run as
root (else skipped with the reason); --no-kernel skips it."""
    b = subparsers.add_parser("bench", help="measure kdp's data-plane speed",
                              description="Measure kdp's data-plane speed (docs/performance.md).",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=examples)
    bsub = b.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    r = bsub.add_parser("rules", help="first packets through kube-proxy's rules: the iptables "
                                      "walk vs the compiled matcher vs the kernel",
                        description="First-packet cost through a node's kube-proxy rules: kdp's "
                                    "reference walk, the compiled matcher and the real kernel, "
                                    "with percentiles, best/worst position and the machine.",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=examples)
    src = r.add_argument_group("the ruleset (one of)")
    src.add_argument("--services", metavar="N[,N...]",
                     help="synthetic clusters of N ClusterIP services (one measurement each)")
    src.add_argument("--rules", metavar="FILE", help="a node's iptables-save dump")
    src.add_argument("--cluster", metavar="CLUSTER",
                     help="a YAML file, a directory or 'demo': the rules kube-proxy writes for "
                          "--node (with --rules: the model the dump is compared with)")
    r.add_argument("--node", metavar="NODE", help="the node of --cluster")
    r.add_argument("--mode", metavar="MODE[,MODE]",
                   help="kube-proxy's mode(s) to measure: iptables, nftables or both, each "
                        "with the same Services (default iptables; with --cluster: the "
                        "cluster's kubeProxy.mode)")
    add_proxy_mode(r)
    r.add_argument("--endpoints", type=int, default=2, metavar="K",
                   help="with --services: ready endpoints per service, 1-64 (default 2)")
    r.add_argument("--pcap", metavar="FILE",
                   help="first packets from this pcap (TCP SYNs, UDP) instead of drawn from the "
                        "ruleset's Services")
    r.add_argument("--packets", type=int, default=20000, metavar="N",
                   help="first packets drawn (default 20000)")
    r.add_argument("--repeats", type=int, default=5, metavar="R",
                   help="timed repeats; the median and range are reported (default 5)")
    r.add_argument("--batch", type=int, default=1_000_000, metavar="N",
                   help="first packets per compiled batch (default 1000000)")
    r.add_argument("--budget", type=float, default=bench.REFERENCE_BUDGET_S, metavar="SECONDS",
                   help=f"time for the reference walk per ruleset (default {bench.REFERENCE_BUDGET_S:g})")
    r.add_argument("--impl", choices=["reference", "compiled", "all"], default="all",
                   help="which of kdp's implementations to time (default all)")
    r.add_argument("--kernel", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the real kernel too (root; default on)")
    r.add_argument("--kernel-load-budget", type=float, default=KERNEL_LOAD_BUDGET_S,
                   metavar="SECONDS",
                   help="skip the kernel for a ruleset whose loading (iptables-restore, nft -f) "
                        "would take longer, foreseen from the last smaller one of its mode as "
                        f"growing with the square of the Services (default {KERNEL_LOAD_BUDGET_S:g})")
    r.add_argument("--plot", metavar="FILE.svg|png", help="plot cost vs Services (matplotlib)")
    r.add_argument("--json", action="store_true", help="print the results as JSON")
    r.set_defaults(func=cmd_bench_rules)


def _rulesets(a) -> list:
    from . import bench_rules as br
    modes = _modes(a.mode) if a.mode is not None else None
    if modes and a.proxy_mode and modes != [a.proxy_mode]:
        raise UsageError(f"--proxy-mode {a.proxy_mode}: not with --mode {a.mode} (give one)")
    modes = modes or ([a.proxy_mode] if a.proxy_mode else None)
    given = [x for x in ("services", "rules", "cluster") if getattr(a, x)]
    if not given:
        raise UsageError("bench rules: give --services N, --cluster CLUSTER --node NODE, "
                         "or --rules FILE")
    if a.services and len(given) > 1:
        raise UsageError("--services: not with --rules or --cluster")
    if a.node and not a.cluster:
        raise UsageError("--node: give --cluster too")
    if a.services:
        if not 1 <= a.endpoints <= 64:
            raise UsageError(f"--endpoints {a.endpoints}: between 1 and 64")
        return [lambda n=n, m=m: br.synthetic(n, a.endpoints, m) for n in _counts(a.services)
                for m in modes or ["iptables"]]
    if a.rules:
        if modes and modes != ["iptables"]:
            raise UsageError("--rules: an iptables-save dump is measured in iptables mode only "
                             "(not --mode/--proxy-mode nftables)")
        return [lambda: br.from_rules(a.rules, a.cluster, a.node)]
    return [lambda m=m: br.from_cluster(a.cluster, a.node, m) for m in modes or [None]]


def _kernel_load_skip(last, services: int, budget: float) -> str | None:
    """Why the kernel is skipped for this ruleset: its load foreseen over the budget."""
    if last is None or last[0] >= services:
        return None
    n, seconds = last
    foreseen = seconds * (services / n) ** 2
    if foreseen <= budget:
        return None
    return (f"loading {n:,} services took {seconds:,.0f} s; {services:,} would take about "
            f"{foreseen:,.0f} s (square of the Services), over --kernel-load-budget {budget:g}")


def cmd_bench_rules(a) -> int:
    from . import bench_report, bench_rules as br
    for opt in ("packets", "repeats", "batch"):
        if getattr(a, opt) < 1:
            raise UsageError(f"--{opt} {getattr(a, opt)}: at least 1")
    if a.plot:
        bench_report.plot_ready(a.plot)            # before minutes of measuring
    makers = _rulesets(a)
    impls = ("reference", "compiled") if a.impl == "all" else (a.impl,)
    pcap = br.pcap_packets(a.pcap) if a.pcap else None

    def log(msg: str) -> None:
        if not a.json:
            print(msg, file=sys.stderr, flush=True)

    rulesets = []
    loads: dict[str, tuple[int, float]] = {}       # mode -> (services, seconds) last loaded
    for make in makers:
        rs = make()
        skip = _kernel_load_skip(loads.get(rs.mode), rs.services, a.kernel_load_budget)
        if skip and a.kernel:
            log(f"  kernel: skipped: {skip}")
        out = br.measure(rs, packets=a.packets, repeats=a.repeats, impls=impls,
                         kernel=a.kernel and not skip, batch=a.batch, budget_s=a.budget,
                         pcap=pcap, log=log)
        if skip and a.kernel:
            out["kernel"] = {"skipped": skip}
        k = out.get("kernel") or {}
        if "restore_seconds" in k:
            loads[rs.mode] = (rs.services, k["restore_seconds"] + k.get("nft_seconds", 0))
        rulesets.append(out)
        del rs
    endpoints = a.endpoints if a.services else None
    modes = bench_report.tag_modes(rulesets)
    doc = {"results": bench_report.spec_results(rulesets, endpoints), "rulesets": rulesets,
           "machine": bench_report.metadata(a.repeats)}
    if modes:
        doc = {"modes": modes} | doc
    if a.plot:
        bench_report.plot(doc, a.plot)
        log(f"plot: {a.plot}")
    print(json.dumps(doc, indent=1) if a.json else bench_report.text(doc))
    return 1 if any(r["decisions"]["differ"] for r in rulesets) else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m kdp.bench rules ...` (the same as `kdp bench rules ...`)."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m kdp.bench")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(["bench", *argv])
    try:
        return a.func(a)
    except UsageError as exc:
        print(f"kdp: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
