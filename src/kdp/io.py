# io: the edge between kdp and the outside world's packet formats: Scapy
# packets and raw bytes in, pcap files in and out (via Scapy's pcap reader
# and writer). Nothing below this module imports Scapy.
from __future__ import annotations

import os
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


def read_pcap(path: str) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame bytes) per record; Ethernet link type only."""
    from scapy.utils import PcapReader
    try:
        reader = PcapReader(path)
    except FileNotFoundError:
        raise PcapError(f"{path}: no such file") from None
    except Exception as e:  # scapy raises Scapy_Exception for non-pcap input
        raise PcapError(f"{path}: not a pcap/pcapng file ({e})") from None
    linktype = getattr(reader, "linktype", 1)
    if linktype != 1:
        reader.close()
        raise PcapError(f"{path}: link type {linktype} is not Ethernet (1)")
    with reader:
        for rec in reader:
            yield float(rec.time), bytes(rec)


def write_pcaps(captures: dict, out_dir: str, name_of) -> list[str]:
    """One pcap per device: captures[(ns, dev)] = [(time, Packet, dir)]."""
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapWriter
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for key in sorted(captures):
        path = os.path.join(out_dir, name_of(*key) + ".pcap")
        w = PcapWriter(path, linktype=1, sync=False)
        for t, pkt, _direction in captures[key]:
            p = Ether(wire.emit(pkt))
            p.time = t
            w.write(p)
        w.close()
        written.append(path)
    return written


def frames(items: Iterable) -> Iterator[wire.Packet]:
    for it in items:
        yield to_packet(it)
