# fast/capture.pxi: the compiled hot loop of kdp.capfile, twin of
# kdp.fast.capture (same statuses, same bytes out): consecutive classic pcap
# records of Linux cooked frames, or pcapng enhanced packet blocks, rewritten
# as classic little-endian pcap records of Ethernet frames. Stops at the end of
# the whole records, at a destination whose MACs it is not given, at any
# other pcapng block and at a length it will not trust; kdp.capfile owns the
# file's structure and every error message.

CAP_END, CAP_NEED_MAC, CAP_OTHER, CAP_BAD = 0, 1, 2, 3
cdef uint32_t CAP_MAX_RECORD = 0x4000000


cdef inline uint32_t _cap_u32(const unsigned char* p, bint big) noexcept nogil:
    if big:
        return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]


cdef inline void _cap_put32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef object _cap_record(bytearray out, uint32_t sec, uint32_t frac, const unsigned char* f,
                        Py_ssize_t n, int link, object macs):
    """Append the record of frame f (n bytes, of link) to out; None when done,
    else the IPv4 destination (bytes) whose MACs macs lacks."""
    cdef unsigned char head[30]
    cdef const unsigned char* proto
    cdef const unsigned char* payload
    cdef const unsigned char* sender = NULL
    cdef Py_ssize_t plen, hl, start = len(out)
    cdef object got
    cdef const unsigned char* g
    if link == 1 or (link == 113 and n < 16) or (link == 276 and n < 20):
        _cap_put32(head, sec); _cap_put32(head + 4, frac)
        _cap_put32(head + 8, <uint32_t>n); _cap_put32(head + 12, <uint32_t>n)
        out += (<char*>head)[:16]
        out += (<char*>f)[:n]
        return None
    if link == 113:
        if f[0] == 0 and f[1] == 4 and f[2] == 0 and f[3] == 1 and f[4] == 0 and f[5] == 6:
            sender = f + 6
        proto, payload, plen = f + 14, f + 16, n - 16
    else:
        if f[8] == 0 and f[9] == 1 and f[10] == 4 and f[11] == 6:
            sender = f + 12
        proto, payload, plen = f, f + 20, n - 20
    if proto[0] == 8 and proto[1] == 0 and plen >= 20 and macs is not None:
        got = macs.get((<char*>payload)[16:20])
        if got is None:
            return (<char*>payload)[16:20]
        g = <const unsigned char*>PyBytes_AS_STRING(got)
        memcpy(head + 16, g, 12)
    else:
        memset(head + 16, 0xFF if (proto[0] == 8 and proto[1] == 6) else 0, 6)
        memset(head + 22, 0, 6)
    if sender != NULL:
        memcpy(head + 22, sender, 6)
    head[28], head[29] = proto[0], proto[1]
    hl = plen + 14
    _cap_put32(head, sec); _cap_put32(head + 4, frac)
    _cap_put32(head + 8, <uint32_t>hl); _cap_put32(head + 12, <uint32_t>hl)
    out += (<char*>head)[:30]
    out += (<char*>payload)[:plen]
    return None


def convert_pcap(buf, Py_ssize_t pos, Py_ssize_t end, bint big, int link, object macs, bytearray out):
    """Classic records of link (cooked) from pos: (status, pos, records, extra)."""
    cdef const unsigned char[:] mv = buf
    cdef const unsigned char* p = &mv[0] if end > 0 else NULL
    cdef uint32_t incl
    cdef Py_ssize_t n = 0
    cdef object need
    while end - pos >= 16:
        incl = _cap_u32(p + pos + 8, big)
        if incl > CAP_MAX_RECORD:
            return CAP_BAD, pos, n, incl
        if end - pos - 16 < incl:
            break
        need = _cap_record(out, _cap_u32(p + pos, big), _cap_u32(p + pos + 4, big), p + pos + 16,
                           incl, link, macs)
        if need is not None:
            return CAP_NEED_MAC, pos, n, need
        pos += 16 + incl
        n += 1
    return CAP_END, pos, n, None


def convert_pcapng(buf, Py_ssize_t pos, Py_ssize_t end, bint big, list ifaces, uint64_t units,
                   object macs, bytearray out):
    """Enhanced packet blocks from pos; ifaces: (link, units per second,
    offset seconds) by interface id. (status, pos, records, extra)."""
    cdef const unsigned char[:] mv = buf
    cdef const unsigned char* p = &mv[0] if end > 0 else NULL
    cdef uint32_t btype, blen, iface, caplen
    cdef uint64_t ts, per_sec, frac
    cdef int64_t sec, off
    cdef int link
    cdef Py_ssize_t n = 0
    cdef object need
    while end - pos >= 8:
        btype = _cap_u32(p + pos, big)
        blen = _cap_u32(p + pos + 4, big)
        if btype != 6 or blen < 32 or blen % 4 or blen > CAP_MAX_RECORD:
            return CAP_OTHER, pos, n, None
        if end - pos < blen:
            break
        iface = _cap_u32(p + pos + 8, big)
        caplen = _cap_u32(p + pos + 20, big)
        if iface >= <uint32_t>len(ifaces) or caplen > blen - 32:
            return CAP_OTHER, pos, n, None
        link, per_sec, off = ifaces[iface]
        ts = (<uint64_t>_cap_u32(p + pos + 12, big) << 32) | _cap_u32(p + pos + 16, big)
        sec = <int64_t>(ts // per_sec) + off
        if sec < 0 or sec >= (<int64_t>1 << 32):
            return CAP_OTHER, pos, n, None
        if per_sec <= 10000000000ULL:
            frac = (ts % per_sec) * units // per_sec
        else:
            frac = <uint32_t>(<object>(ts % per_sec) * units // per_sec)
        need = _cap_record(out, <uint32_t>sec, <uint32_t>frac, p + pos + 28, caplen, link, macs)
        if need is not None:
            return CAP_NEED_MAC, pos, n, need
        pos += blen
        n += 1
    return CAP_END, pos, n, None
