# io: the edge between kdp and the outside world's packet formats: Scapy
# packets and raw bytes in, pcap files in and out (via Scapy's pcap reader
# and writer; capture files in through kdp.capfile). Nothing below this module imports Scapy.
from __future__ import annotations

import os
import struct
from typing import Iterable, Iterator

from . import wire
from .capfile import CaptureReader, PcapError, truncated_record  # noqa: F401  (kdp.io's names)
from .fast.replay import pcap_record  # noqa: F401  (kdp.io's name; the replay engine writes records too)


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


# the global header kdp writes: classic pcap, microseconds, snaplen 262144, Ethernet
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


def read_pcap(path: str, macs=None) -> Iterator[tuple[float, bytes]]:
    """(timestamp, Ethernet frame bytes) per record, streamed, of any capture
    kdp.capfile reads (classic pcap or pcapng, plain or gzip, Ethernet or Linux
    cooked)."""
    with CaptureReader(path, macs) as reader:
        buf, n = b"", 0
        for block in reader.blocks():
            buf += block
            rec = struct.Struct((">" if reader.big else "<") + "IIII")
            pos = 0
            while len(buf) - pos >= 16:
                sec, frac, incl, _orig = rec.unpack_from(buf, pos)
                if len(buf) - pos - 16 < incl:
                    break
                yield sec + frac * reader.unit, buf[pos + 16:pos + 16 + incl]
                pos += 16 + incl
                n += 1
            buf = buf[pos:]
        if buf:
            incl = struct.unpack_from((">" if reader.big else "<") + "I", buf, 8)[0] if len(buf) >= 16 else None
            raise truncated_record(path, n, len(buf) - 16 if incl is not None else len(buf), incl)


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
