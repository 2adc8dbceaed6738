# The strategies themselves: clusters load and hold what they promise, every
# flow names endpoints the emulator resolves (outside hosts really outside),
# streams are time-ordered, frames come as bytes or Scapy packets.
from hypothesis import given, strategies as st

from kdp.emulator import Emulator
from kdp.testing.strategies import (SERVICE_TYPES, cluster_networks, clusters, ext_addresses, flows, frames,
                                    pcap_streams, service_targets)


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
