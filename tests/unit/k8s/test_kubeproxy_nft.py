# Tests for k8s.kubeproxy_nft: kube-proxy 1.33's nftables-mode ruleset (latest 1.33 layout)
# as `nft list ruleset` prints it, its parse/print round trip (demo and Hypothesis clusters),
# and the CLI around it (kubeProxy.mode, --proxy-mode, kdp rules, kdp trace).
# The real-nft checks (a throwaway netns) are in tests/oracle/test_nft_oracle.py.
from __future__ import annotations

import subprocess
from pathlib import Path
from ipaddress import IPv4Address as A, IPv4Network as N

import pytest
from hypothesis import given, settings

from kdp.k8s import demo_cluster, load_cluster_text
from kdp.k8s.kubeproxy import node_rules
from kdp.k8s.kubeproxy_nft import hash_and_truncate, node_ruleset, node_transaction
from kdp.k8s.model import (Cluster, ClusterConfig, Endpoint, KubeProxyConfig, Node, Service,
                           ServicePort)
from kdp.netfilter.nft import Concat, Meta, Payload, SetRef, Vmap, parse_ruleset
from kdp.testing import clusters

PCAPS = Path(__file__).resolve().parents[3] / "examples" / "pcaps"
NODES = [Node("n1", A("10.240.0.4"), N("10.244.0.0/24")),
         Node("n2", A("10.240.0.5"), N("10.244.1.0/24"))]


def ep(ip: str, node: str = "n1", port: int = 8080, **kw) -> Endpoint:
    return Endpoint(A(ip), port, "p80", node=node, **kw)


def svc(name: str, cip: str, *eps: Endpoint, node_port: int | None = None, **kw) -> Service:
    return Service("ns1", name, cluster_ip=A(cip), ports=[ServicePort(80, "TCP", "p80", 8080,
                                                                      node_port)],
                   endpoints=list(eps), **kw)


def rich_cluster(**kp) -> Cluster:
    """Every kind of chain: ClusterIP with affinity, no endpoints, iTP=Local without local
    endpoints, NodePort, LoadBalancer with eTP=Local and source ranges (node inside),
    externalIPs."""
    cfg = ClusterConfig(service_cidr=N("10.0.0.0/16"), kube_proxy=KubeProxyConfig(**kp))
    return Cluster(cfg, nodes=list(NODES), services=[
        svc("aff", "10.0.0.41", ep("10.244.0.2"), ep("10.244.1.2", "n2"),
            session_affinity="ClientIP", affinity_timeout=600),
        svc("empty", "10.0.0.42"),
        svc("itp", "10.0.0.43", ep("10.244.1.3", "n2"), internal_traffic_policy="Local"),
        svc("np", "10.0.0.44", ep("10.244.0.4"), type="NodePort", node_port=30044),
        svc("lb", "10.0.0.45", ep("10.244.0.5"), ep("10.244.1.5", "n2"), type="LoadBalancer",
            node_port=30045, load_balancer_ips=[A("20.1.2.3")],
            load_balancer_source_ranges=[N("10.240.0.0/16"), N("192.0.2.0/24")],
            external_traffic_policy="Local", external_ips=[A("20.9.9.9")]),
        svc("lbfar", "10.0.0.46", ep("10.244.1.6", "n2"), type="LoadBalancer", node_port=30046,
            load_balancer_ips=[A("20.1.2.4")], external_traffic_policy="Local"),
    ])


def chain(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    i = lines.index(f"\tchain {name} {{")
    out = []
    for ln in lines[i + 1:]:
        if ln == "\t}":
            return out
        out.append(ln.strip())
    raise AssertionError(f"chain {name} not closed")


def test_chain_name_hash_matches_kube_proxy():
    # kube-proxy's own test vectors (pkg/proxy/nftables/proxier_test.go)
    assert hash_and_truncate("ns1/svc1/tcp/p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert hash_and_truncate("ns1/svc1/tcp/p80__10.180.0.1/80").startswith("5OJB2KTY-")
    long = hash_and_truncate("a" * 300)
    assert len(long) == 240 and long.endswith("...")


def test_base_chains_are_the_latest_1_33_layout():
    text = node_ruleset(rich_cluster(), "n1")
    assert chain(text, "filter-prerouting-pre-dnat") == [
        "type filter hook prerouting priority dstnat - 10; policy accept;",
        "ct state new jump firewall-check"]
    assert chain(text, "filter-output-pre-dnat")[0] == (
        "type filter hook output priority -110; policy accept;")
    for c in ("input", "forward", "output"):
        assert chain(text, f"filter-{c}")[0] == (
            f"type filter hook {c} priority filter; policy accept;")
    assert chain(text, "filter-forward")[1:] == ["ct state new jump service-endpoints-check",
                                                 "ct state new jump cluster-ips-check"]
    assert chain(text, "filter-output")[1:] == ["ct state new jump service-endpoints-check",
                                                "ct state new jump cluster-ips-check"]
    assert chain(text, "nat-postrouting") == [
        "type nat hook postrouting priority srcnat; policy accept;", "jump masquerading"]
    assert "filter-output-post-dnat" not in text and "\tchain filter-prerouting {" not in text
    assert chain(text, "masquerading") == ["meta mark & 0x00004000 == 0x00000000 return",
                                           "meta mark set meta mark ^ 0x00004000",
                                           "masquerade fully-random"]
    assert chain(text, "mark-for-masquerade") == ["meta mark set meta mark | 0x00004000"]


def test_cluster_ips_check_rejects_unserved_ports_and_drops_unallocated_addresses():
    text = node_ruleset(rich_cluster(), "n1")
    assert chain(text, "cluster-ips-check") == [
        'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
        'ip daddr 10.0.0.0/16 drop comment "Drop traffic to unallocated ClusterIPs"']
    assert ("elements = { 10.0.0.41, 10.0.0.42,\n\t\t\t     10.0.0.43, 10.0.0.44,\n"
            "\t\t\t     10.0.0.45, 10.0.0.46 }") in text


def test_service_dispatch_and_no_endpoint_verdicts():
    text = node_ruleset(rich_cluster(), "n1")
    rs = parse_ruleset(text, "t")
    t = rs.table("ip", "kube-proxy")
    vmap = t.chains["services"].rules[0].statements[0]
    assert vmap == Vmap(Concat((Payload("ip", "daddr"), Meta("l4proto"), Payload("th", "dport"))),
                        SetRef("service-ips"))
    noeps = {e.key: (e.value, e.comment) for e in t.sets["no-endpoint-services"].elements}
    assert noeps[("10.0.0.42", "tcp", "80")] == ("goto reject-chain", "ns1/empty:p80")
    assert noeps[("10.0.0.43", "tcp", "80")] == ("drop", "ns1/itp:p80")     # iTP=Local, none here
    # eTP=Local with no endpoint on n1: external addresses drop, the NodePort too
    assert noeps[("20.1.2.4", "tcp", "80")] == ("drop", "ns1/lbfar:p80")
    np = {e.key: e.value for e in t.sets["no-endpoint-nodeports"].elements}
    assert np == {("tcp", "30046"): "drop"}
    ips = {e.key: e.value for e in t.sets["service-ips"].elements}
    svc_lb = "service-" + hash_and_truncate("ns1/lb/tcp/p80")
    assert ips[("10.0.0.45", "tcp", "80")] == f"goto {svc_lb}"
    assert ips[("20.1.2.3", "tcp", "80")] == ips[("20.9.9.9", "tcp", "80")] == (
        "goto external-" + hash_and_truncate("ns1/lb/tcp/p80"))
    assert ("10.0.0.42", "tcp", "80") not in ips


def test_nodeports_open_on_the_primary_node_ip_by_default():
    text = node_ruleset(rich_cluster(), "n1")
    assert "\tset nodeport-ips {" in text and "elements = { 10.240.0.4 }" in text
    assert ("ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
            in chain(text, "services"))
    every = node_ruleset(rich_cluster(node_port_addresses=(N("0.0.0.0/0"),)), "n1")
    assert "nodeport-ips" not in every
    assert chain(every, "services")[1] == (
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap "
        "@service-nodeports")
    assert chain(every, "nodeport-endpoints-check") == [
        "ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports"]


def test_per_service_chains():
    text = node_ruleset(rich_cluster(), "n1")
    base = hash_and_truncate("ns1/aff/tcp/p80")
    e1 = hash_and_truncate("ns1/aff/tcp/p80__10.244.0.2/8080")
    e2 = hash_and_truncate("ns1/aff/tcp/p80__10.244.1.2/8080")
    assert chain(text, f"service-{base}") == [
        f"ip daddr 10.0.0.41 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
        f"ip saddr @affinity-{e1} goto endpoint-{e1}",
        f"ip saddr @affinity-{e2} goto endpoint-{e2}",
        f"numgen random mod 2 vmap {{ 0 : goto endpoint-{e1}, 1 : goto endpoint-{e2} }}"]
    assert chain(text, f"endpoint-{e1}") == [
        "ip saddr 10.244.0.2 jump mark-for-masquerade", f"update @affinity-{e1} {{ ip saddr }}",
        "meta l4proto tcp dnat to 10.244.0.2:8080"]
    assert (f"\tset affinity-{e1} {{\n\t\ttype ipv4_addr\n\t\tsize 65535\n"
            "\t\tflags dynamic,timeout\n\t\ttimeout 10m\n\t}") in text
    lb = hash_and_truncate("ns1/lb/tcp/p80")
    assert chain(text, f"external-{lb}") == [
        f'ip saddr 10.244.0.0/16 goto service-{lb} comment "short-circuit pod traffic"',
        'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
        f'fib saddr type local goto service-{lb} comment "short-circuit local traffic"',
        f"goto local-{lb}"]
    # the node is inside a source range: its LB VIP may send too
    assert chain(text, f"firewall-{lb}") == [
        "ip saddr != { 10.240.0.0/16, 20.1.2.3, 192.0.2.0/24 } drop"]
    np = hash_and_truncate("ns1/np/tcp/p80")
    assert chain(text, f"external-{np}") == ["jump mark-for-masquerade", f"goto service-{np}"]


def test_local_detector_and_masquerade_all():
    azure = rich_cluster(detect_local_mode="InterfaceNamePrefix")
    base = hash_and_truncate("ns1/np/tcp/p80")
    assert chain(node_ruleset(azure, "n1"), f"service-{base}")[0] == (
        'ip daddr 10.0.0.44 tcp dport 80 iifname != "azv*" jump mark-for-masquerade')
    assert chain(node_ruleset(rich_cluster(masquerade_all=True), "n1"), f"service-{base}")[0] == (
        "ip daddr 10.0.0.44 tcp dport 80 jump mark-for-masquerade")


def test_transaction_and_listing_agree_and_round_trip_on_the_demo():
    c = demo_cluster()
    for node in c.nodes:
        text = node_ruleset(c, node.name)
        assert text.startswith('table ip kube-proxy {\n\tcomment "rules for kube-proxy"\n')
        assert parse_ruleset(text, "listing").render() == text
        tx = node_transaction(c, node.name)
        assert tx.startswith('add table ip kube-proxy { comment "rules for kube-proxy" ; }\n')
        assert parse_ruleset(tx, "tx").render() == text
    assert node_ruleset(demo_cluster(), c.nodes[0].name) == node_ruleset(c, c.nodes[0].name)


@settings(max_examples=25, deadline=None)
@given(cluster=clusters(max_nodes=2, max_pods=5, max_services=4))
def test_generated_rulesets_round_trip(cluster):
    for node in cluster.nodes:
        text = node_ruleset(cluster, node.name)
        assert parse_ruleset(text, "listing").render() == text


# --- configuration and CLI -----------------------------------------------------------------

CONFIG = ("apiVersion: kdp.dev/v1alpha1\nkind: ClusterConfig\nmetadata: {name: c}\n"
          "spec: {kubeProxy: {mode: nftables}}\n---\napiVersion: v1\nkind: Pod\n"
          "metadata: {name: p, namespace: default, labels: {app: s}}\n"
          "spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}\n---\n"
          "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\n"
          "spec: {selector: {app: s}, ports: [{port: 80}]}\n")


def test_cluster_config_accepts_nftables_mode():
    c = load_cluster_text(CONFIG, file="c.yaml")
    assert c.config.kube_proxy.mode == "nftables"
    assert load_cluster_text(CONFIG.replace("mode: nftables", "mode: iptables"),
                             file="c.yaml").config.kube_proxy.mode == "iptables"


@pytest.fixture
def kdp(capsys):
    """Run `kdp ARGS` in this process: (exit status, stdout, stderr)."""
    from kdp.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        rc = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)
    return run


@pytest.fixture(scope="module")
def node0() -> str:
    return demo_cluster().nodes[0].name


def test_kdp_rules_prints_the_nftables_table(kdp, node0, tmp_path):
    r = kdp("rules", "demo", "--node", node0, "--proxy-mode", "nftables")
    assert r.returncode == 0, r.stderr
    assert r.stdout == node_ruleset(demo_cluster(), node0)
    f = tmp_path / "c.yaml"
    f.write_text(CONFIG)
    r = kdp("rules", str(f), "--node", load_cluster_text(CONFIG).nodes[0].name)
    assert r.returncode == 0 and r.stdout.startswith("table ip kube-proxy {"), r.stderr
    r = kdp("rules", "demo", "--node", node0, "--proxy-mode", "nftables", "--format",
            "iptables-save")
    assert r.returncode == 2 and "--format nft" in r.stderr
    r = kdp("rules", "demo", "--node", node0, "--proxy-mode", "nftables", "--source", "kubelet")
    assert r.returncode == 0 and r.stdout.startswith("*mangle"), r.stderr


def test_iptables_mode_still_prints_iptables_save(kdp, node0):
    r = kdp("rules", "demo", "--node", node0, "--proxy-mode", "iptables")
    assert r.returncode == 0 and r.stdout == node_rules(demo_cluster(), node0)
    assert kdp("rules", "demo", "--node", node0).stdout == r.stdout
    r = kdp("rules", "demo", "--node", node0, "--format", "nft")
    assert r.returncode == 2 and "--format iptables-save" in r.stderr


def test_nftables_mode_forwards_packets_through_kdp_trace(kdp):
    r = kdp("trace", "demo", "--from", "pod/default/client", "--to", "svc/backend/service-a",
            "--proxy-mode", "nftables", "--detail", "full")
    assert r.returncode == 0 and r.stderr == ""
    assert "request: DELIVERED to pod/backend/service-a" in r.stdout
    assert "ip kube-proxy/services#1" in r.stdout and "vmap @service-ips" in r.stdout
    r = kdp("trace", "demo", "--from", "pod/default/client", "--to", "svc/backend/service-a",
            "--proxy-mode", "nftables")                       # --detail summary: the deciding rules
    assert "ip kube-proxy/services#1 -> goto service-KTHKV256-backend/service-a/tcp/http " \
        "[@service-ips 10.2.0.1 . tcp . 80]" in r.stdout
    assert "no match" not in r.stdout and "firewall-check" not in r.stdout


def test_rules_accepts_an_nft_list_ruleset_dump(kdp, tmp_path, node0):
    """--rules NODE=FILE with `nft list ruleset` text: kube-proxy's table from the file
    (here edited to always pick one endpoint), kubelet's iptables rules beside it."""
    text = node_ruleset(demo_cluster(), node0)
    chain = "endpoint-7VLKFEF6-backend/service-a/tcp/http__10.244.2.2/8080"
    lines = [f"\t\tgoto {chain}" if "numgen random mod 2" in ln and "service-a" in ln else ln
             for ln in text.splitlines()]
    dump = tmp_path / "n0.nft"
    dump.write_text("\n".join(lines) + "\n")
    for sport in ("40001", "40002", "40003"):
        r = kdp("trace", "demo", "--rules", f"{node0}={dump}", "--from", "pod/default/client",
                "--to", "svc/backend/service-a", "--sport", sport)
        assert r.returncode == 0 and "DELIVERED to pod/backend/service-a" in r.stdout
        assert "10.244.2.2:8080" in r.stdout
    bad = tmp_path / "bad.nft"
    bad.write_text("table ip x {\n chain c { type filter hook input priority 0; tcp flags syn drop }\n}\n")
    r = kdp("trace", "demo", "--rules", f"{node0}={bad}", "--from", "pod/default/client",
            "--to", "svc/backend/service-a")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert f"{bad}:2: chain c: unsupported expression `tcp flags`" in r.stderr
