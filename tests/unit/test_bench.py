# kdp.bench: the synthetic workloads are what they claim (N services, K endpoints,
# generated rules the matcher compiles), `kdp bench rules --json` prints the
# spec's shape (shared/spec/cli.md), both impls agree on what they decide, the
# conntrack measurement fills every field. Small sizes: this is not the benchmark.
from __future__ import annotations

import argparse
import json

import pytest

from kdp import bench, bench_cli, bench_report
from kdp.errors import UsageError


def _cli(argv: list[str]):
    p = argparse.ArgumentParser(prog="kdp")
    bench_cli.add_parser(p.add_subparsers(dest="command", required=True))
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


FAST = ["--budget", "0.2", "--repeats", "2", "--batch", "20000", "--packets", "300"]


def test_cli_json_shape(capsys):
    assert _cli(["bench", "rules", "--services", "30", "--impl", "compiled", "--json",
                 "--no-kernel", *FAST]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["results", "rulesets", "machine"] and len(doc["results"]) == 1
    assert {"impl", "services", "endpoints", "new_flows_per_second",
            "rules_evaluated_per_first_packet", "seconds"} <= set(doc["results"][0])
    assert doc["results"][0]["impl"] == bench_report.matcher_label()
    assert doc["results"][0]["endpoints"] == 2
    m = doc["machine"]
    assert m["repeats"] == 2 and m["cores"] >= 1 and m["cpu"] and m["kernel"] and m["python"]
    assert m["kdp_version"] and m["kdp_commit"] and m["matcher"] in ("compiled", "pure twin")
    r = doc["rulesets"][0]
    assert r["kernel"] == {"skipped": "--no-kernel"}
    assert {"p50_us", "p90_us", "p99_us", "best", "worst", "range"} <= set(r["compiled"])


def test_pure_twin_is_never_called_compiled(monkeypatch, capsys):
    from kdp import fast
    monkeypatch.setattr(fast, "IMPLEMENTATION", "python")
    assert _cli(["bench", "rules", "--services", "20", "--impl", "compiled", "--no-kernel",
                 *FAST]) == 0
    out = capsys.readouterr().out
    assert "pure twin" in out and "matcher: compiled" not in out
    assert bench_report.spec_results([], None) == []
    assert bench_report.metadata()["matcher"] == "pure twin"


def test_cli_rules_file_with_hand_edits(tmp_path, capsys):
    """`--rules FILE`: a generated dump with two hand edits; the untouched
    chains are compiled, the edited ones named, decisions agree."""
    w = bench.workload(30, 2)
    lines = [ln.replace(":8080", ":9090") if ln.startswith("-A KUBE-SEP") and
             '"bench/svc-4:http"' in ln and "DNAT" in ln else ln
             for ln in w.text.splitlines() if not ("svc-7:http cluster IP" in ln
                                                    and ln.startswith("-A KUBE-SERVICES"))]
    f = tmp_path / "node.rules"
    f.write_text("\n".join(lines) + "\n")
    assert _cli(["bench", "rules", "--rules", str(f), "--json", "--no-kernel", *FAST]) == 0
    r = json.loads(capsys.readouterr().out)["rulesets"][0]
    assert r["compile"]["compiled_rules"] == 28 and r["services"] == 29
    assert r["decisions"]["compared"] > 0 and r["decisions"]["differ"] == 0
    assert any("bench/svc-4:http" in x["why"] for x in r["compile"]["to_reference"])
    assert 0 < r["compile"]["first_packets_to_reference"] < 300


def test_cli_cluster_node(capsys):
    from kdp.k8s import demo_cluster
    node = demo_cluster().nodes[0].name
    assert _cli(["bench", "rules", "--cluster", "demo", "--node", node, "--no-kernel",
                 *FAST]) == 0
    out = capsys.readouterr().out
    assert "(generated)" in out and "0 differ" in out and "machine:" in out


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match="matplotlib"):
        _cli(["bench", "rules", "--services", "5", "--plot", "x.svg"])
    with pytest.raises(UsageError, match=".svg or .png"):
        _cli(["bench", "rules", "--services", "5", "--plot", "x.pdf"])


def test_kernel_skips_with_a_reason(monkeypatch):
    from kdp import bench_kernel
    monkeypatch.setattr(bench_kernel.N, "available", lambda: "the kernel oracle needs root")
    assert bench_kernel.measure("", None, None, None) == {
        "skipped": "measuring the kernel needs root (network namespaces)".replace(
            " (network namespaces)", "")}


@pytest.mark.root
def test_kernel_first_packet_cost_is_measured():
    from kdp import bench_kernel, bench_rules as br
    why = bench_kernel.unavailable()
    if why:
        pytest.skip(why)
    rs = br.synthetic(20, 2)
    f = br.first_packets(rs, 400)
    k = bench_kernel.measure(rs.text, f, f[:200], f[:200])
    assert k["uniform"]["delivered"] == 400 and k["no_rules"]["delivered"] > 0
    assert k["uniform"]["p50_us"] > 0 and "iptables" in k["iptables"]


@pytest.mark.parametrize("argv", [["--services", "x"], ["--services", "0"],
                                  ["--services", "10", "--endpoints", "0"], [],
                                  ["--services", "10", "--rules", "x"], ["--rules", "/nonexistent"],
                                  ["--cluster", "demo"], ["--cluster", "demo", "--node", "nope"],
                                  ["--services", "10", "--repeats", "0"]])
def test_cli_rejects_bad_arguments(argv):
    with pytest.raises(UsageError):
        _cli(["bench", "rules", *argv])


def test_conntrack_measurement():
    r = bench.bench_conntrack(5000, repeats=2)
    assert r["entries"] == 5000 and r["inserts_per_second"] > 0 and r["lookups_per_second"] > 0
    if r["entry_size"] is not None:
        from kdp.fast.contract import CT_ENTRY_DTYPE
        assert r["entry_size"] == CT_ENTRY_DTYPE.itemsize and r["bytes_per_entry"] >= 32


def test_cli_pcap_first_packets(tmp_path, capsys):
    from kdp import bench_kernel, bench_rules as br
    from kdp.io import write_pcap
    rs = br.synthetic(15, 2)
    f = br.first_packets(rs, 50, seed=9)
    frames = bench_kernel._frames(f)
    write_pcap(str(tmp_path / "syns.pcap"), [(1.0 + i, fr) for i, fr in enumerate(frames + frames)])
    got = br.pcap_packets(str(tmp_path / "syns.pcap"))
    assert len(got) == len({tuple(x) for x in f[["src", "dst", "sport"]].tolist()})
    assert set(got["dst"].tolist()) <= set(f["dst"].tolist())
    assert _cli(["bench", "rules", "--services", "15", "--pcap", str(tmp_path / "syns.pcap"),
                 "--json", "--no-kernel", *FAST]) == 0
    r = json.loads(capsys.readouterr().out)["rulesets"][0]
    assert r["first_packets"] == len(got) and r["decisions"]["differ"] == 0
