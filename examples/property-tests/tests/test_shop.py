# The shop cluster's network, checked with kdp.testing: every flow Hypothesis draws keeps
# kdp's invariants, my manifests' Services are covered, and my own rule holds (pod-to-pod
# traffic never leaves through the edge router); every client reaches every endpoint of
# every Service.
import pytest
from hypothesis import given

from kdp.testing import (INVARIANTS, InvariantViolation, Where, check_flow, endpoint_reachable, every_flow,
                         flows, service_covered)
from shop import CLUSTER, RULES


def pod_traffic_stays_inside(emu, flow, outcome=None):
    """My rule: packets from a pod to a pod never pass the edge router (the VNet's gateway
    to the outside): the nodes route them among themselves. (ARP broadcasts on the VNet do
    reach the router; they are not the flow's packets.)"""
    outcome = outcome if outcome is not None else emu.trace(*flow)
    if flow.src.startswith("pod/") and flow.dst.startswith("pod/"):
        for i, (dev, direction, pkt) in enumerate(outcome.frames):
            ns = dev.namespace
            if ns.name == "edge" and pkt.ip is not None:
                raise InvariantViolation("pod traffic stays inside", f"{pkt.summary()} passed the edge router",
                                         Where(ns.node, ns.name, dev.name, f"captured {direction}", frame=i),
                                         flow, emu)
    return outcome


MY_INVARIANTS = INVARIANTS + (service_covered, pod_traffic_stays_inside)


@given(flow=flows(CLUSTER))
def test_any_flow_keeps_the_network_model(kdp_emulator, flow):
    emu = kdp_emulator(CLUSTER, rules=RULES)
    check_flow(emu, flow, invariants=MY_INVARIANTS)


@given(flow=flows(CLUSTER, sources=("pod", "node"), targets=("svc/shop/backend",)))
def test_the_backend_from_anywhere_in_the_cluster(kdp_emulator, flow):
    emu = kdp_emulator(CLUSTER, rules=RULES)
    check_flow(emu, flow, invariants=MY_INVARIANTS)


SERVICES = [f"svc/{s.namespace}/{s.name}" for s in CLUSTER.services if s.cluster_ip is not None]


@pytest.mark.parametrize("service", SERVICES)
def test_every_client_reaches_every_endpoint(kdp_emulator, service):
    emu = kdp_emulator(CLUSTER, rules=RULES)
    for flow in every_flow(CLUSTER, targets=(service,)):      # each pod, node (and outside host)
        check_flow(emu, flow, invariants=(service_covered, endpoint_reachable))
