# Helpers for the conntrack unit tests: frames via Scapy -> kdp.wire, and a
# "pass a packet through conntrack" that confirms new entries as the
# POSTROUTING/INPUT confirm hook would.
from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from kdp import wire
from kdp.conntrack import ConntrackTable, Timeouts, conntrack_in

A, B = "10.244.0.5", "10.244.1.6"


def tcp(src=A, dst=B, sport=40000, dport=80, flags="S", seq=1000, ack=0) -> wire.Packet:
    return wire.parse(bytes(Ether() / IP(src=src, dst=dst) /
                            TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)))


def udp(src=A, dst=B, sport=5000, dport=53) -> wire.Packet:
    return wire.parse(bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / b"x"))


def icmp(src=A, dst=B, type=8, id=7, seq=1) -> wire.Packet:
    return wire.parse(bytes(Ether() / IP(src=src, dst=dst) / ICMP(type=type, id=id, seq=seq)))


def table(max_entries=1024, timeouts=None, **kw) -> ConntrackTable:
    return ConntrackTable(max_entries, timeouts or Timeouts(), **kw)


def track(t: ConntrackTable, pkt: wire.Packet, now: float = 0.0, confirm: bool = True):
    """conntrack_in at PREROUTING, then confirm (as the last hook would)."""
    r = conntrack_in(t, pkt, now, prerouting=True)
    if confirm and r.entry is not None and r.new:
        assert t.confirm(r.entry, now)
    return r


def tcp_session(t, now=0.0, sport=40000):
    """SYN, SYN-ACK, ACK: returns the results."""
    return [track(t, tcp(A, B, sport, 80, "S"), now),
            track(t, tcp(B, A, 80, sport, "SA"), now + 0.01),
            track(t, tcp(A, B, sport, 80, "A"), now + 0.02)]
