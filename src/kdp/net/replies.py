# net.replies: what the socket layer hands back to the datapath, and the
# answers the kernel builds without a socket. Delivery records what the socket
# layer did with a locally delivered packet (and the packets it answers with);
# tcp_reset() is tcp_v4_send_reset(), icmp_error() is icmp_send(). Packets are
# built at the IP layer with a blank Ethernet header (BLANK_ETH); the datapath
# routes them out. Holds no socket state and draws nothing keyed: callers pass
# the IP ID.
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from .. import wire
from ..wire import ACK, FIN, ICMP, IPv4, Packet, RST, SYN, TCP

BLANK_ETH = wire.Ether("00:00:00:00:00:00", "00:00:00:00:00:00", wire.ETH_P_IP)


@dataclass
class Delivery:
    """What the socket layer did with a locally delivered packet."""

    action: str                     # accepted | answered | consumed | closed
    detail: str
    answers: list[Packet] = field(default_factory=list)
    owner: str | None = None
    stateless: bool = False         # nothing in the table changed and nothing keyed was drawn
    # the one answer is a template of the request and only its IP ID was drawn:
    # (kind, ip_idents, bucket); nothing else in the table changed. Kinds:
    # ECHO_UDP, ECHO_ICMP (the request mirrored: UDP echo app, ICMP echo reply),
    # ICMP_ERROR (icmp_send() quoting the request as delivered)
    template: tuple | None = None
    # what a new connection's handshake did here, for the flow cache's socket steps
    # (kdp.datapath.megaflow): "syn" (a listener answered SYN-ACK: a request sock),
    # "rst" (an RST took that request sock away), "closed" (no socket: RST sent),
    # "live" (kdp run's capture-owned socket took the SYN-ACK); None: anything else
    event: str | None = None


ECHO_UDP, ECHO_ICMP, ICMP_ERROR = 1, 2, 3   # Delivery.template kinds (kdp.fast.contract's OP_ANSWER)
QUOTE_MAX = 576 - 28                         # bytes of the offending datagram an ICMP error quotes


def tcp_reset(ip: IPv4, l4: TCP) -> Packet:
    """tcp_v4_send_reset(): RST for a segment that found no socket."""
    if l4.flags & ACK:
        seg = TCP(l4.dport, l4.sport, l4.ack, 0, RST, 0)
    else:
        seg_len = len(l4.payload) + (1 if l4.flags & SYN else 0) + (1 if l4.flags & FIN else 0)
        seg = TCP(l4.dport, l4.sport, 0, (l4.seq + seg_len) & 0xFFFFFFFF, RST | ACK, 0)
    return wire.finalize(Packet(BLANK_ETH, ip=IPv4(ip.dst, ip.src, wire.PROTO_TCP, 64, 0, 2), l4=seg))


def icmp_error(pkt: Packet, typ: int, code: int, ident: int, src: IPv4Address | None = None) -> Packet:
    """icmp_send(): quote the offending IP header and the first 8 bytes of its
    payload (the kernel quotes up to 576 bytes in total; we quote what fits)."""
    ip = pkt.ip
    l4_bytes = wire.emit_l4(pkt.l4) if pkt.l4 is not None else pkt.payload
    quoted = wire.ip_header(ip, len(l4_bytes)) + l4_bytes
    quoted = quoted[:QUOTE_MAX]
    out = Packet(BLANK_ETH, ip=IPv4(src or ip.dst, ip.src, wire.PROTO_ICMP, 64, ident, 0, tos=0xC0),
                 l4=ICMP(typ, code, 0, 0, quoted))
    return wire.finalize(out)
