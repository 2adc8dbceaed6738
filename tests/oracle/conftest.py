# The kernel oracle's fixtures: small clusters built from the model, and one
# oracle session per cluster (session-scoped: building real namespaces and
# running every scenario takes seconds, so each cluster runs once).
#
#   underlay 10.240.0.0/16 (bridge in netns kdpo<pid>-ul) -- edge 10.240.0.1 -- ext
#     |                                  |
#   n0 10.240.0.4 cbr0 10.244.0.1      n1 10.240.0.5 cbr0 10.244.1.1
#     |-- a 10.244.0.2 (80/TCP)          |-- c 10.244.1.2 (80/TCP, 9090/TCP sidecar)
#     |-- b 10.244.0.3 (80/TCP, 53/UDP)
#   (azure CNI: pods take 10.240.0.10/.11/.120 from the VNet, host veths azv*)
import pytest

from tests.scenarios.conftest import small_cluster  # noqa: F401  (the same two-node cluster)


def oracle_unavailable() -> str | None:
    from kdp.oracle.netns import available
    return available()


needs_kernel = pytest.mark.skipif(oracle_unavailable() is not None,
                                  reason=f"kernel oracle unavailable: {oracle_unavailable()}")


def _run(cluster, seed=0, only=None):
    from kdp.oracle.report import report_dict
    from kdp.oracle.runner import run_oracle
    from kdp.oracle.scenarios import catalogue
    scenarios = [s for s in catalogue(cluster, seed) if only is None or s.name in only]
    results, info = run_oracle(cluster, scenarios, seed=seed)
    return {r.scenario.name: r for r in results}, report_dict(results, info)


@pytest.fixture(scope="session")
def demo_run():
    if oracle_unavailable():
        pytest.skip(oracle_unavailable())
    from kdp.k8s import demo_cluster
    return _run(demo_cluster())


@pytest.fixture(scope="session")
def kubenet_run():
    if oracle_unavailable():
        pytest.skip(oracle_unavailable())
    return _run(small_cluster("kubenet"), seed=1)


@pytest.fixture(scope="session")
def azure_run():
    if oracle_unavailable():
        pytest.skip(oracle_unavailable())
    return _run(small_cluster("azure"), seed=1)


@pytest.fixture(scope="session")
def promisc_run():
    if oracle_unavailable():
        pytest.skip(oracle_unavailable())
    return _run(small_cluster("kubenet", hairpin="promiscuous-bridge"), seed=1,
                only={"same-node-icmp-echo", "same-node-tcp-closed"})
