# traffic: seeded generators of the traffic classes people feed kdp, as frames
# leaving the client pod's eth0 (or an outside host's, for the edge classes) on
# the benchmark cluster: the demo cluster plus a UDP echo Deployment behind a
# ClusterIP and two more edge Services (a NodePort and a LoadBalancer with the
# other externalTrafficPolicy than the demo's), optionally N more ClusterIP
# Services (--services: the 10,000-service cluster), written by
# write_cluster(). Owns the class definitions and where each class's frames
# enter (ATTACH); bench_classes.py runs them through `kdp run`.
#
#   python benchmarks/traffic.py --class mix --frames 20000 --seed 1 --out /tmp/mix.pcap
#   python benchmarks/traffic.py --cluster /tmp/perf-cluster     # writes the cluster dir
#   python benchmarks/traffic.py --cluster /tmp/c10k --services 10000 \
#       --class udp-new-clusterip --out /tmp/u.pcap               # flows spread over 10,000 Services
#
# Classes (the client pod 10.244.0.2 on node ...000000, unless said otherwise):
#   syn-clusterip   TCP SYNs to the nginx ClusterIP 10.2.0.2:80, each from a fresh
#                   source port (3 endpoints, one on the client's node); with
#                   --services N, to one of the N extra TCP Services at random
#   udp-clusterip   UDP to the udp-echo ClusterIP 10.2.0.20:90 on 64 flows; the
#                   endpoints' echo apps answer through the reverse DNAT
#   udp-new-clusterip  UDP to the udp-echo ClusterIP, each datagram from a fresh
#                   source port (a new flow; the echo app answers); with
#                   --services N, to one of the N extra UDP Services at random
#   udp-closed      UDP to a pod's closed port (ICMP port unreachable back)
#   icmp-echo       ICMP echo requests to a pod on another node (64 identifiers)
#   ack-midstream   TCP ACKs on 64 flows that never sent a SYN, to a pod's open
#                   port (conntrack picks them up; the pod's stack answers RST)
#   udp-pod         UDP to a pod's echo app (not through a Service), 64 flows
#   dns             DNS queries to kube-dns 10.2.0.10:53 (random source ports and
#                   IDs, 50 names, A and AAAA)
#   tcp-session     whole HTTP conversations with service-a's ClusterIP 10.2.0.1:80:
#                   SYN, ACK, the request, FIN/ACK, the last ACK (5 client frames;
#                   the live peer's SYN-ACK, answer and FIN are kdp's: live replay
#                   translates the ACK numbers), each from a fresh source port
#   nodeport-syn-cluster  from the outside host 198.51.100.20 (ext/, through the edge
#                   router): TCP SYNs to the NodePort 30080 of default/web-nodeport
#                   (externalTrafficPolicy Cluster: masqueraded) on the 3 node IPs
#                   in turn, each from a fresh source port
#   nodeport-syn-local    the same to NodePort 30081 of default/web-nodeport-local
#                   (externalTrafficPolicy Local: the client's address kept)
#   lb-syn-cluster  the same to the LoadBalancer IP 20.50.60.71:80 of
#                   default/web-lb-cluster (Cluster; the edge's cloud LB picks a node)
#   lb-syn-local    the same to 20.50.60.70:80 of the demo's default/web-lb (Local)
#   mix             a weighted mix of all of the above (`kdp run --at auto`: each
#                   frame enters at its sender)
from __future__ import annotations

import argparse
import ipaddress
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
SERVICE_A_SVC = ("10.2.0.1", 80)       # backend/service-a: 2 endpoints, each answers HTTP
REMOTE_POD = "10.244.1.3"              # nginx on node ...001 (80/TCP open, no UDP ports)
UDP_POD = "10.244.1.4"                 # udp-echo on node ...001 (9000/UDP echo)
UDP_ECHO_PORT = 9000
DNS_SVC = ("10.2.0.10", 53)
NODE_IPS = ("10.240.0.4", "10.240.0.5", "10.240.0.6")
NODEPORT_CLUSTER = 30080               # default/web-nodeport (demo; externalTrafficPolicy Cluster)
NODEPORT_LOCAL = 30081                 # default/web-nodeport-local (EXTRA_OBJECTS; Local)
LB_CLUSTER = ("20.50.60.71", 80)       # default/web-lb-cluster (EXTRA_OBJECTS; Cluster)
LB_LOCAL = ("20.50.60.70", 80)         # default/web-lb (demo; Local)
# the outside host and its link to the edge router (the ext namespace's eth0 and
# the edge's ext0, as kdp names them: kdp topology prints them, a test checks)
EXT_IP = "198.51.100.20"
EXT_AT = f"ext/{EXT_IP}"
EXT_MAC = "aa:85:6e:73:d0:11"
EDGE_EXT0_MAC = "aa:6e:e1:d8:04:e4"
# tcp-session: service-a's app answers a GET with this (HTTP/1.1, no body), then
# its FIN after the client's
HTTP_GET = b"GET / HTTP/1.1\r\nHost: service-a.backend\r\n\r\n"
HTTP_OK_LEN = len(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
# --services N: the extra ClusterIP Services, default/bench-svc-I at
# EXTRA_SVC_BASE + I in a service CIDR widened to /16: even I a TCP Service
# (80 -> nginx's http), odd I a UDP one (90 -> udp-echo's echo)
EXTRA_SVC_BASE = ipaddress.IPv4Address("10.2.16.0")
WIDE_SERVICE_CIDR = "10.2.0.0/16"
MAX_SERVICES = 65536 - 16 * 256 - 2

CLASSES = ("syn-clusterip", "udp-clusterip", "udp-new-clusterip", "udp-closed", "icmp-echo",
           "ack-midstream", "udp-pod", "dns", "tcp-session", "nodeport-syn-cluster",
           "nodeport-syn-local", "lb-syn-cluster", "lb-syn-local", "mix")
EDGE_CLASSES = ("nodeport-syn-cluster", "nodeport-syn-local", "lb-syn-cluster", "lb-syn-local")
# where each class's frames enter (`kdp run --at`): the mix holds both senders
ATTACH = {c: (EXT_AT if c in EDGE_CLASSES else "auto" if c == "mix" else CLIENT_AT) for c in CLASSES}
# weights of the mix, in frames (a pod's everyday traffic: DNS and answered UDP
# dominate new TCP; a tcp-session draw is one of its 5 frames)
MIX_WEIGHTS = {"syn-clusterip": 2, "udp-clusterip": 3, "udp-new-clusterip": 2, "udp-closed": 1,
               "icmp-echo": 1, "ack-midstream": 1, "udp-pod": 2, "dns": 2, "tcp-session": 3,
               "nodeport-syn-cluster": 1, "nodeport-syn-local": 1, "lb-syn-cluster": 1,
               "lb-syn-local": 1}

# Extra objects on top of the demo cluster: a UDP echo Deployment (3 replicas:
# its pods also carry a UDP echo port beside nginx's) and its ClusterIP; a
# NodePort with externalTrafficPolicy Local and a LoadBalancer with Cluster
# (the demo has the other two), both to nginx.
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
---
apiVersion: v1
kind: Service
metadata:
  name: web-nodeport-local
  namespace: default
spec:
  type: NodePort
  clusterIP: 10.2.0.21
  externalTrafficPolicy: Local
  selector: {app: nginx}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30081, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata:
  name: web-lb-cluster
  namespace: default
spec:
  type: LoadBalancer
  clusterIP: 10.2.0.22
  externalTrafficPolicy: Cluster
  selector: {app: nginx}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30082, protocol: TCP}
status:
  loadBalancer:
    ingress:
    - ip: 20.50.60.71
"""

NAMES = [f"{svc}.{ns}.svc.cluster.local." for svc, ns in
         (("nginx", "default"), ("web-lb", "default"), ("web-nodeport", "default"),
          ("service-a", "backend"), ("kube-dns", "kube-system"), ("udp-echo", "default"))]
NAMES += [f"{n}.default.svc.cluster.local." for n in ("missing", "api", "db", "cache")]
NAMES += [f"host{i}.example.com." for i in range(20)]
NAMES += [f"svc{i}.backend.svc.cluster.local." for i in range(20)]


def extra_service_ip(i: int) -> str:
    return str(EXTRA_SVC_BASE + i)


def extra_services_yaml(n: int) -> str:
    """n ClusterIP Services default/bench-svc-I (even I: TCP 80 -> nginx, odd I:
    UDP 90 -> udp-echo), each with its address: one string template, no YAML
    library (10,000 in well under a second)."""
    if not 0 <= n <= MAX_SERVICES:
        raise ValueError(f"--services {n}: 0..{MAX_SERVICES}")
    tcp = ("---\napiVersion: v1\nkind: Service\nmetadata: {{name: bench-svc-{i}, namespace: default}}\n"
           "spec:\n  type: ClusterIP\n  clusterIP: {ip}\n  selector: {{app: nginx}}\n  ports:\n"
           "  - {{name: http, port: 80, targetPort: http, protocol: TCP}}\n")
    udp = ("---\napiVersion: v1\nkind: Service\nmetadata: {{name: bench-svc-{i}, namespace: default}}\n"
           "spec:\n  type: ClusterIP\n  clusterIP: {ip}\n  selector: {{app: udp-echo}}\n  ports:\n"
           "  - {{name: echo, port: 90, targetPort: echo, protocol: UDP}}\n")
    return "".join((udp if i % 2 else tcp).format(i=i, ip=EXTRA_SVC_BASE + i) for i in range(n))


def write_cluster(path: str, services: int = 0, proxy_mode: str = "iptables") -> str:
    """The benchmark cluster directory: kdp's demo manifests (kube-proxy in
    `proxy_mode`) plus EXTRA_OBJECTS, and with services > 0 that many extra
    ClusterIP Services in a service CIDR widened to /16."""
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from importlib import resources
    if proxy_mode not in ("iptables", "nftables"):
        raise ValueError(f"proxy mode {proxy_mode!r}: iptables or nftables")
    os.makedirs(path, exist_ok=True)
    demo = resources.files("kdp.data").joinpath("demo.yaml").read_text()
    for old, new in ((("mode: iptables", f"mode: {proxy_mode}"),)
                     + ((("serviceCIDR: 10.2.0.0/24", f"serviceCIDR: {WIDE_SERVICE_CIDR}"),) if services else ())):
        if demo.count(old) != 1:
            raise RuntimeError(f"kdp's demo.yaml changed: {old!r} is not there once")
        demo = demo.replace(old, new)
    with open(os.path.join(path, "demo.yaml"), "w") as fh:
        fh.write(demo)
    with open(os.path.join(path, "udp-echo.yaml"), "w") as fh:
        fh.write(EXTRA_OBJECTS)
    svc_path = os.path.join(path, "services.yaml")
    if services:
        with open(svc_path, "w") as fh:
            fh.write(extra_services_yaml(services))
    elif os.path.exists(svc_path):
        os.remove(svc_path)
    return path


class Generator:
    """Frames of each class, drawn from one seeded random.Random. With
    services=N (the cluster written with as many), syn-clusterip and
    udp-new-clusterip spread their flows over the N extra Services."""

    def __init__(self, seed: int, services: int = 0) -> None:
        from scapy.layers.dns import DNS, DNSQR
        from scapy.layers.inet import ICMP, IP, TCP, UDP
        from scapy.layers.l2 import Ether
        self.L = (Ether, IP, TCP, UDP, ICMP, DNS, DNSQR)
        self.rng = random.Random(seed)
        self.next_port = 20000
        self.icmp_seq = [0] * 64
        self.ack_seq = [self.rng.getrandbits(32) for _ in range(64)]
        self.udp_new_port = 20000
        self.session_port = 40000
        self.session: list[bytes] = []          # the current tcp-session's frames still to send
        self.ext_port = 1024
        self.nodeport_turn = 0
        self.tcp_services = [extra_service_ip(i) for i in range(0, services, 2)]
        self.udp_services = [extra_service_ip(i) for i in range(1, services, 2)]

    def _base(self, dst: str):
        Ether, IP = self.L[0], self.L[1]
        return Ether(src=CLIENT_MAC, dst=CBR0_MAC) / IP(src=CLIENT_IP, dst=dst, ttl=64,
                                                        id=self.rng.getrandbits(16), flags="DF")

    def _ext_syn(self, dst: str, dport: int):
        """A SYN from the outside host through the edge, from a fresh source port."""
        Ether, IP, TCP = self.L[0], self.L[1], self.L[2]
        self.ext_port = 1024 + (self.ext_port - 1023) % 64512
        return Ether(src=EXT_MAC, dst=EDGE_EXT0_MAC) / IP(
            src=EXT_IP, dst=dst, ttl=64, id=self.rng.getrandbits(16), flags="DF") / TCP(
            sport=self.ext_port, dport=dport, flags="S", seq=self.rng.getrandbits(32), window=64240,
            options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])

    def _new_session(self) -> list[bytes]:
        """One HTTP conversation with service-a's ClusterIP as the client's
        capture records it. The recorded server ISN s0 is a draw: live replay
        maps the ACKs onto the live peer's ISN (from the first ACK, ack - 1)."""
        TCP = self.L[2]
        r = self.rng
        self.session_port = 40000 + (self.session_port - 39999) % 20000
        c0, s0, get, ok = r.getrandbits(32), r.getrandbits(32), HTTP_GET, HTTP_OK_LEN
        m = 0xFFFFFFFF

        def seg(flags, seq, ack, load=b"", **kw):
            return bytes(self._base(SERVICE_A_SVC[0]) / TCP(
                sport=self.session_port, dport=SERVICE_A_SVC[1], flags=flags, seq=seq & m, ack=ack & m,
                **({"window": 502} | kw)) / load)
        return [seg("S", c0, 0, window=64240, options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]),
                seg("A", c0 + 1, s0 + 1), seg("PA", c0 + 1, s0 + 1, get),
                seg("FA", c0 + 1 + len(get), s0 + 1 + ok), seg("A", c0 + 2 + len(get), s0 + 2 + ok)]

    def frame(self, cls: str) -> bytes:
        """The next frame of class cls (the mix: of a class drawn by MIX_WEIGHTS)."""
        if cls == "mix":
            cls = self.rng.choices(list(MIX_WEIGHTS), weights=list(MIX_WEIGHTS.values()))[0]
        return self._frame(cls)

    def _frame(self, cls: str) -> bytes:
        Ether, IP, TCP, UDP, ICMP, DNS, DNSQR = self.L
        r = self.rng
        if cls == "syn-clusterip":
            self.next_port = 20000 + (self.next_port - 19999) % 40000
            dst = r.choice(self.tcp_services) if self.tcp_services else NGINX_SVC[0]
            p = self._base(dst) / TCP(sport=self.next_port, dport=NGINX_SVC[1], flags="S",
                                      seq=r.getrandbits(32), window=64240,
                                      options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
        elif cls == "udp-clusterip":
            p = self._base(UDP_ECHO_SVC[0]) / UDP(sport=30000 + r.randrange(64), dport=UDP_ECHO_SVC[1]) \
                / bytes(r.randrange(16, 200))
        elif cls == "udp-new-clusterip":
            self.udp_new_port = 20000 + (self.udp_new_port - 19999) % 40000
            dst = r.choice(self.udp_services) if self.udp_services else UDP_ECHO_SVC[0]
            p = self._base(dst) / UDP(sport=self.udp_new_port, dport=UDP_ECHO_SVC[1]) \
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
        elif cls == "tcp-session":
            if not self.session:
                self.session = self._new_session()
            return self.session.pop(0)
        elif cls in ("nodeport-syn-cluster", "nodeport-syn-local"):
            self.nodeport_turn += 1
            p = self._ext_syn(NODE_IPS[self.nodeport_turn % len(NODE_IPS)],
                              NODEPORT_CLUSTER if cls == "nodeport-syn-cluster" else NODEPORT_LOCAL)
        elif cls == "lb-syn-cluster":
            p = self._ext_syn(*LB_CLUSTER)
        elif cls == "lb-syn-local":
            p = self._ext_syn(*LB_LOCAL)
        else:
            raise ValueError(f"unknown traffic class {cls!r} (one of {', '.join(CLASSES)})")
        return bytes(p)


def write_pcap(path: str, cls: str, frames: int, seed: int = 1, services: int = 0) -> int:
    """Write `frames` frames of class `cls` (1 ms apart) to a classic pcap."""
    g = Generator(seed, services)
    return write_records(path, ((1_700_000_000_000_000 + i * 1000, g.frame(cls)) for i in range(frames)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Seeded generators of the traffic classes of the kdp run benchmark.")
    p.add_argument("--class", dest="cls", choices=CLASSES, default="mix")
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="the pcap to write")
    p.add_argument("--cluster", help="write the benchmark cluster directory here")
    p.add_argument("--services", type=int, default=0,
                   help="N extra ClusterIP Services in the cluster; syn-clusterip and udp-new-clusterip "
                   "spread their flows over them")
    p.add_argument("--proxy-mode", choices=("iptables", "nftables"), default="iptables")
    a = p.parse_args(argv)
    if a.cluster:
        print(write_cluster(a.cluster, a.services, a.proxy_mode))
    if a.out:
        write_pcap(a.out, a.cls, a.frames, a.seed, a.services)
        print(f"{a.out}: {a.frames} frames of {a.cls} (kdp run --at {ATTACH[a.cls]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
