# datapath.hooks: where the packet walk calls netfilter (the five IPv4 hooks,
# also from the bridge with br_netfilter) and turns the verdict into the
# trace: every rule visited becomes a hop, a drop carries the rule's name, a
# REJECT's answer is sent from this namespace.
from __future__ import annotations

from ..net.namespace import Namespace
from .. import wire
from ..netfilter.boundary import HookState, SkbMeta
from ..netfilter.engine import ip_length
from ..wire import Packet
from .ipv4 import answer_leg


def l3_length(pkt: Packet) -> int:
    """The frame less its Ethernet header (skb->len past the MAC header)."""
    if pkt.ip is not None:
        return ip_length(pkt)
    if pkt.arp is not None:
        return ARP_LEN
    return len(pkt.payload)


ARP_LEN = 28                   # an Ethernet/IPv4 ARP packet


class HookMixin:
    def new_meta(self, ns: Namespace):
        if ns.netfilter is None:
            return None
        return SkbMeta()

    def nf_hook(self, ns: Namespace, hook: str, pkt: Packet, ev, in_dev=None, out_dev=None,
                physin=None, physout=None) -> Packet | None:
        """Run `hook`; the (possibly NATed) packet when accepted, None when not."""
        nf = ns.netfilter
        if nf is None:
            return pkt
        if ev.meta is None:
            ev.meta = self.new_meta(ns)
        rec = self.rec
        counted = len(rec.counted) if rec is not None else 0
        res = nf.run_hook(hook, pkt, in_dev, out_dev, physin, physout, self.now, ev.meta)
        if rec is not None:                 # which leg each counter increment belongs to
            rec.legs.extend([ev.leg] * (len(rec.counted) - counted))
        if res.verdict == "ACCEPT" and not res.trace and not res.log:
            return res.packet               # (the common case: nothing to report)
        dev = ns.devices.get(in_dev or out_dev or "lo")
        for t in res.trace:
            if t.kind == "rule" and not self.trace_misses and t.outcome in ("no match", "miss"):
                continue
            component = "conntrack" if t.kind in ("conntrack", "nat") else "netfilter"
            self.hop(ev, dev, component, hook, str(t), ns)
        for line in res.log:
            self.hop(ev, dev, "netfilter", "log", line, ns)
        if res.verdict != "ACCEPT":
            self.drop(ev, dev, "netfilter", f"{hook}: dropped", res.reason or f"hook:{hook}", ns,
                      disposition="rejected" if res.rejected or res.generated else "dropped")
            metas = list(res.generated_meta) + [None] * len(res.generated)
            for answer, meta in zip(res.generated, metas):
                if isinstance(answer.l4, wire.TCP) and answer.l4.flags & wire.RST:
                    self.resets.append(f"{ns.name} (netfilter REJECT)")
                self.hop(ev, dev, "netfilter", "reject", f"answering with {answer.summary()}", ns)
                self.local_out(ns, answer, ev.child(ns.devices["lo"], answer, meta=meta,
                                                    leg=answer_leg(ev.leg)))
            return None
        return res.packet

    def nft_l2(self, ns: Namespace, family: str, hook: str, pkt: Packet, ev, in_dev=None, out_dev=None,
               device: str | None = None, nbytes: int | None = None, below=None, from_=None) -> bool:
        """The nftables base chains of a bridge, netdev or arp hook (Netfilter.l2_hook):
        True when the frame goes on. nbytes: what their counters count (skb->len there;
        default the frame less its Ethernet header)."""
        nf = ns.netfilter
        if nf is None or not nf.l2 or not nf.has_l2(family, hook, device):
            return True
        if ev.meta is None:
            ev.meta = self.new_meta(ns)
        rec = self.rec
        counted = len(rec.counted) if rec is not None else 0
        state = HookState(f"{family} {hook}", pkt, in_dev, out_dev, None, None, self.now)
        res = nf.l2_hook(family, hook, state, ev.meta, l3_length(pkt) if nbytes is None else nbytes,
                         device=device, below=below, from_=from_)
        if rec is not None:
            rec.legs.extend([ev.leg] * (len(rec.counted) - counted))
        if res.verdict == "ACCEPT" and not res.trace:
            return True
        dev = ns.devices.get(device or in_dev or out_dev or "lo")
        for t in res.trace:
            if t.kind == "rule" and not self.trace_misses and t.outcome in ("no match", "miss"):
                continue
            self.hop(ev, dev, "netfilter", state.hook, str(t), ns)
        if res.verdict != "ACCEPT":
            self.drop(ev, dev, "netfilter", f"{state.hook}: dropped", res.reason or f"hook:{state.hook}", ns)
            return False
        return True
