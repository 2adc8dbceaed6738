# The examples and the README's promises keep working.
import json
import os
import shlex
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


def _tour() -> str:
    readme = open(os.path.join(ROOT, "README.md")).read()
    return readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]


def test_readme_tour_runs_top_to_bottom_as_written(tmp_path):
    """Every command of the README's tour, in order, in a fresh directory with the
    repository's examples/ beside it (as on a fresh clone); only sudo is left out."""
    from .kdp_cli import KDP
    os.symlink(os.path.join(ROOT, "examples"), tmp_path / "examples")
    tour = _tour()
    cmds = [l.strip().split("  #")[0].strip() for l in tour.splitlines()
            if l.startswith("    kdp ") or l.startswith("    sudo ")]
    assert len(cmds) >= 10 and any("examples/pcaps/capture.pcap" in c for c in cmds)
    assert not any("<" in c for c in cmds)                       # no placeholders to fill in
    for c in cmds:
        if c.startswith("sudo "):
            assert c.startswith('sudo "$(command -v kdp)" ')     # works from a venv
            continue
        r = subprocess.run([KDP] + shlex.split(c)[1:], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, (c, r.stderr)
        assert "Traceback" not in r.stderr
    assert (tmp_path / "net.svg").exists() and (tmp_path / "out" / "default__client__eth0.pcap").exists()
    code = tour.split("```python\n", 1)[1].split("```", 1)[0]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "delivered pod/backend/" in r.stdout, r.stderr


def test_example_capture_is_small_and_what_make_pcaps_writes(tmp_path):
    committed = os.path.join(ROOT, "examples", "pcaps", "capture.pcap")
    assert os.path.getsize(committed) < 50_000
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "pcaps", "make_pcaps.py"),
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("capture.pcap", "two-sided.pcap", "any.pcap"):                  # deterministic, current
        assert (tmp_path / name).read_bytes() == open(os.path.join(ROOT, "examples", "pcaps", name), "rb").read()
    assert open(os.path.join(ROOT, "examples", "pcaps", "any.pcap"), "rb").read()[20:24] == (276).to_bytes(4, "little")


def test_example_capture_runs_as_the_readme_says():
    from .kdp_cli import kdp
    r = kdp("run", "demo", "--pcap", os.path.join(ROOT, "examples", "pcaps", "capture.pcap"),
            "--at", "pod/default/client", "--json")
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert r.returncode == 0 and lines[-1]["summary"]["delivered"] == 5
    dns, syns, ping = lines[0], lines[1:4], lines[4]
    assert dns["packet"]["proto"] == "udp" and dns["delivered_to"].startswith("pod/kube-system/coredns-")
    assert all(s["packet"]["flags"] == "S" and s["delivered_to"].startswith("pod/backend/service-a-")
               for s in syns)
    assert ping["packet"]["proto"] == "icmp" and ping["delivered_to"].startswith("pod/backend/service-a-")
    # live TCP replay: the SYN-ACKs are consumed by the capture's sockets, not reset
    assert lines[-1]["summary"]["outcomes"]["resets"] == {"total": 0, "by": {}}
    assert lines[-1]["summary"]["translated"] == 0                # SYNs only: nothing to translate
    r = kdp("run", "demo", "--pcap", os.path.join(ROOT, "examples", "pcaps", "capture.pcap"),
            "--at", "pod/default/client", "--raw")
    text = r.stdout
    assert "None" not in text                                    # an ICMP line has no ports to show
    assert r.stderr == ""                                        # no progress on a pipe
    assert "resets sent by kdp: 3 (pod/default/client (no socket) 3)" in text
    assert "flows: 5 (5 opened, 0 completed, 3 reset)" in text and " frames/s (" in text
