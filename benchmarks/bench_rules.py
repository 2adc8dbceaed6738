# kube-proxy's rules on first packets (pytest-benchmark): the reference iptables
# walk against the compiled service matcher at 100; 1,000; 10,000 ClusterIP
# services with 2 endpoints each (kdp.bench builds the workloads). One round
# times ONE batch of BATCH first packets, the same packets for both
# implementations, so ops/s x BATCH = decisions/s and the ratio of the medians
# is the real speed-up. extra_info: decisions_per_round, per_decision_ns
# (median round / BATCH), rules_per_packet, implementation ("compiled" or
# "pure twin", never the twin called compiled). Run (pyproject's python_files
# collects bench_*.py under benchmarks/; the default `pytest` still runs tests/):
#   python -m pytest benchmarks/bench_rules.py -p no:cacheprovider \
#       --benchmark-columns=median,ops --benchmark-group-by=param:services
# KDP_BENCH_SERVICES=100,1000 limits the sizes (100000 works, slowly: ~20 s a round).
from __future__ import annotations

import os

import pytest

from kdp import bench, bench_report
from kdp.fast.svcmatch import compile_matcher, node_addresses
from kdp.fast.svcref import reference_decision, reference_netfilter

SIZES = [int(x) for x in os.environ.get("KDP_BENCH_SERVICES", "100,1000,10000").split(",")]
BATCH = 200                                 # first packets per round, both implementations
REFERENCE_ROUNDS = {100: 15, 1000: 11, 10000: 7, 100000: 3}
COMPILED_ROUNDS, COMPILED_ITERATIONS = 201, 1000   # a round's time is still one batch's
_cache: dict[int, bench.Workload] = {}


def _workload(n: int) -> bench.Workload:
    if n not in _cache:
        _cache[n] = bench.workload(n, 2)
    return _cache[n]


def _per_decision(benchmark) -> None:
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None:
        benchmark.extra_info["per_decision_ns"] = round(stats.median / BATCH * 1e9, 3)


@pytest.mark.parametrize("services", SIZES)
def test_reference_walk(benchmark, services):
    w = _workload(services)
    nf = reference_netfilter(w.text, f"node/{bench.NODE}", node_addresses(w.cluster, bench.NODE),
                             trace=False)
    flows = bench.first_packets(services, BATCH, seed=2).tolist()

    def run():
        return [reference_decision(nf, f[4], f[0], f[1], f[2], f[3], f[8]) for f in flows]

    benchmark.group = f"first packets, {services} services"
    benchmark.extra_info.update(decisions_per_round=BATCH, implementation="reference")
    out = benchmark.pedantic(run, rounds=REFERENCE_ROUNDS.get(services, 5), iterations=1,
                             warmup_rounds=1)
    assert len(out) == BATCH and all(d.verdict == "dnat" for d in out)
    benchmark.extra_info["rules_per_packet"] = round(
        sum(d.rules_evaluated_equivalent for d in out) / BATCH, 2)
    _per_decision(benchmark)


@pytest.mark.parametrize("services", SIZES)
def test_compiled_matcher(benchmark, services):
    w = _workload(services)
    m = compile_matcher(w.cluster, bench.NODE, w.text)
    flows = bench.first_packets(services, BATCH, seed=2)
    benchmark.group = f"first packets, {services} services"
    benchmark.extra_info.update(decisions_per_round=BATCH,
                                implementation=bench_report.matcher_label())
    twin = m.implementation != "cython"
    benchmark.pedantic(m.kernel.decide_count, args=(flows,), rounds=11 if twin else
                       COMPILED_ROUNDS, iterations=2 if twin else COMPILED_ITERATIONS,
                       warmup_rounds=1 if twin else 50)
    benchmark.extra_info["rules_per_packet"] = round(
        bench._compiled_work(m, flows, m.decide_batch(flows)), 2)
    _per_decision(benchmark)
