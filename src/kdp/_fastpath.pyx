# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# _fastpath: the compiled twin of _purepath.py. Same functions, same results, on
# raw bytes: Internet checksums (full and incremental), the per-frame header
# summary and their batch forms filling the arrays declared in kdp.contract.
# Owns no policy and no packet walk; kdp.accel chooses between the two twins.
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int8_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import numpy as np

from .contract import (CHECKSUM_DTYPE, HEADER_DTYPE, batch_index_args, check_layout,
                       span_error)

IMPLEMENTATION = "cython"

# One HEADER_DTYPE record; the field order and types follow kdp.contract, and
# the import-time check below refuses to load if the layouts ever differ.
cdef struct header_t:
    int32_t ethertype
    int32_t l3_offset
    int32_t ip_proto
    uint32_t src_ip
    uint32_t dst_ip
    int32_t ttl
    int32_t l4_offset
    int32_t sport
    int32_t dport
    int8_t ip_header_ok


cdef uint16_t _ONE = 1
cdef bint _LITTLE = (<unsigned char*>&_ONE)[0] == 1


# --- raw byte access ------------------------------------------------------

cdef inline bint _acquire(object data, Py_buffer* buf, const unsigned char** p,
                          Py_ssize_t* n) except -1:
    """Point p/n at data's bytes. Returns True when a buffer was acquired (release it)."""
    if type(data) is bytes:
        p[0] = <const unsigned char*>PyBytes_AS_STRING(data)
        n[0] = PyBytes_GET_SIZE(data)
        return False
    PyObject_GetBuffer(data, buf, PyBUF_SIMPLE)
    if buf.itemsize != 1:
        PyBuffer_Release(buf)
        raise TypeError("expected a bytes-like object of single bytes")
    p[0] = <const unsigned char*>buf.buf
    n[0] = buf.len
    return True


# --- checksum arithmetic --------------------------------------------------

cdef inline uint64_t _fold(uint64_t s) noexcept nogil:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


cdef inline uint64_t _sum16(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Ones'-complement sum of n bytes read as big-endian 16-bit words, folded to
    16 bits; 0 only for all-zero data. Sums native 32-bit words and swaps once at
    the end (RFC 1071 section 2: the sum is byte-order independent)."""
    cdef uint64_t s = 0
    cdef uint32_t w0, w1, w2, w3
    cdef uint16_t h
    while n >= 16:
        memcpy(&w0, p, 4)
        memcpy(&w1, p + 4, 4)
        memcpy(&w2, p + 8, 4)
        memcpy(&w3, p + 12, 4)
        s += w0
        s += w1
        s += w2
        s += w3
        p += 16
        n -= 16
    while n >= 4:
        memcpy(&w0, p, 4)
        s += w0
        p += 4
        n -= 4
    if n >= 2:
        memcpy(&h, p, 2)
        s += h
        p += 2
        n -= 2
    if n:
        s += p[0] if _LITTLE else (<uint64_t>p[0]) << 8
    s = _fold(s)
    if _LITTLE:
        s = ((s & 0xFF) << 8) | (s >> 8)
    return s


cdef inline uint64_t _sum16_exact(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """The unfolded sum of big-endian 16-bit words (for unusual `initial` values)."""
    cdef uint64_t s = 0
    cdef Py_ssize_t i = 0
    while i + 1 < n:
        s += (<uint64_t>p[i] << 8) | p[i + 1]
        i += 2
    if i < n:
        s += <uint64_t>p[i] << 8
    return s


def inet_checksum(data, initial=0):
    """RFC 1071 Internet checksum of data, starting from a 32-bit partial sum."""
    cdef Py_buffer buf
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef uint64_t s
    cdef bint held = _acquire(data, &buf, &p, &n)
    try:
        if type(initial) is int and 0 <= initial < 0x4000000000000000:
            return (~_fold(<uint64_t>initial + _sum16(p, n))) & 0xFFFF
        s = _sum16_exact(p, n)
    finally:
        if held:
            PyBuffer_Release(&buf)
    # negative, huge or non-int initial: the twin's exact Python arithmetic
    total = initial + s
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def csum_replace(check, old, new):
    """Incremental checksum update (RFC 1624 eqn. 3) for replacing old with new.

    old and new have the same even length. This is what the kernel's
    csum_replace4/inet_proto_csum_replace4 do, so a wrong checksum stays wrong.
    """
    cdef uint64_t total = (~check) & 0xFFFF
    cdef Py_buffer bo, bn
    cdef const unsigned char* po
    cdef const unsigned char* pn
    cdef Py_ssize_t no, nn, i
    cdef bint held_o = _acquire(old, &bo, &po, &no)
    cdef bint held_n = False
    try:
        held_n = _acquire(new, &bn, &pn, &nn)
        if no % 2 or nn < no:
            raise IndexError("index out of range")
        i = 0
        while i < no:
            total += (~((<uint64_t>po[i] << 8) | po[i + 1])) & 0xFFFF
            total += (<uint64_t>pn[i] << 8) | pn[i + 1]
            i += 2
    finally:
        if held_n:
            PyBuffer_Release(&bn)
        if held_o:
            PyBuffer_Release(&bo)
    return (~_fold(total)) & 0xFFFF


# --- header summary -------------------------------------------------------

cdef inline void _parse(const unsigned char* f, Py_ssize_t n, header_t* h) noexcept nogil:
    cdef int32_t et, off, ihl, l4, frag
    cdef unsigned char vihl, proto
    h.ethertype = -1
    h.l3_offset = -1
    h.ip_proto = -1
    h.src_ip = 0
    h.dst_ip = 0
    h.ttl = 0
    h.l4_offset = -1
    h.sport = -1
    h.dport = -1
    h.ip_header_ok = 0
    if n < 14:
        return
    et = (f[12] << 8) | f[13]
    off = 14
    if et == 0x8100 and n >= 18:
        et = (f[16] << 8) | f[17]
        off = 18
    h.ethertype = et
    h.l3_offset = off
    if et != 0x0800 or n < off + 20:
        return
    vihl = f[off]
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or n < off + ihl:
        return
    proto = f[off + 9]
    h.ip_proto = proto
    h.ttl = f[off + 8]
    h.src_ip = ((<uint32_t>f[off + 12] << 24) | (<uint32_t>f[off + 13] << 16) |
                (<uint32_t>f[off + 14] << 8) | f[off + 15])
    h.dst_ip = ((<uint32_t>f[off + 16] << 24) | (<uint32_t>f[off + 17] << 16) |
                (<uint32_t>f[off + 18] << 8) | f[off + 19])
    h.ip_header_ok = 1 if _sum16(f + off, ihl) == 0xFFFF else 0   # checksum == 0
    l4 = off + ihl
    h.l4_offset = l4
    frag = ((f[off + 6] & 0x1F) << 8) | f[off + 7]
    if frag != 0:
        return
    if (proto == 6 or proto == 17) and n >= l4 + 4:
        h.sport = (f[l4] << 8) | f[l4 + 1]
        h.dport = (f[l4 + 2] << 8) | f[l4 + 3]
    elif proto == 1 and n >= l4 + 2:
        h.sport = f[l4]         # ICMP type
        h.dport = f[l4 + 1]     # ICMP code


def parse_headers(frame):
    """(ethertype, l3_offset, ip_proto, src_ip, dst_ip, ttl, l4_offset, sport, dport,
    ip_header_ok) with integers; -1/0 where a field does not apply."""
    cdef Py_buffer buf
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef header_t h
    cdef bint held = _acquire(frame, &buf, &p, &n)
    _parse(p, n, &h)
    if held:
        PyBuffer_Release(&buf)
    return (h.ethertype, h.l3_offset, h.ip_proto, h.src_ip, h.dst_ip, h.ttl,
            h.l4_offset, h.sport, h.dport, h.ip_header_ok)


# --- batches (layouts declared in kdp.contract) ----------------------------

def parse_batch(frames):
    """parse_headers() of every frame, as one HEADER_DTYPE record per frame."""
    cdef list items = frames if isinstance(frames, list) else list(frames)
    cdef Py_ssize_t i, count = len(items)
    cdef Py_buffer buf
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef bint held
    out = np.zeros(count, dtype=HEADER_DTYPE)
    if count == 0:
        return out
    cdef unsigned char[::1] raw = out.view(np.uint8)
    cdef header_t* rows = <header_t*>&raw[0]
    for i in range(count):
        held = _acquire(items[i], &buf, &p, &n)
        _parse(p, n, &rows[i])
        if held:
            PyBuffer_Release(&buf)
    return out


def checksum_batch(frames, offsets, lengths):
    """inet_checksum(frames[i][offsets[i]:offsets[i] + lengths[i]]) for every i, as
    uint16. A span outside its frame is a ValueError (never silently truncated)."""
    items, offs, lens = batch_index_args(frames, offsets, lengths)
    cdef list fl = items
    cdef const int64_t[::1] o = offs
    cdef const int64_t[::1] ln = lens
    cdef Py_ssize_t i, count = len(fl)
    cdef Py_buffer buf
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef bint held
    out = np.empty(count, dtype=CHECKSUM_DTYPE)
    if count == 0:
        return out
    cdef uint16_t[::1] res = out
    for i in range(count):
        held = _acquire(fl[i], &buf, &p, &n)
        if o[i] < 0 or ln[i] < 0 or o[i] + ln[i] > n:
            if held:
                PyBuffer_Release(&buf)
            raise span_error(i, o[i], ln[i], n)
        res[i] = (~_sum16(p + o[i], ln[i])) & 0xFFFF
        if held:
            PyBuffer_Release(&buf)
    return out


# --- layout proof ---------------------------------------------------------

cdef header_t _probe


cdef Py_ssize_t _at(void* field) noexcept:
    return <char*>field - <char*>&_probe


HEADER_STRUCT_SIZE = sizeof(header_t)
HEADER_STRUCT_OFFSETS = {
    "ethertype": _at(&_probe.ethertype), "l3_offset": _at(&_probe.l3_offset),
    "ip_proto": _at(&_probe.ip_proto), "src_ip": _at(&_probe.src_ip),
    "dst_ip": _at(&_probe.dst_ip), "ttl": _at(&_probe.ttl),
    "l4_offset": _at(&_probe.l4_offset), "sport": _at(&_probe.sport),
    "dport": _at(&_probe.dport), "ip_header_ok": _at(&_probe.ip_header_ok),
}
HEADER_STRUCT_SIZES = {
    "ethertype": sizeof(_probe.ethertype), "l3_offset": sizeof(_probe.l3_offset),
    "ip_proto": sizeof(_probe.ip_proto), "src_ip": sizeof(_probe.src_ip),
    "dst_ip": sizeof(_probe.dst_ip), "ttl": sizeof(_probe.ttl),
    "l4_offset": sizeof(_probe.l4_offset), "sport": sizeof(_probe.sport),
    "dport": sizeof(_probe.dport), "ip_header_ok": sizeof(_probe.ip_header_ok),
}
# A struct that disagrees with the contract is a build bug: fail loudly here
# (LayoutMismatch is not an ImportError, so kdp.accel does not fall back).
check_layout("_fastpath.header_t", HEADER_DTYPE, HEADER_STRUCT_SIZE,
             HEADER_STRUCT_OFFSETS, HEADER_STRUCT_SIZES)


# --- the compiled conntrack table and service matcher -------------------------
# (in include files, one subject each; array layouts from kdp.contract)
cimport cython
from libc.stdint cimport int16_t, uint8_t, uintptr_t

from .contract import (CT_ENTRY_DTYPE, CT_RESULT_DTYPE, DECISION_DTYPE, FLOW_DTYPE,
                       MATCH_CIDR_DTYPE, MATCH_EP_DTYPE, MATCH_RULE_DTYPE, MATCH_SP_DTYPE,
                       CtVerdict, check_nat_args, check_process_args)

include "_fp_hash.pxi"
include "_fp_mem.pxi"
include "fast/conntrack_store.pxi"
include "fast/conntrack_life.pxi"
include "fast/conntrack_nat.pxi"
include "fast/conntrack.pxi"
include "fast/recent.pxi"
include "fast/matcher.pxi"
include "_fp_layout.pxi"
include "_fp_flowcache.pxi"
