# conntrack.keyed: the deterministic hashes behind every "random" choice the
# data plane makes (NAT port offsets, statistic matches, early-drop buckets) and
# the kernel's jhash2 (used where the kernel itself is deterministic, e.g. the
# SNAT address picked from a range). Pure functions; no state, no RNG stream.
from __future__ import annotations

import hashlib

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1


def keyed_hash(seed: int, *parts: object) -> int:
    """A 64-bit keyed hash of the parts (BLAKE2b keyed with the seed).

    The same (seed, parts) always give the same value, in any process and in
    any order of evaluation: choices made from it do not depend on which flows
    were seen before (unlike a shared RNG stream)."""
    key = (seed & _M64).to_bytes(8, "big")
    data = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "big")


def unit_interval(seed: int, *parts: object) -> float:
    """keyed_hash mapped to [0, 1)."""
    return keyed_hash(seed, *parts) / float(1 << 64)


def _rol32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _M32; a ^= _rol32(c, 4); c = (c + b) & _M32
    b = (b - a) & _M32; b ^= _rol32(a, 6); a = (a + c) & _M32
    c = (c - b) & _M32; c ^= _rol32(b, 8); b = (b + a) & _M32
    a = (a - c) & _M32; a ^= _rol32(c, 16); c = (c + b) & _M32
    b = (b - a) & _M32; b ^= _rol32(a, 19); a = (a + c) & _M32
    c = (c - b) & _M32; c ^= _rol32(b, 4); b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    c ^= b; c = (c - _rol32(b, 14)) & _M32
    a ^= c; a = (a - _rol32(c, 11)) & _M32
    b ^= a; b = (b - _rol32(a, 25)) & _M32
    c ^= b; c = (c - _rol32(b, 16)) & _M32
    a ^= c; a = (a - _rol32(c, 4)) & _M32
    b ^= a; b = (b - _rol32(a, 14)) & _M32
    c ^= b; c = (c - _rol32(b, 24)) & _M32
    return a, b, c


def jhash2(words: list[int], initval: int) -> int:
    """The kernel's jhash2() over 32-bit words (include/linux/jhash.h)."""
    length = len(words)
    a = b = c = (0xDEADBEEF + (length << 2) + initval) & _M32
    k = 0
    while length > 3:
        a = (a + words[k]) & _M32
        b = (b + words[k + 1]) & _M32
        c = (c + words[k + 2]) & _M32
        a, b, c = _mix(a, b, c)
        length -= 3
        k += 3
    if length == 3:
        c = (c + words[k + 2]) & _M32
    if length >= 2:
        b = (b + words[k + 1]) & _M32
    if length >= 1:
        a = (a + words[k]) & _M32
        a, b, c = _final(a, b, c)
    return c


def reciprocal_scale(val: int, ep_ro: int) -> int:
    """Map a 32-bit value into [0, ep_ro) as the kernel does."""
    return (val * ep_ro) >> 32
