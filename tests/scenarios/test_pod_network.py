# Whole flows through the pod network (see conftest.py for the topology):
# delivery, unchanged addresses, TTL, MACs, devices crossed, ICMP errors.
from ipaddress import IPv4Address as A

import pytest

from kdp import wire
from kdp.emulator import Emulator
from kdp.errors import UsageError

from .conftest import devices_seen, small_cluster


def mac(emu, ns, dev="eth0"):
    return emu.topology.namespaces[ns].devices[dev].mac


def test_same_node_pod_to_pod_is_bridged_not_routed(emu):
    out = emu.trace("pod/default/a", "pod/default/b", proto="tcp", dport=80)
    assert out.disposition == "delivered" and out.delivered_to == "pod/default/b"
    p = out.packet
    assert (p.ip.src, p.ip.dst, p.ip.ttl) == (A("10.244.0.2"), A("10.244.0.3"), 64)
    assert p.eth.src == mac(emu, "pod/default/a") and p.eth.dst == mac(emu, "pod/default/b")
    assert not [h for h in out.hops if h.component == "route" and h.action == "forward"]
    seen = devices_seen(out)
    assert ("node/n0", "eth0") not in seen and ("node/n0", "cbr0") not in seen
    assert seen[:2] == [("pod/default/a", "eth0"), ("node/n0", emu.topology.host_veth["default/a"].name)]
    # the SYN-ACK comes back to the client unchanged too
    assert out.reply.disposition == "delivered" and out.reply.delivered_to == "pod/default/a"
    assert out.reply.packet.l4.flags == wire.SYN | wire.ACK
    assert out.reply.packet.ip.src == A("10.244.0.3")


def test_first_packet_resolves_neighbour_with_real_arp_frames(emu):
    out = emu.trace("pod/default/a", "pod/default/b")
    arps = [p for _d, _dir, p in out.frames if p.arp is not None]
    assert arps[0].arp.op == 1 and arps[0].arp.tpa == A("10.244.0.3")
    assert arps[0].eth.dst == "ff:ff:ff:ff:ff:ff"
    assert any(p.arp.op == 2 and p.arp.spa == A("10.244.0.3") for p in arps)
    again = emu.trace("pod/default/a", "pod/default/b")
    assert not [p for _d, _dir, p in again.frames if p.arp is not None]   # cached now
    assert "10.244.0.3 dev eth0 lladdr" in "\n".join(emu.namespace("pod/default/a").neigh.dump())


def test_cross_node_pod_to_pod_routed_by_both_nodes(emu):
    out = emu.trace("pod/default/a", "pod/default/c", dport=80)
    assert out.delivered_to == "pod/default/c"
    p = out.packet
    assert (p.ip.src, p.ip.dst) == (A("10.244.0.2"), A("10.244.1.2"))
    assert p.ip.ttl == 62                                       # two routers
    assert p.eth.src == mac(emu, "node/n1", "cbr0") and p.eth.dst == mac(emu, "pod/default/c")
    forwards = [h.namespace for h in out.hops if h.action == "forward" and h.component == "route"
                and h.leg == "request"]
    assert forwards == ["node/n0", "node/n1"]
    assert ("node/n0", "eth0") in devices_seen(out) and ("node/n1", "eth0") in devices_seen(out)
    assert wire.ip_checksum_ok(p) and wire.l4_checksum_ok(p)
    assert out.reply.packet.ip.ttl == 62 and out.reply.packet.ip.src == A("10.244.1.2")


def test_underlay_frame_carries_node_macs(emu):
    out = emu.trace("pod/default/a", "pod/default/c")
    on_wire = [p for d, direction, p in out.frames if d.namespace.name == "node/n1" and d.name == "eth0"
               and direction == "in" and p.ip is not None]
    assert on_wire[0].eth.src == mac(emu, "node/n0") and on_wire[0].eth.dst == mac(emu, "node/n1")
    assert on_wire[0].ip.ttl == 63


def test_node_to_pod_without_nat(emu):
    out = emu.trace("node/n1", "pod/default/a", proto="icmp")
    assert out.delivered_to == "pod/default/a"
    assert out.packet.ip.src == A("10.240.0.5") and out.packet.ip.ttl == 63
    assert out.reply.delivered_to == "node/n1"
    assert out.reply.packet.l4.type == wire.ICMP_ECHOREPLY


def test_pod_to_node_reaches_kubelet(emu):
    out = emu.trace("pod/default/c", "node/n0", dport=10250)
    assert out.delivered_to == "node/n0" and out.packet.ip.src == A("10.244.1.2")
    assert out.reply.packet.l4.flags == wire.SYN | wire.ACK


def test_intra_pod_localhost_never_leaves_the_namespace(emu):
    out = emu.trace("pod/default/c", "127.0.0.1", dport=9090)
    assert out.delivered_to == "pod/default/c"
    assert {d.name for d, _dir, _p in out.frames} == {"lo"}
    assert any("metrics" in h.detail for h in out.hops if h.component == "app")


def test_off_cluster_destination_is_delivered_through_the_edge(emu):
    out = emu.trace("pod/default/a", "ext/93.184.216.34", dport=443)
    assert out.delivered_to == "ext/93.184.216.34"
    assert "edge" in [h.namespace for h in out.hops]
    assert out.reply.delivered_to == "pod/default/a"


def test_ttl_expiry_answers_with_time_exceeded_from_the_gateway(emu):
    out = emu.trace("pod/default/a", "pod/default/c", ttl=1)
    assert out.disposition == "dropped" and out.reason == "ttl-exceeded"
    r = out.reply.packet
    assert r.l4.type == wire.ICMP_TIME_EXCEEDED and r.ip.src == A("10.244.0.1")
    quoted = r.l4.payload                      # the offending header, TTL 1 as it arrived
    assert quoted[16:20] == A("10.244.1.2").packed and quoted[8] == 1
    assert wire.l4_checksum_ok(r) and wire.ip_checksum_ok(r)


def test_closed_udp_port_gets_icmp_port_unreachable(emu):
    out = emu.trace("pod/default/a", "pod/default/c", proto="udp", dport=9999)
    assert out.disposition == "delivered"
    assert out.reply.packet.l4.type == 3 and out.reply.packet.l4.code == 3
    assert out.reply.packet.ip.tos == 0xC0


def test_open_udp_port_echoes(emu):
    out = emu.trace("pod/default/a", "pod/default/b", proto="udp", dport=53, payload=b"hello")
    assert out.reply.packet.l4.payload == b"hello"
    assert out.reply.packet.l4.sport == 53


def reply_ids(emu, dst, dport, times, sport=5300):
    return [emu.trace("pod/default/a", dst, proto="udp", sport=sport, dport=dport, time=t,
                      payload=b"x%d" % i).reply.packet.ip.ident for i, t in enumerate(times)]


def test_ip_ids_of_one_flow_differ_as_the_kernel_draws_them():
    """Replies from an unconnected socket (the UDP echo app: DF set) and ICMP
    errors take their IP ID from the namespace's ip_idents bucket for the
    address pair: within one jiffy (4 ms) consecutive, later advanced by less
    than the jiffies elapsed (HZ 250: 50 in 0.2 s), never the same twice in a
    row; and the same seed gives the same IDs."""
    from kdp.emulator import Emulator

    from .conftest import small_cluster
    for ids in (reply_ids(Emulator(small_cluster(), seed=3), "pod/default/b", 53, [1.0, 1.001, 1.2, 1.4]),
                reply_ids(Emulator(small_cluster(), seed=3), "pod/default/c", 9999, [1.0, 1.001, 1.2, 1.4])):
        steps = [(b - a) & 0xFFFF for a, b in zip(ids, ids[1:])]
        assert steps[0] == 1 and all(1 <= s <= 51 for s in steps), ids
    assert reply_ids(Emulator(small_cluster(), seed=3), "pod/default/b", 53, [1.0, 1.2]) == \
        reply_ids(Emulator(small_cluster(), seed=3), "pod/default/b", 53, [1.0, 1.2])
    assert reply_ids(Emulator(small_cluster(), seed=3), "pod/default/b", 53, [1.0, 1.2]) != \
        reply_ids(Emulator(small_cluster(), seed=4), "pod/default/b", 53, [1.0, 1.2])


def test_closed_tcp_port_gets_rst(emu):
    out = emu.trace("pod/default/a", "pod/default/c", dport=81)
    r = out.reply.packet.l4
    assert r.flags == wire.RST | wire.ACK and r.ack == (out.packet.l4.seq + 1) & 0xFFFFFFFF


def test_unanswered_arp_drops_with_reason(emu):
    out = emu.trace("pod/default/a", "10.244.0.99")
    assert out.disposition == "dropped" and out.reason == "neighbour-unreachable"


def test_forwarded_packet_to_missing_pod_gets_host_unreachable(emu):
    out = emu.trace("pod/default/a", "10.244.1.77")
    assert out.reason == "neighbour-unreachable"
    assert out.reply.packet.l4.type == 3 and out.reply.packet.l4.code == 1
    assert out.reply.packet.ip.src == A("10.240.0.5")       # the route back's source (kernel oracle)


def test_docker0_subnet_uses_the_linkdown_route_and_fails_like_the_kernel(emu):
    out = emu.trace("pod/default/a", "172.17.0.5")
    assert out.disposition == "dropped" and out.reason == "neighbour-unreachable"
    assert not [p for d, _dir, p in out.frames if d.name == "docker0"]   # no carrier: nothing leaves
    assert out.reply.packet.l4.type == 3 and out.reply.delivered_to == "pod/default/a"


def test_raw_frame_with_bad_ip_checksum_is_dropped(emu):
    good = emu.build(A("10.244.0.2"), A("10.244.0.3"), "tcp", 1234, 80)
    bad = wire.set_macs(good, mac(emu, "pod/default/a"), mac(emu, "pod/default/b"))
    from dataclasses import replace
    bad = replace(bad, ip=replace(bad.ip, checksum=bad.ip.checksum ^ 0xFF))
    emu.trace("pod/default/a", "pod/default/b")                        # learn MACs on the bridge
    out = emu.send(wire.emit(bad), at="pod/default/a")
    assert out.disposition == "dropped" and out.reason == "invalid-checksum"


def test_raw_frame_for_another_mac_is_not_for_this_host(emu):
    pkt = emu.build(A("10.244.0.2"), A("10.244.0.3"), "tcp", 1234, 80)
    pkt = wire.set_macs(pkt, mac(emu, "pod/default/a"), "02:00:00:00:00:99")
    out = emu.send(pkt, at="pod/default/a")          # unknown MAC: flooded, nobody takes it
    assert out.disposition == "dropped" and out.reason == "not-for-this-host"


def test_scapy_frame_is_accepted_by_send(emu):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    emu.trace("pod/default/a", "pod/default/b")
    f = Ether(src=mac(emu, "pod/default/a"), dst=mac(emu, "pod/default/b")) / \
        IP(src="10.244.0.2", dst="10.244.0.3", ttl=9) / TCP(sport=4000, dport=80, flags="S")
    out = emu.send(f, at="pod/default/a")
    assert out.delivered_to == "pod/default/b" and out.packet.ip.ttl == 9


def test_non_ip_ethertype_is_dropped_with_reason(emu):
    raw = bytes.fromhex(mac(emu, "pod/default/b").replace(":", "")) + \
        bytes.fromhex(mac(emu, "pod/default/a").replace(":", "")) + b"\x86\xdd" + b"\x60" + b"\x00" * 39
    emu.trace("pod/default/a", "pod/default/b")
    out = emu.send(raw, at="pod/default/a")
    assert out.disposition == "dropped" and out.reason == "unsupported-protocol"


def test_same_seed_same_bytes_on_every_device():
    def run(seed):
        e = Emulator(small_cluster(), seed=seed)
        for dst in ("pod/default/b", "pod/default/c", "ext/8.8.8.8"):
            e.trace("pod/default/a", dst)
        return {k: [wire.emit(p) for _t, p, _d in v] for k, v in e.captures.items()}
    assert run(5) == run(5)
    assert run(5) != run(6)                  # ports, ISNs and IP IDs come from the seed


def test_unknown_endpoint_is_a_usage_error(emu):
    with pytest.raises(UsageError, match="no such pod"):
        emu.trace("pod/default/nope", "pod/default/a")
    with pytest.raises(UsageError, match="inside the cluster"):
        emu.trace("pod/default/a", "ext/10.244.0.3")


def test_azure_cni_pods_use_vnet_addresses_and_proxy_arp(azure_emu):
    emu = azure_emu
    assert "cbr0" not in emu.namespace("node/n0").devices
    out = emu.trace("pod/default/a", "pod/default/c")
    assert out.delivered_to == "pod/default/c" and out.packet.ip.src == A("10.240.0.10")
    assert out.packet.ip.ttl == 62
    same = emu.trace("pod/default/a", "pod/default/b")
    assert same.delivered_to == "pod/default/b" and same.packet.ip.ttl == 63   # routed by the host
    assert any(h.detail.startswith("proxy ARP") for h in out.hops)
