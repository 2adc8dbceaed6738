# The Kubernetes network model on random clusters (kubenet and azure): every
# pod reaches every pod and every node reaches every pod without NAT, on every
# node pair, and a pod's own idea of its address is what everybody else sees;
# a pod or a node pinging its own address is answered over lo.
import pytest
from hypothesis import given, strategies as st

from kdp.emulator import Emulator
from kdp.testing import (Flow, clusters, flows, node_to_pod_without_nat, pod_sees_own_address,
                         pod_to_pod_without_nat)

from .clusters import KUBENET

# services do not matter here; few of them keep the examples fast
model_clusters = clusters(max_nodes=3, max_pods=5, max_services=1)


def spec(pod) -> str:
    return f"pod/{pod.namespace}/{pod.name}"


def one_pod_per_node(cluster, data) -> dict:
    """node name -> one of its pods (drawn), for nodes that have pods."""
    by_node: dict = {}
    for p in cluster.pods:
        if not p.host_network:
            by_node.setdefault(p.node, []).append(p)
    return {n: data.draw(st.sampled_from(pods), label=f"pod on {n}") for n, pods in sorted(by_node.items())}


@given(cluster=model_clusters, data=st.data())
def test_pod_to_pod_without_nat_on_every_node_pair(cluster, data):
    emu = Emulator(cluster, seed=data.draw(st.integers(0, 3), label="seed"))
    pods = one_pod_per_node(cluster, data)
    for a in pods.values():
        for b in pods.values():         # a pod to itself too (over lo)
            flow = data.draw(flows(cluster, sources=(spec(a),), targets=(spec(b),)), label="flow")
            pod_to_pod_without_nat(emu, flow)


@given(cluster=model_clusters, data=st.data())
def test_node_to_pod_without_nat_on_every_node_pair(cluster, data):
    emu = Emulator(cluster, seed=1)
    pods = one_pod_per_node(cluster, data)
    for node in cluster.nodes:
        for pod in pods.values():
            flow = data.draw(flows(cluster, sources=(f"node/{node.name}",), targets=(spec(pod),)),
                             label="flow")
            node_to_pod_without_nat(emu, flow)


@given(cluster=model_clusters, data=st.data())
def test_pod_sees_its_own_address(cluster, data):
    emu = Emulator(cluster, seed=2)
    pod = data.draw(st.sampled_from([p for p in cluster.pods if not p.host_network]), label="pod")
    for flow in data.draw(st.lists(flows(cluster, sources=(spec(pod),), targets=("pod",)), min_size=1,
                                   max_size=4, unique_by=lambda f: f.sport), label="flows"):
        pod_sees_own_address(emu, flow)


def test_a_pod_without_ports_pings_itself_without_nat(kdp_emulator):
    emu = kdp_emulator(KUBENET, seed=1)          # `client` declares no port: ICMP echo
    out = pod_to_pod_without_nat(emu, Flow("pod/default/client", "pod/default/client", "icmp", 4001, 0))
    assert out.reply is not None and out.reply.delivered_to == "pod/default/client"


# (fixed: Linux answers an echo request to the host's own address over lo, whether or not a
# ping socket of its own is open; kdp once consumed it as "echo request to own client socket")
@pytest.mark.parametrize("who", ["pod/default/client", "node/n1"])
def test_pinging_your_own_address_is_answered_over_lo(kdp_emulator, who):
    emu = kdp_emulator(KUBENET, seed=1)
    out = emu.trace(who, who, "icmp", 4000)
    assert out.disposition == "delivered" and out.delivered_to == who, (out.disposition, out.reason)
    assert out.reply is not None, [h.detail for h in out.hops if h.component == "app"]
    assert (out.reply.disposition, out.reply.delivered_to) == ("delivered", who)
    assert out.reply.packet.l4.type == 0 and out.reply.packet.ip.src == out.packet.ip.dst   # echo reply
    assert {d.name for d, _dir, _p in out.frames} <= {"lo"}                                 # never left
