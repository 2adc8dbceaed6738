# benchmarks/perf_report.py (issue 17, defect 3): it refuses to measure the
# matcher's pure twin unless asked, and then calls it "pure twin", never
# "compiled"; --skip-conntrack writes a report instead of a KeyError; its kernel
# numbers come from the run's own measurement (kdp.bench_kernel), none typed in.
from __future__ import annotations

import importlib.util
import json
import os

import pytest

from kdp import bench_kernel, fast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["--services", "8", "--skip-conntrack", "--budget", "0.1", "--repeats", "2",
         "--packets", "200"]


@pytest.fixture
def report(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "perf_report", os.path.join(ROOT, "benchmarks", "perf_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kernel = {"iptables": "measured here", "uniform": {"p50_us": 12.5, "p90_us": 13.0,
                                                       "p99_us": 14.0, "per_second": 80000.0}}
    monkeypatch.setattr(bench_kernel, "measure", lambda *a, **k: kernel)

    def run(*extra):
        rc = mod.main([*SMALL, "--out", str(tmp_path), "--img", str(tmp_path / "img"), *extra])
        path = tmp_path / "performance.json"
        return rc, (json.loads(path.read_text()) if path.exists() else None)
    return run


def test_skip_conntrack_writes_the_report(report, capsys):
    rc, doc = report()
    assert rc == 0 and "conntrack" not in doc
    assert doc["rulesets"][0]["kernel"]["iptables"] == "measured here"     # the run's own
    kernel = [r for r in doc["rules"] if r["impl"] == "kernel"]
    assert kernel and kernel[0]["p50_us"] == 12.5
    assert "machine:" in capsys.readouterr().out


def test_pure_twin_is_refused_then_labelled(report, monkeypatch, capsys):
    monkeypatch.setattr(fast, "IMPLEMENTATION", "python")
    rc, doc = report()
    assert rc == 2 and doc is None
    assert "pure twin" in capsys.readouterr().err
    rc, doc = report("--allow-pure-twin")
    assert rc == 0 and doc["machine"]["matcher"] == "pure twin"
    impls = {r["impl"] for r in doc["rules"]}
    assert "pure twin" in impls and "compiled" not in impls


def test_no_kernel_numbers_are_typed_in():
    text = open(os.path.join(ROOT, "benchmarks", "perf_report.py")).read()
    assert "146e3" not in text and "12.4e3" not in text and "bench_rules.measure" in text
