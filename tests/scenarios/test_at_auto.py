# `kdp run --at auto`: each frame enters where its sender lives (kdp.senders):
# by source MAC, else by source IP (pods, nodes, the outside world at the edge);
# a Service IP's frames (kdp answers for it) and unowned cluster addresses are
# skipped with the reason. Identical in every mode.
import json

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
    # the same frames all at the client: nothing skipped, no skipped key (unchanged contract)
    r = kdp("run", "demo", "--pcap", tmp_path / "c.pcap", "--at", "pod/default/client", "--json")
    assert "skipped" not in json.loads(r.stdout.splitlines()[-1])["summary"]


def test_at_auto_agrees_in_every_mode(tmp_path):
    pcap = write(tmp_path / "est.pcap", generated(1500, flows=30, mix="established", seed=6))
    runs = run_modes(pcap, tmp_path, args=("--at", "auto"))
    ref = assert_equivalent(runs)
    assert runs["fastpath"].summary["fastpath_hits"] > 1000 and ref.summary["skipped"] == 0
