# `kdp run`'s live TCP replay (kdp.livetcp, the default; --raw injects as
# recorded): a recorded HTTP conversation from the demo client to service-a's
# ClusterIP runs to completion against kdp's own backend app (the answer
# consumed by the capture's socket, acknowledgements, SACK blocks and the
# timestamp echo translated into the live server's sequence space, FIN on both
# sides, conntrack TIME_WAIT, no RST); the recorded server's frames of a
# two-sided capture are skipped; an acknowledgement of bytes the live server
# never sent is reported on its line; the four modes agree byte for byte.
import io
import json
import struct
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from kdp.emulator import Emulator
from kdp.runner import PcapRun

from .kdp_cli import kdp
from .test_fastpath_equivalence import assert_equivalent, records, run_modes

AT = "pod/default/client"
GET = b"GET / HTTP/1.1\r\nHost: service-a.backend\r\n\r\n"
C0, S0, TS_C, TS_S = 1000, 5000, 100, 7000          # the recording's ISNs and first TSvals


def _conversation(answer: int, two_sided: bool = False, sack: bool = False) -> list:
    """The client's side of GET / to service-a (answer bytes long), with
    timestamps; two_sided adds the recorded server's SYN-ACK and answer."""
    emu = Emulator.demo(capture=False)
    c = emu.cluster
    client, svc = c.pod("default", "client"), c.service("backend", "service-a")
    mac = emu.namespace(AT).devices["eth0"].mac
    gw = emu.namespace(f"node/{client.node}").devices["cbr0"].mac
    port = svc.ports[0].port

    def a(flags, seq, ack, load=b"", ts=0, extra=()):
        opts = list(extra) + [("NOP", None), ("NOP", None), ("Timestamp", (TS_C + ts, TS_S + ts))]
        return (Ether(src=mac, dst=gw) / IP(src=str(client.ip), dst=str(svc.cluster_ip), flags="DF")
                / TCP(sport=45000, dport=port, flags=flags, seq=seq, ack=ack, window=502, options=opts) / load)

    def b(flags, seq, ack, load=b""):
        return (Ether(src=gw, dst=mac) / IP(src=str(svc.cluster_ip), dst=str(client.ip), flags="DF")
                / TCP(sport=port, dport=45000, flags=flags, seq=seq, ack=ack, window=509) / load)
    syn = (Ether(src=mac, dst=gw) / IP(src=str(client.ip), dst=str(svc.cluster_ip), flags="DF")
           / TCP(sport=45000, dport=port, flags="S", seq=C0, window=64240,
                 options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (TS_C, 0)), ("NOP", None),
                          ("WScale", 7)]))
    g = len(GET)
    sack_opt = [("SAck", (S0 + 1, S0 + 1 + answer))] if sack else []
    frames = [syn] + ([b("SA", S0, C0 + 1)] if two_sided else []) + [
        a("A", C0 + 1, S0 + 1), a("PA", C0 + 1, S0 + 1, GET)] \
        + ([b("PA", S0 + 1, C0 + 1 + g, b"x" * answer)] if two_sided else []) + [
        a("A", C0 + 1 + g, S0 + 1 + answer, ts=1, extra=sack_opt),
        a("FA", C0 + 1 + g, S0 + 1 + answer, ts=2),
        a("A", C0 + 2 + g, S0 + 2 + answer, ts=3)]
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + 0.001 * i
    return frames


def _answer_len(tmp_path) -> int:
    """How many bytes the demo's service-a app answers GET / with (as the
    capture's socket counts them)."""
    path = tmp_path / "probe.pcap"
    wrpcap(str(path), _conversation(0)[:3])
    run = PcapRun(Emulator.demo(capture=False), AT, io.BytesIO(), json_lines=True, out_dir=None, live=True)
    run.run(str(path))
    (flow,) = run.live.flows.values()
    assert flow.live_isn is not None and flow.received > 100
    return flow.received


def _tcp(path):
    return [p[TCP] for p in rdpcap(str(path)) if TCP in p]


def test_recorded_http_conversation_runs_to_completion(tmp_path):
    n = _answer_len(tmp_path)
    wrpcap(str(tmp_path / "c.pcap"), _conversation(n, sack=True))
    r = kdp("run", "demo", "--pcap", tmp_path / "c.pcap", "--at", AT, "--json", "--conntrack",
            "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    recs, summary = lines[:-1], lines[-1]["summary"]
    assert [x["disposition"] for x in recs] == ["delivered"] * 6
    assert all(x["unacceptable"] is None for x in recs), recs
    assert recs[0]["translated"] == {} and all("ack" in x["translated"] for x in recs[1:])
    assert recs[3]["translated"]["sack"] == 1 and "tsecr" in recs[1]["translated"]
    assert summary["translated"] == 5
    out = summary["outcomes"]
    assert out["resets"]["total"] == 0 and out["flows"]["completed"] == 1 and out["flows"]["reset"] == 0
    ct = "\n".join(summary["conntrack"].values())
    assert "TIME_WAIT" in ct and "sport=45000" in ct and "CLOSE " not in ct
    # on the client's eth0: the live server's SYN-ACK, answer and FIN, and the
    # client's segments in its sequence space (ack, SACK edges, TSecr)
    segs = _tcp(tmp_path / "out" / "default__client__eth0.pcap")
    server = [s for s in segs if s.sport == 80]
    synack = server[0]
    assert synack.flags == "SA" and synack.seq != S0
    assert any(bytes(s.payload).startswith(b"HTTP/1.1 200") for s in server)
    assert any(s.flags & 0x01 for s in server) and not any(s.flags & 0x04 for s in segs)
    client = [s for s in segs if s.sport == 45000]
    isn, tsval = synack.seq, dict(synack.options)["Timestamp"][0]
    assert client[1].ack == isn + 1 and dict(client[1].options)["Timestamp"][1] == tsval
    assert client[-1].ack == isn + n + 2                       # the server's FIN acknowledged
    assert dict(client[3].options)["SAck"] == (isn + 1, isn + 1 + n)
    for s in client:                                           # checksums updated
        raw = bytes(s)
        assert TCP(raw).chksum == s.chksum
    assert len(summary["conntrack"]) == 3
    # what the runner sent is kdp.livetcp.replayed()'s translation (the one the kernel oracle checks)
    from kdp import wire
    from kdp.livetcp import replayed
    recorded = [bytes(f) for f in _conversation(n, sack=True)]
    frames = [bytes(p) for p in rdpcap(str(tmp_path / "out" / "default__client__eth0.pcap")) if TCP in p]
    sent = [i for i, f in enumerate(frames) if TCP(f[34:]).sport == 45000]
    for k, i in enumerate(sent):
        inbound = [wire.parse(f) for f in frames[:i] if TCP(f[34:]).sport == 80]
        assert frames[i] == replayed(recorded, k, inbound), k


def test_two_sided_capture_skips_the_recorded_server(tmp_path):
    """The recorded server's frames are not injected (the live one answers);
    its SYN-ACK gives the recorded ISN; --raw is today's injection."""
    wrpcap(str(tmp_path / "two.pcap"), _conversation(38, two_sided=True))
    r = kdp("run", "demo", "--pcap", tmp_path / "two.pcap", "--at", AT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "skipped   live-peer-answers" in lines[1] and "skipped   live-peer-answers" in lines[4]
    assert "translated ack 5001->" in lines[2]
    # the live answer is longer than the recorded 38 bytes: acknowledging less is acceptable
    assert "!" not in r.stdout.split("frames:")[0]
    assert "resets sent by kdp: 0" in r.stdout
    raw = kdp("run", "demo", "--pcap", tmp_path / "two.pcap", "--at", AT, "--raw", "--json")
    got = [json.loads(l) for l in raw.stdout.splitlines()]
    assert all("translated" not in x for x in got[:-1]) and "translated" not in got[-1]["summary"]
    assert got[-1]["summary"]["outcomes"]["resets"]["total"] > 0       # the client's stack resets
    api = io.BytesIO()
    PcapRun(Emulator.demo(capture=False), AT, api, json_lines=True, out_dir=None).run(str(tmp_path / "two.pcap"))
    assert api.getvalue().decode().splitlines() == raw.stdout.splitlines()[:-1]


def test_acknowledging_unsent_bytes_is_reported(tmp_path):
    n = _answer_len(tmp_path)
    wrpcap(str(tmp_path / "c.pcap"), _conversation(n + 1000))
    r = kdp("run", "demo", "--pcap", tmp_path / "c.pcap", "--at", AT, "--json")
    recs = [json.loads(l) for l in r.stdout.splitlines()[:-1]]
    assert recs[2]["unacceptable"] is None
    assert recs[3]["unacceptable"].startswith("acknowledges 1000 bytes the live peer has not sent")
    text = kdp("run", "demo", "--pcap", tmp_path / "c.pcap", "--at", AT).stdout.splitlines()
    assert "  ! acknowledges 1000 bytes" in text[3]


def test_live_replay_agrees_in_every_mode(tmp_path):
    n = _answer_len(tmp_path)
    frames = []
    for k in range(3):                    # three conversations from different ports, one after another
        for f in _conversation(n, sack=True):
            f = f.copy()
            f[TCP].sport = 45000 + k if f[TCP].sport != 80 else 80
            f.time += k
            del f[IP].chksum, f[TCP].chksum
            frames.append(f)
    # the first flow's ACK, three times before its SYN (raw: no flow owns it yet); after the
    # SYN the same bytes are translated (a cache entry for them would be forgotten: the
    # capture-owned socket is a watched change)
    early = []
    for j in range(3):
        f = frames[1].copy()
        f.time = frames[0].time - 1 + 0.1 * j
        early.append(f)
    wrpcap(str(tmp_path / "live.pcap"), early + frames)
    runs = run_modes(tmp_path / "live.pcap", tmp_path, args=("--conntrack",), live=True)
    ref = assert_equivalent(runs, ("conntrack",))
    recs = records(ref.lines)
    assert all("translated" not in x for x in recs[:3]) and "ack" in recs[4]["translated"]
    assert ref.summary["translated"] == 15
    assert all(x["unacceptable"] is None for x in recs[3:])
    # (the first 5-tuple counts as reset: its early ACKs were answered with RST)
    assert ref.summary["outcomes"]["flows"]["completed"] == 2 and ref.summary["outcomes"]["flows"]["reset"] == 1


TWO_SIDED = Path(__file__).resolve().parents[2] / "examples" / "pcaps" / "two-sided.pcap"


def test_at_auto_replays_live_from_each_sender(tmp_path):
    """--at auto with live replay (the default): the client's flow is owned at
    the client pod, the backend pod's recorded frames are skipped (its live app
    answers), the conversation completes; --apps off injects both sides raw."""
    r = kdp("run", "demo", "--pcap", TWO_SIDED, "--at", "auto", "--json", "--conntrack")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    recs, summary = lines[:-1], lines[-1]["summary"]
    assert [x["index"] for x in recs if x["reason"] == "live-peer-answers"] == [1, 4, 6]
    assert summary["translated"] == 4 and summary["skipped"] == 3
    assert all(x["unacceptable"] is None for x in recs if "unacceptable" in x)
    out = summary["outcomes"]
    assert out["resets"]["total"] == 0 and out["flows"]["completed"] == 1
    assert "TIME_WAIT" in "\n".join(summary["conntrack"].values())
    off = kdp("run", "demo", "--pcap", TWO_SIDED, "--at", "auto", "--apps", "off", "--json")
    got = [json.loads(l) for l in off.stdout.splitlines()]
    assert "translated" not in got[-1]["summary"] and got[-1]["summary"]["skipped"] == 0
    assert all(x["disposition"] == "delivered" and "translated" not in x for x in got[:-1])


def test_at_auto_live_replay_agrees_in_every_mode(tmp_path):
    frames = []
    for k in range(3):                    # the two-sided conversation three times, new client ports
        for f in rdpcap(str(TWO_SIDED)):
            f = f.copy()
            if f[TCP].sport == 45000:
                f[TCP].sport = 45000 + k
            else:
                f[TCP].dport = 45000 + k
            f.time += k
            del f[IP].chksum, f[TCP].chksum
            frames.append(f)
    again = frames[11].copy()             # the second conversation's request, retransmitted
    again.time += 0.0005
    frames.insert(12, again)
    wrpcap(str(tmp_path / "auto.pcap"), frames)
    runs = run_modes(tmp_path / "auto.pcap", tmp_path, args=("--at", "auto", "--conntrack"), live=True)
    ref = assert_equivalent(runs, ("conntrack",))
    assert ref.summary["translated"] == 13 and ref.summary["skipped"] == 9
    assert ref.summary["retransmitted"] == 1 and records(ref.lines)[12]["retransmission"]
    assert ref.summary["outcomes"]["flows"]["completed"] == 3


def test_recorded_retransmission_is_reported_and_acked_again(tmp_path):
    """The capture's client sent its request twice: the copy is translated
    like any segment and reported; kdp's server ACKs it again with a D-SACK
    block and does not hand it to the app again; the conversation completes."""
    n = _answer_len(tmp_path)
    frames = _conversation(n)
    again = frames[2].copy()                               # the GET, retransmitted
    again.time = frames[2].time + 0.0005
    wrpcap(str(tmp_path / "re.pcap"), frames[:3] + [again] + frames[3:])
    r = kdp("run", "demo", "--pcap", tmp_path / "re.pcap", "--at", AT, "--json", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    recs, summary = lines[:-1], lines[-1]["summary"]
    assert [x["retransmission"] for x in recs] == [None, None, None, f"{len(GET)} bytes sent before",
                                                   None, None, None]
    assert summary["retransmitted"] == 1 and summary["outcomes"]["flows"]["completed"] == 1
    assert summary["outcomes"]["resets"]["total"] == 0
    server = [s for s in _tcp(tmp_path / "out" / "default__client__eth0.pcap") if s.sport == 80]
    answers = [s for s in server if len(s.payload)]
    assert sum(len(s.payload) for s in answers) == n                # answered once
    dsack = [s for s in server if dict(s.options).get("SAck")]
    assert len(dsack) == 1 and dsack[0].flags == "A"
    text = kdp("run", "demo", "--pcap", tmp_path / "re.pcap", "--at", AT).stdout.splitlines()
    assert f"  retransmission: {len(GET)} bytes sent before" in text[3]
