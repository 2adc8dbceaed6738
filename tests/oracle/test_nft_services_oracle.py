# The kernel oracle in kube-proxy's nftables mode: the cluster of
# tests/scenarios/svc_cluster.py with kubeProxy.mode nftables, built in throwaway network
# namespaces with kdp's very rules (kubelet's and ip-masq-agent's with iptables-restore,
# kube-proxy's `ip kube-proxy` table with `nft -f`); every service scenario of the full
# catalogue must agree with the kernel frame by frame, as in iptables mode
# (test_services_oracle.py). kdp is forced to the kernel's numgen choices (oracle.force).
import shutil

import pytest

from kdp.oracle import netns as N
from kdp.oracle.runner import Oracle

from ..scenarios.svc_cluster import svc_cluster
from .conftest import needs_kernel, oracle_unavailable
from .test_services_oracle import SVC_EXPECTED, agrees, expected_params, run_all

pytestmark = [pytest.mark.root, pytest.mark.oracle, needs_kernel]


@pytest.fixture(scope="module")
def nft_run():
    if oracle_unavailable():
        pytest.skip(oracle_unavailable())
    if shutil.which("nft") is None:
        pytest.skip("nft (package nftables) is not installed")
    from kdp.oracle.scenarios import catalogue
    N.cleanup_stale()
    cluster = svc_cluster()
    cluster.config.kube_proxy.mode = "nftables"
    with Oracle(cluster, seed=0, prefix=f"{N.default_prefix()}n-") as o:
        yield run_all(o, catalogue(o.cluster, 0, full=True))


@pytest.mark.parametrize("name", expected_params(SVC_EXPECTED))
def test_nftables_mode_scenario_agrees_with_the_kernel(nft_run, name):
    problems = agrees(nft_run, name)
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)
