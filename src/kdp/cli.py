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

from .cli_common import (add_proxy_mode, input_file, load_cluster, load_emulator, output_dir,
                         output_file, run_command)
from .errors import UsageError
from .suggest import did_you_mean


def cmd_validate(a) -> int:
    from .ingress.controller import serving_warnings
    c = load_cluster(a.cluster, a.proxy_mode)
    for w in list(c.warnings) + serving_warnings(c):
        print(f"warning: {w}", file=sys.stderr)
    print(f"ok: {len(c.nodes)} nodes, {len(c.pods)} pods, {len(c.services)} services, "
          f"{len(c.namespaces)} namespaces ({c.config.network_plugin})")
    return 0


def cmd_topology(a) -> int:
    from .topology import topology_json, topology_svg, topology_text
    output_file(a.svg, "--svg")
    emu = load_emulator(a.cluster, capture=False, proxy_mode=a.proxy_mode)
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
    from .inspection import inspect_text
    emu = load_emulator(a.cluster, capture=False, proxy_mode=a.proxy_mode)
    info = emu.inspect(a.target)
    print(json.dumps(info, indent=2) if a.json else inspect_text(info))
    return 0


def cmd_trace(a) -> int:
    from .render import trace_text
    emu = load_emulator(a.cluster, seed=a.seed, rules=a.rules, proxy_mode=a.proxy_mode)
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
    `iptables-save -c` as they stand after the run (and, in nftables mode,
    `nft list ruleset`: counter statements as counted, dynamic set elements)."""
    out = {}
    now = emu.datapath.now
    if getattr(a, "conntrack", False):
        out["conntrack"] = {n.name: emu.topology.node_ns[n.name].netfilter.conntrack.to_conntrack_l(now)
                            for n in emu.cluster.nodes}
    if getattr(a, "counters", False):
        out["counters"] = {n.name: emu.topology.node_ns[n.name].netfilter.ruleset.to_iptables_save(counters=True)
                           for n in emu.cluster.nodes}
        nft = {n.name: emu.topology.node_ns[n.name].netfilter.nft for n in emu.cluster.nodes}
        if any(e is not None for e in nft.values()):     # nftables mode: kube-proxy's table too
            out["nft"] = {name: e.listing(now).render() for name, e in nft.items() if e is not None}
    return out


def _print_tables(tables: dict) -> None:
    for what, title in (("conntrack", "conntrack -L"), ("counters", "iptables-save -c"),
                        ("nft", "nft list ruleset")):
        for node, text in tables.get(what, {}).items():
            print(f"\n# {title} on {node}")
            print(text.rstrip("\n") or "(empty)")


def cmd_run(a) -> int:
    from .runner import PcapRun
    input_file(a.pcap, "--pcap")
    output_dir(a.out, "--out")
    if a.flows:
        output_file(a.flows, "--flows")
    emu = load_emulator(a.cluster, seed=a.seed, capture=False, rules=a.rules, trace=False,
                        proxy_mode=a.proxy_mode)
    sys.stdout.flush()
    out = sys.stdout.buffer
    t0 = time.perf_counter()
    with _progress(a.pcap) as bar:
        run = PcapRun(emu, a.at, out, json_lines=a.json, out_dir=a.out,
                      fastpath=not a.no_fastpath, progress=bar.advance, apps=a.apps == "on",
                      live=not a.raw)
        bar.position = lambda: run.reader.position() if run.reader is not None else 0
        counts = run.run(a.pcap)
    secs = time.perf_counter() - t0
    summary = dict(counts, seconds=round(secs, 6),
                   frames_per_second=round(counts["frames"] / secs, 1) if secs > 0 else 0.0)
    if a.out:
        summary["pcaps"] = len(run.files)
    summary["outcomes"] = run.outcomes.summary()
    if a.flows:
        run.outcomes.write_flows(a.flows)
    tables = _tables(emu, a)
    out.flush()
    if a.json:
        print(json.dumps({"summary": dict(summary, **tables)}))
    else:
        rate = f", {summary['frames_per_second']:,.0f} frames/s" if secs > 0 else ""
        print(f"{summary['frames']} frames: {summary['delivered']} delivered, {summary['dropped']} dropped, "
              f"{summary['rejected']} rejected in {secs:.3f} s{rate} ({summary['fastpath_hits']} by the fast path)"
              + (f"; {summary['pcaps']} pcaps in {a.out}" if a.out else "")
              + (f"; live TCP replay: {summary['translated']} segments translated, "
                 f"{summary.get('skipped', 0)} skipped" if "translated" in summary else ""))
        from .render import outcome_lines, outcome_tables
        if sys.stdout.isatty():
            outcome_tables(summary["outcomes"])
        else:
            print("\n".join(outcome_lines(summary["outcomes"])))
        _print_tables(tables)
    return 0


class _progress:
    """On a terminal, a rich progress bar on stderr: frames done, their rate,
    and the ETA from the share of the file read. Nothing on a pipe."""

    def __init__(self, path: str):
        self.path, self.bar = path, None
        self.advance = lambda n=1: None
        self.position = lambda: 0          # bytes of the file read (set once the run exists)

    def __enter__(self):
        if not sys.stderr.isatty():
            return self
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.fields[frames]:,} frames, {task.fields[rate]:,.0f}/s"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.start()
        size = max(os.path.getsize(self.path), 1)
        task = self.bar.add_task(os.path.basename(self.path), total=size, frames=0, rate=0.0)
        t0, done = time.perf_counter(), [0]

        def advance(n: int = 1) -> None:
            done[0] += n
            secs = time.perf_counter() - t0
            self.bar.update(task, completed=min(self.position(), size), frames=done[0],
                            rate=done[0] / secs if secs > 0 else 0.0)
        self.advance = advance
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def cmd_rules(a) -> int:
    from .k8s.kubeproxy import node_rules
    from .k8s.kubeproxy_nft import node_ruleset
    c = load_cluster(a.cluster, a.proxy_mode)
    names = [n.name for n in c.nodes]
    if a.node not in names:
        raise UsageError(f"--node {a.node}: no such node"
                         + (did_you_mean(a.node, names) or f" (nodes: {', '.join(names)})"))
    # kube-proxy's rules in nftables mode are its `ip kube-proxy` table; kubelet and
    # ip-masq-agent still write iptables rules
    nft = c.config.kube_proxy.mode == "nftables" and a.source in ("all", "kube-proxy")
    fmt = a.format or ("nft" if nft else "iptables-save")
    if fmt != ("nft" if nft else "iptables-save"):
        raise UsageError(f"--format {fmt}: kube-proxy runs in {c.config.kube_proxy.mode} mode "
                         f"and --source {a.source}, so the rules print as "
                         f"{'nft list ruleset' if nft else 'iptables-save'} "
                         f"(--format {'nft' if nft else 'iptables-save'})")
    sys.stdout.write(node_ruleset(c, a.node) if nft else node_rules(c, a.node, a.source))
    return 0


def cmd_demo(a) -> int:
    from .tour import run_tour
    output_dir(a.out, "--out")
    return run_tour(out_dir=a.out, seed=a.seed, proxy_mode=a.proxy_mode)


CLUSTER_HELP = "a YAML file, a directory of YAML files, or 'demo' (the built-in example cluster)"
SEED_HELP = "seed of every random choice (endpoint, ports, IDs); the same seed, the same output (default 0)"
RULES_HELP = ("load a real node's iptables-save dump instead of the rules kdp generates (or an "
              "`nft list ruleset` dump of kube-proxy's nftables table): FILE for every node, "
              "NODE=FILE for one (repeatable)")
EPILOGS = {
    "demo": """examples:
  kdp demo                      # the tour: topology, then each kind of traffic, hop by hop
  kdp demo --out demo-out       # also every device's pcap (Wireshark) and the traces as JSON
  kdp demo --seed 7             # other random choices (endpoints, ports)""",
    "validate": """examples:
  kdp validate demo
  kdp validate examples/cluster            # a directory: every *.yaml / *.yml in it
  kdp validate cluster.yaml                # kubectl get pods,svc,endpointslices -A -o yaml works too

exit status: 0 valid (warnings on stderr), 2 problems (one per line: FILE:LINE: KIND NS/NAME: field: what)""",
    "topology": """examples:
  kdp topology demo                         # nodes, routes, veth pairs, pods, services, ingresses
  kdp topology demo --json | jq '.services[] | {name, cluster_ip}'
  kdp topology examples/cluster --svg net.svg""",
    "rules": """examples:
  kdp rules demo --node aks-nodepool1-71771131-vmss000000
  kdp rules examples/cluster --node node-a > node-a.rules   # loads with iptables-restore
  kdp rules demo --node aks-nodepool1-71771131-vmss000000 --source kubelet""",
    "inspect": """examples:
  kdp inspect demo pod/default/client
  kdp inspect demo node/aks-nodepool1-71771131-vmss000000
  kdp inspect demo pod/default/client --json""",
    "trace": """examples:
  kdp trace demo --from pod/default/client --to svc/backend/service-a
  kdp trace demo --from pod/default/client --to service-a.backend          # a DNS name: resolved first
  kdp trace demo --from ext/198.51.100.20 --to 20.50.60.70 --dport 80 --detail full

SRC: pod/NS/NAME, node/NAME or ext/ADDR; DST also svc/NS/NAME, an IPv4 address or a DNS name.
exit status: 0 delivered, 1 dropped or rejected (or the name did not resolve), 2 usage or input error""",
    "run": """examples:
  kdp run demo --pcap capture.pcap --at pod/default/client
  kdp run demo --pcap capture.pcap --at pod/default/client --out out/ --json
  kdp run demo --pcap capture.pcap --at pod/default/client --no-fastpath --conntrack

(examples/pcaps/make_pcaps.py writes a capture.pcap of the demo client's traffic)""",
}


def _sub(sub, name: str, help: str, description: str | None = None):
    return sub.add_parser(name, help=help, description=description or help[:1].upper() + help[1:] + ".",
                          epilog=EPILOGS.get(name), formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(
        prog="kdp", description="Packet-level emulator of the Kubernetes data plane.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  kdp demo                                          # start here: the guided tour
  kdp trace demo --from pod/default/client --to svc/backend/service-a
  kdp validate my-cluster/                          # your own manifests (docs/cluster.md)

'kdp COMMAND --help' shows each command's options and examples; docs/cli.md has them all.""")
    p.add_argument("--version", action="version", version=f"kdp {__version__}",
                   help="print kdp's version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = _sub(sub, "demo", "build the demo cluster and tour its data plane")
    d.add_argument("--out", metavar="DIR", help="also write every device's pcap (DIR/pcap/) and the "
                   "traces (DIR/traces.json) here")
    d.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    add_proxy_mode(d)
    d.set_defaults(func=cmd_demo)

    v = _sub(sub, "validate", "load and check a cluster, reporting every problem")
    v.add_argument("cluster", help=CLUSTER_HELP)
    add_proxy_mode(v)
    v.set_defaults(func=cmd_validate)

    t = _sub(sub, "topology", "show nodes, routes, bridges, veth pairs, pods, services and ingresses")
    t.add_argument("cluster", help=CLUSTER_HELP)
    t.add_argument("--json", action="store_true", help="print the stable JSON document (docs/cli.md)")
    t.add_argument("--svg", metavar="FILE", help="write a picture of nodes, bridges, veths and pods to FILE")
    add_proxy_mode(t)
    t.set_defaults(func=cmd_topology)

    ru = _sub(sub, "rules", "the node's iptables rules (kube-proxy, kubelet, CNI) as iptables-save, "
              "or kube-proxy's nftables table as nft list ruleset")
    ru.add_argument("cluster", help=CLUSTER_HELP)
    ru.add_argument("--node", required=True, help="the node whose rules to print (see kdp topology)")
    ru.add_argument("--format", choices=["iptables-save", "nft"], default=None,
                    help="output format, as the real command prints it: iptables-save (iptables "
                         "mode), nft (`nft list ruleset` of kube-proxy's table in nftables mode); "
                         "default: the one kube-proxy's mode writes")
    add_proxy_mode(ru)
    ru.add_argument("--source", choices=["all", "kube-proxy", "kubelet", "ip-masq-agent"],
                    default="all",
                    help="only the rules one component writes (default all: the whole node); "
                         "kube-proxy's view is what its own iptables-restore input holds")
    ru.set_defaults(func=cmd_rules)

    i = _sub(sub, "inspect", "the pause container, containers and network of a pod or node")
    i.add_argument("cluster", help=CLUSTER_HELP)
    i.add_argument("target", metavar="pod/NS/NAME|node/NAME", help="the pod or node to show")
    i.add_argument("--json", action="store_true", help="print it as JSON")
    add_proxy_mode(i)
    i.set_defaults(func=cmd_inspect)

    tr = _sub(sub, "trace", "follow one packet (and its answer) hop by hop")
    tr.add_argument("cluster", help=CLUSTER_HELP)
    tr.add_argument("--from", dest="src", required=True, metavar="SRC",
                    help="the sender: pod/NS/NAME, node/NAME or ext/ADDR (an off-cluster host)")
    tr.add_argument("--to", dest="dst", required=True, metavar="DST",
                    help="pod/NS/NAME, node/NAME, svc/NS/NAME, ext/ADDR, an IPv4 address, or a DNS name "
                         "(resolved from SRC first)")
    tr.add_argument("--proto", choices=["tcp", "udp", "sctp", "icmp"], default=None,
                    help="the packet: a TCP SYN, a UDP datagram, an SCTP INIT or an ICMP echo request (default: the "
                         "protocol of a Service's first port, else tcp)")
    tr.add_argument("--sport", type=_port, metavar="N", help="source port (default: an ephemeral port)")
    tr.add_argument("--dport", type=_port, metavar="N",
                    help="destination port (default: a Service's first port of --proto, else 80)")
    tr.add_argument("--ttl", type=_ttl, default=64, metavar="N", help="IP TTL as sent (default 64)")
    tr.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    tr.add_argument("--rules", action="append", metavar="[NODE=]FILE", help=RULES_HELP)
    tr.add_argument("--conntrack", action="store_true", help="print each node's conntrack table after")
    tr.add_argument("--counters", action="store_true", help="print each node's rules with counters after")
    tr.add_argument("--detail", choices=["summary", "full", "minimal"], default="summary",
                    help="summary (default): the hops and the rules that decided; full: every ARP "
                         "exchange and every rule walked; minimal: only the outcomes")
    tr.add_argument("--json", action="store_true", help="print the trace as JSON (every hop)")
    add_proxy_mode(tr)
    tr.set_defaults(func=cmd_trace)

    r = _sub(sub, "run", "feed a pcap through the emulator, frame by frame")
    r.add_argument("cluster", help=CLUSTER_HELP)
    r.add_argument("--pcap", required=True, metavar="FILE", help="the capture to replay: pcap or pcapng, plain or .gz, Ethernet or Linux cooked (tcpdump -i any)")
    r.add_argument("--at", required=True, metavar="ATTACH",
                   help="where the frames are transmitted: pod/NS/NAME or node/NAME (its eth0), "
                        "ext/ADDR (the wire from an off-cluster host), or auto (each frame at its "
                        "sender's device, by source MAC, else source IP)")
    r.add_argument("--out", metavar="DIR", help="write one pcap per device that saw traffic here")
    r.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    r.add_argument("--rules", action="append", metavar="[NODE=]FILE", help=RULES_HELP)
    r.add_argument("--conntrack", action="store_true", help="print each node's conntrack table after")
    r.add_argument("--counters", action="store_true", help="print each node's rules with counters after")
    r.add_argument("--no-fastpath", action="store_true",
                   help="every frame takes the reference path (no flow cache); output is identical")
    r.add_argument("--json", action="store_true", help="print one JSON line per frame and a summary line")
    r.add_argument("--apps", choices=("on", "off"), default="on",
                   help="off: pods' apps and sockets stay silent (frames delivered to a pod are consumed), "
                        "for captures that hold both sides of their conversations (with --at auto)")
    r.add_argument("--raw", action="store_true",
                   help="inject every frame as recorded; by default TCP flows the capture opens from "
                        "the attachment point (--at auto: from each sender) replay live (answers consumed "
                        "there, acknowledgements translated into the live peer's sequence space; "
                        "--apps off injects raw; docs/cli.md)")
    r.add_argument("--flows", metavar="FILE", help="write one row per flow of the capture (CSV if FILE ends "
                                                   "in .csv, else JSON): state, frames, service, endpoint, resets")
    add_proxy_mode(r)
    r.set_defaults(func=cmd_run)
    from .bench_cli import add_parser as add_bench
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
