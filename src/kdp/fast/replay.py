# fast.replay: the byte-level replay helpers the flow cache's two sides share
# and neither twin owns: the key a frame is cached under (frame_key), the
# output line's TCP flags, the RST a cached reject regenerates, a capture
# template applied to a frame with its checksums adjusted, the engine's run()
# status codes and the pcap record header by byte order. Used by the pure
# engine (kdp.fast.flowengine), the flow cache that records decisions
# (kdp.datapath.flowcache) and `kdp run`'s driver (kdp.runner); the compiled
# engine (fast/flowengine.pxi) does the same in C. Bytes in, bytes out: no
# engine state, no decisions.
from __future__ import annotations

import struct

from ..net.replies import ECHO_ICMP, ECHO_UDP, ICMP_ERROR, QUOTE_MAX  # noqa: F401  (OP_ANSWER kinds)
from .contract import FLOW_KEY_LEN, FLOW_OVERWRITE, FLOW_TEMPLATE

# FlowEngine.run() stopped: at its limit (an event is due), at a frame it
# cannot replay, at the end of the whole records in the buffer.
HIT, MISS, END = 0, 1, 2
# A classic pcap record header (sec, frac, incl_len, orig_len) by big_endian.
RECORD_HEADER = {False: struct.Struct("<IIII"), True: struct.Struct(">IIII")}


def pcap_record(t: float, data: bytes) -> bytes:
    """One record as kdp writes them (little-endian, the time rounded to microseconds)."""
    sec = int(t)
    usec = int(round((t - sec) * 1e6))
    if usec >= 1000000:
        sec, usec = sec + 1, usec - 1000000
    return RECORD_HEADER[False].pack(sec, usec, len(data), len(data)) + data


def _sum16(b: bytes, start: int, end: int) -> int:
    s = 0
    for i in range(start, end - 1, 2):
        s += (b[i] << 8) | b[i + 1]
    if (end - start) & 1:
        s += b[end - 1] << 8
    return s


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def adjust(check: int, delta: int) -> int:
    """RFC 1624 eqn. 3 with a precomputed sum of ~old+new words."""
    return (~_fold(((~check) & 0xFFFF) + delta)) & 0xFFFF


def frame_key(f: bytes, carry_psh: bool = False) -> bytes | None:
    """The bytes a cached decision is keyed on, or None when the frame is not
    one the cache replays (not IPv4 TCP, UDP or ICMP echo/echo reply without
    options or fragments, a UDP length other than the IP payload's, or a bad IP
    or L4 checksum). Everything else in the frame is carried through: the IP
    ID and total length, TCP's sequence numbers, window, options and (with
    carry_psh) PSH bit, the payload; ICMP's sequence number."""
    n = len(f)
    if n < 34 or f[12] != 0x08 or f[13] != 0x00 or f[14] != 0x45:
        return None
    total = (f[16] << 8) | f[17]
    if total < 28 or 14 + total > n or ((f[20] << 8) | f[21]) & 0x3FFF:
        return None
    if _fold(_sum16(f, 14, 34)) != 0xFFFF:
        return None
    proto, end = f[23], 14 + total
    seg = total - 20
    if proto == 6:
        if seg < 20 or (f[46] >> 4) * 4 < 20 or (f[46] >> 4) * 4 > seg:
            return None
        csum_at = 50
    elif proto == 17:
        if seg < 8 or (f[40] == 0 and f[41] == 0) or ((f[38] << 8) | f[39]) != seg:
            return None
        csum_at = 40
    elif proto == 1:
        # echo and echo reply only: an ICMP error's quoted header is read by
        # conntrack (RELATED), so its decision rests on more than a key holds
        if f[34] not in (0, 8) or _fold(_sum16(f, 34, end)) != 0xFFFF:
            return None
        key = f[0:16] + b"\0\0" + f[20:24] + f[26:36] + f[38:40] + b"\0\0"
        assert len(key) == FLOW_KEY_LEN
        return key
    else:
        return None
    s = _sum16(f, 26, 34) + proto + seg + _sum16(f, 34, end) - ((f[csum_at] << 8) | f[csum_at + 1])
    c = (~_fold(s)) & 0xFFFF
    if proto == 17 and c == 0:
        c = 0xFFFF
    if c != ((f[csum_at] << 8) | f[csum_at + 1]):
        return None
    # the lengths are carried through: no decision reads them (UDP's payload
    # length is written into the output line from the frame: line_var)
    key = f[0:16] + b"\0\0" + f[20:24] + f[26:38]
    if proto == 6:
        key += bytes([f[46], f[47] & ~0x08 if carry_psh else f[47]])
    else:
        key += b"\0\0"
    assert len(key) == FLOW_KEY_LEN
    return key


_FLAG_NAMES = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"))


def flag_str(flags: int) -> bytes:
    """kdp.wire.tcp_flag_str as bytes (the output line's "flags")."""
    return ("".join(n for bit, n in _FLAG_NAMES if flags & bit) or "none").encode()


def line_var(f: bytes) -> bytes:
    """The part of a cached entry's output line taken from the frame (before
    its tail): TCP's flags, UDP's payload length."""
    if f[23] == 6:
        return flag_str(f[47])
    return str(((f[38] << 8) | f[39]) - 8).encode()


def answer_ip_length(f: bytes, kind: int) -> int:
    """The IP total length of OP_ANSWER's answer to frame f."""
    total = (f[16] << 8) | f[17]
    return 28 + min(total, QUOTE_MAX) if kind == ICMP_ERROR else total


def error_source(delivered: bytes, typ: int, code: int, ident: int) -> bytes:
    """icmp_send()'s error for a datagram as it was delivered (OP_ANSWER's
    source 2 for ICMP_ERROR): from its destination to its source, TOS 0xC0, the
    IP ID ident, TTL 64, quoting its IP header and payload up to QUOTE_MAX bytes."""
    end = 14 + ((delivered[16] << 8) | delivered[17])
    quoted = delivered[14:min(end, 14 + QUOTE_MAX)]
    msg = bytearray(bytes([typ, code, 0, 0, 0, 0, 0, 0]) + quoted)
    c = (~_fold(_sum16(msg, 0, len(msg)))) & 0xFFFF
    msg[2], msg[3] = c >> 8, c & 0xFF
    n = 20 + len(msg)
    ip = bytearray(bytes([0x45, 0xC0, n >> 8, n & 0xFF, (ident >> 8) & 0xFF, ident & 0xFF, 0, 0, 64, 1, 0, 0])
                   + delivered[30:34] + delivered[26:30])
    c = (~_fold(_sum16(ip, 0, 20))) & 0xFFFF
    ip[10], ip[11] = c >> 8, c & 0xFF
    return delivered[6:12] + delivered[0:6] + b"\x08\x00" + bytes(ip) + bytes(msg)


def answer_source(f: bytes, kind: int, ident: int) -> bytes:
    """The echo of frame f as the namespace's stack sends it (OP_ANSWER's
    source 2): MACs, addresses and ports swapped, TOS 0, the IP ID ident, DF
    for UDP (an unconnected socket's sendto), TTL 64, for ICMP type echo reply
    and code 0. UDP's checksum is unchanged (swapping words keeps the sum);
    ICMP's is computed in full."""
    end = 14 + ((f[16] << 8) | f[17])
    out = bytearray(f[:end])
    out[0:6], out[6:12] = f[6:12], f[0:6]
    out[15] = 0
    out[18], out[19] = (ident >> 8) & 0xFF, ident & 0xFF
    out[20], out[21] = (0x40 if kind == ECHO_UDP else 0), 0
    out[22] = 64
    out[26:30], out[30:34] = f[30:34], f[26:30]
    if kind == ECHO_UDP:
        out[34:36], out[36:38] = f[36:38], f[34:36]
    else:                               # its checksum in full (as the stack computes it)
        out[34] = out[35] = out[36] = out[37] = 0
        c = (~_fold(_sum16(out, 34, end))) & 0xFFFF
        out[36], out[37] = c >> 8, c & 0xFF
    out[24] = out[25] = 0
    c = (~_fold(_sum16(out, 14, 34))) & 0xFFFF
    out[24], out[25] = c >> 8, c & 0xFF
    return bytes(out)


def rst_source(base: bytes, f: bytes, mode: int, flag_len: int) -> bytes:
    """tcp_v4_send_reset()'s segment for frame f, from the entry's recorded RST:
    only seq or ack differ from one frame to the next (mode 1: the frame had
    ACK; mode 2: ack = seq + payload + flag_len, the SYN/FIN count), and the
    destination port, the frame's source port (a megaflow's frames differ in it)."""
    if mode == 1:
        seq, ack = f[42:46], b"\0\0\0\0"
    else:
        payload = ((f[16] << 8) | f[17]) - 20 - (f[46] >> 4) * 4
        v = (int.from_bytes(f[38:42], "big") + payload + flag_len) & 0xFFFFFFFF
        seq, ack = b"\0\0\0\0", v.to_bytes(4, "big")
    dport = f[34:36]
    delta = ((~((base[36] << 8) | base[37])) & 0xFFFF) + ((dport[0] << 8) | dport[1])
    for old, new in ((base[38:42], seq), (base[42:46], ack)):
        for i in (0, 2):
            delta += ((~((old[i] << 8) | old[i + 1])) & 0xFFFF) + ((new[i] << 8) | new[i + 1])
    csum = adjust((base[50] << 8) | base[51], delta)
    return base[:36] + dport + seq + ack + base[46:50] + csum.to_bytes(2, "big") + base[52:]


def apply_template(src: bytes, blob: bytes, off: int) -> bytes:
    """A capture: the source's bytes (to its IP total length) with the recorded
    header fields written over and both checksums adjusted."""
    n_over, ipdelta, l4delta, kind = FLOW_TEMPLATE.unpack_from(blob, off)
    end = 14 + ((src[16] << 8) | src[17])
    out = bytearray(src[:end])
    p = off + FLOW_TEMPLATE.size
    for _ in range(n_over):
        pos, val = FLOW_OVERWRITE.unpack_from(blob, p)
        out[pos] = val
        p += FLOW_OVERWRITE.size
    c = adjust((src[24] << 8) | src[25], ipdelta)
    out[24], out[25] = c >> 8, c & 0xFF
    if kind:
        at = 50 if kind == 6 else 40
        c = adjust((src[at] << 8) | src[at + 1], l4delta)
        if kind == 17 and c == 0:
            c = 0xFFFF
        out[at], out[at + 1] = c >> 8, c & 0xFF
    return bytes(out)
