# bench: the measuring behind `kdp bench rules` (its command line: kdp.bench_cli) — kube-proxy's iptables rules on first packets, the
# reference walk (kdp.netfilter over the node's generated ruleset) against the
# compiled service matcher (kdp.fast.svcmatch), for synthetic clusters of N
# ClusterIP services with K endpoints each; plus the conntrack table
# measurements benchmarks/ and docs/performance.md use. Owns the workloads and
# the timing; the CLI wiring is add_parser(); never changes kdp's behaviour.
#
# What is measured (per impl, per N; median of repeats):
# - new_flows_per_second: first packets decided per second. reference: the nat
#   PREROUTING walk and the filter FORWARD walk of each packet, as the datapath
#   runs them (svcref.reference_decision, no trace); compiled: the batch kernel
#   (decide_count) over an array of first packets, without the GIL.
# - rules_evaluated_per_first_packet: reference: nat rules the walk evaluated;
#   compiled: what the matcher evaluates instead — one hash lookup for the
#   PREROUTING jump and the KUBE-SERVICES scan, then the same service chain rules.
# Ruleset generation, parsing and compiling are not timed (reported by --verbose).
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import numpy as np

from .fast.contract import FLOW_DTYPE
from .errors import UsageError

NODE = "node-0"
SERVICE_BASE = int(IPv4Address("10.96.0.16"))
CLIENT_BASE = int(IPv4Address("10.244.0.10"))
REFERENCE_BUDGET_S = 30.0          # per service count, all repeats of the reference walk


def synthetic_cluster(services: int, endpoints: int = 2, nodes: int = 3):
    """N ClusterIP services (TCP 80 -> 8080), K ready endpoints each on pods
    spread over the nodes; kubenet, service CIDR 10.96.0.0/12."""
    from .k8s.model import Cluster, ClusterConfig, Endpoint, Node, Service, ServicePort
    if services > (1 << 20) - 32:
        raise UsageError(f"--services {services}: at most {(1 << 20) - 32}")
    cfg = ClusterConfig(service_cidr=IPv4Network("10.96.0.0/12"))
    ns = [Node(f"node-{i}", IPv4Address("10.240.0.4") + i, IPv4Network(f"10.244.{i}.0/24"))
          for i in range(nodes)]
    out = []
    for s in range(services):
        port = ServicePort(80, "TCP", "http", 8080)
        svc = Service("bench", f"svc-{s}", "ClusterIP", IPv4Address(SERVICE_BASE + s), [port])
        for j in range(endpoints):
            e = s * endpoints + j
            node = ns[e % nodes]
            ip = node.pod_cidr.network_address + 2 + (e // nodes) % 250
            svc.endpoints.append(Endpoint(ip, 8080 + (e // (nodes * 250)) % 1000, "http", "TCP",
                                          node.name))
        out.append(svc)
    return Cluster(cfg, ns, services=out)


def first_packets(services: int, count: int, seed: int = 1) -> np.ndarray:
    """`count` TCP SYNs from pods on node-0 to random services' cluster IPs."""
    rng = np.random.default_rng(seed)
    return _syns(rng, CLIENT_BASE + rng.integers(0, 200, count),
                 SERVICE_BASE + rng.integers(0, services, count))


def _syns(rng, src, dst) -> np.ndarray:
    """TCP SYNs to port 80 at time 1.0 from src to dst (arrays), random source ports."""
    f = np.zeros(len(src), dtype=FLOW_DTYPE)
    f["src"], f["dst"] = src, dst
    f["sport"] = rng.integers(1024, 65536, len(src))
    f["dport"] = 80
    f["proto"] = 6
    f["tcp_flags"] = 0x02
    f["checksum_ok"] = 1
    f["now"] = 1.0
    return f


@dataclass
class Workload:
    services: int
    endpoints: int
    cluster: object
    text: str
    prepare_s: float


def workload(services: int, endpoints: int) -> Workload:
    from .k8s.kubeproxy import node_rules
    t0 = time.perf_counter()
    cluster = synthetic_cluster(services, endpoints)
    text = node_rules(cluster, NODE)
    return Workload(services, endpoints, cluster, text, time.perf_counter() - t0)


def _result(impl: str, w: Workload, rate: float, rules: float, seconds: float) -> dict:
    return {"impl": impl, "services": w.services, "endpoints": w.endpoints,
            "new_flows_per_second": round(rate, 1),
            "rules_evaluated_per_first_packet": round(rules, 2), "seconds": round(seconds, 6)}


def bench_reference(w: Workload, *, repeats: int = 3, budget_s: float = REFERENCE_BUDGET_S,
                    max_flows: int = 20000, seed: int = 0, log=None) -> dict:
    """The reference walk: as many first packets as fit the time budget (split
    over the repeats), at least 20 per repeat; median rate."""
    from .fast.svcmatch import node_addresses
    from .fast.svcref import reference_decision, reference_netfilter
    t0 = time.perf_counter()
    nf = reference_netfilter(w.text, f"node/{NODE}", node_addresses(w.cluster, NODE), seed,
                             trace=False)
    if log:
        log(f"  reference: ruleset parsed in {time.perf_counter() - t0:.1f} s")
    flows = first_packets(w.services, max_flows, seed=2).tolist()
    runs, rules = [], []
    per_repeat = budget_s / max(1, repeats)
    k = 0
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while n < 20 or (time.perf_counter() - start < per_repeat and n < max_flows // repeats):
            src, dst, sport, dport, proto, _fl, local, _ok, now = flows[k % len(flows)]
            d = reference_decision(nf, proto, src, dst, sport, dport, now, bool(local))
            rules.append(d.rules_evaluated_equivalent)
            n += 1
            k += 1
        runs.append((n, time.perf_counter() - start))
    rate = statistics.median(n / s for n, s in runs)
    n, s = sorted(runs, key=lambda r: r[0] / r[1])[len(runs) // 2]
    return _result("reference", w, rate, statistics.fmean(rules), s) | {
        "_flows": k, "_rates": [n / s for n, s in runs]}


def bench_compiled(w: Workload, *, repeats: int = 5, flows: int = 1_000_000, seed: int = 0,
                   log=None) -> dict:
    """The compiled matcher's batch kernel over `flows` first packets; median rate."""
    from .fast.svcmatch import compile_matcher
    t0 = time.perf_counter()
    m = compile_matcher(w.cluster, NODE, w.text, seed=seed)
    if m is None:
        raise RuntimeError("the generated ruleset did not compile (a kdp bug)")
    if log:
        log(f"  compiled: matcher built in {time.perf_counter() - t0:.1f} s "
            f"({m.implementation} kernel)")
    if m.implementation != "cython":
        flows = min(flows, 50_000)
    f = first_packets(w.services, flows, seed=2)
    m.kernel.decide_count(f[: min(len(f), 100_000)])            # warm the caches
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        m.kernel.decide_count(f)
        runs.append(time.perf_counter() - start)
    seconds = statistics.median(runs)
    sample = m.decide_batch(f[:20000])
    return _result("compiled", w, len(f) / seconds, _compiled_work(m, f[:20000], sample),
                   seconds) | {"_rates": [len(f) / r for r in runs]}


def _compiled_work(m, flows: np.ndarray, decisions: np.ndarray) -> float:
    """Mean rules the matcher evaluates: the iptables count minus the scan the
    hash lookup replaces (the PREROUTING jump and KUBE-SERVICES rules 1..pos
    become one lookup)."""
    from .fast.svcmatch import S_SVC, key_of
    prog = m.program
    pos_of = {}
    for k, v in zip(prog.keys.tolist(), prog.vals.tolist()):
        if v >= 0 and (k & 0xFF) == S_SVC:
            pos_of[k] = int(prog.rules[v]["pos"])
    total = 0
    for f, d in zip(flows.tolist(), decisions.tolist()):
        src, dst, _sport, dport, proto = f[:5]
        pos = pos_of.get(key_of(S_SVC, dst, proto, dport), 0)
        total += d[5] - pos if pos else d[5]
    return total / max(1, len(flows))


def run_rules(services: list[int], endpoints: int = 2, impls=("reference", "compiled"), *,
              log=None, reference_budget_s: float = REFERENCE_BUDGET_S,
              compiled_flows: int = 1_000_000, compiled_repeats: int = 5,
              details: bool = False) -> list[dict]:
    """One result per (size, impl), in that order; `details` keeps the rate of
    every repeat (key "_rates") and the reference's flow count ("_flows")."""
    out = []
    for n in services:
        w = workload(n, endpoints)
        if log:
            log(f"{n} services x {endpoints} endpoints: rules generated in {w.prepare_s:.1f} s "
                f"({w.text.count(chr(10))} lines)")
        for impl in impls:
            if impl == "reference":
                r = bench_reference(w, budget_s=reference_budget_s, log=log)
            else:
                r = bench_compiled(w, flows=compiled_flows, repeats=compiled_repeats, log=log)
            if not details:
                r = {k: v for k, v in r.items() if not k.startswith("_")}
            out.append(r)
            if log:
                log(f"  {impl}: {r['new_flows_per_second']:,.0f} new flows/s, "
                    f"{r['rules_evaluated_per_first_packet']} rules per first packet")
    return out


# --- conntrack (benchmarks/bench_conntrack.py, docs/performance.md) ----------------

def conntrack_flows(count: int, seed: int = 1) -> np.ndarray:
    """`count` distinct TCP SYN tuples (pods -> service endpoints)."""
    rng = np.random.default_rng(seed)
    f = _syns(rng, (10 << 24) | (244 << 16) | rng.integers(0, 1 << 16, count),
              (10 << 24) | (96 << 16) | rng.integers(0, 1 << 16, count))
    _, first = np.unique(f[["src", "dst", "sport"]], return_index=True)
    return f[np.sort(first)]


def conntrack_lookups(f: np.ndarray) -> np.ndarray:
    """Lookups of both directions of every flow of f (conntrack_flows), in a
    fixed random order, at time 2.0."""
    q = f.copy()
    q["now"] = 2.0
    rev = q.copy()
    rev["src"], rev["dst"], rev["sport"], rev["dport"] = q["dst"], q["src"], q["dport"], q["sport"]
    return np.concatenate([q, rev])[np.random.default_rng(3).permutation(2 * len(f))]


def bench_conntrack(entries: int, *, repeats: int = 5, impl=None) -> dict:
    """Inserts/s (process_batch of new flows, confirmed) into an empty table and
    lookups/s (lookup_batch of both directions, random order) at `entries`."""
    from .fast import CtTable
    from .conntrack.timeouts import Timeouts
    impl = impl or CtTable
    f = conntrack_flows(int(entries * 1.01) + 64)[:entries]
    ins = []
    for _ in range(max(1, repeats // 2)):
        t = impl(entries, Timeouts.kube_proxy())
        start = time.perf_counter()
        t.process_batch(f)
        ins.append(time.perf_counter() - start)
    q = conntrack_lookups(f)
    look = []
    for _ in range(repeats):
        start = time.perf_counter()
        hits = t.lookup_batch(q)
        look.append(time.perf_counter() - start)
    assert int((hits["code"] == 0).sum()) == len(q)
    mem = t.memory()
    held = sum(v for k, v in mem.items() if k != "entry_size")
    return {"entries": len(t), "inserts_per_second": len(f) / statistics.median(ins),
            "lookups_per_second": len(q) / statistics.median(look),
            "insert_rates": [len(f) / x for x in ins], "lookup_rates": [len(q) / x for x in look],
            "entry_size": mem["entry_size"], "bytes_per_entry": held / len(t), "memory": mem}


if __name__ == "__main__":                  # `python -m kdp.bench rules ...`: the CLI lives in bench_cli
    import runpy
    runpy.run_module("kdp.bench_cli", run_name="__main__")
