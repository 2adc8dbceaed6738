# The flow cache inside `kdp run`: for random traffic on a cluster with every
# kind of Service (affinity, REJECT for no endpoints, NodePorts, external IPs),
# with time gaps past conntrack and affinity timeouts, a tiny conntrack table
# and rule changes mid-stream, the output lines, every per-device pcap and the
# conntrack tables and rule counters afterwards are the same byte for byte with
# the compiled engine, its pure twin, no fast path and the validating mode.
#
#   client (n1) --frames--> cbr0 n1 -- underlay -- n2 (web-2, web-3, solo) / edge -- ext
import io
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kdp.fast import replay
from kdp.fast.flowengine import FlowEngine as PureFlowEngine
from kdp.emulator import Emulator
from kdp.k8s.kubeproxy import generate_rules
from kdp.runner import FastpathMismatch, PcapRun
from kdp.testing.plugin import load_profile

from .svc_cluster import svc_cluster

load_profile()              # kdp-ci: a bounded, derandomized run; HYPOTHESIS_PROFILE=kdp-thorough for more

DSTS = [("pod", "web-2", 8080), ("pod", "web-1", 8080), ("pod", "solo", 8080), ("svc", "web", 80),
        ("svc", "sticky", 80), ("svc", "empty", 80), ("ip", "198.51.100.7", 80),
        ("ip", "10.240.0.5", 30080), ("ip", "93.184.216.34", 443)]
FLAGS = {"S": 0x02, "A": 0x10, "PA": 0x18, "FA": 0x11, "R": 0x04}


def _csum(b: bytes) -> int:
    return (~replay._fold(replay._sum16(b, 0, len(b)))) & 0xFFFF


def _frame(src_mac, dst_mac, src, dst, sport, dport, flags, seq, ack, ident, payload) -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0) + payload
    c = _csum(src + dst + struct.pack("!BBH", 0, 6, len(seg)) + seg)
    seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(seg), ident, 0x4000, 64, 6, 0) + src + dst
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + seg


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def write_traffic(path: str, emu: Emulator, traffic, pod: str = "client") -> None:
    """traffic: [(gap seconds, flow index, flags name, payload length)] over
    flows to DSTS from `pod` (on n1); a flow's sport is 40000 + index."""
    client = emu.attach_device(f"pod/default/{pod}")
    cbr0 = emu.topology.node_ns["n1"].devices["cbr0"]
    c = emu.cluster
    addrs = []
    for kind, name, port in DSTS:
        if kind == "pod":
            addrs.append((c.pod("default", name).ip.packed, port))
        elif kind == "svc":
            addrs.append((c.service("default", name).cluster_ip.packed, port))
        else:
            addrs.append((bytes(int(x) for x in name.split(".")), port))
    t, out = 1.0, [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for i, (gap, flow, flags, plen) in enumerate(traffic):
        t += gap
        dst, dport = addrs[flow % len(addrs)]
        f = _frame(_mac(client.mac), _mac(cbr0.mac), c.pod("default", pod).ip.packed, dst,
                   40000 + flow, dport, FLAGS[flags], 1000 + 17 * i, 5 + 3 * i, i & 0xFFFF, b"d" * plen)
        sec = int(t)
        out.append(struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(f), len(f)) + f)
    with open(path, "wb") as fh:
        fh.write(b"".join(out))


def drop_8080(emu: Emulator) -> None:
    text = generate_rules(emu.cluster, "n2", nfacct=emu.cluster.config.kube_proxy.nfacct)
    start = text.index("*filter\n")
    end = text.index("\nCOMMIT\n", start)
    emu.load_rules("n2", text[:end] + "\n-I FORWARD 1 -p tcp -m tcp --dport 8080 -j DROP" + text[end:])


def run_mode(tmp, pcap, mode: str, ctmax: int, events, hairpin: str = "hairpin-veth",
             pod: str = "client") -> tuple:
    emu = Emulator(svc_cluster(hairpin=hairpin, conntrack_max=ctmax), seed=3, capture=False, trace=False)
    out = io.BytesIO()
    d = os.path.join(tmp, mode)
    kw = {"fastpath": mode != "reference", "validate": mode == "validate",
          "engine": PureFlowEngine if mode == "pure" else None}
    ev = {i: fn for i, fn in (events or {}).items()}
    counts = PcapRun(emu, f"pod/default/{pod}", out, json_lines=True, out_dir=d,
                     events=ev, **kw).run(pcap)
    files = {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}
    tables = {n.name: (emu.topology.node_ns[n.name].netfilter.conntrack.to_conntrack_l(emu.datapath.now),
                       emu.topology.node_ns[n.name].netfilter.ruleset.to_iptables_save(counters=True))
              for n in emu.cluster.nodes}
    hits = counts.pop("fastpath_hits")
    return out.getvalue(), files, tables, counts, hits


def assert_same_everywhere(tmp_path, traffic, ctmax=131072, events=None, hairpin="hairpin-veth",
                           pod="client"):
    pcap = str(tmp_path / "in.pcap")
    write_traffic(pcap, Emulator(svc_cluster(conntrack_max=ctmax), capture=False), traffic, pod)
    ref = run_mode(str(tmp_path), pcap, "reference", ctmax, events, hairpin, pod)
    hits = {}
    for mode in ("compiled", "pure", "validate"):
        got = run_mode(str(tmp_path), pcap, mode, ctmax, events, hairpin, pod)
        assert got[0] == ref[0], f"{mode}: output lines differ"
        assert got[1].keys() == ref[1].keys(), f"{mode}: other pcap files"
        for name in ref[1]:
            assert got[1][name] == ref[1][name], f"{mode}: {name} differs"
        assert got[2] == ref[2], f"{mode}: conntrack tables or counters differ"
        assert got[3] == ref[3]
        hits[mode] = got[4]
    assert ref[4] == 0
    assert hits["compiled"] == hits["pure"]
    return hits


def steady(flows, n, gap=0.01, plen=0):
    out = [(gap, f, "S", 0) for f in flows]
    out += [(gap, flows[i % len(flows)], "A", plen + i % 3) for i in range(n)]
    return out


def test_established_flows_are_replayed(tmp_path):
    hits = assert_same_everywhere(tmp_path, steady([0, 1, 3, 7, 8], 200))
    assert hits["compiled"] > 150 and hits["validate"] == hits["compiled"]


@pytest.mark.parametrize("hairpin", ["hairpin-veth", "promiscuous-bridge", "none"])
@pytest.mark.parametrize("pod", ["client", "web-1"])
def test_hairpin_modes(tmp_path, hairpin, pod):
    """From web-1, the Service web can lead back to web-1 itself (hairpin)."""
    flows = [3 + k * len(DSTS) for k in range(8)] + [0, 1, 8]
    hits = assert_same_everywhere(tmp_path, steady(flows, 120), hairpin=hairpin, pod=pod)
    assert hits["compiled"] > 0


def test_nfacct_rules_not_reached_do_not_stop_caching(tmp_path, monkeypatch):
    """With xt_nfacct, kube-proxy's `--ctstate INVALID -m nfacct ... -j DROP`
    is walked by every forwarded packet; its nfacct match is reached only by
    INVALID ones, so established flows are still replayed."""
    from . import svc_cluster as sc
    monkeypatch.setattr(sc, "YAML", sc.YAML.replace("kubeProxy: {conntrackMax: CTMAX}",
                                                    "kubeProxy: {conntrackMax: CTMAX, nfacct: true}"))
    emu = Emulator(svc_cluster(), capture=False)
    assert "-m nfacct" in emu.topology.node_ns["n1"].netfilter.ruleset.to_iptables_save()
    hits = assert_same_everywhere(tmp_path, steady([0, 3, 8], 150))
    assert hits["compiled"] > 130


def test_conntrack_expiry_mid_stream(tmp_path):
    """CLOSE entries (10 s) expire in the gap. Afterwards each ACK opens an
    entry (nf_conntrack_tcp_loose) that the destination's RST kills again: a
    new flow each time, which megaflow branches replay (kdp.datapath.megaflow)
    once the reference has made one of each shape."""
    traffic = steady([0, 3], 40) + [(15.0, 0, "A", 0)] + steady([0, 3], 40)[2:]
    hits = assert_same_everywhere(tmp_path, traffic)
    assert hits["compiled"] >= 60


def test_affinity_expiry(tmp_path):
    """sticky (ClientIP, 10800 s): new flows after the affinity timeout."""
    traffic = steady([4], 20) + [(11000.0, 4 + len(DSTS), "S", 0)] + steady([4 + 2 * len(DSTS)], 20)
    assert_same_everywhere(tmp_path, traffic)


def test_table_full(tmp_path):
    traffic = [(0.001, f, "S", 0) for f in range(30)] + steady(list(range(30)), 120)[30:]
    assert_same_everywhere(tmp_path, traffic, ctmax=8)


def test_rule_change_mid_stream(tmp_path):
    traffic = steady([0, 3, 8], 150)
    hits = assert_same_everywhere(tmp_path, traffic, events={80: drop_8080})
    assert hits["compiled"] > 50
    out, *_ = run_mode(str(tmp_path), _write(tmp_path, traffic), "compiled", 131072, {80: drop_8080})
    lines = out.decode().splitlines()
    assert '"reason": "rule:filter/FORWARD#' not in "".join(lines[:80])
    assert any('"reason": "rule:filter/FORWARD#' in ln for ln in lines[80:])


def _write(tmp_path, traffic) -> str:
    pcap = str(tmp_path / "again.pcap")
    write_traffic(pcap, Emulator(svc_cluster(), capture=False), traffic)
    return pcap


def test_the_cache_lets_go_after_the_run(tmp_path):
    emu = Emulator(svc_cluster(), capture=False, trace=False)
    pcap = _write(tmp_path, steady([0], 10))
    emu.run_pcap(pcap, "pod/default/client", io.BytesIO())
    assert emu.datapath.watch.tokens is None and emu.datapath.rec is None
    nf = emu.topology.node_ns["n1"].netfilter
    assert nf.counted is None and nf.conntrack.recorder is None


def test_validation_catches_a_wrong_replay(tmp_path, monkeypatch):
    """An entry that goes wrong after it was built (here: its line is
    tampered with in the pure engine): validation stops the run."""
    real = PcapRun._learn

    def learn_then_tamper(self, frame, r, line):
        real(self, frame, r, line)
        for e in self.engine.entries:
            if e is not None:
                e.suffix = e.suffix.replace(b"delivered", b"dropped!!")
    monkeypatch.setattr(PcapRun, "_learn", learn_then_tamper)
    pcap = _write(tmp_path, steady([0], 20))
    emu = Emulator(svc_cluster(), capture=False, trace=False)
    with pytest.raises(FastpathMismatch, match="line"):
        PcapRun(emu, "pod/default/client", io.BytesIO(), json_lines=True, out_dir=None,
                validate=True, engine=PureFlowEngine).run(pcap)


def test_an_entry_the_engine_cannot_reproduce_is_not_kept(tmp_path, monkeypatch):
    """Built entries are replayed once by the engine against the reference's
    own bytes; a wrong one is dropped, so the output stays right."""
    from kdp.datapath import flowcache
    real = flowcache.FlowCache.build

    def wrong(self, frame, key, line, *rest):
        wrong_line = (line[0], line[1].replace(b"delivered", b"dropped!!")) + tuple(line[2:])
        return real(self, frame, key, wrong_line, *rest)
    monkeypatch.setattr(flowcache.FlowCache, "build", wrong)
    pcap = _write(tmp_path, steady([0], 20))
    out = io.BytesIO()
    counts = Emulator(svc_cluster(), capture=False, trace=False).run_pcap(pcap, "pod/default/client", out)
    assert counts["fastpath_hits"] == 0
    assert b"dropped!!" not in out.getvalue()


traffic_st = st.lists(
    st.tuples(st.sampled_from([0.0, 0.001, 0.5, 3.0, 12.0, 130.0]),
              st.integers(0, 2 * len(DSTS) - 1),
              st.sampled_from(["S", "A", "A", "A", "PA", "FA", "R"]),
              st.sampled_from([0, 0, 1, 100])),
    min_size=1, max_size=80)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])
@given(traffic=traffic_st, ctmax=st.sampled_from([131072, 6]),
       change=st.one_of(st.none(), st.integers(0, 80)))
def test_random_traffic_is_the_same_in_every_mode(tmp_path_factory, traffic, ctmax, change):
    tmp = tmp_path_factory.mktemp("fc")
    events = {change: drop_8080} if change is not None else None
    assert_same_everywhere(tmp, traffic, ctmax=ctmax, events=events)


def test_the_pcap_is_streamed_in_bounded_blocks(tmp_path, monkeypatch):
    """Memory does not grow with the pcap: the engine never holds more than a
    block plus one record, however long the pcap."""
    import kdp.runner as runner
    monkeypatch.setattr(runner, "BLOCK", 2048)
    pcap = _write(tmp_path, steady([0, 3, 8], 400, plen=60))
    seen = []
    emu = Emulator(svc_cluster(), capture=False, trace=False)
    run = PcapRun(emu, "pod/default/client", io.BytesIO(), json_lines=True, out_dir=None)
    real = run.engine.run

    def spy(buf, *a):
        seen.append(len(buf))
        return real(buf, *a)
    class Spy:                       # the engine, with run() watched
        def __getattr__(self, name):
            return spy if name == "run" else getattr(real.__self__, name)
    run.engine = Spy()
    run.cache.engine = run.engine
    counts = run.run(pcap)
    assert counts["frames"] == 403 and counts["fastpath_hits"] > 300
    assert max(seen) <= 2048 + 16 + 200


@pytest.mark.parametrize("fastpath", [True, False])
def test_a_truncated_pcap_is_an_error_after_the_frames_before_it(tmp_path, fastpath):
    from kdp.io import PcapError
    pcap = _write(tmp_path, steady([0], 30))
    data = open(pcap, "rb").read()
    cut = str(tmp_path / "cut.pcap")
    open(cut, "wb").write(data[:-7])
    out = io.BytesIO()
    emu = Emulator(svc_cluster(), capture=False, trace=False)
    with pytest.raises(PcapError, match="record 30 is truncated"):
        PcapRun(emu, "pod/default/client", out, json_lines=True, out_dir=None, fastpath=fastpath).run(cut)
    assert len(out.getvalue().splitlines()) == 30


def scale_web_to_web3(emu: Emulator) -> None:
    """The Service `web` loses every endpoint but web-3; kube-proxy rewrites
    each node's rules."""
    svc = emu.cluster.service("default", "web")
    svc.endpoints = [e for e in svc.endpoints if e.pod == "default/web-3"]
    for node in emu.cluster.nodes:
        emu.load_rules(node.name)


def test_endpoints_change_mid_stream(tmp_path):
    web = 3                                           # DSTS[3]: the Service web
    before = [(0.01, web + k * len(DSTS), "S", 0) for k in range(6)]
    traffic = before + steady([web + k * len(DSTS) for k in range(6)], 60)[6:]
    after = [(0.01, web + k * len(DSTS), "S", 0) for k in range(6, 12)]
    traffic += after + steady([web + k * len(DSTS) for k in range(12)], 60)[12:]
    change = len(before) + 60
    hits = assert_same_everywhere(tmp_path, traffic, events={change: scale_web_to_web3})
    assert hits["compiled"] > 60
    out, *_ = run_mode(str(tmp_path), _write(tmp_path, traffic), "compiled", 131072,
                       {change: scale_web_to_web3})
    import json
    lines = [json.loads(x) for x in out.decode().splitlines()]
    web3 = str(Emulator(svc_cluster()).cluster.pod("default", "web-3").ip)
    new_after = lines[change:change + 6]
    assert all(r["packet"]["dst"] == web3 for r in new_after)
    assert any(r["packet"]["dst"] != web3 for r in lines[:6])


# --- random clusters ------------------------------------------------------------
from kdp.k8s import load_cluster_text  # noqa: E402
from kdp.testing import strategies as kst  # noqa: E402


def _udp(src_mac, dst_mac, src, dst, sport, dport, ident, payload) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = _csum(src + dst + struct.pack("!BBH", 0, 17, len(seg)) + seg) or 0xFFFF
    seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(seg), ident, 0x4000, 64, 17, 0) + src + dst
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + seg


@st.composite
def cluster_and_traffic(draw):
    text = draw(kst.cluster_texts(max_nodes=3, max_pods=5))
    cluster = load_cluster_text(text, file="hypothesis.yaml")
    pods = kst.pod_endpoints(cluster)
    if not pods:
        return text, None, []
    at = draw(st.sampled_from(pods))
    emu = Emulator(cluster, capture=False)
    dev = emu.attach_device(at)
    src_mac, gw = _mac(dev.mac), kst._gateway_mac(emu, dev)
    src_ip = emu.resolve(at).ip.packed
    flows = [draw(kst.flows(cluster, sources=("pod",))) for _ in range(draw(st.integers(1, 4)))]
    traffic, t = [], 1.0
    for i in range(draw(st.integers(4, 80))):
        f = flows[draw(st.integers(0, len(flows) - 1))]
        if f.proto == "icmp":
            continue
        dst = emu.resolve(f.dst).ip.packed
        t += draw(st.sampled_from([0.0] + [0.001] * 6 + [0.2, 5.0, 40.0]))
        if f.proto == "tcp":
            flags = 0x02 if not any(x[1] == f for x in traffic) else draw(st.sampled_from([0x10] * 4 + [0x18] * 2 + [0x11]))
            frame = _frame(src_mac, _mac(gw), src_ip, dst, f.sport, f.dport, flags, 1000 + 7 * i,
                           3 * i, i, b"x" * draw(st.sampled_from([0, 0, 9])))
        else:
            frame = _udp(src_mac, _mac(gw), src_ip, dst, f.sport, f.dport, i, b"q" * 20)
        traffic.append((t, f, frame))
    return text, at, [(tm, fr) for tm, _f, fr in traffic]


def _run_text(tmp, text, at, pcap, mode) -> tuple:
    emu = Emulator(load_cluster_text(text, file="hypothesis.yaml"), seed=5, capture=False, trace=False)
    out = io.BytesIO()
    d = os.path.join(tmp, mode)
    counts = PcapRun(emu, at, out, json_lines=True, out_dir=d, fastpath=mode != "reference",
                     validate=mode == "validate",
                     engine=PureFlowEngine if mode == "pure" else None).run(pcap)
    files = {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}
    tables = [(ns.netfilter.conntrack.to_conntrack_l(emu.datapath.now),
               ns.netfilter.ruleset.to_iptables_save(counters=True))
              for ns in emu.topology.node_ns.values()]
    counts.pop("fastpath_hits")
    return out.getvalue(), files, tables, counts


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])
@given(case=cluster_and_traffic())
def test_random_clusters_and_flows_are_the_same_in_every_mode(tmp_path_factory, case):
    text, at, stream = case
    if at is None or not stream:
        return
    tmp = tmp_path_factory.mktemp("rc")
    pcap = str(tmp / "in.pcap")
    from kdp.io import write_pcap
    write_pcap(pcap, stream)
    ref = _run_text(str(tmp), text, at, pcap, "reference")
    for mode in ("compiled", "pure", "validate"):
        assert _run_text(str(tmp), text, at, pcap, mode) == ref, mode


def drop_psh_on_n1(emu: Emulator) -> None:
    text = generate_rules(emu.cluster, "n1", nfacct=emu.cluster.config.kube_proxy.nfacct)
    start = text.index("*filter\n")
    end = text.index("\nCOMMIT\n", start)
    emu.load_rules("n1", text[:end] + "\n-I FORWARD 1 -p tcp -m tcp --tcp-flags PSH PSH -j DROP"
                   + text[end:])


def test_psh_is_carried_unless_a_rule_reads_tcp_flags(tmp_path):
    """ACK and PSH-ACK segments of a flow share one cache entry; a rule that
    tests TCP flags puts PSH back into the key: after a run of ACKs, the
    flow's PSH-ACKs must not replay the ACKs' decision (they are dropped)."""
    flows = [0, 3, 8]
    syns = [(0.01, f, "S", 0) for f in flows]
    mixed = syns + [(0.01, flows[i % 3], "PA" if i % 2 else "A", 5 * (i % 2)) for i in range(120)]
    os.mkdir(tmp_path / "plain")
    plain = assert_same_everywhere(tmp_path / "plain", mixed)
    assert plain["compiled"] >= 120 - 2 * len(flows)        # SYN and first ACK per flow miss
    phased = syns + [(0.01, flows[i % 3], "A", 0) for i in range(60)] \
        + [(0.01, flows[i % 3], "PA", 5) for i in range(60)]
    os.mkdir(tmp_path / "flagged")
    flagged = assert_same_everywhere(tmp_path / "flagged", phased, events={0: drop_psh_on_n1})
    assert flagged["compiled"] > 90
    out, *_ = run_mode(str(tmp_path / "flagged"), _write(tmp_path, phased), "compiled", 131072,
                       {0: drop_psh_on_n1})
    import json
    lines = [json.loads(x) for x in out.decode().splitlines()][3:]
    assert [r["disposition"] for r in lines] == ["delivered"] * 60 + ["dropped"] * 60
