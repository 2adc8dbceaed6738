# The docs let a user succeed without the source or anything outside the
# repository: every file they point at is here, their examples run, their
# numbers agree with each other and with the measurements, and the JSON
# contract they state is what kdp prints.
import json
import os
import re

import pytest
import yaml

from .kdp_cli import kdp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = ["README.md"] + [os.path.join("docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs")))
                        if f.endswith(".md")]


def read(rel: str) -> str:
    return open(os.path.join(ROOT, rel), encoding="utf-8").read()


@pytest.mark.parametrize("doc", DOCS)
def test_docs_point_only_at_files_in_the_repository(doc):
    text = read(doc)
    outside = re.findall(r"`((?:\.\./|shared/)[^`]*)`", text)
    assert outside == [], f"{doc} points outside the repository: {outside}"
    for path in set(re.findall(r"`((?:docs|examples|benchmarks)/[\w./-]+)`", text)):
        assert os.path.exists(os.path.join(ROOT, path)), f"{doc} names {path}, which does not exist"


def test_cluster_md_clusterconfig_example_is_valid(tmp_path):
    text = read("docs/cluster.md").split("## ClusterConfig", 1)[1]
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    yaml.safe_load(example)                          # parses
    keys = re.findall(r"^  (\w+):", example, re.M)   # spec's own keys
    assert len(keys) == len(set(keys)), f"a key is given twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    (tmp_path / "cluster.yaml").write_text(example)
    (tmp_path / "n3.iptables").write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
                                          ":OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    r = kdp("validate", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: 3 nodes")


def _reference_speeds() -> dict:
    runs = {}
    for name, v in json.load(open(os.path.join(ROOT, "benchmarks", "results", "e2e.json"))).items():
        if isinstance(v, dict):
            for run in v["runs"]:
                runs[(name, run["name"])] = run["median_frames_per_second"]
    return runs


def test_fastpath_and_performance_docs_agree_on_the_reference_speed():
    runs = _reference_speeds()
    reference = {f"{round(fps):,}" for (_, n), fps in runs.items() if "reference" in n}
    opening = read("docs/fastpath.md").split("\n## ", 1)[0]
    quoted = re.findall(r"(\d[\d,]+) (?:on|frames a second)", opening)
    assert quoted, "docs/fastpath.md should say how fast the reference path is"
    performance = read("docs/performance.md")
    for n in quoted:
        if n in {f"{round(fps):,}" for fps in runs.values()}:
            assert n in performance                  # the same figure in both documents
    assert any(n in reference for n in quoted)
    speedup = json.load(open(os.path.join(ROOT, "benchmarks", "results", "e2e.json")))[
        "established_64_flows"]["speedup"]["established"]
    assert f"{round(speedup)}×" in opening and f"{round(speedup)}×" in performance


def test_cli_md_states_every_topology_json_field_kdp_prints():
    doc = json.loads(kdp("topology", "demo", "--json").stdout)
    contract = read("docs/cli.md").split("`--json` is the stable document:", 1)[1].split("\n\n", 2)[1]
    fields = set(doc) | set(doc["services"][0]) | set(doc["pods"][0]) | set(doc["nodes"][0]) | \
        set(doc["ingresses"][0]) | set(doc["cluster"])
    missing = sorted(f for f in fields if f'"{f}"' not in contract)
    assert missing == []
