# The walk's compiled forms give the answers of the plain walk: each rule's
# generated test (model.Rule.test) and the destination index that skips the
# `-d` rules a packet cannot match (model.Chain.dst_skips). The same packets go
# through two copies of one random ruleset, one traced (every rule evaluated
# and recorded, no index) and one not (index on): verdicts, reasons, marks,
# every counter and the number of rules evaluated must agree.
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdp.netfilter import SkbMeta
from kdp.netfilter.model import DST_RUN_MIN
from nf_helpers import hook, make_nf, tcp, udp

# mostly /32s, so that runs of DST_RUN_MIN or more form; a /16, a /24 (another
# mask), a negation or no -d at all ends a run
DSTS = ["10.2.0.1", "10.2.0.2", "10.2.0.3"] * 4 + ["10.9.0.0/16", "10.2.0.0/24", None]
RULE = st.tuples(
    st.sampled_from([""] * 6 + ["! "]),
    st.sampled_from(DSTS),
    st.sampled_from(["", "-p tcp -m tcp --dport 80", "-p udp -m udp --dport 53",
                     '-m comment --comment "svc"', "-m mark --mark 0x1/0x1"]),
    st.sampled_from(["-j SUB", "-j MARK --or-mark 0x1", "-j ACCEPT", "-j DROP", "-j RETURN", ""]))


def rule_line(chain: str, r) -> str:
    neg, dst, match, target = r
    parts = [f"-A {chain}"] + ([f"{neg}-d {dst}"] if dst else []) + [match, target]
    return " ".join(p for p in parts if p)


def counters(nf) -> list:
    return [(c.name, c.packets, c.bytes, [(r.packets, r.bytes) for r in c.rules])
            for t in nf.ruleset.tables.values() for c in t.chains.values()]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RULE, min_size=4, max_size=24), st.lists(RULE.filter(lambda r: "SUB" not in r[3]),
                                                         max_size=8),
       st.lists(st.tuples(st.sampled_from(["10.2.0.1", "10.2.0.2", "10.2.0.3", "10.9.1.1",
                                           "10.2.0.77", "10.3.0.1"]),
                          st.sampled_from([80, 53]), st.booleans()), min_size=1, max_size=6))
def test_indexed_walk_agrees_with_the_traced_walk(top, sub, packets):
    lines = [rule_line("FORWARD", r) for r in top] + [rule_line("SUB", r) for r in sub] + \
        ["-A SUB -j RETURN"]
    plain, fast = make_nf(filter=lines), make_nf(filter=lines)
    fast.tracing = False
    for dst, port, is_tcp in packets:
        pkt = tcp("10.244.0.5", dst, dport=port) if is_tcp else udp("10.244.0.5", dst, dport=port)
        a, ma = hook(plain, "FORWARD", pkt, SkbMeta())
        b, mb = hook(fast, "FORWARD", pkt, SkbMeta())
        assert (a.verdict, a.reason, ma.mark) == (b.verdict, b.reason, mb.mark)
        assert a.rules_evaluated == b.rules_evaluated
        assert sum(1 for t in a.trace if t.kind == "rule") == a.rules_evaluated
        assert not b.trace
    assert counters(plain) == counters(fast)


def test_a_service_chain_is_indexed_and_skipped():
    services = [f"-A FORWARD -d 10.2.0.{i}/32 -p tcp -m tcp --dport 80 -j ACCEPT" for i in range(1, 41)]
    nf = make_nf(filter=services + ["-A FORWARD -j DROP"])
    chain = nf.ruleset.tables["filter"].chains["FORWARD"]
    skips = chain.dst_skips()
    assert skips is not None and skips[0] is skips[39] and skips[40] is None
    assert 40 >= DST_RUN_MIN
    nf.tracing = False
    r, _ = hook(nf, "FORWARD", tcp("10.244.0.5", "10.2.0.30"))
    assert r.verdict == "ACCEPT" and r.rules_evaluated == 30
    assert [x.packets for x in chain.rules[:41]] == [0] * 29 + [1] + [0] * 11
    r, _ = hook(nf, "FORWARD", tcp("10.244.0.5", "10.2.1.30"))
    assert r.verdict == "DROP" and r.reason == "rule:filter/FORWARD#41" and r.rules_evaluated == 41
    # an appended rule is seen: the index is rebuilt for the longer list
    from kdp.netfilter.restore import restore_into
    restore_into(nf.ruleset, "*filter\n-I FORWARD 1 -d 10.2.1.30/32 -j ACCEPT\nCOMMIT\n", noflush=True)
    r, _ = hook(nf, "FORWARD", tcp("10.244.0.5", "10.2.1.30"))
    assert r.verdict == "ACCEPT" and r.rules_evaluated == 1


def test_the_index_masks_the_destination():
    nets = [f"-A FORWARD -d 10.{i}.0.0/16 -j MARK --or-mark 0x{1 << i:x}" for i in range(1, 6)]
    plain, fast = make_nf(filter=nets), make_nf(filter=nets)
    fast.tracing = False
    assert fast.ruleset.tables["filter"].chains["FORWARD"].dst_skips()[0][1] == 0xFFFF0000
    for dst in ("10.3.7.9", "10.5.0.1", "10.6.0.1"):
        a, ma = hook(plain, "FORWARD", tcp("10.244.0.5", dst))
        b, mb = hook(fast, "FORWARD", tcp("10.244.0.5", dst))
        assert ma.mark == mb.mark and a.rules_evaluated == b.rules_evaluated == 5
    assert counters(plain) == counters(fast)
    assert [r.packets for r in fast.ruleset.tables["filter"].chains["FORWARD"].rules] == [0, 0, 1, 0, 1]
