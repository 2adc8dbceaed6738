# fast.headers: the pure-Python twin of the compiled header routines
# (kdp._fastpath, fast/headers.pxi): the per-frame header summary and the batch
# forms filling kdp.fast.contract's arrays, plus kdp.checksum's pure checksums
# under the twin's names. Same functions, same results; selected by kdp.fast
# when the extension is missing or KDP_NO_EXTENSIONS=1. Raw bytes only: no
# packet objects, no policy.
from __future__ import annotations

import numpy as np

from ..checksum import pure_csum_replace as csum_replace  # noqa: F401  (part of the twin)
from ..checksum import pure_inet_checksum as inet_checksum
from .contract import CHECKSUM_DTYPE, HEADER_DTYPE, batch_index_args, span_error

IMPLEMENTATION = "python"


# Header summary of one Ethernet frame: a fixed tuple the batch driver and the
# compiled twin agree on (see kdp.fast.contract.HEADER_FIELDS).
def parse_headers(frame: bytes) -> tuple:
    """(ethertype, l3_offset, ip_proto, src_ip, dst_ip, ttl, l4_offset, sport, dport,
    ip_header_ok) with integers; -1/0 where a field does not apply."""
    n = len(frame)
    if n < 14:
        return (-1, -1, -1, 0, 0, 0, -1, -1, -1, 0)
    ethertype = (frame[12] << 8) | frame[13]
    off = 14
    if ethertype == 0x8100 and n >= 18:
        ethertype = (frame[16] << 8) | frame[17]
        off = 18
    if ethertype != 0x0800 or n < off + 20:
        return (ethertype, off, -1, 0, 0, 0, -1, -1, -1, 0)
    vihl = frame[off]
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or n < off + ihl:
        return (ethertype, off, -1, 0, 0, 0, -1, -1, -1, 0)
    proto = frame[off + 9]
    ttl = frame[off + 8]
    src = int.from_bytes(frame[off + 12:off + 16], "big")
    dst = int.from_bytes(frame[off + 16:off + 20], "big")
    ok = 1 if inet_checksum(frame[off:off + ihl]) == 0 else 0
    l4 = off + ihl
    sport = dport = -1
    frag = ((frame[off + 6] & 0x1F) << 8) | frame[off + 7]
    if proto in (6, 17) and frag == 0 and n >= l4 + 4:
        sport = (frame[l4] << 8) | frame[l4 + 1]
        dport = (frame[l4 + 2] << 8) | frame[l4 + 3]
    elif proto == 1 and frag == 0 and n >= l4 + 2:
        sport = frame[l4]       # ICMP type
        dport = frame[l4 + 1]   # ICMP code
    return (ethertype, off, proto, src, dst, ttl, l4, sport, dport, ok)


# --- batches (layouts declared in kdp.fast.contract) -----------------------

def parse_batch(frames) -> np.ndarray:
    """parse_headers() of every frame, as one HEADER_DTYPE record per frame."""
    if not isinstance(frames, list):
        frames = list(frames)
    if not frames:
        return np.zeros(0, dtype=HEADER_DTYPE)
    return np.array([parse_headers(f) for f in frames], dtype=HEADER_DTYPE)


def checksum_batch(frames, offsets, lengths) -> np.ndarray:
    """inet_checksum(frames[i][offsets[i]:offsets[i] + lengths[i]]) for every i, as
    uint16. A span outside its frame is a ValueError (never silently truncated)."""
    frames, offs, lens = batch_index_args(frames, offsets, lengths)
    out = np.empty(len(frames), dtype=CHECKSUM_DTYPE)
    for i, frame in enumerate(frames):
        o, n = int(offs[i]), int(lens[i])
        if o < 0 or n < 0 or o + n > len(frame):
            raise span_error(i, o, n, len(frame))
        out[i] = inet_checksum(frame[o:o + n])
    return out
