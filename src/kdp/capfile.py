# capfile: capture files in. Reads classic pcap (micro- or nanosecond, either
# byte order) and pcapng, plain or gzip-compressed, of Ethernet (link type 1)
# or Linux cooked frames (`tcpdump -i any`: SLL, 113, and SLL2, 276), and hands
# them on as blocks of classic pcap records of Ethernet frames, the one form
# the flow cache's engine and the reference path read. A classic Ethernet pcap
# passes through untouched (its blocks are the file's bytes); everything else
# is rewritten record by record: a cooked header becomes the Ethernet header
# the sender's stack put on the wire (its own MAC from the cooked header when
# it recorded one, the next hop's from the caller's `macs`). Anything else is
# a one-line PcapError naming the file, the record or block, and the field.
from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import Callable, Iterator

from .errors import KdpError


class PcapError(KdpError):
    pass


PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
              b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

ETHERNET, SLL, SLL2 = 1, 113, 276
LINK_NAMES = {0: "BSD loopback", 1: "Ethernet", 101: "raw IP", 105: "802.11", 113: "Linux cooked (SLL)",
              127: "802.11 radiotap", 228: "raw IPv4", 229: "raw IPv6", 276: "Linux cooked v2 (SLL2)"}
READ = (ETHERNET, SLL, SLL2)
MAX_RECORD = 0x4000000            # 64 MiB: larger record lengths are corruption (as Wireshark has it)
BLOCK = 4 << 20                   # bytes read per block
OUT_RECORD = struct.Struct("<IIII")

# macs(dst IPv4 address as 4 bytes) -> (destination MAC, source MAC), 6 bytes each:
# the Ethernet addresses the attachment point's stack would use toward it.
Macs = Callable[[bytes], "tuple[bytes, bytes]"]


def link_error(path: str, linktype: int, where: str = "") -> PcapError:
    name = LINK_NAMES.get(linktype)
    return PcapError(
        f"{path}: {where}link type {linktype}{f' ({name})' if name else ''} is not one kdp reads "
        f"(Ethernet 1, Linux cooked SLL 113 or SLL2 276); capture on an Ethernet device "
        f"(tcpdump -i eth0) or with -i any")


def open_capture(path: str):
    """The open (possibly gzip-decompressing) file and its raw file object
    (whose position, against the file's size, is the progress)."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise PcapError(f"{path}: {e.strerror}") from None
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    raw.seek(0)
    return raw, raw


class CaptureReader:
    """One capture file, as classic Ethernet pcap records. `blocks()` yields
    byte strings of records (little-endian, or the file's byte order when
    `passthrough`), `unit` is their timestamps' unit. A format problem is
    raised after the whole records before it have been yielded."""

    def __init__(self, path: str, macs: Macs | None = None, block: int = BLOCK):
        self.path, self.block = path, block
        self.macs = macs
        self.mac_table: dict[bytes, bytes] = {}      # dst IPv4 -> dst MAC + src MAC, from macs
        self.f, self.raw = open_capture(path)
        self.size = os.fstat(self.raw.fileno()).st_size
        head = self._read(24)
        self.pcapng = head[:4] == PCAPNG_MAGIC
        if self.pcapng:
            self.big, self.unit, self.passthrough = False, 1e-6, False
            self._head = head
            return
        if len(head) < 24 or head[:4] not in PCAP_MAGIC:
            self.close()
            raise PcapError(f"{path}: not a pcap or pcapng file, plain or gzip "
                            f"(its first bytes: {head[:4].hex() or 'none'})")
        endian, self.unit = PCAP_MAGIC[head[:4]]
        self.endian = endian
        self.linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
        if self.linktype not in READ:
            self.close()
            raise link_error(path, self.linktype)
        self.passthrough = self.linktype == ETHERNET
        self.big = endian == ">" if self.passthrough else False

    # --- the file ---------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        try:
            return self.f.read(n)
        except (OSError, EOFError, zlib.error) as e:      # gzip: BadGzipFile, cut short, bad data
            raise PcapError(f"{self.path}: gzip data is corrupt or cut short ({e})") from None

    def position(self) -> int:
        """Bytes of the file consumed so far (compressed bytes for gzip)."""
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return self.size

    def close(self) -> None:
        self.f.close()
        if self.raw is not self.f:
            self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # --- blocks -------------------------------------------------------------------
    def blocks(self) -> Iterator[bytes]:
        if self.pcapng:
            yield from self._pcapng_blocks()
        elif self.passthrough:
            while True:
                chunk = self._read(self.block)
                if not chunk:
                    return
                yield chunk
        else:
            yield from self._cooked_pcap_blocks()

    def _resolve(self, dst: bytes) -> None:
        """Learn the MACs toward IPv4 destination dst (for cooked frames)."""
        d, src = self.macs(dst)
        self.mac_table[dst] = d + src

    def _cooked_pcap_blocks(self) -> Iterator[bytes]:
        from .fast import convert_pcap           # here: the pure engine imports kdp.io, which imports this
        from .fast.capture import BAD, NEED_MAC
        rec = struct.Struct(self.endian + "IIII")
        buf, pos, n = b"", 0, 0
        macs = self.mac_table if self.macs is not None else None
        while True:
            out = bytearray()
            status, pos, got, extra = convert_pcap(buf, pos, len(buf), self.endian == ">", self.linktype,
                                                   macs, out)
            n += got
            if out:
                yield bytes(out)
            if status == NEED_MAC:
                self._resolve(extra)
                continue
            if status == BAD:
                check_length(self.path, n, extra)
            chunk = self._read(self.block)
            if not chunk:
                left = len(buf) - pos
                if left:
                    raise truncated_record(self.path, n, left - 16 if left >= 16 else left,
                                           rec.unpack_from(buf, pos)[2] if left >= 16 else None)
                return
            buf, pos = buf[pos:] + chunk, 0

    # --- pcapng -----------------------------------------------------------------
    def _pcapng_blocks(self) -> Iterator[bytes]:
        """Section header, interface description, enhanced / simple / obsolete
        packet blocks; every other block type is skipped (as Wireshark does).
        Runs of enhanced packet blocks go through the compiled loop."""
        from .fast import convert_pcapng
        from .fast.capture import NEED_MAC, _ethernet as ethernet
        buf, pos, n, out = self._head, 0, 0, bytearray()
        offset = 0                   # the file offset of buf[0]
        endian = "<"
        ifaces: list[tuple] = []     # (linktype, units per second, offset seconds)
        units = None                 # the output records' units per second
        macs = self.mac_table if self.macs is not None else None
        while True:
            if units is not None:
                status, pos, got, extra = convert_pcapng(buf, pos, len(buf), endian == ">", ifaces, units,
                                                         macs, out)
                n += got
                if status == NEED_MAC:
                    self._resolve(extra)
                    continue
            left = len(buf) - pos
            blen = struct.unpack_from(endian + "I", buf, pos + 4)[0] if left >= 8 else None
            if buf[pos:pos + 4] == PCAPNG_MAGIC and left >= 12:
                endian = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(buf[pos + 8:pos + 12])
                if endian is None:
                    raise PcapError(f"{self.path}: pcapng section header at offset {offset + pos}: "
                                    f"byte-order magic {buf[pos + 8:pos + 12].hex()} is not 1a2b3c4d")
                blen = struct.unpack_from(endian + "I", buf, pos + 4)[0]
            if blen is None or left < blen:
                if out:
                    yield bytes(out)
                    out = bytearray()
                chunk = self._read(max(self.block, (blen or 0) - left))
                if not chunk:
                    if left:
                        raise PcapError(f"{self.path}: pcapng block at offset {offset + pos} is truncated "
                                        f"({left} of {blen if blen is not None else 'at least 8'} bytes), "
                                        f"after {n} frames")
                    return
                offset += pos
                buf, pos = buf[pos:] + chunk, 0
                continue
            where = f"{self.path}: pcapng block at offset {offset + pos}"
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                raise PcapError(f"{where}: block length {blen} is not a multiple of 4 between 12 and "
                                f"{MAX_RECORD} (corrupt file), after {n} frames")
            btype = struct.unpack_from(endian + "I", buf, pos)[0]
            body = buf[pos + 8:pos + blen - 4]
            if btype == 0x0A0D0D0A:                              # section header: interfaces start afresh
                ifaces = []
            elif btype == 1:                                     # interface description
                if len(body) < 8:
                    raise PcapError(f"{where}: interface description is {len(body)} bytes, expected at least 8")
                linktype = struct.unpack_from(endian + "H", body, 0)[0]
                if linktype not in READ:
                    raise link_error(self.path, linktype, f"interface {len(ifaces)}: ")
                per_sec, off = _if_options(body[8:], endian, where)
                if units is None:
                    units = 1_000_000_000 if per_sec > 1_000_000 else 1_000_000
                    self.unit = 1.0 / units
                ifaces.append((linktype, per_sec, off))
            elif btype in (6, 2, 3):                             # enhanced, obsolete, simple packet
                if btype == 3:
                    iface, ts, data_at = 0, None, 4
                    caplen = min(struct.unpack_from(endian + "I", body, 0)[0] if len(body) >= 4 else 0,
                                 len(body) - 4)
                else:
                    if len(body) < 20:
                        raise PcapError(f"{where}: packet block is {len(body)} bytes, expected at least 20")
                    if btype == 6:
                        iface, hi, lo, caplen = struct.unpack_from(endian + "IIII", body, 0)
                    else:
                        iface, _drops, hi, lo, caplen = struct.unpack_from(endian + "HHIII", body, 0)
                    ts, data_at = (hi << 32) | lo, 20
                    if caplen > len(body) - 20:
                        raise PcapError(f"{where}: captured length {caplen} is longer than the block "
                                        f"({len(body) - 20} bytes), after {n} frames")
                if iface >= len(ifaces):
                    raise PcapError(f"{where}: interface {iface} was not described (no interface "
                                    f"description block for it), after {n} frames")
                link, per_sec, off = ifaces[iface]
                if ts is None:
                    sec = frac = 0
                else:
                    sec, rest = divmod(ts, per_sec)
                    frac = rest * units // per_sec
                    sec += off
                    if not 0 <= sec < 1 << 32:
                        raise PcapError(f"{where}: timestamp {sec} s is outside 1970-2106, after {n} frames")
                data = body[data_at:data_at + caplen]
                while True:
                    frame, need = ethernet(data, link, macs)
                    if frame is not None:
                        break
                    self._resolve(need)
                out += OUT_RECORD.pack(sec, frac, len(frame), len(frame)) + frame
                n += 1
            pos += blen


def _if_options(opts: bytes, endian: str, where: str) -> tuple[int, int]:
    """if_tsresol (units per second, default microseconds) and if_tsoffset."""
    per_sec, off, i = 1_000_000, 0, 0
    while i + 4 <= len(opts):
        code, length = struct.unpack_from(endian + "HH", opts, i)
        if code == 0:
            break
        value = opts[i + 4:i + 4 + length]
        if code == 9 and length >= 1:
            r = value[0]
            if (r & 0x7F) > (63 if r & 0x80 else 18):
                raise PcapError(f"{where}: if_tsresol {r:#04x} is not a resolution kdp reads")
            per_sec = 2 ** (r & 0x7F) if r & 0x80 else 10 ** r
        elif code == 14 and length >= 8:
            off = struct.unpack_from(endian + "q", value, 0)[0]
        i += 4 + ((length + 3) & ~3)
    return per_sec, off


def check_length(path: str, n: int, incl: int) -> None:
    if incl > MAX_RECORD:
        raise PcapError(f"{path}: record {n} length {incl} is larger than any frame (corrupt file)")


def truncated_record(path: str, n: int, got: int, incl: int | None = None) -> PcapError:
    """The error for record n cut short: its header (incl None) or its data."""
    if incl is None:
        return PcapError(f"{path}: record {n} header is truncated")
    return PcapError(f"{path}: record {n} is truncated ({got} of {incl} bytes)")
