# kdp.fast.svcsplit: a node dump that is not byte-identical to kdp's generated
# rules still gets compiled decisions for the chains it did not touch (issue 17,
# defect 2); the touched ones go to the reference walk, each named with a reason,
# and every compiled decision equals the reference walk over the *edited* dump
# (verdict, endpoint, mark, and the rule count at the dump's positions).
from __future__ import annotations

import pytest

from kdp import bench
from kdp.fast import svcmatch, svcsplit
from kdp.fast.contract import VERDICTS
from kdp.fast.svcref import reference_decision, reference_netfilter
from kdp.k8s.fromrules import model_from_rules

N = 40


def _edit(text: str) -> str:
    """Delete svc-3's KUBE-SERVICES rule, change one of svc-5's DNAT ports, and
    add a hand-written rule for an address no Service has before svc-10's."""
    out, done = [], False
    for ln in text.splitlines():
        if ln.startswith("-A KUBE-SERVICES") and "bench/svc-3:http" in ln:
            continue
        if ln.startswith("-A KUBE-SEP") and '"bench/svc-5:http"' in ln and "DNAT" in ln and not done:
            ln, done = ln.replace(":8080", ":9090"), True
        if ln.startswith("-A KUBE-SERVICES") and "bench/svc-10:http" in ln:
            out.append("-A KUBE-SERVICES -d 10.96.0.200/32 -p tcp -m tcp --dport 80 "
                       "-j DNAT --to-destination 10.244.9.9:80")
        out.append(ln)
    return "\n".join(out) + "\n"


def _decisions_agree(sm, text, cluster, flows):
    nf = reference_netfilter(text, "node/node-0", svcmatch.node_addresses(cluster, "node-0"),
                             trace=False)
    slow = sm.slow_mask(flows)
    got = sm.matcher.decide_batch(flows[~slow]).tolist()
    rows = [f for f, s in zip(flows.tolist(), slow.tolist()) if not s]
    for g, (src, dst, sport, dport, proto, _f, local, _ok, now) in zip(got, rows):
        ref = reference_decision(nf, proto, src, dst, sport, dport, now, bool(local))
        ip, port, v, masq, _sp, rules = g
        assert (VERDICTS[v], ip, port, bool(masq), rules) == (
            ref.verdict, int(ref.endpoint_ip or 0), ref.endpoint_port or 0, ref.masquerade,
            ref.rules_evaluated_equivalent)
    return slow


def test_hand_edited_dump_compiles_the_untouched_chains():
    w = bench.workload(N, 2)
    edited = _edit(w.text)
    assert svcmatch.compile_matcher(w.cluster, "node-0", edited) is None   # the old all-or-nothing
    sm = svcsplit.compile_ruleset(w.cluster, "node-0", edited)
    assert sm.matcher is not None and sm.split.barrier is None
    assert sm.split.compiled_rules == N - 2                  # svc-3 gone, svc-5 edited
    why = " | ".join(f"{c}: {r}" for c, r in sm.split.reasons)
    assert "missing from the dump" in why and "svc-3" in why
    assert "KUBE-SEP-" in why and ":9090" in why
    assert "10.96.0.200/32" in why
    flows = bench.first_packets(N, 600, seed=5)
    slow = _decisions_agree(sm, edited, w.cluster, flows)
    dst = flows["dst"]
    to = {s: dst == bench.SERVICE_BASE + s for s in (3, 5)}
    assert slow[to[3] | to[5]].all()                         # the touched services
    assert not slow[~(to[3] | to[5])].any()                  # and nothing else


def test_a_generic_rule_sends_what_follows_it_to_the_reference():
    w = bench.workload(N, 2)
    lines = w.text.splitlines()
    ks = [i for i, ln in enumerate(lines) if ln.startswith("-A KUBE-SERVICES")]
    lines.insert(ks[10], "-A KUBE-SERVICES -s 10.244.0.50/32 -j RETURN")
    text = "\n".join(lines) + "\n"
    sm = svcsplit.compile_ruleset(w.cluster, "node-0", text)
    assert sm.split.barrier == 11 and sm.split.compiled_rules == 10
    flows = bench.first_packets(N, 400, seed=6)
    flows["src"][:50] = (10 << 24) | (244 << 16) | 50        # the rule's source
    slow = _decisions_agree(sm, text, w.cluster, flows)
    assert 0 < slow.sum() < len(flows)


def test_a_changed_global_chain_compiles_nothing_and_says_why():
    w = bench.workload(10, 2)
    text = w.text.replace("-A FORWARD ", "-A FORWARD -s 10.244.0.0/16 -j ACCEPT\n-A FORWARD ", 1)
    sm = svcsplit.compile_ruleset(w.cluster, "node-0", text)
    assert sm.matcher is None and "filter rule 1 of FORWARD" in sm.split.everything_slow
    assert sm.slow_mask(bench.first_packets(10, 5)).all()


@pytest.mark.parametrize("edit", [False, True])
def test_a_dump_alone_is_read_back_into_a_model(edit):
    w = bench.workload(N, 2)
    text = _edit(w.text) if edit else w.text
    cluster, node, _notes = model_from_rules(text)
    sm = svcsplit.compile_ruleset(cluster, node, text)
    assert sm.matcher is not None
    assert sm.split.compiled_rules == (N - 2 if edit else N)


def test_an_edited_node_port_goes_to_the_reference_alone():
    """nat KUBE-NODEPORTS rule by rule: the edited node port's packets to the
    node go to the reference walk; the other node ports and every cluster IP
    stay compiled, and agree with the reference walk over the edited dump."""
    import numpy as np
    from kdp.k8s import demo_cluster
    from kdp.k8s.kubeproxy import generate_rules
    c = demo_cluster()
    node = c.nodes[0].name
    text = generate_rules(c, node, nfacct=c.config.kube_proxy.nfacct)
    line = next(ln for ln in text.splitlines() if ln.startswith("-A KUBE-NODEPORTS")
                and "--dport 30000 " in ln)
    edited = text.replace(line, line.replace("--dport 30000 ", "--dport 30005 "), 1)
    sm = svcsplit.compile_ruleset(c, node, edited)
    assert sm.matcher is not None and sm.split.slow_nodeports == {6 << 16 | 30000, 6 << 16 | 30005}
    nodeports = sorted({p.node_port for s in c.services for p in s.ports if p.node_port})
    rng = np.random.default_rng(4)
    f = bench.first_packets(1, 300, seed=4)
    node_ip = int(c.nodes[0].ip)
    f["src"] = (10 << 24) | (244 << 16) | (1 << 8) | rng.integers(2, 50, 300)
    f["dst"][:150] = node_ip
    f["dport"][:150] = rng.choice(nodeports + [30005], 150)
    f["dst"][150:] = [int(s.cluster_ip) for s in c.services if s.cluster_ip][0]
    addresses = svcmatch.node_addresses(c, node)
    nf = reference_netfilter(edited, f"node/{node}", addresses, trace=False)
    slow = sm.slow_mask(f)
    assert set(f["dport"][slow].tolist()) == {30000, 30005} and not slow[150:].any()
    got = sm.matcher.decide_batch(f[~slow]).tolist()
    for g, (src, dst, sport, dport, proto, _f, local, _ok, now) in zip(
            got, [r for r, s in zip(f.tolist(), slow.tolist()) if not s]):
        ref = reference_decision(nf, proto, src, dst, sport, dport, now, bool(local))
        assert (VERDICTS[g[2]], g[0], g[5]) == (ref.verdict, int(ref.endpoint_ip or 0),
                                              ref.rules_evaluated_equivalent)
