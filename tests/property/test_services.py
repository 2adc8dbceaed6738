# Services on random clusters: a delivered connection reaches an endpoint
# kube-proxy may choose (ready, traffic policies honoured), every such
# endpoint is reachable, the answer comes from the service address, and the
# source arrives masqueraded exactly where kube-proxy says. Every flow kind:
# ClusterIP, NodePort on node IPs, load balancer and external IPs, from pods,
# nodes and outside hosts. kube-proxy's known exception kubernetes#74383 is
# encoded (checked as upstream behaves), not skipped by the test.
from dataclasses import replace

import pytest
from hypothesis import given, strategies as st

from kdp.emulator import Emulator
from kdp.testing import (INVARIANTS, Flow, asymmetric_local_node_port, check_flow, clusters,
                         delivered_to_ready_endpoint, endpoint_reachable, flow_service, flows,
                         known_exceptions, masquerade_where_kube_proxy_says,
                         service_reply_from_service_address)

from .clusters import AZURE, KUBENET, LOCAL_NODE_PORT, LOCAL_NODE_PORT_TCP

SERVICE_INVARIANTS = (delivered_to_ready_endpoint, endpoint_reachable, service_reply_from_service_address,
                      masquerade_where_kube_proxy_says)


def distinct(flow_strategy, n: int = 6):
    """Flows that open new connections: no (source, source port) twice."""
    return st.lists(flow_strategy, min_size=1, max_size=n, unique_by=lambda f: (f.src, f.sport))


@pytest.mark.parametrize("plugin", ["kubenet", "azure"])
@given(data=st.data())
def test_service_flows(plugin, data):
    cluster = data.draw(clusters(plugins=(plugin,), min_services=1), label="cluster")
    emu = Emulator(cluster, seed=data.draw(st.integers(0, 3), label="seed"))
    for flow in data.draw(distinct(flows(cluster, targets=("service",))), label="flows"):
        check_flow(emu, flow, invariants=SERVICE_INVARIANTS)


@pytest.mark.parametrize("plugin", ["kubenet", "azure"])
@given(data=st.data())
def test_service_flows_in_nftables_mode(plugin, data):
    """The same invariants with kube-proxy in nftables mode (kdp.netfilter.nft.engine):
    any flow kind, each checked as in iptables mode (the endpoint probes steer numgen)."""
    cluster = data.draw(clusters(plugins=(plugin,), min_services=1), label="cluster")
    cluster.config.kube_proxy.mode = "nftables"
    emu = Emulator(cluster, seed=data.draw(st.integers(0, 3), label="seed"))
    for flow in data.draw(distinct(flows(cluster)), label="flows"):
        check_flow(emu, flow, invariants=SERVICE_INVARIANTS)


@pytest.mark.parametrize("plugin", ["kubenet", "azure"])
@given(data=st.data())
def test_local_node_ports_from_anywhere(plugin, data):
    # the narrowest corner (where kubernetes#74383 lives), reached without filtering
    cluster = data.draw(clusters(plugins=(plugin,), service_types=("NodePort",), min_services=1,
                                 external_traffic_policies=("Local",)), label="cluster")
    emu = Emulator(cluster, seed=1)
    narrowed = flows(cluster, service_kinds=("node-port",), traffic_policies=("Local",))
    for flow in data.draw(distinct(narrowed, 4), label="flows"):
        sf = flow_service(cluster, flow)
        assert sf.kind == "node-port" and sf.policy == "Local", flow
        check_flow(emu, flow, invariants=SERVICE_INVARIANTS)


@pytest.mark.parametrize("plugin", ["kubenet", "azure"])
@given(data=st.data())
def test_masquerade_on_any_flow(plugin, data):
    cluster = data.draw(clusters(plugins=(plugin,)), label="cluster")
    emu = Emulator(cluster, seed=1)
    for flow in data.draw(distinct(flows(cluster)), label="flows"):
        masquerade_where_kube_proxy_says(emu, flow)


# --- kubernetes/kubernetes#74383, encoded ------------------------------------------------------

ASYMMETRIC = KUBENET + LOCAL_NODE_PORT + LOCAL_NODE_PORT_TCP
UDP_74383 = Flow("pod/default/client", "10.240.0.5", "udp", 40000, 30053)    # n2's nodePort; web-1 on n1
TCP_74383 = Flow("pod/default/client", "10.240.0.5", "tcp", 40001, 30080)    # n2's nodePort; api-1 on n1


@pytest.mark.parametrize("flow", [UDP_74383, TCP_74383], ids=["udp", "tcp"])
def test_the_docs_invariants_hold_on_kubernetes_74383(kdp_emulator, flow):
    # a pod calls another node's Local nodePort: DNAT to an endpoint elsewhere without SNAT, and
    # the answer bypasses the translating node (here the endpoints share the client's node: the
    # answer comes straight from the endpoint's address). Real kube-proxy does this; the
    # invariants expect it, not a violation.
    emu = kdp_emulator(ASYMMETRIC, seed=1)
    out = emu.trace(*flow)
    assert out.delivered_to in ("pod/default/web-1", "pod/default/api-1"), (out.disposition, out.reason)
    assert [k.name for k in known_exceptions(emu, flow, out)] == ["asymmetric-local-node-port"]
    check_flow(emu, flow, out)                       # every invariant of INVARIANTS
    with pytest.warns(DeprecationWarning):           # and the 0.1 call of the docs' old example
        svc = flow_service(emu.cluster, flow)
        service_reply_from_service_address(emu, out, svc.service, svc.port)


def test_kubernetes_74383_answer_is_checked_as_upstream_gives_it(kdp_emulator):
    emu = kdp_emulator(ASYMMETRIC, seed=1)
    out = emu.trace(*UDP_74383)
    endpoint = emu.cluster.pod("default", "web-1").ip
    assert out.reply.packet.ip.src == endpoint           # the answer comes straight from web-1
    r = out.reply.packet                                  # doctored: as if it came from n1
    out.reply.packet = replace(r, ip=replace(r.ip, src=emu.cluster.node("n1").ip))
    with pytest.raises(AssertionError, match=rf"kubernetes#74383: .* must come from the endpoint "
                                             rf"{endpoint}:80, but it came from 10.240.0.4:80"):
        service_reply_from_service_address(emu, UDP_74383, out)


def test_kubernetes_74383_is_recognised_only_where_it_applies(kdp_emulator):
    emu = kdp_emulator(ASYMMETRIC, seed=1)
    same_node = Flow("pod/default/client", "10.240.0.4", "udp", 40010, 30053)   # n1's own nodePort
    from_node = Flow("node/n1", "10.240.0.5", "udp", 40011, 30053)              # a node, not a pod
    hairpin = Flow("pod/default/web-1", "10.240.0.5", "udp", 40012, 30053)      # masqueraded to itself
    for flow in (same_node, from_node, hairpin):
        out = emu.trace(*flow)
        assert not asymmetric_local_node_port(emu, flow, out), flow
        check_flow(emu, flow, out)
    azure = kdp_emulator(AZURE, seed=1)              # Azure CNI's interface detector: local endpoints only
    flow = Flow("pod/default/client", "node/n1", "tcp", 40013, 30080)
    assert not asymmetric_local_node_port(azure, flow, azure.trace(*flow))


# Azure CNI: kube-proxy detects pod traffic by interface (`-i azv+`, as AKS configures it);
# these two once failed when kdp used the pod CIDR, where no Azure CNI pod lives.
def test_azure_pod_to_cluster_ip_keeps_the_pod_address(kdp_emulator):
    emu = kdp_emulator(AZURE, seed=1)
    masquerade_where_kube_proxy_says(emu, Flow("pod/default/client", "svc/default/web", "tcp", 40000, 80))


def test_azure_pod_to_local_policy_node_port_reaches_the_service(kdp_emulator):
    emu = kdp_emulator(AZURE, seed=1)
    out = emu.trace("pod/default/client", "node/n1", "tcp", 40001, 30080)    # web runs on n2
    assert out.disposition == "delivered", (out.disposition, out.reason)
    check_flow(emu, Flow("pod/default/client", "node/n1", "tcp", 40001, 30080), out, INVARIANTS)
