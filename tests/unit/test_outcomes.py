# kdp.outcomes through `kdp run`: what the frames did, counted the same with
# and without the flow cache, and the per-flow file.
import csv
import io
import json
import os
from pathlib import Path

from kdp import capconvert
from kdp.emulator import Emulator
from kdp.runner import PcapRun

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "pcaps" / "capture.pcap")
AT = "pod/default/client"


def _run(path, fastpath=True):
    r = PcapRun(Emulator.demo(capture=False, trace=False), AT, io.BytesIO(), json_lines=True,
                out_dir=None, fastpath=fastpath)
    counts = r.run(path)
    return counts, r.outcomes


def test_the_example_capture_says_who_reset_its_connections():
    """Raw SYNs from the client: each SYN-ACK meets the client pod's stack with
    no socket, which resets it. The summary says so, and which Service's
    endpoint took each new flow."""
    _counts, o = _run(EXAMPLE)
    s = o.summary()
    assert s["dispositions"] == {"delivered": 5} and s["drop_reasons"] == {}
    assert s["resets"] == {"total": 3, "by": {"pod/default/client (no socket)": 3}}
    assert s["flows"] == {"total": 5, "opened": 5, "completed": 0, "reset": 3}
    svc_a = s["services"]["backend/service-a"]
    assert svc_a["new_flows"] == 3 and sum(svc_a["endpoints"].values()) == 3
    assert all(e.startswith("pod/backend/service-a-") for e in svc_a["endpoints"])
    assert s["services"]["kube-system/kube-dns"]["new_flows"] == 1


def test_drop_reasons_and_flows_file(tmp_path):
    frames = [f for _t, f in __import__("kdp.io", fromlist=["read_pcap"]).read_pcap(EXAMPLE)]
    recs = [(1_700_000_000_000_000 + i, f) for i, f in enumerate(frames)] + [(1_700_000_001_000_000, b"\x01" * 10)]
    p = str(tmp_path / "c.pcap")
    capconvert.write(p, recs, "pcap")
    _counts, o = _run(p)
    assert o.summary()["drop_reasons"] == {"malformed-frame": 1}
    o.write_flows(str(tmp_path / "f.csv"))
    o.write_flows(str(tmp_path / "f.json"))
    rows = list(csv.DictReader(open(tmp_path / "f.csv")))
    js = json.load(open(tmp_path / "f.json"))
    assert len(rows) == len(js) == 5
    tcp = [r for r in js if r["proto"] == "tcp"]
    assert {r["state"] for r in tcp} == {"reset"} and {r["service"] for r in tcp} == {"backend/service-a"}
    assert all(r["resets_by"] == ["pod/default/client (no socket)"] for r in tcp)
    assert rows[0]["proto"] == "udp" and rows[0]["service"] == "kube-system/kube-dns"


def test_the_flow_cache_counts_what_the_reference_counts(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("mp", ROOT / "benchmarks" / "make_pcap.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    p = str(tmp_path / "g.pcap")
    capconvert.write(p, list(mp.generate(1500, flows=30, mix="full", seed=9)), "pcap")
    fast_counts, fast = _run(p)
    ref_counts, ref = _run(p, fastpath=False)
    assert fast_counts["fastpath_hits"] > 500
    assert fast.summary() == ref.summary()
    assert sorted(fast.flow_rows(), key=repr) == sorted(ref.flow_rows(), key=repr)
    assert fast.summary()["resets"]["total"] > 0          # raw frames get reset: the summary shows it
