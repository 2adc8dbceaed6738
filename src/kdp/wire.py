# wire: parse an Ethernet frame once into a small frozen representation
# (Ethernet, ARP, IPv4, TCP/UDP/ICMP/SCTP) and emit it back to bytes. Checksums are
# carried as fields: rewrites update them incrementally, as the kernel does, and
# locally built packets get full checksums. No Scapy here (see kdp.io).
from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from .checksum import crc32c, csum_replace, inet_checksum
from .addr import mac_from_bytes, mac_to_bytes
from .errors import KdpError
from .frozen import fast_init

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_SCTP = 1, 6, 17, 132
PROTO_NAMES = {PROTO_ICMP: "icmp", PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_SCTP: "sctp"}
# The ICMP types that are errors (unreachable, source quench, redirect, time exceeded, parameter
# problem): declared here only; conntrack, netfilter and the fast path's contract import this one.
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})

# TCP flag bits
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# SCTP chunk types (RFC 9260 section 3.2) and the T bit of ABORT / SHUTDOWN COMPLETE
SCTP_CHUNK_NAMES = {0: "DATA", 1: "INIT", 2: "INIT_ACK", 3: "SACK", 4: "HEARTBEAT",
                    5: "HEARTBEAT_ACK", 6: "ABORT", 7: "SHUTDOWN", 8: "SHUTDOWN_ACK", 9: "ERROR",
                    10: "COOKIE_ECHO", 11: "COOKIE_ACK", 12: "ECN_ECNE", 13: "ECN_CWR",
                    14: "SHUTDOWN_COMPLETE", 15: "AUTH", 64: "I_DATA", 128: "ASCONF_ACK",
                    130: "RE_CONFIG", 132: "PAD", 192: "FORWARD_TSN", 193: "ASCONF",
                    194: "I_FORWARD_TSN"}
SCTP_DATA, SCTP_INIT, SCTP_INIT_ACK, SCTP_ABORT = 0, 1, 2, 6
SCTP_FLAG_T = 0x01

# ICMP types/codes used by the stack
ICMP_ECHOREPLY, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
ICMP_NET_UNREACH, ICMP_HOST_UNREACH, ICMP_PORT_UNREACH = 0, 1, 3


class MalformedFrame(KdpError):
    """The bytes are not a frame kdp can parse (too short, bad header length...)."""


@fast_init
@dataclass(frozen=True, slots=True)
class Ether:
    dst: str
    src: str
    type: int


@fast_init
@dataclass(frozen=True, slots=True)
class ARP:
    op: int                 # 1 request, 2 reply
    sha: str
    spa: IPv4Address
    tha: str
    tpa: IPv4Address


@fast_init
@dataclass(frozen=True, slots=True)
class IPv4:
    src: IPv4Address
    dst: IPv4Address
    proto: int
    ttl: int = 64
    ident: int = 0
    flags: int = 2          # DF, as Linux sets for TCP and most UDP
    frag: int = 0
    tos: int = 0
    checksum: int = 0
    options: bytes = b""

    @property
    def header_len(self) -> int:
        return 20 + len(self.options)


@fast_init
@dataclass(frozen=True, slots=True)
class TCP:
    sport: int
    dport: int
    seq: int = 0
    ack: int = 0
    flags: int = SYN
    window: int = 64240
    checksum: int = 0
    urg: int = 0
    options: bytes = b""
    payload: bytes = b""


@fast_init
@dataclass(frozen=True, slots=True)
class UDP:
    sport: int
    dport: int
    checksum: int = 0
    payload: bytes = b""


@fast_init
@dataclass(frozen=True, slots=True)
class ICMP:
    type: int
    code: int = 0
    checksum: int = 0
    rest: int = 0           # id<<16|seq for echo, 0/next-hop MTU for errors
    payload: bytes = b""

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def seq(self) -> int:
        return self.rest & 0xFFFF


@fast_init
@dataclass(frozen=True, slots=True)
class SCTP:
    """The SCTP common header and its chunks (raw bytes, see sctp_chunks). `checksum`
    is the CRC32c as a number (the wire carries it little-endian)."""

    sport: int
    dport: int
    vtag: int = 0
    checksum: int = 0
    chunks: bytes = b""


@fast_init
@dataclass(frozen=True, slots=True)
class Chunk:
    type: int
    flags: int
    length: int             # the chunk length field (header included, padding not)
    value: bytes

    @property
    def name(self) -> str:
        return SCTP_CHUNK_NAMES.get(self.type, f"chunk-{self.type}")


def sctp_chunks(l4: SCTP) -> list[Chunk]:
    """The chunks of an SCTP packet in order (as for_each_sctp_chunk walks them: a
    zero-length chunk ends the walk; conntrack calls such a packet INVALID)."""
    out, b, off = [], l4.chunks, 0
    while off + 4 <= len(b):
        typ, flags, length = struct.unpack("!BBH", b[off:off + 4])
        out.append(Chunk(typ, flags, length, bytes(b[off + 4:off + max(length, 4)])))
        if length < 4:
            break
        off += (length + 3) & ~3
    return out


def sctp_chunk(typ: int, value: bytes = b"", flags: int = 0) -> bytes:
    """One chunk's bytes, padded to 4."""
    raw = struct.pack("!BBH", typ, flags, 4 + len(value)) + value
    return raw + b"\0" * (-len(raw) % 4)


def sctp_init(init_tag: int, tsn: int, ack: bool = False) -> bytes:
    """An INIT (or INIT ACK) chunk: initiate tag, a_rwnd 106496, 10 streams each way,
    the initial TSN (INIT ACK: with a state cookie parameter)."""
    value = struct.pack("!IIHHI", init_tag, 106496, 10, 10, tsn)
    if ack:
        value += struct.pack("!HH", 7, 4 + 16) + struct.pack("!IIII", init_tag, tsn, 0, 0)
    return sctp_chunk(SCTP_INIT_ACK if ack else SCTP_INIT, value)


def sctp_chunk_str(l4: SCTP) -> str:
    return ",".join(c.name for c in sctp_chunks(l4)) or "no chunks"


L4 = TCP | UDP | ICMP | SCTP


@fast_init
@dataclass(frozen=True, slots=True)
class Packet:
    """A parsed frame. For unknown ethertypes/protocols the rest stays in `payload`."""

    eth: Ether
    arp: ARP | None = None
    ip: IPv4 | None = None
    l4: TCP | UDP | ICMP | SCTP | None = None
    payload: bytes = b""

    # --- convenient views -------------------------------------------------
    @property
    def proto_name(self) -> str:
        if self.arp is not None:
            return "arp"
        if self.ip is None:
            return f"ether-0x{self.eth.type:04x}"
        return PROTO_NAMES.get(self.ip.proto, str(self.ip.proto))

    @property
    def ports(self) -> tuple[int | None, int | None]:
        if isinstance(self.l4, (TCP, UDP, SCTP)):
            return self.l4.sport, self.l4.dport
        return None, None

    def summary(self) -> str:
        if self.arp is not None:
            a = self.arp
            if a.op == 1:
                return f"ARP who-has {a.tpa} tell {a.spa}"
            return f"ARP {a.spa} is-at {a.sha}"
        if self.ip is None:
            return f"{self.eth.src} > {self.eth.dst} type 0x{self.eth.type:04x}"
        ip, l4 = self.ip, self.l4
        if isinstance(l4, TCP):
            return (f"TCP {ip.src}:{l4.sport} > {ip.dst}:{l4.dport} "
                    f"[{tcp_flag_str(l4.flags)}] ttl {ip.ttl}")
        if isinstance(l4, UDP):
            return f"UDP {ip.src}:{l4.sport} > {ip.dst}:{l4.dport} len {len(l4.payload)} ttl {ip.ttl}"
        if isinstance(l4, ICMP):
            return f"ICMP {ip.src} > {ip.dst} {icmp_str(l4)} ttl {ip.ttl}"
        if isinstance(l4, SCTP):
            return (f"SCTP {ip.src}:{l4.sport} > {ip.dst}:{l4.dport} [{sctp_chunk_str(l4)}] "
                    f"vtag {l4.vtag:#x} ttl {ip.ttl}")
        return f"IP {ip.src} > {ip.dst} proto {ip.proto} ttl {ip.ttl}"


def tcp_flag_str(flags: int) -> str:
    names = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"))
    return "".join(n for bit, n in names if flags & bit) or "none"


def icmp_str(icmp: ICMP) -> str:
    names = {(0, None): "echo reply", (8, None): "echo request",
             (3, 0): "net unreachable", (3, 1): "host unreachable",
             (3, 3): "port unreachable", (3, 13): "admin prohibited",
             (11, 0): "time exceeded in-transit"}
    return names.get((icmp.type, None)) or names.get((icmp.type, icmp.code)) or \
        f"type {icmp.type} code {icmp.code}"


# --- parse ----------------------------------------------------------------

def parse(raw: bytes) -> Packet:
    if len(raw) < 14:
        raise MalformedFrame(f"frame of {len(raw)} bytes is shorter than an Ethernet header")
    eth = Ether(mac_from_bytes(raw[0:6]), mac_from_bytes(raw[6:12]), (raw[12] << 8) | raw[13])
    body = raw[14:]
    if eth.type == ETH_P_ARP:
        return Packet(eth, arp=_parse_arp(body))
    if eth.type != ETH_P_IP:
        return Packet(eth, payload=bytes(body))
    ip, l4bytes = _parse_ipv4(body)
    if ip.frag or ip.flags & 1:
        return Packet(eth, ip=ip, payload=l4bytes)
    l4 = _parse_l4(ip.proto, l4bytes)
    if l4 is None:
        return Packet(eth, ip=ip, payload=l4bytes)
    return Packet(eth, ip=ip, l4=l4)


def _parse_arp(b: bytes) -> ARP:
    if len(b) < 28:
        raise MalformedFrame("ARP payload shorter than 28 bytes")
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", b[:8])
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
        raise MalformedFrame("ARP for other than Ethernet/IPv4")
    return ARP(op, mac_from_bytes(b[8:14]), IPv4Address(b[14:18]),
               mac_from_bytes(b[18:24]), IPv4Address(b[24:28]))


def _parse_ipv4(b: bytes) -> tuple[IPv4, bytes]:
    if len(b) < 20:
        raise MalformedFrame("IPv4 header shorter than 20 bytes")
    vihl, tos, total, ident, ff, ttl, proto, csum = struct.unpack("!BBHHHBBH", b[:12])
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4:
        raise MalformedFrame(f"IP version {vihl >> 4} is not 4")
    if ihl < 20 or len(b) < ihl or total < ihl or total > len(b):
        raise MalformedFrame(f"bad IPv4 lengths (ihl {ihl}, total {total}, have {len(b)})")
    ip = IPv4(IPv4Address(b[12:16]), IPv4Address(b[16:20]), proto, ttl, ident,
              ff >> 13, ff & 0x1FFF, tos, csum, bytes(b[20:ihl]))
    return ip, bytes(b[ihl:total])   # bytes past total length are link padding


def _parse_l4(proto: int, b: bytes) -> L4 | None:
    if proto == PROTO_TCP and len(b) >= 20:
        sport, dport, seq, ack, offres, flags, win, csum, urg = struct.unpack("!HHIIBBHHH", b[:20])
        doff = (offres >> 4) * 4
        if doff < 20 or doff > len(b):
            return None
        return TCP(sport, dport, seq, ack, flags, win, csum, urg, bytes(b[20:doff]), bytes(b[doff:]))
    if proto == PROTO_UDP and len(b) >= 8:
        sport, dport, _length, csum = struct.unpack("!HHHH", b[:8])
        return UDP(sport, dport, csum, bytes(b[8:]))
    if proto == PROTO_ICMP and len(b) >= 8:
        typ, code, csum, rest = struct.unpack("!BBHI", b[:8])
        return ICMP(typ, code, csum, rest, bytes(b[8:]))
    if proto == PROTO_SCTP and len(b) >= 12:
        sport, dport, vtag = struct.unpack("!HHI", b[:8])
        return SCTP(sport, dport, vtag, struct.unpack("<I", b[8:12])[0], bytes(b[12:]))
    return None


# --- emit -----------------------------------------------------------------

def emit(pkt: Packet) -> bytes:
    head = mac_to_bytes(pkt.eth.dst) + mac_to_bytes(pkt.eth.src) + struct.pack("!H", pkt.eth.type)
    if pkt.arp is not None:
        a = pkt.arp
        return head + struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, a.op) + mac_to_bytes(a.sha) + \
            a.spa.packed + mac_to_bytes(a.tha) + a.tpa.packed
    if pkt.ip is None:
        return head + pkt.payload
    l4 = emit_l4(pkt.l4) if pkt.l4 is not None else pkt.payload
    return head + ip_header(pkt.ip, len(l4)) + l4


def ip_header(ip: IPv4, l4_len: int, checksum: int | None = None) -> bytes:
    ihl = ip.header_len
    csum = ip.checksum if checksum is None else checksum
    return struct.pack("!BBHHHBBH", 0x40 | (ihl // 4), ip.tos, ihl + l4_len, ip.ident,
                       (ip.flags << 13) | ip.frag, ip.ttl, ip.proto, csum) + \
        ip.src.packed + ip.dst.packed + ip.options


def emit_l4(l4: L4, checksum: int | None = None) -> bytes:
    if isinstance(l4, TCP):
        doff = (20 + len(l4.options)) // 4
        csum = l4.checksum if checksum is None else checksum
        return struct.pack("!HHIIBBHHH", l4.sport, l4.dport, l4.seq, l4.ack, doff << 4, l4.flags,
                           l4.window, csum, l4.urg) + l4.options + l4.payload
    if isinstance(l4, UDP):
        csum = l4.checksum if checksum is None else checksum
        return struct.pack("!HHHH", l4.sport, l4.dport, 8 + len(l4.payload), csum) + l4.payload
    if isinstance(l4, SCTP):
        csum = l4.checksum if checksum is None else checksum
        return struct.pack("!HHI", l4.sport, l4.dport, l4.vtag) + struct.pack("<I", csum) + \
            l4.chunks
    csum = l4.checksum if checksum is None else checksum
    return struct.pack("!BBHI", l4.type, l4.code, csum, l4.rest) + l4.payload


def tcp_options(buf, start: int = 0, end: int | None = None):
    """(kind, offset, length) of each TCP option in buf[start:end], as the
    kernel's tcp_parse_options walks them: NOPs skipped, stop at EOL or at an
    option whose length byte is missing or below 2. `length` is the option's
    own length byte (it may run past `end`: callers clip)."""
    end = len(buf) if end is None else end
    i = start
    while i < end:
        kind = buf[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or buf[i + 1] < 2:
            return
        ln = buf[i + 1]
        yield kind, i, ln
        i += ln


# --- checksums ------------------------------------------------------------

def l4_checksum_of(ip: IPv4, l4: L4) -> int:
    body = emit_l4(l4, checksum=0)
    if isinstance(l4, ICMP):
        return inet_checksum(body)
    if isinstance(l4, SCTP):
        return crc32c(body)                 # no pseudo header
    pseudo = ip.src.packed + ip.dst.packed + struct.pack("!BBH", 0, ip.proto, len(body))
    csum = inet_checksum(pseudo + body)
    if isinstance(l4, UDP) and csum == 0:
        return 0xFFFF
    return csum


def finalize(pkt: Packet) -> Packet:
    """Fill in correct checksums for a locally built packet (IP and L4)."""
    if pkt.ip is None:
        return pkt
    ip, l4 = pkt.ip, pkt.l4
    if l4 is not None:
        l4 = _with_checksum(l4, l4_checksum_of(ip, l4))
        l4_len = l4_length(l4)
    else:
        l4_len = len(pkt.payload)
    ip = IPv4(ip.src, ip.dst, ip.proto, ip.ttl, ip.ident, ip.flags, ip.frag, ip.tos,
              inet_checksum(ip_header(ip, l4_len, checksum=0)), ip.options)
    return Packet(pkt.eth, pkt.arp, ip, l4, pkt.payload)


def _with_checksum(l4: L4, csum: int) -> L4:
    """dataclasses.replace(l4, checksum=csum), by the constructors (faster)."""
    t = type(l4)
    if t is TCP:
        return TCP(l4.sport, l4.dport, l4.seq, l4.ack, l4.flags, l4.window, csum, l4.urg,
                   l4.options, l4.payload)
    if t is UDP:
        return UDP(l4.sport, l4.dport, csum, l4.payload)
    if t is ICMP:
        return ICMP(l4.type, l4.code, csum, l4.rest, l4.payload)
    return replace(l4, checksum=csum)


def l4_length(l4: L4) -> int:
    """len(emit_l4(l4)), without emitting it."""
    t = l4.__class__                    # (the header classes have no subclasses)
    if t is TCP:
        return 20 + len(l4.options) + len(l4.payload)
    if t is UDP or t is ICMP:
        return 8 + len(l4.payload)
    if t is SCTP:
        return 12 + len(l4.chunks)
    return len(emit_l4(l4))


# the last IP header checked (ip_checksum_ok): a frame keeps its header objects
# from device to device until a hop rewrites them (TTL, NAT), so the bridge and
# the stack of one node, and the veth after them, check the very same header
_last_ip_ok: list = [None, None, None, False]


def ip_checksum_ok(pkt: Packet) -> bool:
    """inet_checksum(ip_header(...)) == 0, summed from the fields (no bytes built:
    every device a frame enters checks it)."""
    ip = pkt.ip
    if ip is None:
        return True
    l4 = pkt.l4
    last = _last_ip_ok
    if last[0] is ip and last[1] is l4 and last[2] is pkt.payload:
        return last[3]
    ok = _ip_checksum_ok(ip, l4, pkt)
    last[:] = (ip, l4, pkt.payload, ok)
    return ok


def _ip_checksum_ok(ip: IPv4, l4, pkt: Packet) -> bool:
    l4_len = l4_length(l4) if l4 is not None else len(pkt.payload)
    options = ip.options
    ihl = 20 + len(options)
    src, dst = ip.src._ip, ip.dst._ip          # int(), without the call
    total = (((0x40 | (ihl // 4)) << 8) | ip.tos) + ihl + l4_len + ip.ident + \
        ((ip.flags << 13) | ip.frag) + ((ip.ttl << 8) | ip.proto) + ip.checksum + \
        (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    if options:
        if len(options) % 2:
            options += b"\x00"
        total += sum(struct.unpack(f"!{len(options) // 2}H", options))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


# the last L4 checksum verified (l4_checksum_ok): a frame's L4 header is checked
# again at each node it enters, mostly the same object between the same addresses
_last_l4_ok: list = [None, None, None, None, False]


def l4_checksum_ok(pkt: Packet) -> bool:
    ip, l4 = pkt.ip, pkt.l4
    if ip is None or l4 is None:
        return True
    if isinstance(l4, UDP) and l4.checksum == 0:
        return True   # UDP over IPv4: checksum optional
    last = _last_l4_ok
    if last[0] is l4 and last[1] == ip.src and last[2] == ip.dst and last[3] == ip.proto:
        return last[4]
    ok = l4_checksum_of(ip, l4) == l4.checksum
    last[:] = (l4, ip.src, ip.dst, ip.proto, ok)
    return ok


# --- rewrites the kernel makes (incremental checksum updates) -------------

def _u16(v: int) -> bytes:
    return struct.pack("!H", v)


def decrement_ttl(pkt: Packet) -> Packet:
    """ip_decrease_ttl(): TTL-1 with the header checksum adjusted incrementally."""
    ip = pkt.ip
    # csum_replace() of the (TTL, protocol) word, on ints (RFC 1624 eqn. 3)
    total = ((~ip.checksum) & 0xFFFF) + ((~((ip.ttl << 8) | ip.proto)) & 0xFFFF) + \
        (((ip.ttl - 1) << 8) | ip.proto)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    ip = IPv4(ip.src, ip.dst, ip.proto, ip.ttl - 1, ip.ident, ip.flags, ip.frag, ip.tos,
              (~total) & 0xFFFF, ip.options)
    return Packet(pkt.eth, pkt.arp, ip, pkt.l4, pkt.payload)


def set_macs(pkt: Packet, src: str, dst: str) -> Packet:
    # constructors, not dataclasses.replace: this runs at every hop
    return Packet(Ether(dst, src, pkt.eth.type), pkt.arp, pkt.ip, pkt.l4, pkt.payload)


def rewrite_addr(pkt: Packet, *, src: IPv4Address | None = None, dst: IPv4Address | None = None,
                 sport: int | None = None, dport: int | None = None) -> Packet:
    """NAT rewrite of addresses/ports with incremental IP and L4 checksum updates
    (nf_nat_ipv4_manip_pkt + the L4 manip). ICMP echo: `sport` rewrites the id."""
    ip, l4 = pkt.ip, pkt.l4
    ipcsum, l4csum = ip.checksum, getattr(l4, "checksum", None)
    pseudo = isinstance(l4, (TCP, UDP)) and not (isinstance(l4, UDP) and l4.checksum == 0)
    new_src, new_dst = ip.src, ip.dst
    if src is not None and ip.src != src:
        ipcsum = csum_replace(ipcsum, ip.src.packed, src.packed)
        if pseudo:
            l4csum = csum_replace(l4csum, ip.src.packed, src.packed)
        new_src = src
    if dst is not None and ip.dst != dst:
        ipcsum = csum_replace(ipcsum, ip.dst.packed, dst.packed)
        if pseudo:
            l4csum = csum_replace(l4csum, ip.dst.packed, dst.packed)
        new_dst = dst
    new_l4 = l4
    if isinstance(l4, SCTP):
        # sctp_manip_pkt(): the ports, then the CRC32c computed afresh (not adjusted)
        new_l4 = SCTP(l4.sport if sport is None else sport, l4.dport if dport is None else dport,
                      l4.vtag, 0, l4.chunks)
        new_l4 = SCTP(new_l4.sport, new_l4.dport, l4.vtag, crc32c(emit_l4(new_l4, 0)), l4.chunks)
    elif isinstance(l4, (TCP, UDP)):
        new_sport, new_dport = l4.sport, l4.dport
        if sport is not None and l4.sport != sport:
            if pseudo:
                l4csum = csum_replace(l4csum, _u16(l4.sport), _u16(sport))
            new_sport = sport
        if dport is not None and l4.dport != dport:
            if pseudo:
                l4csum = csum_replace(l4csum, _u16(l4.dport), _u16(dport))
            new_dport = dport
        if isinstance(l4, UDP) and l4.checksum != 0 and l4csum == 0:
            l4csum = 0xFFFF
        if isinstance(l4, TCP):
            new_l4 = TCP(new_sport, new_dport, l4.seq, l4.ack, l4.flags, l4.window, l4csum, l4.urg,
                         l4.options, l4.payload)
        else:
            new_l4 = UDP(new_sport, new_dport, l4csum, l4.payload)
    elif isinstance(l4, ICMP) and sport is not None and l4.type in (ICMP_ECHO, ICMP_ECHOREPLY):
        new_rest = (sport << 16) | (l4.rest & 0xFFFF)
        l4csum = csum_replace(l4csum, _u16(l4.ident), _u16(sport))
        new_l4 = ICMP(l4.type, l4.code, l4csum, new_rest, l4.payload)
    new_ip = IPv4(new_src, new_dst, ip.proto, ip.ttl, ip.ident, ip.flags, ip.frag, ip.tos, ipcsum,
                  ip.options)
    return Packet(pkt.eth, pkt.arp, new_ip, new_l4, pkt.payload)