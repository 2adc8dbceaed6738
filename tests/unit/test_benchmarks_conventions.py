# benchmarks/ follows pytest-benchmark's conventions (issue 17, defect 4):
# `pytest benchmarks/` collects the bench_*.py files while a plain `pytest` still
# runs tests/ only; one round of either implementation times one batch of the
# same fixed size, with per-decision time, rules per packet and the
# implementation's honest name in extra_info; rounds are timed in CPU time.
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_pytest_collects_benchmarks_but_runs_tests_by_default():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        ini = tomllib.load(fh)["tool"]["pytest"]["ini_options"]
    assert ini["testpaths"] == ["tests"]
    assert "bench_*.py" in ini["python_files"] and "test_*.py" in ini["python_files"]
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "benchmarks/"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=os.environ | {"KDP_BENCH_SERVICES": "100"})
    collected = [ln for ln in out.stdout.splitlines() if "::" in ln]
    assert any("bench_rules.py::test_compiled_matcher[100]" in ln for ln in collected), out.stdout
    assert any("bench_conntrack.py::" in ln for ln in collected)


class FakeBenchmark:
    """Just enough of pytest-benchmark's fixture: runs the round once."""

    def __init__(self):
        self.extra_info, self.group, self.calls = {}, None, []

    def pedantic(self, fn, args=(), rounds=1, iterations=1, warmup_rounds=0):
        self.calls.append((args, rounds, iterations))
        return fn(*args)


@pytest.fixture
def bench_rules():
    spec = importlib.util.spec_from_file_location(
        "bench_rules_bm", os.path.join(ROOT, "benchmarks", "bench_rules.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_round_is_one_fixed_batch_for_both(bench_rules):
    ref, comp = FakeBenchmark(), FakeBenchmark()
    bench_rules.test_reference_walk(ref, 100)
    bench_rules.test_compiled_matcher(comp, 100)
    assert len(comp.calls[0][0][0]) == bench_rules.BATCH                     # the compiled round's batch
    for b in (ref, comp):
        assert b.extra_info["decisions_per_round"] == bench_rules.BATCH
        assert b.extra_info["rules_per_packet"] > 0
    assert ref.extra_info["rules_per_packet"] > 10 * comp.extra_info["rules_per_packet"] / 5
    assert comp.extra_info["implementation"] in ("compiled", "pure twin")


def test_rounds_are_timed_in_cpu_time(tmp_path):
    import json
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "benchmarks/bench_rules.py", "-k", "compiled_matcher",
                          f"--benchmark-json={tmp_path / 'b.json'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env=os.environ | {"KDP_BENCH_SERVICES": "100"})
    assert out.returncode == 0, out.stdout[-2000:]
    b = json.loads((tmp_path / "b.json").read_text())["benchmarks"][0]
    assert b["options"]["timer"] == "process_time"
    assert b["extra_info"]["per_decision_ns"] > 0 and b["extra_info"]["decisions_per_round"] == 200
