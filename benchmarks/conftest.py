# benchmarks/: pytest-benchmark defaults for kdp's benchmarks. The machines kdp
# is measured on are shared (other jobs take the cores), so rounds are timed in
# the process's CPU time (time.process_time), not wall time, unless
# --benchmark-timer says otherwise: time spent descheduled is not counted, and
# `--benchmark-compare-fail=median:25%` passes on unchanged code
# (docs/performance.md, "pytest-benchmark").
from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    from pytest_benchmark.utils import NameWrapper
    from pytest_benchmark.timers import default_timer
    if getattr(config.option, "benchmark_timer", None) == str(NameWrapper(default_timer)):
        config.option.benchmark_timer = "time.process_time"
