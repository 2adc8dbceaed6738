# Megaflows (kdp.datapath.megaflow): new flows replayed by the flow cache.
# Each frame below opens a conntrack entry (a new source port), through a
# Service's DNAT and its statistic rules or straight to a pod; the four modes of
# `kdp run` must agree on every line, pcap, conntrack entry and counter, the
# cache must replay most of them, and it must hand back to the reference every
# frame whose entries are not free (an earlier flow on the tuple, a reply
# tuple taken, a reopened tuple). KDP_FASTPATH_VALIDATE must catch a branch
# that would make other entries than the reference.
from __future__ import annotations

import io
import json
import random

import pytest

from kdp.datapath import megaflow
from kdp.runner import FastpathMismatch

from .test_fastpath_equivalence import assert_equivalent, reasons, records, run_modes, traffic, write

T0 = 1_700_000_000_000_000


def _udp(g, dst: tuple, sport: int, size: int) -> bytes:
    from scapy.layers.inet import UDP
    return bytes(g._base(dst[0]) / UDP(sport=sport, dport=dst[1]) / bytes(size))


def new_udp_flows(n: int, seed: int, repeats: float = 0.0, gap_at: int | None = None) -> list:
    """n UDP datagrams from the client, each (but repeats) a new source port:
    to the UDP echo Service (its DNAT, three endpoints drawn by flow hash) and
    to a pod's closed port; with `repeats`, that share of frames reuses an
    earlier port (an existing flow, or after gap_at's 200 s gap a reopened one)."""
    g = traffic.Generator(seed)
    rng = random.Random(seed)
    recs, used, t = [], [], T0
    for i in range(n):
        if gap_at is not None and i == gap_at:
            t += 200 * 1_000_000
        if used and rng.random() < repeats:
            sport = rng.choice(used)
        else:
            sport = 20000 + i
            used.append(sport)
        dst = traffic.UDP_ECHO_SVC if rng.random() < 0.8 else (traffic.REMOTE_POD, 9999)
        recs.append((t, _udp(g, dst, sport, rng.randrange(16, 200))))
        t += 1000
    return recs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> str:
    return traffic.write_cluster(str(tmp_path_factory.mktemp("megaflow") / "cluster"))


def test_new_udp_flows_are_replayed_and_agree(tmp_path, cluster):
    pcap = write(tmp_path / "new.pcap", new_udp_flows(600, seed=1))
    runs = run_modes(pcap, tmp_path, cluster=cluster, args=("--conntrack", "--counters"), live=True)
    ref = assert_equivalent(runs, ("conntrack", "counters"))
    assert ref.summary["delivered"] == 600, reasons(ref)
    got = records(ref.lines)
    assert len({r["delivered_to"] for r in got}) >= 4        # the three endpoints and the pod
    assert ref.summary["outcomes"]["flows"]["opened"] == 600
    hits = runs["fastpath"].summary["fastpath_hits"]
    assert hits >= 560, f"only {hits} of 600 new flows replayed by the cache"
    assert runs["pure"].summary["fastpath_hits"] == hits
    assert runs["validate"].summary["fastpath_hits"] == hits  # each one checked against the reference


def test_new_flows_in_nftables_mode(tmp_path, tmp_path_factory):
    """kube-proxy's nftables mode: the endpoint is `numgen random mod 3 vmap`'s
    draw, a guard like the statistic match's; new UDP flows and TCP pickups
    answered by RST are replayed, every mode agreeing."""
    work = tmp_path_factory.mktemp("megaflow-nft")
    cluster = traffic.write_cluster(str(work / "cluster"))
    demo = work / "cluster" / "demo.yaml"
    demo.write_text(demo.read_text().replace("mode: iptables", "mode: nftables"))
    recs = new_udp_flows(300, seed=5)
    g = traffic.Generator(6)
    recs += [(T0 + (300 + i) * 1000, g.frame("ack-midstream")) for i in range(200)]
    pcap = write(tmp_path / "nft.pcap", recs)
    runs = run_modes(pcap, tmp_path, cluster=cluster, args=("--conntrack", "--counters"), live=True)
    ref = assert_equivalent(runs, ("conntrack", "counters"))
    assert "table ip kube-proxy" in json.dumps(ref.summary)          # nft counters compared too
    assert ref.summary["delivered"] == 500, reasons(ref)
    hits = runs["fastpath"].summary["fastpath_hits"]
    assert hits >= 470, f"only {hits} of 500 new flows replayed by the cache"


@pytest.mark.parametrize("raw", [False, True])
def test_flows_that_are_not_new_go_to_the_reference(tmp_path, cluster, raw):
    """A third of the frames reuse a port: an existing entry (the branch must
    not make a second one), and after a 200 s gap an expired one whose tuple
    the table remembers (a reopened tuple draws as generation 1)."""
    pcap = write(tmp_path / "mixed.pcap", new_udp_flows(600, seed=2, repeats=0.35, gap_at=300))
    runs = run_modes(pcap, tmp_path, cluster=cluster, args=("--conntrack", "--counters"),
                     live=not raw)
    ref = assert_equivalent(runs, ("conntrack", "counters"))
    assert ref.summary["frames"] == 600
    if not raw:
        assert runs["fastpath"].summary["fastpath_hits"] >= 250


def test_validate_refuses_a_branch_that_makes_other_entries(tmp_path, cluster, monkeypatch):
    """A branch predicting an entry the reference does not make (here: one
    second longer a timeout) stops the run with the difference named."""
    from kdp.cli_common import load_emulator
    from kdp.runner import PcapRun
    import kdp.runner as runner

    pcap = write(tmp_path / "v.pcap", new_udp_flows(60, seed=3))

    def wrong(branch, tuples, now):
        made = megaflow.predicted_entries(branch, tuples, now)
        return [m[:7] + (m[7] + 1.0,) + m[8:] for m in made]

    monkeypatch.setattr(runner, "predicted_entries", wrong)
    emu = load_emulator(cluster, capture=False)
    run = PcapRun(emu, "pod/default/client", io.BytesIO(), json_lines=True, out_dir=None,
                  validate=True, live=True)
    with pytest.raises(FastpathMismatch, match="new conntrack entries"):
        run.run(str(pcap))


# --- the recipes and guards ------------------------------------------------------

class _Table:
    def generation(self, t) -> int:
        return 0


def _entry(orig, reply, now, **kw):
    from kdp.conntrack.entry import ConntrackEntry
    e = ConntrackEntry(orig, reply, created=now, status=kw.pop("status", 0x18a))
    e.refresh, e.timeout_at = 30.0, now + 30.0
    e.udp_stream_at = now + 2.0
    for k, v in kw.items():
        setattr(e, k, v)
    return e


def _tuples(sport, reply_dport=None):
    from ipaddress import IPv4Address as A
    from kdp.conntrack.tuples import Tuple
    return (Tuple(17, A("10.244.0.2"), A("10.2.0.20"), sport, 90),
            Tuple(17, A("10.244.1.4"), A("10.244.0.2"), 9000, sport if reply_dport is None else reply_dport))


def test_recipes_open_the_source_port_and_decline_what_they_cannot_make():
    now = 1000.0
    t = _Table()
    ok = megaflow.recipes_of([(t, _entry(*_tuples(40000), now))], 40000, now)
    assert not isinstance(ok, str)
    orig, reply = ok[0].tuples(41000)
    assert (orig.sport, reply.dport, reply.sport, orig.dport) == (41000, 41000, 9000, 90)
    from kdp.conntrack.entry import DYING
    gone = megaflow.recipes_of([(t, _entry(*_tuples(40000), now, status=0x18a | DYING, refresh=None))],
                               40000, now)
    assert gone[0].removed and not gone[0].status & DYING      # made, confirmed, removed again
    cases = {
        "NAT chose a port": [(t, _entry(*_tuples(40000, reply_dport=1025), now))],
        "two new entries": [(t, _entry(*_tuples(40000), now)), (t, _entry(*_tuples(40000), now))],
        "times": [(t, _entry(*_tuples(40000), now - 1.0))],
        "timeout": [(t, _entry(*_tuples(40000), now, refresh=None))],
        "ambiguous port": [(t, _entry(*_tuples(90), now))],      # the source port is the service's
    }
    for what, created in cases.items():
        assert isinstance(megaflow.recipes_of(created, created[0][1].orig.sport, now), str), what


def test_a_branch_is_selected_only_when_every_draw_repeats():
    from kdp.conntrack.keyed import decision_point, flow_hash, random31
    now = 1000.0
    t = _Table()
    recipes = megaflow.recipes_of([(t, _entry(*_tuples(40000), now))], 40000, now)
    point, seed, prob = decision_point("statistic", "n", "nat", "KUBE-SVC-X", 1), 7, 0x80000000 // 3

    def drawn(sport):
        orig = recipes[0].tuples(sport)[0]
        return random31(flow_hash(seed, point, 17, orig.src, orig.dst, sport, 90)) < prob

    flows = megaflow.Megaflows()
    key = bytes(30) + b"\x9c\x40" + bytes(4)
    flows.add(key, megaflow.Branch(((seed, point, 0, ("below", prob, True)),), recipes, eid=5))
    taken = [s for s in range(41000, 41300) if flows.select(key, s) is not None]
    assert taken and len(taken) < 300
    assert all(drawn(s) for s in taken)
    assert flows.select(key, taken[0])[1] == [recipes[0].tuples(taken[0])]
    assert not any(drawn(s) for s in range(41000, 41300) if s not in taken)
    flows.forget(5)
    assert flows.select(key, taken[0]) is None and not flows.shapes


@pytest.mark.parametrize("raw", [False, True])
def test_tcp_pickups_reset_at_once_are_replayed(tmp_path, cluster, raw):
    """Mid-stream ACKs on 64 flows conntrack never saw open: each picks up an
    entry (loose tracking), the pod's stack answers RST and conntrack kills
    the entry again; the next ACK of the flow reopens the tuple (generation
    1, 2, ...). Each is a branch's work: the entry made, confirmed and
    removed, the RST built for the frame's own ports."""
    pcap = tmp_path / "ack.pcap"
    traffic.write_pcap(str(pcap), "ack-midstream", 600, seed=4)
    runs = run_modes(pcap, tmp_path, cluster=cluster, args=("--conntrack", "--counters"),
                     live=not raw)
    ref = assert_equivalent(runs, ("conntrack", "counters"))
    assert ref.summary["outcomes"]["resets"]["total"] == 600, ref.summary["outcomes"]["resets"]
    hits = runs["fastpath"].summary["fastpath_hits"]
    assert hits >= 590, f"only {hits} of 600 pickups replayed by the cache"


# --- SYNs to listeners: socket steps ----------------------------------------------

def _syns(cls: str, n: int, seed: int, repeat_every: int = 0) -> list:
    """n SYNs of a benchmark class (each a fresh source port); with
    repeat_every, every such frame is a SYN on an earlier flow's port again
    (its socket exists: the reference must decide it)."""
    g = traffic.Generator(seed)
    frames = [g.frame(cls) for _ in range(n)]
    if repeat_every:
        frames = [frames[i - 7] if i >= 7 and i % repeat_every == 0 else f for i, f in enumerate(frames)]
    return [(T0 + i * 1000, f) for i, f in enumerate(frames)]


@pytest.mark.parametrize("raw", [False, True])
def test_syns_to_a_clusterip_listener_are_replayed(tmp_path, cluster, raw):
    """SYNs to nginx's ClusterIP: the listener's request sock answers SYN-ACK
    (ISN and timestamps the frame's own), which the client pod's stack resets
    (raw) or kdp run's capture-owned socket takes (live replay). The real
    socket code runs each step for each frame; the engine derives the
    SYN-ACK's and the RST's captures from what it sent. Every 10th frame
    repeats an earlier SYN, whose sockets exist: the reference decides it."""
    pcap = write(tmp_path / "syn.pcap", _syns("syn-clusterip", 400, seed=7, repeat_every=10))
    runs = run_modes(pcap, tmp_path, cluster=cluster, args=("--conntrack", "--counters"), live=not raw)
    ref = assert_equivalent(runs, ("conntrack", "counters"))
    assert ref.summary["delivered"] == 400, reasons(ref)
    resets = ref.summary["outcomes"]["resets"]["total"]
    conntrack = json.dumps(ref.summary["conntrack"])
    if raw:
        assert resets >= 360 and "SYN_RECV" not in conntrack     # every SYN-ACK reset by the client
    else:
        assert resets == 0 and "SYN_RECV" in conntrack           # taken by the capture's sockets
    hits = runs["fastpath"].summary["fastpath_hits"]
    assert 330 <= hits <= 360, f"{hits} of 400 SYNs replayed (40 repeat a flow: the reference's)"
    assert runs["validate"].summary["fastpath_hits"] == hits


def test_syns_through_the_cloud_load_balancer_redraw_its_node(tmp_path, cluster):
    """SYNs from outside to a LoadBalancer IP (externalTrafficPolicy Local):
    the cloud load balancer hashes the 5-tuple to pick a node, a draw on the
    source port like the statistic rules': a branch holds only the frames
    whose hash picks its node (before this was a guard, a branch replayed
    every frame of the shape to the first frame's node)."""
    pcap = write(tmp_path / "lb.pcap", _syns("lb-syn-local", 300, seed=8))
    runs = run_modes(pcap, tmp_path, cluster=cluster, args=("--at", traffic.EXT_AT, "--conntrack"),
                     live=True)
    ref = assert_equivalent(runs, ("conntrack",))
    nodes = {r["delivered_to"] for r in records(ref.lines)}
    assert len(nodes) >= 2, nodes                 # pods on more than one node took SYNs
    assert runs["fastpath"].summary["fastpath_hits"] >= 280


def test_syn_signature_ignores_only_the_timestamps():
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    def syn(ts, ws=7):
        return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") /
                     TCP(sport=1, dport=2, flags="S", options=[("MSS", 1460), ("SAckOK", b""),
                                                               ("Timestamp", (ts, 0)), ("NOP", None),
                                                               ("WScale", ws)]))
    assert megaflow.syn_signature(syn(1)) == megaflow.syn_signature(syn(99999))
    assert megaflow.syn_signature(syn(1)) != megaflow.syn_signature(syn(1, ws=8))
