# The nftables families beside ip/inet in kdp's datapath (kdp.netfilter.nft.engine's
# l2_chains, Netfilter.l2_hook, the datapath's bridge/netdev/arp hook points): bridge base
# chains around br_netfilter by priority, netdev ingress/egress on their device, inet
# ingress for IPv4 only, arp input/output, ip6 never evaluated; drops name the table,
# chain and rule, traces show the walk; what kdp cannot run is a load error.
import pytest

from kdp.emulator import Emulator
from kdp.k8s import load_cluster_text
from kdp.k8s.kubeproxy_nft import node_ruleset
from kdp.netfilter.boundary import RulesetError
from kdp.netfilter.nft import parse_ruleset
from kdp.netfilter.nft.engine import NftEngine

CLUSTER = """
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: families}
spec:
  networkPlugin: kubenet
  podCIDR: 10.244.0.0/16
  serviceCIDR: 10.96.0.0/16
  dnsServiceIP: 10.96.0.10
  vnetSubnet: 10.240.0.0/16
  nodes: [{name: n1}, {name: n2}]
  kubeProxy: {mode: nftables}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: web, ports: [{containerPort: 8080, protocol: UDP}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.50, selector: {app: web}, ports: [{port: 80, targetPort: 8080, protocol: UDP}]}
"""


def emulator(tmp_path, extra: str, mode="nftables"):
    c = load_cluster_text(CLUSTER.replace("mode: nftables", f"mode: {mode}"))
    path = tmp_path / "n1.nft"
    base = node_ruleset(c, "n1") if mode == "nftables" else ""
    path.write_text(base + extra)
    c.node("n1").rules_file = str(path)
    return Emulator(c)


def counters(emu, node="n1"):
    """{(table label, chain): [packets of each counter]} of the node's nft tables."""
    out = {}
    for t in emu.topology.node_ns[node].netfilter.nft.tables:
        for c in t.chains.values():
            out[(t.label, c.name)] = [k.packets for r in c.rules for k in r.counters]
    return out


BRIDGE_AROUND_BRNF = """table bridge b {
	chain early {
		type filter hook prerouting priority filter; policy accept;
		ip daddr 10.96.0.50 counter
		ip daddr 10.244.0.3 counter
	}
	chain late {
		type filter hook prerouting priority 100; policy accept;
		ip daddr 10.96.0.50 counter
		ip daddr 10.244.0.3 counter
	}
}
"""


def test_bridge_chains_run_before_and_after_br_netfilter_by_priority(tmp_path):
    """br_netfilter runs the IPv4 PREROUTING hook (kube-proxy's DNAT: its `ip kube-proxy`
    table) at bridge priority 0: a bridge chain at -200 sees the ClusterIP, one at 100
    the endpoint."""
    emu = emulator(tmp_path, BRIDGE_AROUND_BRNF)
    web = emu.resolve("pod/default/web-1").ip
    assert str(web) == "10.244.0.3"
    out = emu.trace("pod/default/client", "10.96.0.50", proto="udp", dport=80)
    assert out.disposition == "delivered"
    got = counters(emu)
    assert got[("bridge b", "early")] == [1, 0]
    assert got[("bridge b", "late")] == [0, 1]


def test_bridge_forward_drop_names_the_rule_and_traces_the_walk(tmp_path):
    emu = emulator(tmp_path, """table bridge b {
	chain bfwd {
		type filter hook forward priority filter; policy accept;
		ether type arp counter
		udp dport 8080 counter drop
	}
}
""")
    out = emu.trace("pod/default/client", "pod/default/web-1", proto="udp", dport=8080)
    assert (out.disposition, out.reason) == ("dropped", "rule:bridge b/bfwd#2")
    walk = [h.detail for h in out.hops if h.action == "bridge forward"]
    assert any("bridge b/bfwd#2: udp dport 8080 counter drop => match -> drop" in d for d in walk), walk
    # the ARP request flooded to three ports (hairpin: back to the client too) and the
    # reply; the datagram
    assert counters(emu)[("bridge b", "bfwd")] == [4, 1]


def test_netdev_ingress_and_egress_on_their_device_only(tmp_path):
    emu = emulator(tmp_path, """table netdev n {
	chain ing {
		type filter hook ingress device "cbr0" priority filter; policy accept;
		counter
	}
	chain eg {
		type filter hook egress device "eth0" priority filter; policy accept;
		ip daddr 10.244.1.9 counter drop
	}
}
""")
    # a routed packet out of eth0 to n2's pod CIDR: egress drop on eth0; client's frame
    # enters the node through cbr0 (the bridge passes it up): ingress counted there
    out = emu.trace("pod/default/client", "10.244.1.9", proto="udp", dport=53)
    assert (out.disposition, out.reason) == ("dropped", "rule:netdev n/eg#1")
    assert counters(emu)[("netdev n", "ing")][0] >= 1
    assert not any(f[0].namespace.name == "node/n1" and f[0].name == "eth0" and f[1] == "out"
                   and f[2].ip is not None for f in out.frames)


def test_inet_ingress_sees_ipv4_not_arp_and_arp_output_drop_starves_resolution(tmp_path):
    emu = emulator(tmp_path, """table inet i {
	chain iing {
		type filter hook ingress device "cbr0" priority filter; policy accept;
		counter
	}
}
table arp a {
	chain aout {
		type filter hook output priority filter; policy accept;
		arp operation request counter drop
	}
}
""")
    out = emu.trace("pod/default/client", "pod/default/web-1", proto="udp", dport=8080)
    assert out.disposition == "delivered"         # bridged: the node's ARP output is not crossed
    assert counters(emu)[("inet i", "iing")] == [0]
    # the node's own packet to an unresolved neighbour: its ARP request is dropped
    out = emu.trace("node/n1", "10.244.0.77", proto="udp", dport=53)
    assert out.disposition == "dropped"
    assert counters(emu)[("arp a", "aout")] == [1]
    assert counters(emu)[("inet i", "iing")] == [0]
    # the client's datagram to n2's pod CIDR goes up through cbr0: inet ingress counts it
    # (and not the client's ARP request for its gateway, broadcast up the same way)
    emu = emulator(tmp_path, """table inet i {
	chain iing {
		type filter hook ingress device "cbr0" priority filter; policy accept;
		counter
	}
}
""")
    emu.trace("pod/default/client", "10.244.1.9", proto="udp", dport=53)
    assert counters(emu)[("inet i", "iing")] == [1]


def test_ip6_tables_are_never_evaluated_for_ipv4(tmp_path):
    emu = emulator(tmp_path, """table ip6 six {
	chain everything {
		type filter hook prerouting priority filter; policy drop;
		counter
	}
}
""")
    out = emu.trace("pod/default/client", "pod/default/web-1", proto="udp", dport=8080)
    assert out.disposition == "delivered"
    assert not emu.topology.node_ns["n1"].netfilter.l2


@pytest.mark.parametrize("text, message", [
    ('table netdev n {\n\tchain c {\n\t\ttype filter hook ingress priority filter; policy accept;\n\t}\n}\n',
     "needs a device"),
    ('table bridge b {\n\tchain c {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n}\n',
     "only filter chains in the bridge family"),
    ('table arp a {\n\tchain c {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n',
     "no forward hook for the arp family"),
    ('table bridge b {\n\tchain c {\n\t\ttype filter hook forward priority filter; policy accept;\n'
     '\t\treject\n\t}\n}\n', "only in ip and inet tables"),
])
def test_what_kdp_cannot_run_in_a_family_is_a_load_error(text, message):
    with pytest.raises(RulesetError) as e:
        NftEngine(parse_ruleset(text, "f.nft"), "f.nft", "node")
    assert message in str(e.value)
