# conntrack.quoted: rewriting the packet quoted inside an ICMP error (inner IP
# header + the start of its L4 header) the way nf_nat_ipv4_manip_pkt does for
# it: addresses with the inner IP checksum, ports, and the inner L4 checksum
# when the quoted bytes hold the whole L4 header. Bytes in, bytes out.
from __future__ import annotations

import struct

from kdp.checksum import crc32c, csum_replace

from .tuples import PROTO_ICMP, PROTO_SCTP, Tuple

_TCP, _UDP = 6, 17


def _u16(b: bytearray, off: int) -> int:
    return struct.unpack_from("!H", b, off)[0]


def _put16(b: bytearray, off: int, v: int) -> None:
    struct.pack_into("!H", b, off, v)


def rewrite_quoted(payload: bytes, target: Tuple, source_side: bool) -> bytes | None:
    """Set the quoted packet's source (source_side) or destination address
    and port to the target tuple's. None if the payload is not a quoted IPv4
    packet."""
    if len(payload) < 20 or payload[0] >> 4 != 4:
        return None
    b = bytearray(payload)
    ihl = (b[0] & 0x0F) * 4
    if len(b) < ihl:
        return None
    proto = b[9]
    aoff = 12 if source_side else 16
    old_ip, new_ip = bytes(b[aoff:aoff + 4]), target.src.packed if source_side else target.dst.packed
    l4 = ihl
    l4_len = len(b) - ihl
    # L4 first (its checksum covers the pseudo-header address).
    if proto in (_TCP, _UDP) and l4_len >= 4:
        poff = l4 + (0 if source_side else 2)
        old_port = bytes(b[poff:poff + 2])
        new_port = struct.pack("!H", target.sport if source_side else target.dport)
        coff = l4 + (16 if proto == _TCP else 6)
        full = l4_len >= (20 if proto == _TCP else 8)
        if full and not (proto == _UDP and _u16(b, coff) == 0):
            c = csum_replace(_u16(b, coff), old_ip + old_port, new_ip + new_port)
            if proto == _UDP and c == 0:
                c = 0xFFFF
            _put16(b, coff, c)
        b[poff:poff + 2] = new_port
    elif proto == PROTO_SCTP and l4_len >= 8:
        # sctp_manip_pkt() on the quoted header: the port, then (a whole common
        # header quoted) the CRC32c computed afresh over what is quoted from there
        poff = l4 + (0 if source_side else 2)
        b[poff:poff + 2] = struct.pack("!H", target.sport if source_side else target.dport)
        if l4_len >= 12:
            b[l4 + 8:l4 + 12] = b"\0\0\0\0"
            b[l4 + 8:l4 + 12] = struct.pack("<I", crc32c(bytes(b[l4:])))
    elif proto == PROTO_ICMP and l4_len >= 8:
        old_id = bytes(b[l4 + 4:l4 + 6])
        new_id = struct.pack("!H", target.sport)
        _put16(b, l4 + 2, csum_replace(_u16(b, l4 + 2), old_id, new_id))
        b[l4 + 4:l4 + 6] = new_id
    _put16(b, 10, csum_replace(_u16(b, 10), old_ip, new_ip))
    b[aoff:aoff + 4] = new_ip
    return bytes(b)
