# fast/flowengine.pxi (included by kdp/_fastpath.pyx): the flow cache's replay
# engine in C, twin of kdp.fast.flowengine.FlowEngine (same methods, same bytes). Keys a
# raw frame, finds its cached decision in an open-addressing table, checks the
# conntrack/FDB slots it rests on, then replays it: slot updates, captures
# written straight into per-device pcap buffers, the output line. No Python
# object is made per replayed frame. Layouts: kdp.fast.contract (FLOW_*).
from libc.math cimport rint, isnan, INFINITY
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcmp, memset

DEF KEYLEN = 36

cdef struct fl_buf:
    char* p
    Py_ssize_t n
    Py_ssize_t cap

cdef struct fl_op:
    uint8_t code
    uint8_t a
    uint16_t b
    uint32_t slot
    double x
    double y

cdef struct fl_entry:
    unsigned char key[KEYLEN]
    uint64_t hash
    fl_op* ops
    int n_ops
    unsigned char* blob
    unsigned char rst[54]
    char* prefix
    Py_ssize_t prefix_n
    char* suffix
    Py_ssize_t suffix_n
    char* tail                  # NULL, or: the line ends with the frame's TCP flags + tail
    Py_ssize_t tail_n
    int64_t hits
    int64_t ip_bytes
    int64_t answer_bytes
    int answer_kind             # its OP_ANSWER's kind (0: none)
    double last_now
    bint live
    bint dirty


cdef struct fl_vec:
    int64_t* p
    Py_ssize_t n
    Py_ssize_t cap


cdef inline int _buf_grow(fl_buf* b, Py_ssize_t extra) noexcept nogil:
    """Room for extra more bytes; -1 when memory ran out."""
    cdef Py_ssize_t need = b.n + extra
    cdef Py_ssize_t cap
    cdef char* p
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 65536
    while cap < need:
        cap *= 2
    p = <char*>realloc(b.p, cap)
    if p == NULL:
        return -1
    b.p, b.cap = p, cap
    return 0


cdef inline int _buf_reserve(fl_buf* b, Py_ssize_t extra) except -1:
    if _buf_grow(b, extra) < 0:
        raise MemoryError()
    return 0


cdef inline int _vec_push(fl_vec* v, int64_t x) noexcept nogil:
    cdef Py_ssize_t cap
    cdef int64_t* p
    if v.n == v.cap:
        cap = v.cap * 2 if v.cap else 256
        p = <int64_t*>realloc(v.p, cap * sizeof(int64_t))
        if p == NULL:
            return -1
        v.p, v.cap = p, cap
    v.p[v.n] = x
    v.n += 1
    return 0


cdef list _vec_take(fl_vec* v):
    out = sorted([v.p[i] for i in range(v.n)])
    v.n = 0
    return out


cdef inline uint32_t _fl_sum16(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t s = 0
    cdef Py_ssize_t i = 0
    while i + 1 < n:
        s += (<uint32_t>p[i] << 8) | p[i + 1]
        i += 2
    if n & 1:
        s += <uint32_t>p[n - 1] << 8
    return s


cdef inline uint32_t _fl_fold(uint64_t s) noexcept nogil:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return <uint32_t>s


cdef inline uint32_t _adjust(uint32_t check, uint32_t delta) noexcept nogil:
    return (~_fl_fold(<uint64_t>((~check) & 0xFFFF) + delta)) & 0xFFFF


cdef inline uint32_t _be16(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef int _frame_key(const unsigned char* f, Py_ssize_t n, unsigned char* key,
                    bint carry_psh) noexcept nogil:
    """1 and the key in `key` when the frame is replayable (see kdp.fast.replay.frame_key)."""
    cdef uint32_t total, seg, proto, csum_at, s, c, doff
    if n < 34 or f[12] != 0x08 or f[13] != 0x00 or f[14] != 0x45:
        return 0
    total = _be16(f + 16)
    if total < 28 or 14 + total > n or (_be16(f + 20) & 0x3FFF):
        return 0
    if _fl_fold(_fl_sum16(f + 14, 20)) != 0xFFFF:
        return 0
    proto = f[23]
    seg = total - 20
    if proto == 6:
        doff = (f[46] >> 4) * 4
        if seg < 20 or doff < 20 or doff > seg:
            return 0
        csum_at = 50
    elif proto == 17:
        if seg < 8 or (f[40] == 0 and f[41] == 0) or _be16(f + 38) != seg:
            return 0
        csum_at = 40
    elif proto == 1:
        if (f[34] != 0 and f[34] != 8) or _fl_fold(_fl_sum16(f + 34, seg)) != 0xFFFF:
            return 0
        memcpy(key, f, 16)
        key[16] = 0
        key[17] = 0
        memcpy(key + 18, f + 20, 4)
        memcpy(key + 22, f + 26, 10)
        memcpy(key + 32, f + 38, 2)
        key[34] = 0
        key[35] = 0
        return 1
    else:
        return 0
    s = _fl_sum16(f + 26, 8) + proto + seg + _fl_sum16(f + 34, seg) - _be16(f + csum_at)
    c = (~_fl_fold(s)) & 0xFFFF
    if proto == 17 and c == 0:
        c = 0xFFFF
    if c != _be16(f + csum_at):
        return 0
    memcpy(key, f, 16)
    key[16] = 0
    key[17] = 0
    memcpy(key + 18, f + 20, 4)
    memcpy(key + 22, f + 26, 12)
    if proto == 6:
        memcpy(key + 34, f + 46, 2)
        if carry_psh:
            key[35] &= 0xF7
    else:
        key[34] = 0
        key[35] = 0
    return 1


cdef inline int _flag_str(unsigned char flags, char* out) noexcept nogil:
    """kdp.wire.tcp_flag_str into out; its length (at most 6)."""
    cdef int n = 0
    if flags & 0x02:
        out[n] = 83; n += 1          # S
    if flags & 0x01:
        out[n] = 70; n += 1          # F
    if flags & 0x04:
        out[n] = 82; n += 1          # R
    if flags & 0x08:
        out[n] = 80; n += 1          # P
    if flags & 0x10:
        out[n] = 46; n += 1          # .
    if flags & 0x20:
        out[n] = 85; n += 1          # U
    if n == 0:
        memcpy(out, b"none", 4)
        n = 4
    return n


cdef inline uint64_t _key_hash(const unsigned char* k) noexcept nogil:
    cdef uint64_t h = 0x6B64702D666C6F77ULL
    cdef uint64_t w
    cdef int i
    for i in range(0, 32, 8):
        memcpy(&w, k + i, 8)
        h = _hstep(h, w)
    w = 0
    memcpy(&w, k + 32, 4)
    return _hstep(h, w)


cdef void _rst_source(const unsigned char* base, const unsigned char* f, int mode,
                      uint32_t flag_len, unsigned char* out) noexcept nogil:
    cdef uint32_t v, delta = 0
    cdef uint32_t seglen = _be16(f + 16) - 20 - (f[46] >> 4) * 4 + flag_len
    cdef int i
    memcpy(out, base, 54)
    memcpy(out + 36, f + 34, 2)          # to the frame's source port (a megaflow's frames differ in it)
    if mode == 1:
        memcpy(out + 38, f + 42, 4)
        memset(out + 42, 0, 4)
    else:
        v = ((<uint32_t>f[38] << 24) | (<uint32_t>f[39] << 16) | (<uint32_t>f[40] << 8) | f[41]) + seglen
        memset(out + 38, 0, 4)
        out[42], out[43], out[44], out[45] = (v >> 24) & 0xFF, (v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF
    for i in range(36, 46, 2):
        delta += ((~_be16(base + i)) & 0xFFFF) + _be16(out + i)
    v = _adjust(_be16(base + 50), delta)
    out[50], out[51] = v >> 8, v & 0xFF


cdef Py_ssize_t _apply(const unsigned char* src, const unsigned char* tmpl,
                       unsigned char* out) noexcept nogil:
    """Write the capture into out (room for the source's length); its length."""
    cdef uint16_t n_over, pos
    cdef uint32_t ipdelta, l4delta, c
    cdef uint8_t kind
    cdef Py_ssize_t end = 14 + _be16(src + 16)
    cdef int i, at
    memcpy(&n_over, tmpl, 2)
    memcpy(&ipdelta, tmpl + 2, 4)
    memcpy(&l4delta, tmpl + 6, 4)
    kind = tmpl[10]
    memcpy(out, src, end)
    for i in range(n_over):
        memcpy(&pos, tmpl + 11 + 3 * i, 2)
        out[pos] = tmpl[13 + 3 * i]
    c = _adjust(_be16(src + 24), ipdelta)
    out[24], out[25] = c >> 8, c & 0xFF
    if kind:
        at = 50 if kind == 6 else 40
        c = _adjust(_be16(src + at), l4delta)
        if kind == 17 and c == 0:
            c = 0xFFFF
        out[at], out[at + 1] = c >> 8, c & 0xFF
    return end


cdef struct fl_ipid:
    uint32_t counter
    uint32_t tstamp
    uint64_t key


cdef inline uint32_t _ipid_draw(fl_ipid* st, double now) noexcept nogil:
    """kdp.net.ipident.draw on a bucket's state: the ID; st advanced."""
    cdef uint32_t j = <uint32_t><int64_t>(now * 250.0)
    cdef uint32_t delta = 0, ident
    if j != st.tstamp:
        delta = <uint32_t>(_hstep(st.key, <uint64_t>j) % <uint64_t>(<uint32_t>(j - st.tstamp)))
        st.tstamp = j
    ident = st.counter + delta
    st.counter = ident + 1
    return ident


cdef Py_ssize_t _answer_source(const unsigned char* f, int kind, uint32_t ident,
                               unsigned char* out) noexcept nogil:
    """kdp.fast.replay.answer_source into out (room for the frame's length); its length."""
    cdef Py_ssize_t end = 14 + _be16(f + 16)
    cdef uint32_t c
    memcpy(out, f, end)
    memcpy(out, f + 6, 6)
    memcpy(out + 6, f, 6)
    out[15] = 0
    out[18], out[19] = (ident >> 8) & 0xFF, ident & 0xFF
    out[20] = 0x40 if kind == 1 else 0
    out[21] = 0
    out[22] = 64
    memcpy(out + 26, f + 30, 4)
    memcpy(out + 30, f + 26, 4)
    if kind == 1:
        memcpy(out + 34, f + 36, 2)
        memcpy(out + 36, f + 34, 2)
    else:
        out[34] = 0
        out[35] = 0
        out[36] = 0
        out[37] = 0
        c = (~_fl_fold(_fl_sum16(out + 34, end - 34))) & 0xFFFF
        out[36], out[37] = c >> 8, c & 0xFF
    out[24] = 0
    out[25] = 0
    c = (~_fl_fold(_fl_sum16(out + 14, 20))) & 0xFFFF
    out[24], out[25] = c >> 8, c & 0xFF
    return end


DEF QUOTE_MAX = 548


cdef inline uint32_t _answer_ip_length(const unsigned char* f, int kind) noexcept nogil:
    cdef uint32_t total = _be16(f + 16)
    if kind == 3:
        return 28 + (total if total < QUOTE_MAX else QUOTE_MAX)
    return total


cdef Py_ssize_t _error_source(const unsigned char* d, int typ, int code, uint32_t ident,
                              unsigned char* out) noexcept nogil:
    """kdp.fast.replay.error_source into out (room for 14 + 28 + QUOTE_MAX); its length."""
    cdef uint32_t total = _be16(d + 16)
    cdef uint32_t q = total if total < QUOTE_MAX else QUOTE_MAX
    cdef uint32_t n = 28 + q
    cdef uint32_t c
    memcpy(out, d + 6, 6)
    memcpy(out + 6, d, 6)
    out[12] = 0x08
    out[13] = 0
    out[14] = 0x45
    out[15] = 0xC0
    out[16], out[17] = n >> 8, n & 0xFF
    out[18], out[19] = (ident >> 8) & 0xFF, ident & 0xFF
    out[20] = 0
    out[21] = 0
    out[22] = 64
    out[23] = 1
    out[24] = 0
    out[25] = 0
    memcpy(out + 26, d + 30, 4)
    memcpy(out + 30, d + 26, 4)
    c = (~_fl_fold(_fl_sum16(out + 14, 20))) & 0xFFFF
    out[24], out[25] = c >> 8, c & 0xFF
    out[34] = typ
    out[35] = code
    memset(out + 36, 0, 6)
    memcpy(out + 42, d + 14, q)
    c = (~_fl_fold(_fl_sum16(out + 34, 8 + q))) & 0xFFFF
    out[36], out[37] = c >> 8, c & 0xFF
    return 14 + n


cdef inline int _udp_len_str(const unsigned char* f, char* out) noexcept nogil:
    """UDP's payload length in decimal into out; its length."""
    cdef char digits[8]
    cdef int nd = 0, i
    cdef uint32_t v = _be16(f + 38) - 8
    if v == 0:
        out[0] = 48
        return 1
    while v > 0:
        digits[nd] = 48 + (v % 10)
        v //= 10
        nd += 1
    for i in range(nd):
        out[i] = digits[nd - 1 - i]
    return nd


cdef inline void _rec_header(char* p, double t, uint32_t n) noexcept nogil:
    cdef uint32_t sec = <uint32_t><int64_t>t
    cdef int64_t usec = <int64_t>rint((t - <double>sec) * 1e6)
    if usec >= 1000000:
        sec += 1
        usec -= 1000000
    cdef uint32_t u = <uint32_t>usec
    memcpy(p, &sec, 4)
    memcpy(p + 4, &u, 4)
    memcpy(p + 8, &n, 4)
    memcpy(p + 12, &n, 4)


cdef class FlowEngine:
    """Compiled twin of kdp.fast.flowengine.FlowEngine."""

    cdef bint capture, text, carry_psh
    cdef fl_entry* entries
    cdef Py_ssize_t n_entries, cap_entries
    cdef int64_t* table
    cdef Py_ssize_t table_cap, table_used
    cdef double* ct
    cdef uint8_t* ct_dirty
    cdef Py_ssize_t n_ct, cap_ct
    cdef double* fdb
    cdef uint8_t* fdb_dirty
    cdef Py_ssize_t n_fdb, cap_fdb
    cdef fl_ipid* ipid
    cdef uint8_t* ipid_dirty
    cdef Py_ssize_t n_ipid, cap_ipid
    cdef fl_buf scratch                 # OP_ANSWER's source (the answer being built)
    cdef fl_buf scratch_q               # an ICMP error's quote: the frame as delivered
    cdef fl_buf* sinks
    cdef Py_ssize_t n_sinks, cap_sinks
    cdef fl_buf out
    cdef fl_vec dirty_ct, dirty_fdb, dirty_ipid, dirty_entries

    def __cinit__(self, bint capture, bint text=False):
        self.capture, self.text = capture, text
        self.table_cap = 1024
        self.table = <int64_t*>malloc(self.table_cap * sizeof(int64_t))
        if self.table == NULL:
            raise MemoryError()
        for i in range(self.table_cap):
            self.table[i] = -1

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.n_entries):
            free(self.entries[i].ops)
            free(self.entries[i].blob)
            free(self.entries[i].prefix)
            free(self.entries[i].suffix)
            free(self.entries[i].tail)
        free(self.entries)
        free(self.table)
        free(self.ct)
        free(self.ct_dirty)
        free(self.fdb)
        free(self.fdb_dirty)
        free(self.ipid)
        free(self.ipid_dirty)
        free(self.scratch.p)
        free(self.scratch_q.p)
        free(self.dirty_ipid.p)
        for i in range(self.n_sinks):
            free(self.sinks[i].p)
        free(self.sinks)
        free(self.out.p)
        free(self.dirty_ct.p)
        free(self.dirty_fdb.p)
        free(self.dirty_entries.p)

    # --- slots ----------------------------------------------------------------
    cdef int _grow(self, void** arr, uint8_t** dirty, Py_ssize_t* cap, Py_ssize_t n,
                   size_t size) except -1:
        cdef Py_ssize_t c
        cdef void* p
        cdef uint8_t* d
        if n < cap[0]:
            return 0
        c = cap[0] * 2 if cap[0] else 256
        p = realloc(arr[0], c * size)
        if p == NULL:
            raise MemoryError()
        arr[0] = p
        d = <uint8_t*>realloc(dirty[0], c)
        if d == NULL:
            raise MemoryError()
        memset(d + cap[0], 0, c - cap[0])
        dirty[0] = d
        cap[0] = c
        return 0

    def ct_new(self, double value):
        self._grow(<void**>&self.ct, &self.ct_dirty, &self.cap_ct, self.n_ct, sizeof(double))
        self.ct[self.n_ct] = value
        self.n_ct += 1
        return self.n_ct - 1

    def ct_get(self, Py_ssize_t slot):
        return self.ct[slot]

    def ct_set(self, Py_ssize_t slot, double value):
        self.ct[slot] = value

    def fdb_new(self, double value):
        self._grow(<void**>&self.fdb, &self.fdb_dirty, &self.cap_fdb, self.n_fdb, sizeof(double))
        self.fdb[self.n_fdb] = value
        self.n_fdb += 1
        return self.n_fdb - 1

    def fdb_get(self, Py_ssize_t slot):
        return self.fdb[slot]

    def fdb_set(self, Py_ssize_t slot, double value):
        self.fdb[slot] = value

    def ipid_new(self, uint32_t counter, uint32_t tstamp, uint64_t key):
        self._grow(<void**>&self.ipid, &self.ipid_dirty, &self.cap_ipid, self.n_ipid, sizeof(fl_ipid))
        self.ipid[self.n_ipid].counter = counter
        self.ipid[self.n_ipid].tstamp = tstamp
        self.ipid[self.n_ipid].key = key
        self.n_ipid += 1
        return self.n_ipid - 1

    def ipid_get(self, Py_ssize_t slot):
        return self.ipid[slot].counter, self.ipid[slot].tstamp

    def ipid_set(self, Py_ssize_t slot, uint32_t counter, uint32_t tstamp):
        self.ipid[slot].counter = counter
        self.ipid[slot].tstamp = tstamp

    # --- sinks and output -----------------------------------------------------
    def sink_new(self):
        cdef void* p
        if self.n_sinks == self.cap_sinks:
            self.cap_sinks = self.cap_sinks * 2 if self.cap_sinks else 16
            p = realloc(self.sinks, self.cap_sinks * sizeof(fl_buf))
            if p == NULL:
                raise MemoryError()
            self.sinks = <fl_buf*>p
        memset(&self.sinks[self.n_sinks], 0, sizeof(fl_buf))
        self.n_sinks += 1
        return self.n_sinks - 1

    def sink_append(self, Py_ssize_t sink, double t, bytes data):
        cdef fl_buf* b = &self.sinks[sink]
        cdef Py_ssize_t n = len(data)
        _buf_reserve(b, 16 + n)
        _rec_header(b.p + b.n, t, <uint32_t>n)
        memcpy(b.p + b.n + 16, PyBytes_AS_STRING(data), n)
        b.n += 16 + n

    def sink_take(self, Py_ssize_t sink):
        cdef fl_buf* b = &self.sinks[sink]
        out = b.p[:b.n] if b.n else b""
        b.n = 0
        return out

    def buffered(self):
        cdef Py_ssize_t i, n = self.out.n
        for i in range(self.n_sinks):
            n += self.sinks[i].n
        return n

    def out_take(self):
        out = self.out.p[:self.out.n] if self.out.n else b""
        self.out.n = 0
        return out

    def out_append(self, bytes data):
        """Append a line the caller made (a megaflow branch's: kdp.datapath.megaflow)."""
        cdef Py_ssize_t n = len(data)
        _buf_reserve(&self.out, n)
        memcpy(self.out.p + self.out.n, PyBytes_AS_STRING(data), n)
        self.out.n += n

    # --- entries --------------------------------------------------------------
    def set_carry_psh(self, bint on):
        self.carry_psh = on

    def add(self, bytes key, bytes prog, bytes blob, bytes rst, bytes prefix, bytes suffix,
            bytes tail=None):
        cdef int i
        cdef fl_entry* e
        cdef void* p
        cdef Py_ssize_t eid
        if len(key) != KEYLEN:
            raise ValueError("flow key of the wrong length")
        if self.n_entries == self.cap_entries:
            self.cap_entries = self.cap_entries * 2 if self.cap_entries else 256
            p = realloc(self.entries, self.cap_entries * sizeof(fl_entry))
            if p == NULL:
                raise MemoryError()
            self.entries = <fl_entry*>p
        eid = self.n_entries
        e = &self.entries[eid]
        memset(e, 0, sizeof(fl_entry))
        memcpy(e.key, PyBytes_AS_STRING(key), KEYLEN)
        e.hash = _key_hash(e.key)
        e.n_ops = <int>(len(prog) // sizeof(fl_op))
        e.ops = <fl_op*>malloc(len(prog) + 1)
        e.blob = <unsigned char*>malloc(len(blob) + 1)
        e.prefix = <char*>malloc(len(prefix) + 1)
        e.suffix = <char*>malloc(len(suffix) + 1)
        if e.ops == NULL or e.blob == NULL or e.prefix == NULL or e.suffix == NULL:
            raise MemoryError()
        memcpy(e.ops, PyBytes_AS_STRING(prog), len(prog))
        for i in range(e.n_ops):
            if e.ops[i].code == 6:
                e.answer_kind = e.ops[i].a
        memcpy(e.blob, PyBytes_AS_STRING(blob), len(blob))
        if len(rst) == 54:
            memcpy(e.rst, PyBytes_AS_STRING(rst), 54)
        memcpy(e.prefix, PyBytes_AS_STRING(prefix), len(prefix))
        memcpy(e.suffix, PyBytes_AS_STRING(suffix), len(suffix))
        e.prefix_n, e.suffix_n = len(prefix), len(suffix)
        if tail is not None:
            e.tail = <char*>malloc(len(tail) + 1)
            if e.tail == NULL:
                raise MemoryError()
            memcpy(e.tail, PyBytes_AS_STRING(tail), len(tail))
            e.tail_n = len(tail)
        e.live = True
        self.n_entries += 1
        self._index_put(eid)
        return eid

    cdef void _index_put(self, Py_ssize_t eid):
        cdef Py_ssize_t i, mask
        if (self.table_used + 1) * 2 > self.table_cap:
            self._rehash(self.table_cap * 2)
        mask = self.table_cap - 1
        i = <Py_ssize_t>(self.entries[eid].hash & mask)
        while self.table[i] >= 0:
            if memcmp(self.entries[self.table[i]].key, self.entries[eid].key, KEYLEN) == 0:
                self.table[i] = eid              # a newer decision for the same key
                return
            i = (i + 1) & mask
        self.table[i] = eid
        self.table_used += 1

    cdef void _rehash(self, Py_ssize_t cap):
        cdef int64_t* old = self.table
        cdef Py_ssize_t oldcap = self.table_cap, i
        self.table = <int64_t*>malloc(cap * sizeof(int64_t))
        self.table_cap, self.table_used = cap, 0
        for i in range(cap):
            self.table[i] = -1
        for i in range(oldcap):
            if old[i] >= 0 and self.entries[old[i]].live:
                self._index_put(old[i])
        free(old)

    cdef Py_ssize_t _find(self, const unsigned char* key) noexcept nogil:
        cdef uint64_t h = _key_hash(key)
        cdef Py_ssize_t mask = self.table_cap - 1
        cdef Py_ssize_t i = <Py_ssize_t>(h & mask)
        cdef int64_t eid
        while True:
            eid = self.table[i]
            if eid < 0:
                return -1
            if self.entries[eid].hash == h and memcmp(self.entries[eid].key, key, KEYLEN) == 0:
                return eid if self.entries[eid].live else -1
            i = (i + 1) & mask

    def remove(self, Py_ssize_t eid):
        cdef fl_entry* e = &self.entries[eid]
        if not e.live:
            return
        e.live = False
        # tombstones stay in the index (a dead entry never matches); rebuild
        # when dead ones pile up
        if self.table_used > 64 and self._dead() * 2 > self.table_used:
            self._rehash(self.table_cap)

    cdef Py_ssize_t _dead(self):
        cdef Py_ssize_t i, n = 0
        for i in range(self.table_cap):
            if self.table[i] >= 0 and not self.entries[self.table[i]].live:
                n += 1
        return n

    def take_hits(self, Py_ssize_t eid):
        cdef fl_entry* e = &self.entries[eid]
        n, b, a = e.hits, e.ip_bytes, e.answer_bytes
        e.hits = 0
        e.ip_bytes = 0
        e.answer_bytes = 0
        return n, e.last_now, b, a

    def take_dirty_slots(self):
        cdef Py_ssize_t i
        for i in range(self.dirty_ct.n):
            self.ct_dirty[self.dirty_ct.p[i]] = 0
        for i in range(self.dirty_fdb.n):
            self.fdb_dirty[self.dirty_fdb.p[i]] = 0
        for i in range(self.dirty_ipid.n):
            self.ipid_dirty[self.dirty_ipid.p[i]] = 0
        return (_vec_take(&self.dirty_ct), _vec_take(&self.dirty_fdb), _vec_take(&self.dirty_ipid))

    def take_dirty(self):
        cdef Py_ssize_t i
        for i in range(self.dirty_entries.n):
            self.entries[self.dirty_entries.p[i]].dirty = False
        return self.take_dirty_slots() + (_vec_take(&self.dirty_entries),)

    def key(self, frame):
        """The frame's flow key (kdp.fast.replay.frame_key), None when it is not replayable."""
        cdef unsigned char key[KEYLEN]
        cdef const unsigned char[:] f = frame
        if f.shape[0] == 0 or not _frame_key(&f[0], f.shape[0], key, self.carry_psh):
            return None
        return (<char*>key)[:KEYLEN]

    def lookup(self, frame):
        cdef unsigned char key[KEYLEN]
        cdef const unsigned char[:] f = frame
        if f.shape[0] == 0 or not _frame_key(&f[0], f.shape[0], key, self.carry_psh):
            return -1
        return self._find(key)

    # --- replay ---------------------------------------------------------------
    cdef bint _check(self, fl_entry* e, double now) noexcept nogil:
        cdef int i
        cdef fl_op* op
        for i in range(e.n_ops):
            op = &e.ops[i]
            if op.code == 1:
                if not (now < self.ct[op.slot] and now <= op.y):
                    return False
            elif op.code == 2:
                if now - self.fdb[op.slot] > op.x:
                    return False
        return True

    cdef int _line(self, fl_entry* e, Py_ssize_t index, const unsigned char* f,
                   fl_buf* out) noexcept nogil:
        cdef char digits[24]
        cdef int nd = 0, i, width
        cdef Py_ssize_t v = index
        if v == 0:
            digits[0] = 48
            nd = 1
        while v > 0:
            digits[nd] = 48 + (v % 10)
            v //= 10
            nd += 1
        if _buf_grow(out, e.prefix_n + e.suffix_n + e.tail_n + 40) < 0:
            return -1
        memcpy(out.p + out.n, e.prefix, e.prefix_n)
        out.n += e.prefix_n
        if self.text:
            out.p[out.n] = 35            # '#'
            out.n += 1
        for i in range(nd):
            out.p[out.n + i] = digits[nd - 1 - i]
        out.n += nd
        if self.text:
            width = nd
            while width < 5:
                out.p[out.n] = 32
                out.n += 1
                width += 1
        memcpy(out.p + out.n, e.suffix, e.suffix_n)
        out.n += e.suffix_n
        if e.tail != NULL:
            if f[23] == 6:
                out.n += _flag_str(f[47], out.p + out.n)
            else:
                out.n += _udp_len_str(f, out.p + out.n)
            memcpy(out.p + out.n, e.tail, e.tail_n)
            out.n += e.tail_n
        return 0

    cdef int _commit(self, Py_ssize_t eid, const unsigned char* f, double now,
                     const unsigned char* src1=NULL, const unsigned char* src2=NULL) noexcept nogil:
        """Replay entry eid on frame f (its checks passed): slots, captures into
        the sinks, hit counts. src1, src2: the caller's sources (a megaflow's
        socket steps' answers). -1 when memory ran out."""
        cdef fl_entry* e = &self.entries[eid]
        cdef unsigned char rst[54]
        cdef unsigned char* srcs[3]
        cdef fl_op* op
        cdef fl_buf* b
        cdef Py_ssize_t n, end
        cdef uint32_t ident
        cdef int i
        srcs[0] = <unsigned char*>f
        srcs[1] = <unsigned char*>src1 if src1 != NULL else rst
        srcs[2] = <unsigned char*>src2
        for i in range(e.n_ops):
            op = &e.ops[i]
            if op.code == 1:
                if not isnan(op.x):
                    self.ct[op.slot] = now + op.x
                    if not self.ct_dirty[op.slot]:
                        self.ct_dirty[op.slot] = 1
                        if _vec_push(&self.dirty_ct, op.slot) < 0:
                            return -1
            elif op.code == 3:
                self.fdb[op.slot] = now
                if not self.fdb_dirty[op.slot]:
                    self.fdb_dirty[op.slot] = 1
                    if _vec_push(&self.dirty_fdb, op.slot) < 0:
                        return -1
            elif op.code == 4:
                _rst_source(e.rst, f, op.a, op.slot, rst)
            elif op.code == 6:
                ident = _ipid_draw(&self.ipid[op.slot], now)
                if not self.ipid_dirty[op.slot]:
                    self.ipid_dirty[op.slot] = 1
                    if _vec_push(&self.dirty_ipid, op.slot) < 0:
                        return -1
                if _buf_grow(&self.scratch, 14 + 28 + _be16(f + 16)) < 0:
                    return -1
                srcs[2] = <unsigned char*>self.scratch.p
                if op.a == 3:
                    if _buf_grow(&self.scratch_q, 14 + _be16(f + 16)) < 0:
                        return -1
                    _apply(f, e.blob + <Py_ssize_t>op.x, <unsigned char*>self.scratch_q.p)
                    _error_source(<unsigned char*>self.scratch_q.p, op.b >> 8, op.b & 0xFF,
                                  ident & 0xFFFF, srcs[2])
                else:
                    _answer_source(f, op.a, ident & 0xFFFF, srcs[2])
            elif op.code == 5 and self.capture:
                if srcs[op.a] == NULL:
                    return -2                # a source the caller had to give
                end = 14 + _be16(srcs[op.a] + 16)
                b = &self.sinks[op.b]
                if _buf_grow(b, 16 + end) < 0:
                    return -1
                n = _apply(srcs[op.a], e.blob + op.slot, <unsigned char*>b.p + b.n + 16)
                _rec_header(b.p + b.n, now, <uint32_t>n)
                b.n += 16 + n
        e.hits += 1
        e.ip_bytes += _be16(f + 16)
        if e.answer_kind:
            e.answer_bytes += _answer_ip_length(f, e.answer_kind)
        e.last_now = now
        if not e.dirty:
            e.dirty = True
            if _vec_push(&self.dirty_entries, eid) < 0:
                return -1
        return 0

    cdef list _preview(self, Py_ssize_t eid, const unsigned char* f, double now, dict ipid,
                       const unsigned char* src1=NULL, const unsigned char* src2=NULL):
        """The capture records replaying eid on f would write, changing nothing;
        the IP ID slots it would draw from into ipid (slot: (counter, tstamp) after)."""
        cdef fl_entry* e = &self.entries[eid]
        cdef unsigned char rst[54]
        cdef unsigned char* srcs[3]
        cdef fl_op* op
        cdef Py_ssize_t n, end
        cdef fl_ipid st
        cdef uint32_t ident
        cdef int i
        caps = []
        srcs[0] = <unsigned char*>f
        srcs[1] = <unsigned char*>src1 if src1 != NULL else rst
        srcs[2] = <unsigned char*>src2
        answer = None
        for i in range(e.n_ops):
            op = &e.ops[i]
            if op.code == 4:
                _rst_source(e.rst, f, op.a, op.slot, rst)
            elif op.code == 6:
                st = self.ipid[op.slot]
                if op.slot in ipid:
                    st.counter, st.tstamp = ipid[op.slot]
                ident = _ipid_draw(&st, now)
                ipid[op.slot] = (st.counter, st.tstamp)
                answer = bytearray(14 + 28 + _be16(f + 16))
                srcs[2] = <unsigned char*>(<char*>answer)
                if op.a == 3:
                    quote = bytearray(14 + _be16(f + 16))
                    _apply(f, e.blob + <Py_ssize_t>op.x, <unsigned char*>(<char*>quote))
                    _error_source(<unsigned char*>(<char*>quote), op.b >> 8, op.b & 0xFF,
                                  ident & 0xFFFF, srcs[2])
                else:
                    _answer_source(f, op.a, ident & 0xFFFF, srcs[2])
            elif op.code == 5 and self.capture:
                if srcs[op.a] == NULL:
                    raise ValueError(f"flow cache entry {eid} replays a source the caller did not give")
                end = 14 + _be16(srcs[op.a] + 16)
                tmp = bytearray(16 + end)
                n = _apply(srcs[op.a], e.blob + op.slot, <unsigned char*>(<char*>tmp) + 16)
                _rec_header(<char*>tmp, now, <uint32_t>n)
                caps.append((op.b, bytes(tmp)))
        return caps

    def check(self, Py_ssize_t eid, double now):
        """Whether entry eid's checks pass at now (a live entry)."""
        if eid < 0 or eid >= self.n_entries or not self.entries[eid].live:
            return False
        return bool(self._check(&self.entries[eid], now))

    def commit(self, Py_ssize_t eid, frame, double now, bytes src1=None, bytes src2=None):
        """Replay entry eid on frame (its checks passed) without its output
        line: slots, captures, hit counts (the caller writes the line); src1,
        src2: the caller's sources 1 and 2 (a megaflow's socket steps' answers)."""
        cdef const unsigned char[:] f = frame
        if eid < 0 or eid >= self.n_entries or not self.entries[eid].live:
            raise ValueError(f"no live flow cache entry {eid}")
        cdef int rc = self._commit(eid, &f[0], now, _src(src1), _src(src2))
        if rc == -2:
            raise ValueError(f"flow cache entry {eid} replays a source the caller did not give")
        if rc < 0:
            raise MemoryError()

    def predict(self, Py_ssize_t eid, frame, double now, Py_ssize_t index, bytes src1=None,
                bytes src2=None):
        cdef const unsigned char[:] f = frame
        cdef fl_entry* e = &self.entries[eid]
        cdef fl_buf line
        cdef int i
        if not e.live or not self._check(e, now):
            return None
        ipid = {}
        caps = self._preview(eid, &f[0], now, ipid, _src(src1), _src(src2))
        ct, fdb = {}, {}
        for i in range(e.n_ops):
            if e.ops[i].code == 1 and not isnan(e.ops[i].x):
                ct[e.ops[i].slot] = now + e.ops[i].x
            elif e.ops[i].code == 3:
                fdb[e.ops[i].slot] = now
        memset(&line, 0, sizeof(fl_buf))
        try:
            if self._line(e, index, &f[0], &line) < 0:
                raise MemoryError()
            text = line.p[:line.n]
        finally:
            free(line.p)
        return text, caps, ct, fdb, ipid

    def run(self, buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t index, double now,
            double unit, bint big_endian, Py_ssize_t limit=-1):
        """Replay records of a classic pcap buffer from pos, without the GIL,
        until a frame is not a hit (status 1, pos at its record), no whole
        record is left (2) or limit frames were replayed (0). Returns (status,
        pos, index, now)."""
        cdef const unsigned char[:] mv = buf
        cdef int status
        if mv.shape[0] == 0:
            return 2, pos, index, now
        with nogil:
            status = self._run(&mv[0], &pos, end, &index, &now, unit, big_endian, limit)
        if status < 0:
            raise MemoryError()
        return status, pos, index, now

    cdef int _run(self, const unsigned char* base, Py_ssize_t* pos_p, Py_ssize_t end,
                  Py_ssize_t* index_p, double* now_p, double unit, bint big_endian,
                  Py_ssize_t limit) noexcept nogil:
        cdef unsigned char key[KEYLEN]
        cdef uint32_t sec, frac, incl
        cdef double t, n2
        cdef double now = now_p[0]
        cdef Py_ssize_t eid, done = 0, pos = pos_p[0], index = index_p[0]
        cdef const unsigned char* f
        cdef int status
        while True:
            if limit >= 0 and done >= limit:
                status = 0
                break
            if end - pos < 16:
                status = 2
                break
            memcpy(&sec, base + pos, 4)
            memcpy(&frac, base + pos + 4, 4)
            memcpy(&incl, base + pos + 8, 4)
            if big_endian:
                sec = _fl_bswap32(sec)
                frac = _fl_bswap32(frac)
                incl = _fl_bswap32(incl)
            if end - pos - 16 < <Py_ssize_t>incl:
                status = 2
                break
            f = base + pos + 16
            if not _frame_key(f, incl, key, self.carry_psh):
                status = 1
                break
            eid = self._find(key)
            if eid < 0:
                status = 1
                break
            t = <double>sec + <double>frac * unit
            n2 = now if now >= t else t
            if not self._check(&self.entries[eid], n2):
                status = 1
                break
            if self._commit(eid, f, n2) < 0 or self._line(&self.entries[eid], index, f, &self.out) < 0:
                status = -1
                break
            now = n2
            index += 1
            pos += 16 + incl
            done += 1
        pos_p[0], index_p[0], now_p[0] = pos, index, now
        return status


cdef inline const unsigned char* _src(bytes b):
    """A caller's source's bytes (NULL: none)."""
    return NULL if b is None else <const unsigned char*><char*>b


cdef inline uint32_t _fl_bswap32(uint32_t v) noexcept nogil:
    return ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24)


# The key length this engine is built for (kdp.fast.contract.FLOW_KEY_LEN, checked
# by contract.check_compiled).
FLOW_KEY_STRUCT_LEN = KEYLEN
