# Matches over conntrack state (conntrack, state), the statistic match
# (keyed-hash random, forcing, nth) and the recent match.
from collections import Counter

from kdp.netfilter import SkbMeta, StatisticQuery
from nf_helpers import (deliver, forward, hook, icmp_error, make_nf, reply_to, rules_hit, tcp, udp,
                        with_ports)

CLIENT, VIP, EP = "10.244.0.5", "10.0.12.34", "10.244.1.6"


def fwd_state_nf(opts):
    return make_nf(filter=[f"-A FORWARD {opts} -j DROP"])


def dropped(results):
    return results[-1].verdict == "DROP"


def test_ctstate_new_then_established_and_reply():
    nf = fwd_state_nf("-m conntrack --ctstate ESTABLISHED")
    syn = tcp(CLIENT, EP, 40000, 80, "S")
    res, meta = forward(nf, syn)
    assert not dropped(res) and meta.state == "NEW"
    res, meta = forward(nf, reply_to(syn, "SA"), in_dev="eth0", out_dev="cbr0")
    assert dropped(res) and meta.ctinfo == "ESTABLISHED_REPLY"


def test_ctstate_new_is_seen_until_a_reply():
    nf = fwd_state_nf("-m conntrack --ctstate NEW")
    syn = tcp(CLIENT, EP, 40000, 80, "S")
    assert dropped(forward(nf, syn)[0])            # dropped before confirm: no entry kept
    assert len(nf.conntrack) == 0


def test_ctstate_invalid_for_a_stray_syn_ack():
    nf = fwd_state_nf("-m conntrack --ctstate INVALID")
    res, meta = forward(nf, tcp(EP, CLIENT, 80, 40000, "SA"))
    assert dropped(res) and meta.ct is None and meta.state == "INVALID"
    assert "SYN_ACK" in (meta.invalid or "").replace("[S.]", "SYN_ACK") or meta.invalid


def test_ctstate_untracked_after_notrack():
    nf = make_nf(raw=["-A PREROUTING -p udp -m udp --dport 6081 -j NOTRACK"],
                 filter=["-A FORWARD -m conntrack --ctstate UNTRACKED -j DROP"])
    res, meta = forward(nf, udp(CLIENT, EP, 5000, 6081))
    assert dropped(res) and meta.state == "UNTRACKED" and len(nf.conntrack) == 0
    res, _ = forward(nf, udp(CLIENT, EP, 5000, 6082))
    assert not dropped(res)


def test_ctstate_dnat_and_snat_bits():
    nf = make_nf(nat=["-A PREROUTING -d 10.0.12.34 -p tcp -j DNAT --to-destination 10.244.1.6:8080"],
                 filter=["-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT",
                         "-A FORWARD -m conntrack ! --ctstate DNAT,SNAT -j DROP"])
    res, _ = forward(nf, tcp(CLIENT, VIP, 40000, 80))
    assert res[-1].verdict == "ACCEPT"
    assert ("filter", "FORWARD", 1) in rules_hit(res[1])
    res, _ = forward(nf, tcp(CLIENT, EP, 40001, 80))
    assert dropped(res)


def test_ctstate_related_for_icmp_error():
    nf = make_nf(filter=["-A FORWARD -m conntrack --ctstate RELATED -j DROP"])
    p = udp(CLIENT, EP, 5000, 53)
    forward(nf, p)
    err = icmp_error(EP, CLIENT, p)
    res, meta = forward(nf, err, in_dev="eth0", out_dev="cbr0")
    assert dropped(res) and meta.ctinfo == "RELATED_REPLY"


def test_ctorig_and_repl_addresses_ports_proto_status_dir():
    nf = make_nf(nat=["-A PREROUTING -d 10.0.12.34 -p tcp -j DNAT --to-destination 10.244.1.6:8080"],
                 filter=["-A FORWARD -m conntrack --ctorigdst 10.0.12.34 --ctrepldst 10.244.0.5 "
                         "--ctreplsrc 10.244.1.6/32 --ctorigsrc 10.244.0.0/16 --ctproto tcp "
                         "--ctorigdstport 80 --ctreplsrcport 8080 --ctdir ORIGINAL",
                         "-A FORWARD -m conntrack --ctstatus SEEN_REPLY",
                         "-A FORWARD -m conntrack ! --ctstatus CONFIRMED",
                         "-A FORWARD -m conntrack --ctdir REPLY",
                         "-A FORWARD -m conntrack ! --ctorigdstport 80",
                         "-A FORWARD -m conntrack --ctexpire 100:120"])
    syn = tcp(CLIENT, VIP, 40000, 80)
    res, _ = forward(nf, syn)
    hits = [n for (_t, c, n) in rules_hit(res[1]) if c == "FORWARD"]
    assert hits == [1, 3, 6]      # unconfirmed, no reply yet, original, SYN_SENT 120 s left
    res, _ = forward(nf, tcp(EP, CLIENT, 8080, 40000, "SA"), now=2.0, in_dev="eth0", out_dev="cbr0")
    hits = [n for (_t, c, n) in rules_hit(res[1]) if c == "FORWARD"]
    assert hits == [2, 4]         # SEEN_REPLY (set in PREROUTING), reply dir, SYN_RECV 60 s
    res, _ = forward(nf, tcp(CLIENT, VIP, 40000, 80, "A"), now=3.0)
    hits = [n for (_t, c, n) in rules_hit(res[1]) if c == "FORWARD"]
    assert hits == [1, 2]


def test_state_match():
    nf = make_nf(filter=["-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT",
                         "-A INPUT -m state ! --state NEW -j DROP"])
    syn = tcp(CLIENT, "10.244.0.1", 40000, 22)
    res, _ = deliver(nf, syn)
    assert res[-1].verdict == "ACCEPT" and rules_hit(res[-1]) == []
    res, _ = deliver(nf, tcp(CLIENT, "10.244.0.1", 40001, 22, "SA"))   # INVALID
    assert res[-1].reason == "rule:filter/INPUT#2"


# --- statistic -------------------------------------------------------------

SVC3 = ["-A PREROUTING -d 10.0.12.34 -p tcp -j KUBE-SVC-X",
        "-A KUBE-SVC-X -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-A",
        "-A KUBE-SVC-X -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-B",
        "-A KUBE-SVC-X -j KUBE-SEP-C",
        "-A KUBE-SEP-A -p tcp -j DNAT --to-destination 10.244.1.1:80",
        "-A KUBE-SEP-B -p tcp -j DNAT --to-destination 10.244.1.2:80",
        "-A KUBE-SEP-C -p tcp -j DNAT --to-destination 10.244.1.3:80"]


SYN = tcp(CLIENT, VIP, 1, 80)


def chosen(nf, sport, now=1.0):
    r, _ = hook(nf, "PREROUTING", with_ports(SYN, sport), now=now)
    return str(r.packet.ip.dst)


def test_statistic_is_a_pure_function_of_seed_namespace_and_tuple():
    a, b = make_nf(seed=1, nat=SVC3), make_nf(seed=1, nat=SVC3)
    picks_a = [chosen(a, p) for p in range(20000, 20200)]
    picks_b = [chosen(b, p) for p in reversed(range(20000, 20200))][::-1]   # other order
    assert picks_a == picks_b
    other_seed = [chosen(make_nf(seed=2, nat=SVC3), p) for p in range(20000, 20200)]
    assert other_seed != picks_a
    other_ns = [chosen(make_nf(seed=1, name="node/b", nat=SVC3), p) for p in range(20000, 20200)]
    assert other_ns != picks_a


def test_statistic_spreads_evenly_over_three_endpoints():
    nf = make_nf(seed=7, nat=SVC3)
    nf.trace_misses = False
    counts = Counter(chosen(nf, 1024 + i) for i in range(3000))
    assert set(counts) == {"10.244.1.1", "10.244.1.2", "10.244.1.3"}
    assert all(900 <= n <= 1100 for n in counts.values()), counts


def test_statistic_can_be_forced():
    nf = make_nf(nat=SVC3)
    asked = []

    def force(q: StatisticQuery):
        asked.append((q.table, q.chain, q.rule_number, round(q.probability, 3), q.namespace))
        return q.rule_number == 2           # always the second endpoint

    nf.force_statistic = force
    assert {chosen(nf, p) for p in range(30000, 30020)} == {"10.244.1.2"}
    assert asked[0] == ("nat", "KUBE-SVC-X", 1, 0.333, "node/a")
    nf.force_statistic = lambda q: None      # None: back to the keyed hash
    assert len({chosen(nf, p) for p in range(30000, 30060)}) == 3


def test_statistic_inverted_and_extremes():
    always = make_nf(filter=["-A INPUT -m statistic --mode random --probability 1 -j DROP"])
    never = make_nf(filter=["-A INPUT -m statistic --mode random --probability 0 -j DROP"])
    inv = make_nf(filter=["-A INPUT -m statistic --mode random ! --probability 0 -j DROP"])
    p = tcp(CLIENT, "10.244.0.1")
    assert hook(always, "INPUT", p)[0].verdict == "DROP"
    assert hook(never, "INPUT", p)[0].verdict == "ACCEPT"
    assert hook(inv, "INPUT", p)[0].verdict == "DROP"


def test_statistic_uses_the_connections_original_tuple():
    # the reply direction of a connection would hash the same as the original
    nf = make_nf(seed=3, mangle=["-A FORWARD -m statistic --mode random --probability 0.5 "
                                 "-j MARK --set-mark 1"])
    marks = set()
    syn = tcp(CLIENT, EP, 41000, 80)
    for pkt in (syn, reply_to(syn, "SA"), tcp(CLIENT, EP, 41000, 80, "A")):
        meta = SkbMeta()
        forward(nf, pkt, meta=meta)
        marks.add(meta.mark)
    assert len(marks) == 1


def test_statistic_nth_counts_per_rule():
    """Checked on Linux 6.18: --every N --packet P matches packets P+1, P+1+N, ..."""
    nf = make_nf(filter=["-A INPUT -m statistic --mode nth --every 3 --packet 0 -j DROP"])
    verdicts = [hook(nf, "INPUT", tcp(CLIENT, "10.244.0.1", 1000 + i))[0].verdict for i in range(7)]
    assert verdicts == ["DROP", "ACCEPT", "ACCEPT", "DROP", "ACCEPT", "ACCEPT", "DROP"]
    nf = make_nf(filter=["-A INPUT -m statistic --mode nth --every 3 --packet 2 -j DROP"])
    verdicts = [hook(nf, "INPUT", tcp(CLIENT, "10.244.0.1", 1000 + i))[0].verdict for i in range(7)]
    assert verdicts == ["ACCEPT", "ACCEPT", "DROP", "ACCEPT", "ACCEPT", "DROP", "ACCEPT"]


# --- recent ---------------------------------------------------------------

def test_recent_session_affinity_rcheck_seconds_reap():
    nf = make_nf(filter=[
        "-A INPUT -m recent --name AFF --rcheck --seconds 10 --reap -j DROP",
        "-A INPUT -p tcp -m recent --name AFF --set -j ACCEPT"])
    p = tcp(CLIENT, "10.244.0.1")
    assert hook(nf, "INPUT", p, now=100.0)[0].verdict == "ACCEPT"      # --set
    assert hook(nf, "INPUT", p, now=105.0)[0].verdict == "DROP"        # seen 5 s ago
    assert hook(nf, "INPUT", tcp("10.244.0.6", "10.244.0.1"), now=105.0)[0].verdict == "ACCEPT"
    assert hook(nf, "INPUT", p, now=110.0)[0].verdict == "DROP"        # exactly 10 s: still in
    # 10.244.0.6 was set at 105 (LRU tail); CLIENT's last stamp is 100 -> reaped at 120
    assert hook(nf, "INPUT", p, now=120.5)[0].verdict == "ACCEPT"
    assert [str(a) for a in nf.recent.table("AFF").entries] == ["10.244.0.6", CLIENT]


def test_recent_update_hitcount_and_remove():
    nf = make_nf(filter=[
        "-A INPUT -p tcp -m tcp --dport 1 -m recent --name R --remove -j ACCEPT",
        "-A INPUT -m recent --name R --update --seconds 60 --hitcount 3 -j DROP",
        "-A INPUT -m recent --name R --set -j ACCEPT"])
    p = tcp(CLIENT, "10.244.0.1", dport=22)
    v = [hook(nf, "INPUT", p, now=t)[0].verdict for t in (1, 2, 3, 4, 5)]
    assert v == ["ACCEPT", "ACCEPT", "ACCEPT", "DROP", "DROP"]   # 3 stamps needed, then update
    assert hook(nf, "INPUT", tcp(CLIENT, "10.244.0.1", dport=1), now=5)[0].verdict == "ACCEPT"
    assert not nf.recent.table("R").entries


def test_recent_rdest_and_mask_and_namespaces_are_separate():
    rules = ["-A INPUT -m recent --name D --rcheck --rdest --mask 255.255.255.0 -j DROP",
             "-A INPUT -m recent --name D --set --rdest --mask 255.255.255.0 -j ACCEPT"]
    nf = make_nf(filter=rules)
    hook(nf, "INPUT", tcp(CLIENT, "10.244.0.1"))
    assert hook(nf, "INPUT", tcp("10.9.9.9", "10.244.0.77"))[0].verdict == "DROP"   # same /24
    other = make_nf(name="node/b", filter=rules)
    assert hook(other, "INPUT", tcp("10.9.9.9", "10.244.0.77"))[0].verdict == "ACCEPT"


def test_recent_inverted_rcheck():
    nf = make_nf(filter=["-A INPUT -m recent ! --rcheck --name X -j DROP"])
    assert hook(nf, "INPUT", tcp(CLIENT, "10.244.0.1"))[0].verdict == "DROP"
