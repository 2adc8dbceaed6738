# `kdp oracle CLUSTER ...`: argument handling, listing, and one real run with
# the JSON report (the subcommand is registered through add_parser()).
import argparse
import json

import pytest

from kdp.oracle.cli import add_parser, main

from .conftest import needs_kernel

pytestmark = pytest.mark.oracle


def test_add_parser_registers_the_subcommand():
    p = argparse.ArgumentParser(prog="kdp")
    sub = p.add_subparsers(dest="command")
    add_parser(sub)
    a = p.parse_args(["oracle", "demo", "--scenario", "ttl-expiry", "--scenario", "missing-ip", "--no-rules",
                      "--json", "--keep-pcaps", "/tmp/x"])
    assert (a.cluster, a.scenario, a.rules, a.json, a.keep_pcaps) == \
        ("demo", ["ttl-expiry", "missing-ip"], False, True, "/tmp/x")
    assert p.parse_args(["oracle", "demo", "--rules"]).rules is True
    assert callable(a.func)


def test_list_needs_no_kernel(capsys):
    assert main(["oracle", "demo", "--list"]) == 0
    out = capsys.readouterr().out
    assert "cross-node-tcp-syn" in out and "missing-ip" in out and "[needs --rules]" in out


def test_unknown_scenario_is_a_usage_error(capsys):
    assert main(["oracle", "demo", "--scenario", "nope"]) == 2
    assert "unknown scenario" in capsys.readouterr().err


def test_service_scenario_without_rules_is_refused(capsys):
    assert main(["oracle", "demo", "--no-rules", "--scenario", "pod-to-clusterip-tcp"]) == 2
    assert "need --rules" in capsys.readouterr().err


@pytest.mark.root
@needs_kernel
def test_json_report_and_pcaps(capsys, tmp_path):
    rc = main(["oracle", "demo", "--scenario", "cross-node-icmp-echo", "--json", "--keep-pcaps", str(tmp_path)])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["summary"]["agreeing"] == 1
    sc = rep["scenarios"][0]
    assert sc["scenario"] == "cross-node-icmp-echo" and sc["frames"]["kdp"] == sc["frames"]["kernel"] > 0
    assert sc["fields"]["compared"] > 0 and "ip.id" in sc["fields"]["by_field"]
    pcaps = list(tmp_path.glob("cross-node-icmp-echo/*/*.pcap"))
    assert {p.parent.name for p in pcaps} == {"kdp", "kernel"}
    from kdp.io import read_pcap
    assert all(list(read_pcap(str(p))) for p in pcaps)


def test_proxy_mode_is_parsed_and_checked(capsys):
    p = argparse.ArgumentParser(prog="kdp")
    add_parser(p.add_subparsers(dest="command"))
    assert p.parse_args(["oracle", "demo", "--proxy-mode", "nftables"]).proxy_mode == "nftables"
    assert p.parse_args(["oracle", "demo"]).proxy_mode is None
    with pytest.raises(SystemExit):
        p.parse_args(["oracle", "demo", "--proxy-mode", "ipvs"])
    assert "invalid choice: 'ipvs'" in capsys.readouterr().err


@pytest.mark.root
@needs_kernel
def test_proxy_mode_nftables_loads_kube_proxy_table_with_nft(capsys, monkeypatch):
    from kdp.oracle import netns
    ran = []
    real = netns.netns_exec

    def recording(ns, argv, *args, **kw):
        ran.append(list(argv))
        return real(ns, argv, *args, **kw)
    monkeypatch.setattr(netns, "netns_exec", recording)
    rc = main(["oracle", "demo", "--proxy-mode", "nftables", "--scenario", "pod-to-clusterip-tcp",
               "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["summary"]["agreeing"] == 1
    assert ["nft", "-f", "-"] in ran              # kube-proxy's table, in the kernel's nodes too
