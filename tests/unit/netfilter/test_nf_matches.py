# The stateless matches and the IP part of a rule, one behaviour per test,
# each with the case that must not match (and the inverted form).
import pytest

from kdp.netfilter import SkbMeta
from nf_helpers import hook, icmp, make_nf, tcp, udp

TABLE_FOR = {"PREROUTING": "mangle", "INPUT": "filter", "FORWARD": "filter", "OUTPUT": "filter",
             "POSTROUTING": "mangle"}


def hit(opts: str, pkt, hook_name="INPUT", meta=None, **hs) -> bool:
    nf = make_nf(**{TABLE_FOR[hook_name]: [f"-A {hook_name} {opts}"]})
    r, _ = hook(nf, hook_name, pkt, meta or SkbMeta(), **hs)
    outcomes = [t.outcome for t in r.trace if t.kind == "rule"]
    assert len(outcomes) == 1
    return outcomes[0] == "match"


P = tcp("10.244.0.5", "10.0.12.34", 40000, 80, "S")


@pytest.mark.parametrize("opts,expected", [
    ("-s 10.244.0.0/24", True), ("-s 10.244.1.0/24", False), ("! -s 10.244.0.0/24", False),
    ("! -s 10.244.1.0/24", True), ("-d 10.0.12.34", True), ("-d 10.0.12.35", False),
    ("-d 10.0.0.0/16", True), ("! -d 10.0.0.0/8", False),
    ("-p tcp", True), ("-p udp", False), ("! -p udp", True), ("-p 6", True), ("-p all", True),
    ("-i cbr0", True), ("-i cbr+", True), ("-i eth+", False), ("! -i cbr0", False),
    ("-i +", True),
])
def test_ip_part(opts, expected):
    assert hit(opts, P, in_dev="cbr0") is expected


def test_out_interface_needs_an_output_device():
    assert hit("-o eth0", P, "FORWARD", in_dev="cbr0", out_dev="eth0")
    assert not hit("-o eth1", P, "FORWARD", in_dev="cbr0", out_dev="eth0")
    assert hit("! -o eth1", P, "FORWARD", in_dev="cbr0", out_dev="eth0")


@pytest.mark.parametrize("opts,expected", [
    ("-p tcp -m tcp --dport 80", True), ("-p tcp -m tcp --dport 81", False),
    ("-p tcp -m tcp ! --dport 80", False), ("-p tcp --dport 1:100", True),
    ("-p tcp --dport 81:65535", False), ("-p tcp --sport 40000", True),
    ("-p tcp --sport 30000:39999", False), ("-p tcp ! --sport 30000:39999", True),
    ("-p tcp --syn", True), ("-p tcp ! --syn", False),
    ("-p tcp --tcp-flags SYN,ACK SYN", True), ("-p tcp --tcp-flags SYN,ACK SYN,ACK", False),
    ("-p tcp ! --tcp-flags ALL NONE", True),
])
def test_tcp(opts, expected):
    assert hit(opts, P) is expected


def test_tcp_flags_on_an_ack():
    ack = tcp("10.244.0.5", "10.0.12.34", 40000, 80, "A")
    assert not hit("-p tcp --syn", ack)
    assert hit("-p tcp --tcp-flags SYN,ACK ACK", ack)


def test_tcp_match_never_matches_udp():
    # -p tcp is required by the tcp match; a UDP packet fails the -p part
    assert not hit("-p tcp -m tcp --dport 53", udp("10.244.0.5", "10.0.0.10", 5000, 53))


@pytest.mark.parametrize("opts,expected", [
    ("-p udp --dport 53", True), ("-p udp --dport 54", False), ("-p udp ! --dport 54", True),
    ("-p udp --sport 5000", True), ("-p udp -m udp ! --sport 5000", False),
])
def test_udp(opts, expected):
    assert hit(opts, udp("10.244.0.5", "10.0.0.10", 5000, 53)) is expected


@pytest.mark.parametrize("opts,pkt,expected", [
    ("--icmp-type echo-request", icmp("1.1.1.1", "2.2.2.2", 8), True),
    ("--icmp-type echo-request", icmp("1.1.1.1", "2.2.2.2", 0), False),
    ("--icmp-type 8", icmp("1.1.1.1", "2.2.2.2", 8, 0), True),
    ("--icmp-type 3/3", icmp("1.1.1.1", "2.2.2.2", 3, 3), True),
    ("--icmp-type 3/3", icmp("1.1.1.1", "2.2.2.2", 3, 1), False),
    ("--icmp-type destination-unreachable", icmp("1.1.1.1", "2.2.2.2", 3, 1), True),
    ("! --icmp-type port-unreachable", icmp("1.1.1.1", "2.2.2.2", 3, 1), True),
    ("! --icmp-type any", icmp("1.1.1.1", "2.2.2.2", 3, 1), False),
    ("--icmp-type any", icmp("1.1.1.1", "2.2.2.2", 13), True),
])
def test_icmp(opts, pkt, expected):
    assert hit("-p icmp -m icmp " + opts, pkt) is expected


@pytest.mark.parametrize("opts,expected", [
    ("--dports 22,80,443", True), ("--dports 22,443", False), ("--dports 1:79,81", False),
    ("--dports 70:90", True), ("! --dports 22,443", True), ("! --dports 80", False),
    ("--sports 40000", True), ("--sports 80", False), ("--ports 80", True),
    ("--ports 40000", True), ("--ports 81", False),
])
def test_multiport(opts, expected):
    assert hit("-p tcp -m multiport " + opts, P) is expected


def test_comment_always_matches():
    assert hit('-m comment --comment "default/nginx:http cluster IP"', P)


@pytest.mark.parametrize("mark,opts,expected", [
    (0x4000, "--mark 0x4000/0x4000", True), (0x4001, "--mark 0x4000/0x4000", True),
    (0x0, "--mark 0x4000/0x4000", False), (0x0, "! --mark 0x4000/0x4000", True),
    (0x4001, "--mark 0x4000", False), (0x4001, "--mark 0x4001", True), (7, "--mark 0x7", True),
])
def test_mark(mark, opts, expected):
    assert hit("-m mark " + opts, P, meta=SkbMeta(mark=mark)) is expected


def test_mac_source():
    assert hit("-m mac --mac-source 0A:58:0A:F4:00:05", P, "PREROUTING")
    assert not hit("-m mac --mac-source 0a:58:0a:f4:00:06", P, "PREROUTING")
    assert hit("-m mac ! --mac-source 0a:58:0a:f4:00:06", P, "PREROUTING")


@pytest.mark.parametrize("opts,physin,physout,expected", [
    ("--physdev-in veth1", "veth1", None, True),
    ("--physdev-in veth2", "veth1", None, False),
    ("--physdev-in veth+", "veth1", None, True),
    ("! --physdev-in veth2", "veth1", None, True),
    ("--physdev-in veth1", None, None, False),          # not bridged
    ("! --physdev-in veth1", None, None, True),         # not bridged, inverted option
    ("--physdev-is-in", "veth1", None, True),
    ("--physdev-is-out", "veth1", None, False),
    ("! --physdev-is-out", "veth1", None, True),
    ("--physdev-is-bridged", "veth1", "veth2", True),
    ("--physdev-is-bridged", "veth1", None, False),
    ("! --physdev-is-bridged", "veth1", None, True),
    ("--physdev-out veth2", "veth1", "veth2", True),
    ("--physdev-out veth2", "veth1", None, False),
    ("--physdev-out veth3", "veth1", "veth2", False),
])
def test_physdev(opts, physin, physout, expected):
    assert hit("-m physdev " + opts, P, "FORWARD", physin=physin, physout=physout) is expected


@pytest.mark.parametrize("dst,opts,expected", [
    ("10.244.0.1", "--dst-type LOCAL", True), ("10.0.12.34", "--dst-type LOCAL", False),
    ("10.0.12.34", "! --dst-type LOCAL", True), ("10.0.12.34", "--dst-type UNICAST", True),
    ("10.244.0.255", "--dst-type BROADCAST", True), ("224.0.0.5", "--dst-type MULTICAST", True),
    ("10.224.0.4", "--dst-type LOCAL,BROADCAST", True),
    ("10.224.0.4", "--src-type LOCAL", False), ("10.224.0.4", "--src-type UNICAST", True),
])
def test_addrtype(dst, opts, expected):
    assert hit("-m addrtype " + opts, tcp("10.244.0.5", dst)) is expected


def test_addrtype_limit_iface_in_uses_only_that_device():
    p = tcp("10.244.0.5", "10.224.0.4")           # 10.224.0.4 is on eth0, not on cbr0
    assert hit("-m addrtype --dst-type LOCAL", p, "PREROUTING", in_dev="cbr0")
    assert not hit("-m addrtype --dst-type LOCAL --limit-iface-in", p, "PREROUTING", in_dev="cbr0")
    assert hit("-m addrtype --dst-type LOCAL --limit-iface-in", p, "PREROUTING", in_dev="eth0")


def test_rules_match_in_order_and_all_matches_must_hold():
    nf = make_nf(filter=["-A INPUT -p tcp -m tcp --dport 80 -m mark --mark 0x1 -j DROP",
                         "-A INPUT -p tcp -m tcp --dport 80 -j REJECT"])
    r, _ = hook(nf, "INPUT", P, SkbMeta(mark=1))
    assert r.reason == "rule:filter/INPUT#1" and not r.rejected
    r, _ = hook(nf, "INPUT", P, SkbMeta(mark=0))
    assert r.reason == "rule:filter/INPUT#2" and r.rejected
