# The invariants are not vacuous: each one, given a cluster configured to
# break it or an outcome doctored to break it, raises InvariantViolation and
# says where. (The properties in the other files show they hold for kdp.)
from dataclasses import replace

import pytest

from kdp import wire
from kdp.testing.invariants import (InvariantViolation, conntrack_symmetric_and_expiring,
                                    delivered_to_ready_endpoint, masquerade_where_kube_proxy_says,
                                    no_frame_lost_or_duplicated, pod_sees_own_address,
                                    pod_to_pod_without_nat, same_seed_same_output,
                                    service_reply_from_service_address, ttl_and_checksums_right)
from kdp.testing.strategies import Flow

from .clusters import KUBENET

# ip-masq-agent told that nothing is exempt: pod-to-pod across nodes is SNATed
MASQ_EVERYTHING = KUBENET.replace("nodes: [{name: n1}, {name: n2}]}",
                                  "nodes: [{name: n1}, {name: n2}], nonMasqueradeCIDRs: []}") + """
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec: {nodeName: n2, containers: [{name: web, ports: [{containerPort: 80, protocol: UDP}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{port: 80, protocol: UDP}]}
"""


@pytest.fixture
def emu(kdp_emulator):
    return kdp_emulator(MASQ_EVERYTHING, seed=1)


def violation(fn, *args, **kw) -> str:
    with pytest.raises(InvariantViolation) as e:
        fn(*args, **kw)
    return str(e.value)


def test_pod_to_pod_nat_is_reported_with_the_hop(emu):
    msg = violation(pod_to_pod_without_nat, emu, "pod/default/client", "pod/default/web-2")
    assert msg.startswith("pod-to-pod without NAT: frame #") and "node/n1 eth0 out" in msg
    assert "expected 10.244.0.2 -> 10.244.1.2 unchanged" in msg


def test_pod_egress_masquerade_shows_in_what_peers_see(emu):
    msg = violation(pod_sees_own_address, emu, "default/client", peers=["default/web-2"])
    assert "web-2 saw default/client as 10.244.1.1, expected 10.244.0.2" in msg      # SNATed twice


def test_unexpected_masquerade_is_reported(emu):
    flow = Flow("pod/default/client", "pod/default/web-2", "udp", 40000, 80)
    msg = violation(masquerade_where_kube_proxy_says, emu, flow, emu.trace(*flow))
    assert "expected the client address 10.244.0.2 kept" in msg and "from 10.244.1.1" in msg


def test_endpoint_that_is_not_ready_is_reported(emu):
    svc = emu.cluster.service("default", "web")
    out = emu.trace("pod/default/client", "svc/default/web", "udp", 40001, 80)
    svc.endpoints = [replace(e, ready=False, serving=False) for e in svc.endpoints]   # not ready now
    msg = violation(delivered_to_ready_endpoint, emu, out, svc, svc.ports[0])
    assert "not an acceptable endpoint of default/web" in msg and "acceptable: none" in msg


def test_reply_from_the_wrong_address_is_reported(emu):
    svc = emu.cluster.service("default", "web")
    out = emu.trace("pod/default/client", "svc/default/web", "udp", 40002, 80)
    r = out.reply.packet
    out.reply.packet = replace(r, ip=replace(r.ip, src=emu.cluster.pod("default", "web-1").ip))
    msg = violation(service_reply_from_service_address, emu, out, svc, svc.ports[0])
    assert f"expected the service address {svc.cluster_ip}:80" in msg


def test_ttl_and_checksum_damage_is_reported(emu):
    out = emu.trace("pod/default/client", "pod/default/web-1", "udp", 40003, 80)
    i, (dev, d, pkt) = [(i, f) for i, f in enumerate(out.frames) if f[2].ip is not None][1]
    out.frames[i] = (dev, d, replace(pkt, ip=replace(pkt.ip, ttl=pkt.ip.ttl - 1)))
    assert "bad IP header checksum" in violation(ttl_and_checksums_right, out)
    out.frames[i] = (dev, d, wire.finalize(replace(pkt, ip=replace(pkt.ip, ttl=pkt.ip.ttl - 1))))
    msg = violation(ttl_and_checksums_right, out)
    assert msg.startswith(f"TTL: frame #{i} ") and "link hop" in msg and "expected 64" in msg


def test_lost_and_duplicated_frames_are_reported(emu):
    out = emu.trace("pod/default/client", "pod/default/web-1", "udp", 40004, 80)
    frames = list(out.frames)
    out.frames = frames + [frames[0]]
    assert "was already seen as frame #0" in violation(no_frame_lost_or_duplicated, out)
    out.frames = [frames[0]] + frames[2:]          # the peer never received frame #0
    assert "was never received by" in violation(no_frame_lost_or_duplicated, out)
    out.frames, out.reason, out.disposition = frames, "lost", "dropped"
    assert "without a named reason" in violation(no_frame_lost_or_duplicated, out)


def test_asymmetric_or_stale_conntrack_is_reported(emu):
    emu.trace("node/n1", "svc/default/web", "udp", 40005, 80, time=0.0)
    table = emu.namespace("node/n1").netfilter.conntrack
    entry = next(iter(table))
    entry.reply = replace(entry.reply, dport=entry.reply.dport + 1)
    assert "node/n1 entry #" in violation(conntrack_symmetric_and_expiring, emu, 0.0)
    entry.reply = replace(entry.reply, dport=entry.reply.dport - 1)
    conntrack_symmetric_and_expiring(emu, 0.0)
    conntrack_symmetric_and_expiring(emu, 1000.0)       # expired entries go on lookup
    assert not list(table)


def test_different_seeds_are_reported(kdp_emulator):
    seeds = iter([1, 2])
    msg = violation(same_seed_same_output, lambda: kdp_emulator(KUBENET, seed=next(seeds)),
                    lambda emu: emu.trace("pod/default/client", "pod/default/web-1", "udp", None, 80))
    assert msg.startswith("same seed, same output: ") and " frame #" in msg and "byte " in msg
