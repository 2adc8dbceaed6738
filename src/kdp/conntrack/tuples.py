# conntrack.tuples: the conntrack tuple (proto, src, dst, sport, dport), its
# inversion, and extracting tuples from packets — including the tuple of the
# packet quoted inside an ICMP error. No table, no state.
from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from kdp.frozen import fast_init
from kdp.wire import (ICMP, ICMP_ERROR_TYPES, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP, SCTP,
                      TCP, UDP, Packet)

PROTO_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_SCTP: "sctp"}
PORT_PROTOS = (PROTO_TCP, PROTO_UDP, 132, 33, 136)   # tcp udp sctp dccp udplite

# ICMP query types and their answers (nf_conntrack_proto_icmp invmap).
ICMP_INVERSE = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
ICMP_VALID_NEW = frozenset({8, 13, 15, 17})          # requests may open an entry


@fast_init
@dataclass(frozen=True, slots=True)
class Tuple:
    """One direction of a connection. TCP/UDP: ports. ICMP: `sport` is the
    echo id and `dport` is type<<8|code (the kernel's dst.u.icmp). Other
    protocols: both 0."""

    proto: int
    src: IPv4Address
    dst: IPv4Address
    sport: int = 0
    dport: int = 0

    # hashed and compared on the addresses' ints (ipaddress's own slot `_ip`):
    # a tuple is a dict key in every conntrack lookup, and IPv4Address hashes
    # through hex(). Equal tuples still hash alike.
    def __hash__(self) -> int:
        return hash((self.proto, self.src._ip, self.dst._ip, self.sport, self.dport))

    def __eq__(self, other) -> bool:
        if other.__class__ is not Tuple:
            return NotImplemented
        return (self.src._ip == other.src._ip and self.dst._ip == other.dst._ip
                and self.sport == other.sport and self.dport == other.dport
                and self.proto == other.proto)

    @property
    def icmp_type(self) -> int:
        return self.dport >> 8

    @property
    def icmp_code(self) -> int:
        return self.dport & 0xFF

    @property
    def proto_name(self) -> str:
        return PROTO_NAMES.get(self.proto, str(self.proto))

    def invert(self) -> "Tuple | None":
        """nf_ct_invert_tuple(): None when the protocol cannot invert it
        (an ICMP type that is not a query)."""
        if self.proto == PROTO_ICMP:
            inv = ICMP_INVERSE.get(self.icmp_type)
            if inv is None:
                return None
            return Tuple(self.proto, self.dst, self.src, self.sport, (inv << 8) | self.icmp_code)
        return Tuple(self.proto, self.dst, self.src, self.dport, self.sport)

    def endpoints(self) -> str:
        if self.proto in PORT_PROTOS:
            return f"{self.src}:{self.sport}->{self.dst}:{self.dport}"
        if self.proto == PROTO_ICMP:
            return f"{self.src}->{self.dst} type={self.icmp_type} code={self.icmp_code} id={self.sport}"
        return f"{self.src}->{self.dst}"

    def __str__(self) -> str:
        return f"{self.proto_name} {self.endpoints()}"

    def conntrack_fields(self) -> str:
        """The `src=.. dst=.. sport=.. dport=..` part of `conntrack -L`."""
        s = f"src={self.src} dst={self.dst}"
        if self.proto in PORT_PROTOS:
            return f"{s} sport={self.sport} dport={self.dport}"
        if self.proto == PROTO_ICMP:
            return f"{s} type={self.icmp_type} code={self.icmp_code} id={self.sport}"
        return s

    def to_dict(self) -> dict:
        return {"proto": self.proto, "src": str(self.src), "dst": str(self.dst),
                "sport": self.sport, "dport": self.dport}

    @classmethod
    def from_dict(cls, d: dict) -> "Tuple":
        return cls(int(d["proto"]), IPv4Address(d["src"]), IPv4Address(d["dst"]),
                   int(d["sport"]), int(d["dport"]))


def is_icmp_error(pkt: Packet) -> bool:
    return isinstance(pkt.l4, ICMP) and pkt.l4.type in ICMP_ERROR_TYPES


def packet_tuple(pkt: Packet) -> Tuple | None:
    """The tuple of the packet as it travels (nf_ct_get_tuple). None for
    non-IPv4 frames and for fragments/truncated L4 headers the wire layer did
    not parse (the kernel would reassemble first)."""
    ip = pkt.ip
    if ip is None:
        return None
    l4 = pkt.l4
    if isinstance(l4, (TCP, UDP, SCTP)):
        return Tuple(ip.proto, ip.src, ip.dst, l4.sport, l4.dport)
    if isinstance(l4, ICMP):
        return Tuple(PROTO_ICMP, ip.src, ip.dst, l4.ident, (l4.type << 8) | l4.code)
    if ip.proto in (PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_SCTP) or ip.frag or ip.flags & 1:
        return None
    return Tuple(ip.proto, ip.src, ip.dst)


@fast_init
@dataclass(frozen=True, slots=True)
class Quoted:
    """The packet quoted in an ICMP error: where its headers sit in the ICMP
    payload, and its tuple as it travelled."""

    tuple: Tuple
    ihl: int
    l4_len: int          # bytes of L4 header/data quoted


def quoted_packet(icmp: ICMP) -> Quoted | None:
    """Parse the IP header + L4 start quoted in an ICMP error (icmp_error_message).
    None when too short or not something conntrack could have tracked."""
    b = icmp.payload
    if len(b) < 20 or b[0] >> 4 != 4:
        return None
    ihl = (b[0] & 0x0F) * 4
    if ihl < 20 or len(b) < ihl:
        return None
    proto = b[9]
    src, dst = IPv4Address(b[12:16]), IPv4Address(b[16:20])
    l4 = b[ihl:]
    if proto in PORT_PROTOS:
        if len(l4) < 4:
            return None
        sport, dport = struct.unpack("!HH", l4[:4])
        return Quoted(Tuple(proto, src, dst, sport, dport), ihl, len(l4))
    if proto == PROTO_ICMP:
        if len(l4) < 8:
            return None
        typ, code = l4[0], l4[1]
        ident = struct.unpack("!H", l4[4:6])[0]
        return Quoted(Tuple(proto, src, dst, ident, (typ << 8) | code), ihl, len(l4))
    return Quoted(Tuple(proto, src, dst), ihl, len(l4))
