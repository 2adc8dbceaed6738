# fast.capture: the pure-Python twin of fast/capture.pxi, the hot loop of
# kdp.capfile: consecutive capture records (classic pcap of Linux cooked
# frames, or pcapng enhanced packet blocks) rewritten as classic little-endian
# pcap records of Ethernet frames. It stops, for kdp.capfile to act, at the end
# of the whole records in the buffer, at a destination whose MACs it is not
# given, at any other pcapng block, and at a length it will not trust; the
# file's structure and every error message stay in kdp.capfile.
from __future__ import annotations

import struct

# why convert() stopped: no whole record left, a MAC to resolve (extra: the
# IPv4 destination), a block it leaves to kdp.capfile, an implausible length
END, NEED_MAC, OTHER, BAD = 0, 1, 2, 3
MAX_RECORD = 0x4000000
SLL, SLL2 = 113, 276
_OUT = struct.Struct("<IIII")
_BCAST = b"\xff" * 6
_ZERO = bytes(6)


def _ethernet(f: bytes, link: int, macs: dict | None):
    """(Ethernet frame, None) or (None, dst IP to resolve) for a frame of link."""
    if link == 1:
        return f, None
    if link == SLL:
        if len(f) < 16:
            return f, None
        sender = f[6:12] if f[0:2] == b"\x00\x04" and f[2:4] == b"\x00\x01" and f[4:6] == b"\x00\x06" else None
        proto, payload = f[14:16], f[16:]
    else:
        if len(f) < 20:
            return f, None
        sender = f[12:18] if f[8:10] == b"\x00\x01" and f[10] == 4 and f[11] == 6 else None
        proto, payload = f[0:2], f[20:]
    if proto == b"\x08\x00" and len(payload) >= 20 and macs is not None:
        got = macs.get(payload[16:20])
        if got is None:
            return None, payload[16:20]
        dst, src = got[:6], got[6:]
    else:
        dst, src = (_BCAST if proto == b"\x08\x06" else _ZERO), _ZERO
    return dst + (sender or src) + proto + payload, None


def convert_pcap(buf, pos: int, end: int, big: bool, link: int, macs, out: bytearray):
    """Classic records of link (cooked) from pos: (status, pos, records, extra)."""
    rec = struct.Struct((">" if big else "<") + "IIII")
    n = 0
    while end - pos >= 16:
        sec, frac, incl, _orig = rec.unpack_from(buf, pos)
        if incl > MAX_RECORD:
            return BAD, pos, n, incl
        if end - pos - 16 < incl:
            break
        frame, need = _ethernet(bytes(buf[pos + 16:pos + 16 + incl]), link, macs)
        if frame is None:
            return NEED_MAC, pos, n, need
        out += _OUT.pack(sec, frac, len(frame), len(frame))
        out += frame
        pos += 16 + incl
        n += 1
    return END, pos, n, None


def convert_pcapng(buf, pos: int, end: int, big: bool, ifaces: list, units: int, macs, out: bytearray):
    """Enhanced packet blocks from pos; ifaces: (link, units per second,
    offset seconds) by interface id. (status, pos, records, extra)."""
    e = ">" if big else "<"
    n = 0
    while end - pos >= 8:
        btype, blen = struct.unpack_from(e + "II", buf, pos)
        if btype != 6 or blen < 32 or blen % 4 or blen > MAX_RECORD:
            return OTHER, pos, n, None
        if end - pos < blen:
            break
        iface, hi, lo, caplen = struct.unpack_from(e + "IIII", buf, pos + 8)
        if iface >= len(ifaces) or caplen > blen - 32:
            return OTHER, pos, n, None
        link, per_sec, off = ifaces[iface]
        sec, rest = divmod((hi << 32) | lo, per_sec)
        sec += off
        if not 0 <= sec < 1 << 32:
            return OTHER, pos, n, None
        frame, need = _ethernet(bytes(buf[pos + 28:pos + 28 + caplen]), link, macs)
        if frame is None:
            return NEED_MAC, pos, n, need
        out += _OUT.pack(sec, rest * units // per_sec, len(frame), len(frame))
        out += frame
        pos += blen
        n += 1
    return END, pos, n, None
