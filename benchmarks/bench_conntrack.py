# The compiled conntrack table (pytest-benchmark): inserts (a new flow tracked and
# confirmed) and lookups (both directions, random order) at 10k and 1M entries,
# against the reference table through its twin at 10k. One round is one batch;
# ops/s x batch = per second. Bytes per entry all-in (CtTable.memory(): every
# allocation at its capacity) are in extra_info. Run:
#   python -m pytest benchmarks/bench_conntrack.py -p no:cacheprovider \
#       --benchmark-columns=median,ops
# The figures of docs/performance.md (bytes per entry all-in with the RSS cross-check,
# inserts/s and lookups/s at 1M, medians of 5; --nat: every entry DNAT'ed) come from
#   python benchmarks/conntrack_side_by_side.py 5 [--nat]
from __future__ import annotations

import pytest

from kdp import bench
from kdp.fast import conntrack as pure_ct
from kdp.conntrack import Timeouts

try:
    from kdp import _fastpath
except ImportError:  # pragma: no cover
    _fastpath = None

needs_fastpath = pytest.mark.skipif(_fastpath is None, reason="kdp._fastpath not built")


@needs_fastpath
@pytest.mark.parametrize("entries", [10_000, 1_000_000])
def test_compiled_inserts(benchmark, entries):
    f = bench.conntrack_flows(entries + entries // 50)[:entries]
    tables = []

    def setup():
        tables.append(_fastpath.CtTable(entries, Timeouts.kube_proxy()))
        return (tables[-1], f), {}

    benchmark.group = f"conntrack inserts, {entries} entries"
    benchmark.extra_info["per_round"] = entries
    benchmark.pedantic(lambda t, fl: t.process_batch(fl), setup=setup, rounds=3, iterations=1)
    mem = tables[-1].memory()
    benchmark.extra_info["entry_size"] = mem["entry_size"]
    benchmark.extra_info["bytes_per_entry"] = sum(v for k, v in mem.items()
                                                  if k != "entry_size") / entries


@needs_fastpath
@pytest.mark.parametrize("entries", [10_000, 1_000_000])
def test_compiled_lookups(benchmark, entries):
    f = bench.conntrack_flows(entries + entries // 50)[:entries]
    t = _fastpath.CtTable(entries, Timeouts.kube_proxy())
    t.process_batch(f)
    q = bench.conntrack_lookups(f)
    benchmark.group = f"conntrack lookups, {entries} entries"
    benchmark.extra_info["per_round"] = len(q)
    hits = benchmark.pedantic(t.lookup_batch, args=(q,), rounds=5, iterations=1, warmup_rounds=1)
    assert (hits["code"] == 0).all()
    mem = t.memory()
    benchmark.extra_info["entry_size"] = mem["entry_size"]
    benchmark.extra_info["bytes_per_entry"] = sum(v for k, v in mem.items()
                                                  if k != "entry_size") / entries


@pytest.mark.parametrize("entries", [10_000])
def test_reference_lookups(benchmark, entries):
    f = bench.conntrack_flows(entries + entries // 50)[:entries]
    t = pure_ct.CtTable(entries, Timeouts.kube_proxy())
    t.process_batch(f)
    q = bench.conntrack_lookups(f)[:20000]
    rows = q.tolist()

    def run():
        return [t.lookup(r[4], r[0], r[1], r[2], r[3], r[8]) for r in rows]

    benchmark.group = f"conntrack lookups, {entries} entries"
    benchmark.extra_info["per_round"] = len(rows)
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert all(x is not None for x in out)
