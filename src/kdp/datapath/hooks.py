# datapath.hooks: where the packet walk calls netfilter (the five IPv4 hooks,
# also from the bridge with br_netfilter) and turns the verdict into the
# trace: every rule visited becomes a hop, a drop carries the rule's name, a
# REJECT's answer is sent from this namespace.
from __future__ import annotations

from ..net.namespace import Namespace
from .. import wire
from ..netfilter.boundary import SkbMeta
from ..wire import Packet
from .ipv4 import answer_leg


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
