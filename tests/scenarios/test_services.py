# Services end to end through kube-proxy's rules and conntrack (svc_cluster.py):
# DNAT to an endpoint, the reply from the service address, masquerade exactly
# where kube-proxy puts it, REJECT/DROP, affinity, policies, the cloud LB.
from collections import Counter
from ipaddress import IPv4Address as A

import pytest

from kdp import wire
from kdp.emulator import Emulator

from .svc_cluster import svc_cluster



def web_ips(emu):
    return {p.ip for p in emu.cluster.pods if p.labels.get("app") == "web"}


@pytest.fixture
def emu():
    return Emulator(svc_cluster(), seed=7)


def ip_of(emu, name):
    return emu.cluster.pod("default", name).ip


def svc_ip(emu, name):
    return emu.cluster.service("default", name).cluster_ip


def rule_hops(out, text):
    return [h for h in out.hops if h.component == "netfilter" and text in h.detail and "=> match" in h.detail]


def test_pod_to_clusterip_is_dnated_and_not_masqueraded(emu):
    out = emu.trace("pod/default/client", "svc/default/web")
    assert out.disposition == "delivered" and out.packet.ip.dst in web_ips(emu)
    assert out.packet.l4.dport == 8080
    assert out.packet.ip.src == ip_of(emu, "client")                 # pod-to-service keeps the pod IP
    assert rule_hops(out, "cluster IP") and rule_hops(out, "DNAT --to-destination")
    r = out.reply.packet
    assert out.reply.delivered_to == "pod/default/client"
    assert (r.ip.src, r.l4.sport) == (svc_ip(emu, "web"), 80)         # un-DNATed
    assert wire.l4_checksum_ok(r) and wire.ip_checksum_ok(r)


def ack_after(emu, first, sport, time=1.0, payload=b""):
    """The client's ACK (completing the handshake traced by `first`)."""
    from dataclasses import replace
    pkt = emu.build(ip_of(emu, "client"), svc_ip(emu, "web"), "tcp", sport, 80, flags=wire.ACK)
    pkt = wire.finalize(replace(pkt, l4=replace(pkt.l4, seq=(first.packet.l4.seq + 1) & 0xFFFFFFFF,
                                                ack=(first.reply.packet.l4.seq + 1) & 0xFFFFFFFF,
                                                payload=payload)))
    return emu.datapath.originate(emu.namespace("pod/default/client"), pkt, time)


def test_second_packet_uses_conntrack_without_walking_nat(emu):
    first = emu.trace("pod/default/client", "svc/default/web", sport=41000)
    second = ack_after(emu, first, 41000)
    assert second.packet.ip.dst == first.packet.ip.dst                 # same endpoint
    assert not [h for h in second.hops if h.detail.startswith("nat/")]  # no nat table walk
    node = emu.namespace("node/n1").netfilter.conntrack
    assert "ESTABLISHED" in node.to_conntrack_l(1.0) and "[ASSURED]" in node.to_conntrack_l(1.0)
    data = ack_after(emu, first, 41000, time=2.0, payload=b"GET / HTTP/1.1\r\n\r\n")
    back = [p for d, direction, p in data.frames if d.namespace.name == "pod/default/client"
            and d.name == "eth0" and direction == "in" and p.ip is not None]
    assert [p.l4.payload for p in back] == [b"", b"GET / HTTP/1.1\r\n\r\n"]   # quick ACK, then the echo
    assert all(p.ip.src == svc_ip(emu, "web") and p.l4.sport == 80 for p in back)   # un-DNATed


def test_endpoint_choice_is_reproducible_and_uniform():
    a = Emulator(svc_cluster(), seed=3)
    b = Emulator(svc_cluster(), seed=3)
    picks = Counter()
    for port in range(20000, 20600):
        x = a.trace("pod/default/client", "svc/default/web", sport=port).packet.ip.dst
        y = b.trace("pod/default/client", "svc/default/web", sport=port).packet.ip.dst
        assert x == y
        picks[x] += 1
    assert set(picks) == web_ips(a)
    # 600 flows over 3 endpoints: each near 200 (binomial sd ~11.5; 5 sd bounds)
    assert all(140 <= n <= 260 for n in picks.values()), picks


def test_other_seed_other_choices():
    a, b = Emulator(svc_cluster(), seed=1), Emulator(svc_cluster(), seed=2)
    da = [a.trace("pod/default/client", "svc/default/web", sport=p).packet.ip.dst for p in range(30000, 30030)]
    db = [b.trace("pod/default/client", "svc/default/web", sport=p).packet.ip.dst for p in range(30000, 30030)]
    assert da != db


def reopen_picks(emu, rounds=6, sport=41000, other=None):
    """`rounds` SYNs on one 5-tuple to the 3-endpoint web Service, each
    answered and reset by the client: the endpoint each new entry chose.
    other: a source port whose flow is opened between the rounds."""
    from dataclasses import replace
    client, svc = ip_of(emu, "client"), svc_ip(emu, "web")
    picks = []
    for i in range(rounds):
        out = emu.trace("pod/default/client", "svc/default/web", sport=sport, time=1.0 + i)
        assert out.disposition == "delivered", out.reason
        picks.append(out.packet.ip.dst)
        rst = emu.build(client, svc, "tcp", sport, 80, flags=wire.RST)
        rst = wire.finalize(replace(rst, l4=replace(rst.l4, seq=(out.packet.l4.seq + 1) & 0xFFFFFFFF)))
        emu.datapath.originate(emu.namespace("pod/default/client"), rst, 1.5 + i)
        if other is not None:
            emu.trace("pod/default/client", "svc/default/web", sport=other + i, time=1.6 + i)
    return picks


def test_a_reopened_tuple_draws_its_endpoint_anew():
    """Each new conntrack entry of one 5-tuple (SYN, SYN-ACK, RST, again)
    makes kube-proxy's statistic rules draw again, as the kernel's prandom
    does: the six entries do not all go to one endpoint, for any seed; the
    first entry draws what a fresh tuple draws, and the draws depend on the
    seed and the tuple's own history only (other flows in between change
    nothing)."""
    for seed in range(8):
        emu = Emulator(svc_cluster(), seed=seed)
        picks = reopen_picks(emu)
        assert len(set(picks)) > 1, (seed, picks)
        assert picks[0] == Emulator(svc_cluster(), seed=seed).trace(
            "pod/default/client", "svc/default/web", sport=41000).packet.ip.dst
        assert picks == reopen_picks(Emulator(svc_cluster(), seed=seed), other=50000)
        node = emu.namespace("node/n1").netfilter.conntrack
        assert [e.gen for e in node if e.orig.sport == 41000] == [5]


def test_node_to_clusterip_is_masqueraded(emu):
    out = emu.trace("node/n1", "svc/default/web")
    assert out.disposition == "delivered" and out.packet.ip.dst in web_ips(emu)
    assert rule_hops(out, "KUBE-MARK-MASQ") and rule_hops(out, "MASQUERADE")
    assert out.reply.delivered_to == "node/n1" and out.reply.packet.ip.src == svc_ip(emu, "web")


def test_nodeport_from_outside_is_masqueraded(emu):
    out = emu.trace("ext/8.8.8.8", "10.240.0.4", dport=30080)
    assert out.disposition == "delivered" and out.packet.ip.dst in web_ips(emu)
    assert out.packet.ip.src in (A("10.240.0.4"), A("10.244.0.1"))    # SNAT to the node
    assert rule_hops(out, "KUBE-NODEPORTS")
    r = out.reply.packet
    assert out.reply.delivered_to == "ext/8.8.8.8" and (r.ip.src, r.l4.sport) == (A("10.240.0.4"), 30080)


def test_nodeport_local_keeps_client_ip_where_an_endpoint_is_local(emu):
    out = emu.trace("ext/8.8.8.8", "10.240.0.5", dport=30081)          # n2 hosts solo
    assert out.delivered_to == "pod/default/solo" and out.packet.ip.src == A("8.8.8.8")


def test_nodeport_local_drops_where_no_endpoint_is_local(emu):
    out = emu.trace("ext/8.8.8.8", "10.240.0.4", dport=30081)          # n1 has none
    assert out.disposition == "dropped"
    assert out.reason.startswith("rule:filter/KUBE-EXTERNAL-SERVICES#")
    assert out.reply is None


def test_loadbalancer_local_goes_only_to_healthy_nodes_and_keeps_client_ip(emu):
    for port in range(5000, 5020):
        out = emu.trace("ext/198.18.0.9", "20.1.1.1", dport=80, sport=port)
        assert out.delivered_to == "pod/default/solo" and out.packet.ip.src == A("198.18.0.9")
        assert any("cloud load balancer" in h.detail and "node n2" in h.detail for h in out.hops)
        assert out.reply.packet.ip.src == A("20.1.1.1")


def test_loadbalancer_source_ranges(emu):
    ok = emu.trace("ext/203.0.113.5", "20.1.1.2", dport=80)
    assert ok.disposition == "delivered" and ok.packet.ip.dst in web_ips(emu)
    blocked = emu.trace("ext/8.8.8.8", "20.1.1.2", dport=80)
    assert blocked.disposition == "dropped" and "KUBE-PROXY-FIREWALL" in blocked.reason


def test_service_without_endpoints_is_rejected_with_icmp(emu):
    out = emu.trace("pod/default/client", "svc/default/empty")
    assert out.disposition == "rejected" and out.reason.startswith("rule:filter/KUBE-SERVICES#")
    r = out.reply.packet
    assert out.reply.delivered_to == "pod/default/client"
    assert (r.l4.type, r.l4.code) == (3, 3)
    assert r.l4.payload[16:20] == svc_ip(emu, "empty").packed          # quotes the original


def test_session_affinity_pins_the_client(emu):
    dsts = {emu.trace("pod/default/client", "svc/default/sticky", sport=p).packet.ip.dst
            for p in range(42000, 42020)}
    assert len(dsts) == 1
    out = emu.trace("pod/default/client", "svc/default/sticky", sport=42100)
    assert rule_hops(out, "--rcheck")


def test_session_affinity_expires(emu):
    # Hash-independent: whether the redrawn endpoint equals the first one depends on the seed.
    emu.trace("pod/default/client", "svc/default/sticky", sport=43000, time=0.0)
    fresh = emu.trace("pod/default/client", "svc/default/sticky", sport=43001, time=100.0)
    assert rule_hops(fresh, "--rcheck")                                # pinned by the recent list
    late = emu.trace("pod/default/client", "svc/default/sticky", sport=43002, time=20000.0)
    assert late.disposition == "delivered" and late.packet.ip.dst in web_ips(emu)
    assert not rule_hops(late, "--rcheck")                             # 10800 s passed: redrawn
    again = emu.trace("pod/default/client", "svc/default/sticky", sport=43003, time=20001.0)
    assert rule_hops(again, "--rcheck") and again.packet.ip.dst == late.packet.ip.dst


def test_external_ip_from_outside(emu):
    out = emu.trace("ext/8.8.8.8", "198.51.100.7", dport=80)
    assert out.disposition == "delivered" and out.packet.ip.dst in web_ips(emu)
    assert rule_hops(out, "external IP")


def test_internal_traffic_policy_local_without_local_endpoint_drops(emu):
    out = emu.trace("pod/default/client", "svc/default/solo-itp")
    assert out.disposition == "dropped" and out.reason.startswith("rule:filter/KUBE-SERVICES#")


def test_pod_egress_is_masqueraded_to_the_node(emu):
    out = emu.trace("pod/default/client", "ext/93.184.216.34", dport=443)
    assert out.delivered_to == "ext/93.184.216.34" and out.packet.ip.src == A("10.240.0.4")
    assert out.reply.delivered_to == "pod/default/client"
    assert out.reply.packet.ip.dst == ip_of(emu, "client")


def test_pod_to_pod_and_pod_to_node_stay_unnatted(emu):
    out = emu.trace("pod/default/client", "pod/default/web-2", dport=8080)
    assert out.packet.ip.src == ip_of(emu, "client")
    out = emu.trace("pod/default/client", "node/n2", dport=10250)
    assert out.packet.ip.src == ip_of(emu, "client")                 # the VNet is not masqueraded


def test_hairpin_through_own_service():
    emu = Emulator(svc_cluster(), seed=1)
    for port in range(10000, 10200):
        out = emu.trace("pod/default/web-1", "svc/default/web", sport=port)
        if out.packet.ip.dst == ip_of(emu, "web-1"):
            break
    else:
        pytest.fail("no flow chose web-1")
    assert out.delivered_to == "pod/default/web-1"
    assert out.packet.ip.src == A("10.244.0.1")                       # masqueraded to cbr0
    assert any("(hairpin)" in h.detail for h in out.hops)
    assert out.reply.packet.ip.src == svc_ip(emu, "web")


def test_hairpin_off_drops_at_the_bridge():
    emu = Emulator(svc_cluster(hairpin="none"), seed=1)
    for port in range(10000, 10200):
        out = emu.trace("pod/default/web-1", "svc/default/web", sport=port)
        if out.reason == "bridge-no-hairpin":
            break
    else:
        pytest.fail("no flow hairpinned")
    assert out.disposition == "dropped"


def test_conntrack_table_full_drops_new_but_keeps_established():
    emu = Emulator(svc_cluster(conntrack_max=4), seed=1)
    for p in range(50000, 50004):                                     # four assured connections
        first = emu.trace("pod/default/client", "svc/default/web", sport=p, time=0.0)
        assert first.disposition == "delivered"
        assert ack_after(emu, first, p, time=0.1).disposition == "delivered"
    full = emu.trace("pod/default/client", "svc/default/web", sport=50010, time=0.2)
    assert full.disposition == "dropped" and full.reason == "conntrack-table-full"
    again = ack_after(emu, first, 50003, time=0.3, payload=b"x")
    assert again.disposition == "delivered"                            # established flows keep working


def test_bridged_dnat_frame_leaves_the_bridge_with_its_own_mac():
    """Pod -> ClusterIP whose endpoint is on the same bridge, first packet (the
    endpoint's neighbour entry unresolved): the DNATed frame goes through the
    neighbour output of cbr0, so `tcpdump -i cbr0` shows it leaving with cbr0's
    MAC as source and the endpoint's as destination; the bridge then forwards
    it with the sender's MAC put back, as the endpoint receives it."""
    emu = Emulator(svc_cluster(), seed=0)
    out = emu.trace("pod/default/web-2", "svc/default/solo-itp")
    assert out.disposition == "delivered"
    cbr0 = emu.namespace("node/n2").devices["cbr0"]
    client = emu.namespace("pod/default/web-2").devices["eth0"].mac
    dst = out.packet.ip.dst
    ep = next(p for p in emu.cluster.pods if p.ip == dst)
    ep_mac = emu.namespace(f"pod/default/{ep.name}").devices["eth0"].mac
    on_br = [p for d, direction, p in out.frames if d is cbr0 and direction == "out" and p.ip is not None
             and p.ip.dst == dst]
    assert [(p.eth.src, p.eth.dst) for p in on_br] == [(cbr0.mac, ep_mac)]
    at_ep = [p for d, direction, p in out.frames if d.namespace.name == f"pod/default/{ep.name}"
             and direction == "in" and p.ip is not None and p.ip.dst == dst]
    assert at_ep and at_ep[0].eth.src == client
