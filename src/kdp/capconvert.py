# capconvert: writes Ethernet frames in every capture format kdp.capfile
# reads, as the tools that make them would (tcpdump -i any's Linux cooked
# headers, dumpcap's pcapng, gzip): for the examples and for the tests that
# prove every format reads alike. Timestamps are integer microseconds so that
# no format rounds differently. Nothing here decides anything about frames.
from __future__ import annotations

import gzip
import struct
from typing import Iterable

FORMATS = ("pcap", "pcap-ns", "pcap-be", "sll", "sll2", "pcapng", "pcapng-ns", "pcapng-sll2")
US = 1_000_000
ETHER = 1
SLL, SLL2 = 113, 276
OUTGOING, HOST = 4, 0


def _cooked(frame: bytes, v2: bool, outgoing: bool = True) -> bytes:
    """The frame as `tcpdump -i any` records it: the Ethernet header replaced by
    a cooked one carrying the packet type, the link-layer sender and the
    protocol (the sender is the frame's source MAC, which the kernel records
    for outgoing frames as for incoming ones)."""
    proto, sender = frame[12:14], frame[6:12] + b"\x00\x00"
    pkttype = OUTGOING if outgoing else HOST
    if v2:
        return proto + b"\x00\x00" + struct.pack(">IHBB", 2, 1, pkttype, 6) + sender + frame[14:]
    return struct.pack(">HHH", pkttype, 1, 6) + sender + proto + frame[14:]


def _pcap(records, endian: str, nano: bool, linktype: int, convert) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for ts, frame in records:
        data = convert(frame)
        sec, usec = divmod(ts, US)
        out.append(struct.pack(endian + "IIII", sec, usec * 1000 if nano else usec, len(data), len(data)))
        out.append(data)
    return b"".join(out)


def _block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def _pcapng(records, nano: bool, linktype: int, convert) -> bytes:
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    opts = (struct.pack("<HHB3x", 9, 1, 9) if nano else b"") + struct.pack("<HH", 0, 0)
    out = [shb, _block(1, struct.pack("<HHI", linktype, 0, 262144) + opts)]
    for ts, frame in records:
        data = convert(frame)
        t = ts * 1000 if nano else ts
        out.append(_block(6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(data), len(data)) + data))
    return b"".join(out)


def encode(records: Iterable[tuple[int, bytes]], fmt: str) -> bytes:
    """(timestamp in µs, Ethernet frame) records as a capture file of fmt
    (one of FORMATS; add ".gz" for gzip-compressed)."""
    if fmt.endswith(".gz"):
        return gzip.compress(encode(records, fmt[:-3]), mtime=0)
    records = list(records)
    same = bytes
    if fmt == "pcap":
        return _pcap(records, "<", False, ETHER, same)
    if fmt == "pcap-ns":
        return _pcap(records, "<", True, ETHER, same)
    if fmt == "pcap-be":
        return _pcap(records, ">", False, ETHER, same)
    if fmt == "sll":
        return _pcap(records, "<", False, SLL, lambda f: _cooked(f, False))
    if fmt == "sll2":
        return _pcap(records, "<", True, SLL2, lambda f: _cooked(f, True))
    if fmt == "pcapng":
        return _pcapng(records, False, ETHER, same)
    if fmt == "pcapng-ns":
        return _pcapng(records, True, ETHER, same)
    if fmt == "pcapng-sll2":
        return _pcapng(records, False, SLL2, lambda f: _cooked(f, True))
    raise ValueError(f"unknown capture format {fmt!r} (known: {', '.join(FORMATS)}, each also .gz)")


def write(path: str, records: Iterable[tuple[int, bytes]], fmt: str) -> None:
    with open(path, "wb") as f:
        f.write(encode(records, fmt))
