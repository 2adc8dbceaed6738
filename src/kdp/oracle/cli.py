# oracle.cli: `kdp oracle CLUSTER [--scenario NAME ...] [--rules/--no-rules]
# [--json] [--keep-pcaps DIR]`: build the cluster in real network namespaces,
# run the scenarios on both kdp and the kernel, print the agreement report.
# Exit status 0 when every scenario agrees, 1 when some differ, 2 on errors
# (including "not root"). kdp.cli hooks add_parser() into its subcommands.
from __future__ import annotations

import argparse
import json
import sys

from ..cli_common import add_proxy_mode, load_cluster, output_dir, run_command


def add_parser(subparsers) -> argparse.ArgumentParser:
    o = subparsers.add_parser(
        "oracle", help="compare kdp against the real kernel (root; network namespaces)",
        description="Build the cluster in real network namespaces, run every scenario's frames "
                    "through both kdp and the kernel, and compare every device's capture.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  kdp oracle demo --list                              # the scenarios (no root needed)
  sudo "$(command -v kdp)" oracle demo                # all of them (root; sudo resets PATH)
  sudo "$(command -v kdp)" oracle demo --scenario same-node-tcp-syn -v --keep-pcaps oracle-pcaps

exit status: 0 every scenario agrees, 1 some differ, 2 errors (including not root)""")
    o.add_argument("cluster", help="a YAML file, a directory, or 'demo'")
    o.add_argument("--scenario", action="append", metavar="NAME",
                   help="run only this scenario (repeatable; default: all that apply)")
    o.add_argument("--rules", action=argparse.BooleanOptionalAction, default=None,
                   help="--rules: load the rules kdp runs in each namespace into the real twin with "
                        "iptables-restore; --no-rules: neither side has rules; default: --rules when kdp "
                        "runs netfilter")
    o.add_argument("--json", action="store_true", help="print the report as JSON")
    add_proxy_mode(o)
    o.add_argument("--keep-pcaps", metavar="DIR", help="write kdp's and the kernel's per-device pcaps here")
    o.add_argument("--tcp-rmem", metavar='"MIN DEFAULT MAX"',
                   help="net.ipv4.tcp_rmem in the real twin (e.g. \"4096 131072 6291456\", the older "
                        "kernels' default giving window scale 7); default: the host kernel's")
    o.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    o.add_argument("--list", action="store_true", help="list the scenarios that apply and exit")
    o.add_argument("--verbose", "-v", action="store_true", help="field-by-field diff of every differing frame")
    o.set_defaults(func=cmd_oracle)
    return o


def cmd_oracle(a) -> int:
    from ..errors import UsageError
    from . import netns
    from .report import report_dict, report_text
    from .runner import run_oracle
    from .scenarios import catalogue, select

    cluster = load_cluster(a.cluster, a.proxy_mode)
    if not a.list:
        output_dir(a.keep_pcaps, "--keep-pcaps")
    scenarios = catalogue(cluster, a.seed, full=True)
    if a.list:
        for s in scenarios:
            print(f"{s.name:<26} {s.description}" + (" [needs --rules]" if s.needs_rules else ""))
        return 0
    chosen = select(scenarios, a.scenario)
    from .runner import kdp_has_rules
    rules = a.rules if a.rules is not None else kdp_has_rules(cluster, a.seed)
    blocked = [s.name for s in chosen if s.needs_rules and not rules]
    if a.scenario and blocked:
        raise UsageError(f"scenario(s) {', '.join(blocked)} need --rules (kube-proxy's rules)")
    why = netns.available()
    if why:
        raise UsageError(why)
    from .build import OracleSettings
    settings = OracleSettings(tcp_rmem=a.tcp_rmem) if a.tcp_rmem else OracleSettings()
    results, info = run_oracle(cluster, chosen, seed=a.seed, rules=rules, keep_pcaps=a.keep_pcaps,
                               settings=settings)
    rep = report_dict(results, info, a.cluster)
    if a.json:
        json.dump(rep, sys.stdout, indent=2, default=str)
        print()
    else:
        print(report_text(rep, verbose=a.verbose))
    return 0 if rep["summary"]["agreeing"] == rep["summary"]["scenarios"] else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m kdp.oracle.cli oracle ...`: the same as `kdp oracle ...` (the
    same parser, messages and exit statuses; no other subcommand)."""
    p = argparse.ArgumentParser(prog="kdp")
    add_parser(p.add_subparsers(dest="command", required=True))
    return run_command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
