"""Write the example captures of this directory, deterministically (Scapy).

    python examples/pcaps/make_pcaps.py            # (re)writes examples/pcaps/*.pcap
    python examples/pcaps/make_pcaps.py --out DIR  # somewhere else

capture.pcap -- what the demo cluster's `client` pod (default/client) sends, as
`tcpdump -i eth0 -Q out` in the pod would record it; feed it back with

    kdp run demo --pcap examples/pcaps/capture.pcap --at pod/default/client

  #0     DNS query (UDP) for service-a.backend.svc.cluster.local to kube-dns 10.2.0.10:53
  #1-#3  TCP SYNs to service-a's ClusterIP 10.2.0.1:80 (three connections, new source ports)
  #4     ICMP echo request to a service-a pod (on another node)

The addresses and MACs are the demo's (they are deterministic), looked up from
kdp itself so the frames are exactly what the pod's stack would put on the wire:
its eth0 MAC to its gateway's (cbr0's) MAC. Same script, same bytes.

two-sided.pcap -- an HTTP request from the client to service-a's ClusterIP and
its answer, both sides (the client's capture and the backend pod's, merged):

    kdp run demo --pcap examples/pcaps/two-sided.pcap --at auto --apps off

any.pcap -- capture.pcap's frames as `tcpdump -i any` records them (Linux
cooked v2 headers, link type 276):

    kdp run demo --pcap examples/pcaps/any.pcap --at pod/default/client

Each capture is a function returning its frames; CAPTURES names the files.
"""
from __future__ import annotations

import argparse
import os
import sys

from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from kdp import Emulator, capconvert

START = 1_700_000_000.0          # the first frame's timestamp (2023-11-14T22:13:20Z)


def demo_client_capture(emu: Emulator) -> list:
    """The demo client's DNS lookup, three connections to a ClusterIP, a ping."""
    c = emu.cluster
    client = c.pod("default", "client")
    eth0 = emu.namespace("pod/default/client").devices["eth0"].mac
    gateway = emu.namespace(f"node/{client.node}").devices["cbr0"].mac
    dns = c.service("kube-system", "kube-dns").cluster_ip
    svc_a = c.service("backend", "service-a")
    pod = next(p for p in c.pods if p.labels.get("app") == "service-a" and p.node != client.node)

    def frame(ip_id: int, l4):
        return Ether(src=eth0, dst=gateway) / IP(src=str(client.ip), id=ip_id, flags="DF", ttl=64) / l4

    frames = [frame(0x1001, UDP(sport=41000, dport=53) / DNS(
        id=0x4b44, rd=1, qd=DNSQR(qname="service-a.backend.svc.cluster.local", qtype="A")))]
    frames[0][IP].dst = str(dns)
    for i in range(3):
        f = frame(0x1002 + i, TCP(sport=42000 + i, dport=svc_a.ports[0].port, flags="S",
                                  seq=1000 * (i + 1), window=64240,
                                  options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]))
        f[IP].dst = str(svc_a.cluster_ip)
        frames.append(f)
    ping = frame(0x1005, ICMP(type="echo-request", id=0x0d09, seq=1) / bytes(range(0x10, 0x10 + 56)))
    ping[IP].dst = str(pod.ip)
    frames.append(ping)
    for i, f in enumerate(frames):
        f.time = START + 0.25 * i
    return frames


def backend_of(emu: Emulator) -> str:
    """The service-a pod kube-proxy picks for the two-sided capture's SYN (the
    same frame, the same fresh cluster, the same seed: the same choice)."""
    return emu.send(_conversation(emu, "pod/backend/x")[0], at="pod/default/client",
                    time=START).delivered_to


def _conversation(emu: Emulator, backend: str) -> list:
    c = emu.cluster
    client, svc = c.pod("default", "client"), c.service("backend", "service-a")
    ns, name = backend.split("/")[1:]
    be = c.pod(ns, name) if name != "x" else client
    gw = lambda pod: emu.namespace(f"node/{pod.node}").devices["cbr0"].mac
    cl_mac, be_mac = (emu.namespace(f"pod/default/client").devices["eth0"].mac,
                      emu.namespace(backend).devices["eth0"].mac if name != "x" else "02:00:00:00:00:01")
    port = svc.ports[0].port
    tport = 8080
    get = b"GET / HTTP/1.1\r\nHost: service-a.backend\r\n\r\n"
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def a(flags, seq, ack, load=b""):        # the client, to the ClusterIP (as captured in the client pod)
        return (Ether(src=cl_mac, dst=gw(client)) / IP(src=str(client.ip), dst=str(svc.cluster_ip), flags="DF")
                / TCP(sport=45000, dport=port, flags=flags, seq=seq, ack=ack, window=64240) / load)

    def b(flags, seq, ack, load=b""):        # the backend, from its own IP (as captured in the backend pod)
        return (Ether(src=be_mac, dst=gw(be)) / IP(src=str(be.ip), dst=str(client.ip), flags="DF")
                / TCP(sport=tport, dport=45000, flags=flags, seq=seq, ack=ack, window=65160) / load)
    c0, s0 = 1000, 5000
    frames = [a("S", c0, 0), b("SA", s0, c0 + 1), a("A", c0 + 1, s0 + 1), a("PA", c0 + 1, s0 + 1, get),
              b("PA", s0 + 1, c0 + 1 + len(get), ok), a("FA", c0 + 1 + len(get), s0 + 1 + len(ok)),
              b("FA", s0 + 1 + len(ok), c0 + 2 + len(get)), a("A", c0 + 2 + len(get), s0 + 2 + len(ok))]
    for i, f in enumerate(frames):
        f.time = START + 0.001 * i
    return frames


def two_sided_capture(emu: Emulator) -> list:
    """An HTTP request from the client to service-a's ClusterIP and the answer,
    both sides, as the client's and the chosen backend's `tcpdump -i eth0`
    captures merged (mergecap): feed with --at auto --apps off."""
    return _conversation(emu, backend_of(Emulator.demo(capture=False)))


def any_capture(emu: Emulator) -> list:
    """capture.pcap's frames as `tcpdump -i any` in the client pod records them:
    Linux cooked v2 (SLL2, link type 276), nanoseconds."""
    return demo_client_capture(emu)


CAPTURES = {"capture.pcap": demo_client_capture, "two-sided.pcap": two_sided_capture,
            "any.pcap": any_capture}
COOKED = {"any.pcap": "sll2"}            # written by kdp.capconvert in this format


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the example captures (deterministic).")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                    help="directory to write them to (default: next to this script)")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    emu = Emulator.demo(capture=False)
    for name, make in CAPTURES.items():
        frames = make(emu)
        path = os.path.join(a.out, name)
        if name in COOKED:
            capconvert.write(path, [(int(round(float(f.time) * 1e6)), bytes(f)) for f in frames], COOKED[name])
        else:
            wrpcap(path, frames)
        print(f"wrote {path}: {len(frames)} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
