# Helpers for the netfilter unit tests: frames built with Scapy and parsed by
# kdp.wire, rulesets from a few rule lines, and hook walks through a namespace.
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from kdp import wire
from kdp.conntrack import ConntrackTable, Timeouts
from kdp.netfilter import (TABLE_CHAINS, TARGETS, HookState, Netfilter, SkbMeta, StaticNamespaceInfo,
                           parse_iptables_save)

FIXTURES = Path(__file__).parent / "fixtures"
POD_MAC, GW_MAC = "0a:58:0a:f4:00:05", "0a:58:0a:f4:00:01"


def info(name: str = "node/a") -> StaticNamespaceInfo:
    return StaticNamespaceInfo(name, {
        "cbr0": [IPv4Interface("10.244.0.1/24")],
        "eth0": [IPv4Interface("10.224.0.4/16")],
        "lo": [IPv4Interface("127.0.0.1/8")],
    })


def tcp(src, dst, sport=40000, dport=80, flags="S", payload=b"", **ip) -> wire.Packet:
    return wire.parse(bytes(Ether(src=POD_MAC, dst=GW_MAC) / IP(src=src, dst=dst, **ip) /
                            TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=0
                                if "A" not in flags else 5000) / payload))


def udp(src, dst, sport=5000, dport=53, payload=b"q", **ip) -> wire.Packet:
    return wire.parse(bytes(Ether(src=POD_MAC, dst=GW_MAC) / IP(src=src, dst=dst, **ip) /
                            UDP(sport=sport, dport=dport) / payload))


def icmp(src, dst, type=8, code=0, id=7, seq=1, payload=b"ping") -> wire.Packet:
    return wire.parse(bytes(Ether(src=POD_MAC, dst=GW_MAC) / IP(src=src, dst=dst) /
                            ICMP(type=type, code=code, id=id, seq=seq) / payload))


def icmp_error(src, dst, about: wire.Packet, type=3, code=3) -> wire.Packet:
    """An ICMP error from src to dst quoting `about` (IP header + 8 bytes)."""
    quoted = wire.emit(about)[14:14 + about.ip.header_len + 8]
    return wire.parse(bytes(Ether() / IP(src=src, dst=dst) / ICMP(type=type, code=code) /
                            quoted))


def reply_to(p: wire.Packet, flags="SA", payload=b"") -> wire.Packet:
    """The answer a peer sends to packet p (addresses and ports swapped)."""
    ip, l4 = p.ip, p.l4
    if isinstance(l4, wire.TCP):
        return tcp(str(ip.dst), str(ip.src), l4.dport, l4.sport, flags, payload)
    if isinstance(l4, wire.UDP):
        return udp(str(ip.dst), str(ip.src), l4.dport, l4.sport, payload or b"r")
    return icmp(str(ip.dst), str(ip.src), type=0, id=l4.ident, seq=l4.seq)


def ruleset_text(**tables: list[str]) -> str:
    """iptables-restore text: one '*table' per keyword, user chains declared."""
    out = []
    for name, lines in tables.items():
        out.append(f"*{name}")
        chains: list[str] = []
        for line in lines:
            parts = line.split()
            for flag in ("-A", "-j", "-g"):
                if flag in parts:
                    c = parts[parts.index(flag) + 1]
                    if flag != "-A" and (c in TARGETS or c in ("ACCEPT", "DROP", "RETURN")):
                        continue
                    if c not in TABLE_CHAINS[name] and c not in chains:
                        chains.append(c)
        out += [f":{c} - [0:0]" for c in chains]
        out += lines
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def make_nf(seed: int = 0, max_entries: int = 1024, name: str = "node/a", **tables) -> Netfilter:
    rs = parse_iptables_save(ruleset_text(**tables), "test")
    return Netfilter(rs, ConntrackTable(max_entries, Timeouts.kube_proxy()), info(name), seed=seed)


def hook(nf: Netfilter, name: str, pkt, meta=None, now=1.0, in_dev=None, out_dev=None,
         physin=None, physout=None):
    meta = meta if meta is not None else SkbMeta()
    defaults = {"PREROUTING": ("cbr0", None), "INPUT": ("cbr0", None),
                "FORWARD": ("cbr0", "eth0"), "OUTPUT": (None, "eth0"),
                "POSTROUTING": (None, "eth0")}[name]
    hs = HookState(name, pkt, in_dev or defaults[0], out_dev or defaults[1], physin, physout, now)
    return nf.hook(hs, meta), meta


def forward(nf: Netfilter, pkt, now=1.0, in_dev="cbr0", out_dev="eth0", meta=None):
    """PREROUTING -> FORWARD -> POSTROUTING in one namespace; stops at a drop.
    Returns (results, meta)."""
    meta = meta if meta is not None else SkbMeta()
    results = []
    for h in ("PREROUTING", "FORWARD", "POSTROUTING"):
        r, _ = hook(nf, h, pkt, meta, now, in_dev=in_dev if h != "POSTROUTING" else None,
                    out_dev=out_dev if h != "PREROUTING" else None)
        results.append(r)
        if r.verdict != "ACCEPT":
            break
        pkt = r.packet
    return results, meta


def deliver(nf: Netfilter, pkt, now=1.0, in_dev="cbr0", meta=None):
    """PREROUTING -> INPUT (to a local socket)."""
    meta = meta if meta is not None else SkbMeta()
    r1, _ = hook(nf, "PREROUTING", pkt, meta, now, in_dev=in_dev)
    if r1.verdict != "ACCEPT":
        return [r1], meta
    r2, _ = hook(nf, "INPUT", r1.packet, meta, now, in_dev=in_dev)
    return [r1, r2], meta


def send(nf: Netfilter, pkt, now=1.0, out_dev="eth0", meta=None):
    """OUTPUT -> POSTROUTING (locally generated)."""
    meta = meta if meta is not None else SkbMeta()
    r1, _ = hook(nf, "OUTPUT", pkt, meta, now, out_dev=out_dev)
    if r1.verdict != "ACCEPT":
        return [r1], meta
    r2, _ = hook(nf, "POSTROUTING", r1.packet, meta, now, out_dev=out_dev)
    return [r1, r2], meta


def rules_hit(result, table=None) -> list[tuple[str, str, int]]:
    return [(t.table, t.chain, t.rule_number) for t in result.trace
            if t.kind == "rule" and t.outcome != "no match" and (table is None or t.table == table)]


def checksums_ok(p: wire.Packet) -> bool:
    return wire.ip_checksum_ok(p) and wire.l4_checksum_ok(p)


A = IPv4Address


def with_ports(p: wire.Packet, sport: int | None = None, dport: int | None = None) -> wire.Packet:
    """A copy of p with other ports and correct checksums (cheaper than Scapy)."""
    from dataclasses import replace
    l4 = replace(p.l4, sport=p.l4.sport if sport is None else sport,
                 dport=p.l4.dport if dport is None else dport)
    return wire.finalize(replace(p, l4=l4))
