# The network model on clusters Hypothesis generates (kubenet and Azure CNI, 1-3 nodes,
# random pods and Services): pods talk without NAT, and service connections keep every
# invariant kdp ships.
from hypothesis import given, strategies as st

from kdp.testing import check_flow, clusters, flows, pod_to_pod_without_nat, ttl_and_checksums_right


@given(cluster=clusters(), data=st.data())
def test_pods_talk_without_nat(kdp_emulator, cluster, data):
    emu = kdp_emulator(cluster, seed=1)
    flow = data.draw(flows(cluster, sources=("pod",), targets=("pod",)), label="flow")
    out = emu.trace(*flow)
    pod_to_pod_without_nat(emu, flow, out)
    ttl_and_checksums_right(emu, flow, out)


@given(cluster=clusters(min_services=1), data=st.data())
def test_service_connections(kdp_emulator, cluster, data):
    emu = kdp_emulator(cluster, seed=1)
    new_connections = st.lists(flows(cluster, targets=("service",)), min_size=1, max_size=5,
                               unique_by=lambda f: (f.src, f.sport))
    for flow in data.draw(new_connections, label="flows"):
        check_flow(emu, flow)                  # every invariant of kdp.testing.INVARIANTS
