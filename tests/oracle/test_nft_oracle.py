# The nftables text against the real nft (issue 15, first half): kube-proxy's nftables-mode
# transaction and kdp's `nft list ruleset` rendering are loaded with `nft -f` inside a
# throwaway network namespace this module creates and deletes (never the host's), and what
# `nft list ruleset` prints there must be byte-identical to kdp's rendering — for the demo,
# for a cluster with every kind of chain, and for Hypothesis clusters. Real nft output of
# hand-written rulesets is parsed and re-printed identically too.
from __future__ import annotations

import os
import shutil
import subprocess
from ipaddress import IPv4Address as A, IPv4Network as N
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from kdp.k8s import demo_cluster
from kdp.k8s.kubeproxy_nft import node_ruleset, node_transaction
from kdp.k8s.model import (Cluster, ClusterConfig, Endpoint, KubeProxyConfig, Node, Service,
                           ServicePort)
from kdp.netfilter.nft import parse_ruleset
from kdp.testing import clusters

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "netfilter" / "fixtures" / "nft"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed (apt-get install -y nftables iproute2)"
    return None


pytestmark = [pytest.mark.root,
              pytest.mark.skipif(_why_not() is not None, reason=f"real nft unavailable: {_why_not()}")]


def _run(*args: str, text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), input=text, capture_output=True, text=True)


@pytest.fixture(scope="module")
def netns():
    name = f"kdpnft-{os.getpid()}"
    made = _run("ip", "netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        yield name
    finally:
        _run("ip", "netns", "delete", name)


def listed(ns: str, text: str) -> str:
    """`nft list ruleset` in ``ns`` after `nft -f` of ``text`` into an empty ruleset."""
    flush = _run("ip", "netns", "exec", ns, "nft", "flush", "ruleset")
    assert flush.returncode == 0, flush.stderr
    load = _run("ip", "netns", "exec", ns, "nft", "-f", "-", text=text)
    assert load.returncode == 0, load.stderr
    out = _run("ip", "netns", "exec", ns, "nft", "list", "ruleset")
    assert out.returncode == 0, out.stderr
    return out.stdout


def agree(ns: str, cluster: Cluster, node: str) -> None:
    ours = node_ruleset(cluster, node)
    assert listed(ns, node_transaction(cluster, node)) == ours     # what kube-proxy writes
    assert listed(ns, ours) == ours                                # what kdp prints, reloaded


def test_demo_nodes(netns):
    c = demo_cluster()
    for node in c.nodes:
        agree(netns, c, node.name)


def _rich(**kp) -> Cluster:
    def ep(ip, node="n1"):
        return Endpoint(A(ip), 8080, "p80", node=node)

    def svc(name, cip, *eps, node_port=None, **kw):
        return Service("ns1", name, cluster_ip=A(cip),
                       ports=[ServicePort(80, "TCP", "p80", 8080, node_port)],
                       endpoints=list(eps), **kw)
    cfg = ClusterConfig(service_cidr=N("10.0.0.0/16"), kube_proxy=KubeProxyConfig(**kp))
    nodes = [Node("n1", A("10.240.0.4"), N("10.244.0.0/24")),
             Node("n2", A("10.240.0.5"), N("10.244.1.0/24"))]
    many = [ep(f"10.244.{i % 2}.{10 + i}", f"n{i % 2 + 1}") for i in range(40)]
    return Cluster(cfg, nodes=nodes, services=[
        svc("aff", "10.0.0.41", ep("10.244.0.2"), ep("10.244.1.2", "n2"),
            session_affinity="ClientIP", affinity_timeout=600),
        svc("empty", "10.0.0.42", type="NodePort", node_port=30042),
        svc("itp", "10.0.0.43", ep("10.244.1.3", "n2"), internal_traffic_policy="Local"),
        svc("lb", "10.0.0.45", ep("10.244.0.5"), ep("10.244.1.5", "n2"), type="LoadBalancer",
            node_port=30045, load_balancer_ips=[A("20.1.2.3")],
            load_balancer_source_ranges=[N("10.240.0.0/16"), N("192.0.2.0/24"),
                                         N("192.0.3.0/24")],
            external_traffic_policy="Local", external_ips=[A("20.9.9.9")]),
        svc("big", "10.0.0.47", *many, session_affinity="ClientIP"),
    ])


@pytest.mark.parametrize("kp", [{}, {"node_port_addresses": (N("0.0.0.0/0"),)},
                                {"masquerade_all": True},
                                {"detect_local_mode": "InterfaceNamePrefix"},
                                {"node_port_addresses": (N("10.0.0.0/8"), N("172.17.0.0/16"))}],
                         ids=["default", "all-addresses", "masquerade-all", "azv", "cidrs"])
def test_every_kind_of_chain(netns, kp):
    c = _rich(**kp)
    for node in ("n1", "n2"):
        agree(netns, c, node)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(cluster=clusters(max_nodes=2, max_pods=5, max_services=4))
def test_random_clusters(netns, cluster):
    for node in cluster.nodes:
        agree(netns, cluster, node.name)


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.input")))
def test_real_nft_output_parses_and_prints_identically(netns, name):
    real = listed(netns, (FIXTURES / f"{name}.input").read_text())
    assert parse_ruleset(real, "nft list ruleset").render() == real
