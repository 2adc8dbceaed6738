# A two-sided capture of pod-to-Service traffic (the client's and the
# backend's `tcpdump -i eth0`, merged) replayed as `kdp run --at auto --apps
# off` replays it, against the kernel: each frame transmitted at its sender's
# device, every pod silent (kdp: silent SocketTables; the kernel: INPUT DROP in
# each pod's namespace). Both pods' devices see the recorded frames — the
# client's replies un-DNATed to the ClusterIP by conntrack exactly as the
# kernel does — and kdp's per-device pcaps (`--out`) are the frames the oracle
# compared. A remote backend (other node) and a same-node one.
import os

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from kdp import wire
from kdp.emulator import Emulator
from kdp.k8s import load_cluster_text
from kdp.oracle.report import report_dict
from kdp.oracle.runner import run_oracle
from kdp.oracle.scenarios import two_sided_replay

from .conftest import needs_kernel

YAML = """
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: twosided}
spec: {networkPlugin: kubenet, podCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/16,
       dnsServiceIP: 10.96.0.10, vnetSubnet: 10.240.0.0/16, nodes: [{name: n1}, {name: n2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: near, namespace: default, labels: {app: near}}
spec: {nodeName: n1, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: default, labels: {app: far}}
spec: {nodeName: n2, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: near, namespace: default}
spec: {selector: {app: near}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: far, namespace: default}
spec: {selector: {app: far}, ports: [{name: http, port: 80, targetPort: http}]}
"""
GET = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def conversation(emu, backend: str, sport: int) -> list:
    """Client -> Service `backend` (one endpoint, the pod of that name) and the
    answer: the client's frames to the ClusterIP, the backend's from its own
    IP to the client (what each pod's own capture holds), 1 ms apart."""
    c = emu.cluster
    client, be = c.pod("default", "client"), c.pod("default", backend)
    svc = c.service("default", backend)
    gw = lambda pod: emu.namespace(f"node/{pod.node}").devices["cbr0"].mac            # noqa: E731
    mac = lambda pod: emu.namespace(f"pod/default/{pod.name}").devices["eth0"].mac     # noqa: E731
    ts = [0]

    def seg(pod, dst, sp, dp, flags, seq, ack, load=b"", ident=0):
        ts[0] += 1
        opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000 + ts[0], 0)), ("NOP", None),
                ("WScale", 7)] if "S" in flags else [("NOP", None), ("NOP", None),
                                                       ("Timestamp", (1000 + ts[0], 900 + ts[0]))]
        return (Ether(src=mac(pod), dst=gw(pod)) / IP(src=str(pod.ip), dst=dst, flags="DF", id=ident)
                / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack, window=502, options=opts) / load)

    def a(flags, seq, ack, load=b""):
        return seg(client, str(svc.cluster_ip), sport, 80, flags, seq, ack, load, 0x100 + len(frames))

    def b(flags, seq, ack, load=b""):
        return seg(be, str(client.ip), 8080, sport, flags, seq, ack, load, 0)
    c0, s0, q, r = 10_000, 90_000, len(GET), len(OK)
    frames: list = []
    for make in (lambda: a("S", c0, 0), lambda: b("SA", s0, c0 + 1), lambda: a("A", c0 + 1, s0 + 1),
                 lambda: a("PA", c0 + 1, s0 + 1, GET), lambda: b("A", s0 + 1, c0 + 1 + q),
                 lambda: b("PA", s0 + 1, c0 + 1 + q, OK), lambda: a("A", c0 + 1 + q, s0 + 1 + r),
                 lambda: a("FA", c0 + 1 + q, s0 + 1 + r), lambda: b("FA", s0 + 1 + r, c0 + 2 + q),
                 lambda: a("A", c0 + 2 + q, s0 + 2 + r)):
        frames.append(make())
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + 0.001 * i
    return frames


def _tcp(frames, direction=None):
    return [f.pkt for f in frames if f.pkt is not None and f.pkt.ip is not None
            and isinstance(f.pkt.l4, wire.TCP) and (direction is None or f.direction == direction)]


@needs_kernel
@pytest.mark.parametrize("backend", ["far", "near"])
def test_two_sided_capture_agrees_with_the_kernel(tmp_path, backend):
    cluster = load_cluster_text(YAML)
    emu = Emulator(cluster, seed=0, capture=False)
    frames = conversation(emu, backend, 45000)
    pcap = str(tmp_path / "two-sided.pcap")
    wrpcap(pcap, frames)
    sc = two_sided_replay(cluster, 0, [bytes(f) for f in frames], f"two-sided-{backend}",
                          f"HTTP client -> svc/default/{backend} -> pod/default/{backend}, both sides")
    assert sc.skipped == [] and len(sc.steps) == 10
    assert {s.ns for s in sc.steps} == {"pod/default/client", f"pod/default/{backend}"}
    (r,), info = run_oracle(cluster, [sc])
    rep = report_dict([r], info)["scenarios"][0]
    assert rep["agree"], rep
    devs = {dr.device: dr for dr in r.devices}
    cl, be = devs[("pod/default/client", "eth0")], devs[(f"pod/default/{backend}", "eth0")]
    kern_cl = [p.kernel for p in cl.pairs if p.kernel is not None]
    kern_be = [p.kernel for p in be.pairs if p.kernel is not None]
    svc, client = cluster.service("default", backend), cluster.pod("default", "client")
    # the client's pod saw its 6 segments leave and the backend's 4 arrive, from the
    # ClusterIP:80 (un-DNATed by the kernel's conntrack, and by kdp's identically)
    back = _tcp(kern_cl, "in")
    assert len(_tcp(kern_cl, "out")) == 6 and len(back) == 4
    assert {(p.ip.src, p.l4.sport) for p in back} == {(svc.cluster_ip, 80)}
    assert back[2].l4.payload == OK
    # the backend's pod saw the client's 6 segments arrive DNATed to its own IP:8080
    got = _tcp(kern_be, "in")
    assert len(got) == 6 and {(p.ip.dst, p.l4.dport) for p in got} == {(cluster.pod("default", backend).ip, 8080)}
    assert {p.ip.src for p in got} == {client.ip}
    assert got[2].l4.payload == GET
    # nobody answered for the silent pods: no RST, no extra segment anywhere
    assert not [p for dr in r.devices for p in dr.pairs for f in (p.kdp, p.kernel)
                if f is not None and f.pkt is not None and isinstance(f.pkt.l4, wire.TCP)
                and f.pkt.l4.flags & wire.RST]
    assert any("TIME_WAIT" in line for lines in r.kernel_conntrack.values() for line in lines)
    # `kdp run --at auto --apps off --out DIR`: its per-device pcaps are the frames the
    # oracle's kdp side put on the two pods' devices, byte for byte and in order
    out = tmp_path / "out"
    with open(os.devnull, "wb") as sink:
        summary = Emulator(cluster, seed=0, capture=False).run_pcap(pcap, "auto", sink, out_dir=str(out),
                                                                      apps=False)
    assert summary["delivered"] == 10 and summary["skipped"] == 0
    for dr in (cl, be):
        name = emu.capture_file_name(*dr.device) + ".pcap"
        ran = [bytes(f) for f in rdpcap(str(out / name))]
        assert ran == [p.kdp.raw for p in sorted((p for p in dr.pairs if p.kdp is not None),
                                                 key=lambda p: p.kdp_index)], name
