# datapath.bridge: a Linux bridge (net/bridge): FDB learning and ageing,
# forwarding, flooding, hairpin, delivery of frames for the bridge itself up
# to the node's stack, and br_netfilter (bridge-nf-call-iptables) running the
# IPv4 PREROUTING/FORWARD/POSTROUTING hooks on bridged frames. The nftables
# bridge family's base chains run at the bridge hooks (prerouting, input,
# forward, output, postrouting) in priority order around br_netfilter, which
# sits at priority 0 (NF_BR_PRI_BRNF) of prerouting, -1 of forward and last
# (NF_BR_PRI_LAST) of postrouting.
from __future__ import annotations

from .. import errors, wire
from ..addr import is_multicast_mac
from ..net.device import Bridge, Device


class BridgeMixin:
    def bridge_input(self, br: Bridge, port: Device, ev) -> None:
        """br_handle_frame(): a frame entered the bridge through `port`."""
        pkt = ev.pkt
        ns = br.namespace
        l2 = ns.netfilter is not None and ns.netfilter.l2
        if l2 and not self.nft_l2(ns, "bridge", "prerouting", pkt, ev, in_dev=port.name, below=0):
            return
        if self.rec is not None:
            self.rec.fdb_learn(br, pkt.eth.src, port)
        br.learn(pkt.eth.src, port, self.now)
        ns = br.namespace
        if ev.meta is None:
            ev.meta = self.new_meta(ns)
        nf = br.nf_call_iptables and pkt.ip is not None and not is_multicast_mac(pkt.eth.dst)
        if nf:
            # br_nf_pre_routing: iptables PREROUTING with in=bridge, physdev-in=port.
            if not wire.ip_checksum_ok(pkt):
                self.drop(ev, port, "bridge", "bad IP header checksum (br_netfilter)",
                          errors.INVALID_CHECKSUM)
                return
            old_dst = pkt.ip.dst
            pkt = self.nf_hook(ns, "PREROUTING", pkt, ev, in_dev=br.name, physin=port.name)
            if pkt is None:
                return
            ev.pkt = pkt
            if l2 and not self.nft_l2(ns, "bridge", "prerouting", pkt, ev, in_dev=port.name, from_=0):
                return
            if pkt.ip.dst != old_dst and self._br_nf_dnat(br, port, pkt, ev):
                return
        elif l2 and not self.nft_l2(ns, "bridge", "prerouting", pkt, ev, in_dev=port.name, from_=0):
            return
        self._br_handle_frame_finish(br, port, ev.pkt, ev, nf)

    def _br_handle_frame_finish(self, br: Bridge, port: Device, pkt, ev, nf: bool) -> None:
        """The forwarding decision: local, flood, forward or drop."""
        dst = pkt.eth.dst
        if is_multicast_mac(dst):
            self.hop(ev, port, "bridge", "flood", f"{br.name}: broadcast from {port.name}")
            self._flood(br, port, pkt, ev, nf=False)
            self._bridge_up(br, pkt, ev, skip_prerouting=False)
            return
        fdb = br.fdb.get(dst)
        if (fdb is not None and fdb.local) or dst == br.mac:
            if self.tracing:
                self.hop(ev, port, "bridge", "local", f"{br.name}: frame for the bridge's own MAC -> node stack")
            # PACKET_HOST when addressed to the bridge or to the very port it came in on
            self._bridge_up(br, pkt, ev, skip_prerouting=nf, host=dst in (br.mac, port.mac))
            return
        out = br.lookup(dst, self.now)
        if self.rec is not None:
            self.rec.fdb_lookup(br, dst, out)
        if out is None:
            self.hop(ev, port, "bridge", "flood", f"{br.name}: {dst} not in FDB, flooding")
            self._flood(br, port, pkt, ev, nf=nf)
        elif out is port and not port.hairpin:
            self.drop(ev, port, "bridge", f"{br.name}: {dst} is behind the ingress port and hairpin is off",
                      errors.BRIDGE_NO_HAIRPIN)
        else:
            if self.tracing:
                self.hop(ev, port, "bridge", "forward", f"{br.name}: {dst} via port {out.name}"
                         + (" (hairpin)" if out is port else ""))
            self._br_forward(br, port, out, pkt, ev, nf)
        if br.promisc:                   # a promiscuous bridge also passes every frame up
            self.hop(ev, port, "bridge", "local", f"{br.name} is promiscuous: a copy goes up")
            self._bridge_up(br, pkt, ev.child(br, pkt, meta=ev.meta), skip_prerouting=nf)

    def _br_forward(self, br: Bridge, inp: Device, out: Device, pkt, ev, nf: bool) -> None:
        """__br_forward(): the bridge forward hook, then br_forward_finish()'s postrouting."""
        ns = br.namespace
        l2 = ns.netfilter is not None and ns.netfilter.l2
        # br_nf_forward_ip sits at -1; the frames it hands to iptables come back through
        # br_nf_hook_thresh(), which resumes above priority 0 (chains at -1 and 0 never
        # see them)
        if l2 and not self.nft_l2(ns, "bridge", "forward", pkt, ev, in_dev=inp.name, out_dev=out.name,
                                  below=-1):
            return
        if nf:
            pkt = self.nf_hook(ns, "FORWARD", pkt, ev, in_dev=br.name, out_dev=br.name,
                               physin=inp.name, physout=out.name)
            if pkt is None:
                return
        if l2:
            if not self.nft_l2(ns, "bridge", "forward", pkt, ev, in_dev=inp.name, out_dev=out.name,
                               from_=1 if nf else -1):
                return
            if not self.nft_l2(ns, "bridge", "postrouting", pkt, ev, in_dev=inp.name, out_dev=out.name):
                return
        if nf:
            pkt = self.nf_hook(ns, "POSTROUTING", pkt, ev, out_dev=br.name, physout=out.name)
            if pkt is None:
                return
        self.transmit(out, pkt, ev.child(out, pkt, meta=ev.meta))

    def _flood(self, br: Bridge, inp: Device, pkt, ev, nf: bool) -> None:
        for p in br.ports:
            if (p is inp and not p.hairpin) or not p.up:
                continue
            self._br_forward(br, inp, p, pkt, ev.child(p, pkt, meta=ev.meta), nf)

    def _bridge_up(self, br: Bridge, pkt, ev, skip_prerouting: bool, host: bool = False) -> None:
        """br_pass_frame_up(): the bridge input hook, then the bridge device receives it
        (its taps, its netdev ingress chains, the node's stack)."""
        ns = br.namespace
        if ns.netfilter is not None and ns.netfilter.l2:
            if not self.nft_l2(ns, "bridge", "input", pkt, ev, in_dev=ev.dev.name if ev.dev is not br
                               else None):
                return
            self.capture(br, pkt, "in")
            if not self.nft_l2(ns, "netdev", "ingress", pkt, ev, in_dev=br.name, device=br.name):
                return
        else:
            self.capture(br, pkt, "in")
        up = ev.child(br, pkt, meta=ev.meta)
        up.skip_prerouting = skip_prerouting
        up.pkt_host = host
        self.netif_receive(br, up)

    def _br_nf_dnat(self, br: Bridge, port: Device, pkt, ev) -> bool:
        """br_nf_pre_routing_finish(): DNAT changed the destination. Routed
        elsewhere (or local): the frame goes up to the node's stack, addressed to
        the bridge. Routed back out of the bridge itself: it stays bridged, its
        destination MAC taken from the neighbour table (resolved by ARP from the
        bridge when unknown) and its source MAC kept. Without a cached header
        (the first packet, a STALE entry) it goes through the neighbour's output
        on the bridge device: a capture on the bridge sees it leave with the
        bridge's own MAC as source (neigh_resolve_output writes the whole header;
        br_dev_xmit's br_nf_pre_routing_finish_bridge_slow then puts the
        sender's MAC back before forwarding). True when handled here."""
        ns = br.namespace
        rt = ns.routes.lookup(pkt.ip.dst)
        if ns.is_local(pkt.ip.dst) or rt is None or rt.dev != br.name:
            if self.tracing:
                self.hop(ev, port, "bridge", "dnat", f"DNAT to {pkt.ip.dst}: routed by the node")
            ev.pkt = wire.set_macs(pkt, pkt.eth.src, br.mac)
            return False

        def resume(mac: str, via_output: bool) -> None:
            out = wire.set_macs(pkt, pkt.eth.src, mac)
            if self.tracing:
                self.hop(ev, port, "bridge", "dnat", f"DNAT to {pkt.ip.dst}: stays bridged, to {mac}"
                         + (f" (sent through {br.name}: no cached header yet)" if via_output else ""))
            if via_output:
                self.capture(br, wire.set_macs(pkt, br.mac, mac), "out")
            self._br_handle_frame_finish(br, port, out, ev.child(port, out, meta=ev.meta), nf=True)

        self.neigh_output(ns, br, rt.via or pkt.ip.dst, pkt, ev, resume=resume)
        return True

    def bridge_xmit(self, br: Bridge, pkt, ev) -> None:
        """br_dev_xmit(): the node's stack sends out the bridge device."""
        dst = pkt.eth.dst
        out = None if is_multicast_mac(dst) else br.lookup(dst, self.now)
        if self.rec is not None:
            self.rec.fdb_lookup(br, dst, out)
        targets = [out] if out is not None else [p for p in br.ports if p.up]
        verb = "forward" if out is not None else "flood"
        ns = br.namespace
        l2 = ns.netfilter is not None and ns.netfilter.l2
        for p in targets:
            if self.tracing:
                self.hop(ev, br, "bridge", verb, f"{br.name} -> port {p.name}")
            if l2:            # __br_forward() of a local frame: output, then postrouting
                pev = ev.child(p, pkt, meta=ev.meta)
                if not self.nft_l2(ns, "bridge", "output", pkt, pev, out_dev=p.name) or \
                        not self.nft_l2(ns, "bridge", "postrouting", pkt, pev, out_dev=p.name):
                    continue
            self.transmit(p, pkt, ev.child(p, pkt, meta=None))
