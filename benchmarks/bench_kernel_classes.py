# bench_kernel_classes: the real kernel's rate on the traffic classes of
# benchmarks/traffic.py, beside kdp's in the same run. The benchmark cluster is
# built in throwaway network namespaces by kdp's own kernel oracle
# (kdp.oracle.build.RealCluster: nodes, pods' pause namespaces, veth, cbr0,
# the underlay, kube-proxy's rules loaded with iptables-restore); the class's
# frames are sent on the client pod's eth0 through an AF_PACKET socket as fast
# as one Python loop sends them, and the frames the kernel handled are counted
# where they end (rx_packets of the devices named per class). The kernel's
# rate = frames counted / (time from the first send until the counters stop
# moving). No application runs in the real pods: the kernel's own answers
# (RST, ICMP port unreachable, ICMP echo reply) are what it sends back, so the
# classes whose answer comes from an app in kdp (UDP echo, DNS) are measured
# up to the delivery into the pod. Everything runs in namespaces this script
# creates; all are deleted afterwards. Needs root.
#
#   python benchmarks/bench_kernel_classes.py --frames 20000 --repeat 5
#   python benchmarks/bench_kernel_classes.py --classes syn-clusterip,icmp-echo --with-kdp
from __future__ import annotations

import argparse
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
    "udp-closed": "nginx-remote",
    "icmp-echo": "nginx-remote",
    "ack-midstream": "nginx-remote",
    "udp-pod": "udp-echo-remote",
    "dns": "coredns",
    "mix": "all-pods",
}


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


def measure(rc, frames: list[bytes], ends: list[tuple[str, str]], settle: float = 0.3) -> dict:
    """Send every frame on the client pod's eth0; wait until the end counters
    stop moving. Returns frames counted, seconds, frames/s."""
    import socket
    from kdp.oracle import netns as N
    client_ns = rc.netns[traffic.CLIENT_AT]
    paths = [(rc.netns[ns], dev) for ns, dev in ends]
    before = sum(rx_packets(n, d) for n, d in paths)

    def send_all():
        sk = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sk.bind(("eth0", 0))
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        send = sk.send
        t0 = time.perf_counter()
        for f in frames:
            send(f)
        t1 = time.perf_counter()
        sk.close()
        return t0, t1
    t0, t_sent = N.run_in(client_ns, send_all)
    last, last_t = -1, time.perf_counter()
    while True:
        now_count = sum(rx_packets(n, d) for n, d in paths) - before
        now = time.perf_counter()
        if now_count != last:
            last, last_t = now_count, now
        elif now - last_t >= settle:
            break
        time.sleep(0.02)
    seconds = max(t_sent, last_t) - t0
    return {"sent": len(frames), "counted": last, "seconds": round(seconds, 4),
            "frames_per_second": round(last / seconds, 1) if seconds > 0 else None,
            "send_loop_seconds": round(t_sent - t0, 4)}


def frames_of(cls: str, n: int, seed: int) -> list[bytes]:
    g = traffic.Generator(seed)
    return [g.frame(cls) for _ in range(n)]


def measure_classes(cluster: str, classes: list[str], frames: int, repeat: int, seed: int,
                    report=None) -> dict:
    """{class: median frames/s, range, deliveries counted, the repeats} of the
    kernel on the benchmark cluster directory `cluster`, built in throwaway
    namespaces; report(cls, row) after each class. Needs the kernel oracle."""
    from kdp.emulator import Emulator
    from kdp.oracle.build import RealCluster
    emu = Emulator.load([cluster])
    out = {}
    with RealCluster(emu, rules=True) as rc:
        for cls in classes:
            ends = end_devices(emu, ENDS[cls])
            # a fresh seed per repeat: new flows stay new (conntrack keeps the last run's)
            reps = [measure(rc, frames_of(cls, frames, seed + 1000 * i), ends) for i in range(repeat)]
            fps = [r["frames_per_second"] for r in reps]
            out[cls] = {"median_frames_per_second": statistics.median(fps), "range": [min(fps), max(fps)],
                        "counted_of_sent": [r["counted"] for r in reps], "repeats": reps}
            if report is not None:
                report(cls, out[cls])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The kernel's rate on kdp's traffic classes, in throwaway "
                                "network namespaces (needs root).")
    p.add_argument("--classes", default="syn-clusterip,udp-clusterip,udp-closed,icmp-echo,udp-pod")
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
    with tempfile.TemporaryDirectory(prefix="kdp-kclasses-") as tmp:
        cluster = traffic.write_cluster(os.path.join(tmp, "cluster"))
        classes = [c for c in a.classes.split(",") if c]
        doc = {"frames": a.frames, "repeat": a.repeat, "seed": a.seed,
               "classes": measure_classes(cluster, classes, a.frames, a.repeat, a.seed, report)}
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    with open(a.results, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"written {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
