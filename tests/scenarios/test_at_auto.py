# `kdp run --at auto`: each frame enters where its sender lives (kdp.senders):
# by source MAC, else by source IP (pods, nodes, the outside world at the edge);
# a Service IP's frames (kdp answers for it) and unowned cluster addresses are
# skipped with the reason. `--apps off`: pods' sockets consume and never answer,
# so a two-sided capture replays both directions. Identical in every mode.
import json

import pytest

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from kdp.emulator import Emulator

from .kdp_cli import kdp
from .test_fastpath_equivalence import assert_equivalent, generated, run_modes, write


def _frames(emu):
    c = emu.cluster
    client = emu.attach_device("pod/default/client")
    cbr0 = emu.namespace(f"node/{c.pod('default', 'client').node}").devices["cbr0"].mac
    svc = c.service("backend", "service-a")
    nginx = next(p for p in c.pods if p.labels.get("app") == "nginx")
    nodeport = next(s for s in c.services if any(p.node_port for p in s.ports))
    np_port = next(p.node_port for p in nodeport.ports if p.node_port)
    node_ip = str(c.nodes[0].ip)
    syn = dict(flags="S", seq=1000, window=64240)
    frames = [
        Ether(src=client.mac, dst=cbr0) / IP(src=str(c.pod("default", "client").ip), dst=str(svc.cluster_ip))
        / TCP(sport=40001, dport=svc.ports[0].port, **syn),                       # by MAC: the client
        Ether(src=cbr0, dst=client.mac) / IP(src=str(svc.cluster_ip), dst=str(c.pod("default", "client").ip))
        / TCP(sport=svc.ports[0].port, dport=40001, flags="SA", seq=5, ack=1001),  # kdp's own reply
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.51.100.20", dst=node_ip)
        / TCP(sport=40002, dport=np_port, **syn),                                 # outside: at the edge
        Ether(src="02:00:00:00:00:03", dst="02:00:00:00:00:04") / IP(src=str(nginx.ip), dst=node_ip)
        / TCP(sport=40003, dport=10250, **syn),                                   # by IP: the nginx pod
        Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:06") / IP(src="10.244.9.9", dst=node_ip)
        / TCP(sport=40004, dport=80, **syn),                                      # nobody's cluster address
    ]
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i
    return frames, nginx


def test_each_frame_enters_where_its_sender_lives(tmp_path):
    emu = Emulator.demo(capture=False)
    frames, nginx = _frames(emu)
    wrpcap(str(tmp_path / "c.pcap"), frames)
    r = kdp("run", "demo", "--pcap", tmp_path / "c.pcap", "--at", "auto", "--json", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    recs, summary = lines[:-1], lines[-1]["summary"]
    assert recs[0]["disposition"] == "delivered" and recs[0]["delivered_to"].startswith("pod/backend/service-a-")
    assert (recs[1]["disposition"], recs[1]["reason"]) == ("skipped", "sent-by-kdp")
    assert recs[2]["disposition"] == "delivered" and recs[2]["delivered_to"].startswith("pod/default/nginx-")
    assert recs[3]["disposition"] == "delivered" and recs[3]["delivered_to"].startswith("node/")
    assert (recs[4]["disposition"], recs[4]["reason"]) == ("skipped", "unknown-sender")
    assert summary["skipped"] == 2 and summary["frames"] == 5
    out = {p.name for p in (tmp_path / "out").iterdir()}
    assert "ext__eth0.pcap" in out                         # the outside frame left from the outside world
    assert f"{nginx.namespace}__{nginx.name}__eth0.pcap" in out
    # the same frames all at the client, raw: nothing skipped, no skipped key (unchanged contract)
    r = kdp("run", "demo", "--pcap", tmp_path / "c.pcap", "--at", "pod/default/client", "--json", "--raw")
    assert "skipped" not in json.loads(r.stdout.splitlines()[-1])["summary"]
    # live TCP replay (the default): the recorded SYN-ACK to the client's own flow is the live peer's part
    r = kdp("run", "demo", "--pcap", tmp_path / "c.pcap", "--at", "pod/default/client", "--json")
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert (recs[1]["disposition"], recs[1]["reason"]) == ("skipped", "live-peer-answers")
    assert recs[-1]["summary"]["skipped"] == 1


@pytest.mark.parametrize("apps", ["on", "off"])
def test_at_auto_agrees_in_every_mode(tmp_path, apps):
    n = 1500 if apps == "on" else 600
    pcap = write(tmp_path / "est.pcap", generated(n, flows=30, mix="established", seed=6))
    runs = run_modes(pcap, tmp_path, args=("--at", "auto", "--apps", apps))
    ref = assert_equivalent(runs)
    assert ref.summary["skipped"] == 0
    if apps == "on":
        assert runs["fastpath"].summary["fastpath_hits"] > 1000
    else:
        # one side only, and nobody answers: the handshakes never complete, the ACKs find
        # no established conntrack entry (dropped as kube-proxy drops INVALID), no pod resets
        assert not any(w.startswith("pod/") for w in ref.summary["outcomes"]["resets"]["by"])
        assert ref.summary["dropped"] > 0


def _two_sided(emu):
    """Both sides of a connection from the client to service-a's ClusterIP, as
    captured on each pod's eth0 (merged): examples/pcaps/make_pcaps.py's."""
    import importlib.util
    from .test_examples import ROOT
    spec = importlib.util.spec_from_file_location("make_pcaps", f"{ROOT}/examples/pcaps/make_pcaps.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    frames = mp.two_sided_capture(emu)
    be = emu.cluster.pods[[f"pod/{p.namespace}/{p.name}" for p in emu.cluster.pods].index(mp.backend_of(emu))]
    return frames, be


def test_a_two_sided_capture_replays_both_directions(tmp_path):
    emu = Emulator.demo(capture=False)
    frames, be = _two_sided(emu)
    wrpcap(str(tmp_path / "two.pcap"), frames)
    r = kdp("run", "demo", "--pcap", tmp_path / "two.pcap", "--at", "auto", "--apps", "off", "--json",
            "--conntrack", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    recs, summary = lines[:-1], lines[-1]["summary"]
    want = [f"pod/{be.namespace}/{be.name}", "pod/default/client"]
    assert [x["delivered_to"] for x in recs] == [want[0], want[1], want[0], want[0], want[1], want[0], want[1],
                                                 want[0]]
    # the backend's answers come back from the ClusterIP (conntrack un-DNATs them), nobody resets
    assert {recs[i]["packet"]["src"] for i in (1, 4, 6)} == \
        {str(emu.cluster.service("backend", "service-a").cluster_ip)}
    assert summary["outcomes"]["resets"]["total"] == 0
    assert summary["outcomes"]["flows"] == {"total": 2, "opened": 1, "completed": 1, "reset": 0}
    ct = "\n".join(summary["conntrack"].values())
    assert "TIME_WAIT" in ct and "sport=45000" in ct
    # the client's eth0 saw the whole conversation, both ways, once
    from kdp.io import read_pcap
    cl_frames = [f for _, f in read_pcap(str(tmp_path / "out" / "default__client__eth0.pcap"))
                 if f[12:14] == b"\x08\x00"]
    assert len(cl_frames) == 8                              # (and the ARP exchange)
    # with the apps on and --raw, the backend answers the SYN itself and the recorded answers clash
    r = kdp("run", "demo", "--pcap", tmp_path / "two.pcap", "--at", "auto", "--json", "--raw")
    on = json.loads(r.stdout.splitlines()[-1])["summary"]["outcomes"]
    assert on["resets"]["total"] > 0
    # live replay (the default): the recorded answers are skipped, the live backend answers
    r = kdp("run", "demo", "--pcap", tmp_path / "two.pcap", "--at", "auto", "--json")
    live = json.loads(r.stdout.splitlines()[-1])["summary"]
    assert live["outcomes"]["resets"]["total"] == 0 and live["skipped"] == 3
