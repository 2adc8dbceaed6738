# datapath.link: what happens when a device transmits a frame: a veth hands it
# to its peer, a segment (the underlay) to the device owning the destination
# MAC (or all, for broadcast), loopback to itself, a bridge device to its ports
# (br_dev_xmit). Also the per-device captures tcpdump would show.
from __future__ import annotations

from .. import errors
from ..addr import is_multicast_mac
from ..net.device import Bridge, Device
from ..wire import Packet
from .hooks import l3_length


class LinkMixin:
    def transmit(self, dev: Device, pkt: Packet, ev) -> None:
        """dev_queue_xmit(): dev sends pkt."""
        if not dev.up or not dev.carrier:
            if pkt.arp is None:
                self.drop(ev, dev, "link", f"{dev.name} has no carrier", errors.LINK_DOWN)
            else:
                self.hop(ev, dev, "link", "drop", f"{dev.name} has no carrier: ARP not sent")
            return
        ns = dev.namespace
        if dev.kind != "loopback" and ns.netfilter is not None and ns.netfilter.l2:
            # nf_hook_egress() in __dev_queue_xmit, before the taps: skb->len is the whole frame
            if not self.nft_l2(ns, "netdev", "egress", pkt, ev, out_dev=dev.name, device=dev.name,
                               nbytes=l3_length(pkt) + 14):
                return
        self.capture(dev, pkt, "out")
        if dev.kind == "loopback":
            self.schedule(ev.child(dev, pkt, meta=ev.meta))
            return
        if isinstance(dev, Bridge):
            self.bridge_xmit(dev, pkt, ev)
            return
        if dev.peer is not None:
            if self.tracing:
                self.hop(ev, dev, "veth", "xmit", f"{dev.name} -> {dev.peer.label}")
            self.schedule(ev.child(dev.peer, pkt, meta=None))
            return
        if dev.segment is not None:
            self.segment_xmit(dev, pkt, ev)
            return
        if dev.kind == "bridge":
            return
        self.drop(ev, dev, "link", "device has no peer or segment", errors.LINK_DOWN)

    def segment_xmit(self, dev: Device, pkt: Packet, ev) -> None:
        seg = dev.segment
        dst = pkt.eth.dst
        if is_multicast_mac(dst):
            targets = [d for d in seg.devices if d is not dev]
        else:
            targets = [d for d in seg.devices if d.mac == dst and d is not dev]
        if not targets:
            self.drop(ev, dev, "underlay", f"no host with MAC {dst} on {seg.name}",
                      errors.NO_SUCH_HOST)
            return
        for t in targets:
            if self.tracing:
                self.hop(ev, dev, "underlay", "xmit", f"{seg.name}: {dev.label} -> {t.label}")
            self.schedule(ev.child(t, pkt, meta=None))

    def capture(self, dev: Device, pkt: Packet, direction: str) -> None:
        if self.capture_sink is not None:
            self.capture_sink(dev, self.now, pkt)
        elif self.captures is not None:
            self.captures.setdefault((dev.namespace.name, dev.name), []).append((self.now, pkt, direction))
        self.frames_seen.append((dev, direction, pkt))
