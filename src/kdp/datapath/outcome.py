# datapath.outcome: the records of one injection: the event queue's entries
# (a frame arriving at a device, with its leg), the hops of a trace, where each
# copy of a leg ended, and the Outcome handed back to callers.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..net.device import Device
from ..wire import Packet


class Event:
    """A frame arriving at a device (rx), with the leg it belongs to. (A plain
    class with slots, not a dataclass: several are made per frame.)"""

    __slots__ = ("dev", "pkt", "leg", "meta", "skip_prerouting", "pkt_host")

    def __init__(self, dev: Device, pkt: Packet, leg: str, meta: Any = None):
        self.dev = dev
        self.pkt = pkt
        self.leg = leg                  # request | reply | arp
        self.meta = meta                # netfilter's per-skb metadata inside one namespace
        self.skip_prerouting = False    # br_netfilter already ran PREROUTING (ip_sabotage_in)
        self.pkt_host = False           # the link layer already marked it for this host (PACKET_HOST)

    def child(self, dev: Device, pkt: Packet, meta=None, leg: str | None = None) -> "Event":
        return Event(dev, pkt, leg or self.leg, meta)

    def __repr__(self) -> str:
        return f"Event(dev={self.dev.name!r}, leg={self.leg!r}, pkt={self.pkt!r})"


@dataclass
class Hop:
    node: str
    namespace: str
    device: str | None
    component: str
    action: str
    detail: str
    leg: str

    def as_dict(self) -> dict:
        return {"node": self.node, "namespace": self.namespace, "device": self.device,
                "component": self.component, "action": self.action, "detail": self.detail,
                "leg": self.leg}


@dataclass
class End:
    """Where one copy of a leg ended: delivered, dropped or rejected."""

    disposition: str
    reason: str | None
    where: str | None
    packet: Packet | None


@dataclass
class Outcome:
    disposition: str
    reason: str | None
    delivered_to: str | None
    packet: Packet | None                 # as received at the destination (or where it died)
    reply: "Outcome | None" = None
    hops: list[Hop] = field(default_factory=list)
    frames: list = field(default_factory=list)      # (device, direction, Packet) in order

    def as_dict(self, with_hops: bool = True) -> dict:
        from ..render import packet_fields
        d = {"disposition": self.disposition, "reason": self.reason,
             "delivered_to": self.delivered_to,
             "packet": packet_fields(self.packet) if self.packet is not None else None}
        if with_hops:
            d["reply"] = self.reply.as_dict(with_hops=False) if self.reply else None
            d["hops"] = [h.as_dict() for h in self.hops]
        return d


