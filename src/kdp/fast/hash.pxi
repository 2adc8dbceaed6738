# fast/hash.pxi (included by kdp/_fastpath.pyx): the per-packet choice hash of
# kdp.conntrack.keyed in C — flow_base/flow_hash (splitmix64 finaliser steps)
# and the kernel's jhash2/reciprocal_scale. Must give exactly the values the
# Python functions give (tests/unit/fast/test_fp_hash.py checks it).

cdef extern from *:
    """
    #define KDP_PREFETCH(p) __builtin_prefetch((const void*)(p))
    #define KDP_CTZ(x) __builtin_ctz(x)
    """
    void KDP_PREFETCH(const void* p) noexcept nogil
    int KDP_CTZ(unsigned int x) noexcept nogil

cdef uint64_t _GOLDEN = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t _mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t _hstep(uint64_t h, uint64_t w) noexcept nogil:
    return _mix64((h ^ w) + _GOLDEN)


cdef inline uint64_t _seed_mix(uint64_t seed) noexcept nogil:
    return _mix64(seed + _GOLDEN)


cdef inline uint64_t _flow_base_s(uint64_t smix, uint32_t proto, uint32_t src, uint32_t dst,
                                  uint32_t sport, uint32_t dport) noexcept nogil:
    """flow_base() with the seed already mixed (_seed_mix)."""
    cdef uint64_t w1 = ((<uint64_t>src) << 32) | dst
    cdef uint64_t w2 = (((<uint64_t>(proto & 0xFF)) << 32) | ((<uint64_t>(sport & 0xFFFF)) << 16)
                        | (dport & 0xFFFF))
    return _mix64(smix ^ (w1 * 0x9E3779B97F4A7C15ULL) ^ (w2 * 0xC2B2AE3D27D4EB4FULL))


cdef inline uint64_t _flow_base(uint64_t seed, uint32_t proto, uint32_t src, uint32_t dst,
                                uint32_t sport, uint32_t dport) noexcept nogil:
    return _flow_base_s(_seed_mix(seed), proto, src, dst, sport, dport)


cdef uint64_t _REOPEN = 0x52454F50454E5F47ULL


cdef inline uint64_t _entry_base(uint64_t base, uint64_t gen) noexcept nogil:
    """entry_base(): the flow_base of a tuple's gen-th conntrack entry."""
    return base if gen == 0 else _hstep(base, _REOPEN ^ gen)


cdef inline uint64_t _flow_hash(uint64_t seed, uint64_t point, uint32_t proto, uint32_t src,
                                uint32_t dst, uint32_t sport, uint32_t dport) noexcept nogil:
    return _hstep(_flow_base(seed, proto, src, dst, sport, dport), point)


cdef inline uint32_t _rol32(uint32_t x, int k) noexcept nogil:
    return (x << k) | (x >> (32 - k))


cdef uint32_t _jhash2_4(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3,
                        uint32_t initval) noexcept nogil:
    """jhash2() of four words (what find_best_ips_proto hashes)."""
    cdef uint32_t a, b, c
    a = b = c = <uint32_t>(0xDEADBEEFU + 16U + initval)
    a += w0
    b += w1
    c += w2
    # __jhash_mix
    a -= c; a ^= _rol32(c, 4); c += b
    b -= a; b ^= _rol32(a, 6); a += c
    c -= b; c ^= _rol32(b, 8); b += a
    a -= c; a ^= _rol32(c, 16); c += b
    b -= a; b ^= _rol32(a, 19); a += c
    c -= b; c ^= _rol32(b, 4); b += a
    a += w3
    # __jhash_final
    c ^= b; c -= _rol32(b, 14)
    a ^= c; a -= _rol32(c, 11)
    b ^= a; b -= _rol32(a, 25)
    c ^= b; c -= _rol32(b, 16)
    a ^= c; a -= _rol32(c, 4)
    b ^= a; b -= _rol32(a, 14)
    c ^= b; c -= _rol32(b, 24)
    return c


cdef inline uint32_t _bswap32(uint32_t x) noexcept nogil:
    return ((x & 0xFF) << 24) | ((x & 0xFF00) << 8) | ((x >> 8) & 0xFF00) | (x >> 24)


def flow_base(seed, proto, src, dst, sport, dport):
    """kdp.conntrack.keyed.flow_base in C."""
    return _flow_base(<uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF), proto, int(src), int(dst),
                      sport, dport)


def flow_hash(seed, point, proto, src, dst, sport, dport, gen=0):
    """kdp.conntrack.keyed.flow_hash in C."""
    return _hstep(_entry_base(_flow_base(<uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF), proto,
                                         int(src), int(dst), sport, dport),
                              <uint64_t>(int(gen) & 0xFFFFFFFFFFFFFFFF)),
                  <uint64_t>(int(point) & 0xFFFFFFFFFFFFFFFF))


def entry_base(base, gen):
    """kdp.conntrack.keyed.entry_base in C."""
    return _entry_base(<uint64_t>(int(base) & 0xFFFFFFFFFFFFFFFF),
                       <uint64_t>(int(gen) & 0xFFFFFFFFFFFFFFFF))


def jhash2_4(w0, w1, w2, w3, initval):
    """kdp.conntrack.keyed.jhash2([w0, w1, w2, w3], initval) in C."""
    return _jhash2_4(w0, w1, w2, w3, initval)
