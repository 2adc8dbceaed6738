# kube-proxy's rules on first packets (pytest-benchmark): the reference iptables
# walk against the compiled service matcher at 100; 1,000; 10,000; 100,000
# ClusterIP services with 2 endpoints each (kdp.bench builds the workloads). One
# "round" is a batch of first packets; ops/s x batch = decisions/s. Run:
#   python -m pytest benchmarks/bench_rules.py -p no:cacheprovider \
#       --benchmark-columns=median,ops --benchmark-group-by=param:services
# KDP_BENCH_SERVICES=100,1000 limits the sizes; the reference walk at 100,000
# services takes ~0.1 s per packet, so its batch there is small.
from __future__ import annotations

import os

import pytest

from kdp import bench
from kdp.fast.svcmatch import compile_matcher, node_addresses
from kdp.fast.svcref import reference_decision, reference_netfilter

SIZES = [int(x) for x in os.environ.get("KDP_BENCH_SERVICES", "100,1000,10000,100000").split(",")]
REFERENCE_BATCH = {100: 2000, 1000: 500, 10000: 50, 100000: 5}
COMPILED_BATCH = 1_000_000
_cache: dict[int, bench.Workload] = {}


def _workload(n: int) -> bench.Workload:
    if n not in _cache:
        _cache[n] = bench.workload(n, 2)
    return _cache[n]


@pytest.mark.parametrize("services", SIZES)
def test_reference_walk(benchmark, services):
    w = _workload(services)
    nf = reference_netfilter(w.text, f"node/{bench.NODE}", node_addresses(w.cluster, bench.NODE),
                             trace=False)
    flows = bench.first_packets(services, REFERENCE_BATCH.get(services, 100), seed=2).tolist()

    def run():
        return [reference_decision(nf, f[4], f[0], f[1], f[2], f[3], f[8]) for f in flows]

    benchmark.group = f"first packets, {services} services"
    benchmark.extra_info["decisions_per_round"] = len(flows)
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert all(d.verdict == "dnat" for d in out)


@pytest.mark.parametrize("services", SIZES)
def test_compiled_matcher(benchmark, services):
    w = _workload(services)
    m = compile_matcher(w.cluster, bench.NODE, w.text)
    flows = bench.first_packets(services, COMPILED_BATCH, seed=2)
    benchmark.group = f"first packets, {services} services"
    benchmark.extra_info["decisions_per_round"] = len(flows)
    benchmark.extra_info["kernel"] = m.implementation
    benchmark.pedantic(m.kernel.decide_count, args=(flows,), rounds=5, iterations=1,
                       warmup_rounds=1)
