# conntrack.keyed: the deterministic hashes behind every "random" choice the
# data plane makes (NAT port offsets, statistic matches, early-drop buckets) and
# the kernel's jhash2 (used where the kernel itself is deterministic, e.g. the
# SNAT address picked from a range). Pure functions; no state, no RNG stream.
#
# Two kinds of hash:
# - keyed_hash(): BLAKE2b over a joined string. Slow (~1 us), used once per
#   *decision point* (decision_point(): a rule, a NAT manip) to name it with a
#   64-bit id, and for choices that are not made per packet. The one keyed hash
#   of kdp: with seed_as_key=False it is the construction the socket layer, the
#   emulator's own packets, the DNS resolver and the cloud load balancer draw
#   their ISNs, ports and IP IDs from.
# - flow_hash(seed, point, tuple): the per-packet choice. A few rounds of the
#   splitmix64 finaliser over 64-bit words; the compiled fast path computes the
#   very same value in C (kdp._fastpath), so both paths choose alike.
from __future__ import annotations

import hashlib
from functools import lru_cache

from ..checksum import extensions_disabled

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1


def keyed_hash(seed: int, *parts: object, seed_as_key: bool = True) -> int:
    """A 64-bit keyed hash of the parts: BLAKE2b, an 8-byte digest read big-endian.

    The same (seed, parts) always give the same value, in any process and in
    any order of evaluation: choices made from it do not depend on which flows
    were seen before (unlike a shared RNG stream).

    Two constructions, which give different values for the same arguments
    (each caller keeps its own, so every output stays what it was):
    - seed_as_key (conntrack, netfilter, NAT): BLAKE2b keyed with the seed's
      low 64 bits, over the parts' str() joined by 0x1f;
    - seed_as_key=False (sockets, the emulator's packets, DNS, the cloud LB):
      unkeyed BLAKE2b over repr((seed, *parts))."""
    if not seed_as_key:
        data = repr((seed, *parts)).encode()
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    key = (seed & _M64).to_bytes(8, "big")
    data = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "big")


def unit_interval(seed: int, *parts: object) -> float:
    """keyed_hash mapped to [0, 1)."""
    return keyed_hash(seed, *parts) / float(1 << 64)


# --- the per-packet hash ------------------------------------------------------
#
#   mix(z)        = splitmix64's finaliser (Stafford's variant 13)
#   step(h, w)    = mix((h ^ w) + GOLDEN)                          (all mod 2**64)
#   flow_base     = mix(mix(seed + GOLDEN) ^ W1 * K1 ^ W2 * K2)
#                   W1 = src << 32 | dst,  W2 = proto << 32 | sport << 16 | dport
#   flow_hash     = step(flow_base, point)
#
# src/dst are the IPv4 addresses as integers, sport/dport the tuple's ports
# (for ICMP: the echo id and type << 8 | code, as in conntrack.Tuple). The
# decision point enters last, so one flow_base serves every point a packet
# meets, and mix(seed + GOLDEN) is computed once per seed: two finaliser rounds
# per choice, cheap enough for the compiled path's tens of millions a second.
#
# A reopened tuple (its conntrack entry gone, a new one made for the same
# original tuple: a client retrying from a fixed port, a SYN after RST) draws
# again, as the kernel's prandom does for each new entry. The entry's
# generation `gen` (how many entries of that original tuple the table confirmed
# before it) enters the base:
#   entry_base(base, gen) = base                       gen == 0
#                         = step(base, REOPEN ^ gen)   gen >= 1
# so the first entry of every tuple draws what it always drew, and each reopen
# a new value, a function of the flow's own history only (not of other flows).

GOLDEN = 0x9E3779B97F4A7C15
K1 = 0x9E3779B97F4A7C15
K2 = 0xC2B2AE3D27D4EB4F
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def mix64(z: int) -> int:
    """splitmix64's finaliser: a bijection on 64-bit integers."""
    z = ((z ^ (z >> 30)) * _MIX1) & _M64
    z = ((z ^ (z >> 27)) * _MIX2) & _M64
    return z ^ (z >> 31)


def hash_step(h: int, word: int) -> int:
    return mix64(((h ^ word) + GOLDEN) & _M64)


def seed_mix(seed: int) -> int:
    """The per-seed constant of flow_base()."""
    return mix64(((seed & _M64) + GOLDEN) & _M64)


def flow_base(seed: int, proto: int, src: int, dst: int, sport: int, dport: int) -> int:
    """The seed and the tuple's words hashed; flow_hash() finishes it per point."""
    w1 = ((int(src) & _M32) << 32) | (int(dst) & _M32)
    w2 = ((proto & 0xFF) << 32) | ((sport & 0xFFFF) << 16) | (dport & 0xFFFF)
    return mix64(seed_mix(seed) ^ ((w1 * K1) & _M64) ^ ((w2 * K2) & _M64))


REOPEN = 0x52454F50454E5F47          # "REOPEN_G": the salt of a reopen's generation


def entry_base(base: int, gen: int) -> int:
    """flow_base of the gen-th conntrack entry of a tuple (0: the first)."""
    return base if gen == 0 else hash_step(base, (REOPEN ^ gen) & _M64)


def flow_hash(seed: int, point: int, proto: int, src: int, dst: int, sport: int,
              dport: int, gen: int = 0) -> int:
    """The 64-bit choice hash of one flow (its original tuple) at one decision
    point: a pure function of (seed, point, tuple, gen), as the compiled fast
    path computes it. src/dst: IPv4 addresses as int (or IPv4Address); gen: the
    conntrack entry's generation (ConntrackEntry.gen; 0 for a tuple's first)."""
    return hash_step(entry_base(flow_base(seed, proto, src, dst, sport, dport), gen),
                     point & _M64)


@lru_cache(maxsize=65536)
def decision_point(*parts: object) -> int:
    """The 64-bit id of a decision point (a statistic rule: namespace, table,
    chain, rule number; a NAT port search: namespace, manip, round), computed
    once with BLAKE2b and cached."""
    return keyed_hash(0, "decision-point", *parts)


def random31(h: int) -> int:
    """The 31 random bits the kernel's statistic match compares with its
    probability ((prandom_u32() & 0x7FFFFFFF) < probability): the top 31 bits."""
    return h >> 33


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


# flow_base() and flow_hash() compiled (kdp._fastpath's twins of the functions
# above, tested equal to them): what the reference path's per-packet callers
# (conntrack buckets, NAT port offsets, statistic matches) use, unless
# KDP_NO_EXTENSIONS=1 or the extension is not built.
fast_flow_base, fast_flow_hash = flow_base, flow_hash
if not extensions_disabled():
    try:
        from .._fastpath import flow_base as fast_flow_base  # type: ignore[no-redef]
        from .._fastpath import flow_hash as fast_flow_hash  # type: ignore[no-redef]
    except ImportError:     # extension not built (e.g. running from a source tree)
        pass
