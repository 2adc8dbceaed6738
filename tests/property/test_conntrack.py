# Conntrack on random clusters and flows: on every node, each entry's reply
# tuple is the inverse of its original after NAT and both tuples find it; once
# its timeout has passed (30 s UDP/ICMP, 60 s SYN_RECV, 120 s SYN_SENT...) a
# packet at a later time no longer finds it.
from hypothesis import given, strategies as st

from kdp.emulator import Emulator
from kdp.testing.invariants import conntrack_symmetric_and_expiring
from kdp.testing.strategies import clusters, flows


@given(cluster=clusters(max_services=3), data=st.data())
def test_conntrack_entries_are_symmetric_and_expire(cluster, data):
    emu = Emulator(cluster, seed=1)
    opened = data.draw(st.lists(flows(cluster), min_size=1, max_size=5,
                                unique_by=lambda f: (f.src, f.sport)), label="flows at t=0")
    for flow in opened:
        conntrack_symmetric_and_expiring(emu, flow, emu.trace(*flow, time=0.0))
    later = data.draw(st.sampled_from([1.0, 29.0, 31.0, 61.0, 121.0, 601.0]), label="later")
    last = data.draw(flows(cluster), label="flow later")
    conntrack_symmetric_and_expiring(emu, last, emu.trace(*last, time=later))   # checked at `later`
    if later > 600:         # only SYNs were answered: nothing from t=0 reached ESTABLISHED
        for ns in emu.topology.node_ns.values():
            old = [e for e in ns.netfilter.conntrack if e.created == 0.0]
            assert not old, f"{ns.name}: entries from t=0 alive at {later}: {old}"
