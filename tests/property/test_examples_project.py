# examples/property-tests, the sample user project of docs/testing.md, run as a
# user runs it (`pytest` in its directory, a subprocess with its own
# pytest.ini): green as shipped, red with each deliberate break (KDP_BREAK),
# naming what broke. The docs' code excerpts are checked against its files.
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "property-tests"
DOCS = ROOT / "docs" / "testing.md"


def pytest_in_project(*args, env=None):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("HYPOTHESIS_PROFILE", "KDP_BREAK", "PYTEST_ADDOPTS", "KDP_REPLAY_DIR")}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=PROJECT, env=clean, capture_output=True, text=True, timeout=600)


def test_the_sample_project_is_green():
    run = pytest_in_project()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr
    assert re.search(r"\b\d+ passed\b", run.stdout) and "failed" not in run.stdout


@pytest.mark.parametrize("brk, expected", [
    ("missing-dnat", ["endpoint reachable: endpoint 10.244.0.12:8080 (pod shop/backend-6d4cf56db6-8xk2p",
                      "no nat rule of shop/backend on node aks-nodepool1-12345678-vmss000001 DNATs to "
                      "10.244.0.12:8080",
                      "at: node aks-nodepool1-12345678-vmss000001, "
                      "namespace node/aks-nodepool1-12345678-vmss000001,",
                      "--rules aks-nodepool1-12345678-vmss000001="]),
    ("orphan-service", ["service covered: service shop/recommendations selects app=recommendation, "
                        "which no pod in namespace shop carries"]),
])
def test_each_deliberate_break_is_caught(brk, expected):
    run = pytest_in_project("tests/test_shop.py", "-k", "every_client", env={"KDP_BREAK": brk})
    assert run.returncode == 1, run.stdout[-4000:] + run.stderr
    assert re.search(r"\b1 failed\b", run.stdout), run.stdout[-4000:]
    for text in expected:
        assert text in run.stdout, run.stdout[-4000:]
    assert "\nE         replay: kdp trace " in run.stdout


def test_the_docs_excerpts_are_the_sample_projects_code():
    blocks = re.findall(r"```(?:python|ini|yaml)\n# (examples/property-tests/\S+)\n(.*?)```", DOCS.read_text(),
                        re.S)
    assert len(blocks) >= 4, "docs/testing.md quotes the sample project"
    for path, body in blocks:
        source = (ROOT / path).read_text()
        assert body.strip("\n") in source, f"docs/testing.md quotes {path}, which no longer says:\n{body}"
