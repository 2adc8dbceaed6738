# `kdp run`'s live replay of UDP (kdp.livetcp, the default; --raw injects as
# recorded): the UDP flows a capture sends from the attachment point belong to
# it, as a client's socket would, so the live peer's answers (the echo app's
# datagrams, back through the Service's reverse NAT) are consumed there, not
# answered with ICMP port unreachable; the recorded peer's datagrams of a
# two-sided capture are skipped. With --raw the client's stack has no socket and
# answers ICMP port unreachable, as before.
import importlib.util
import json
from pathlib import Path

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from .kdp_cli import kdp

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("kdp_bench_traffic", ROOT / "benchmarks" / "traffic.py")
traffic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(traffic)

SVC_IP, SVC_PORT = traffic.UDP_ECHO_SVC


def _capture(path: Path) -> Path:
    """Three datagrams from the client to the udp-echo ClusterIP on one flow,
    with the recorded answer to the first between them (a two-sided capture)."""
    def c(load):
        return (Ether(src=traffic.CLIENT_MAC, dst=traffic.CBR0_MAC) / IP(src=traffic.CLIENT_IP, dst=SVC_IP)
                / UDP(sport=41000, dport=SVC_PORT) / load)
    peer = (Ether(src=traffic.CBR0_MAC, dst=traffic.CLIENT_MAC) / IP(src=SVC_IP, dst=traffic.CLIENT_IP)
            / UDP(sport=SVC_PORT, dport=41000) / b"one")
    frames = [c(b"one"), peer, c(b"two"), c(b"three")]
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + 0.01 * i
    wrpcap(str(path), frames)
    return path


def _run(tmp_path, *extra):
    cluster = traffic.write_cluster(str(tmp_path / "cluster"))
    pcap = _capture(tmp_path / "udp.pcap")
    out = tmp_path / ("out" + "".join(extra).replace("-", ""))
    res = kdp("run", cluster, "--pcap", str(pcap), "--at", traffic.CLIENT_AT, "--json", "--out", str(out),
              "--conntrack", *extra)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    icmp = [p for f in out.iterdir() for p in rdpcap(str(f)) if ICMP in p]
    return lines[:-1], lines[-1]["summary"], icmp, out


def _client_veth(out: Path) -> list:
    """What the client pod's own eth0 saw (its pcap in --out)."""
    names = [f for f in out.iterdir() if "default__client" in f.name and f.name.endswith("eth0.pcap")]
    assert len(names) == 1, sorted(f.name for f in out.iterdir())
    return list(rdpcap(str(names[0])))


def test_answers_to_the_captures_udp_flow_are_consumed_by_its_socket(tmp_path):
    lines, summary, icmp, out = _run(tmp_path)
    assert [r["disposition"] for r in lines] == ["delivered", "skipped", "delivered", "delivered"]
    assert lines[1]["reason"] == "live-peer-answers"
    assert icmp == [], "the client's stack must not answer its own flow with ICMP port unreachable"
    # the three echoes came back from the Service's address, through the reverse DNAT
    back = [p for p in _client_veth(out) if UDP in p and p[IP].dst == traffic.CLIENT_IP]
    assert [bytes(p[UDP].payload) for p in back] == [b"one", b"two", b"three"]
    assert {(p[IP].src, p[UDP].sport) for p in back} == {(SVC_IP, SVC_PORT)}
    assert summary["skipped"] == 1


def test_raw_injection_leaves_the_client_without_a_socket(tmp_path):
    lines, _summary, icmp, _out = _run(tmp_path, "--raw")
    assert [r["disposition"] for r in lines] == ["delivered"] * 4
    unreach = [p for p in icmp if p[ICMP].type == 3 and p[ICMP].code == 3 and p[IP].src == traffic.CLIENT_IP]
    assert unreach, "with --raw the client's stack answers the echoes with ICMP port unreachable"
