# bench_rules: `kdp bench rules` on any ruleset — a synthetic cluster, a cluster
# file's node (in kube-proxy's iptables or nftables mode: kdp.bench_nft), or a node's
# iptables-save dump — first packets drawn from the
# Services the ruleset names (or read from a pcap), decided by the reference
# walk (svcref), the compiled matcher (fast.svcsplit: the chains that compile;
# the others counted as sent to the reference walk) and, in throwaway network
# namespaces, the real kernel (bench_kernel). Owns the workloads, the timing
# and the decision check; bench_report prints and plots. Never changes kdp.
from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

import numpy as np

from .errors import UsageError
from .fast.contract import FLOW_DTYPE, VERDICTS

_KEYRULE = re.compile(r"^-A KUBE-SERVICES -d (\d+\.\d+\.\d+\.\d+)/32 -p (tcp|udp)\b.*"
                      r"--dport (\d+)\b")


@dataclass
class Ruleset:
    """One ruleset to measure, and the node model its rules are compared with."""

    label: str
    text: str
    cluster: object
    node: str
    addresses: list[IPv4Interface]
    targets: list[tuple[int, int, int, int]]      # (ip, proto, port, position in KUBE-SERVICES)
    clients: np.ndarray                           # uint32 source addresses (the node's pods)
    notes: list[str] = field(default_factory=list)
    mode: str = "iptables"                        # kube-proxy's mode: iptables | nftables
    nft_tx: str | None = None                     # nftables: the `nft -f` transaction
    nft: object = None                            # nftables: the parsed table (text: the
                                                  #   iptables rules that stay)

    @property
    def services(self) -> int:
        return len(self.targets)


def targets_of(text: str) -> list[tuple[int, int, int, int]]:
    """Every (destination, protocol, port) nat KUBE-SERVICES matches, with the
    position of the rule (1-based), first rule first."""
    out, pos, table = [], 0, None
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if line.startswith("*"):
            table = line[1:]
        if table != "nat" or not line.startswith("-A KUBE-SERVICES "):
            continue
        pos += 1
        m = _KEYRULE.match(line)
        if m:
            out.append((int(IPv4Address(m.group(1))), 6 if m.group(2) == "tcp" else 17,
                        int(m.group(3)), pos))
    return out


def _clients(cluster, node: str) -> np.ndarray:
    n = cluster.node(node)
    base = int(n.pod_cidr.network_address) if n.pod_cidr is not None else int(n.ip)
    return np.arange(base + 10, base + 210, dtype=np.uint32)


def _ruleset(label, text, cluster, node, notes=()) -> Ruleset:
    from .fast.svcmatch import node_addresses
    t = targets_of(text)
    if not t:
        raise UsageError(f"{label}: nat KUBE-SERVICES has no rule of the form "
                         "-d IP/32 -p tcp|udp --dport N (no Services to send first packets to)")
    return Ruleset(label, text, cluster, node, node_addresses(cluster, node), t,
                   _clients(cluster, node), list(notes))


def synthetic(services: int, endpoints: int, mode: str = "iptables") -> Ruleset:
    from . import bench
    if mode == "nftables":
        cluster = bench.synthetic_cluster(services, endpoints)
        return _nft_ruleset(f"{services} services (synthetic, {bench.NODE}, nftables)", cluster,
                            bench.NODE)
    w = bench.workload(services, endpoints)
    return _ruleset(f"{services} services (synthetic, {bench.NODE})", w.text, w.cluster,
                    bench.NODE)


def _nft_ruleset(label, cluster, node) -> Ruleset:
    from . import bench_nft
    from .fast.svcmatch import node_addresses
    tx, table, text = bench_nft.node_tables(cluster, node)
    t = bench_nft.targets_of(table)
    if not t:
        raise UsageError(f"{label}: the service-ips verdict map is empty (no Services with "
                         "endpoints to send first packets to)")
    return Ruleset(label, text, cluster, node, node_addresses(cluster, node), t,
                   _clients(cluster, node), mode="nftables", nft_tx=tx, nft=table)


def from_cluster(spec: str, node: str | None, proxy_mode: str | None = None) -> Ruleset:
    """The rules kube-proxy writes for a cluster file's node, in the cluster's mode
    (kubeProxy.mode) or `proxy_mode`."""
    from .cli_common import load_cluster
    from .k8s.kubeproxy import generate_rules
    cluster = load_cluster(spec, proxy_mode)
    node = _node(cluster, spec, node)
    if cluster.config.kube_proxy.mode == "nftables":
        return _nft_ruleset(f"{spec} node {node} (generated, nftables)", cluster, node)
    text = generate_rules(cluster, node, nfacct=cluster.config.kube_proxy.nfacct)
    return _ruleset(f"{spec} node {node} (generated)", text, cluster, node)


def _node(cluster, spec: str, node: str | None) -> str:
    names = [n.name for n in cluster.nodes]
    if node is None:
        raise UsageError(f"--cluster {spec}: give --node (one of {', '.join(names)})")
    if node not in names:
        raise UsageError(f"--node {node}: {spec} has no such node (it has {', '.join(names)})")
    return node


def from_rules(path: str, cluster_spec: str | None, node: str | None) -> Ruleset:
    from .netfilter import parse_iptables_save
    from .netfilter.boundary import RulesetError
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        raise UsageError(f"--rules {path}: {e.strerror or e}") from None
    try:
        parse_iptables_save(text, source=path)
    except RulesetError as e:
        raise UsageError(f"--rules {e}") from None
    if cluster_spec:
        from .cli_common import load_cluster
        cluster = load_cluster(cluster_spec)
        node = _node(cluster, cluster_spec, node)
        return _ruleset(f"{path} (model: {cluster_spec} node {node})", text, cluster, node)
    from .k8s.fromrules import model_from_rules
    cluster, node, notes = model_from_rules(text)
    return _ruleset(f"{path} (model read back from the dump)", text, cluster, node, notes)


# --- first packets -------------------------------------------------------------

def first_packets(rs: Ruleset, count: int, seed: int = 2, only=None) -> np.ndarray:
    """`count` first packets from the node's pods to the ruleset's Services
    (uniformly), or to the targets `only` lists."""
    rng = np.random.default_rng(seed)
    t = np.array(only if only is not None else rs.targets, dtype=np.uint64).reshape(-1, 4)
    pick = t[rng.integers(0, len(t), count)]
    f = np.zeros(count, dtype=FLOW_DTYPE)
    f["src"] = rs.clients[rng.integers(0, len(rs.clients), count)]
    f["dst"], f["proto"], f["dport"] = pick[:, 0], pick[:, 1], pick[:, 2]
    f["sport"] = rng.integers(1024, 65536, count)
    f["tcp_flags"] = np.where(f["proto"] == 6, 0x02, 0)
    f["checksum_ok"] = 1
    f["now"] = 1.0
    return f


def pcap_packets(path: str) -> np.ndarray:
    """The first packet of every IPv4 TCP (SYN without ACK) or UDP flow in a pcap."""
    from . import wire
    from .io import read_pcap
    seen, rows = set(), []
    try:
        for _t, raw in read_pcap(path):
            try:
                p = wire.parse(raw)
            except Exception:
                continue
            if p.ip is None or p.l4 is None or p.ip.proto not in (6, 17):
                continue
            if p.ip.proto == 6 and (p.l4.flags & 0x12) != 0x02:
                continue
            k = (int(p.ip.src), int(p.ip.dst), p.l4.sport, p.l4.dport, p.ip.proto)
            if k not in seen:
                seen.add(k)
                rows.append(k + ((0x02 if p.ip.proto == 6 else 0), 0, 1, 1.0))
    except OSError as e:
        raise UsageError(f"--pcap {path}: {e.strerror or e}") from None
    if not rows:
        raise UsageError(f"--pcap {path}: no IPv4 TCP SYN or UDP first packets in it")
    return np.array(rows, dtype=FLOW_DTYPE)


# --- the measurements ------------------------------------------------------------

def _pct(xs: list[float]) -> dict:
    q = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else [xs[0]] * 99
    return {"p50_us": round(q[49] * 1e6, 4), "p90_us": round(q[89] * 1e6, 4),
            "p99_us": round(q[98] * 1e6, 4)}


def _rates(runs: list[float]) -> dict:
    return {"per_second": round(statistics.median(runs), 1),
            "range": [round(min(runs), 1), round(max(runs), 1)], "repeats": len(runs)}


def reference(rs: Ruleset, flows, best, worst, repeats: int, budget_s: float, seed: int = 0):
    """Per-packet times of the reference walk; (result, decisions). nftables mode: also
    the walk's chains entered and set/verdict-map lookups per first packet, counted on
    (at most 1,000 of) the same first packets in an untimed pass."""
    from .fast.svcref import reference_decision, reference_netfilter
    if rs.mode == "nftables":
        from . import bench_nft
        nf = bench_nft.reference_netfilter(rs.nft, rs.text, f"node/{rs.node}", rs.addresses,
                                           seed)
        reference_decision = bench_nft.reference_decision
    else:
        nf = reference_netfilter(rs.text, f"node/{rs.node}", rs.addresses, seed, trace=False)
    clock = time.perf_counter
    rows = flows.tolist()
    per, rules, decisions, runs = [], [], [], []
    share = budget_s / max(1, repeats)
    k = 0
    for _ in range(repeats):
        t_run, n = clock(), 0
        while n < 20 or (clock() - t_run < share and n < len(rows)):
            src, dst, sport, dport, proto, _fl, local, _ok, now = rows[k % len(rows)]
            t0 = clock()
            d = reference_decision(nf, proto, src, dst, sport, dport, now, bool(local))
            per.append(clock() - t0)
            rules.append(d.rules_evaluated_equivalent)
            if k < len(rows):                       # the first pass is checked
                decisions.append(d)
            n += 1
            k += 1
        runs.append(n / (clock() - t_run))
    out = _rates(runs) | _pct(per) | {"packets": k,
                                      "rules_per_packet": round(statistics.fmean(rules), 2)}
    for name, fs in (("best", best), ("worst", worst)):
        ts = []
        for src, dst, sport, dport, proto, _fl, local, _ok, now in fs.tolist():
            t0 = clock()
            reference_decision(nf, proto, src, dst, sport, dport, now, bool(local))
            ts.append(clock() - t0)
        out[name] = _pct(ts)
    if rs.mode == "nftables":
        work = bench_nft.count_work(nf, flows[:1000])
        out["chains_per_packet"] = work["chains_per_packet"]
        out["set_lookups_per_packet"] = work["lookups_per_packet"]
    return out, decisions


def compiled(sm, flows, best, worst, repeats: int, batch: int):
    """The compiled kernel over the first packets it may decide (slow_mask)."""
    from .bench import _compiled_work
    m = sm.matcher
    if m is None:
        return {"skipped": "nothing compiled: " + (sm.split.everything_slow or "")}
    mine = flows[~sm.slow_mask(flows)]
    if not len(mine):
        return {"skipped": "no first packet went to a compiled chain"}
    pure = m.implementation != "cython"
    big = np.resize(mine, min(batch, 50_000) if pure else batch)
    m.kernel.decide_count(big[:100_000])
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m.kernel.decide_count(big)
        runs.append(len(big) / (time.perf_counter() - t0))
    rep = 4 if pure else 1024

    def each(fs):
        ts = []
        for i in range(min(len(fs), 200 if pure else 1000)):
            t0 = time.perf_counter()
            m.kernel.decide_count(fs[i:i + 1], rep)
            ts.append((time.perf_counter() - t0) / rep)
        return ts

    out = _rates(runs) | _pct(each(mine)) | {
        "batch": len(big), "rules_per_packet": round(
            _compiled_work(m, mine[:20000], m.decide_batch(mine[:20000])), 2)}
    for name, fs in (("best", best), ("worst", worst)):
        fs = fs[~sm.slow_mask(fs)]
        out[name] = _pct(each(fs)) if len(fs) else {"skipped": "sent to the reference walk"}
    return out


def check(sm, flows, decisions, rules: bool = True) -> dict:
    """Compiled decisions against the reference's for the same first packets (verdict,
    endpoint, mark and, with `rules`, the iptables rules evaluated)."""
    if sm.matcher is None or not decisions:
        return {"compared": 0, "differ": 0}
    fl = flows[: len(decisions)]
    slow = sm.slow_mask(fl)
    got = sm.matcher.decide_batch(fl[~slow]).tolist()
    want = [d for d, s in zip(decisions, slow.tolist()) if not s]
    differ, first = 0, None
    for g, w in zip(got, want):
        ip, port, v, masq, _sp, n_rules = g
        mine = (VERDICTS[v], ip if v == 1 else None, port if v == 1 else None, bool(masq),
                n_rules if rules else None)
        ref = (w.verdict, int(w.endpoint_ip) if w.endpoint_ip else None, w.endpoint_port,
               w.masquerade, w.rules_evaluated_equivalent if rules else None)
        if mine != ref:
            differ += 1
            first = first or {"compiled": list(mine), "reference": list(ref)}
    return {"compared": len(got), "differ": differ} | ({"first_difference": first} if first
                                                        else {})


def measure(rs: Ruleset, *, packets: int, repeats: int, impls, kernel: bool, batch: int,
            budget_s: float, pcap=None, seed: int = 0, log=None) -> dict:
    """Everything `kdp bench rules` reports for one ruleset."""
    from . import bench_kernel
    from .fast.svcsplit import compile_ruleset
    nft = rs.mode == "nftables"
    t0 = time.perf_counter()
    if nft:
        from . import bench_nft
        sm = bench_nft.compile_matcher(rs.cluster, rs.node, rs.nft, seed, rs.addresses)
    else:
        sm = compile_ruleset(rs.cluster, rs.node, rs.text, seed, addresses=rs.addresses)
    flows = pcap if pcap is not None else first_packets(rs, packets)
    first, last = rs.targets[0], rs.targets[-1]
    best, worst = (first_packets(rs, 200, seed=3, only=[t]) for t in (first, last))
    slow = sm.slow_mask(flows)
    out = {"ruleset": rs.label, "services": rs.services, "lines": rs.text.count("\n"),
           "first_packets": len(flows), "notes": rs.notes,
           "best_position": first[3], "worst_position": last[3],
           "compile": {"seconds": round(time.perf_counter() - t0, 2),
                       "kube_services_rules": sm.split.dump_rules,
                       "compiled_rules": sm.split.compiled_rules,
                       "to_reference": [{"chain": c, "why": w} for c, w in sm.split.reasons],
                       "first_packets_to_reference": int(slow.sum())}}
    if nft:
        out = {"mode": "nftables"} | out | {"lines": rs.nft_tx.count("\n"),
                                            "iptables_lines": rs.text.count("\n")}
        out["compile"]["kube_services_rules"] = None
        out["compile"]["service_ips_elements"] = sm.split.dump_rules
    if log:
        what = "service-ips elements" if nft else "KUBE-SERVICES rules"
        unit = "service-ips elements" if nft else "service rules"
        log(f"{rs.label}: {rs.services} {unit}, {out['lines']} lines; matcher program: "
            f"{sm.split.compiled_rules} of {sm.split.dump_rules} {what}")
    decisions = []
    if "reference" in impls:
        out["reference"], decisions = reference(rs, flows, best, worst, repeats, budget_s, seed)
        if log:
            log(f"  reference: {out['reference']['per_second']:,.0f} first packets/s")
    if "compiled" in impls:
        out["compiled"] = compiled(sm, flows, best, worst, repeats, batch)
        if log and "per_second" in out["compiled"]:
            log(f"  compiled: {out['compiled']['per_second']:,.0f} first packets/s")
    out["decisions"] = check(sm, flows, decisions, rules=not nft)
    if kernel:
        node_ip = next((str(a) for a in rs.addresses if not a.ip.is_loopback), "10.240.0.4/16")
        out["kernel"] = bench_kernel.measure(rs.text, flows[:max(2000, min(len(flows), 20000))],
                                             best, worst, node_ip=node_ip, log=log,
                                             nft_tx=rs.nft_tx if nft else None)
    else:
        out["kernel"] = {"skipped": "--no-kernel"}
    return out
