# datapath.arp: the link-layer receive filter and ARP (net/ipv4/arp.c):
# answering requests for local addresses (and by proxy ARP), learning
# neighbours, resolving next hops with real request frames and releasing the
# packets queued on a resolution; failure after the queue drains.
from __future__ import annotations

from ipaddress import IPv4Address

from .. import errors, wire
from ..addr import BROADCAST_MAC, ZERO_MAC, is_multicast_mac
from ..net.device import Device
from ..net.namespace import Namespace
from ..wire import ARP, Ether, Packet
from .hooks import ARP_LEN
from .outcome import End


class ArpMixin:
    def netif_receive(self, dev: Device, ev) -> None:
        """eth_type_trans() + the protocol handlers of a non-bridged device."""
        pkt = ev.pkt
        if not (pkt.eth.dst == dev.mac or is_multicast_mac(pkt.eth.dst) or dev.kind == "loopback"
                or ev.pkt_host):
            self.drop(ev, dev, "link", f"destination MAC {pkt.eth.dst} is not {dev.mac}",
                      errors.NOT_FOR_US)
            return
        if pkt.arp is not None:
            self.arp_rcv(dev, ev)
        elif pkt.ip is not None:
            self.ip_rcv(dev, ev)
        elif pkt.eth.type in (wire.ETH_P_IP, wire.ETH_P_ARP):
            self.drop(ev, dev, "link", "unparseable header", errors.MALFORMED)
        else:
            self.drop(ev, dev, "link", f"no handler for ethertype 0x{pkt.eth.type:04x}",
                      errors.UNSUPPORTED_PROTO)

    def arp_rcv(self, dev: Device, ev) -> None:
        ns, a = dev.namespace, ev.pkt.arp
        if ns.netfilter is not None and ns.netfilter.l2 and \
                not self.nft_l2(ns, "arp", "input", ev.pkt, ev, in_dev=dev.name):
            return                              # NF_ARP_IN before arp_process()
        if a.op == 1:
            local = not a.tpa.is_loopback and ns.is_local(a.tpa)
            proxy = False
            if not local and dev.proxy_arp:
                rt = ns.routes.lookup(a.tpa)
                proxy = rt is not None and rt.dev != dev.name and rt.kind == "unicast"
            if local or proxy:
                ns.neigh.update(dev.name, a.spa, a.sha, self.now)
                reply = Packet(Ether(a.sha, dev.mac, wire.ETH_P_ARP),
                               arp=ARP(2, dev.mac, a.tpa, a.sha, a.spa))
                how = "proxy ARP reply" if proxy else "ARP reply"
                self.hop(ev, dev, "arp", "reply", f"{how}: {a.tpa} is-at {dev.mac} (to {a.spa})")
                if ev.leg == "request":          # the frame sent was this ARP request itself
                    self.delivered(ev, ns, ev.pkt, f"ARP request answered by {ns.name}")
                self.arp_xmit(ns, dev, reply, ev.child(dev, reply, leg="reply" if ev.leg == "request" else "arp"))
                return
            # not for us: only refresh an existing entry (arp_accept=0)
            ns.neigh.update(dev.name, a.spa, a.sha, self.now, create=False)
            self.hop(ev, dev, "arp", "ignore", f"who-has {a.tpa}: not a local address")
            if ev.leg == "request":
                self.ends["request"].append(End("dropped", errors.ARP_NOT_LOCAL, ns.name, ev.pkt))
            return
        waiting = ns.neigh.update(dev.name, a.spa, a.sha, self.now,
                                  create=ns.neigh.get(dev.name, a.spa) is not None)
        self.hop(ev, dev, "arp", "learn", f"{a.spa} is-at {a.sha}; {len(waiting)} packet(s) released")
        if ev.leg in ("request", "reply"):       # an ARP reply that was itself the frame followed
            self.delivered(ev, ns, ev.pkt, f"ARP reply taken into {ns.name}'s neighbour table")
        if waiting:
            ns.neigh.cache_header(ns.neigh.get(dev.name, a.spa))     # output resolved it: the header is cached
        for qpkt, qev, resume in waiting:
            if resume is not None:               # a bridged DNAT frame waiting for its MAC
                entry = ns.neigh.get(dev.name, a.spa)
                if entry is not None:
                    ns.neigh.cache_header(entry)
                resume(a.sha, True)
                continue
            out = wire.set_macs(qpkt, dev.mac, a.sha)
            self.transmit(dev, out, qev.child(dev, out, meta=None))

    def neigh_output(self, ns: Namespace, dev: Device, nexthop: IPv4Address, pkt: Packet, ev,
                     resume=None) -> None:
        """ip_finish_output2(): find the next hop's MAC, or queue and ask. With
        `resume`, the resolved MAC is handed to it instead of transmitting (the
        bridge's DNAT path)."""
        if dev.kind == "loopback":
            self.transmit(dev, wire.set_macs(pkt, ZERO_MAC, ZERO_MAC), ev)
            return
        if ns.is_broadcast(pkt.ip.dst):
            self.transmit(dev, wire.set_macs(pkt, dev.mac, BROADCAST_MAC), ev)
            return
        entry, mac = ns.neigh.resolve(dev.name, nexthop)
        if mac is not None and resume is not None:
            # br_nf_pre_routing_finish_bridge: with a cached header the frame is bridged
            # at once; otherwise it goes out through the bridge device first
            via_output = not entry.hh
            ns.neigh.cache_header(entry)
            resume(mac, via_output)
            return
        if mac is not None:
            ns.neigh.cache_header(entry)
            out = wire.set_macs(pkt, dev.mac, mac)
            if self.tracing:
                self.hop(ev, dev, "arp", "resolved", f"next hop {nexthop} is-at {mac}")
            self.transmit(dev, out, ev.child(dev, out))
            return
        entry = ns.neigh.incomplete(dev.name, nexthop, self.now)
        first = not entry.queue
        if len(entry.queue) >= ns.neigh.QUEUE_LEN:
            self.drop(ev, dev, "arp", f"unresolved queue for {nexthop} full",
                      errors.NEIGH_QUEUE_FULL)
            return
        entry.queue.append((pkt, ev, resume))
        if first:
            # arp_announce=0: the packet's own source when it is any local address
            local_src = pkt.ip.src if not ns.catch_all else None
            src = local_src if local_src is not None and ns.local_device_for(local_src) is not None \
                else ns.source_address(dev.name, nexthop)       # inet_select_addr, any device
            req = Packet(Ether(BROADCAST_MAC, dev.mac, wire.ETH_P_ARP),
                         arp=ARP(1, dev.mac, src or IPv4Address(0), ZERO_MAC, nexthop))
            if self.tracing:
                self.hop(ev, dev, "arp", "request", f"who-has {nexthop} tell {src} (packet queued)")
            self.arp_xmit(ns, dev, req, ev.child(dev, req, meta=None, leg="arp"))
        else:
            if self.tracing:
                self.hop(ev, dev, "arp", "queue", f"waiting for {nexthop}")

    def arp_xmit(self, ns: Namespace, dev: Device, pkt: Packet, ev) -> None:
        """arp_xmit(): the arp family's output chains (NF_ARP_OUT), then the device. The
        packet arp_create() built has its link-layer header already: counters count it."""
        if ns.netfilter is not None and ns.netfilter.l2 and \
                not self.nft_l2(ns, "arp", "output", pkt, ev, out_dev=dev.name, nbytes=ARP_LEN + 14):
            return
        self.transmit(dev, pkt, ev)

    def fail_pending_neighbours(self) -> bool:
        """No answer came: the kernel gives up after its probes, drops the queued
        packets and answers forwarded ones with ICMP host unreachable."""
        did = False
        for ns in self.namespaces.values():
            for entry in ns.neigh.pending():
                ns.neigh.fail(entry)
                queued, entry.queue = entry.queue, []
                for pkt, ev, _resume in queued:
                    dev = ns.devices.get(entry.dev)
                    self.drop(ev, dev, "arp", f"no ARP reply for {entry.ip}", errors.NEIGH_FAILED)
                    # ipv4_link_failure(): ICMP host unreachable, also for local senders
                    self.icmp_send(ns, pkt, wire.ICMP_DEST_UNREACH, wire.ICMP_HOST_UNREACH, ev, dev)
                    did = True
        return did
