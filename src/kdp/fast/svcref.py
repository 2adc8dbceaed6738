# fast.svcref: the reference answer the compiled service matcher must equal —
# the first packet of a new flow walked through a node's netfilter (kdp.netfilter,
# the authority) exactly as the datapath walks it: nat PREROUTING (arriving) or
# OUTPUT (+ filter OUTPUT, locally generated), then filter FORWARD or INPUT by
# where the possibly DNATed destination lives. Reads the DNAT binding and the
# mark off the conntrack entry and the skb; the conntrack table is emptied
# afterwards so every call sees a new connection (the `recent` lists stay).
# Used by the equivalence tests and by `kdp bench rules` (impl "reference").
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from kdp import wire
from kdp.conntrack import ConntrackTable
from kdp.netfilter import HookState, Netfilter, SkbMeta, parse_iptables_save

from .svcmatch import Decision


@dataclass
class NodeInfo:
    """NamespaceInfo of a node namespace with these addresses (the same
    classification as kdp.net.namespace.Namespace.addr_type)."""

    name: str
    addresses: list[IPv4Interface]

    def is_local(self, ip: IPv4Address) -> bool:
        return ip.is_loopback or any(a.ip == ip for a in self.addresses)

    def addr_type(self, ip: IPv4Address, dev: str | None = None) -> str:
        if ip.is_multicast:
            return "MULTICAST"
        if int(ip) == 0:
            return "UNSPEC"
        if ip == IPv4Address("255.255.255.255") or any(
                a.network.prefixlen < 31 and ip == a.network.broadcast_address
                for a in self.addresses):
            return "BROADCAST"
        return "LOCAL" if self.is_local(ip) else "UNICAST"

    def source_address(self, out_dev, dst):
        return self.addresses[-1].ip if self.addresses else None


def reference_netfilter(ruleset_text: str, ns_name: str, addresses: list[IPv4Interface],
                        seed: int = 0, *, trace: bool = True) -> Netfilter:
    """A node's Netfilter for reference decisions (its own conntrack table)."""
    return Netfilter(parse_iptables_save(ruleset_text, source=ns_name), ConntrackTable(0),
                     info=NodeInfo(ns_name, list(addresses)), seed=seed, trace_misses=trace)


def _first_packet(proto: int, src: int, dst: int, sport: int, dport: int) -> wire.Packet:
    ip = wire.IPv4(IPv4Address(src), IPv4Address(dst), proto)
    if proto == 6:
        l4 = wire.TCP(sport, dport, flags=wire.SYN)
    elif proto == 17:
        l4 = wire.UDP(sport, dport, payload=b"q")
    elif proto == 1:
        l4 = wire.ICMP(dport >> 8, dport & 0xFF, rest=sport << 16)
    else:
        l4 = None
    eth = wire.Ether("02:00:00:00:00:02", "02:00:00:00:00:01", wire.ETH_P_IP)
    return wire.finalize(wire.Packet(eth, ip=ip, l4=l4))


def reference_decision(nf: Netfilter, proto: int, src: int, dst: int, sport: int, dport: int,
                       now: float, in_local: bool = False) -> Decision:
    """What the reference walk does with the first packet of this flow."""
    pkt = _first_packet(proto, src, dst, sport, dport)
    meta = SkbMeta()
    if in_local:
        res = nf.hook(HookState("OUTPUT", pkt, out_dev="eth0", now=now), meta)
    else:
        res = nf.hook(HookState("PREROUTING", pkt, in_dev="eth0", now=now), meta)
    if nf.trace_misses:
        rules = sum(1 for t in res.trace if t.table == "nat" and t.kind == "rule")
    else:
        rules = res.rules_evaluated
    ct = meta.ct
    # a DNAT rule ran (its binding may leave the tuple as it was: DNAT to itself)
    dnat = ct is not None and any(t.table == "nat" and t.kind == "rule" and "DNAT" in t.outcome
                                  for t in res.trace)
    mark = bool(meta.mark & 0x4000)
    verdict = None
    if res.verdict == "DROP":
        verdict = "reject" if res.rejected else "drop"
    else:
        after = res.packet
        local = nf.info.addr_type(after.ip.dst) == "LOCAL"
        if in_local and local:
            res2 = nf.hook(HookState("INPUT", after, in_dev="lo", now=now), meta)
        elif in_local:
            res2 = None
        else:
            hook = "INPUT" if local else "FORWARD"
            res2 = nf.hook(HookState(hook, after, in_dev="eth0",
                                     out_dev=None if local else "eth0", now=now), meta)
        if res2 is not None and res2.verdict == "DROP":
            verdict = "reject" if res2.rejected else "drop"
    nf.conntrack.flush()
    if verdict is None:
        verdict = "dnat" if dnat else "none"
    ep = ct.reply.src if verdict == "dnat" else None
    port = ct.reply.sport if verdict == "dnat" else None
    return Decision(verdict, ep, port, mark, rules, None)
