# kdp.bench: the synthetic workloads are what they claim (N services, K endpoints,
# generated rules the matcher compiles), `kdp bench rules --json` prints the
# spec's shape (shared/spec/cli.md), both impls agree on what they decide, the
# conntrack measurement fills every field. Small sizes: this is not the benchmark.
from __future__ import annotations

import argparse
import json

import pytest

from kdp import bench
from kdp.errors import UsageError


def _cli(argv: list[str]):
    p = argparse.ArgumentParser(prog="kdp")
    bench.add_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(argv)
    return a.func(a)


def test_synthetic_cluster_and_packets():
    c = bench.synthetic_cluster(50, 3)
    assert len(c.services) == 50 and all(len(s.endpoints) == 3 for s in c.services)
    assert len({(e.ip, e.port) for e in c.services[7].endpoints}) == 3
    f = bench.first_packets(50, 1000)
    assert len(f) == 1000 and set(f["dport"]) == {80}
    assert min(f["dst"]) >= bench.SERVICE_BASE and max(f["dst"]) < bench.SERVICE_BASE + 50


def test_run_rules_side_by_side():
    out = bench.run_rules([20, 200], 2, ("reference", "compiled"), reference_budget_s=0.3,
                          compiled_flows=20000)
    assert [(r["impl"], r["services"]) for r in out] == [
        ("reference", 20), ("compiled", 20), ("reference", 200), ("compiled", 200)]
    ref = {r["services"]: r for r in out if r["impl"] == "reference"}
    comp = {r["services"]: r for r in out if r["impl"] == "compiled"}
    # the walk is linear in the services, the matcher's work is not
    assert ref[200]["rules_evaluated_per_first_packet"] > 5 * ref[20]["rules_evaluated_per_first_packet"]
    assert abs(comp[200]["rules_evaluated_per_first_packet"]
               - comp[20]["rules_evaluated_per_first_packet"]) < 0.5
    assert all(r["new_flows_per_second"] > 0 and r["seconds"] > 0 for r in out)


def test_cli_json_shape(capsys):
    assert _cli(["bench", "rules", "--services", "30", "--impl", "compiled", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["results"] and len(doc["results"]) == 1
    assert set(doc["results"][0]) == {"impl", "services", "endpoints", "new_flows_per_second",
                                      "rules_evaluated_per_first_packet", "seconds"}
    assert doc["results"][0]["impl"] == "compiled" and doc["results"][0]["endpoints"] == 2


@pytest.mark.parametrize("argv", [["--services", "x"], ["--services", "0"],
                                  ["--services", "10", "--endpoints", "0"]])
def test_cli_rejects_bad_arguments(argv):
    with pytest.raises(UsageError):
        _cli(["bench", "rules", *argv])


def test_conntrack_measurement():
    r = bench.bench_conntrack(5000, repeats=2)
    assert r["entries"] == 5000 and r["inserts_per_second"] > 0 and r["lookups_per_second"] > 0
    if r["entry_size"] is not None:
        assert r["entry_size"] == 64 and r["bytes_per_entry"] >= 64
