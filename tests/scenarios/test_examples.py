# The examples and the README's promises keep working.
import os
import subprocess
import sys

import pytest

from kdp import load_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_example_cluster_loads():
    c = load_cluster(os.path.join(ROOT, "examples", "cluster"))
    assert {p.name for p in c.pods} >= {"web-1", "web-2"}
    web = c.service("shop", "web")
    assert [e.ready for e in web.endpoints] == [True, False]      # web-2 fails its probe


def test_scapy_example_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "scapy_send.py")], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "trace: delivered" in r.stdout and "ttl 1: dropped (ttl-exceeded)" in r.stdout
    assert os.listdir(tmp_path / "scapy-send-pcaps")


def test_readme_test_command_is_what_ci_runs():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    cmd = "python -m pytest -q -p no:cacheprovider"
    assert cmd in readme and cmd in ci
