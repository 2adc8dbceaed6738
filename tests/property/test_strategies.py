# The strategies themselves: clusters load and hold what they promise and
# print as their YAML; every flow names endpoints the emulator resolves
# (outside hosts really outside); flows narrow to what they target without
# filtering, and say what your own cluster lacks; streams are time-ordered,
# frames come as bytes or Scapy packets.
import subprocess
import sys

import pytest
from hypothesis import find, given, strategies as st
from hypothesis.vendor.pretty import pretty

from kdp.emulator import Emulator
from kdp.k8s import load_cluster_text
from kdp.testing import (SERVICE_TYPES, TRAFFIC_POLICIES, ClusterText, cluster_from_path, cluster_from_yaml,
                         cluster_networks, cluster_texts, clusters, every_flow, ext_addresses, flow_service,
                         flows, frames, node_endpoints, pcap_streams, pod_endpoints, service_flows,
                         service_targets)


@given(cluster=clusters(), data=st.data())
def test_flows_resolve_and_outside_hosts_are_outside(cluster, data):
    emu = Emulator(cluster, seed=0, capture=False)
    for flow in data.draw(st.lists(flows(cluster), min_size=1, max_size=8), label="flows"):
        assert emu.resolve(flow.src).ip is not None and emu.resolve(flow.dst).ip is not None
        assert flow.proto in ("tcp", "udp", "icmp") and 1 <= flow.sport <= 65535
    ip = data.draw(ext_addresses(cluster), label="outside")
    assert not any(ip in n for n in cluster_networks(cluster))


@given(cluster=clusters(service_types=SERVICE_TYPES, max_services=6))
def test_clusters_have_unique_ports_and_service_targets(cluster):
    for pod in cluster.pods:
        ports = [(p.port, p.protocol) for p in pod.ports()]
        assert len(ports) == len(set(ports)), pod.key
    for t in service_targets(cluster):
        svc = cluster.service(*t.svc.split("/")[1:])
        assert svc.cluster_ip is not None and t.proto in ("tcp", "udp")
        if t.kind == "load-balancer":
            assert svc.type == "LoadBalancer" and svc.load_balancer_ips


@given(cluster=clusters(max_pods=2, max_services=1), data=st.data())
def test_streams_are_time_ordered_and_frames_convert_to_scapy(cluster, data):
    emu = Emulator(cluster, seed=0, capture=False)
    at = f"node/{cluster.nodes[0].name}"
    stream = data.draw(pcap_streams(emu, at, valid=False, start=5.0), label="stream")
    times = [t for t, _ in stream]
    assert times == sorted(times) and times[0] >= 5.0
    assert all(isinstance(raw, bytes) for _, raw in stream)
    pkt = data.draw(frames(emu, at, as_scapy=True), label="scapy frame")
    assert bytes(pkt)[:6] and pkt.name == "Ethernet"


# --- narrowing without filtering ---------------------------------------------------------------

@given(data=st.data())
def test_flows_narrow_to_what_they_target_without_filtering(data):
    kinds = data.draw(st.sampled_from([("cluster-ip",), ("node-port",), ("load-balancer",)]), label="kind")
    policy = data.draw(st.sampled_from(TRAFFIC_POLICIES), label="policy")
    proto = data.draw(st.sampled_from(("tcp", "udp")), label="proto")
    types = {"cluster-ip": ("ClusterIP",), "node-port": ("NodePort",), "load-balancer": ("LoadBalancer",)}
    cluster = data.draw(clusters(service_types=types[kinds[0]], min_services=3,
                                 external_traffic_policies=(policy,), internal_traffic_policies=(policy,)),
                        label="cluster")
    def governing(t):
        svc = cluster.service(*t.svc.split("/")[1:])
        return svc.internal_traffic_policy if t.kind == "cluster-ip" else svc.external_traffic_policy
    if not [t for t in service_targets(cluster, kinds) if t.proto == proto and governing(t) == policy]:
        return                              # e.g. three TCP services and a UDP flow wanted
    for sf in data.draw(st.lists(service_flows(cluster, sources=("pod", "node"), service_kinds=kinds,
                                               traffic_policies=(policy,), protocols=(proto,)),
                                 min_size=1, max_size=5), label="service flows"):
        assert (sf.kind, sf.policy, sf.flow.proto) == (kinds[0], policy, proto), sf
        assert flow_service(cluster, sf.flow) == sf
        assert sf.flow.src.split("/")[0] in ("pod", "node")


DEMO = cluster_from_path("demo")


@given(web=flows(DEMO, sources=("pod/default/client",), targets=("svc/default/nginx",)),
       ping=flows(DEMO, sources=("node",), targets=("pod/default/client",), protocols=("icmp",)))
def test_flows_to_one_service_or_endpoint(web, ping):
    assert (web.src, web.dst, web.proto, web.dport) == ("pod/default/client", "svc/default/nginx", "tcp", 80)
    assert ping.src.startswith("node/") and (ping.dst, ping.proto) == ("pod/default/client", "icmp")


def test_flows_say_at_once_what_your_cluster_lacks():
    with pytest.raises(ValueError, match=r"no target among .*service_kinds=\('external-ip',\).*"
                                         r"the cluster's service addresses: .*default/web-lb node-port tcp "
                                         r"\(Local\)"):
        flows(DEMO, service_kinds=("external-ip",))        # the demo has no externalIPs
    with pytest.raises(ValueError, match=r"'svc/default/nope': no such svc in the cluster"):
        flows(DEMO, targets=("svc/default/nope",))
    with pytest.raises(ValueError, match=r"sources: 'service' is neither one of \('pod', 'node', 'ext'\)"):
        flows(DEMO, sources=("service",))
    with pytest.raises(TypeError, match=r"targets='pod': give a tuple, e.g. \('pod',\)"):
        flows(DEMO, targets="pod")
    with pytest.raises(ValueError, match=r"protocols=\('sctp',\)"):
        flows(DEMO, protocols=("sctp",))
    with pytest.raises(ValueError, match="min_services=5 must be between 0 and max_services=4"):
        clusters(min_services=5)


@given(cluster=clusters(service_types=("ClusterIP",), max_services=1), data=st.data())
def test_generated_clusters_without_a_target_discard_the_example(cluster, data):
    # no NodePort in these clusters: the narrowed strategy draws nothing (no error, no filtering)
    narrowed = flows(cluster, service_kinds=("node-port",))
    assert narrowed.is_empty


def test_every_flow_sweeps_each_source_against_each_target():
    cluster = DEMO
    sweep = every_flow(cluster, targets=("service",))
    targets = {(t.dst, t.proto, t.port) for t in service_targets(cluster)}
    assert {(f.dst, f.proto, f.dport) for f in sweep} == targets
    inside = set(pod_endpoints(cluster) + node_endpoints(cluster))
    assert {f.src for f in sweep if f.dst.startswith("svc/")} == inside
    assert all(not f.dst.startswith("svc/") for f in sweep if f.src.startswith("ext/"))   # outside: public only
    assert len({f.sport for f in sweep}) == len(sweep)


# --- readable clusters ----------------------------------------------------------------------

@given(text=cluster_texts(max_pods=2, max_services=1), cluster=clusters(max_pods=2, max_services=1))
def test_generated_clusters_print_as_their_yaml(text, cluster):
    shown = pretty(text)
    assert shown.startswith('ClusterText("""\napiVersion: kdp.dev/v1alpha1\nkind: ClusterConfig\n')
    assert load_cluster_text(eval(shown, {"ClusterText": ClusterText})).nodes     # the repr is the YAML
    shown = pretty(cluster)
    assert shown.startswith('cluster_from_yaml("""\napiVersion: kdp.dev/v1alpha1\n') and "\\n" not in shown
    again = eval(shown, {"cluster_from_yaml": cluster_from_yaml})
    assert [p.ip for p in again.pods] == [p.ip for p in cluster.pods] and cluster.generated


def test_a_generated_cluster_saves_for_kdp_trace(tmp_path):
    cluster = find(clusters(max_pods=1, max_services=0), lambda c: True)
    path = cluster.save(tmp_path / "c" / "cluster.yaml")
    run = subprocess.run([sys.executable, "-m", "kdp.cli", "topology", path], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and f"pod {cluster.pods[0].key}" in run.stdout.replace("<-> ", "pod "), run
