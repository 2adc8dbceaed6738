# netfilter.reject: the answers the REJECT target sends, built as the
# kernel's nf_send_unreach()/icmp_send() and nf_send_reset() build them:
# an ICMP destination-unreachable quoting the offending packet (its IP header
# and as much data as fits in 576 bytes), or a TCP RST. Packets only; the
# datapath routes them as locally generated from this namespace.
from __future__ import annotations

from kdp.addr import ZERO_MAC
from kdp.conntrack.keyed import keyed_hash
from kdp.wire import (ACK, ETH_P_IP, ICMP, IPv4, PROTO_ICMP, PROTO_TCP, RST, SYN, FIN, TCP, Ether,
                      ICMP_ERROR_TYPES, Packet, emit_l4, finalize, ip_header, l4_checksum_ok)

REJECT_CODES = {"icmp-net-unreachable": 0, "icmp-host-unreachable": 1,
                "icmp-proto-unreachable": 2, "icmp-port-unreachable": 3,
                "icmp-net-prohibited": 9, "icmp-host-prohibited": 10,
                "icmp-admin-prohibited": 13}
REJECT_NAMES = {n: n for n in [*REJECT_CODES, "tcp-reset"]} | {
    "net-unreach": "icmp-net-unreachable", "host-unreach": "icmp-host-unreachable",
    "proto-unreach": "icmp-proto-unreachable", "port-unreach": "icmp-port-unreachable",
    "net-prohibited": "icmp-net-prohibited", "host-prohibited": "icmp-host-prohibited",
    "admin-prohib": "icmp-admin-prohibited", "tcp-rst": "tcp-reset"}
ICMP_ROOM = 576 - 20 - 8          # bytes of the offending packet an ICMP error quotes
DEFAULT_TTL = 64                  # net.ipv4.ip_default_ttl (ip4_dst_hoplimit)


def build_reject(pkt: Packet, how: str, pc) -> Packet | None:
    """The reply REJECT sends for pkt, or None when the kernel sends none
    (fragment, bad checksum, RST, error about an ICMP error, broadcast...)."""
    ip = pkt.ip
    if ip is None or ip.frag:
        return None
    if how == "tcp-reset":
        return _reset(pkt)
    return _unreach(pkt, REJECT_CODES[how], pc)


def _eth() -> Ether:
    return Ether(ZERO_MAC, ZERO_MAC, ETH_P_IP)


def _reset(pkt: Packet) -> Packet | None:
    oth = pkt.l4
    if not isinstance(oth, TCP) or oth.flags & RST or not l4_checksum_ok(pkt):
        return None
    ip = pkt.ip
    if oth.flags & ACK:
        seq, ack, flags = oth.ack, 0, RST
    else:
        seq = 0
        ack = (oth.seq + bool(oth.flags & SYN) + bool(oth.flags & FIN) + len(oth.payload)) & 0xFFFFFFFF
        flags = RST | ACK
    nip = IPv4(src=ip.dst, dst=ip.src, proto=PROTO_TCP, ttl=DEFAULT_TTL, ident=0, flags=2, tos=0)
    tcp = TCP(oth.dport, oth.sport, seq=seq, ack=ack, flags=flags, window=0)
    return finalize(Packet(_eth(), ip=nip, l4=tcp))


def _unreach(pkt: Packet, code: int, pc) -> Packet | None:
    ip, l4 = pkt.ip, pkt.l4
    if l4 is not None and not l4_checksum_ok(pkt):
        return None
    if isinstance(l4, ICMP) and (l4.type > 18 or l4.type in ICMP_ERROR_TYPES):
        return None                       # never an error about an error
    info = pc.nf.info
    if int(ip.src) == 0 or ip.src.is_multicast or ip.dst.is_multicast or \
            info.addr_type(ip.dst, None) in ("BROADCAST", "MULTICAST") or \
            info.addr_type(ip.src, None) in ("BROADCAST", "MULTICAST"):
        return None
    if info.is_local(ip.dst):
        src = ip.dst
    elif pc.in_dev is None:
        src = ip.src                      # locally generated: the route back is local
    else:
        src = info.source_address(pc.in_dev, ip.src) or ip.dst
    body = emit_l4(l4) if l4 is not None else pkt.payload
    quoted = (ip_header(ip, len(body)) + body)[:ICMP_ROOM]
    # no DF: ip_select_ident() hashes an ID, from the namespace's ip_idents (net.ipident)
    sockets = getattr(info, "sockets", None)
    if sockets is not None:
        ident = sockets.idents.select(src, ip.src, PROTO_ICMP, pc.now)
    else:                                 # a Netfilter without a namespace (tests, svcref)
        ident = (keyed_hash(pc.nf.seed, "reject-icmp-id", info.name, str(ip.src), str(ip.dst), ip.ident)
                 & 0xFFFF) or 1
    nip = IPv4(src=src, dst=ip.src, proto=PROTO_ICMP, ttl=DEFAULT_TTL, ident=ident, flags=0,
               tos=(ip.tos & 0x1E) | 0xC0)
    return finalize(Packet(_eth(), ip=nip, l4=ICMP(3, code, payload=quoted)))
