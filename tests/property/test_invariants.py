# The invariants are not vacuous: each one, given a cluster configured to
# break it or an outcome doctored to break it, raises InvariantViolation and
# says where: the node, network namespace, device and hook or rule, and the
# one-line `kdp trace` command that replays the flow. (The properties in the
# other files show they hold for kdp.)
import re
import shlex
import subprocess
import sys
from dataclasses import replace

import pytest

from kdp import wire
from kdp.k8s.kubeproxy import generate_rules
from kdp.testing import (Flow, InvariantViolation, conntrack_symmetric_and_expiring,
                         delivered_to_ready_endpoint, endpoint_reachable, masquerade_where_kube_proxy_says,
                         no_frame_lost_or_duplicated, pod_sees_own_address, pod_to_pod_without_nat,
                         same_seed_same_output, service_covered, service_reply_from_service_address,
                         ttl_and_checksums_right)

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

# two endpoints of a TCP service, one per node, and a Service whose selector matches nothing
TWO_WEBS = KUBENET.replace("protocol: UDP}]}]}", "}]}]}") + """
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec: {nodeName: n2, containers: [{name: web, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: orphan, namespace: default}
spec: {selector: {app: wbe}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: named, namespace: default}
spec: {selector: {app: web}, ports: [{port: 8080, targetPort: http}]}
"""

PLACE = re.compile(r"\n  at: node (\S+), namespace (\S+), device (\S+), (hook [^\n]+?)(, rule (\S+))?"
                   r"(, frame #\d+)?\n")


def place(msg: str) -> dict:
    """The `at:` line of a violation: node, namespace, device, hook, rule."""
    m = PLACE.search(msg)
    assert m, msg
    return {"node": m.group(1), "namespace": m.group(2), "device": m.group(3), "hook": m.group(4),
            "rule": m.group(6)}


def replay(msg: str) -> list[str]:
    m = re.search(r"\n  replay: (kdp trace [^\n]+)", msg)
    assert m, msg
    return shlex.split(m.group(1))


@pytest.fixture
def emu(kdp_emulator):
    return kdp_emulator(MASQ_EVERYTHING, seed=1)


def violation(fn, *args, **kw) -> str:
    with pytest.raises(InvariantViolation) as e:
        fn(*args, **kw)
    return str(e.value)


def test_pod_to_pod_nat_is_reported_with_the_hop(emu):
    msg = violation(pod_to_pod_without_nat, emu, Flow("pod/default/client", "pod/default/web-2", "udp",
                                                      40000, 80))
    assert msg.startswith("pod-to-pod without NAT: request ") and "expected 10.244.0.2 -> 10.244.1.2" in msg
    at = place(msg)
    assert (at["node"], at["namespace"], at["device"]) == ("n1", "node/n1", "eth0")
    assert at["hook"].startswith("hook after POSTROUTING") and at["rule"].startswith("nat/")


def test_pod_egress_masquerade_shows_in_what_peers_see(emu):
    flow = Flow("pod/default/client", "pod/default/web-2", "udp", 40001, 80)
    msg = violation(pod_sees_own_address, emu, flow)
    assert "web-2 saw default/client as 10.244.1.1, expected 10.244.0.2" in msg      # SNATed twice
    assert place(msg)["namespace"].startswith("node/")


def test_unexpected_masquerade_names_the_rule_that_did_it(emu):
    flow = Flow("pod/default/client", "pod/default/web-2", "udp", 40002, 80)
    msg = violation(masquerade_where_kube_proxy_says, emu, flow, emu.trace(*flow))
    assert "expected the client address 10.244.0.2 kept" in msg and "from 10.244.1.1" in msg
    at = place(msg)
    assert at["node"] == "n1" and at["hook"] == "hook POSTROUTING" and at["rule"].startswith("nat/")
    chain, number = at["rule"][len("nat/"):].split("#")
    rule = emu.namespace("node/n1").netfilter.ruleset.chain("nat", chain).rules[int(number) - 1]
    assert rule.target.name == "MASQUERADE"


def test_endpoint_that_is_not_ready_is_reported(emu):
    svc = emu.cluster.service("default", "web")
    flow = Flow("pod/default/client", "svc/default/web", "udp", 40003, 80)
    out = emu.trace(*flow)
    svc.endpoints = [replace(e, ready=False, serving=False) for e in svc.endpoints]   # not ready now
    msg = violation(delivered_to_ready_endpoint, emu, flow, out)
    assert "not an acceptable endpoint of default/web" in msg and "acceptable: none" in msg
    at = place(msg)
    assert at["hook"] == "hook PREROUTING" and re.fullmatch(r"nat/KUBE-SEP-\w+#\d+", at["rule"])


def test_reply_from_the_wrong_address_is_reported(emu):
    flow = Flow("pod/default/client", "svc/default/web", "udp", 40004, 80)
    out = emu.trace(*flow)
    r = out.reply.packet
    out.reply.packet = replace(r, ip=replace(r.ip, src=emu.cluster.pod("default", "web-1").ip))
    msg = violation(service_reply_from_service_address, emu, flow, out)
    svc = emu.cluster.service("default", "web")
    assert f"expected the service address {svc.cluster_ip}:80" in msg
    assert place(msg)["namespace"] == "pod/default/client"


def test_a_dropped_reply_names_node_namespace_device_hook_and_rule(kdp_emulator, tmp_path):
    # n2 drops what web-2 answers (a FORWARD rule a node's dump might carry)
    text = generate_rules(kdp_emulator(TWO_WEBS).cluster, "n2").replace(
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID",
        "-A KUBE-FORWARD -s 10.244.1.2/32 -p tcp -j DROP\n-A KUBE-FORWARD -m conntrack --ctstate INVALID")
    rules = tmp_path / "n2.rules"
    rules.write_text(text)
    emu = kdp_emulator(TWO_WEBS, seed=1, rules={"n2": str(rules)})
    flow = Flow("pod/default/client", "pod/default/web-2", "tcp", 40005, 80)
    msg = violation(pod_to_pod_without_nat, emu, flow)
    assert "reply dropped (rule:filter/KUBE-FORWARD#1)" in msg and "None" not in msg
    at = place(msg)
    assert at == {"node": "n2", "namespace": "node/n2", "device": "cbr0", "hook": "hook FORWARD",
                  "rule": "filter/KUBE-FORWARD#1"}
    assert replay(msg)[3:] == ["--from", "pod/default/client", "--to", "pod/default/web-2", "--proto", "tcp",
                               "--sport", "40005", "--dport", "80", "--seed", "1", "--rules", f"n2={rules}"]


def test_the_replay_command_reproduces_the_violation(kdp_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("KDP_REPLAY_DIR", str(tmp_path))
    emu = kdp_emulator(MASQ_EVERYTHING, seed=1)
    flow = Flow("pod/default/client", "pod/default/web-2", "udp", 40006, 80)
    msg = violation(masquerade_where_kube_proxy_says, emu, flow)
    cmd = replay(msg)
    assert cmd[2].startswith(str(tmp_path)) and cmd[2].endswith(".yaml")        # written for it
    run = subprocess.run([sys.executable, "-m", "kdp.cli", *cmd[1:], "--detail", "summary"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "request: DELIVERED to pod/default/web-2: UDP 10.244.1.1:" in run.stdout     # SNATed, as reported


def test_ttl_and_checksum_damage_is_reported(emu):
    flow = Flow("pod/default/client", "pod/default/web-1", "udp", 40007, 80)
    out = emu.trace(*flow)
    i, (dev, d, pkt) = [(i, f) for i, f in enumerate(out.frames) if f[2].ip is not None][1]
    out.frames[i] = (dev, d, replace(pkt, ip=replace(pkt.ip, ttl=pkt.ip.ttl - 1)))
    msg = violation(ttl_and_checksums_right, emu, flow, out)
    assert "bad IP header checksum" in msg and f", frame #{i}\n" in msg
    out.frames[i] = (dev, d, wire.finalize(replace(pkt, ip=replace(pkt.ip, ttl=pkt.ip.ttl - 1))))
    msg = violation(ttl_and_checksums_right, emu, flow, out)
    assert msg.startswith("TTL: ") and "link hop" in msg and "expected 64" in msg
    assert place(msg)["device"] == dev.name


def test_lost_and_duplicated_frames_are_reported(emu):
    flow = Flow("pod/default/client", "pod/default/web-1", "udp", 40008, 80)
    out = emu.trace(*flow)
    frames = list(out.frames)
    out.frames = frames + [frames[0]]
    assert "was already seen as frame #0" in violation(no_frame_lost_or_duplicated, emu, flow, out)
    out.frames = [frames[0]] + frames[2:]          # the peer never received frame #0
    assert "was never received by" in violation(no_frame_lost_or_duplicated, emu, flow, out)
    out.frames, out.reason, out.disposition = frames, "lost", "dropped"
    assert "without a named reason" in violation(no_frame_lost_or_duplicated, emu, flow, out)


def test_asymmetric_or_stale_conntrack_is_reported(emu):
    flow = Flow("node/n1", "svc/default/web", "udp", 40009, 80)
    emu.trace(*flow, time=0.0)
    table = emu.namespace("node/n1").netfilter.conntrack
    entry = next(iter(table))
    entry.reply = replace(entry.reply, dport=entry.reply.dport + 1)
    msg = violation(conntrack_symmetric_and_expiring, emu)
    assert re.search(r"at: node n1, namespace node/n1, device -, hook conntrack table, rule entry #\d+", msg)
    entry.reply = replace(entry.reply, dport=entry.reply.dport - 1)
    conntrack_symmetric_and_expiring(emu)
    emu.trace("node/n2", "pod/default/web-1", "udp", 40010, 80, time=1000.0)
    conntrack_symmetric_and_expiring(emu)           # expired entries go on lookup
    assert all(e.created == 1000.0 for e in table)


def test_an_endpoint_missing_from_a_nodes_rules_is_reported(kdp_emulator, tmp_path):
    # the deliberate break: web-2's DNAT rule removed from n1's rules file. Traffic from n1 silently
    # shifts to web-1 (every flow is delivered), which endpoint_reachable notices.
    emu = kdp_emulator(TWO_WEBS)
    web2 = emu.cluster.pod("default", "web-2").ip
    lines = generate_rules(emu.cluster, "n1").splitlines()
    dnat = [line for line in lines if f"DNAT --to-destination {web2}:80" in line and "default/web:" in line]
    assert len(dnat) == 1
    rules = tmp_path / "n1.rules"
    rules.write_text("\n".join(line for line in lines if line not in dnat) + "\n")
    emu = kdp_emulator(TWO_WEBS, seed=1, rules={"n1": str(rules)})
    flow = Flow("pod/default/client", "svc/default/web", "tcp", 40011, 80)
    out = emu.trace(*flow)
    assert out.delivered_to == "pod/default/web-1"
    delivered_to_ready_endpoint(emu, flow, out)     # what the shipped invariants checked before: fine
    msg = violation(endpoint_reachable, emu, flow, out)
    assert f"endpoint {web2}:80 (pod default/web-2, node n2) of default/web port http is not reachable " \
           f"from pod/default/client through svc/default/web:80" in msg
    assert f"no nat rule of default/web on node n1 DNATs to {web2}:80" in msg
    assert place(msg)["node"] == "n1" and "--rules" in replay(msg)
    endpoint_reachable(kdp_emulator(TWO_WEBS, seed=1), flow)       # the intact rules: reachable


def test_a_service_selecting_no_pod_is_reported(kdp_emulator):
    emu = kdp_emulator(TWO_WEBS, seed=1)
    flow = Flow("pod/default/client", "svc/default/orphan", "tcp", 40012, 80)
    msg = violation(service_covered, emu, flow)
    assert "service default/orphan selects app=wbe, which no pod in namespace default carries" in msg
    assert "rejected" in msg and place(msg)["hook"] in ("hook OUTPUT", "hook FORWARD", "hook PREROUTING")
    service_covered(emu, Flow("pod/default/client", "svc/default/web", "tcp", 40013, 80))


def test_a_port_without_ready_endpoints_is_reported(kdp_emulator):
    emu = kdp_emulator(TWO_WEBS, seed=1)
    msg = violation(service_covered, emu, Flow("pod/default/client", "svc/default/named", "tcp", 40014, 8080))
    assert "port 8080 of service default/named (selector app=web, targetPort http) has no ready endpoint" in msg
    assert "default/web-1 declares no port named 'http'" in msg


def test_different_seeds_are_reported(kdp_emulator):
    seeds = iter([1, 2])
    msg = violation(same_seed_same_output, lambda: kdp_emulator(KUBENET, seed=next(seeds)),
                    lambda emu: emu.trace("pod/default/client", "pod/default/web-1", "udp", None, 80))
    assert msg.startswith("same seed, same output: ") and " frame #" in msg and "byte " in msg
    assert "\n  at: node " in msg


def test_the_01_call_shapes_still_work_and_warn(emu):
    out = emu.trace("pod/default/client", "svc/default/web", "udp", 40015, 80)
    svc = emu.cluster.service("default", "web")
    with pytest.warns(DeprecationWarning, match="one invariant shape"):
        delivered_to_ready_endpoint(emu, out, svc, svc.ports[0])
    with pytest.warns(DeprecationWarning):
        no_frame_lost_or_duplicated(out)
    with pytest.warns(DeprecationWarning):
        conntrack_symmetric_and_expiring(emu, 0.0)
    with pytest.warns(DeprecationWarning), pytest.raises(InvariantViolation):
        pod_to_pod_without_nat(emu, "pod/default/client", "default/web-2")


def test_bad_arguments_get_clear_errors(emu):
    with pytest.raises(TypeError, match=r"flow is a Flow \(src, dst, proto, sport, dport\)"):
        endpoint_reachable(emu, ("pod/default/client", "svc/default/web"))
    with pytest.raises(TypeError, match="the first argument is the Emulator"):
        endpoint_reachable(None, Flow("pod/default/client", "svc/default/web", "udp", 1, 80))
    with pytest.raises(TypeError, match="outcome is what emu.trace"):
        endpoint_reachable(emu, Flow("pod/default/client", "svc/default/web", "udp", 1, 80), "out")
