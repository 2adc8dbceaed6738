# Node options of the ClusterConfig that change what kube-proxy writes and how the
# node behaves (issue 13 items 2, 4, 5): kubeProxy.nodePortAddresses,
# iptablesRandomFully, conntrackTCPBeLiberal, and `kdp rules --source`.
from ipaddress import IPv4Address as A

import pytest

from kdp import wire
from kdp.emulator import Emulator
from kdp.k8s import load_cluster_text
from kdp.k8s.kubeproxy import node_rules

from .svc_cluster import YAML

LAST = ('-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
        'in this chain"')


def cluster(kube_proxy: str):
    return load_cluster_text(YAML.replace("HAIRPIN", "hairpin-veth").replace(
        "{conntrackMax: CTMAX}", "{" + kube_proxy + "}"), file="svc_cluster.yaml")


def nodeport_jumps(c, node="n1"):
    return [line for line in node_rules(c, node).splitlines()
            if line.startswith("-A KUBE-SERVICES") and "-j KUBE-NODEPORTS" in line]


# --- nodePortAddresses -----------------------------------------------------------------

@pytest.mark.parametrize("value, jumps", [
    (None, [f"-A KUBE-SERVICES {LAST} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"]),
    ("[0.0.0.0/0]", [f"-A KUBE-SERVICES {LAST} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"]),
    ("[10.240.0.0/16]", [f"-A KUBE-SERVICES -d 10.240.0.4/32 {LAST} -j KUBE-NODEPORTS"]),
    ("[primary]", [f"-A KUBE-SERVICES -d 10.240.0.4/32 {LAST} -j KUBE-NODEPORTS"]),
    ("[10.0.0.0/8, 127.0.0.0/8]", [f"-A KUBE-SERVICES -d {ip}/32 {LAST} -j KUBE-NODEPORTS"
                                   for ip in ("10.240.0.4", "10.244.0.1", "127.0.0.1")]),
    ("[192.0.2.0/24]", []),                       # no local address matches: no NodePorts
])
def test_nodeport_addresses_rules(value, jumps):
    c = cluster("" if value is None else f"nodePortAddresses: {value}")
    assert nodeport_jumps(c) == jumps


def test_nodeport_addresses_loopback_needs_localhost_nodeports():
    c = cluster("nodePortAddresses: [127.0.0.0/8, 10.240.0.4/16], localhostNodePorts: false")
    assert nodeport_jumps(c) == [f"-A KUBE-SERVICES -d 10.240.0.4/32 {LAST} -j KUBE-NODEPORTS"]


def test_nodeport_addresses_behaviour():
    every = Emulator(cluster(""), seed=1)
    vnet = Emulator(cluster("nodePortAddresses: [10.240.0.0/16]"), seed=1)
    for emu in (every, vnet):                     # the node IP takes the NodePort either way
        out = emu.trace("ext/8.8.8.8", "10.240.0.4", dport=30080)
        assert out.disposition == "delivered" and out.delivered_to.startswith("pod/default/web-")
    # cbr0's address and loopback are local too: NodePorts there only without the option
    for dst, src in (("10.244.0.1", "pod/default/client"), ("127.0.0.1", "node/n1")):
        assert every.trace(src, dst, dport=30080).delivered_to.startswith("pod/default/web-")
        out = vnet.trace(src, dst, dport=30080)
        assert not (out.delivered_to or "").startswith("pod/"), (dst, out.disposition)
        assert out.reply is not None and out.reply.packet.l4.flags & wire.RST   # the node's own RST


def test_nodeport_addresses_bad_values_are_clear_errors():
    from kdp.errors import ClusterInputError
    for value, msg in (("[10.240.0.0]", "'10.240.0.0' is not a CIDR"),
                       ("[primary, 10.0.0.0/8]", "'primary' must be the only entry")):
        with pytest.raises(ClusterInputError) as e:
            cluster(f"nodePortAddresses: {value}")
        assert "ClusterConfig svc: spec.kubeProxy.nodePortAddresses" in str(e.value) and msg in str(e.value)


# --- iptablesRandomFully, conntrackTCPBeLiberal ---------------------------------------------

def test_iptables_without_random_fully():
    plain = cluster("iptablesRandomFully: false")
    masq = [ln for ln in node_rules(plain, "n1").splitlines() if "KUBE-POSTROUTING" in ln and "MASQ" in ln]
    assert masq == ['-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring '
                    'SNAT" -j MASQUERADE']
    assert "--random-fully" in node_rules(cluster(""), "n1")
    # behaviour: plain MASQUERADE keeps a free source port; --random-fully draws one
    kept = Emulator(plain, seed=1).trace("ext/8.8.8.8", "10.240.0.4", dport=30080, sport=40000)
    drawn = [Emulator(cluster(""), seed=s).trace("ext/8.8.8.8", "10.240.0.4", dport=30080,
                                                 sport=40000).packet.l4.sport for s in range(3)]
    assert kept.packet.ip.src != A("8.8.8.8") and kept.packet.l4.sport == 40000
    assert any(p != 40000 for p in drawn)


def _stray_synack(emu):
    """A SYN-ACK from pod client (n1) to web-2 (n2) with no connection: conntrack calls it
    INVALID on n1, where it is forwarded."""
    client, web2 = emu.cluster.pod("default", "client"), emu.cluster.pod("default", "web-2")
    pkt = emu.build(client.ip, web2.ip, "tcp", 8080, 41000, flags=wire.SYN | wire.ACK)
    return emu.datapath.originate(emu.namespace("pod/default/client"), pkt, 1.0)


def test_conntrack_tcp_be_liberal():
    strict, liberal = cluster(""), cluster("conntrackTCPBeLiberal: true")
    assert "--ctstate INVALID -j DROP" in node_rules(strict, "n1")
    assert "INVALID" not in node_rules(liberal, "n1")
    out = _stray_synack(Emulator(strict, seed=1))
    assert out.disposition == "dropped" and out.reason.startswith("rule:filter/KUBE-FORWARD#1")
    out = _stray_synack(Emulator(liberal, seed=1))
    assert out.delivered_to == "pod/default/web-2"         # forwarded; web-2 answers RST
    assert out.reply is not None and out.reply.packet.l4.flags & wire.RST


# --- kdp rules --source --------------------------------------------------------------------

def test_rules_by_source():
    c = cluster("localhostNodePorts: false")
    every, proxy = node_rules(c, "n1"), node_rules(c, "n1", "kube-proxy")
    kubelet, masq = node_rules(c, "n1", "kubelet"), node_rules(c, "n1", "ip-masq-agent")
    localnet = "block incoming localnet connections"
    assert localnet in kubelet and localnet not in proxy    # kubelet's rule, not kube-proxy's
    assert "KUBE-SVC-" in proxy and "KUBE-SVC-" not in kubelet + masq
    assert "IP-MASQ-AGENT" in masq and "IP-MASQ-AGENT" not in proxy + kubelet
    assert "KUBE-KUBELET-CANARY" in kubelet and "KUBE-KUBELET-CANARY" not in proxy
    # every rule of the node comes from exactly one of them (the KUBE-FIREWALL jumps from both)
    rules = [ln for ln in every.splitlines() if ln.startswith("-A")]
    parts = [ln for t in (proxy, kubelet, masq) for ln in t.splitlines() if ln.startswith("-A")]
    assert sorted(set(parts)) == sorted(set(rules))
    # with localhost NodePorts kube-proxy writes its own copy of the localnet rule
    assert localnet in node_rules(cluster(""), "n1", "kube-proxy")
