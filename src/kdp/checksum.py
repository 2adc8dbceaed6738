# checksum: the Internet checksum (RFC 1071) and its incremental update
# (RFC 1624) on raw bytes, the bottom layer every packet rewrite stands on.
# The pure functions are written here; the compiled ones of kdp._fastpath
# replace them unless KDP_NO_EXTENSIONS=1 or the extension is not built (the
# rule kdp.fast's selector follows too). Imports no other kdp module: wire,
# conntrack and the oracle import checksums from here, never from kdp.fast.
from __future__ import annotations

import os
import struct


def extensions_disabled() -> bool:
    """True when KDP_NO_EXTENSIONS asks for the pure twins (any value but "" or "0")."""
    return os.environ.get("KDP_NO_EXTENSIONS", "") not in ("", "0")


def pure_inet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 Internet checksum of data, starting from a 32-bit partial sum."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def pure_csum_replace(check: int, old: bytes, new: bytes) -> int:
    """Incremental checksum update (RFC 1624 eqn. 3) for replacing old with new.

    old and new have the same even length. This is what the kernel's
    csum_replace4/inet_proto_csum_replace4 do, so a wrong checksum stays wrong.
    """
    total = (~check) & 0xFFFF
    for i in range(0, len(old), 2):
        total += (~((old[i] << 8) | old[i + 1])) & 0xFFFF
        total += (new[i] << 8) | new[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


inet_checksum = pure_inet_checksum
csum_replace = pure_csum_replace
IMPLEMENTATION: str = "python"

if not extensions_disabled():
    try:
        from ._fastpath import csum_replace, inet_checksum  # type: ignore[no-redef]
        IMPLEMENTATION = "cython"
    except ImportError:  # extension not built (e.g. running from a source tree)
        pass

__all__ = ["inet_checksum", "csum_replace", "pure_inet_checksum", "pure_csum_replace",
           "extensions_disabled", "IMPLEMENTATION"]


# --- CRC32c (Castagnoli), SCTP's checksum (RFC 9260 appendix A) ---------------------

def _crc32c_table() -> tuple[int, ...]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return tuple(out)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32c of data (reflected, init and final xor 0xFFFFFFFF): crc32c(b"123456789")
    is 0xE3069283. SCTP carries it little-endian in its checksum field."""
    crc, table = 0xFFFFFFFF, _CRC32C
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
