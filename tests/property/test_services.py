# Services on random clusters: a delivered connection reaches an endpoint
# kube-proxy may choose (ready, traffic policies honoured), its answer comes
# from the service address, and the source arrives masqueraded exactly where
# kube-proxy says. Every flow kind: ClusterIP, NodePort on node IPs, load
# balancer and external IPs, from pods, nodes and outside hosts.
import pytest
from hypothesis import given, strategies as st

from kdp.emulator import Emulator
from kdp.testing.invariants import (InvariantViolation, delivered_to_ready_endpoint, from_pods,
                                    masquerade_where_kube_proxy_says, service_reply_from_service_address)
from kdp.testing.strategies import Flow, clusters, flows, service_port, service_targets

from .clusters import AZURE, KUBENET, LOCAL_NODE_PORT


def upstream_asymmetric(emu, flow: Flow, t, svc) -> bool:
    """kubernetes/kubernetes#74383, which kdp reproduces as kube-proxy has it: a
    pod calling the nodePort of *another* node with externalTrafficPolicy Local
    is "pod traffic" there for the ClusterCIDR detector (kubenet), so it is
    DNATed to any endpoint without SNAT, and the answer of an endpoint elsewhere
    bypasses that node. (Azure CNI's interface detector does not see it as pod
    traffic there: local endpoints only, symmetric.)"""
    if not flow.src.startswith("pod/") or t.kind != "node-port" or svc.external_traffic_policy != "Local":
        return False
    pod = emu.cluster.pod(*flow.src.split("/")[1:])
    target = next(n.name for n in emu.cluster.nodes if str(n.ip) == t.dst)
    return target != pod.node and from_pods(emu, pod.ip, target)


def check_service_flow(emu, flow: Flow, out) -> None:
    """The service invariants, when the flow targets a service address."""
    for t in service_targets(emu.cluster):
        if (t.dst, t.port, t.proto) == (flow.dst, flow.dport, flow.proto):
            svc = emu.cluster.service(*t.svc.split("/")[1:])
            sp = service_port(svc, t.port_name if t.port_name is not None else t.port)
            delivered_to_ready_endpoint(emu, out, svc, sp)
            if not upstream_asymmetric(emu, flow, t, svc):
                service_reply_from_service_address(emu, out, svc, sp)
            return


def distinct(flow_strategy, n: int = 6):
    """Flows that open new connections: no (source, source port) twice."""
    return st.lists(flow_strategy, min_size=1, max_size=n, unique_by=lambda f: (f.src, f.sport))


@pytest.mark.parametrize("plugin", ["kubenet", "azure"])
@given(data=st.data())
def test_service_flows(plugin, data):
    cluster = data.draw(clusters(plugins=(plugin,)), label="cluster")
    emu = Emulator(cluster, seed=data.draw(st.integers(0, 3), label="seed"))
    for flow in data.draw(distinct(flows(cluster, targets=("service",))), label="flows"):
        out = emu.trace(*flow)
        check_service_flow(emu, flow, out)
        masquerade_where_kube_proxy_says(emu, flow, out)


@pytest.mark.parametrize("plugin", ["kubenet", "azure"])
@given(data=st.data())
def test_masquerade_on_any_flow(plugin, data):
    cluster = data.draw(clusters(plugins=(plugin,)), label="cluster")
    emu = Emulator(cluster, seed=1)
    for flow in data.draw(distinct(flows(cluster)), label="flows"):
        masquerade_where_kube_proxy_says(emu, flow, emu.trace(*flow))


def test_pod_to_another_nodes_local_node_port_is_asymmetric_as_upstream(kdp_emulator):
    # kubernetes/kubernetes#74383: client on n1 -> n2's nodePort -> endpoint web-1 on n1, no
    # SNAT; web-1 answers the client directly over cbr0, not from n2's address
    emu = kdp_emulator(KUBENET + LOCAL_NODE_PORT, seed=1)
    out = emu.trace("pod/default/client", "node/n2", "udp", 40000, 30053)
    assert out.delivered_to == "pod/default/web-1"
    svc = emu.cluster.service("default", "web-local")
    with pytest.raises(InvariantViolation, match="comes from 10.244.0.3:80, expected the service "
                                                 "address 10.240.0.5:30053"):
        service_reply_from_service_address(emu, out, svc, svc.ports[0])


# Azure CNI: kube-proxy detects pod traffic by interface (`-i azv+`, as AKS configures it);
# these two once failed when kdp used the pod CIDR, where no Azure CNI pod lives.
def test_azure_pod_to_cluster_ip_keeps_the_pod_address(kdp_emulator):
    emu = kdp_emulator(AZURE, seed=1)
    flow = Flow("pod/default/client", "svc/default/web", "tcp", 40000, 80)
    masquerade_where_kube_proxy_says(emu, flow, emu.trace(*flow))


def test_azure_pod_to_local_policy_node_port_reaches_the_service(kdp_emulator):
    emu = kdp_emulator(AZURE, seed=1)
    out = emu.trace("pod/default/client", "node/n1", "tcp", 40001, 30080)    # web runs on n2
    assert out.disposition == "delivered", (out.disposition, out.reason)
