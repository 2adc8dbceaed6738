# datapath.ipv4: the IPv4 stack of a namespace (net/ipv4 ip_input.c,
# ip_forward.c, ip_output.c, icmp.c): header checks, PREROUTING, the routing
# decision, local delivery to sockets through INPUT, forwarding with TTL and
# FORWARD/POSTROUTING, locally generated packets through OUTPUT, and the ICMP
# errors the kernel sends (time exceeded, unreachable).
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from .. import errors, wire
from ..addr import is_multicast_mac
from ..conntrack.keyed import keyed_hash
from ..net.device import Device
from ..net.namespace import Namespace
from ..net.replies import icmp_error
from ..wire import Packet


def answer_leg(leg: str) -> str:
    """The leg an answer belongs to: answers to the request are the reply; the
    sender's answers to the reply (an RST for a SYN-ACK nobody asked for)
    continue the request; ARP stays ARP."""
    return {"request": "reply", "reply": "request"}.get(leg, leg)


class Ipv4Mixin:
    def ip_rcv(self, dev: Device, ev) -> None:
        ns, pkt = dev.namespace, ev.pkt
        if not wire.ip_checksum_ok(pkt):
            self.drop(ev, dev, "route", "bad IP header checksum", errors.INVALID_CHECKSUM)
            return
        if pkt.ip.frag or pkt.ip.flags & 1:
            self.drop(ev, dev, "route", "IP fragments are not reassembled by kdp", errors.FRAGMENT)
            return
        if ev.meta is None:
            ev.meta = self.new_meta(ns)
        if not ev.skip_prerouting:
            pkt = self.nf_hook(ns, "PREROUTING", pkt, ev, in_dev=dev.name)
            if pkt is None:
                return
            ev.pkt = pkt
        dst = pkt.ip.dst
        if ns.is_local(dst) or ns.is_broadcast(dst):
            if dst._ip >> 24 == 127 and dev.kind != "loopback":     # dst.is_loopback
                self.drop(ev, dev, "route", f"{dst} arrived on {dev.name}", errors.MARTIAN)
                return
            if self.tracing:
                self.hop(ev, dev, "route", "input", f"{dst} is local: deliver")
            self.ip_local_deliver(ns, dev, pkt, ev)
            return
        if not ns.ip_forward:
            self.drop(ev, dev, "route", f"{dst} is not local and forwarding is off",
                      errors.FORWARDING_OFF)
            return
        if is_multicast_mac(pkt.eth.dst) and dev.kind != "loopback":
            # ip_forward(): only PACKET_HOST frames are forwarded
            self.drop(ev, dev, "route", f"{dst} arrived in a link-layer broadcast: not forwarded",
                      errors.LINK_BROADCAST)
            return
        nexthop = None
        if ns.lb is not None:
            choice = ns.lb.choose(pkt)
            if choice is not None and self.rec is not None and choice.node is not None:
                self.rec.lb_pick(ns.lb, pkt, choice)
            if choice is not None:
                if choice.reason:
                    self.drop(ev, dev, "underlay", f"cloud load balancer: {choice.detail}", choice.reason)
                    return
                self.hop(ev, dev, "underlay", "balance", f"cloud load balancer: {choice.detail}")
                nexthop = choice.node_ip
        self.ip_forward(ns, dev, pkt, ev, nexthop)

    def ip_local_deliver(self, ns: Namespace, dev: Device, pkt: Packet, ev) -> None:
        pkt = self.nf_hook(ns, "INPUT", pkt, ev, in_dev=dev.name)
        if pkt is None:
            return
        ev.pkt = pkt
        if pkt.l4 is None or not wire.l4_checksum_ok(pkt):
            if pkt.l4 is not None:
                self.drop(ev, dev, "app", f"bad {pkt.proto_name.upper()} checksum", errors.INVALID_CHECKSUM)
                return
        if ns.sockets is None:
            self.delivered(ev, ns, pkt, "delivered to the stack (no sockets modelled)")
            return
        res = ns.sockets.deliver(pkt, self.now)
        if self.rec is not None:
            self.rec.delivery(ns.sockets, pkt, res)
        who = f" ({res.owner})" if res.owner else ""
        self.delivered(ev, ns, pkt, f"{res.detail}{who}")
        for ans in res.answers:
            if isinstance(ans.l4, wire.TCP) and ans.l4.flags & wire.RST:
                self.resets.append(f"{ns.name} (no socket)" if not res.owner else ns.name)
            self.local_out(ns, ans, ev.child(ns.devices["lo"], ans, meta=None, leg=answer_leg(ev.leg)))

    def ip_forward(self, ns: Namespace, dev: Device, pkt: Packet, ev,
                   nexthop: IPv4Address | None = None) -> None:
        if pkt.ip.ttl <= 1:
            self.drop(ev, dev, "route", f"TTL {pkt.ip.ttl} exceeded in transit", errors.TTL_EXCEEDED)
            self.icmp_send(ns, pkt, wire.ICMP_TIME_EXCEEDED, 0, ev, dev)
            return
        rt = ns.routes.lookup(nexthop or pkt.ip.dst)
        if rt is None or rt.kind != "unicast":
            self.drop(ev, dev, "route", f"no route to {pkt.ip.dst}", errors.NO_ROUTE)
            self.icmp_send(ns, pkt, wire.ICMP_DEST_UNREACH, wire.ICMP_NET_UNREACH, ev, dev)
            return
        out = ns.devices[rt.dev]
        if self.tracing:                   # (the text is not built when nobody reads it)
            self.hop(ev, dev, "route", "forward",
                     f"{pkt.ip.dst} via route '{rt}'; TTL {pkt.ip.ttl}->{pkt.ip.ttl - 1}")
        pkt = wire.decrement_ttl(pkt)
        pkt = self.nf_hook(ns, "FORWARD", pkt, ev, in_dev=dev.name, out_dev=out.name)
        if pkt is None:
            return
        self._post_routing(ns, out, rt.via or nexthop or pkt.ip.dst, pkt, ev)

    def _post_routing(self, ns: Namespace, out: Device, nexthop: IPv4Address, pkt: Packet, ev) -> None:
        pkt = self.nf_hook(ns, "POSTROUTING", pkt, ev, out_dev=out.name)
        if pkt is None:
            return
        ev.pkt = pkt
        self.neigh_output(ns, out, nexthop, pkt, ev)

    def local_out(self, ns: Namespace, pkt: Packet, ev) -> None:
        """ip_local_out(): a packet generated by this namespace's own stack."""
        if ev.meta is None:
            ev.meta = self.new_meta(ns)
        rt, out = self._route_output(ns, pkt.ip.dst)
        if out is None:
            self.drop(ev, None, "route", f"no route to {pkt.ip.dst} (sender gets ENETUNREACH)",
                      errors.NO_ROUTE, ns=ns)
            return
        if int(pkt.ip.src) == 0:                      # unbound socket: the route picks the source
            pkt = wire.finalize(replace(pkt, ip=replace(pkt.ip, src=self.route_source(ns, pkt.ip.dst))))
        if self.tracing:
            self.hop(ev, out, "route", "output", f"{pkt.summary()} via "
                     + (f"route '{rt}'" if rt is not None else "local table (lo)"), ns)
        old_dst = pkt.ip.dst
        pkt = self.nf_hook(ns, "OUTPUT", pkt, ev, out_dev=out.name)
        if pkt is None:
            return
        if pkt.ip.dst != old_dst:                     # ip_route_me_harder after DNAT
            rt, out = self._route_output(ns, pkt.ip.dst)
            if out is None:
                self.drop(ev, None, "route", f"no route to {pkt.ip.dst} after NAT", errors.NO_ROUTE, ns=ns)
                return
        nexthop = rt.via if rt is not None and rt.via is not None else pkt.ip.dst
        self._post_routing(ns, out, nexthop, pkt, ev)

    def route_source(self, ns: Namespace, dst: IPv4Address) -> IPv4Address | None:
        """The source address an unbound socket gets for dst (fib_select / prefsrc)."""
        rt, out = self._route_output(ns, dst)
        if out is None:
            return None
        if rt is None:
            return dst
        return rt.src or ns.source_address(out.name, rt.via or dst)

    def _route_output(self, ns: Namespace, dst: IPv4Address):
        if ns.is_local(dst) and not ns.catch_all or dst._ip >> 24 == 127:     # dst.is_loopback
            return None, ns.devices["lo"]
        rt = ns.routes.lookup(dst)
        if rt is None or rt.kind != "unicast":
            return None, None
        return rt, ns.devices[rt.dev]

    def icmp_send(self, ns: Namespace, pkt: Packet, typ: int, code: int, ev, dev: Device | None) -> None:
        """icmp_send(): an ICMP error about pkt, from the address of the device it
        arrived on, sent as a locally generated packet. Never about ICMP errors."""
        if isinstance(pkt.l4, wire.ICMP) and pkt.l4.type in wire.ICMP_ERROR_TYPES:
            return
        # icmp_errors_use_inbound_ifaddr=0: the source is the route's back to the sender
        src = self.route_source(ns, pkt.ip.src)
        if src is None:
            return
        if ns.sockets is not None:        # icmp_sk: unconnected, no DF -> ip_idents
            ident = ns.sockets.idents.select(src, pkt.ip.src, wire.PROTO_ICMP, self.now)
        else:
            ident = keyed_hash(self.seed, "icmp-id", ns.name, str(pkt.ip.src), pkt.ip.ident,
                               seed_as_key=False) & 0xFFFF
        err = icmp_error(pkt, typ, code, ident, src=src)
        if self.tracing:
            self.hop(ev, dev, "route", "icmp", f"sending {wire.icmp_str(err.l4)} to {pkt.ip.src}", ns)
        leg = answer_leg(ev.leg)
        self.local_out(ns, err, ev.child(ns.devices["lo"], err, meta=None, leg=leg))
