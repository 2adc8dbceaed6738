# `kdp bench rules --mode iptables,nftables`: kube-proxy's nftables table walked by the
# reference (kdp.bench_nft), its work per first packet flat in the number of Services
# where the iptables walk grows; the compiled program's numgen draws equal to the nft
# walk's decisions; the JSON of an iptables-only run unchanged; bad --mode values a
# one-line error; the kernel loading the table with nft -f (root). Small sizes.
from __future__ import annotations

import argparse
import json

import pytest

from kdp import bench_cli, bench_nft, bench_rules as br
from kdp.errors import UsageError

FAST = ["--budget", "0.2", "--repeats", "1", "--batch", "20000", "--packets", "300",
        "--no-kernel"]
NODE0 = "aks-nodepool1-71771131-vmss000000"


def _cli(argv: list[str]):
    p = argparse.ArgumentParser(prog="kdp")
    bench_cli.add_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(argv)
    return a.func(a)


def _reference(services: int, mode: str) -> dict:
    rs = br.synthetic(services, 2, mode)
    f = br.first_packets(rs, 100)
    return br.reference(rs, f, f[:5], f[:5], repeats=1, budget_s=0.05)[0]


def test_reference_walk_is_flat_in_nftables_and_linear_in_iptables():
    nft = {n: _reference(n, "nftables") for n in (10, 200)}
    ipt = {n: _reference(n, "iptables") for n in (10, 200)}
    # nftables: one verdict-map lookup dispatches every Service (a client that is the
    # endpoint it drew walks mark-for-masquerade too: a hundredth of a rule either way)
    assert abs(nft[10]["rules_per_packet"] - nft[200]["rules_per_packet"]) <= 0.05
    assert abs(nft[10]["chains_per_packet"] - nft[200]["chains_per_packet"]) <= 0.05
    assert nft[200]["rules_per_packet"] > 0
    assert nft[10]["set_lookups_per_packet"] == nft[200]["set_lookups_per_packet"] >= 2
    # iptables: KUBE-SERVICES is walked rule by rule
    assert ipt[200]["rules_per_packet"] > 5 * ipt[10]["rules_per_packet"]
    assert ipt[200]["rules_per_packet"] > 10 * nft[200]["rules_per_packet"]


def test_numgen_thresholds_pick_numgen_element():
    for n in range(1, 8):
        thr = bench_nft.numgen_thresholds(n)
        odd = {-(-((i + 1) << 32) // n) for i in range(n - 1)}
        odd = {t for t in odd if t % 2}
        for u in sorted({0, 1, 2, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000}
                        | {t + d for t in (-(-((i + 1) << 32) // n) for i in range(n))
                           for d in (-2, -1, 0, 1) if 0 <= t + d < 1 << 32}):
            want = (u * n) >> 32
            got = next(i for i, p in enumerate(thr) if p == 0xFFFFFFFF or (u >> 1) < p)
            assert got == want or u in odd, (n, u, got, want)


def test_cli_both_modes_json(capsys):
    assert _cli(["bench", "rules", "--mode", "iptables,nftables", "--services", "20", "--json",
                 *FAST]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["modes", "results", "rulesets", "machine"]
    assert doc["modes"] == ["iptables", "nftables"]
    assert [(r["mode"], r["services"]) for r in doc["rulesets"]] == [("iptables", 20),
                                                                     ("nftables", 20)]
    ipt, nft = doc["rulesets"]
    assert ipt["reference"]["set_lookups_per_packet"] == 0.0
    assert nft["reference"]["set_lookups_per_packet"] == 3.0
    assert nft["compile"]["service_ips_elements"] == nft["compile"]["compiled_rules"] == 20
    assert nft["decisions"]["compared"] > 0 and nft["decisions"]["differ"] == 0
    rows = {(r["mode"], r["impl"]) for r in doc["results"]}
    assert ("nftables", "reference") in rows and ("iptables", "reference") in rows
    assert all("set_lookups_per_first_packet" in r for r in doc["results"])


def test_iptables_run_prints_what_it_always_did(capsys):
    for argv in ([], ["--mode", "iptables"]):
        assert _cli(["bench", "rules", "--services", "20", "--json", *argv, *FAST]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert list(doc) == ["results", "rulesets", "machine"]
        r = doc["rulesets"][0]
        assert "mode" not in r and "set_lookups_per_packet" not in r["reference"]
        assert "mode" not in doc["results"][0]
        assert list(r)[:3] == ["ruleset", "services", "lines"]


def test_cluster_in_nftables_mode_compiled_agrees(capsys):
    assert _cli(["bench", "rules", "--cluster", "demo", "--node", NODE0, "--proxy-mode",
                 "nftables", *FAST]) == 0
    out = capsys.readouterr().out
    assert "service-ips elements" in out and "set/verdict-map lookups" in out
    assert "compared with the reference walk, 0 differ" in out
    assert "decisions: 0 compared" not in out


@pytest.mark.parametrize("argv,msg", [
    (["--services", "10", "--mode", "foo"], "--mode foo: give iptables, nftables"),
    (["--services", "10", "--mode", "iptables,ipvs"], "--mode iptables,ipvs"),
    (["--services", "10", "--mode", "nftables", "--proxy-mode", "iptables"], "give one"),
    (["--rules", "x.rules", "--mode", "nftables"], "iptables mode only"),
])
def test_bad_modes_are_one_line_errors(argv, msg):
    with pytest.raises(UsageError) as e:
        _cli(["bench", "rules", *argv])
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_bad_mode_exit_status(capsys):
    assert bench_cli.main(["rules", "--services", "10", "--mode", "foo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdp: --mode foo")


def test_plot_both_modes(tmp_path):
    pytest.importorskip("matplotlib")
    from kdp import bench_report

    def ruleset(mode, n, rules, lookups):
        d = {"p50_us": 100.0 + n}
        return {"mode": mode, "services": n,
                "reference": d | {"rules_per_packet": rules, "set_lookups_per_packet": lookups},
                "compiled": {"p50_us": 0.02}, "kernel": {"uniform": {"p50_us": 9.0},
                                                         "no_rules": {"p50_us": 4.0}}}
    doc = {"modes": ["iptables", "nftables"], "machine": bench_report.metadata(1),
           "rulesets": [ruleset("iptables", 10, 11.0, 0.0), ruleset("iptables", 200, 107.0, 0.0),
                        ruleset("nftables", 10, 8.0, 3.0), ruleset("nftables", 200, 8.0, 3.0)]}
    svg = tmp_path / "modes.svg"
    bench_report.plot(doc, str(svg))
    text = svg.read_text()
    for label in ("reference walk, nftables", "kernel, iptables", "set/map lookups, nftables",
                  "rules evaluated, iptables"):
        assert label in text


@pytest.mark.root
def test_kernel_loads_the_nft_table_and_forwards():
    from kdp import bench_kernel
    from kdp.bench_kernel import KernelBench
    why = bench_kernel.unavailable(nft=True)
    if why:
        pytest.skip(why)
    rs = br.synthetic(20, 2, "nftables")
    with KernelBench() as kb:            # the batches load the one transaction's table
        kb.load_nft(rs.nft_tx)
        assert kb.listing() == rs.nft.render()
    f = br.first_packets(rs, 400)
    k = bench_kernel.measure(rs.text, f, f[:200], f[:200], nft_tx=rs.nft_tx)
    assert k["uniform"]["delivered"] == 400 and k["nft_batches"] >= 2
    assert k["uniform"]["p50_us"] > 0 and k["nft"].startswith("nftables")


def test_kernel_load_budget_foresees_the_square():
    assert bench_cli._kernel_load_skip(None, 100_000, 900) is None
    assert bench_cli._kernel_load_skip((10_000, 5.0), 30_000, 900) is None       # ~45 s
    why = bench_cli._kernel_load_skip((10_000, 60.0), 100_000, 900)               # ~6,000 s
    assert why and "6,000 s" in why and "--kernel-load-budget 900" in why
