# Tests for k8s.kubeproxy / k8s.kubeproxy_chains: kube-proxy 1.33 iptables rules as
# iptables-save prints them. Clusters are built straight from k8s.model (no YAML loader).
# The tests marked `root` load the generated text into a real iptables inside a throwaway
# network namespace (never the host's) and compare with what the real iptables-save prints.
from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from ipaddress import IPv4Address as A, IPv4Network as N

import pytest

from kdp.errors import UsageError
from kdp.k8s import kubeproxy_chains as kc
from kdp.k8s.kubeproxy import generate_rules
from kdp.k8s.model import (Cluster, ClusterConfig, Endpoint, KubeProxyConfig, Node, Service,
                           ServicePort)

# --- building clusters ---------------------------------------------------------------------

NODES = [Node("n1", A("10.240.0.4"), N("10.244.0.0/24")),
         Node("n2", A("10.240.0.5"), N("10.244.1.0/24"))]


def ep(ip: str, port: int, name: str | None, node: str | None = "n1", proto: str = "TCP",
       **kw) -> Endpoint:
    return Endpoint(A(ip), port, name, protocol=proto, node=node, **kw)


def cluster(*services: Service, plugin: str = "kubenet", **kp) -> Cluster:
    cfg = ClusterConfig(network_plugin=plugin, kube_proxy=KubeProxyConfig(**kp))
    return Cluster(cfg, nodes=list(NODES), services=list(services))


def svc(name: str, cip: str = "10.0.0.41", *, ns: str = "ns1", port: int = 80,
        port_name: str | None = "p80", proto: str = "TCP", eps=(), **kw) -> Service:
    node_port = kw.pop("node_port", None)
    return Service(ns, name, cluster_ip=A(cip) if cip else None,
                   ports=[ServicePort(port, proto, port_name, 8080, node_port)],
                   endpoints=list(eps), **kw)


def lines(text: str, prefix: str) -> list[str]:
    """The lines of ``text`` starting with ``prefix`` (e.g. ``-A KUBE-NODEPORTS``), in order.

    Chains such as KUBE-SERVICES exist in both filter and nat: narrow ``text`` with table().
    """
    return [ln for ln in text.splitlines() if ln.startswith(prefix + " ")]


def table(text: str, name: str) -> str:
    m = re.search(rf"^\*{name}\n(.*?)^COMMIT$", text, re.S | re.M)
    assert m, f"no *{name} table"
    return m.group(1)


# --- chain names and iptables-save spelling ------------------------------------------------

def test_chain_name_vectors():
    assert kc.chain_name("KUBE-SVC-", "ns1/svc1:p80", "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert kc.sep_chain_name("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert kc.chain_name("KUBE-SVC-", "ns1/svc1", "tcp") == "KUBE-SVC-AQI2S6QIMU7PVVRP"
    # dash optional, protocol case-insensitive, same hash under every prefix
    assert kc.chain_name("KUBE-SVC", "ns1/svc1", "TCP") == "KUBE-SVC-AQI2S6QIMU7PVVRP"
    assert kc.chain_name("KUBE-EXT", "ns1/svc1:p80", "tcp") == "KUBE-EXT-XPGD46QRK7WJZT7O"
    assert kc.service_port_name("ns1", "svc1", None) == "ns1/svc1"
    assert kc.service_port_name("ns1", "svc1", "p80") == "ns1/svc1:p80"


def test_save_string_quoting():
    assert kc.save_string("plain-Word_9") == "plain-Word_9"
    assert kc.save_string("ns1/svc1:p80") == '"ns1/svc1:p80"'
    assert kc.save_string("a b") == '"a b"'
    assert kc.save_string("it's \\ \"q\"") == '"it\\\'s \\\\ \\"q\\""'
    assert kc.save_string("") == '""'


def test_probabilities():
    assert [kc.probability(n) for n in (2, 3, 4)] == ["0.5000000000", "0.3333333333",
                                                      "0.2500000000"]
    # the statistic match stores round(p * 2^31): iptables-save prints 11 decimals of that
    assert [kc.saved_probability(n) for n in (2, 3, 4, 5, 6, 7)] == [
        "0.50000000000", "0.33333333349", "0.25000000000", "0.20000000019", "0.16666666651",
        "0.14285714272"]


# --- golden: one ClusterIP service, two endpoints ------------------------------------------

GOLDEN = """\
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-PROXY-CANARY - [0:0]
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name  ct_state_invalid_dropped_pkts -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:IP-MASQ-AGENT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-SEP-2OQAZPPYEQPQGIXA - [0:0]
:KUBE-SEP-4DLQR6XP64U3IHTN - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment "\\"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\\"" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT
-A IP-MASQ-AGENT -d 169.254.0.0/16 -m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -j RETURN
-A IP-MASQ-AGENT -d 10.244.0.0/16 -m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -j RETURN
-A IP-MASQ-AGENT -d 10.240.0.0/16 -m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -j RETURN
-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SEP-2OQAZPPYEQPQGIXA -s 10.244.0.10/32 -m comment --comment "ns1/svc1:p80" -j KUBE-MARK-MASQ
-A KUBE-SEP-2OQAZPPYEQPQGIXA -p tcp -m comment --comment "ns1/svc1:p80" -m tcp -j DNAT --to-destination 10.244.0.10:8080
-A KUBE-SEP-4DLQR6XP64U3IHTN -s 10.244.1.5/32 -m comment --comment "ns1/svc1:p80" -j KUBE-MARK-MASQ
-A KUBE-SEP-4DLQR6XP64U3IHTN -p tcp -m comment --comment "ns1/svc1:p80" -m tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SERVICES -d 10.0.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-XPGD46QRK7WJZT7O ! -s 10.244.0.0/16 -d 10.0.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.0.10:8080" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-2OQAZPPYEQPQGIXA
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.5:8080" -j KUBE-SEP-4DLQR6XP64U3IHTN
COMMIT
"""


def golden_cluster() -> Cluster:
    return cluster(svc("svc1", eps=[ep("10.244.1.5", 8080, "p80", "n2"),
                                    ep("10.244.0.10", 8080, "p80", "n1")]))


def test_golden_clusterip_two_endpoints():
    assert generate_rules(golden_cluster(), "n1") == GOLDEN
    # the other node sees the same rules: nothing here depends on endpoint locality
    assert generate_rules(golden_cluster(), "n2") == GOLDEN


def test_deterministic_and_independent_of_input_order():
    services = [svc(f"s{i}", f"10.0.0.{50 + i}", eps=[ep(f"10.244.0.{i + 2}", 8080, "p80")])
                for i in range(8)]
    base = generate_rules(cluster(*services), "n1")
    assert generate_rules(cluster(*services), "n1") == base
    shuffled = services[:]
    random.Random(7).shuffle(shuffled)
    assert generate_rules(cluster(*shuffled), "n1") == base
    assert generate_rules(cluster(*services), "n1", iptables_supports_random_fully=False) == \
        base.replace(" --random-fully", "")


def test_unknown_node_is_a_usage_error():
    with pytest.raises(UsageError):
        generate_rules(golden_cluster(), "nope")


# --- endpoints: order and probabilities ----------------------------------------------------

@pytest.mark.parametrize("n, probs", [
    (3, ["0.33333333349", "0.50000000000", None]),
    (4, ["0.25000000000", "0.33333333349", "0.50000000000", None]),
])
def test_probability_per_endpoint(n, probs):
    eps = [ep(f"10.244.0.{i + 2}", 8080, "p80") for i in range(n)]
    text = generate_rules(cluster(svc("svc1", eps=eps)), "n1")
    rules = lines(text, "-A KUBE-SVC-XPGD46QRK7WJZT7O")[1:]     # [0] is the masquerade rule
    assert len(rules) == n
    for rule, p in zip(rules, probs):
        if p is None:
            assert "statistic" not in rule
        else:
            assert f"-m statistic --mode random --probability {p} -j KUBE-SEP-" in rule


def test_endpoints_sorted_as_strings():
    eps = [ep("10.244.0.2", 8080, "p80"), ep("10.244.0.10", 8080, "p80"),
           ep("10.244.0.2", 8080, "p80")]                       # duplicate slice entry
    text = generate_rules(cluster(svc("svc1", eps=eps)), "n1")
    order = [re.search(r'-> ([\d.:]+)"', r).group(1)
             for r in lines(text, "-A KUBE-SVC-XPGD46QRK7WJZT7O")[1:]]
    assert order == ["10.244.0.10:8080", "10.244.0.2:8080"]
    assert text.count("-j DNAT") == 2


# --- session affinity ----------------------------------------------------------------------

def test_session_affinity():
    eps = [ep("10.244.0.2", 8080, "p80"), ep("10.244.1.3", 8080, "p80", "n2")]
    s = svc("svc1", eps=eps, session_affinity="ClientIP", affinity_timeout=300)
    text = generate_rules(cluster(s), "n1")
    sep2 = kc.sep_chain_name("ns1/svc1:p80", "tcp", "10.244.0.2:8080")
    sep3 = kc.sep_chain_name("ns1/svc1:p80", "tcp", "10.244.1.3:8080")
    assert lines(text, "-A KUBE-SVC-XPGD46QRK7WJZT7O")[1:] == [
        f'-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.0.2:8080" '
        f'-m recent --rcheck --seconds 300 --reap --name {sep2} --mask 255.255.255.255 '
        f'--rsource -j {sep2}',
        f'-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.3:8080" '
        f'-m recent --rcheck --seconds 300 --reap --name {sep3} --mask 255.255.255.255 '
        f'--rsource -j {sep3}',
        f'-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.0.2:8080" '
        f'-m statistic --mode random --probability 0.50000000000 -j {sep2}',
        f'-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.3:8080" '
        f'-j {sep3}',
    ]
    assert lines(text, f"-A {sep2}")[1] == (
        f'-A {sep2} -p tcp -m comment --comment "ns1/svc1:p80" -m recent --set --name {sep2} '
        f'--mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.0.2:8080')


# --- external destinations -----------------------------------------------------------------

def test_nodeport_cluster_policy():
    s = svc("web", type="NodePort", node_port=30080, eps=[ep("10.244.1.3", 8080, "p80", "n2")])
    text = generate_rules(cluster(s), "n1")
    ext = kc.chain_name("KUBE-EXT", "ns1/web:p80", "tcp")
    svc_chain = kc.chain_name("KUBE-SVC", "ns1/web:p80", "tcp")
    nat = table(text, "nat")
    assert lines(nat, "-A KUBE-NODEPORTS") == [
        f'-A KUBE-NODEPORTS -d 127.0.0.0/8 -p tcp -m comment --comment "ns1/web:p80" -m tcp '
        f'--dport 30080 -m nfacct --nfacct-name  localhost_nps_accepted_pkts -j {ext}',
        f'-A KUBE-NODEPORTS -p tcp -m comment --comment "ns1/web:p80" -m tcp --dport 30080 '
        f'-j {ext}',
    ]
    assert lines(nat, f"-A {ext}") == [
        f'-A {ext} -m comment --comment "masquerade traffic for ns1/web:p80 external '
        f'destinations" -j KUBE-MARK-MASQ',
        f"-A {ext} -j {svc_chain}",
    ]
    assert "KUBE-SVL" not in text
    # without xt_nfacct, or with localhost node ports off, only the plain rule remains
    plain = generate_rules(cluster(s), "n1", nfacct=False)
    assert len(lines(plain, "-A KUBE-NODEPORTS")) == 1
    assert "nfacct" not in plain
    off = generate_rules(cluster(s, localhost_node_ports=False), "n1")
    assert len(lines(table(off, "nat"), "-A KUBE-NODEPORTS")) == 1
    assert lines(table(off, "nat"), "-A KUBE-SERVICES")[-1] == (
        '-A KUBE-SERVICES ! -d 127.0.0.0/8 -m comment --comment "kubernetes service nodeports; '
        'NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL '
        '-j KUBE-NODEPORTS')


def lb_local() -> Service:
    return svc("lb", "10.0.0.60", port=443, port_name="https", type="LoadBalancer",
               node_port=30443, load_balancer_ips=[A("20.1.2.3")], health_check_node_port=32000,
               external_traffic_policy="Local",
               eps=[ep("10.244.0.7", 8443, "https", "n1"), ep("10.244.1.7", 8443, "https", "n2"),
                    ep("10.244.1.8", 8443, "https", "n2")])


def test_etp_local_loadbalancer_with_health_check():
    pn = "ns1/lb:https"
    ext, svc_c, svl = (kc.chain_name(p, pn, "tcp") for p in ("KUBE-EXT", "KUBE-SVC", "KUBE-SVL"))
    text = generate_rules(cluster(lb_local()), "n1")
    assert lines(table(text, "filter"), "-A KUBE-NODEPORTS") == [
        '-A KUBE-NODEPORTS -p tcp -m comment --comment "ns1/lb:https health check node port" '
        '-m tcp --dport 32000 -j ACCEPT']
    nat = table(text, "nat")
    assert f'-A KUBE-SERVICES -d 20.1.2.3/32 -p tcp -m comment --comment "{pn} loadbalancer IP" ' \
           f'-m tcp --dport 443 -j {ext}' in nat
    assert lines(nat, f"-A {ext}") == [
        f'-A {ext} -s 10.244.0.0/16 -m comment --comment "pod traffic for {pn} external '
        f'destinations" -j {svc_c}',
        f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {pn} external '
        f'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
        f'-A {ext} -m comment --comment "route LOCAL traffic for {pn} external destinations" '
        f'-m addrtype --src-type LOCAL -j {svc_c}',
        f"-A {ext} -j {svl}",
    ]
    # SVL: only the local endpoint, no masquerade; SVC: all three
    assert lines(nat, f"-A {svl}") == [
        f'-A {svl} -m comment --comment "{pn} -> 10.244.0.7:8443" -j '
        f'{kc.sep_chain_name(pn, "tcp", "10.244.0.7:8443")}']
    assert len(lines(nat, f"-A {svc_c}")) == 4
    assert "has no local endpoints" not in text

    # A node without a local endpoint: external traffic that is not short-circuited is dropped.
    on_other = cluster(lb_local())
    on_other.services[0].endpoints = [e for e in on_other.services[0].endpoints if e.node == "n2"]
    text = generate_rules(on_other, "n1")
    assert f":{svl} " not in text
    assert lines(table(text, "nat"), f"-A {ext}")[-1].endswith(f"-j {svc_c}")   # no -j SVL
    assert lines(table(text, "filter"), "-A KUBE-EXTERNAL-SERVICES") == [
        f'-A KUBE-EXTERNAL-SERVICES -d 20.1.2.3/32 -p tcp -m comment --comment "{pn} has no '
        f'local endpoints" -m tcp --dport 443 -j DROP',
        f'-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "{pn} has no local endpoints" '
        f'-m addrtype --dst-type LOCAL -m tcp --dport 30443 -j DROP',
    ]
    # the health check port is open whether or not this node has endpoints
    assert len(lines(table(text, "filter"), "-A KUBE-NODEPORTS")) == 1


def test_load_balancer_source_ranges():
    pn = "ns1/lb:https"
    s = svc("lb", "10.0.0.60", port=443, port_name="https", type="LoadBalancer", node_port=30443,
            load_balancer_ips=[A("20.1.2.3")],
            load_balancer_source_ranges=[N("203.0.113.0/24"), N("10.240.0.0/16")],
            eps=[ep("10.244.1.7", 8443, "https", "n2")])
    fw, ext = kc.chain_name("KUBE-FW", pn, "tcp"), kc.chain_name("KUBE-EXT", pn, "tcp")
    text = generate_rules(cluster(s), "n1")
    nat = table(text, "nat")
    assert f'-A KUBE-SERVICES -d 20.1.2.3/32 -p tcp -m comment --comment "{pn} loadbalancer IP" ' \
           f'-m tcp --dport 443 -j {fw}' in nat
    assert lines(nat, f"-A {fw}") == [
        f'-A {fw} -s 203.0.113.0/24 -m comment --comment "{pn} loadbalancer IP" -j {ext}',
        f'-A {fw} -s 10.240.0.0/16 -m comment --comment "{pn} loadbalancer IP" -j {ext}',
        # the node itself is inside a range, so the LB IP as source is allowed too
        f'-A {fw} -s 20.1.2.3/32 -m comment --comment "{pn} loadbalancer IP" -j {ext}',
        f'-A {fw} -m comment --comment "other traffic to {pn} will be dropped by '
        f'KUBE-PROXY-FIREWALL"',
    ]
    assert lines(table(text, "filter"), "-A KUBE-PROXY-FIREWALL") == [
        f'-A KUBE-PROXY-FIREWALL -d 20.1.2.3/32 -p tcp -m comment --comment "{pn} traffic not '
        f'accepted by {fw}" -m tcp --dport 443 -j DROP']
    # a zero-masked range allows everyone: no firewall chain at all
    s.load_balancer_source_ranges.append(N("0.0.0.0/0"))
    text = generate_rules(cluster(s), "n1")
    assert "KUBE-FW-" not in text
    assert f"--dport 443 -j {ext}" in text


def test_external_ips():
    s = svc("web", external_ips=[A("192.0.2.7")], eps=[ep("10.244.0.3", 8080, "p80")])
    text = generate_rules(cluster(s), "n1")
    ext = kc.chain_name("KUBE-EXT", "ns1/web:p80", "tcp")
    assert lines(table(text, "nat"), "-A KUBE-SERVICES")[1] == (
        f'-A KUBE-SERVICES -d 192.0.2.7/32 -p tcp -m comment --comment "ns1/web:p80 external IP" '
        f'-m tcp --dport 80 -j {ext}')


# --- no (usable) endpoints -----------------------------------------------------------------

def test_no_endpoints_rejects_in_filter():
    s = svc("empty", "10.0.0.43", port=53, port_name="dns", proto="UDP", type="NodePort",
            node_port=30053, external_ips=[A("192.0.2.9")])
    text = generate_rules(cluster(s), "n1")
    f = table(text, "filter")
    c = '"ns1/empty:dns has no endpoints"'
    assert lines(f, "-A KUBE-SERVICES") == [
        f"-A KUBE-SERVICES -d 10.0.0.43/32 -p udp -m comment --comment {c} -m udp --dport 53 "
        "-j REJECT --reject-with icmp-port-unreachable"]
    assert lines(f, "-A KUBE-EXTERNAL-SERVICES") == [
        f"-A KUBE-EXTERNAL-SERVICES -d 192.0.2.9/32 -p udp -m comment --comment {c} -m udp "
        "--dport 53 -j REJECT --reject-with icmp-port-unreachable",
        f"-A KUBE-EXTERNAL-SERVICES -p udp -m comment --comment {c} -m addrtype --dst-type LOCAL "
        "-m udp --dport 30053 -j REJECT --reject-with icmp-port-unreachable"]
    nat = table(text, "nat")
    assert "ns1/empty" not in nat and "KUBE-SVC-" not in nat and "KUBE-EXT-" not in nat
    # not-ready, not-terminating endpoints are no endpoints either
    s.endpoints = [ep("10.244.0.5", 53, "dns", proto="UDP", ready=False, serving=False)]
    assert generate_rules(cluster(s), "n1") == text


def test_itp_local_with_only_remote_endpoints_drops():
    s = svc("loc", internal_traffic_policy="Local", eps=[ep("10.244.1.3", 8080, "p80", "n2")])
    text = generate_rules(cluster(s), "n1")
    assert lines(table(text, "filter"), "-A KUBE-SERVICES") == [
        '-A KUBE-SERVICES -d 10.0.0.41/32 -p tcp -m comment --comment "ns1/loc:p80 has no local '
        'endpoints" -m tcp --dport 80 -j DROP']
    assert "KUBE-SVL-" not in text and "KUBE-SVC-" not in text and "KUBE-SEP-" not in text
    # on n2 the ClusterIP goes to the SVL chain with its local endpoint
    text2 = generate_rules(cluster(s), "n2")
    svl = kc.chain_name("KUBE-SVL", "ns1/loc:p80", "tcp")
    assert f'"ns1/loc:p80 cluster IP" -m tcp --dport 80 -j {svl}' in text2
    assert lines(text2, f"-A {svl}")[0].startswith(f"-A {svl} ! -s 10.244.0.0/16 -d 10.0.0.41/32")


def test_terminating_endpoints_fallback():
    term = dict(ready=False, serving=True, terminating=True)
    s = svc("t", eps=[ep("10.244.0.4", 8080, "p80", **term), ep("10.244.1.4", 8080, "p80", "n2",
                                                                  **term)])
    text = generate_rules(cluster(s), "n1")
    svc_chain = kc.chain_name("KUBE-SVC", "ns1/t:p80", "tcp")
    assert len(lines(text, f"-A {svc_chain}")) == 3               # masq + 2 endpoints
    assert text.count("-j DNAT") == 2
    # one ready endpoint anywhere: the terminating ones are not used
    s.endpoints.append(ep("10.244.1.9", 8080, "p80", "n2"))
    text = generate_rules(cluster(s), "n1")
    assert text.count("-j DNAT") == 1 and "10.244.1.9:8080" in text
    # a terminating but not serving endpoint is never used
    s.endpoints = [ep("10.244.0.4", 8080, "p80", ready=False, serving=False, terminating=True)]
    assert "has no endpoints" in generate_rules(cluster(s), "n1")


def test_etp_local_falls_back_to_local_terminating():
    s = lb_local()
    s.endpoints = [ep("10.244.0.7", 8443, "https", "n1", ready=False, terminating=True),
                   ep("10.244.1.7", 8443, "https", "n2")]
    text = generate_rules(cluster(s), "n1")
    svl = kc.chain_name("KUBE-SVL", "ns1/lb:https", "tcp")
    assert lines(text, f"-A {svl}") == [
        f'-A {svl} -m comment --comment "ns1/lb:https -> 10.244.0.7:8443" -j '
        f'{kc.sep_chain_name("ns1/lb:https", "tcp", "10.244.0.7:8443")}']
    assert text.count("-j DNAT") == 2          # the remote ready one (SVC) and the local one


# --- cluster-wide knobs --------------------------------------------------------------------

def test_large_cluster_drops_endpoint_comments():
    eps = [ep(f"10.244.{i // 250}.{i % 250 + 2}", 8080, "p80") for i in range(1001)]
    text = generate_rules(cluster(svc("big", eps=eps)), "n1")
    svc_chain = kc.chain_name("KUBE-SVC", "ns1/big:p80", "tcp")
    rules = lines(text, f"-A {svc_chain}")
    assert '"ns1/big:p80 cluster IP"' in rules[0]                # masquerade rule keeps it
    assert all("comment" not in r for r in rules[1:])
    seps = [ln for ln in text.splitlines() if ln.startswith("-A KUBE-SEP-")]
    assert len(seps) == 2002 and all("comment" not in r for r in seps)
    assert seps[1].startswith("-A KUBE-SEP-") and " -p tcp -m tcp -j DNAT " in seps[1]
    assert '"ns1/big:p80 cluster IP"' in "\n".join(lines(text, "-A KUBE-SERVICES"))
    # 1000 endpoints is not large yet
    small = generate_rules(cluster(svc("big", eps=eps[:1000])), "n1")
    assert all("comment" in r for r in lines(small, f"-A {svc_chain}"))


def test_masquerade_all():
    s = svc("svc1", eps=[ep("10.244.0.10", 8080, "p80")])
    text = generate_rules(cluster(s, masquerade_all=True), "n1")
    assert lines(text, "-A KUBE-SVC-XPGD46QRK7WJZT7O")[0] == (
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -d 10.0.0.41/32 -p tcp -m comment --comment '
        '"ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ')
    # an explicit kube-proxy clusterCIDR wins over the pod CIDR
    text = generate_rules(cluster(s, cluster_cidr=N("10.96.0.0/12")), "n1")
    assert lines(text, "-A KUBE-SVC-XPGD46QRK7WJZT7O")[0].startswith(
        "-A KUBE-SVC-XPGD46QRK7WJZT7O ! -s 10.96.0.0/12 ")


def test_headless_and_external_name_skipped():
    headless = svc("hl", None, eps=[ep("10.244.0.3", 8080, "p80")])
    extname = Service("ns1", "ext", type="ExternalName", external_name="example.com")
    assert generate_rules(cluster(headless, extname), "n1") == generate_rules(cluster(), "n1")


def test_udp_sctp_and_unnamed_port():
    udp = svc("dns", "10.0.0.10", port=53, port_name=None, proto="UDP",
              eps=[ep("10.244.0.5", 53, None, proto="UDP")])
    sctp = svc("sig", "10.0.0.11", port=3868, port_name="diam", proto="SCTP",
               eps=[ep("10.244.0.6", 3868, "diam", proto="SCTP")])
    text = generate_rules(cluster(udp, sctp), "n1")
    svc_udp = kc.chain_name("KUBE-SVC", "ns1/dns", "udp")
    assert f'-A KUBE-SERVICES -d 10.0.0.10/32 -p udp -m comment --comment "ns1/dns cluster IP" ' \
           f'-m udp --dport 53 -j {svc_udp}' in text
    sep = kc.sep_chain_name("ns1/sig:diam", "sctp", "10.244.0.6:3868")
    assert f'-A {sep} -p sctp -m comment --comment "ns1/sig:diam" -m sctp -j DNAT ' \
           f'--to-destination 10.244.0.6:3868' in text


def test_optional_node_facts():
    text = generate_rules(golden_cluster(), "n1", conntrack_tcp_be_liberal=True)
    assert "INVALID" not in text
    text = generate_rules(golden_cluster(), "n1", nfacct=False)
    assert "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP" in text
    bare = generate_rules(golden_cluster(), "n1", kubelet_chains=False)
    assert "KUBE-KUBELET-CANARY" not in bare and "KUBE-IPTABLES-HINT" not in bare
    # kube-proxy's own KUBE-FIREWALL jumps, inserted last, come first
    assert lines(bare, "-A INPUT")[0] == "-A INPUT -j KUBE-FIREWALL"
    assert lines(bare, "-A KUBE-FIREWALL")


def test_azure_ip_masq_agent():
    text = generate_rules(cluster(plugin="azure"), "n1")
    nat = table(text, "nat")
    assert "kubenet" not in text
    assert lines(nat, "-A POSTROUTING")[1] == (
        '-A POSTROUTING -m comment --comment "\\"ip-masq-agent: ensure nat POSTROUTING directs '
        'all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\\"" -m addrtype ! '
        '--dst-type LOCAL -j IP-MASQ-AGENT')
    assert lines(nat, "-A IP-MASQ-AGENT") == [
        '-A IP-MASQ-AGENT -d 169.254.0.0/16 -m comment --comment "ip-masq-agent: local traffic is '
        'not subject to MASQUERADE" -j RETURN',
        '-A IP-MASQ-AGENT -d 10.240.0.0/16 -m comment --comment "ip-masq-agent: local traffic is '
        'not subject to MASQUERADE" -j RETURN',
        '-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: outbound traffic is subject to '
        'MASQUERADE (must be last in chain)" -j MASQUERADE']


# --- against the real iptables, in a throwaway network namespace ---------------------------

def rich_cluster(plugin: str = "kubenet", **kp) -> Cluster:
    """Every feature at once."""
    term = dict(ready=False, serving=True, terminating=True)
    aff = svc("sticky", "10.0.0.44", session_affinity="ClientIP", affinity_timeout=600,
              eps=[ep("10.244.0.20", 8080, "p80"), ep("10.244.1.20", 8080, "p80", "n2")])
    fw = svc("fw", "10.0.0.45", port=443, port_name="https", type="LoadBalancer",
             node_port=30444, load_balancer_ips=[A("20.1.2.4"), A("20.1.2.5")],
             load_balancer_source_ranges=[N("203.0.113.0/24"), N("10.240.0.0/16")],
             eps=[ep("10.244.1.21", 8443, "https", "n2")])
    return cluster(
        svc("svc1", eps=[ep(f"10.244.{i % 2}.{i + 2}", 8080, "p80", f"n{i % 2 + 1}")
                         for i in range(7)]),
        aff, fw, lb_local(),
        svc("np", "10.0.0.46", type="NodePort", node_port=30080, external_ips=[A("192.0.2.8")],
            eps=[ep("10.244.1.22", 8080, "p80", "n2")]),
        svc("npl", "10.0.0.47", type="NodePort", node_port=30081, external_traffic_policy="Local",
            external_ips=[A("192.0.2.10")], eps=[ep("10.244.1.23", 8080, "p80", "n2")]),
        svc("empty", "10.0.0.43", port=53, port_name="dns", proto="UDP", type="NodePort",
            node_port=30053, external_ips=[A("192.0.2.9")]),
        svc("loc", "10.0.0.48", internal_traffic_policy="Local",
            eps=[ep("10.244.1.24", 8080, "p80", "n2")]),
        svc("loc2", "10.0.0.49", internal_traffic_policy="Local",
            eps=[ep("10.244.0.25", 8080, "p80"), ep("10.244.1.25", 8080, "p80", "n2")]),
        svc("term", "10.0.0.50", eps=[ep("10.244.0.26", 8080, "p80", **term)]),
        svc("dns", "10.0.0.10", port=53, port_name=None, proto="UDP",
            eps=[ep("10.244.0.5", 53, None, proto="UDP"), ep("10.244.1.5", 53, None, "n2",
                                                            proto="UDP")]),
        svc("sig", "10.0.0.51", port=3868, port_name="diam", proto="SCTP",
            eps=[ep("10.244.0.6", 3868, "diam", proto="SCTP")]),
        svc("hl", None, eps=[ep("10.244.0.3", 8080, "p80")]),
        Service("ns1", "extname", type="ExternalName", external_name="example.com"),
        Service("odd-ns", "quote", cluster_ip=A("10.0.0.52"),
                ports=[ServicePort(8080, name="http-alt", node_port=None)],
                endpoints=[ep("10.244.0.27", 8080, "http-alt")]),
        plugin=plugin, **kp)


def _ip_tool(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, **kw)


@pytest.fixture
def netns():
    """A throwaway network namespace; the host's iptables are never touched."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    for tool in ("ip", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    name = f"kdpkp-{os.getpid()}"
    made = _ip_tool("ip", "netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"cannot create network namespace: {made.stderr.strip()}")
    try:
        yield name
    finally:
        _ip_tool("ip", "netns", "del", name)


def restore(ns: str, text: str, *flags: str) -> subprocess.CompletedProcess:
    return _ip_tool("ip", "netns", "exec", ns, "iptables-restore", *flags, input=text)


def saved(ns: str) -> str:
    out = _ip_tool("ip", "netns", "exec", ns, "iptables-save", check=True).stdout
    return "".join(ln for ln in out.splitlines(True) if not ln.startswith("#"))


def kernel_has_nfacct(ns: str) -> bool:
    # A real load (--test only parses): the filter table is replaced by the test's restore.
    probe = ("*filter\n:KDP-PROBE - [0:0]\n"
             "-A KDP-PROBE -m nfacct --nfacct-name kdp -j RETURN\nCOMMIT\n")
    return restore(ns, probe).returncode == 0


VARIANTS = {
    "kubenet": lambda: (rich_cluster(), {}),
    "azure-masqall-no-localhost": lambda: (
        rich_cluster("azure", masquerade_all=True, localhost_node_ports=False),
        {"iptables_supports_random_fully": False}),
    "bare-kube-proxy": lambda: (rich_cluster(), {"kubelet_chains": False,
                                                 "conntrack_tcp_be_liberal": True}),
}


@pytest.mark.root
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_real_iptables_restore_accepts_rules(netns, variant):
    c, kw = VARIANTS[variant]()
    for node in ("n1", "n2"):
        text = generate_rules(c, node, nfacct=False, **kw)
        r = restore(netns, text, "--test")
        assert r.returncode == 0, r.stderr


@pytest.mark.root
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_real_iptables_save_prints_exactly_our_text(netns, variant):
    c, kw = VARIANTS[variant]()
    for node in ("n1", "n2"):
        text = generate_rules(c, node, nfacct=False, **kw)
        r = restore(netns, text)                    # a full restore replaces every table given
        assert r.returncode == 0, r.stderr
        assert saved(netns) == text


@pytest.mark.root
def test_real_iptables_save_large_cluster(netns):
    eps = [ep(f"10.244.{i // 250}.{i % 250 + 2}", 8080, "p80") for i in range(1001)]
    text = generate_rules(cluster(svc("big", eps=eps)), "n1", nfacct=False)
    r = restore(netns, text)
    assert r.returncode == 0, r.stderr
    assert saved(netns) == text


@pytest.mark.root
def test_real_iptables_save_with_nfacct(netns):
    if not kernel_has_nfacct(netns):
        pytest.skip("this kernel has no xt_nfacct (kube-proxy would leave its counters out too)")
    text = generate_rules(rich_cluster(), "n1")
    r = restore(netns, text)
    assert r.returncode == 0, r.stderr
    assert saved(netns) == text


def test_non_masquerade_cidrs_from_the_cluster_config():
    from ipaddress import IPv4Network
    c = cluster()
    c.config.non_masquerade_cidrs = [IPv4Network("10.0.0.0/8")]
    nat = table(generate_rules(c, "n1"), "nat")
    returns = [l for l in lines(nat, "-A IP-MASQ-AGENT") if l.endswith("-j RETURN")]
    assert [l.split()[3] for l in returns] == ["169.254.0.0/16", "10.0.0.0/8"]


def test_kdp_rules_command_output_is_accepted_by_real_iptables(netns, capsys):
    """`kdp rules demo --node N`, for every demo node, through the real binaries."""
    from kdp.cli import main
    from kdp.k8s import demo_cluster
    for node in demo_cluster().nodes:
        assert main(["rules", "demo", "--node", node.name]) == 0
        text = capsys.readouterr().out
        r = restore(netns, text, "--test")
        assert r.returncode == 0, r.stderr
        assert restore(netns, text).returncode == 0
        assert saved(netns) == text


@pytest.mark.root
@pytest.mark.parametrize("source", ["all", "kube-proxy", "kubelet", "ip-masq-agent"])
def test_real_iptables_save_prints_sctp_and_node_option_rules_exactly(netns, source):
    """Issue 13: an SCTP Service's `-m sctp` rules, nodePortAddresses (loopback
    included), MASQUERADE without --random-fully, no INVALID drop; every --source view."""
    from kdp.k8s import load_cluster_text
    from kdp.k8s.kubeproxy import node_rules
    text = ("apiVersion: kdp.dev/v1alpha1\nkind: ClusterConfig\nmetadata: {name: c}\nspec:\n"
            "  kubeProxy: {nodePortAddresses: [10.0.0.0/8, 127.0.0.0/8], iptablesRandomFully: false, "
            "conntrackTCPBeLiberal: true}\n---\napiVersion: v1\nkind: Pod\n"
            "metadata: {name: p, namespace: default, labels: {app: s}}\n"
            "spec: {containers: [{name: c, ports: [{containerPort: 80, protocol: SCTP}]}]}\n"
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\n"
            "spec: {type: NodePort, selector: {app: s}, ports: [{port: 80, protocol: SCTP, "
            "nodePort: 30099}]}\n")
    c = load_cluster_text(text, file="t.yaml")
    rules = node_rules(c, c.nodes[0].name, source)
    if source in ("all", "kube-proxy"):
        assert "-m sctp --dport 30099" in rules and "-d 127.0.0.1/32" in rules
    r = restore(netns, rules)
    assert r.returncode == 0, r.stderr
    assert saved(netns) == rules
