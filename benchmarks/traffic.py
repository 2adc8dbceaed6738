# traffic: seeded generators of the traffic classes people feed kdp, as frames
# leaving the client pod's eth0 on the benchmark cluster (the demo cluster plus
# a UDP echo Deployment behind a ClusterIP, written by write_cluster()). Owns
# the class definitions; bench_classes.py runs them through `kdp run`.
#
#   python benchmarks/traffic.py --class mix --frames 20000 --seed 1 --out /tmp/mix.pcap
#   python benchmarks/traffic.py --cluster /tmp/perf-cluster     # writes the cluster dir
#
# Classes (the client pod 10.244.0.2 on node ...000000):
#   syn-clusterip   TCP SYNs to the nginx ClusterIP 10.2.0.2:80, each from a fresh
#                   source port (3 endpoints, one on the client's node)
#   udp-clusterip   UDP to the udp-echo ClusterIP 10.2.0.20:90 on 64 flows; the
#                   endpoints' echo apps answer through the reverse DNAT
#   udp-closed      UDP to a pod's closed port (ICMP port unreachable back)
#   icmp-echo       ICMP echo requests to a pod on another node (64 identifiers)
#   ack-midstream   TCP ACKs on 64 flows that never sent a SYN, to a pod's open
#                   port (conntrack picks them up; the pod's stack answers RST)
#   udp-pod         UDP to a pod's echo app (not through a Service), 64 flows
#   dns             DNS queries to kube-dns 10.2.0.10:53 (random source ports and
#                   IDs, ~50 names, A and AAAA)
#   mix             a weighted mix of all of the above
from __future__ import annotations

import argparse
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

sys.path.insert(0, HERE)
# the client pod and its node's cbr0, as in the demo cluster (and in make_pcap's workloads)
from make_pcap import CLIENT_AT, CLIENT_IP, write_records  # noqa: E402,F401  (CLIENT_AT: traffic's name)
from make_pcap import DEMO_CBR0_MAC as CBR0_MAC, DEMO_CLIENT_MAC as CLIENT_MAC  # noqa: E402

UDP_ECHO_SVC = ("10.2.0.20", 90)
NGINX_SVC = ("10.2.0.2", 80)
REMOTE_POD = "10.244.1.3"              # nginx on node ...001 (80/TCP open, no UDP ports)
UDP_POD = "10.244.1.4"                 # udp-echo on node ...001 (9000/UDP echo)
UDP_ECHO_PORT = 9000
DNS_SVC = ("10.2.0.10", 53)

CLASSES = ("syn-clusterip", "udp-clusterip", "udp-closed", "icmp-echo", "ack-midstream",
           "udp-pod", "dns", "mix")
# weights of the mix (a pod's everyday traffic: DNS and answered UDP dominate new TCP)
MIX_WEIGHTS = {"syn-clusterip": 2, "udp-clusterip": 3, "udp-closed": 1, "icmp-echo": 1,
               "ack-midstream": 1, "udp-pod": 2, "dns": 2}

# Extra objects on top of the demo cluster: a UDP echo Deployment (3 replicas:
# its pods also carry a UDP echo port beside nginx's) and its ClusterIP.
EXTRA_OBJECTS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: udp-echo
  namespace: default
  labels: {app: udp-echo}
spec:
  replicas: 3
  selector:
    matchLabels: {app: udp-echo}
  template:
    metadata:
      labels: {app: udp-echo}
    spec:
      containers:
      - name: echo
        image: registry.k8s.io/e2e-test-images/agnhost:2.52
        ports:
        - {name: echo, containerPort: 9000, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata:
  name: udp-echo
  namespace: default
spec:
  type: ClusterIP
  clusterIP: 10.2.0.20
  selector: {app: udp-echo}
  ports:
  - {name: echo, port: 90, targetPort: echo, protocol: UDP}
"""

NAMES = [f"{svc}.{ns}.svc.cluster.local." for svc, ns in
         (("nginx", "default"), ("web-lb", "default"), ("web-nodeport", "default"),
          ("service-a", "backend"), ("kube-dns", "kube-system"), ("udp-echo", "default"))]
NAMES += [f"{n}.default.svc.cluster.local." for n in ("missing", "api", "db", "cache")]
NAMES += [f"host{i}.example.com." for i in range(20)]
NAMES += [f"svc{i}.backend.svc.cluster.local." for i in range(20)]


def write_cluster(path: str) -> str:
    """The benchmark cluster directory: kdp's demo manifests plus EXTRA_OBJECTS."""
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from importlib import resources
    os.makedirs(path, exist_ok=True)
    demo = resources.files("kdp.data").joinpath("demo.yaml").read_text()
    with open(os.path.join(path, "demo.yaml"), "w") as fh:
        fh.write(demo)
    with open(os.path.join(path, "udp-echo.yaml"), "w") as fh:
        fh.write(EXTRA_OBJECTS)
    return path


class Generator:
    """Frames of each class, drawn from one seeded random.Random."""

    def __init__(self, seed: int) -> None:
        from scapy.layers.dns import DNS, DNSQR
        from scapy.layers.inet import ICMP, IP, TCP, UDP
        from scapy.layers.l2 import Ether
        self.L = (Ether, IP, TCP, UDP, ICMP, DNS, DNSQR)
        self.rng = random.Random(seed)
        self.next_port = 20000
        self.icmp_seq = [0] * 64
        self.ack_seq = [self.rng.getrandbits(32) for _ in range(64)]

    def _base(self, dst: str):
        Ether, IP = self.L[0], self.L[1]
        return Ether(src=CLIENT_MAC, dst=CBR0_MAC) / IP(src=CLIENT_IP, dst=dst, ttl=64,
                                                        id=self.rng.getrandbits(16), flags="DF")

    def frame(self, cls: str) -> bytes:
        Ether, IP, TCP, UDP, ICMP, DNS, DNSQR = self.L
        r = self.rng
        if cls == "mix":
            cls = r.choices(list(MIX_WEIGHTS), weights=list(MIX_WEIGHTS.values()))[0]
        if cls == "syn-clusterip":
            self.next_port = 20000 + (self.next_port - 19999) % 40000
            p = self._base(NGINX_SVC[0]) / TCP(sport=self.next_port, dport=NGINX_SVC[1], flags="S",
                                               seq=r.getrandbits(32), window=64240,
                                               options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
        elif cls == "udp-clusterip":
            p = self._base(UDP_ECHO_SVC[0]) / UDP(sport=30000 + r.randrange(64), dport=UDP_ECHO_SVC[1]) \
                / bytes(r.randrange(16, 200))
        elif cls == "udp-closed":
            p = self._base(REMOTE_POD) / UDP(sport=31000 + r.randrange(64), dport=9999) / bytes(32)
        elif cls == "icmp-echo":
            ident = r.randrange(64)
            self.icmp_seq[ident] += 1
            p = self._base(REMOTE_POD) / ICMP(type=8, id=0x4000 + ident, seq=self.icmp_seq[ident]) / bytes(56)
        elif cls == "ack-midstream":
            i = r.randrange(64)
            self.ack_seq[i] = (self.ack_seq[i] + 100) & 0xFFFFFFFF
            p = self._base(REMOTE_POD) / TCP(sport=32000 + i, dport=80, flags="A", seq=self.ack_seq[i],
                                             ack=12345, window=502) / bytes(100)
        elif cls == "udp-pod":
            p = self._base(UDP_POD) / UDP(sport=33000 + r.randrange(64), dport=UDP_ECHO_PORT) \
                / bytes(r.randrange(16, 200))
        elif cls == "dns":
            name = r.choice(NAMES)
            p = self._base(DNS_SVC[0]) / UDP(sport=r.randrange(32768, 61000), dport=53) / DNS(
                id=r.getrandbits(16), rd=1, qd=DNSQR(qname=name, qtype=r.choice(("A", "A", "AAAA"))))
        else:
            raise ValueError(f"unknown traffic class {cls!r} (one of {', '.join(CLASSES)})")
        return bytes(p)


def write_pcap(path: str, cls: str, frames: int, seed: int = 1) -> int:
    """Write `frames` frames of class `cls` (1 ms apart) to a classic pcap."""
    g = Generator(seed)
    return write_records(path, ((1_700_000_000_000_000 + i * 1000, g.frame(cls)) for i in range(frames)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Seeded generators of the traffic classes of the kdp run benchmark.")
    p.add_argument("--class", dest="cls", choices=CLASSES, default="mix")
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="the pcap to write")
    p.add_argument("--cluster", help="write the benchmark cluster directory here")
    a = p.parse_args(argv)
    if a.cluster:
        print(write_cluster(a.cluster))
    if a.out:
        write_pcap(a.out, a.cls, a.frames, a.seed)
        print(f"{a.out}: {a.frames} frames of {a.cls}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
