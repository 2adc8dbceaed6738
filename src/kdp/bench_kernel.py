# bench_kernel: the real kernel's first-packet cost for a ruleset, measured in
# throwaway network namespaces (kdp bench rules, beside kdp's own numbers).
# Three namespaces named like the oracle's (kdpo<pid>-...): a client, the node,
# a sink. The node gets the ruleset with iptables-restore (in kube-proxy's nftables
# mode: the iptables rules that stay, then kube-proxy's transaction with `nft -f`,
# cut into batches by kdp.bench_nft.kernel_batches) and forwards:
#
#   client c0 ──veth── eth0 [node: the ruleset, ip_forward] eth1 ──veth── s0 sink
#
# The client sends first packets (TCP SYNs, each a new connection, correct
# checksums) as raw frames on c0; every packet the node's rules DNAT is routed
# out of eth1 (the default route) and counted on the sink's s0 (rx_packets).
# Cost per first packet = wall time from the first send until every packet is
# counted (the veth hands each frame to the node in the sender's softirq), over
# the packets sent. The same run measures the path with no rules loaded
# (veth, routing, forwarding: the fixed cost) so the rules' share shows.
# Only namespaces this module created are touched; all are deleted afterwards.
from __future__ import annotations

import socket
import statistics
import subprocess
import time
from ipaddress import IPv4Address

from . import wire
from .oracle import netns as N

BATCH = 200                         # packets per timed batch (the percentiles are over batches)
GROUP = 5                           # batches per visit of the client namespace (<= 2 s each)
BUDGET_S = 30.0                     # time for one kind of first packet (uniform, best, worst)
MAC_C, MAC_N0, MAC_N1, MAC_S = ("02:6b:00:00:00:01", "02:6b:00:00:00:02", "02:6b:00:00:00:03",
                                "02:6b:00:00:00:04")


def unavailable(nft: bool = False) -> str | None:
    """None when the kernel can be measured here (with `nft` too), else why not."""
    why = N.available()
    if why:
        return why.replace("the kernel oracle needs", "measuring the kernel needs")
    for tool in ("iptables-restore", "nft") if nft else ("iptables-restore",):
        try:
            subprocess.run([tool, "--version"], capture_output=True, timeout=10)
        except OSError:
            return f"{tool} is not installed"
    return None


def nft_version() -> str:
    try:
        return subprocess.run(["nft", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return "unknown"


def iptables_version() -> str:
    try:
        return subprocess.run(["iptables-restore", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return "unknown"


def _frames(flows) -> list[bytes]:
    """Ethernet frames (client -> node MAC) of FLOW_DTYPE first packets."""
    out = []
    for src, dst, sport, dport, proto, _fl, _loc, _ok, _now in flows.tolist():
        ip = wire.IPv4(IPv4Address(src), IPv4Address(dst), proto)
        l4 = (wire.TCP(sport, dport, flags=wire.SYN) if proto == 6
              else wire.UDP(sport, dport, payload=b"q"))
        pkt = wire.Packet(wire.Ether(MAC_N0, MAC_C, wire.ETH_P_IP), ip=ip, l4=l4)
        out.append(wire.emit(wire.finalize(pkt)))
    return out


class KernelBench:
    """The three namespaces; use as a context manager (always cleaned up)."""

    def __init__(self, node_ip: str = "10.240.0.4/16"):
        pre = N.default_prefix() + "b"
        self.client, self.node, self.sink = pre + "c", pre + "n", pre + "s"
        self.node_ip = node_ip
        self.loaded = False
        self._dev = None

    def __enter__(self) -> "KernelBench":
        N.REGISTRY.install()
        names = [self.client, self.node, self.sink]
        N.REGISTRY.add(names)
        N.create_netns(names)
        try:
            for ns in names:
                N.write_sysctls(ns, {"net.ipv6.conf.all.disable_ipv6": 1,
                                     "net.ipv6.conf.default.disable_ipv6": 1}, strict=False)
            self._wire()
        except BaseException:
            N.REGISTRY.cleanup(names)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._dev is not None:
            import os
            os.close(self._dev)
        N.REGISTRY.cleanup([self.client, self.node, self.sink])

    def _wire(self) -> None:
        N.ip_batch(self.node, [
            f"link add eth0 address {MAC_N0} type veth peer name c0 netns {self.client} "
            f"address {MAC_C}",
            f"link add eth1 address {MAC_N1} type veth peer name s0 netns {self.sink} "
            f"address {MAC_S}",
            "link set lo up", "link set eth0 up", "link set eth1 up",
            f"addr add {self.node_ip} dev eth0", "addr add 169.254.100.1/30 dev eth1",
            "route add default via 169.254.100.2 dev eth1",
            f"neigh replace 169.254.100.2 lladdr {MAC_S} dev eth1 nud permanent"], "node")
        N.ip_batch(self.client, ["link set lo up", "link set c0 up"], "client")
        N.ip_batch(self.sink, ["link set lo up", "link set s0 up",
                               "addr add 169.254.100.2/30 dev s0"], "sink")
        N.write_sysctls(self.node, {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                                    "net.ipv4.conf.default.rp_filter": 0,
                                    "net.ipv4.conf.eth0.rp_filter": 0}, strict=False)
        N.offloads_off(self.client, ["c0"])

    def load(self, ruleset_text: str) -> None:
        """iptables-restore the ruleset into the node (raises with the error)."""
        r = N.netns_exec(self.node, ["iptables-restore"], input=ruleset_text, timeout=600)
        if r.returncode != 0:
            raise N.NetnsError(f"iptables-restore: {r.stderr.strip().splitlines()[-1:]}")
        self.loaded = True

    def load_nft(self, tx: str) -> int:
        """kube-proxy's nftables transaction into the node with `nft -f`, in batches
        (raises with nft's error); the number of batches."""
        from .bench_nft import kernel_batches
        batches = kernel_batches(tx)
        for i, text in enumerate(batches, 1):
            r = N.netns_exec(self.node, ["nft", "-f", "-"], input=text, timeout=3600)
            if r.returncode != 0:
                raise N.NetnsError(f"nft -f (batch {i} of {len(batches)}): "
                                   f"{r.stderr.strip().splitlines()[-1:]}")
        self.loaded = True
        return len(batches)

    def listing(self) -> str:
        """`nft list ruleset` in the node."""
        r = N.netns_exec(self.node, ["nft", "list", "ruleset"], timeout=600)
        if r.returncode != 0:
            raise N.NetnsError(f"nft list ruleset: {r.stderr.strip()}")
        return r.stdout

    def delivered(self) -> int:
        """Packets s0 received: /proc/net/dev as the sink namespace sees it (the
        file, opened once from inside the sink, keeps that namespace)."""
        import os
        if self._dev is None:
            self._dev = N.run_in(self.sink, os.open, "/proc/thread-self/net/dev", os.O_RDONLY)
        text = os.pread(self._dev, 65536, 0).decode()
        for line in text.splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == "s0":
                return int(rest.split()[1])
        raise N.NetnsError("s0 is missing from the sink's /proc/net/dev")

    def time_batches(self, frames: list[bytes], budget_s: float = BUDGET_S
                     ) -> tuple[list[float], int, int]:
        """Seconds per packet of each BATCH-packet batch (sent until all are
        counted on the sink, or 2 s), the packets delivered and sent. A thread in the
        client namespace sends and polls, GROUP batches at a time; batches stop
        after `budget_s` (at least 5 are timed)."""
        def work(chunks):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(("c0", 0))
            send, count, clock = s.send, self.delivered, time.perf_counter
            per, got = [], 0
            for chunk in chunks:
                before = count()
                want, n = before + len(chunk), before
                t0 = clock()
                for f in chunk:
                    send(f)
                deadline = t0 + 2.0
                while n < want and clock() < deadline:
                    n = count()
                per.append((clock() - t0) / len(chunk))
                got += min(n - before, len(chunk))
            s.close()
            return per, got
        self.delivered()
        batches = [frames[i:i + BATCH] for i in range(0, len(frames), BATCH)]
        per, got, sent, start = [], 0, 0, time.perf_counter()
        for i in range(0, len(batches), GROUP):
            p, g = N.run_in(self.client, work, batches[i:i + GROUP])
            per += p
            got += g
            sent += sum(map(len, batches[i:i + GROUP]))
            if len(per) >= 5 and time.perf_counter() - start > budget_s:
                break
        return per, got, sent


def summary(per_packet: list[float]) -> dict:
    q = statistics.quantiles(per_packet, n=100, method="inclusive") if len(per_packet) > 1 \
        else [per_packet[0]] * 99
    return {"p50_us": round(q[49] * 1e6, 3), "p90_us": round(q[89] * 1e6, 3),
            "p99_us": round(q[98] * 1e6, 3), "batches": len(per_packet),
            "per_second": round(1 / statistics.median(per_packet), 1),
            "range": [round(1 / max(per_packet), 1), round(1 / min(per_packet), 1)]}


def measure(ruleset_text: str, flows, best, worst, *, node_ip: str = "10.240.0.4/16",
            log=None, nft_tx: str | None = None) -> dict:
    """The kernel's first-packet cost: uniform flows, best and worst position,
    and the same path with no rules; {"skipped": reason} when not possible.
    nft_tx: kube-proxy's nftables transaction, loaded after the iptables rules."""
    why = unavailable(nft=nft_tx is not None)
    if why:
        return {"skipped": why}
    frames, fb, fw = _frames(flows), _frames(best), _frames(worst)
    out = {"iptables": iptables_version(), "batch": BATCH}
    if nft_tx is not None:
        out["nft"] = nft_version()
    try:
        with KernelBench(node_ip) as kb:
            per, got, sent = kb.time_batches(frames[: max(5 * BATCH, len(frames) // 4)])
            out["no_rules"] = summary(per) | {"sent": sent, "delivered": got}
            t0 = time.perf_counter()
            kb.load(ruleset_text)
            out["restore_seconds"] = round(time.perf_counter() - t0, 2)
            if log:
                log(f"  kernel: ruleset restored in {out['restore_seconds']} s")
            if nft_tx is not None:
                t0 = time.perf_counter()
                out["nft_batches"] = kb.load_nft(nft_tx)
                out["nft_seconds"] = round(time.perf_counter() - t0, 2)
                if log:
                    log(f"  kernel: nftables table loaded with nft -f in {out['nft_seconds']} s "
                        f"({out['nft_batches']} batches)")
            per, got, sent = kb.time_batches(frames)
            out["uniform"] = summary(per) | {"sent": sent, "delivered": got}
            for name, fs in (("best", fb), ("worst", fw)):
                per, got, sent = kb.time_batches(fs)
                out[name] = summary(per) | {"sent": sent, "delivered": got}
    except (N.NetnsError, OSError, subprocess.TimeoutExpired) as e:
        return {"skipped": f"the kernel measurement failed: {e}"}
    return out
