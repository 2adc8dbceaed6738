# Services end to end in kube-proxy's nftables mode (svc_cluster.py with kubeProxy.mode
# nftables): the `ip kube-proxy` table evaluated by kdp.netfilter.nft.engine beside
# kubelet's and ip-masq-agent's iptables rules. Where the two modes must agree (DNAT to an
# endpoint, the reply un-DNATed, masquerade, the conntrack entry) the iptables-mode result
# is the reference; the nftables-only behaviours (reject on a ClusterIP's unserved port,
# drop in the unallocated service CIDR) are asserted on their own.
from collections import Counter
from ipaddress import IPv4Address as A

import pytest

from kdp.emulator import Emulator

from .svc_cluster import svc_cluster

TABLE = "ip kube-proxy"


def nft_emu(seed=7, **kw):
    c = svc_cluster(**kw)
    c.config.kube_proxy.mode = "nftables"
    return Emulator(c, seed=seed)


@pytest.fixture
def emu():
    return nft_emu()


def web_ips(emu):
    return {p.ip for p in emu.cluster.pods if p.labels.get("app") == "web"}


def ip_of(emu, name):
    return emu.cluster.pod("default", name).ip


def svc_ip(emu, name):
    return emu.cluster.service("default", name).cluster_ip


def nft_hops(out, text):
    return [h for h in out.hops if h.component == "netfilter" and h.detail.startswith(TABLE)
            and text in h.detail and "=> match" in h.detail]


def test_pod_to_clusterip_is_dnated_by_the_service_ips_map(emu):
    out = emu.trace("pod/default/client", "svc/default/web")
    assert out.disposition == "delivered" and out.packet.ip.dst in web_ips(emu)
    assert out.packet.l4.dport == 8080 and out.packet.ip.src == ip_of(emu, "client")
    assert nft_hops(out, f"match -> goto service-SUSTUHLJ-default/web/tcp/http "
                         f"[@service-ips {svc_ip(emu, 'web')} . tcp . 80]")
    assert nft_hops(out, "numgen random mod 3 vmap") and nft_hops(out, "dnat to")
    assert not [h for h in out.hops if h.detail.startswith("nat/KUBE-")]   # no iptables service rules
    r = out.reply.packet
    assert out.reply.delivered_to == "pod/default/client"
    assert (r.ip.src, r.l4.sport) == (svc_ip(emu, "web"), 80)


def test_conntrack_entry_is_the_one_iptables_mode_writes():
    """Same flow, same endpoint: the node's conntrack table reads the same in both modes."""
    ipt, nft = Emulator(svc_cluster(), seed=7), nft_emu()
    for sport in range(40000, 40100):
        a = ipt.trace("pod/default/client", "svc/default/web", sport=sport, time=1.0)
        b = nft.trace("pod/default/client", "svc/default/web", sport=sport, time=1.0)
        assert a.disposition == b.disposition == "delivered"
        if a.packet.ip.dst == b.packet.ip.dst:
            break
    else:
        pytest.fail("the two modes never chose the same endpoint")
    assert bytes(b.packet.ip.src.packed) == bytes(a.packet.ip.src.packed)
    lines = [e.namespace("node/n1").netfilter.conntrack.to_conntrack_l(1.0).splitlines()
             for e in (ipt, nft)]
    mine = [[x for x in ls if f"sport={sport} " in x] for ls in lines]
    assert mine[0] and mine[0] == mine[1]


def test_endpoints_are_spread_and_reproducible():
    a, b = nft_emu(seed=3), nft_emu(seed=3)
    picks = Counter()
    for port in range(20000, 20300):
        x = a.trace("pod/default/client", "svc/default/web", sport=port).packet.ip.dst
        assert x == b.trace("pod/default/client", "svc/default/web", sport=port).packet.ip.dst
        picks[x] += 1
    assert set(picks) == web_ips(a) and min(picks.values()) > 60


def test_node_to_clusterip_is_masqueraded(emu):
    out = emu.trace("node/n1", "svc/default/web")
    assert out.disposition == "delivered" and out.packet.ip.dst in web_ips(emu)
    assert nft_hops(out, "nat-output") and nft_hops(out, "masquerade fully-random")
    assert out.reply.delivered_to == "node/n1" and out.reply.packet.ip.src == svc_ip(emu, "web")


def test_nodeport_from_outside_is_masqueraded(emu):
    out = emu.trace("ext/8.8.8.8", "10.240.0.4", dport=30080)
    assert out.disposition == "delivered" and out.packet.ip.dst in web_ips(emu)
    assert out.packet.ip.src in (A("10.240.0.4"), A("10.244.0.1"))    # masqueraded to the node
    assert nft_hops(out, "-> goto external-") and nft_hops(out, "[@service-nodeports tcp . 30080]")
    r = out.reply.packet
    assert out.reply.delivered_to == "ext/8.8.8.8" and (r.ip.src, r.l4.sport) == (A("10.240.0.4"), 30080)


def test_nodeport_opens_on_the_primary_node_ip_only(emu):
    out = emu.trace("pod/default/client", "10.244.0.1", dport=30080)   # cbr0's address
    assert out.disposition != "delivered" or out.packet.ip.dst not in web_ips(emu)


def test_external_traffic_policy_local(emu):
    out = emu.trace("ext/8.8.8.8", "10.240.0.5", dport=30081)          # n2 hosts solo
    assert out.delivered_to == "pod/default/solo" and out.packet.ip.src == A("8.8.8.8")
    out = emu.trace("ext/8.8.8.8", "10.240.0.4", dport=30081)          # n1 has none
    assert out.disposition == "dropped" and out.reply is None
    assert out.reason == f"rule:{TABLE}/nodeport-endpoints-check#1"


def test_loadbalancer_source_ranges(emu):
    ok = emu.trace("ext/203.0.113.5", "20.1.1.2", dport=80)
    assert ok.disposition == "delivered" and ok.packet.ip.dst in web_ips(emu)
    blocked = emu.trace("ext/8.8.8.8", "20.1.1.2", dport=80)
    assert blocked.disposition == "dropped"
    assert blocked.reason.startswith(f"rule:{TABLE}/firewall-") and "default/ranged" in blocked.reason


def test_session_affinity_pins_and_expires(emu):
    first = emu.trace("pod/default/client", "svc/default/sticky", sport=43000, time=0.0)
    dsts = {emu.trace("pod/default/client", "svc/default/sticky", sport=p, time=1.0).packet.ip.dst
            for p in range(43001, 43020)}
    assert dsts == {first.packet.ip.dst}
    pinned = emu.trace("pod/default/client", "svc/default/sticky", sport=43100, time=100.0)
    assert nft_hops(pinned, "[@affinity-")
    late = emu.trace("pod/default/client", "svc/default/sticky", sport=43200, time=20000.0)
    assert late.disposition == "delivered" and not nft_hops(late, "[@affinity-")   # 10800 s passed
    again = emu.trace("pod/default/client", "svc/default/sticky", sport=43201, time=20001.0)
    assert nft_hops(again, "[@affinity-") and again.packet.ip.dst == late.packet.ip.dst


def test_affinity_set_lists_the_client_with_its_timeout(emu):
    emu.trace("pod/default/client", "svc/default/sticky", sport=43000, time=0.0)
    text = emu.namespace("node/n1").netfilter.nft.listing(1.5).render()
    assert f"elements = {{ {ip_of(emu, 'client')} timeout 3h expires 2h59m58s500ms }}" in text


def test_service_without_endpoints_is_rejected_with_icmp(emu):
    out = emu.trace("pod/default/client", "svc/default/empty")
    assert out.disposition == "rejected" and out.reason == f"rule:{TABLE}/reject-chain#1"
    assert nft_hops(out, "[@no-endpoint-services")
    r = out.reply.packet
    assert out.reply.delivered_to == "pod/default/client" and (r.l4.type, r.l4.code) == (3, 3)
    assert r.l4.payload[16:20] == svc_ip(emu, "empty").packed


def test_known_clusterip_on_an_unserved_port_is_rejected(emu):
    out = emu.trace("pod/default/client", "svc/default/web", dport=81)
    assert out.disposition == "rejected" and out.reason == f"rule:{TABLE}/cluster-ips-check#1"
    assert (out.reply.packet.l4.type, out.reply.packet.l4.code) == (3, 3)


def test_unallocated_service_cidr_address_is_dropped(emu):
    out = emu.trace("pod/default/client", "10.96.200.200", dport=80)
    assert out.disposition == "dropped" and out.reason == f"rule:{TABLE}/cluster-ips-check#2"
    assert out.reply is None


def test_pod_egress_is_masqueraded_by_ip_masq_agents_iptables_rules(emu):
    out = emu.trace("pod/default/client", "ext/93.184.216.34", dport=443)
    assert out.delivered_to == "ext/93.184.216.34" and out.packet.ip.src == A("10.240.0.4")
    assert any(h.detail.startswith("nat/IP-MASQ-AGENT") and "MASQUERADE" in h.detail
               and "=> match" in h.detail for h in out.hops)
    assert out.reply.packet.ip.dst == ip_of(emu, "client")


def test_hairpin_through_own_service():
    emu = nft_emu(seed=1)
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


@pytest.mark.parametrize("src,dst,kw", [
    ("pod/default/client", "svc/default/web", {}),
    ("node/n1", "svc/default/web", {}),
    ("ext/8.8.8.8", "10.240.0.4", {"dport": 30080}),
    ("ext/8.8.8.8", "10.240.0.5", {"dport": 30081}),
    ("ext/8.8.8.8", "198.51.100.7", {"dport": 80}),
    ("ext/198.18.0.9", "20.1.1.1", {"dport": 80}),
    ("pod/default/client", "svc/default/empty", {}),
    ("pod/default/client", "ext/93.184.216.34", {"dport": 443}),
])
def test_both_modes_agree(src, dst, kw):
    """Disposition, the NAT seen by the endpoint (endpoint set, source) and the reply."""
    a, b = Emulator(svc_cluster(), seed=7), nft_emu()
    x, y = a.trace(src, dst, **kw), b.trace(src, dst, **kw)
    assert x.disposition == y.disposition
    if x.disposition == "delivered":
        assert x.packet.l4.dport == y.packet.l4.dport
        if x.delivered_to == y.delivered_to:           # the masquerade address follows the route
            assert x.packet.ip.src == y.packet.ip.src
        else:
            assert x.packet.ip.dst in web_ips(a) and y.packet.ip.dst in web_ips(b)
        assert (x.reply.packet.ip.src, x.reply.packet.l4.sport) == \
            (y.reply.packet.ip.src, y.reply.packet.l4.sport)
    else:
        assert (x.reply is None) == (y.reply is None)


def test_load_rules_regenerates_the_nftables_table(emu):
    emu.trace("pod/default/client", "svc/default/sticky", sport=43000, time=0.0)
    nf = emu.namespace("node/n1").netfilter
    before = nf.nft
    emu.load_rules("n1")                                  # kube-proxy's full resync
    assert nf.nft is not before and nf.nft.listing(1.0).render() == \
        before.ruleset.render()                           # the affinity element is gone again
    out = emu.trace("pod/default/client", "svc/default/web", sport=43001, time=1.0)
    assert out.disposition == "delivered" and out.packet.ip.dst in web_ips(emu)
