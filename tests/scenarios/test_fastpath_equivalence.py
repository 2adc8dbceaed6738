# Fast path equivalence of `kdp run` (spec/cli.md): one pcap through the flow
# cache (default), the reference path (--no-fastpath), the pure-Python twins
# (KDP_NO_EXTENSIONS=1) and the self-checking mode (KDP_FASTPATH_VALIDATE=1)
# gives byte-identical per-frame JSON lines and device pcaps, and summaries
# equal but for timing and fast path counters. Owns the pcap edits (bad
# checksums, truncation, TTL, flags, fragments, MACs, time gaps, duplicate and
# backward timestamps) and the cases; the workloads come from
# benchmarks/make_pcap.py. Every run is a `python -m kdp.cli` subprocess, so
# the environment variables take effect; the modes of one case run in parallel.
from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from kdp.testing.plugin import load_profile

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
CLUSTER_DATA = SRC / "kdp" / "data" / "demo.yaml"
NODE0 = "aks-nodepool1-71771131-vmss000000"
AT = "pod/default/client"

_spec = importlib.util.spec_from_file_location("kdp_bench_make_pcap", ROOT / "benchmarks" / "make_pcap.py")
mp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp)

PROFILE = load_profile()
# each example is four CLI runs: keep `ci` to a handful, `thorough` goes further
EXAMPLES = 40 if PROFILE in ("thorough", "kdp-thorough") else 6

MODES = {
    "reference": (["--no-fastpath"], {}),
    "fastpath": ([], {}),
    "pure": ([], {"KDP_NO_EXTENSIONS": "1"}),
    "validate": ([], {"KDP_FASTPATH_VALIDATE": "1"}),
}
# summary keys that must agree; the rest (seconds, frames_per_second,
# fastpath_hits, fastpath_misses, peak_rss_mb, ...) are timing and cache counters
SUMMARY_KEYS = ("frames", "delivered", "dropped", "rejected", "skipped", "translated", "pcaps", "outcomes")
US = 1_000_000


@dataclass
class Run:
    mode: str
    lines: list[str]           # the per-frame JSON lines, as printed
    summary: dict
    pcaps: dict[str, bytes]    # --out DIR: file name -> contents


def run_modes(pcap: Path, work: Path, cluster: str = "demo", args: tuple = (),
              out: bool = True, live: bool = False) -> dict[str, Run]:
    """`kdp run CLUSTER --pcap PCAP --at pod/default/client --json [--out]` in
    every mode, concurrently; each must exit 0. The generated workloads are
    synthetic flows (their server side does not answer as kdp's apps do):
    raw injection (--raw) unless live."""
    procs = {}
    for mode, (flags, extra_env) in MODES.items():
        env = {k: v for k, v in os.environ.items()
               if k not in ("KDP_NO_EXTENSIONS", "KDP_FASTPATH_VALIDATE")}
        env.update(extra_env)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        outdir = work / f"out-{mode}"
        argv = [sys.executable, "-m", "kdp.cli", "run", cluster, "--pcap", str(pcap), "--at", AT,
                "--json", *flags, *args] + (["--out", str(outdir)] if out else []) \
            + ([] if live else ["--raw"])
        stdout, stderr = open(work / f"{mode}.stdout", "wb"), open(work / f"{mode}.stderr", "wb")
        procs[mode] = (subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env, cwd=work),
                       stdout, stderr, outdir)
    runs = {}
    for mode, (proc, stdout, stderr, outdir) in procs.items():
        code = proc.wait(timeout=600)
        stdout.close()
        stderr.close()
        err = (work / f"{mode}.stderr").read_text(errors="replace")
        assert code == 0, f"{mode}: exit {code}\n{err[-3000:]}"
        lines = (work / f"{mode}.stdout").read_text().splitlines()
        assert lines and lines[-1].startswith('{"summary"'), f"{mode}: no summary line\n{err[-3000:]}"
        pcaps = {f.name: f.read_bytes() for f in sorted(outdir.iterdir())} if out else {}
        runs[mode] = Run(mode, lines[:-1], json.loads(lines[-1])["summary"], pcaps)
    return runs


def assert_equivalent(runs: dict[str, Run], state_keys: tuple = ()) -> Run:
    """Every mode agrees with the reference; returns the reference run.
    state_keys: summary keys holding after-run state (--conntrack, --counters)
    that must agree too."""
    ref = runs["reference"]
    for mode, r in runs.items():
        if mode == "reference":
            continue
        assert len(r.lines) == len(ref.lines), f"{mode}: {len(r.lines)} lines, reference {len(ref.lines)}"
        for a, b in zip(ref.lines, r.lines):
            assert a == b, f"{mode} differs from the reference at a frame:\n  ref  {a}\n  {mode:<4} {b}"
        for k in SUMMARY_KEYS + state_keys:
            assert r.summary.get(k) == ref.summary.get(k), \
                f"{mode}: summary[{k!r}] {r.summary.get(k)!r} != reference {ref.summary.get(k)!r}"
        assert sorted(r.pcaps) == sorted(ref.pcaps), \
            f"{mode}: pcap files {sorted(set(r.pcaps) ^ set(ref.pcaps))} not in both"
        differ = [name for name in ref.pcaps if r.pcaps[name] != ref.pcaps[name]]
        assert not differ, f"{mode}: pcaps differ from the reference: {differ}"
    assert ref.summary["frames"] == len(ref.lines)
    return ref


def records(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines]


def reasons(run: Run) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records(run.lines):
        key = r["reason"] or r["disposition"]
        out[key] = out.get(key, 0) + 1
    return out


# --- editing frames and timestamps --------------------------------------------

def _set(frame: bytes, off: int, val: bytes) -> bytes:
    b = bytearray(frame)
    b[off:off + len(val)] = val
    return bytes(b)


def _flip(frame: bytes, off: int) -> bytes:
    return _set(frame, off, bytes([frame[off] ^ 0x5A])) if off < len(frame) else frame


def _is(frame: bytes, proto: int) -> bool:
    return len(frame) >= 34 and frame[12:14] == b"\x08\x00" and frame[23] == proto


def _tcp_flags(flags: int):
    return lambda f: mp.fix_checksums(_set(f, 47, bytes([flags]))) if _is(f, mp.PROTO_TCP) else f


def _cut_l4(f: bytes) -> bytes:
    """A TCP/UDP header cut short, with an IP total length that says so."""
    keep = 20 + 6
    return mp.fix_checksums(_set(f[:14 + keep], 16, keep.to_bytes(2, "big")))


FRAME_EDITS = {
    "bad-ip-checksum": lambda f: _flip(f, 24),
    "bad-l4-checksum": lambda f: _flip(f, 50 if _is(f, mp.PROTO_TCP) else 40),
    "truncated-ethernet": lambda f: f[:10],
    "truncated-ip": lambda f: f[:40],           # total length says more than there is
    "cut-l4-header": _cut_l4,
    "ttl-1": lambda f: mp.fix_checksums(_set(f, 22, b"\x01")),
    "ttl-0": lambda f: mp.fix_checksums(_set(f, 22, b"\x00")),
    "tos": lambda f: mp.fix_checksums(_set(f, 15, b"\xb8")),
    "no-df": lambda f: mp.fix_checksums(_set(f, 20, b"\x00\x00")),
    "fragment": lambda f: mp.fix_checksums(_set(f, 20, b"\x20\x00")),      # MF, offset 0
    "fin-ack": _tcp_flags(mp.FIN | mp.ACK),
    "rst": _tcp_flags(mp.RST),
    "rst-ack": _tcp_flags(mp.RST | mp.ACK),
    "syn-again": _tcp_flags(mp.SYN),
    "syn-ack": _tcp_flags(mp.SYN | mp.ACK),
    "no-flags": _tcp_flags(0),
    "broadcast-mac": lambda f: _set(f, 0, b"\xff" * 6),
    "unknown-mac": lambda f: _set(f, 0, bytes.fromhex("020000c0ffee")),
    "other-src-mac": lambda f: _set(f, 6, bytes.fromhex("020000beef01")),
    "spoofed-src": lambda f: mp.fix_checksums(_set(f, 26, bytes([10, 244, 0, 99]))),
    "ipv6-ethertype": lambda f: _set(f, 12, b"\x86\xdd"),
    "link-padding": lambda f: f + bytes(8),
}
TIME_EDITS = ("duplicate-time", "backwards-1s", "backwards-20s", "gap-15s", "gap-40s")
EDITS = tuple(FRAME_EDITS) + TIME_EDITS


def edited(recs: list[tuple[int, bytes]], edits: list[tuple[int, str]]) -> list[tuple[int, bytes]]:
    """Apply (index, kind) edits. Frame edits change that frame; a time edit sets
    that frame's timestamp: the previous one (duplicate), 1 s or 20 s before it
    (backwards, the rest of the stream unmoved), or 15/40 s later, moving every
    later frame too (gap: conntrack entries in CLOSE (10 s) and UDP (30 s) expire)."""
    frames = [f for _, f in recs]
    stamps = [t for t, _ in recs]
    shift = [0] * len(recs)
    set_to: dict[int, int] = {}
    for i, kind in edits:
        if kind in FRAME_EDITS:
            frames[i] = FRAME_EDITS[kind](frames[i])
        elif kind.startswith("gap-"):
            for j in range(i, len(recs)):
                shift[j] += int(kind[4:-1]) * US
        elif kind == "duplicate-time" and i > 0:
            set_to[i] = -1
        elif kind.startswith("backwards-"):
            set_to[i] = int(kind[10:-1]) * US
    out = []
    for i, f in enumerate(frames):
        t = stamps[i] + shift[i]
        if set_to.get(i) == -1:
            t = out[-1][0]
        elif i in set_to:
            t = max(0, t - set_to[i])
        out.append((t, f))
    return out


def write(path: Path, recs) -> Path:
    mp.write_records(str(path), recs)
    return path


def generated(n: int, **kw) -> list[tuple[int, bytes]]:
    return list(mp.generate(n, **kw))


# --- cases -----------------------------------------------------------------------

def test_generator_frames_are_valid_and_deterministic():
    """The workloads parse, carry correct checksums and the demo's MACs, and the
    same seed gives the same bytes."""
    from kdp import wire
    from kdp.emulator import Emulator
    emu = Emulator.demo()
    client = emu.attach_device(AT).mac
    cbr0 = emu.topology.node_ns[NODE0].devices["cbr0"].mac
    for mix in mp.MIXES:
        recs = generated(600, flows=25, mix=mix, seed=7)
        assert recs == generated(600, flows=25, mix=mix, seed=7)
        assert recs != generated(600, flows=25, mix=mix, seed=8)
        assert all(b[0] > a[0] for a, b in zip(recs, recs[1:]))
        for _, raw in recs:
            pkt = wire.parse(raw)
            assert (pkt.eth.src, pkt.eth.dst) == (client, cbr0)
            assert str(pkt.ip.src) == "10.244.0.2" and pkt.ip.ttl == 64 and pkt.l4 is not None
            assert wire.ip_checksum_ok(pkt) and wire.l4_checksum_ok(pkt)
            assert mp.fix_checksums(raw) == raw


def test_established_flows_agree_and_hit_the_cache(tmp_path):
    pcap = write(tmp_path / "est.pcap", generated(2000, flows=40, mix="established", seed=1))
    runs = run_modes(pcap, tmp_path)
    ref = assert_equivalent(runs)
    assert ref.summary["delivered"] >= 0.99 * ref.summary["frames"], reasons(ref)
    to = {r["delivered_to"].split("/")[0] for r in records(ref.lines)}
    assert to == {"pod", "ext"}
    # the flow cache must actually be used on established flows
    summary = runs["fastpath"].summary
    hits = summary.get("fastpath_hits", 0)
    assert hits > 0, f"no fast path hits on established flows: {summary}"


def test_nftables_mode_agrees_in_every_mode_and_hits_the_cache(tmp_path):
    """kube-proxy's nftables mode (kdp.netfilter.nft.engine): every mode agrees on every
    line, pcap, conntrack table, iptables counter and `nft list ruleset`; established
    flows are replayed by the flow cache as in iptables mode."""
    pcap = write(tmp_path / "nft.pcap", generated(1500, flows=30, mix="full", seed=6))
    runs = run_modes(pcap, tmp_path, args=("--proxy-mode", "nftables", "--conntrack", "--counters"))
    ref = assert_equivalent(runs, ("conntrack", "counters", "nft"))
    assert ref.summary["delivered"] >= 0.99 * ref.summary["frames"], reasons(ref)
    assert "table ip kube-proxy" in next(iter(ref.summary["nft"].values()))
    assert runs["fastpath"].summary.get("fastpath_hits", 0) > 0, runs["fastpath"].summary


def test_a_gzipped_cooked_pcapng_agrees_in_every_mode(tmp_path):
    """`tcpdump -i any` frames (SLL2) in gzip-compressed pcapng: the four modes
    agree, and the flow cache replays them as it does a classic pcap's."""
    from kdp import capconvert
    recs = generated(1500, flows=30, mix="established", seed=4)
    pcap = tmp_path / "any.pcapng.gz"
    capconvert.write(str(pcap), recs, "pcapng-sll2.gz")
    runs = run_modes(pcap, tmp_path)
    ref = assert_equivalent(runs)
    plain = tmp_path / "plain"
    plain.mkdir()
    again = run_modes(write(plain / "plain.pcap", recs), plain, out=False)["fastpath"]
    assert again.lines == ref.lines
    assert runs["fastpath"].summary["fastpath_hits"] == again.summary["fastpath_hits"] > 1000


def test_full_mix_agrees(tmp_path):
    pcap = write(tmp_path / "full.pcap", generated(2000, flows=40, mix="full", seed=2))
    ref = assert_equivalent(run_modes(pcap, tmp_path))
    assert ref.summary["delivered"] >= 0.99 * ref.summary["frames"], reasons(ref)
    got = {(r["packet"]["proto"], r["packet"]["dport"]) for r in records(ref.lines)}
    assert {("udp", 53), ("tcp", 80), ("tcp", 443), ("tcp", 8080)} <= got


def test_clashing_source_ports_get_nat_and_agree(tmp_path):
    """Flows to a ClusterIP and straight to its endpoint from the same source
    port: conntrack SNATs the second one's port; cached flows keep that."""
    pcap = write(tmp_path / "clash.pcap",
                 generated(1000, flows=24, mix="established", seed=3, shared_ports=True))
    ref = assert_equivalent(run_modes(pcap, tmp_path))
    from kdp import wire
    natted = sum(1 for (_, raw), r in zip(mp.read_records(str(pcap)), records(ref.lines))
                 if r["packet"]["src"] == mp.CLIENT_IP and r["packet"]["sport"] != wire.parse(raw).l4.sport)
    assert natted > 0


def test_conntrack_timeouts_expire_mid_stream(tmp_path):
    """Gaps longer than the CLOSE (10 s) and UDP (30 s) timeouts, and one
    longer than every TCP timeout but ESTABLISHED's (130 s): entries expire and
    are recreated (an ACK then opens a new entry by pick-up, and the RST that
    answers it kills that entry at once), in every mode alike; the conntrack
    tables after the run agree too."""
    recs = generated(1500, flows=30, mix="full", seed=4)
    recs = edited(recs, [(400, "gap-15s"), (800, "gap-40s"), (1100, "gap-130s"), (1300, "gap-11s")])
    pcap = write(tmp_path / "gaps.pcap", recs)
    ref = assert_equivalent(run_modes(pcap, tmp_path, args=("--conntrack",)), ("conntrack",))
    assert ref.summary["delivered"] >= 0.99 * ref.summary["frames"], reasons(ref)


def test_reopened_tuples_draw_anew_in_every_mode(tmp_path):
    """One 5-tuple to a 3-endpoint ClusterIP opened and reset 12 times amid
    established traffic: every new entry draws its endpoint again (the
    reference path decides each SYN; the cache forgets the removed entry), and
    every mode agrees on every frame and on the conntrack table."""
    from dataclasses import replace
    from ipaddress import IPv4Address as A
    from kdp import wire
    from kdp.emulator import Emulator
    emu = Emulator.demo()
    client = emu.attach_device(AT).mac
    cbr0 = emu.topology.node_ns[NODE0].devices["cbr0"].mac
    recs = generated(600, flows=10, mix="established", seed=6)
    t0 = recs[0][0]
    extra = []
    for i in range(12):
        syn = emu.build(A(mp.CLIENT_IP), A("10.2.0.2"), "tcp", 45000, 80, ident=100 + 2 * i, time=1.0)
        syn = replace(syn, eth=wire.Ether(client, cbr0, wire.ETH_P_IP))
        rst = replace(syn, ip=replace(syn.ip, ident=101 + 2 * i),
                      l4=replace(syn.l4, seq=(syn.l4.seq + 1) & 0xFFFFFFFF, flags=wire.RST, options=b""))
        at = t0 + (i + 1) * 40_000
        extra += [(at + 1, wire.emit(wire.finalize(syn))), (at + 2, wire.emit(wire.finalize(rst)))]
    recs = sorted(recs + extra, key=lambda r: r[0])
    pcap = write(tmp_path / "reopen.pcap", recs)
    ref = assert_equivalent(run_modes(pcap, tmp_path, args=("--conntrack",)), ("conntrack",))
    syns = [r for r in records(ref.lines) if r["packet"]["sport"] == 45000 and r["packet"]["flags"] == "S"]
    assert len(syns) == 12 and len({r["packet"]["dst"] for r in syns}) > 1, syns


def test_bad_checksums_malformed_and_odd_frames(tmp_path):
    """Every kind of frame edit, on frames of established flows (after the
    cache has seen them), with the flows going on afterwards."""
    recs = generated(1200, flows=20, mix="established", seed=5)
    rng = random.Random(5)
    kinds = list(FRAME_EDITS) * 2
    where = sorted(rng.sample(range(200, 1200), len(kinds)))
    recs = edited(recs, list(zip(where, kinds)))
    ref = assert_equivalent(run_modes(write(tmp_path / "odd.pcap", recs), tmp_path))
    seen = reasons(ref)
    for reason in ("invalid-checksum", "malformed-frame", "ttl-exceeded", "fragment-not-supported",
                   "rule:filter/KUBE-FORWARD#1"):         # a bad TCP checksum is ctstate INVALID
        assert seen.get(reason), (reason, seen)


def test_duplicate_and_backward_timestamps(tmp_path):
    recs = generated(1200, flows=25, mix="full", seed=6)
    rng = random.Random(6)
    edits = [(i, "duplicate-time") for i in range(150, 1200, 7)]
    edits += [(i, rng.choice(["backwards-1s", "backwards-20s"])) for i in rng.sample(range(150, 1200), 40)]
    edits += [(600, "gap-15s")]
    pcap = write(tmp_path / "time.pcap", edited(recs, edits))
    assert_equivalent(run_modes(pcap, tmp_path, args=("--conntrack",)), ("conntrack",))


def test_operator_rule_from_a_rules_file(tmp_path):
    """A node's iptables-save dump with an extra filter rule dropping TCP 443."""
    from kdp.emulator import Emulator
    from kdp.k8s.kubeproxy import generate_rules
    emu = Emulator.demo()
    text = generate_rules(emu.cluster, NODE0, nfacct=emu.cluster.config.kube_proxy.nfacct)
    head, sep, tail = text.partition("*filter\n")
    body, commit, rest = tail.partition("COMMIT\n")
    rules = tmp_path / "node0.rules"
    rules.write_text(head + sep + body + "-A FORWARD -p tcp --dport 443 -j DROP\n" + commit + rest)
    n = 1 + sum(1 for line in body.splitlines() if line.startswith("-A FORWARD "))
    pcap = write(tmp_path / "rules.pcap", generated(1200, flows=30, mix="full", seed=7))
    ref = assert_equivalent(run_modes(pcap, tmp_path, args=("--rules", f"{NODE0}={rules}")))
    seen = reasons(ref)
    assert seen.get(f"rule:filter/FORWARD#{n}", 0) > 50, seen
    assert ref.summary["delivered"] > 500, seen


def test_full_conntrack_table(tmp_path):
    """conntrackMax 50: 48 UDP streams become ASSURED first (a DNS query, its
    answer, the next query 2.5 s later), then established TCP flows and 72
    more streams compete for the rest: early drop of unassured entries and
    conntrack-table-full drops, alike in every mode."""
    cluster = tmp_path / "cluster.yaml"
    text = CLUSTER_DATA.read_text()
    assert "    masqueradeAll: false\n" in text
    cluster.write_text(text.replace("    masqueradeAll: false\n",
                                    "    masqueradeAll: false\n    conntrackMax: 50\n", 1))
    from kdp.emulator import Emulator
    from kdp.k8s import load_cluster
    emu = Emulator(load_cluster(str(cluster)))
    client = emu.attach_device(AT).mac
    cbr0 = emu.topology.node_ns[NODE0].devices["cbr0"].mac
    t0 = 1_700_000_000 * US
    recs = generated(900, flows=20, mix="established", seed=8, src_mac=client, dst_mac=cbr0,
                     start=t0 / US + 6, gap_us=(2_000, 8_000))
    rng = random.Random(8)
    dns = mp.HeaderTemplate(client, cbr0, mp.CLIENT_IP, "8.8.8.8", mp.PROTO_UDP)

    def streams(ports, start, rounds):
        for rnd in range(rounds):
            for k, port in enumerate(ports):
                query = mp.dns_query(rng.getrandbits(16), rng.randint(40, 120), rng)
                recs.append((start + rnd * 5 * US // 2 + k * 20_000,
                             mp.udp_frame(dns, port, 53, rng.getrandbits(16), query)))

    streams(range(20000, 20048), t0, 3)           # assured by t0 + 2.5 s
    streams(range(20048, 20120), t0 + 6 * US, 3)  # amid the TCP flows
    recs.sort(key=lambda r: r[0])
    pcap = write(tmp_path / "ctfull.pcap", recs)
    runs = run_modes(pcap, tmp_path, cluster=str(cluster), args=("--conntrack",))
    ref = assert_equivalent(runs, ("conntrack",))
    seen = reasons(ref)
    assert seen.get("conntrack-table-full", 0) > 20 and seen["delivered"] > 500, seen


def test_node_options_agree(tmp_path):
    """A node with conntrackTCPBeLiberal (no INVALID drop rule: bad-checksum
    segments go on), MASQUERADE without --random-fully and NodePorts only on the
    primary address: every mode alike, conntrack included."""
    cluster = tmp_path / "cluster.yaml"
    text = CLUSTER_DATA.read_text()
    cluster.write_text(text.replace("    masqueradeAll: false\n", "    masqueradeAll: false\n"
                                    "    conntrackTCPBeLiberal: true\n    iptablesRandomFully: false\n"
                                    "    nodePortAddresses: [primary]\n", 1))
    recs = generated(900, flows=20, mix="full", seed=10)
    rng = random.Random(10)
    kinds = ["bad-l4-checksum", "fin-ack", "rst"] * 3
    recs = edited(recs, list(zip(sorted(rng.sample(range(150, 900), len(kinds))), kinds)))
    ref = assert_equivalent(run_modes(write(tmp_path / "opts.pcap", recs), tmp_path,
                                      cluster=str(cluster), args=("--conntrack",)), ("conntrack",))
    seen = reasons(ref)
    assert not seen.get("rule:filter/KUBE-FORWARD#1") and seen["delivered"] > 400, seen


SCTP_OBJECTS = """
---
apiVersion: v1
kind: Pod
metadata: {name: sctp-echo, namespace: default, labels: {app: sctp-echo}}
spec:
  nodeName: aks-nodepool1-71771131-vmss000001
  containers: [{name: echo, image: echo, ports: [{containerPort: 9999, protocol: SCTP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: sctp-echo, namespace: default}
spec: {selector: {app: sctp-echo}, ports: [{port: 80, targetPort: 9999, protocol: SCTP}]}
"""


def test_sctp_service_frames_agree(tmp_path):
    """A cluster with an SCTP Service: INITs (new and retransmitted), a DATA chunk
    no association knows (INVALID) and a bad CRC32c amid TCP/UDP traffic; the fast
    path leaves SCTP to the reference walk and every mode agrees."""
    from kdp import wire
    from kdp.emulator import Emulator
    from kdp.k8s import load_cluster
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER_DATA.read_text() + SCTP_OBJECTS)
    emu = Emulator(load_cluster(str(cluster)))
    client, cbr0 = emu.attach_device(AT).mac, emu.topology.node_ns[NODE0].devices["cbr0"].mac
    vip = emu.cluster.service("default", "sctp-echo").cluster_ip
    recs = generated(600, flows=20, mix="full", seed=11)
    t0 = recs[0][0]

    def frame(sport, l4):
        pkt = emu.build(wire.IPv4Address(mp.CLIENT_IP), vip, "sctp", sport, 80, ident=sport & 0xFFFF)
        pkt = wire.finalize(wire.Packet(wire.Ether(cbr0, client, wire.ETH_P_IP), ip=pkt.ip,
                                        l4=l4 or pkt.l4))
        return wire.emit(pkt)

    data = wire.SCTP(0, 80, 0x1234, 0, wire.sctp_chunk(0, b"\0" * 12 + b"x"))
    extra = []
    for i, sport in enumerate(range(47000, 47030)):
        extra.append((t0 + 1000 + i * 40_000, frame(sport, None)))
        extra.append((t0 + 3000 + i * 40_000, frame(sport, None)))           # retransmit
        if i % 5 == 0:
            extra.append((t0 + 5000 + i * 40_000, frame(sport, wire.SCTP(sport, 80, 0x1234, 0,
                                                                         data.chunks))))
    bad = bytearray(frame(47100, None))
    bad[-1] ^= 0xFF
    extra.append((t0 + 7000, bytes(bad)))
    recs = sorted(recs + extra, key=lambda r: r[0])
    ref = assert_equivalent(run_modes(write(tmp_path / "sctp.pcap", recs), tmp_path,
                                      cluster=str(cluster), args=("--conntrack", "--counters")),
                            ("conntrack", "counters"))
    got = [r for r in records(ref.lines) if r["packet"]["proto"] == "sctp"]
    assert sum(r["delivered_to"] == "pod/default/sctp-echo" for r in got) == 60, reasons(ref)
    assert sum(r["disposition"] == "dropped" for r in got) == 7, reasons(ref)


def test_state_after_the_run_agrees(tmp_path):
    """Stricter than the output contract: conntrack -L and the rule counters
    (iptables-save -c) after the run are the same whether frames took the
    cache or walked the rules."""
    pcap = write(tmp_path / "state.pcap", generated(1500, flows=30, mix="full", seed=9))
    assert_equivalent(run_modes(pcap, tmp_path, args=("--conntrack", "--counters"), out=False),
                      ("conntrack", "counters"))


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 2**16), mix=st.sampled_from(mp.MIXES), flows=st.integers(1, 30),
       shared=st.booleans(), payload=st.sampled_from([0.0, 0.25, 1.0]),
       edits=st.lists(st.tuples(st.integers(0, 299), st.sampled_from(EDITS)), max_size=30))
def test_random_pcaps_agree(tmp_path_factory, seed, mix, flows, shared, payload, edits):
    work = tmp_path_factory.mktemp("random")
    recs = generated(300, flows=flows, mix=mix, seed=seed, shared_ports=shared,
                     payload_fraction=payload)
    pcap = write(work / "r.pcap", edited(recs, edits))
    assert_equivalent(run_modes(pcap, work))


# --- the benchmark's traffic classes (benchmarks/traffic.py), live replay -----

_tspec = importlib.util.spec_from_file_location("kdp_bench_traffic", ROOT / "benchmarks" / "traffic.py")
traffic = importlib.util.module_from_spec(_tspec)
_tspec.loader.exec_module(traffic)

# classes whose every frame after a flow's first exchanges the cache replays:
# answers by the echo app and the stack (echo replies, a closed port's ICMP
# error), drawing IP IDs from ip_idents slots
CACHED_CLASSES = ("udp-pod", "udp-clusterip", "icmp-echo", "udp-closed")


@pytest.mark.parametrize("cls", traffic.CLASSES)
def test_traffic_classes_agree_in_every_mode(tmp_path_factory, cls):
    """Each class of the `kdp run` benchmark (new flows, answered UDP through a
    Service and straight to a pod, ICMP echo, closed ports, mid-stream ACKs,
    DNS, the mix) in the default live replay: the four modes agree on every
    line, pcap, the conntrack table and the rule counters after the run; the
    answered classes are replayed by the cache after each flow's first frames."""
    work = tmp_path_factory.mktemp(cls)
    cluster = traffic.write_cluster(str(work / "cluster"))
    pcap = work / f"{cls}.pcap"
    traffic.write_pcap(str(pcap), cls, 600, seed=3)
    runs = run_modes(pcap, work, cluster=cluster, args=("--conntrack", "--counters"), live=True)
    ref = assert_equivalent(runs, ("conntrack", "counters"))
    assert ref.summary["frames"] == 600
    if cls in CACHED_CLASSES:
        assert ref.summary["delivered"] == 600, reasons(ref)
        hits = runs["fastpath"].summary["fastpath_hits"]
        assert hits >= 400, f"{cls}: only {hits} of 600 frames replayed by the cache"


@pytest.mark.parametrize("cls", CACHED_CLASSES)
def test_answered_classes_agree_across_gaps_and_odd_frames(tmp_path_factory, cls):
    """The answered classes with time gaps (UDP and ICMP entries expire and are
    made again; IP ID buckets advance over many jiffies), timestamps going back
    and repeating, and odd frames (bad checksums, TTL 1, TOS, no DF, padding)
    mid-stream: the four modes still agree on every line, pcap, conntrack entry
    and counter."""
    work = tmp_path_factory.mktemp(cls)
    cluster = traffic.write_cluster(str(work / "cluster"))
    raw = work / "raw.pcap"
    traffic.write_pcap(str(raw), cls, 600, seed=5)
    edits = [(100, "gap-40s"), (180, "gap-130s"), (250, "backwards-20s"), (300, "duplicate-time"),
             (330, "bad-ip-checksum"), (360, "bad-l4-checksum"), (400, "ttl-1"), (450, "tos"),
             (500, "no-df"), (520, "link-padding"), (540, "gap-15s")]
    pcap = write(work / "edited.pcap", edited(list(mp.read_records(str(raw))), edits))
    runs = run_modes(pcap, work, cluster=cluster, args=("--conntrack", "--counters"), live=True)
    assert_equivalent(runs, ("conntrack", "counters"))
    assert runs["fastpath"].summary["fastpath_hits"] >= 200     # (each gap makes every flow anew)


# --- the same classes in kube-proxy's nftables mode ----------------------------

# a sticky twin of udp-echo: its endpoint chains remember each client in an affinity
# set (`flags dynamic,timeout`, 10 s) that new flows update and look up
NFT_STICKY = """\
apiVersion: v1
kind: Service
metadata: {name: udp-sticky, namespace: default}
spec:
  clusterIP: 10.2.0.31
  selector: {app: udp-echo}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 10}}
  ports: [{name: echo, port: 92, targetPort: echo, protocol: UDP}]
"""
NFT_CLASSES = ("udp-clusterip", "icmp-echo", "udp-closed", "udp-pod", "syn-clusterip")
# tables of the other families on the client's node (--rules, beside kube-proxy's): bridge
# counters where the client's frames enter cbr0 and go up to the stack and where the
# answers leave through it, a netdev ingress counter on cbr0, and a netdev egress drop on
# eth0 of the datagrams to the closed port (before they leave: no ICMP error comes back)
NFT_FAMILIES = """table bridge fam {
	chain bpre {
		type filter hook prerouting priority filter; policy accept;
		ip protocol udp counter packets 0 bytes 0
	}

	chain binput {
		type filter hook input priority filter; policy accept;
		ip protocol icmp counter packets 0 bytes 0
	}

	chain bout {
		type filter hook output priority out; policy accept;
		ip protocol udp counter packets 0 bytes 0
	}
}
table netdev famdev {
	chain ing {
		type filter hook ingress device "cbr0" priority filter; policy accept;
		ip protocol tcp counter packets 0 bytes 0
	}

	chain eg {
		type filter hook egress device "eth0" priority filter; policy accept;
		udp dport 9999 drop
	}
}
"""


def nft_workload(n: int, seed: int) -> list[tuple[int, bytes]]:
    """The benchmark's answered classes and new TCP flows interleaved with what only
    nftables mode does: a known ClusterIP on a port it does not serve (reject), an
    unallocated address of the service CIDR (drop), and a ClientIP-affinity Service
    whose flows after a 15 s gap (the affinity elements expired, the conntrack entries
    alive) are new flows drawing their endpoint again."""
    g = traffic.Generator(seed)
    udp, r = g.L[3], g.rng
    out, t = [], 1_700_000_000_000_000
    for i in range(n):
        if i == n // 2:
            t += 15 * US
        k = i % 10
        if k < 5:
            f = g.frame(NFT_CLASSES[k])
        elif k == 5:
            f = bytes(g._base("10.2.0.20") / udp(sport=34000 + r.randrange(16), dport=91) / bytes(20))
        elif k == 6:
            f = bytes(g._base("10.2.0.99") / udp(sport=34100 + r.randrange(16), dport=90) / bytes(20))
        else:
            base = 35000 if i < n // 2 else 35100
            f = bytes(g._base("10.2.0.31") / udp(sport=base + r.randrange(24), dport=92)
                      / bytes(r.randrange(16, 100)))
        out.append((t, f))
        t += 1000
    return out


def test_nftables_mode_classes_and_nft_only_behaviours_agree_in_every_mode(tmp_path):
    """kube-proxy's nftables mode on the benchmark's classes, live replay: the four
    modes agree on every line, pcap, conntrack entry, iptables counter and the nft
    counters and affinity sets (`nft list ruleset`); the reject, the service-CIDR
    drop and numgen's endpoint choices are the reference's; flows that read or update
    the affinity set are left to the reference path (their decision rests on the set),
    the rest is replayed."""
    from kdp.k8s import load_cluster
    from kdp.k8s.kubeproxy_nft import node_ruleset
    cluster = traffic.write_cluster(str(tmp_path / "cluster"))
    (tmp_path / "cluster" / "udp-sticky.yaml").write_text(NFT_STICKY)
    model = load_cluster(cluster)
    model.config.kube_proxy.mode = "nftables"
    rules = tmp_path / "node0.nft"
    rules.write_text(node_ruleset(model, NODE0) + NFT_FAMILIES)
    pcap = write(tmp_path / "nft.pcap", nft_workload(600, seed=4))
    runs = run_modes(pcap, tmp_path, cluster=cluster, live=True,
                     args=("--proxy-mode", "nftables", "--conntrack", "--counters",
                           "--rules", f"{NODE0}={rules}"))
    ref = assert_equivalent(runs, ("conntrack", "counters", "nft"))
    drops = ref.summary["outcomes"]["drop_reasons"]
    # kube-proxy's cluster-ips-check chain: a known ClusterIP's unserved port rejected,
    # the rest of the service CIDR dropped -- every such frame (not cached: each makes a
    # new unconfirmed entry, and a reject answers)
    assert drops == {"rule:ip kube-proxy/cluster-ips-check#1": 60,
                     "rule:ip kube-proxy/cluster-ips-check#2": 60,
                     "rule:netdev famdev/eg#1": 60}, drops
    assert ref.summary["rejected"] == 60 and ref.summary["delivered"] == 420
    services = ref.summary["outcomes"]["services"]
    assert services["default/udp-sticky"]["new_flows"] == 48
    assert len(services["default/udp-echo"]["endpoints"]) == 3          # numgen spreads them
    # the affinity element, its timeout left as the last update set it, agrees in every
    # mode (assert_equivalent compared the listings): a replay never skipped an update
    nft = "".join(ref.summary["nft"].values())
    assert "elements = { 10.244.0.2 timeout 10s expires " in nft
    # the other families' counters moved (and agree in every mode)
    fam = nft[nft.index("table bridge fam"):]
    assert "counter packets 0 " not in fam, fam
    # established flows (the sticky ones' above all) replayed by the cache
    hits = runs["fastpath"].summary["fastpath_hits"]
    assert hits >= 80, f"only {hits} of 600 frames replayed by the cache"
