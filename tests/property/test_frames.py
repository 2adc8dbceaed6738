# Every frame: on random clusters and flows, checksums stay valid and the TTL
# drops by exactly one per router (never on veths, the underlay or bridges);
# every request and reply ends delivered, dropped or rejected with a named
# reason, nothing is lost on a link or seen twice. Raw frames (valid or mangled
# pcap-like streams, broadcasts and ARP included) are walked to a named end
# too. Bugs these properties found are kept at the end as minimal examples.
from hypothesis import given, strategies as st

from kdp.emulator import Emulator
from kdp.testing.invariants import (conntrack_symmetric_and_expiring, no_frame_lost_or_duplicated,
                                    ttl_and_checksums_right)
from kdp.testing.strategies import clusters, flows, node_endpoints, pcap_streams, pod_endpoints

from .clusters import KUBENET


@given(cluster=clusters(), data=st.data())
def test_every_hop_of_every_flow(cluster, data):
    emu = Emulator(cluster, seed=3)
    for flow in data.draw(st.lists(flows(cluster), min_size=1, max_size=6,
                                   unique_by=lambda f: (f.src, f.sport)), label="flows"):
        out = emu.trace(*flow)
        ttl_and_checksums_right(emu, flow, out)
        no_frame_lost_or_duplicated(emu, flow, out)


def attach_points(cluster) -> list[str]:
    return pod_endpoints(cluster) + node_endpoints(cluster) + ["ext/8.8.8.8"]


@given(cluster=clusters(max_pods=4, max_services=2), data=st.data())
def test_mangled_frame_streams_end_somewhere_named(cluster, data):
    emu = Emulator(cluster, seed=4)
    at = data.draw(st.sampled_from(attach_points(cluster)), label="at")
    stream = data.draw(pcap_streams(emu, at, valid=False, max_size=8), label="stream")
    for out, _error in emu.send_many(stream, at):       # unparseable frames come back as errors
        if out is not None:             # what emu.send returns has no flow: (emu, None, outcome)
            no_frame_lost_or_duplicated(emu, None, out)
            ttl_and_checksums_right(emu, None, out)
    conntrack_symmetric_and_expiring(emu)


@given(cluster=clusters(max_pods=4, max_services=2), data=st.data())
def test_valid_frame_streams_keep_ttl_and_checksums(cluster, data):
    emu = Emulator(cluster, seed=5)
    at = data.draw(st.sampled_from(attach_points(cluster)), label="at")
    stream = data.draw(pcap_streams(emu, at, valid=True, max_size=8), label="stream")
    for out, error in emu.send_many(stream, at):
        assert error is None, error
        no_frame_lost_or_duplicated(emu, None, out)
        ttl_and_checksums_right(emu, None, out)


# --- once kdp bugs, found by these properties; minimal examples kept as regressions ---

def test_arp_request_to_the_gateway_ends_with_a_named_outcome(kdp_emulator):
    from scapy.layers.l2 import ARP, Ether
    emu = kdp_emulator(KUBENET, seed=1)
    client = emu.namespace("pod/default/client").devices["eth0"]
    frame = Ether(src=client.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=client.mac, psrc=str(emu.cluster.pod("default", "client").ip), pdst="10.244.0.1")
    no_frame_lost_or_duplicated(emu, None, emu.send(frame, at="pod/default/client"))


def test_broadcast_frame_with_unicast_ip_is_not_forwarded(kdp_emulator):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    emu = kdp_emulator(KUBENET, seed=1)
    n1 = emu.namespace("node/n1").devices["eth0"]
    web = emu.cluster.pod("default", "web-1").ip
    frame = Ether(src=n1.mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="10.240.0.4", dst=str(web)) / \
        UDP(sport=5555, dport=80) / b"x"
    no_frame_lost_or_duplicated(emu, None, emu.send(frame, at="node/n1"))


# (fixed: Linux keeps eth_type_trans's PACKET_HOST from the port through br_pass_frame_up)
def test_frame_to_the_host_veth_mac_reaches_the_node(kdp_emulator):
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    emu = kdp_emulator(KUBENET, seed=1)
    client = emu.namespace("pod/default/client").devices["eth0"]
    frame = Ether(src=client.mac, dst=client.peer.mac) / IP(src="10.244.0.2", dst="10.240.0.4") / \
        ICMP(type=8, id=7, seq=1)
    out = emu.send(frame, at="pod/default/client")
    assert out.delivered_to == "node/n1", (out.disposition, out.reason)


# (fixed: a SYN for a connection in SYN_RECV gets the SYN-ACK again, as tcp_check_req does)
def test_retransmitted_syn_is_answered_again(kdp_emulator):
    emu = kdp_emulator(KUBENET, seed=1)
    first = emu.trace("pod/default/client", "node/n2", "tcp", 40000, 10250, time=0.0)
    again = emu.trace("pod/default/client", "node/n2", "tcp", 40000, 10250, time=1.0)
    assert first.reply is not None and again.reply is not None, [h.detail for h in again.hops
                                                                 if h.component == "app"]
