# The chain walk: jump, goto, RETURN, falling off user chains, policies,
# counters, the trace of every rule visited, and the hook order.
from kdp.netfilter import Netfilter, Ruleset, SkbMeta
from nf_helpers import forward, hook, make_nf, rules_hit, tcp

P = tcp("10.244.0.5", "10.0.12.34", 40000, 80, "S")


def walk(lines, policy="ACCEPT", meta=None):
    nf = make_nf(filter=lines)
    nf.ruleset.chain("filter", "INPUT").policy = policy
    r, _ = hook(nf, "INPUT", P, meta or SkbMeta())
    return r


def test_jump_returns_to_the_next_rule_of_the_caller():
    r = walk(["-A INPUT -j U1", "-A INPUT -j DROP", "-A U1 -j RETURN"])
    assert r.verdict == "DROP" and r.reason == "rule:filter/INPUT#2"
    assert rules_hit(r) == [("filter", "INPUT", 1), ("filter", "U1", 1), ("filter", "INPUT", 2)]


def test_falling_off_a_user_chain_is_return():
    r = walk(["-A INPUT -j U1", "-A INPUT -j DROP", "-A U1 -s 1.2.3.4 -j ACCEPT"])
    assert r.verdict == "DROP"
    assert any(t.kind == "return" and t.chain == "U1" for t in r.trace)


def test_goto_return_goes_back_to_the_caller_of_the_goto_chain():
    r = walk(["-A INPUT -j U1", "-A INPUT -j DROP",
              "-A U1 -g U2", "-A U1 -j ACCEPT",
              "-A U2 -j RETURN"])
    # RETURN in U2 skips U1's remaining rules and resumes INPUT after `-j U1`
    assert r.verdict == "DROP" and r.reason == "rule:filter/INPUT#2"
    assert ("filter", "U1", 2) not in rules_hit(r)


def test_goto_from_builtin_then_return_takes_the_policy():
    r = walk(["-A INPUT -g U1", "-A INPUT -j ACCEPT", "-A U1 -j RETURN"], policy="DROP")
    assert r.verdict == "DROP" and r.reason == "policy:filter/INPUT"


def test_return_in_builtin_chain_takes_the_policy():
    r = walk(["-A INPUT -j RETURN", "-A INPUT -j ACCEPT"], policy="DROP")
    assert r.reason == "policy:filter/INPUT"
    assert r.trace[-1].kind == "policy" and r.trace[-1].outcome == "policy DROP"


def test_policy_accept_and_drop():
    assert walk(["-A INPUT -s 1.2.3.4 -j DROP"]).verdict == "ACCEPT"
    r = walk(["-A INPUT -s 1.2.3.4 -j ACCEPT"], policy="DROP")
    assert (r.verdict, r.reason) == ("DROP", "policy:filter/INPUT")


def test_accept_in_a_user_chain_ends_the_table():
    r = walk(["-A INPUT -j U1", "-A INPUT -j DROP", "-A U1 -j ACCEPT"])
    assert r.verdict == "ACCEPT"


def test_rule_without_target_only_counts():
    r = walk(["-A INPUT -m comment --comment counting", "-A INPUT -j DROP"])
    assert r.verdict == "DROP"
    assert [t.outcome for t in r.trace if t.kind == "rule"] == ["match", "match -> DROP"]


def test_every_rule_visited_is_traced_with_its_number_and_text():
    r = walk(["-A INPUT -s 1.1.1.1 -j ACCEPT", "-A INPUT -p udp -j ACCEPT", "-A INPUT -j U1",
              "-A U1 -p tcp -m tcp --dport 80 -j DROP"])
    assert [(t.chain, t.rule_number, t.outcome) for t in r.trace] == [
        ("INPUT", 1, "no match"), ("INPUT", 2, "no match"), ("INPUT", 3, "match -> U1"),
        ("U1", 1, "match -> DROP")]
    assert r.trace[3].rule == "-A U1 -p tcp -m tcp --dport 80 -j DROP"
    assert r.rules_evaluated == 4


def test_counters_count_packets_and_ip_bytes():
    nf = make_nf(filter=["-A INPUT -p tcp -j U1", "-A INPUT -p udp -j DROP", "-A U1 -j RETURN"])
    for _ in range(3):
        hook(nf, "INPUT", P)
    rules = nf.ruleset.chain("filter", "INPUT").rules
    assert (rules[0].packets, rules[0].bytes) == (3, 3 * 40)
    assert (rules[1].packets, rules[1].bytes) == (0, 0)
    pol = nf.ruleset.chain("filter", "INPUT")
    assert (pol.packets, pol.bytes) == (3, 120)
    assert "[3:120] -A INPUT -p tcp -j U1" in nf.ruleset.to_iptables_save(counters=True)
    assert ":INPUT ACCEPT [3:120]" in nf.ruleset.to_iptables_save(counters=True)


def test_empty_accept_chains_leave_no_trace():
    nf = Netfilter(Ruleset.empty())
    r, _ = hook(nf, "FORWARD", P)
    assert r.verdict == "ACCEPT" and [t for t in r.trace if t.kind != "conntrack"] == []


def test_tables_run_in_kernel_order_for_a_forwarded_packet():
    mark_rule = "-m comment --comment seen"
    nf = make_nf(raw=[f"-A PREROUTING {mark_rule}"],
                 mangle=[f"-A {h} {mark_rule}" for h in ("PREROUTING", "FORWARD", "POSTROUTING")],
                 nat=[f"-A {h} {mark_rule}" for h in ("PREROUTING", "POSTROUTING")],
                 filter=[f"-A FORWARD {mark_rule}"])
    results, _ = forward(nf, P)
    seen = [(t.table, t.chain) for r in results for t in r.trace if t.kind == "rule"]
    assert seen == [("raw", "PREROUTING"), ("mangle", "PREROUTING"), ("nat", "PREROUTING"),
                    ("mangle", "FORWARD"), ("filter", "FORWARD"),
                    ("mangle", "POSTROUTING"), ("nat", "POSTROUTING")]


def test_output_hook_order_raw_mangle_nat_filter():
    rule = "-m comment --comment seen"
    nf = make_nf(raw=[f"-A OUTPUT {rule}"], mangle=[f"-A OUTPUT {rule}"],
                 nat=[f"-A OUTPUT {rule}"], filter=[f"-A OUTPUT {rule}"])
    r, _ = hook(nf, "OUTPUT", tcp("10.224.0.4", "10.0.12.34"))
    assert [t.table for t in r.trace if t.kind == "rule"] == ["raw", "mangle", "nat", "filter"]
    kinds = [t.kind for t in r.trace]
    assert kinds.index("conntrack") > 0            # after raw, before mangle
    assert r.trace[0].table == "raw"


def test_input_runs_mangle_filter_then_nat():
    rule = "-m comment --comment seen"
    nf = make_nf(mangle=[f"-A INPUT {rule}"], filter=[f"-A INPUT {rule}"], nat=[f"-A INPUT {rule}"])
    meta = SkbMeta()
    hook(nf, "PREROUTING", P, meta)
    r, _ = hook(nf, "INPUT", P, meta)
    assert [t.table for t in r.trace if t.kind == "rule"] == ["mangle", "filter", "nat"]


def test_mark_set_in_mangle_is_seen_by_filter():
    nf = make_nf(mangle=["-A FORWARD -j MARK --set-mark 0x8"],
                 filter=["-A FORWARD -m mark --mark 0x8 -j DROP"])
    results, meta = forward(nf, P)
    assert results[-1].reason == "rule:filter/FORWARD#1" and meta.mark == 8


def test_trace_misses_can_be_left_out():
    nf = make_nf(filter=["-A INPUT -s 1.1.1.1 -j ACCEPT", "-A INPUT -j DROP"])
    nf.trace_misses = False
    r, _ = hook(nf, "INPUT", P)
    assert [t.rule_number for t in r.trace] == [2] and r.rules_evaluated == 2


def test_non_ip_frames_pass_untouched():
    from kdp import wire
    from scapy.layers.l2 import ARP, Ether
    arp = wire.parse(bytes(Ether() / ARP(pdst="10.244.0.1")))
    nf = make_nf(filter=["-A INPUT -j DROP"])
    r, _ = hook(nf, "INPUT", arp)
    assert r.verdict == "ACCEPT" and r.packet is arp


def test_load_swaps_rules_and_keeps_conntrack():
    nf = make_nf(filter=["-A FORWARD -j ACCEPT"])
    forward(nf, P)
    assert len(nf.conntrack) == 1
    new = make_nf(filter=["-A FORWARD -j DROP"]).ruleset
    nf.load(new)
    results, _ = forward(nf, P)
    assert results[-1].verdict == "DROP" and len(nf.conntrack) == 1
