# senders: `kdp run --at auto`, where each frame of a capture enters the
# emulated cluster: at the device of the host that sent it, found by the
# frame's source MAC (a pod's or a node's eth0), else by its source IP (a
# pod's eth0, a node's eth0, the outside world's link to the edge for any
# address outside the cluster's ranges). A frame found by IP, or whose
# destination MAC is unknown (Linux cooked captures), gets the Ethernet header
# that sender's stack would write (kdp.emulator.link_macs). Frames kdp itself
# sends in answer -- from a Service's ClusterIP, external or load-balancer IP
# (replies un-DNATed by conntrack) -- and frames from cluster addresses no
# host owns are not injected: they are reported as skipped, with the reason.
from __future__ import annotations

from ipaddress import IPv4Address

SENT_BY_KDP = "sent-by-kdp"              # a Service IP's frames: kdp answers for it itself
UNKNOWN_SENDER = "unknown-sender"        # a cluster address (or non-IPv4 frame) no host owns
ZERO_MAC = bytes(6)


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Senders:
    def __init__(self, emu) -> None:
        self.emu = emu
        topo, c = emu.topology, emu.cluster
        self.by_mac: dict[bytes, object] = {}
        self.by_ip: dict[bytes, object] = {}
        for pod in c.pods:
            if pod.host_network or pod.ip is None:
                continue
            dev = topo.pod_ns[pod.key].devices["eth0"]
            self.by_mac[_mac(dev.mac)] = dev
            self.by_ip[pod.ip.packed] = dev
        for node in c.nodes:
            dev = topo.node_ns[node.name].devices["eth0"]
            self.by_mac[_mac(dev.mac)] = dev
            self.by_ip[node.ip.packed] = dev
        self.own: set[bytes] = set()
        for svc in c.services:
            for ip in ([svc.cluster_ip] if svc.cluster_ip is not None else []) + list(svc.external_ips) \
                    + list(svc.load_balancer_ips):
                self.own.add(ip.packed)
        ext = topo.namespaces["ext"]
        self.ext_dev = ext.devices["eth0"]
        self.cluster_ranges = ext.local_exclude
        self.macs: dict[int, object] = {}

    def _header(self, dev, dst: bytes) -> bytes:
        macs = self.macs.get(id(dev))
        if macs is None:
            macs = self.macs[id(dev)] = self.emu.link_macs(dev)
        d, s = macs(dst)
        return d + s

    def resolve(self, frame: bytes):
        """(device, frame as injected, skip reason or None, rewritten)."""
        ipv4 = len(frame) >= 34 and frame[12:14] == b"\x08\x00"
        dev = self.by_mac.get(frame[6:12])
        if dev is not None and (frame[0:6] != ZERO_MAC or not ipv4):
            return dev, frame, None, False
        if not ipv4:
            return None, frame, UNKNOWN_SENDER, False
        src = frame[26:30]
        if src in self.own:
            return None, frame, SENT_BY_KDP, False
        dev = dev or self.by_ip.get(src)
        if dev is None:
            ip = IPv4Address(src)
            if any(ip in n for n in self.cluster_ranges):
                return None, frame, UNKNOWN_SENDER, False
            dev = self.ext_dev
        head = self._header(dev, frame[30:34])
        if head == frame[0:12]:
            return dev, frame, None, False
        return dev, head + frame[12:], None, True
