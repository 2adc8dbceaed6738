# io: the edge between kdp and the outside world's packet formats: Scapy
# packets and raw bytes in, pcap files in and out (via Scapy's pcap reader
# and writer). Nothing below this module imports Scapy.
from __future__ import annotations

import os
import struct
from typing import Iterable, Iterator

from . import wire
from .errors import KdpError


class PcapError(KdpError):
    pass


def to_packet(frame) -> wire.Packet:
    """A Scapy packet, raw bytes or a wire.Packet -> wire.Packet."""
    if isinstance(frame, wire.Packet):
        return frame
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return wire.parse(bytes(frame))
    return wire.parse(bytes(frame))


def to_scapy(pkt: wire.Packet):
    from scapy.layers.l2 import Ether
    return Ether(wire.emit(pkt))


PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
              b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}


def read_pcap(path: str) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame bytes) per record, streamed; classic pcap (micro- or
    nanosecond) read directly, pcapng through Scapy. Ethernet link type only."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise PcapError(f"{path}: {e.strerror}") from None
    with f:
        head = f.read(24)
        if len(head) < 24 or head[:4] not in PCAP_MAGIC:
            if head[:4] == b"\x0a\x0d\x0d\x0a":
                yield from _read_pcapng(path)
                return
            raise PcapError(f"{path}: not a pcap or pcapng file")
        endian, unit = PCAP_MAGIC[head[:4]]
        linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
        if linktype != 1:
            raise PcapError(f"{path}: link type {linktype} is not Ethernet (1)")
        rec = struct.Struct(endian + "IIII")
        n = 0
        while True:
            hdr = f.read(16)
            if not hdr:
                return
            if len(hdr) < 16:
                raise PcapError(f"{path}: record {n} header is truncated")
            sec, frac, incl, _orig = rec.unpack(hdr)
            data = f.read(incl)
            if len(data) < incl:
                raise PcapError(f"{path}: record {n} is truncated ({len(data)} of {incl} bytes)")
            n += 1
            yield sec + frac * unit, data


def _read_pcapng(path: str) -> Iterator[tuple[float, bytes]]:
    from scapy.layers.l2 import Ether  # noqa: F401  (registers the Ethernet link type)
    from scapy.utils import PcapNgReader
    try:
        reader = PcapNgReader(path)
    except Exception as e:  # scapy raises Scapy_Exception for broken input
        raise PcapError(f"{path}: not a readable pcapng file ({e})") from None
    with reader:
        for pkt in reader:
            yield float(pkt.time), bytes(pkt)


def write_pcap(path: str, records) -> None:
    """Classic microsecond pcap, Ethernet: records are (time, frame bytes)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for t, raw in records:
            sec = int(t)
            usec = int(round((t - sec) * 1e6))
            if usec >= 1000000:
                sec, usec = sec + 1, usec - 1000000
            f.write(struct.pack("<IIII", sec, usec, len(raw), len(raw)))
            f.write(raw)


def write_pcaps(captures: dict, out_dir: str, name_of) -> list[str]:
    """One pcap per device: captures[(ns, dev)] = [(time, Packet, dir)]."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for key in sorted(captures):
        path = os.path.join(out_dir, name_of(*key) + ".pcap")
        write_pcap(path, ((t, wire.emit(pkt)) for t, pkt, _direction in captures[key]))
        written.append(path)
    return written


def frames(items: Iterable) -> Iterator[wire.Packet]:
    for it in items:
        yield to_packet(it)
