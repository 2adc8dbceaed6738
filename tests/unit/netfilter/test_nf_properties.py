# Properties: printing is a fixed point of parse∘print for any rule built
# from supported fragments, and NAT through the hooks always leaves valid
# checksums and is undone exactly on the reply.
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdp.netfilter import parse_iptables_save
from nf_helpers import checksums_ok, forward, make_nf, reply_to, ruleset_text, tcp, udp, with_ports

CATEGORIES = [      # at most one fragment per category, as iptables itself requires
    ["-s 10.0.0.0/8", "! -s 10.244.0.0/16"], ["-d 10.1.2.3", "! -d 192.168.0.0/255.255.0.0"],
    ["-i cbr0", "! -i veth+"], ['-m comment --comment "a b \\"c\\""', "-m comment --comment plain"],
    ["-m mark --mark 0x4000/0x4000", "-m mark ! --mark 7"],
    ["-m conntrack --ctstate NEW,ESTABLISHED", "-m conntrack ! --ctstate INVALID --ctorigdst 10.0.0.1/32",
     "-m state --state RELATED"],
    ["-m addrtype ! --dst-type LOCAL", "-m addrtype --src-type LOCAL,BROADCAST --limit-iface-in"],
    ["-m statistic --mode random --probability 0.25", "-m statistic --mode nth --every 4 --packet 2"],
    ["-m recent --name X --rcheck --seconds 60 --reap", "-m recent --set --rdest"],
    ["-m physdev --physdev-is-bridged", "-m mac --mac-source 0A:0B:0C:0D:0E:0F"],
]
PROTO_FRAGMENTS = ["-p tcp -m tcp --dport 80", "-p tcp --sport 1:1023 ! --syn",
                   "-p udp -m udp ! --dport 53", "-p tcp -m multiport --dports 80,443,8000:8080",
                   "-p icmp -m icmp --icmp-type echo-request", ""]
TARGETS = ["", "-j ACCEPT", "-j DROP", "-j RETURN", "-j MARK --or-mark 0x4000",
           "-j CONNMARK --save-mark", '-j LOG --log-prefix "x: "', "-j USERCHAIN"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(*(st.sampled_from([""] + c) for c in CATEGORIES)).map(list).flatmap(st.permutations),
       st.sampled_from(PROTO_FRAGMENTS), st.sampled_from(TARGETS))
def test_print_parse_print_is_stable(frags, proto, target):
    rule = " ".join(x for x in (proto, *frags, target) if x)
    text = ruleset_text(mangle=[f"-A PREROUTING {rule}", "-A USERCHAIN -j RETURN"])
    once = parse_iptables_save(text).to_iptables_save(counters=True)
    assert parse_iptables_save(once).to_iptables_save(counters=True) == once


NF = None


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 65535), st.integers(1, 65535), st.booleans(), st.integers(0, 3))
def test_nat_keeps_checksums_valid_and_reply_is_undone(sport, dport, is_udp, which):
    global NF
    if NF is None:
        NF = make_nf(seed=9, max_entries=1 << 16, nat=[
            "-A PREROUTING -d 10.0.12.34 -j DNAT --to-destination 10.244.1.6",
            "-A POSTROUTING -o eth0 -j MASQUERADE --random-fully"])
    base = udp("10.244.0.5", "10.0.12.34") if is_udp else tcp("10.244.0.5", "10.0.12.34")
    src = f"10.244.0.{5 + which}"
    p = with_ports(base, sport, dport)
    from dataclasses import replace
    from kdp import wire
    p = wire.finalize(replace(p, ip=replace(p.ip, src=wire.IPv4Address(src))))
    res, _ = forward(NF, p, now=1.0)
    if res[-1].verdict != "ACCEPT":
        return                                   # a clash with an earlier example
    out = res[-1].packet
    assert checksums_ok(out) and str(out.ip.dst) == "10.244.1.6" and str(out.ip.src) == "10.224.0.4"
    back = forward(NF, reply_to(out), 1.1, "eth0", "cbr0")[0][-1].packet
    assert checksums_ok(back)
    assert (str(back.ip.src), str(back.ip.dst)) == ("10.0.12.34", src)
    assert (back.l4.sport, back.l4.dport) == (dport, sport)
