# kdp against the real kernel, scenario by scenario (the catalogue of
# kdp.oracle.scenarios on the demo cluster, a 2-node kubenet cluster and a
# 2-node azure CNI cluster; see conftest.py). Each scenario must agree frame by
# frame and field by field, except for the differences listed in KNOWN_GAPS:
# kdp behaviours the kernel contradicts, reported for fixing in kdp. When kdp
# is fixed the tests keep passing; any new difference fails them.
import pytest

from .conftest import needs_kernel

pytestmark = [pytest.mark.root, pytest.mark.oracle, needs_kernel]

# field -> why it may differ: none. Every gap the oracle found (window scale, established window,
# IP IDs, the ICMP source after an ARP failure, ARP from address-less devices, linkdown routes, the
# quick ACK, the promiscuous bridge) was fixed in kdp; any difference now fails these tests.
KNOWN_GAPS: dict = {}
SCENARIO_GAPS: dict = {}
UNPAIRED_OK: dict = {}
MUST_AGREE = {"same-node-tcp-closed", "same-node-udp-closed", "same-node-icmp-echo", "cross-node-tcp-closed",
              "cross-node-udp-closed", "cross-node-icmp-echo", "node-to-pod-icmp", "ttl-expiry",
              "ttl-expiry-second-hop", "bad-ip-checksum", "bad-tcp-checksum"}


def allowed(plugin: str, name: str) -> dict:
    out = dict(KNOWN_GAPS)
    out.update(SCENARIO_GAPS.get((plugin, name), {}))
    out.update(SCENARIO_GAPS.get((plugin, "*"), {}))
    return out


def check(run, plugin: str, unpaired_ok=UNPAIRED_OK, must_agree=MUST_AGREE) -> None:
    _results, rep = run
    problems = []
    for sc in rep["scenarios"]:
        name = sc["scenario"]
        ok = allowed(plugin, name)
        assert sc["frames"]["kernel"] > 0, f"{name}: the kernel saw nothing"
        for d in sc["disagreements"]:
            for f in d["fields"]:
                if f["field"] not in ok:
                    problems.append(f"{name}: {d['device']} {d['kdp_summary']}: {f['field']} kdp {f['kdp']} "
                                    f"kernel {f['kernel']}")
        if sc["unpaired"] and name not in unpaired_ok:
            problems += [f"{name}: {u['device']} {u['direction']} {u['kind']}: {u['summary']}"
                         for u in sc["unpaired"]]
        if sc["order"]:
            problems += [f"{name}: {o['device']}: {o['problem']}" for o in sc["order"]]
        if plugin != "azure" and name in must_agree and not sc["agree"]:
            problems.append(f"{name}: expected full agreement")
    assert not problems, "\n".join(problems)


def test_demo_cluster_agrees_with_the_kernel(demo_run):
    check(demo_run, "kubenet")


def test_two_node_kubenet_agrees_with_the_kernel(kubenet_run):
    check(kubenet_run, "kubenet")


def test_two_node_azure_cni_agrees_with_the_kernel(azure_run):
    check(azure_run, "azure")


def test_every_scenario_agrees_fully(demo_run, kubenet_run, azure_run, promisc_run):
    for results, rep in (demo_run, kubenet_run, azure_run, promisc_run):
        bad = [sc["scenario"] for sc in rep["scenarios"] if not sc["agree"]]
        assert not bad, bad
        assert all(sc["frames"]["kernel"] == sc["frames"]["kdp"] for sc in rep["scenarios"])


def test_promiscuous_bridge_agrees(promisc_run):
    check(promisc_run, "kubenet")


@pytest.mark.parametrize("name", ["same-node-tcp-syn", "cross-node-tcp-syn", "same-node-udp-open",
                                  "missing-ip", "ttl-expiry", "pod-to-ext-tcp", "cross-node-tcp-session"])
def test_catalogue_covers_the_required_flows(kubenet_run, name):
    results, _rep = kubenet_run
    assert name in results


def test_kernel_captures_hold_only_the_scenario(demo_run, kubenet_run, azure_run):
    """No IPv6, IGMP or other start-up noise reaches any capture."""
    for results, _rep in (demo_run, kubenet_run, azure_run):
        for r in results.values():
            for dr in r.devices:
                for p in dr.pairs:
                    f = p.kernel
                    if f is None:
                        continue
                    assert f.pkt is not None, f"{r.scenario.name}: unparsed kernel frame {f.raw.hex()}"
                    assert f.pkt.eth.type in (0x0800, 0x0806)
                    assert f.pkt.ip is None or not f.pkt.ip.dst.is_multicast


def test_random_values_are_mapped_and_named(kubenet_run):
    results, rep = kubenet_run
    sc = next(s for s in rep["scenarios"] if s["scenario"] == "cross-node-tcp-syn")
    assert {"tcp.seq", "tcp.options"} <= set(sc["mapped_random_values"])
    icmp = next(s for s in rep["scenarios"] if s["scenario"] == "cross-node-icmp-echo")
    assert icmp["agree"] and icmp["mapped_random_values"].get("ip.id", 0) > 0


def test_ttl_expiry_comes_from_the_gateway_in_both(kubenet_run):
    results, _ = kubenet_run
    r = results["ttl-expiry"]
    icmps = [p.kernel.pkt for dr in r.devices for p in dr.pairs
             if p.kernel is not None and isinstance(p.kernel.pkt.l4, __import__("kdp").wire.ICMP)]
    assert icmps and all(str(p.ip.src) == "10.244.0.1" and p.l4.type == 11 for p in icmps)


def test_dns_query_through_kube_dns_agrees(demo_run):
    """A real DNS query to the DNS service IP: DNAT to a CoreDNS pod, its answer
    (the same CoreDNS code on both sides) un-DNATed, field by field."""
    _results, rep = demo_run
    sc = next(s for s in rep["scenarios"] if s["scenario"] == "dns-query")
    assert sc["agree"] and sc["frames"]["kernel"] == sc["frames"]["kdp"] > 0


def test_ip_ids_within_a_flow_agree_with_the_kernel():
    """Two datagrams of one UDP flow to the echo app on b, two to a closed
    port: the kernel numbers its two replies (DF, from an unconnected socket)
    and its two ICMP port unreachables apart (ip_idents), and so must kdp. The
    oracle maps kernel IP IDs to kdp's one to one, so a kdp ID used for two
    packets the kernel told apart is a difference."""
    from dataclasses import replace

    from kdp import wire
    from kdp.oracle import netns as N
    from kdp.oracle.report import report_dict
    from kdp.oracle.runner import Oracle
    from kdp.oracle.scenarios import Scenario, Step, first_frame

    from ..scenarios.conftest import small_cluster as make_cluster
    small_cluster = make_cluster()
    steps = []
    for dport in (53, 9999):
        st = first_frame(small_cluster, 0, "pod/default/a", "pod/default/b", proto="udp", dport=dport,
                         sport=5300, payload=b"one")
        p = wire.parse(st.frame)
        q = wire.finalize(replace(p, ip=replace(p.ip, ident=(p.ip.ident + 1) & 0xFFFF),
                                  l4=replace(p.l4, payload=b"two")))
        steps += [st, Step(st.ns, st.dev, wire.emit(q), f"again {q.summary()}")]
    sc = Scenario("udp-ip-ids", "two datagrams of one flow to an echo app and to a closed port", steps,
                  quiet=0.05)
    N.cleanup_stale()
    with Oracle(small_cluster, seed=0, prefix=f"{N.default_prefix()}i-") as o:
        result = o.run(sc)
    rep = report_dict([result])["scenarios"][0]
    assert rep["frames"]["kernel"] > 0
    problems = [(d["device"], d["kdp_summary"], d["fields"]) for d in rep["disagreements"]]
    problems += [(u["device"], u["direction"], u["summary"]) for u in rep["unpaired"]]
    assert not problems, problems
    replies = {}
    for dr in result.devices:
        for pair in dr.pairs:
            k = pair.kernel.pkt if pair.kernel is not None else None
            if k is not None and k.ip is not None and k.ip.src == small_cluster.pod("default", "b").ip:
                replies.setdefault(k.ip.proto, set()).add(k.ip.ident)
    assert len(replies.get(wire.PROTO_UDP, ())) == 2 and len(replies.get(wire.PROTO_ICMP, ())) == 2, replies
