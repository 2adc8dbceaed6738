# cli: the `kdp` command line (spec/cli.md): argument parsing with every
# subcommand (resolve, http, bench and oracle come from cli_resolve, cli_http,
# bench and oracle.cli), running the command, printing human or JSON output.
# Loading the CLUSTER argument and turning kdp's errors into messages and exit
# status 2 are cli_common's.
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .cli_common import input_file, load_cluster, load_emulator, output_dir, output_file, run_command
from .errors import UsageError, did_you_mean


def cmd_validate(a) -> int:
    from .ingress.controller import serving_warnings
    c = load_cluster(a.cluster)
    for w in list(c.warnings) + serving_warnings(c):
        print(f"warning: {w}", file=sys.stderr)
    print(f"ok: {len(c.nodes)} nodes, {len(c.pods)} pods, {len(c.services)} services, "
          f"{len(c.namespaces)} namespaces ({c.config.network_plugin})")
    return 0


def cmd_topology(a) -> int:
    from .topology import topology_json, topology_svg, topology_text
    output_file(a.svg, "--svg")
    emu = load_emulator(a.cluster, capture=False)
    if a.svg:
        with open(a.svg, "w") as f:
            f.write(topology_svg(emu.topology))
    if a.json:
        print(json.dumps(topology_json(emu.topology), indent=2))
    elif not a.svg:
        print(topology_text(emu.topology))
    else:
        print(f"wrote {a.svg}")
    return 0


def cmd_inspect(a) -> int:
    from .inspect import inspect_text
    emu = load_emulator(a.cluster, capture=False)
    info = emu.inspect(a.target)
    print(json.dumps(info, indent=2) if a.json else inspect_text(info))
    return 0


def cmd_trace(a) -> int:
    from .render import trace_text
    emu = load_emulator(a.cluster, seed=a.seed, rules=a.rules)
    from .dns.resolver import is_dns_name, resolve_then_trace
    resolution = None
    if is_dns_name(a.dst):                 # a name: the source resolves it first, as packets
        resolution, out = resolve_then_trace(emu, a.src, a.dst, proto=a.proto, sport=a.sport,
                                             dport=a.dport, ttl=a.ttl)
        if out is None:
            if a.json:
                print(json.dumps({"resolution": resolution.as_dict(hops=False)}, indent=2))
            else:
                print(resolution.text())
            print(f"kdp: {a.dst} did not resolve from {a.src} ({resolution.status})", file=sys.stderr)
            return 1
    else:
        out = emu.trace(a.src, a.dst, proto=a.proto, sport=a.sport, dport=a.dport, ttl=a.ttl)
    tables = _tables(emu, a)
    if a.json:
        extra = {"resolution": resolution.as_dict(hops=False)} if resolution is not None else {}
        print(json.dumps(dict(out.as_dict(), **extra, **tables), indent=2))
    else:
        if resolution is not None:
            print(";; resolved first, as the pod's resolver does:")
            for q in resolution.queries:
                print(f";;   {q.summary()}")
            print(f";;   {a.dst} -> {', '.join(str(x) for x in resolution.addresses)}\n")
        print(trace_text(out, a.detail))
        _print_tables(tables)
    return 0 if out.disposition == "delivered" else 1


def _tables(emu, a) -> dict:
    """What --conntrack / --counters asked for: per node, `conntrack -L` and
    `iptables-save -c` as they stand after the run."""
    out = {}
    now = emu.datapath.now
    if getattr(a, "conntrack", False):
        out["conntrack"] = {n.name: emu.topology.node_ns[n.name].netfilter.conntrack.to_conntrack_l(now)
                            for n in emu.cluster.nodes}
    if getattr(a, "counters", False):
        out["counters"] = {n.name: emu.topology.node_ns[n.name].netfilter.ruleset.to_iptables_save(counters=True)
                           for n in emu.cluster.nodes}
    return out


def _print_tables(tables: dict) -> None:
    for what, title in (("conntrack", "conntrack -L"), ("counters", "iptables-save -c")):
        for node, text in tables.get(what, {}).items():
            print(f"\n# {title} on {node}")
            print(text.rstrip("\n") or "(empty)")


def cmd_run(a) -> int:
    from .runner import PcapRun
    input_file(a.pcap, "--pcap")
    output_dir(a.out, "--out")
    emu = load_emulator(a.cluster, seed=a.seed, capture=False, rules=a.rules, trace=False)
    sys.stdout.flush()
    out = sys.stdout.buffer
    t0 = time.perf_counter()
    with _progress(a.pcap) as advance:
        run = PcapRun(emu, a.at, out, json_lines=a.json, out_dir=a.out,
                      fastpath=not a.no_fastpath, progress=advance)
        counts = run.run(a.pcap)
    secs = time.perf_counter() - t0
    summary = dict(counts, seconds=round(secs, 6),
                   frames_per_second=round(counts["frames"] / secs, 1) if secs > 0 else 0.0)
    if a.out:
        summary["pcaps"] = len(run.files)
    tables = _tables(emu, a)
    out.flush()
    if a.json:
        print(json.dumps({"summary": dict(summary, **tables)}))
    else:
        print(f"{summary['frames']} frames: {summary['delivered']} delivered, {summary['dropped']} dropped, "
              f"{summary['rejected']} rejected in {secs:.3f} s ({summary['fastpath_hits']} by the fast path)"
              + (f"; {summary['pcaps']} pcaps in {a.out}" if a.out else ""))
        _print_tables(tables)
    return 0


class _progress:
    """A rich progress bar on stderr while frames are processed (only on a terminal)."""

    def __init__(self, path: str):
        self.path, self.bar = path, None

    def __enter__(self):
        if not sys.stderr.isatty():
            return lambda n=1: None
        from rich.console import Console
        from rich.progress import Progress
        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task(f"frames from {os.path.basename(self.path)}", total=None)
        return lambda n=1: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def cmd_rules(a) -> int:
    from .k8s.kubeproxy import generate_rules
    c = load_cluster(a.cluster)
    names = [n.name for n in c.nodes]
    if a.node not in names:
        raise UsageError(f"--node {a.node}: no such node"
                         + (did_you_mean(a.node, names) or f" (nodes: {', '.join(names)})"))
    sys.stdout.write(generate_rules(c, a.node, nfacct=c.config.kube_proxy.nfacct))
    return 0


def cmd_demo(a) -> int:
    from .tour import run_tour
    output_dir(a.out, "--out")
    return run_tour(out_dir=a.out, seed=a.seed)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdp", description="Packet-level emulator of the Kubernetes data plane.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the demo cluster and tour its data plane")
    d.add_argument("--out", help="write per-device pcaps and trace JSON here")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    v = sub.add_parser("validate", help="load and check a cluster")
    v.add_argument("cluster")
    v.set_defaults(func=cmd_validate)

    t = sub.add_parser("topology", help="show namespaces, devices, bridges, routes")
    t.add_argument("cluster")
    t.add_argument("--json", action="store_true")
    t.add_argument("--svg", metavar="FILE")
    t.set_defaults(func=cmd_topology)

    ru = sub.add_parser("rules", help="the node's iptables rules (kube-proxy, kubelet, CNI) as iptables-save")
    ru.add_argument("cluster")
    ru.add_argument("--node", required=True)
    ru.add_argument("--format", choices=["iptables-save"], default="iptables-save")
    ru.set_defaults(func=cmd_rules)

    i = sub.add_parser("inspect", help="the pause container, containers and network of a pod or node")
    i.add_argument("cluster")
    i.add_argument("target", metavar="pod/NS/NAME|node/NAME")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)

    tr = sub.add_parser("trace", help="follow one packet hop by hop")
    tr.add_argument("cluster")
    tr.add_argument("--from", dest="src", required=True)
    tr.add_argument("--to", dest="dst", required=True)
    tr.add_argument("--proto", choices=["tcp", "udp", "icmp"], default=None)
    tr.add_argument("--sport", type=_port)
    tr.add_argument("--dport", type=_port)
    tr.add_argument("--ttl", type=_ttl, default=64)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--rules", action="append", metavar="[NODE=]FILE",
                    help="load a real node's iptables-save dump instead of the generated rules")
    tr.add_argument("--conntrack", action="store_true", help="print each node's conntrack table after")
    tr.add_argument("--counters", action="store_true", help="print each node's rules with counters after")
    tr.add_argument("--detail", choices=["summary", "full", "minimal"], default="summary")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)

    r = sub.add_parser("run", help="feed a pcap through the emulator")
    r.add_argument("cluster")
    r.add_argument("--pcap", required=True)
    r.add_argument("--at", required=True, metavar="ATTACH")
    r.add_argument("--out", metavar="DIR")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--rules", action="append", metavar="[NODE=]FILE",
                    help="load a real node's iptables-save dump instead of the generated rules")
    r.add_argument("--conntrack", action="store_true", help="print each node's conntrack table after")
    r.add_argument("--counters", action="store_true", help="print each node's rules with counters after")
    r.add_argument("--no-fastpath", action="store_true",
                   help="every frame takes the reference path (no flow cache); output is identical")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)
    from .bench import add_parser as add_bench
    from .cli_http import add_parser as add_http
    from .cli_resolve import add_parser as add_resolve
    from .oracle.cli import add_parser as add_oracle
    add_resolve(sub)
    add_http(sub)
    add_bench(sub)
    add_oracle(sub)
    return p


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{v} is outside 0-65535")
    return v


def _ttl(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TTL") from None
    if not 1 <= v <= 255:
        raise argparse.ArgumentTypeError(f"{v} is outside 1-255")
    return v


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
