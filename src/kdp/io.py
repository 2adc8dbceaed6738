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


PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
# the global header kdp writes: classic pcap, microseconds, snaplen 262144, Ethernet
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
_RECORD = struct.Struct("<IIII")


def open_pcap(path: str):
    """The open file and its format: (file, None) for pcapng, else (file,
    (byte order, time unit)) with the 24-byte global header read and checked
    (a classic pcap of Ethernet frames)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise PcapError(f"{path}: {e.strerror}") from None
    head = f.read(24)
    if head[:4] == PCAPNG_MAGIC:
        return f, None
    if len(head) < 24 or head[:4] not in PCAP_MAGIC:
        f.close()
        raise PcapError(f"{path}: not a pcap or pcapng file")
    endian, unit = PCAP_MAGIC[head[:4]]
    linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
    if linktype != 1:
        f.close()
        raise PcapError(f"{path}: link type {linktype} is not Ethernet (1)")
    return f, (endian, unit)


def truncated_record(path: str, n: int, got: int, incl: int | None = None) -> PcapError:
    """The error for record n cut short: its header (incl None) or its data."""
    if incl is None:
        return PcapError(f"{path}: record {n} header is truncated")
    return PcapError(f"{path}: record {n} is truncated ({got} of {incl} bytes)")


def pcap_record(t: float, data: bytes) -> bytes:
    """One record as kdp writes them: the time rounded to microseconds."""
    sec = int(t)
    usec = int(round((t - sec) * 1e6))
    if usec >= 1000000:
        sec, usec = sec + 1, usec - 1000000
    return _RECORD.pack(sec, usec, len(data), len(data)) + data


def read_pcap(path: str) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame bytes) per record, streamed; classic pcap (micro- or
    nanosecond) read directly, pcapng through Scapy. Ethernet link type only."""
    f, fmt = open_pcap(path)
    with f:
        if fmt is None:
            yield from _read_pcapng(path)
            return
        endian, unit = fmt
        rec = struct.Struct(endian + "IIII")
        n = 0
        while True:
            hdr = f.read(16)
            if not hdr:
                return
            if len(hdr) < 16:
                raise truncated_record(path, n, len(hdr))
            sec, frac, incl, _orig = rec.unpack(hdr)
            data = f.read(incl)
            if len(data) < incl:
                raise truncated_record(path, n, len(data), incl)
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
        f.write(PCAP_HEADER)
        for t, raw in records:
            f.write(pcap_record(t, raw))


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
