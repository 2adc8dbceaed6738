# bench_kernel_classes: the real kernel's rate on the traffic classes of
# benchmarks/traffic.py, beside kdp's in the same run. The benchmark cluster is
# built in throwaway network namespaces by kdp's own kernel oracle
# (kdp.oracle.build.RealCluster: nodes, pods' pause namespaces, veth, cbr0,
# the underlay, the edge router and the outside host, kube-proxy's rules loaded
# with iptables-restore, or in nftables mode its `ip kube-proxy` table with
# `nft -f`); the class's frames are sent on their sender's eth0 (the client
# pod's, or the outside host's for the edge classes) through AF_PACKET sockets
# as fast as one Python loop sends them, and the frames the kernel handled are
# counted where they end (rx_packets of the devices named per class). The
# kernel's rate = frames counted / (time from the first send until the counters
# stop moving). No application runs in the real pods: the kernel's own answers
# (RST, ICMP port unreachable, ICMP echo reply) are what it sends back, so the
# classes whose answer comes from an app in kdp (UDP echo, DNS) are measured
# up to the delivery into the pod. The senders send no RST for the SYN-ACKs
# they get (an OUTPUT rule drops them, as kdp's live replay has a socket
# consume them), so only the class's own frames are counted. The cloud load
# balancer kdp models at the edge is an ECMP route for each LoadBalancer IP
# over the nodes kdp's balancer would pick (layer-4 hash). Conntrack is
# flushed between repeats. tcp-session is not driven: its ACKs must carry the
# live server's ISN, which prerecorded frames cannot know, and no server
# listens in the oracle's pods. Everything runs in namespaces this script
# creates; all are deleted afterwards. Needs root.
#
#   python benchmarks/bench_kernel_classes.py --frames 20000 --repeat 5
#   python benchmarks/bench_kernel_classes.py --classes syn-clusterip,lb-syn-cluster --proxy-mode nftables
#   python benchmarks/bench_kernel_classes.py --services 10000 --classes syn-clusterip,udp-new-clusterip
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, HERE)

import traffic  # noqa: E402

# Where each class's frames end in the kernel: (kdp namespace, device) pairs
# whose rx_packets count them: the endpoint pods' eth0 (DNAT spreads them).
ENDS = {
    "syn-clusterip": "nginx",
    "udp-clusterip": "udp-echo",
    "udp-new-clusterip": "udp-echo",
    "udp-closed": "nginx-remote",
    "icmp-echo": "nginx-remote",
    "ack-midstream": "nginx-remote",
    "udp-pod": "udp-echo-remote",
    "dns": "coredns",
    "nodeport-syn-cluster": "nginx",
    "nodeport-syn-local": "nginx",
    "lb-syn-cluster": "nginx",
    "lb-syn-local": "nginx",
    "mix": "all-pods",
}
# what the kernel benchmark cannot drive, and why
NOT_DRIVEN = {
    "tcp-session": "a session's ACKs must carry the live server's ISN, which prerecorded frames "
                   "injected at line rate cannot know, and no server app listens in the oracle's pods",
}
# the silent senders: their stacks answer no SYN-ACK with a RST
SILENT_RST = ["iptables", "-w", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP"]


def end_devices(emu, kind: str) -> list[tuple[str, str]]:
    pods = [ns for ns in emu.topology.namespaces.values() if ns.kind == "pod"]

    def ip_of(ns):
        return str(ns.devices["eth0"].addresses[0].ip)
    if kind == "all-pods":
        chosen = [ns for ns in pods if ip_of(ns) != traffic.CLIENT_IP]
    elif kind == "nginx-remote":
        chosen = [ns for ns in pods if ip_of(ns) == traffic.REMOTE_POD]
    elif kind == "udp-echo-remote":
        chosen = [ns for ns in pods if ip_of(ns) == traffic.UDP_POD]
    else:
        chosen = [ns for ns in pods if ns.name.split("/")[-1].startswith(kind)]
    return [(ns.name, "eth0") for ns in chosen]


def rx_packets(netns: str, dev: str) -> int:
    """The device's rx_packets, read from /proc/thread-self/net/dev by a thread
    inside the namespace (/sys shows the namespace sysfs was mounted in)."""
    from kdp.oracle import netns as N

    def read() -> int:
        with open("/proc/thread-self/net/dev") as fh:
            for line in fh:
                name, sep, rest = line.partition(":")
                if sep and name.strip() == dev:
                    return int(rest.split()[1])
        raise RuntimeError(f"no device {dev} in {netns}")
    return N.run_in(netns, read)


SENDERS = (traffic.CLIENT_AT, "ext")            # kdp namespaces whose eth0 sends the frames
EXT_MAC = bytes.fromhex(traffic.EXT_MAC.replace(":", ""))


def sender_of(frame: bytes) -> int:
    """Index in SENDERS of the frame's sender, by its source MAC."""
    return 1 if frame[6:12] == EXT_MAC else 0


def open_senders(rc) -> list:
    """An AF_PACKET socket bound to eth0 in each sender's namespace (a socket
    stays in the namespace it was made in)."""
    import socket
    from kdp.oracle import netns as N

    def make():
        sk = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sk.bind(("eth0", 0))
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        return sk
    return [N.run_in(rc.netns[ns], make) for ns in SENDERS]


def measure(rc, frames: list[bytes], ends: list[tuple[str, str]], settle: float = 0.3) -> dict:
    """Send every frame on its sender's eth0; wait until the end counters
    have counted them all, or stop moving (some were dropped). Returns frames
    counted, seconds, frames/s."""
    paths = [(rc.netns[ns], dev) for ns, dev in ends]
    before = sum(rx_packets(n, d) for n, d in paths)
    socks = open_senders(rc)
    plan = [(socks[sender_of(f)].send, f) for f in frames]
    t0 = time.perf_counter()
    for send, f in plan:
        send(f)
    t_sent = time.perf_counter()
    for sk in socks:
        sk.close()
    last, last_t = -1, time.perf_counter()
    while True:
        now_count = sum(rx_packets(n, d) for n, d in paths) - before
        now = time.perf_counter()
        if now_count != last:
            last, last_t = now_count, now
            if last >= len(frames):     # all there: later moves are ARP probes, not the class's
                break
        elif now - last_t >= settle:
            break
        time.sleep(0.02)
    seconds = max(t_sent, last_t) - t0
    return {"sent": len(frames), "counted": last, "seconds": round(seconds, 4),
            # (a few ARP frames are counted too: never more than the frames sent)
            "frames_per_second": round(min(last, len(frames)) / seconds, 1) if seconds > 0 else None,
            "send_loop_seconds": round(t_sent - t0, 4)}


@functools.lru_cache(maxsize=None)
def frames_of(cls: str, n: int, seed: int, services: int = 0) -> tuple[bytes, ...]:
    """The class's frames (made once per run: Scapy builds ~2-3k frames/s, and
    every proxy mode sends the same)."""
    g = traffic.Generator(seed, services)
    return tuple(g.frame(cls) for _ in range(n))


def load_balancer_routes(emu, rc) -> None:
    """kdp's cloud load balancer in the real edge: each LoadBalancer IP routed
    over the nodes kdp's balancer picks from (every node for Cluster, the nodes
    with a ready local endpoint for Local), hashed on layer 4."""
    from kdp.oracle import netns as N
    c = emu.cluster
    lines = []
    for svc in c.services:
        if svc.type != "LoadBalancer" or not svc.load_balancer_ips:
            continue
        nodes = [n for n in c.nodes if svc.external_traffic_policy != "Local"
                 or any(e.ready and e.node == n.name for p in svc.ports for e in svc.endpoints_for(p))]
        if not nodes:
            continue
        hops = " ".join(f"nexthop via {n.ip}" for n in nodes)
        lines += [f"route replace {ip}/32 {hops}" for ip in svc.load_balancer_ips]
    edge = rc.netns["edge"]
    r = N.netns_exec(edge, ["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"])
    if r.returncode != 0:
        raise N.NetnsError(f"sysctl in {edge}: {r.stderr.strip()}")
    N.ip_batch(edge, lines, "load balancer routes")


def prepare(emu, rc) -> None:
    """Silent senders and the edge's load balancer routes (see the header)."""
    from kdp.oracle import netns as N
    for ns in SENDERS:
        r = N.netns_exec(rc.netns[ns], SILENT_RST)
        if r.returncode != 0:
            raise N.NetnsError(f"{' '.join(SILENT_RST)} in {rc.netns[ns]}: {r.stderr.strip()}")
    load_balancer_routes(emu, rc)


def flush_conntrack(rc) -> None:
    from kdp.oracle import netns as N
    for name in rc.loaded_rules:
        N.netns_exec(rc.netns[name], ["conntrack", "-F"])


def _patient_exec():
    """The oracle's netns_exec with a longer timeout: iptables-restore of
    10,000 Services' rules takes longer than the oracle's 30 s."""
    from kdp.oracle import netns as N
    plain = N.netns_exec

    def slow(ns, argv, input=None, timeout=N.IP_TIMEOUT):
        return plain(ns, argv, input=input, timeout=max(timeout, 1800.0))
    return plain, slow


def measure_classes(cluster: str, classes: list[str], frames: int, repeat: int, seed: int,
                    report=None, services: int = 0, info: dict | None = None) -> dict:
    """{class: median frames/s, range, deliveries counted, the repeats} of the
    kernel on the benchmark cluster directory `cluster` (written with
    `services` extra Services), built in throwaway namespaces; report(cls, row)
    after each class. info gets the seconds the build and the rules' load took.
    Classes in NOT_DRIVEN are left out. Needs the kernel oracle."""
    from kdp.emulator import Emulator
    from kdp.oracle import netns as N
    from kdp.oracle.build import RealCluster
    t0 = time.perf_counter()
    emu = Emulator.load([cluster], capture=False, trace=False)
    t1 = time.perf_counter()
    out = {}
    plain, slow = _patient_exec()
    N.netns_exec = slow
    try:
        rc = RealCluster(emu, rules=True)
        rc.__enter__()
    finally:
        N.netns_exec = plain
    t2 = time.perf_counter()
    if info is not None:
        info.update(kdp_load_seconds=round(t1 - t0, 2), kernel_build_seconds=round(t2 - t1, 2),
                    proxy_mode=emu.cluster.config.kube_proxy.mode,
                    ruleset_lines=sum(t.count("\n") for t in rc.loaded_rules.values()))
    try:
        prepare(emu, rc)
        for cls in classes:
            if cls in NOT_DRIVEN:
                continue
            ends = end_devices(emu, ENDS[cls])
            reps = []
            for i in range(repeat):
                flush_conntrack(rc)             # new flows stay new
                reps.append(measure(rc, frames_of(cls, frames, seed + 1000 * i, services), ends))
            fps = [r["frames_per_second"] for r in reps]
            out[cls] = {"median_frames_per_second": statistics.median(fps), "range": [min(fps), max(fps)],
                        "counted_of_sent": [r["counted"] for r in reps], "repeats": reps}
            if report is not None:
                report(cls, out[cls])
    finally:
        rc.__exit__(None, None, None)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The kernel's rate on kdp's traffic classes, in throwaway "
                                "network namespaces (needs root).")
    p.add_argument("--classes", default=",".join(c for c in ENDS if c != "mix"))
    p.add_argument("--services", type=int, default=0, help="N extra ClusterIP Services (traffic.py)")
    p.add_argument("--proxy-mode", default="iptables", help="iptables, nftables or both: iptables,nftables")
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--results", default=os.path.join(HERE, "results", "kernel_classes.json"))
    a = p.parse_args(argv)
    from kdp.oracle import netns as N
    why = N.available()
    if why:
        print(f"bench_kernel_classes: cannot measure the kernel here: {why}", file=sys.stderr)
        return 2
    import tempfile

    def report(cls: str, row: dict) -> None:
        lo, hi = row["range"]
        print(f"{cls:15s} kernel {row['median_frames_per_second']:>10,.0f} frames/s "
              f"(range {lo:,.0f}-{hi:,.0f}; counted {row['counted_of_sent'][0]}/{a.frames})", flush=True)
    doc = {"frames": a.frames, "repeat": a.repeat, "seed": a.seed, "services": a.services, "modes": {}}
    classes = [c for c in a.classes.split(",") if c]
    for cls in classes:
        if cls in NOT_DRIVEN:
            print(f"{cls:15s} not driven: {NOT_DRIVEN[cls]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kdp-kclasses-") as tmp:
        for mode in a.proxy_mode.split(","):
            cluster = traffic.write_cluster(os.path.join(tmp, mode), a.services, mode)
            info: dict = {}
            print(f"[{mode}]", flush=True)
            rows = measure_classes(cluster, classes, a.frames, a.repeat, a.seed, report, a.services, info)
            print(f"[{mode}] cluster built in {info['kernel_build_seconds']} s "
                  f"({info['ruleset_lines']} ruleset lines loaded)", flush=True)
            doc["modes"][mode] = dict(info, classes=rows)
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    with open(a.results, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"written {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
