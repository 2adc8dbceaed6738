# The kernel oracle on SCTP Services (issue 13 item 1): the cluster of
# tests/scenarios/test_sctp.py plus a Service without endpoints; an INIT to the
# ClusterIP (DNAT across nodes, the endpoint's answer un-NATed back), to the
# NodePort from outside (masqueraded) and to the endpoint-less Service (REJECT)
# agree with the kernel frame by frame, CRC32c and conntrack included. Skips where
# the kernel has no SCTP conntrack.
import os

import pytest

from kdp.k8s import load_cluster_text
from kdp.oracle.report import report_dict
from kdp.oracle.runner import run_oracle
from kdp.oracle.scenarios import catalogue

from ..scenarios.test_sctp import YAML
from .conftest import needs_kernel

pytestmark = [pytest.mark.root, pytest.mark.oracle, needs_kernel,
              pytest.mark.skipif(not os.path.exists("/proc/sys/net/netfilter/"
                                                    "nf_conntrack_sctp_timeout_established"),
                                 reason="this kernel has no SCTP conntrack (nf_conntrack_proto_sctp)")]

EMPTY = """
---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: default}
spec: {selector: {app: nobody}, ports: [{port: 7000, protocol: SCTP}]}
"""
NAMES = ("sctp-clusterip-with-endpoints", "sctp-clusterip-no-endpoints", "sctp-nodeport")


@pytest.fixture(scope="module")
def sctp_run():
    cluster = load_cluster_text(YAML + EMPTY, file="sctp.yaml")
    scenarios = [s for s in catalogue(cluster, 1) if s.name in NAMES]
    results, info = run_oracle(cluster, scenarios, seed=1)
    return {r.scenario.name: r for r in results}, report_dict(results, info)


def test_sctp_scenarios_agree_with_the_kernel(sctp_run):
    results, rep = sctp_run
    assert set(results) == set(NAMES)
    bad = {sc["scenario"]: sc for sc in rep["scenarios"] if not sc["agree"]}
    assert not bad, bad
    for sc in rep["scenarios"]:
        assert sc["frames"]["kernel"] == sc["frames"]["kdp"] > 4, sc["scenario"]


def test_sctp_conntrack_agrees(sctp_run):
    results, _rep = sctp_run
    lines = [ln for r in results.values() for node in r.kernel_conntrack.values() for ln in node]
    assert any(ln.startswith("sctp ") for ln in lines), lines
