# _fp_conntrack.pxi (included by _fastpath.pyx): the compiled conntrack table,
# CtTable — the twin of kdp._purect.CtTable (which is the reference
# kdp.conntrack). 64-byte C entries in a pool; both tuples of every confirmed
# entry in one open-addressing index (linear probing, backward-shift delete);
# the NAT by-source multimap; a binary heap of (timeout, entry) items swept as
# the reference's heap is; capacity with the same early-drop buckets (bucket =
# reciprocal_scale of the same flow_hash); TCP states from the very table in
# kdp.conntrack.tcp (copied into C on first use); NAT tuple choice as
# kdp.conntrack.nat. Owns no policy: rules and hooks stay in kdp.netfilter.

from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

from .errors import CONNTRACK_FULL

cdef struct ct_entry_t:
    double timeout_at
    double created
    uint32_t osrc
    uint32_t odst
    uint16_t osport
    uint16_t odport
    uint32_t rsrc
    uint32_t rdst
    uint16_t rsport
    uint16_t rdport
    uint32_t id
    uint32_t seq            # insertion order in the table (free entries: next free slot)
    uint32_t mark
    uint16_t status
    uint16_t tcp
    uint8_t proto
    uint8_t masq_dev
    uint8_t flags
    uint8_t pad[5]

# One FLOW_DTYPE / CT_RESULT_DTYPE record (kdp.contract; checked at import).
cdef struct flow_t:
    uint32_t src
    uint32_t dst
    uint16_t sport
    uint16_t dport
    uint8_t proto
    uint8_t tcp_flags
    uint8_t local
    uint8_t checksum_ok
    double now

cdef struct ct_result_t:
    int64_t handle
    uint32_t id
    uint16_t status
    int8_t ctinfo
    int8_t direction
    uint8_t new
    int8_t code
    int8_t state

cdef enum:
    CT_OK_ = 0
    CT_INVALID_ = 1
    CT_DROP_ = 2
    CT_MISS_ = 3

cdef struct tup_t:
    uint32_t src
    uint32_t dst
    uint16_t sport
    uint16_t dport
    uint8_t proto

cdef struct heap_item_t:
    double t
    uint32_t slot
    uint32_t id

cdef struct ct_res_t:
    int64_t slot            # -1: no entry
    uint32_t id
    uint16_t status
    int8_t ctinfo
    int8_t direction
    uint8_t new
    int8_t code
    int8_t state
    int reason
    int arg1
    int arg2

cdef struct nat_range_t:
    bint map_ips
    uint32_t min_ip
    uint32_t max_ip
    bint proto_specified
    uint32_t min_port
    uint32_t max_port
    bint random
    bint random_fully
    bint persistent

# status bits (IPS_*), as kdp.conntrack.entry
cdef enum:
    S_SEEN_REPLY = 1 << 1
    S_ASSURED = 1 << 2
    S_CONFIRMED = 1 << 3
    S_SRC_NAT = 1 << 4
    S_DST_NAT = 1 << 5
    S_SRC_NAT_DONE = 1 << 7
    S_DST_NAT_DONE = 1 << 8
    S_DYING = 1 << 9

# entry flags
cdef enum:
    F_USED = 1
    F_TCP = 2
    F_INTABLE = 4
    F_BYSRC = 8

# ctinfo, direction, codes (kdp.contract)
cdef enum:
    CI_NEW = 0
    CI_ESTABLISHED = 1
    CI_RELATED = 2
    CI_ESTABLISHED_REPLY = 3
    CI_RELATED_REPLY = 4

# invalid reasons (formatted in Python by _ct_reason)
cdef enum:
    R_NONE = 0
    R_FLAGS = 1
    R_ICMP_TYPE = 2
    R_CSUM = 3
    R_INVERT = 4
    R_TCP_NEW = 5
    R_TCP_STATE = 6
    R_ICMP_NEW = 7
    R_REOPEN_LOOP = 8
    R_REL_CSUM = 9
    R_REL_UNTRACKABLE = 10
    R_REL_UNKNOWN = 11
    R_REL_DADDR = 12
    R_TABLE_FULL = 13
    R_NOMEM = 14

# TCP: states 0..9 (kdp.conntrack.tcp.STATES), T_IV/T_IG outcomes
cdef enum:
    T_NO = 0
    T_SS = 1
    T_SR = 2
    T_ES = 3
    T_FW = 4
    T_TW = 7
    T_CL = 8
    T_IV = 10
    T_IG = 11
    X_SYN = 0
    X_RST = 4
    O_ACCEPT = 0
    O_INVALID = 1
    O_KILL = 2
    O_REOPEN = 3

cdef enum:
    EMPTY_SLOT = 0xFFFFFFFF
    REF_BITS = 27           # index values: 5-bit hash tag << 27 | (slot << 1 | dir) + 1
    REF_MASK = (1 << 27) - 1
    MAX_SLOTS = 1 << 25      # entries (refs must stay below 2**27)
    EVICTION_RANGE = 8
    NAT_MAX_ATTEMPTS = 128
    P_ICMP = 1
    P_TCP = 6
    P_UDP = 17

# Filled once from kdp.conntrack.tcp (so the C table cannot drift from it).
cdef uint8_t _TCP_NEXT[2][6][10]
cdef uint8_t _TCP_INDEX_OF[256]
cdef uint8_t _TCP_FLAGS_OK[256]
cdef int16_t _ICMP_INV[256]
cdef uint8_t _ICMP_ERROR[256]
cdef uint8_t _ICMP_NEW_OK[256]
cdef bint _CT_READY = False
cdef object _CT_NAMES = None        # (STATES, TCP_INDEXES, CTINFOS, DIRECTIONS)


def _ct_init():
    """Copy the TCP state table, flag rules and ICMP maps from kdp.conntrack."""
    global _CT_READY, _CT_NAMES
    if _CT_READY:
        return
    from kdp.conntrack import tcp as tcpct
    from kdp.conntrack.entry import ORIGINAL, REPLY
    from kdp.conntrack.tuples import ICMP_INVERSE, ICMP_VALID_NEW
    from kdp.wire import ICMP_ERROR_TYPES
    from .fast.contract import CTINFOS, DIRECTIONS, TCP_INDEXES
    states = tcpct.STATES
    code = {s: i for i, s in enumerate(states)}
    code[tcpct.IV] = T_IV
    code[tcpct.IG] = T_IG
    if states[T_SS] != "SYN_SENT" or states[T_TW] != "TIME_WAIT" or len(states) != 10:
        raise RuntimeError("kdp.conntrack.tcp.STATES changed: update _fp_conntrack.pxi")
    for d, dname in enumerate((ORIGINAL, REPLY)):
        for x, xname in enumerate(TCP_INDEXES):
            for s, sname in enumerate(states):
                _TCP_NEXT[d][x][s] = code[tcpct.transition(dname, xname, sname)]
    for f in range(256):
        _TCP_INDEX_OF[f] = TCP_INDEXES.index(tcpct.tcp_index(f))
        _TCP_FLAGS_OK[f] = 1 if tcpct.flags_valid(f) else 0
    for t in range(256):
        _ICMP_INV[t] = ICMP_INVERSE.get(t, -1)
        _ICMP_NEW_OK[t] = 1 if t in ICMP_VALID_NEW else 0
        _ICMP_ERROR[t] = 1 if t in ICMP_ERROR_TYPES else 0
    _CT_NAMES = (states, TCP_INDEXES, CTINFOS, DIRECTIONS)
    _CT_READY = True


# --- tuples -------------------------------------------------------------------

cdef inline bint _port_proto(uint8_t p) noexcept nogil:
    return p == 6 or p == 17 or p == 132 or p == 33 or p == 136


cdef inline void _orig_of(const ct_entry_t* e, tup_t* t) noexcept nogil:
    t.src = e.osrc
    t.dst = e.odst
    t.sport = e.osport
    t.dport = e.odport
    t.proto = e.proto


cdef inline void _reply_of(const ct_entry_t* e, tup_t* t) noexcept nogil:
    t.src = e.rsrc
    t.dst = e.rdst
    t.sport = e.rsport
    t.dport = e.rdport
    t.proto = e.proto


cdef inline bint _dir_eq(const ct_entry_t* e, int d, const tup_t* t) noexcept nogil:
    if e.proto != t.proto:
        return False
    if d == 0:
        return e.osrc == t.src and e.odst == t.dst and e.osport == t.sport and e.odport == t.dport
    return e.rsrc == t.src and e.rdst == t.dst and e.rsport == t.sport and e.rdport == t.dport


cdef inline bint _tup_eq(const tup_t* a, const tup_t* b) noexcept nogil:
    return (a.proto == b.proto and a.src == b.src and a.dst == b.dst and a.sport == b.sport
            and a.dport == b.dport)


cdef inline bint _invert(const tup_t* t, tup_t* out) noexcept nogil:
    """Tuple.invert(); False when it cannot be inverted (ICMP non-query)."""
    cdef int inv
    out.proto = t.proto
    out.src = t.dst
    out.dst = t.src
    if t.proto == P_ICMP:
        inv = _ICMP_INV[t.dport >> 8]
        if inv < 0:
            return False
        out.sport = t.sport
        out.dport = <uint16_t>((inv << 8) | (t.dport & 0xFF))
        return True
    out.sport = t.dport
    out.dport = t.sport
    return True


# --- the table ------------------------------------------------------------------

@cython.final
cdef class CtTable:
    """Conntrack of one namespace in C structs (see kdp._purect.CtTable, the
    reference twin, for the API). Handles are slot << 32 | entry id."""

    cdef ct_entry_t* ents
    cdef kdp_region ents_reg, idx_reg, bys_reg
    cdef uint32_t ent_cap
    cdef uint32_t free_head
    cdef uint32_t n_used
    cdef uint32_t n_table
    cdef uint32_t* idx
    cdef uint32_t idx_cap
    cdef int idx_bits
    cdef uint32_t* bys
    cdef uint32_t bys_cap
    cdef int bys_bits
    cdef uint32_t n_bys
    cdef heap_item_t* heap
    cdef size_t heap_len
    cdef size_t heap_cap
    cdef uint32_t* scratch
    cdef uint32_t scratch_cap
    cdef readonly uint64_t max_entries
    cdef readonly uint64_t buckets
    cdef readonly bint tcp_loose
    cdef readonly bint checksum
    cdef readonly object seed
    cdef readonly object namespace
    cdef readonly object timeouts
    cdef uint64_t seed64
    cdef uint64_t smix
    cdef uint64_t smix_bucket
    cdef uint64_t bysrc_point
    cdef uint64_t nat_points[2][8]
    cdef double to_tcp[10]
    cdef double to_tcp_close
    cdef double to_tcp_unack
    cdef double to_udp
    cdef double to_udp_stream
    cdef double to_icmp
    cdef double to_generic
    cdef uint64_t next_id
    cdef uint32_t next_seq
    cdef int64_t st_found, st_new, st_insert, st_insert_failed, st_drop, st_early_drop
    cdef int64_t st_invalid, st_expired
    cdef list masq_names
    cdef dict masq_index

    def __cinit__(self):
        self.ents = NULL
        self.idx = NULL
        self.bys = NULL
        self.heap = NULL
        self.scratch = NULL

    def __init__(self, max_entries=262144, timeouts=None, *, buckets=None, tcp_loose=True,
                 checksum=True, seed=0, namespace=""):
        from kdp.conntrack.keyed import decision_point
        from kdp.conntrack.table import BUCKET_SALT
        from kdp.conntrack.timeouts import Timeouts
        from kdp.conntrack import tcp as tcpct
        _ct_init()
        self.max_entries = max_entries
        self.buckets = max(1, buckets if buckets is not None else max_entries or 1)
        if self.buckets > 0xFFFFFFFF:
            raise ValueError("at most 2**32 - 1 buckets")
        self.tcp_loose = tcp_loose
        self.checksum = checksum
        self.seed = seed
        self.seed64 = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self.smix = _seed_mix(self.seed64)
        self.namespace = namespace
        self.timeouts = timeouts or Timeouts()
        tm = self.timeouts
        for i, s in enumerate(tcpct.STATES):
            self.to_tcp[i] = 0.0 if s == "NONE" else float(tm.tcp(s))
        self.to_tcp_close = tm.tcp_close
        self.to_tcp_unack = tm.tcp_unack
        self.to_udp = tm.udp
        self.to_udp_stream = tm.udp_stream
        self.to_icmp = tm.icmp
        self.to_generic = tm.generic
        self.smix_bucket = _seed_mix(self.seed64 ^ <uint64_t>BUCKET_SALT)
        self.bysrc_point = <uint64_t>decision_point("ct-bysource")
        for m, manip in enumerate(("SRC", "DST")):
            for r in range(8):
                self.nat_points[m][r] = <uint64_t>decision_point("nat-port", namespace, manip, r)
        self.next_id = 1
        self.next_seq = 1
        self.masq_names = [None]
        self.masq_index = {None: 0}
        self._alloc(max(16, min(int(max_entries) if max_entries else 1024, 1 << 16)))

    def __dealloc__(self):
        if self.ents != NULL:
            kdp_free(self.ents, &self.ents_reg)
        if self.idx != NULL:
            kdp_free(self.idx, &self.idx_reg)
        if self.bys != NULL:
            kdp_free(self.bys, &self.bys_reg)
        free(self.heap)
        free(self.scratch)

    cdef _alloc(self, uint32_t cap):
        cdef uint32_t i
        self.ents = <ct_entry_t*>kdp_alloc(cap * sizeof(ct_entry_t), &self.ents_reg)
        self.heap_cap = 1024
        self.heap = <heap_item_t*>malloc(self.heap_cap * sizeof(heap_item_t))
        if self.ents == NULL or self.heap == NULL:
            raise MemoryError()
        self.ent_cap = cap
        for i in range(cap):
            self.ents[i].seq = i + 1 if i + 1 < cap else EMPTY_SLOT
        self.free_head = 0
        self.idx_bits = 4
        while (1 << self.idx_bits) < 4 * cap:
            self.idx_bits += 1
        self.idx_cap = 1 << self.idx_bits
        self.idx = <uint32_t*>kdp_alloc(self.idx_cap * sizeof(uint32_t), &self.idx_reg)
        self.bys_bits = self.idx_bits - 1
        self.bys_cap = 1 << self.bys_bits
        self.bys = <uint32_t*>kdp_alloc(self.bys_cap * sizeof(uint32_t), &self.bys_reg)
        if self.idx == NULL or self.bys == NULL:
            raise MemoryError()

    # --- memory ----------------------------------------------------------------
    cdef int _grow_pool(self) noexcept nogil:
        cdef uint32_t cap = self.ent_cap * 2, i
        cdef ct_entry_t* p
        if cap > MAX_SLOTS:
            return -1
        cdef kdp_region reg
        p = <ct_entry_t*>kdp_alloc(<size_t>cap * sizeof(ct_entry_t), &reg)
        if p == NULL:
            return -1
        memcpy(p, self.ents, <size_t>self.ent_cap * sizeof(ct_entry_t))
        kdp_free(self.ents, &self.ents_reg)
        self.ents = p
        self.ents_reg = reg
        for i in range(self.ent_cap, cap):
            p[i].seq = i + 1 if i + 1 < cap else self.free_head
        self.free_head = self.ent_cap
        self.ent_cap = cap
        return 0

    cdef int64_t _new_slot(self) noexcept nogil:
        cdef uint32_t s
        if self.free_head == EMPTY_SLOT:
            if self._grow_pool() < 0:
                return -1
        s = self.free_head
        self.free_head = self.ents[s].seq
        memset(&self.ents[s], 0, sizeof(ct_entry_t))
        self.ents[s].flags = F_USED
        self.n_used += 1
        return s

    cdef int64_t _take_slot(self, uint32_t want) noexcept nogil:
        """Allocate this free slot (unlink it from the free list)."""
        cdef uint32_t prev = EMPTY_SLOT, cur = self.free_head
        while cur != EMPTY_SLOT and cur != want:
            prev = cur
            cur = self.ents[cur].seq
        if cur == EMPTY_SLOT:
            return self._new_slot()
        if prev == EMPTY_SLOT:
            self.free_head = self.ents[cur].seq
        else:
            self.ents[prev].seq = self.ents[cur].seq
        memset(&self.ents[cur], 0, sizeof(ct_entry_t))
        self.ents[cur].flags = F_USED
        self.n_used += 1
        return cur

    cdef inline void _free_slot(self, uint32_t s) noexcept nogil:
        self.ents[s].flags = 0
        self.ents[s].id = 0
        self.ents[s].seq = self.free_head
        self.free_head = s
        self.n_used -= 1

    # --- hashing ---------------------------------------------------------------------
    cdef inline uint64_t _th(self, const tup_t* t) noexcept nogil:
        return _flow_base_s(self.smix_bucket, t.proto, t.src, t.dst, t.sport, t.dport)

    cdef inline uint64_t _ref_hash(self, uint32_t ref) noexcept nogil:
        cdef tup_t t
        ref &= REF_MASK
        cdef const ct_entry_t* e = &self.ents[(ref - 1) >> 1]
        if (ref - 1) & 1:
            _reply_of(e, &t)
        else:
            _orig_of(e, &t)
        return self._th(&t)

    cdef inline uint64_t _bh(self, uint8_t proto, uint32_t src, uint16_t sport) noexcept nogil:
        return _hstep(_flow_base_s(self.smix, proto, src, 0, sport, 0), self.bysrc_point)

    cdef inline uint32_t _bucket_of_hash(self, uint64_t h) noexcept nogil:
        return <uint32_t>(((h >> 32) * self.buckets) >> 32)

    # --- the tuple index ----------------------------------------------------------------
    cdef uint32_t _idx_find(self, const tup_t* t, uint64_t h) noexcept nogil:
        """The ref ((slot << 1 | dir) + 1) of tuple t (hash h), or 0."""
        cdef uint32_t mask = self.idx_cap - 1
        cdef uint32_t pos = <uint32_t>(h >> (64 - self.idx_bits))
        cdef uint32_t tag = <uint32_t>(h & 31)
        cdef uint32_t v, r
        while True:
            v = self.idx[pos]
            if v == 0:
                return 0
            if (v >> REF_BITS) == tag:
                r = v & REF_MASK
                if _dir_eq(&self.ents[(r - 1) >> 1], (r - 1) & 1, t):
                    return r
            pos = (pos + 1) & mask

    cdef inline uint32_t _idx_candidate(self, uint64_t h) noexcept nogil:
        """The first ref in h's probe run whose tag matches (usually the hit)."""
        cdef uint32_t mask = self.idx_cap - 1
        cdef uint32_t pos = <uint32_t>(h >> (64 - self.idx_bits))
        cdef uint32_t tag = <uint32_t>(h & 31)
        cdef uint32_t v
        while True:
            v = self.idx[pos]
            if v == 0 or (v >> REF_BITS) == tag:
                return v & REF_MASK
            pos = (pos + 1) & mask

    cdef void _idx_put(self, uint32_t ref, uint64_t h) noexcept nogil:
        cdef uint32_t mask = self.idx_cap - 1
        cdef uint32_t pos = <uint32_t>(h >> (64 - self.idx_bits))
        while self.idx[pos] != 0:
            pos = (pos + 1) & mask
        self.idx[pos] = ((<uint32_t>(h & 31)) << REF_BITS) | ref

    cdef void _idx_del(self, uint32_t ref, uint64_t h) noexcept nogil:
        cdef uint32_t mask = self.idx_cap - 1
        cdef uint32_t shift = 64 - self.idx_bits
        cdef uint32_t i = <uint32_t>(h >> shift)
        cdef uint32_t j, k
        cdef uint32_t n = 0
        while (self.idx[i] & REF_MASK) != ref:
            if self.idx[i] == 0 or n > self.idx_cap:
                return
            i = (i + 1) & mask
            n += 1
        j = i
        while True:                     # backward-shift deletion
            j = (j + 1) & mask
            if self.idx[j] == 0:
                break
            k = <uint32_t>(self._ref_hash(self.idx[j]) >> shift)
            if (i <= j and i < k and k <= j) or (i > j and (i < k or k <= j)):
                continue
            self.idx[i] = self.idx[j]
            i = j
        self.idx[i] = 0

    cdef int _idx_rehash(self) noexcept nogil:
        cdef int bits = self.idx_bits + 1
        cdef uint32_t cap = 1 << bits
        cdef uint32_t* old = self.idx
        cdef kdp_region old_reg = self.idx_reg
        cdef uint32_t oldcap = self.idx_cap, i, r
        if bits > 31:
            return -1
        self.idx = <uint32_t*>kdp_alloc(<size_t>cap * sizeof(uint32_t), &self.idx_reg)
        if self.idx == NULL:
            self.idx = old
            self.idx_reg = old_reg
            return -1
        self.idx_bits = bits
        self.idx_cap = cap
        for i in range(oldcap):
            r = old[i] & REF_MASK
            if r != 0:
                self._idx_put(r, self._ref_hash(r))
        kdp_free(old, &old_reg)
        return 0

    # --- the by-source multimap (nf_nat_bysource) ------------------------------------
    cdef void _bys_put(self, uint32_t s) noexcept nogil:
        cdef const ct_entry_t* e = &self.ents[s]
        cdef uint32_t mask = self.bys_cap - 1
        cdef uint32_t pos = <uint32_t>(self._bh(e.proto, e.osrc, e.osport) >> (64 - self.bys_bits))
        while self.bys[pos] != 0:
            pos = (pos + 1) & mask
        self.bys[pos] = s + 1
        self.n_bys += 1

    cdef void _bys_del(self, uint32_t s) noexcept nogil:
        cdef const ct_entry_t* e = &self.ents[s]
        cdef uint32_t mask = self.bys_cap - 1
        cdef uint32_t shift = 64 - self.bys_bits
        cdef uint32_t i = <uint32_t>(self._bh(e.proto, e.osrc, e.osport) >> shift)
        cdef uint32_t j, k, n = 0
        cdef const ct_entry_t* o
        while self.bys[i] != s + 1:
            if self.bys[i] == 0 or n > self.bys_cap:
                return
            i = (i + 1) & mask
            n += 1
        j = i
        while True:
            j = (j + 1) & mask
            if self.bys[j] == 0:
                break
            o = &self.ents[self.bys[j] - 1]
            k = <uint32_t>(self._bh(o.proto, o.osrc, o.osport) >> shift)
            if (i <= j and i < k and k <= j) or (i > j and (i < k or k <= j)):
                continue
            self.bys[i] = self.bys[j]
            i = j
        self.bys[i] = 0
        self.n_bys -= 1

    cdef int _bys_rehash(self) noexcept nogil:
        cdef int bits = self.bys_bits + 1
        cdef uint32_t cap = 1 << bits
        cdef uint32_t* old = self.bys
        cdef kdp_region old_reg = self.bys_reg
        cdef uint32_t oldcap = self.bys_cap, i
        if bits > 31:
            return -1
        self.bys = <uint32_t*>kdp_alloc(<size_t>cap * sizeof(uint32_t), &self.bys_reg)
        if self.bys == NULL:
            self.bys = old
            self.bys_reg = old_reg
            return -1
        self.bys_bits = bits
        self.bys_cap = cap
        self.n_bys = 0
        for i in range(oldcap):
            if old[i] != 0:
                self._bys_put(old[i] - 1)
        kdp_free(old, &old_reg)
        return 0

    # --- the expiry heap (as ConntrackTable._heap: (timeout, entry) items) --------------
    cdef inline bint _item_before(self, size_t a, size_t b) noexcept nogil:
        return self.heap[a].t < self.heap[b].t

    cdef int _heap_push(self, double t, uint32_t slot, uint32_t id) noexcept nogil:
        cdef size_t i, p
        cdef heap_item_t tmp
        cdef heap_item_t* nh
        if self.heap_len == self.heap_cap:
            nh = <heap_item_t*>realloc(self.heap, self.heap_cap * 2 * sizeof(heap_item_t))
            if nh == NULL:
                return -1
            self.heap = nh
            self.heap_cap *= 2
        i = self.heap_len
        self.heap_len += 1
        self.heap[i].t = t
        self.heap[i].slot = slot
        self.heap[i].id = id
        while i > 0:
            p = (i - 1) >> 1
            if not self._item_before(i, p):
                break
            tmp = self.heap[i]
            self.heap[i] = self.heap[p]
            self.heap[p] = tmp
            i = p
        return 0

    cdef void _heap_sift_down(self, size_t i) noexcept nogil:
        cdef size_t n = self.heap_len, l, r, m
        cdef heap_item_t tmp
        while True:
            l = 2 * i + 1
            if l >= n:
                return
            r = l + 1
            m = r if (r < n and self._item_before(r, l)) else l
            if not self._item_before(m, i):
                return
            tmp = self.heap[i]
            self.heap[i] = self.heap[m]
            self.heap[m] = tmp
            i = m

    cdef heap_item_t _heap_pop(self) noexcept nogil:
        cdef heap_item_t top = self.heap[0]
        self.heap_len -= 1
        if self.heap_len:
            self.heap[0] = self.heap[self.heap_len]
            self._heap_sift_down(0)
        return top

    cdef void _heap_rebuild(self) noexcept nogil:
        cdef uint32_t s
        cdef size_t i
        self.heap_len = 0
        for s in range(self.ent_cap):
            if self.ents[s].flags & F_INTABLE:
                self.heap[self.heap_len].t = self.ents[s].timeout_at
                self.heap[self.heap_len].slot = s
                self.heap[self.heap_len].id = self.ents[s].id
                self.heap_len += 1
        if self.heap_len > 1:
            i = (self.heap_len - 2) // 2 + 1
            while i > 0:
                i -= 1
                self._heap_sift_down(i)

    cdef inline bint _live(self, uint32_t slot, uint32_t id) noexcept nogil:
        return (slot < self.ent_cap and (self.ents[slot].flags & F_INTABLE) != 0
                and self.ents[slot].id == id)

    cdef int64_t _sweep(self, double now) noexcept nogil:
        """ConntrackTable.sweep()."""
        cdef int64_t n = 0
        cdef heap_item_t it
        cdef ct_entry_t* e
        while self.heap_len and self.heap[0].t <= now:
            it = self._heap_pop()
            if not self._live(it.slot, it.id):
                continue
            e = &self.ents[it.slot]
            if e.timeout_at <= now:
                self._remove(it.slot)
                self.st_expired += 1
                n += 1
            else:
                self._heap_push(e.timeout_at, it.slot, it.id)
        if self.heap_len > 2 * <size_t>self.n_table + 1024:
            self._heap_rebuild()
        return n

    # --- lifecycle ----------------------------------------------------------------------
    cdef void _remove(self, uint32_t s) noexcept nogil:
        """ConntrackTable.remove(): unindex a table entry and free its slot; an
        entry not in the table only becomes DYING."""
        cdef ct_entry_t* e = &self.ents[s]
        cdef tup_t o, r
        e.status |= S_DYING
        if not (e.flags & F_INTABLE):
            return
        _orig_of(e, &o)
        _reply_of(e, &r)
        if _tup_eq(&o, &r):                 # one index entry (the reply mapping)
            self._idx_del((s << 1) + 2, self._th(&o))
        else:
            self._idx_del((s << 1) + 1, self._th(&o))
            self._idx_del((s << 1) + 2, self._th(&r))
        if e.flags & F_BYSRC:
            self._bys_del(s)
        e.flags &= ~(F_INTABLE | F_BYSRC)
        self.n_table -= 1
        self._free_slot(s)

    cdef int _insert(self, uint32_t s) noexcept nogil:
        """ConntrackTable._insert()."""
        cdef ct_entry_t* e = &self.ents[s]
        cdef tup_t o, r
        cdef uint64_t ho
        cdef uint32_t pos, mask
        if (<uint64_t>self.n_table + 1) * 4 > self.idx_cap:
            if self._idx_rehash() < 0:
                return -1
        if (<uint64_t>self.n_bys + 1) * 2 > self.bys_cap:
            if self._bys_rehash() < 0:
                return -1
        e = &self.ents[s]
        e.flags |= F_INTABLE
        e.seq = self.next_seq
        self.next_seq += 1
        self.n_table += 1
        _orig_of(e, &o)
        _reply_of(e, &r)
        ho = self._th(&o)
        if _tup_eq(&o, &r):
            self._idx_put((s << 1) + 2, ho)      # the later (reply) mapping wins
        else:
            self._idx_put((s << 1) + 1, ho)
            self._idx_put((s << 1) + 2, self._th(&r))
        if e.status & S_SRC_NAT_DONE:
            self._bys_put(s)
            e.flags |= F_BYSRC
        return self._heap_push(e.timeout_at, s, e.id)

    cdef int64_t _lookup(self, const tup_t* t, double now, int* direction) noexcept nogil:
        """ConntrackTable.lookup() with lazy expiry: slot or -1."""
        cdef uint32_t r = self._idx_find(t, self._th(t))
        cdef uint32_t s
        if r == 0:
            return -1
        s = (r - 1) >> 1
        if self.ents[s].timeout_at <= now:
            self.st_expired += 1
            self._remove(s)
            return -1
        direction[0] = (r - 1) & 1
        return s

    cdef int _collect_bucket(self, uint32_t b, uint32_t* out, int cap) noexcept nogil:
        """Slots of the table entries with a tuple in early-drop bucket b."""
        cdef uint64_t lo32 = ((<uint64_t>b << 32) + self.buckets - 1) // self.buckets
        cdef uint64_t hi32 = ((<uint64_t>(b + 1) << 32) + self.buckets - 1) // self.buckets
        cdef int shift = 32 - self.idx_bits
        cdef uint32_t mask = self.idx_cap - 1
        cdef uint64_t p_lo = lo32 >> shift
        cdef uint64_t span = ((hi32 - 1) >> shift) - p_lo
        cdef uint64_t steps = 0
        cdef uint32_t r, s
        cdef int n = 0, k
        cdef bint seen
        while steps <= <uint64_t>self.idx_cap + span:
            r = self.idx[(p_lo + steps) & mask] & REF_MASK
            if r == 0:
                if steps > span:
                    break
            elif self._bucket_of_hash(self._ref_hash(r)) == b:
                s = (r - 1) >> 1
                seen = False
                for k in range(n):
                    if out[k] == s:
                        seen = True
                        break
                if not seen and n < cap:
                    out[n] = s
                    n += 1
            steps += 1
        return n

    cdef int _early_drop(self, const tup_t* orig, double now) noexcept nogil:
        """ConntrackTable._early_drop(): evict the non-ASSURED entries of the first
        bucket (of up to 8 from the new tuple's) holding any. Returns how many."""
        cdef uint32_t start = self._bucket_of_hash(self._th(orig))
        cdef uint64_t i, lim = EVICTION_RANGE if self.buckets > EVICTION_RANGE else self.buckets
        cdef int n, k, victims
        cdef uint32_t s, b
        cdef uint32_t* nb
        if self.scratch_cap < 2 * self.n_table + 2:
            nb = <uint32_t*>realloc(self.scratch, (2 * <size_t>self.n_table + 2) * sizeof(uint32_t))
            if nb == NULL:
                return 0
            self.scratch = nb
            self.scratch_cap = 2 * self.n_table + 2
        for i in range(lim):
            b = <uint32_t>((start + i) % self.buckets)
            n = self._collect_bucket(b, self.scratch, self.scratch_cap)
            victims = 0
            for k in range(n):
                s = self.scratch[k]
                if self.ents[s].timeout_at <= now:
                    self._remove(s)
                    self.st_expired += 1
                    self.scratch[k] = EMPTY_SLOT
                elif not (self.ents[s].status & S_ASSURED):
                    victims += 1
                else:
                    self.scratch[k] = EMPTY_SLOT
            for k in range(n):
                if self.scratch[k] != EMPTY_SLOT:
                    self._remove(self.scratch[k])
            if victims:
                return victims
        return 0

    cdef int _make_room(self, const tup_t* orig, double now) noexcept nogil:
        """ConntrackTable.make_room(): 1 ok, 0 table full (drop)."""
        cdef int ev
        if self.max_entries == 0 or self.n_table < self.max_entries:
            return 1
        self._sweep(now)
        if self.n_table < self.max_entries:
            return 1
        ev = self._early_drop(orig, now)
        if ev:
            self.st_early_drop += ev
            return 1
        self.st_drop += 1
        return 0

    # --- conntrack_in -----------------------------------------------------------------
    cdef int _tcp_packet(self, ct_entry_t* e, int d, uint8_t flags, double now,
                         int* old_out) noexcept nogil:
        """kdp.conntrack.tcp.tcp_packet()."""
        cdef int old, new, index, last_index, last_dir
        cdef double timeout
        cdef uint16_t bits
        if not (e.flags & F_TCP):
            e.flags |= F_TCP
            e.tcp = 5 << 4              # NONE, last index NONE, last dir original
        bits = e.tcp
        old = bits & 0xF
        last_index = (bits >> 4) & 0x7
        last_dir = (bits >> 7) & 1
        old_out[0] = old
        index = _TCP_INDEX_OF[flags]
        new = _TCP_NEXT[d][index][old]
        if new == T_SS and old >= T_TW:
            if (bits & (3 << 8)) or (last_dir == d and last_index == X_RST):
                return O_REOPEN
            new = T_IG
        if new == T_IG:
            e.tcp = (bits & ~(0xF << 4)) | (index << 4) | (d << 7)
            return O_ACCEPT
        if new == T_IV:
            return O_INVALID
        bits = (bits & ~0xFF) | new | (index << 4) | (d << 7)
        if old != new and new == T_FW:
            bits |= 1 << (8 + d)
        e.tcp = bits
        timeout = self.to_tcp_close if index == X_RST else self.to_tcp[new]
        if not (e.status & S_SEEN_REPLY):
            if flags & 0x04:
                return O_KILL
            if index == X_SYN and old == T_SS:
                return O_ACCEPT
            if new == T_ES and timeout > self.to_tcp_unack:
                timeout = self.to_tcp_unack
        elif not (e.status & S_ASSURED) and (old == T_SR or old == T_ES) and new == T_ES:
            e.status |= S_ASSURED
        e.timeout_at = now + timeout
        return O_ACCEPT

    cdef int _handle(self, ct_entry_t* e, int d, bint new, uint8_t flags, double now,
                     ct_res_t* res) noexcept nogil:
        """track._handle(): the per-protocol packet() handler."""
        cdef int old = 0, outcome
        cdef uint8_t nstate
        cdef double extra
        cdef bint stream
        if e.proto == P_TCP:
            if new:
                nstate = _TCP_NEXT[0][_TCP_INDEX_OF[flags]][T_NO]
                if not (nstate == T_SS or (nstate != T_IV and nstate != T_IG and self.tcp_loose)):
                    res.reason = R_TCP_NEW
                    return O_INVALID
            outcome = self._tcp_packet(e, d, flags, now, &old)
            if outcome == O_INVALID:
                res.reason = R_TCP_STATE
                res.arg1 = old
                res.arg2 = d
            return outcome
        if e.proto == P_UDP:
            if e.status & S_SEEN_REPLY:
                extra = self.to_udp
                stream = False
                if now > e.created + 2.0:
                    extra = self.to_udp_stream
                    stream = not (e.status & S_ASSURED)
                e.timeout_at = now + extra
                if stream:
                    e.status |= S_ASSURED
            else:
                e.timeout_at = now + self.to_udp
            return O_ACCEPT
        if e.proto == P_ICMP:
            if not _ICMP_NEW_OK[e.odport >> 8]:
                res.reason = R_ICMP_NEW
                res.arg1 = e.odport >> 8
                return O_INVALID
            e.timeout_at = now + self.to_icmp
            return O_ACCEPT
        e.timeout_at = now + self.to_generic
        return O_ACCEPT

    cdef inline void _fill(self, ct_res_t* res, uint32_t s) noexcept nogil:
        cdef const ct_entry_t* e = &self.ents[s]
        res.status = e.status
        res.state = (e.tcp & 0xF) if (e.flags & F_TCP) else -1

    cdef void _invalid(self, ct_res_t* res, int reason) noexcept nogil:
        self.st_invalid += 1
        res.slot = -1
        res.code = CT_INVALID_
        res.ctinfo = -1
        res.direction = -1
        res.new = 0
        res.state = -1
        res.status = 0
        if reason != R_NONE:
            res.reason = reason

    cdef void _process(self, const tup_t* t, uint8_t flags, double now, bint prerouting,
                       bint csum_ok, ct_res_t* res) noexcept nogil:
        """conntrack_in() for a packet that is not an ICMP error."""
        cdef int attempt, d = 0, outcome
        cdef int64_t s
        cdef tup_t rep
        cdef ct_entry_t* e
        cdef bint is_new
        memset(res, 0, sizeof(ct_res_t))
        res.slot = -1
        res.ctinfo = -1
        res.direction = -1
        res.state = -1
        if t.proto == P_TCP and not _TCP_FLAGS_OK[flags]:
            self._invalid(res, R_FLAGS)
            return
        if t.proto == P_ICMP and (t.dport >> 8) > 18:
            self._invalid(res, R_ICMP_TYPE)
            res.arg1 = t.dport >> 8
            return
        if (prerouting and self.checksum and not csum_ok
                and (t.proto == P_TCP or t.proto == P_UDP or t.proto == P_ICMP)):
            self._invalid(res, R_CSUM)
            return
        for attempt in range(2):
            # resolve_normal_ct()
            is_new = False
            s = self._lookup(t, now, &d)
            if s >= 0:
                self.st_found += 1
                e = &self.ents[s]
                if d == 1:
                    res.ctinfo = CI_ESTABLISHED_REPLY
                else:
                    res.ctinfo = CI_ESTABLISHED if (e.status & S_SEEN_REPLY) else CI_NEW
            else:
                if not _invert(t, &rep):
                    self._invalid(res, R_INVERT)
                    return
                if not self._make_room(t, now):
                    res.code = CT_DROP_
                    res.reason = R_TABLE_FULL
                    res.ctinfo = -1
                    return
                s = self._new_slot()
                if s < 0:
                    res.code = CT_DROP_
                    res.reason = R_NOMEM
                    res.ctinfo = -1
                    return
                if self.next_id > 0xFFFFFFFFU:
                    self._free_slot(<uint32_t>s)
                    res.code = CT_DROP_
                    res.reason = R_NOMEM
                    res.ctinfo = -1
                    return
                e = &self.ents[s]
                e.id = <uint32_t>self.next_id
                self.next_id += 1
                self.st_new += 1
                e.osrc = t.src
                e.odst = t.dst
                e.osport = t.sport
                e.odport = t.dport
                e.proto = t.proto
                e.rsrc = rep.src
                e.rdst = rep.dst
                e.rsport = rep.sport
                e.rdport = rep.dport
                e.created = now
                if t.proto == P_TCP:
                    e.flags |= F_TCP
                    e.tcp = 5 << 4
                d = 0
                res.ctinfo = CI_NEW
                is_new = True
            res.direction = d
            res.new = is_new
            outcome = self._handle(e, d, is_new, flags, now, res)
            if outcome == O_REOPEN:
                self._remove(<uint32_t>s)
                continue
            if outcome == O_INVALID:
                if is_new:
                    self._free_slot(<uint32_t>s)
                self._invalid(res, R_NONE)
                return
            res.slot = s
            res.id = e.id
            res.code = CT_OK_
            self._fill(res, <uint32_t>s)
            if outcome == O_KILL:
                self._remove(<uint32_t>s)       # frees the slot; report its last status
                res.status |= S_DYING
                if d == 1:
                    res.status |= S_SEEN_REPLY
            elif d == 1 and not (e.status & S_SEEN_REPLY):
                e.status |= S_SEEN_REPLY
                res.status = e.status
            return
        self._invalid(res, R_REOPEN_LOOP)

    cdef void _related(self, uint32_t outer_dst, const tup_t* q, double now, bint prerouting,
                       bint csum_ok, ct_res_t* res) noexcept nogil:
        """_icmp_error(): an ICMP error quoting tuple q."""
        cdef tup_t inner
        cdef int d = 0
        cdef int64_t s
        cdef const ct_entry_t* e
        cdef uint32_t tdst
        memset(res, 0, sizeof(ct_res_t))
        res.slot = -1
        res.ctinfo = -1
        res.direction = -1
        res.state = -1
        if prerouting and self.checksum and not csum_ok:
            self._invalid(res, R_REL_CSUM)
            return
        if not _invert(q, &inner):
            self._invalid(res, R_REL_UNTRACKABLE)
            return
        s = self._lookup(&inner, now, &d)
        if s < 0:
            self._invalid(res, R_REL_UNKNOWN)
            return
        e = &self.ents[s]
        tdst = e.odst if d == 0 else e.rdst
        if tdst != outer_dst:
            self._invalid(res, R_REL_DADDR)
            res.arg1 = <int>tdst
            return
        res.slot = s
        res.id = e.id
        res.code = CT_OK_
        res.direction = d
        res.ctinfo = CI_RELATED_REPLY if d == 1 else CI_RELATED
        self._fill(res, <uint32_t>s)

    cdef int _confirm(self, uint32_t s, uint32_t id, double now) noexcept nogil:
        """ConntrackTable.confirm() of a pending entry: 1 ok, 0 clash, -1 no memory."""
        cdef ct_entry_t* e
        cdef tup_t o, r
        cdef int d
        if s >= self.ent_cap or not (self.ents[s].flags & F_USED) or self.ents[s].id != id:
            return 1                    # removed already (CONFIRMED|DYING)
        e = &self.ents[s]
        if e.status & (S_CONFIRMED | S_DYING):
            if not (e.flags & F_INTABLE):
                self._free_slot(s)
            return 1
        _orig_of(e, &o)
        _reply_of(e, &r)
        if self._lookup(&o, now, &d) >= 0 or self._lookup(&r, now, &d) >= 0:
            self.st_insert_failed += 1
            self._free_slot(s)
            return 0
        self._sweep(now)
        e = &self.ents[s]
        e.status |= S_CONFIRMED
        if self._insert(s) < 0:
            return -1
        self.st_insert += 1
        return 1

    # --- NAT (kdp.conntrack.nat) --------------------------------------------------------
    cdef bint _used(self, const tup_t* t, uint32_t self_slot, double now) noexcept nogil:
        cdef tup_t inv
        cdef int d
        cdef int64_t s
        if not _invert(t, &inv):
            return False
        s = self._lookup(&inv, now, &d)
        return s >= 0 and <uint32_t>s != self_slot

    cdef inline uint16_t _key(self, const tup_t* t, bint src) noexcept nogil:
        if t.proto == P_ICMP or src:
            return t.sport
        return t.dport

    cdef inline void _with_key(self, tup_t* t, bint src, uint32_t v) noexcept nogil:
        if t.proto == P_ICMP or src:
            t.sport = <uint16_t>v
        else:
            t.dport = <uint16_t>v

    cdef inline bint _l4_in_range(self, const tup_t* t, bint src,
                                  const nat_range_t* rng) noexcept nogil:
        cdef uint16_t k
        if t.proto != P_ICMP and not _port_proto(t.proto):
            return True
        k = self._key(t, src)
        return rng.min_port <= k and k <= rng.max_port

    cdef inline bint _in_range(self, const tup_t* t, const nat_range_t* rng) noexcept nogil:
        if rng.map_ips and not (rng.min_ip <= t.src and t.src <= rng.max_ip):
            return False
        return not rng.proto_specified or self._l4_in_range(t, True, rng)

    cdef bint _appropriate_src(self, const tup_t* t, const nat_range_t* rng,
                               double now, tup_t* out) noexcept nogil:
        """find_appropriate_src(): the oldest (table order) by-source mapping in range."""
        cdef uint32_t mask = self.bys_cap - 1
        cdef uint32_t pos = <uint32_t>(self._bh(t.proto, t.src, t.sport) >> (64 - self.bys_bits))
        cdef uint32_t s, best_seq
        cdef const ct_entry_t* o
        cdef tup_t rep, mapped, res
        cdef bint found = False
        best_seq = 0xFFFFFFFF
        while self.bys[pos] != 0:
            s = self.bys[pos] - 1
            o = &self.ents[s]
            if o.proto == t.proto and o.osrc == t.src and o.osport == t.sport and o.seq < best_seq:
                _reply_of(o, &rep)
                if _invert(&rep, &mapped):
                    res.proto = t.proto
                    res.src = mapped.src
                    res.dst = t.dst
                    res.sport = mapped.sport
                    res.dport = t.dport
                    if self._in_range(&res, rng):
                        out[0] = res
                        best_seq = o.seq
                        found = True
            pos = (pos + 1) & mask
        return found

    cdef void _best_ip(self, tup_t* t, const nat_range_t* rng, bint src) noexcept nogil:
        cdef uint32_t ip, j, initval
        if not rng.map_ips:
            return
        if rng.min_ip == rng.max_ip:
            ip = rng.min_ip
        else:
            initval = 0 if rng.persistent else _bswap32(t.dst)
            j = _jhash2_4(_bswap32(t.src), 0, 0, 0, initval)
            ip = rng.min_ip + <uint32_t>((<uint64_t>j * (<uint64_t>(rng.max_ip - rng.min_ip) + 1)) >> 32)
        if src:
            t.src = ip
        else:
            t.dst = ip

    cdef void _pick_port(self, uint32_t s, tup_t* t, const nat_range_t* rng, bint src,
                         double now) noexcept nogil:
        """nf_nat_l4proto_unique_tuple(); t is updated in place."""
        cdef uint32_t lo, size, off, attempts, i, port
        cdef int rnd = 0
        cdef tup_t cand, base = t[0]
        cdef const ct_entry_t* e = &self.ents[s]
        cdef bint hashed = rng.random or rng.random_fully or src
        if t.proto == P_ICMP:
            if not rng.proto_specified:
                lo = 0
                size = 65536
            else:
                lo = rng.min_port
                size = rng.max_port - rng.min_port + 1
        elif _port_proto(t.proto):
            if not rng.proto_specified:
                if not src:
                    return
                port = self._key(t, src)
                if port < 512:
                    lo = 1
                    size = 511
                elif port < 1024:
                    lo = 600
                    size = 1023 - 600 + 1
                else:
                    lo = 1024
                    size = 65535 - 1024 + 1
            else:
                lo = rng.min_port if rng.min_port <= rng.max_port else rng.max_port
                size = (rng.max_port if rng.min_port <= rng.max_port else rng.min_port) - lo + 1
        else:
            return
        off = 0
        if hashed:
            off = <uint32_t>(_flow_hash(self.seed64, self.nat_points[0 if src else 1][0], e.proto,
                                        e.osrc, e.odst, e.osport, e.odport) & 0xFFFF)
        attempts = size if size < NAT_MAX_ATTEMPTS else NAT_MAX_ATTEMPTS
        cand = base
        while True:
            for i in range(attempts):
                cand = base
                self._with_key(&cand, src, lo + off % size)
                if not self._used(&cand, s, now):
                    t[0] = cand
                    return
                off = (off + 1) & 0xFFFF
            if attempts >= size or attempts < 16:
                t[0] = cand
                return
            attempts //= 2
            rnd += 1
            off = 0
            if hashed:
                off = <uint32_t>(_flow_hash(self.seed64, self.nat_points[0 if src else 1][rnd & 7],
                                            e.proto, e.osrc, e.odst, e.osport, e.odport) & 0xFFFF)

    cdef int _setup_nat(self, uint32_t s, bint src, const nat_range_t* rng,
                        double now) noexcept nogil:
        """setup_nat(): 1 when the tuple changed."""
        cdef ct_entry_t* e = &self.ents[s]
        cdef tup_t rep, cur, t, found
        cdef bint random_all = rng.random or rng.random_fully
        cdef bint done = False
        _reply_of(e, &rep)
        _invert(&rep, &cur)
        t = cur
        if src and not random_all:
            if self._in_range(&cur, rng):
                if not self._used(&cur, s, now):
                    done = True
            elif self._appropriate_src(&cur, rng, now, &found):
                if not self._used(&found, s, now):
                    t = found
                    done = True
        if not done:
            t = cur
            self._best_ip(&t, rng, src)
            if not random_all:
                if rng.proto_specified:
                    if self._l4_in_range(&t, src, rng) and (rng.min_port == rng.max_port
                                                           or not self._used(&t, s, now)):
                        done = True
                elif not self._used(&t, s, now):
                    done = True
            if not done:
                self._pick_port(s, &t, rng, src, now)
        e = &self.ents[s]
        changed = not _tup_eq(&t, &cur)
        if changed:
            _invert(&t, &rep)
            e.rsrc = rep.src
            e.rdst = rep.dst
            e.rsport = rep.sport
            e.rdport = rep.dport
            e.status |= S_SRC_NAT if src else S_DST_NAT
        e.status |= S_SRC_NAT_DONE if src else S_DST_NAT_DONE
        return 1 if changed else 0

    # --- the Python API -----------------------------------------------------------------
    cdef int64_t _slot_of(self, handle) except -2:
        """The slot of a live handle (pending or in the table), else -1."""
        cdef uint64_t h
        cdef uint32_t s, id
        if handle is None:
            return -1
        h = <uint64_t>handle
        s = <uint32_t>(h >> 32)
        id = <uint32_t>(h & 0xFFFFFFFF)
        if s >= self.ent_cap or not (self.ents[s].flags & F_USED) or self.ents[s].id != id:
            return -1
        return s

    cdef object _verdict(self, ct_res_t* res, tuple inputs):
        states, _idx, ctinfos, dirs = _CT_NAMES
        if res.code == CT_DROP_:
            if res.reason == R_NOMEM:
                raise MemoryError("conntrack table")
            return CtVerdict(None, None, None, None, False, CONNTRACK_FULL, None, None, 0)
        if res.code == CT_INVALID_:
            return CtVerdict(None, None, None, None, False, None,
                             _ct_reason(res.reason, res.arg1, res.arg2, inputs), None, 0)
        handle = (<uint64_t>res.slot << 32) | res.id
        return CtVerdict(handle, res.id, dirs[res.direction], ctinfos[res.ctinfo], bool(res.new),
                         None, None, states[res.state] if res.state >= 0 else None, res.status)

    def process(self, proto, src, dst, sport, dport, flags, now, *, prerouting=True,
                checksum_ok=True):
        """nf_conntrack_in() for a packet with this tuple (not an ICMP error)."""
        cdef tup_t t
        cdef ct_res_t res
        check_process_args(proto, dport)
        t.proto = proto
        t.src = int(src)
        t.dst = int(dst)
        t.sport = sport
        t.dport = dport
        self._process(&t, flags, now, prerouting, checksum_ok, &res)
        return self._verdict(&res, ("process", proto, src, dst, sport, dport, flags))

    def related(self, outer_src, outer_dst, icmp_type, icmp_code, proto, src, dst, sport, dport,
                now, *, prerouting=True, checksum_ok=True):
        """An ICMP error (type 3/4/5/11/12) quoting a packet with this tuple."""
        cdef tup_t q
        cdef ct_res_t res
        q.proto = proto
        q.src = int(src)
        q.dst = int(dst)
        q.sport = sport
        q.dport = dport
        self._related(int(outer_dst), &q, now, prerouting, checksum_ok, &res)
        return self._verdict(&res, ("related", proto, src, dst, sport, dport, int(outer_dst)))

    def nat(self, handle, manip, now, min_ip=None, max_ip=None, min_port=None, max_port=None, *,
            random=False, random_fully=False, persistent=False):
        """nf_nat_setup_info() on a pending entry; True when the tuple changed."""
        cdef nat_range_t rng
        check_nat_args(manip, min_ip, max_ip, min_port, max_port)
        cdef int64_t s = self._slot_of(handle)
        if s < 0:
            return False
        if self.ents[s].flags & F_INTABLE:
            raise ValueError("NAT bindings are set up before the entry is confirmed")
        rng.map_ips = min_ip is not None
        rng.min_ip = int(min_ip) if min_ip is not None else 0
        rng.max_ip = int(max_ip) if max_ip is not None else 0
        rng.proto_specified = min_port is not None
        rng.min_port = min_port if min_port is not None else 0
        rng.max_port = max_port if max_port is not None else 0
        rng.random = random
        rng.random_fully = random_fully
        rng.persistent = persistent
        return bool(self._setup_nat(<uint32_t>s, manip == "SRC", &rng, now))

    def null_binding(self, handle, manip, now):
        """nf_nat_alloc_null_binding(): keep the address, make the reply unique."""
        cdef nat_range_t rng
        check_nat_args(manip)
        cdef int64_t s = self._slot_of(handle)
        if s < 0:
            return False
        if self.ents[s].flags & F_INTABLE:
            raise ValueError("NAT bindings are set up before the entry is confirmed")
        memset(&rng, 0, sizeof(nat_range_t))
        rng.map_ips = True
        rng.min_ip = rng.max_ip = self.ents[s].rdst if manip == "SRC" else self.ents[s].rsrc
        return bool(self._setup_nat(<uint32_t>s, manip == "SRC", &rng, now))

    def confirm(self, handle, now):
        if handle is None:
            return True
        cdef uint64_t h = <uint64_t>handle
        cdef int r = self._confirm(<uint32_t>(h >> 32), <uint32_t>(h & 0xFFFFFFFF), now)
        if r < 0:
            raise MemoryError("conntrack table")
        return bool(r)

    def discard(self, handle):
        """Forget a pending entry whose packet was dropped before confirm."""
        cdef int64_t s = self._slot_of(handle)
        if s >= 0 and not (self.ents[s].flags & F_INTABLE):
            self._free_slot(<uint32_t>s)

    def set_mark(self, handle, mark):
        cdef int64_t s = self._slot_of(handle)
        if s >= 0:
            self.ents[s].mark = mark & 0xFFFFFFFF

    def set_masq_dev(self, handle, dev):
        cdef int64_t s = self._slot_of(handle)
        if s >= 0:
            self.ents[s].masq_dev = self._masq_code(dev)

    cdef int _masq_code(self, dev) except -1:
        code = self.masq_index.get(dev)
        if code is None:
            if len(self.masq_names) > 255:
                raise OverflowError("more than 255 MASQUERADE devices in one table")
            code = len(self.masq_names)
            self.masq_names.append(dev)
            self.masq_index[dev] = code
        return code

    def entry(self, handle):
        cdef int64_t s = self._slot_of(handle)
        return None if s < 0 else self._to_dict(<uint32_t>s)

    def remove(self, handle):
        cdef int64_t s = self._slot_of(handle)
        if s >= 0:
            self._remove(<uint32_t>s)

    def lookup(self, proto, src, dst, sport, dport, now):
        cdef tup_t t
        cdef int d = 0
        t.proto = proto
        t.src = int(src)
        t.dst = int(dst)
        t.sport = sport
        t.dport = dport
        cdef int64_t s = self._lookup(&t, now, &d)
        if s < 0:
            return None
        return (self.ents[s].id, "reply" if d else "original")

    def sweep(self, now):
        return self._sweep(now)

    def flush(self):
        cdef uint32_t s
        for s in range(self.ent_cap):
            if self.ents[s].flags & F_INTABLE:
                self._remove(s)

    def __len__(self):
        return self.n_table

    @property
    def stats(self):
        return {"found": self.st_found, "new": self.st_new, "insert": self.st_insert,
                "insert_failed": self.st_insert_failed, "drop": self.st_drop,
                "early_drop": self.st_early_drop, "invalid": self.st_invalid,
                "expired": self.st_expired}

    def memory(self):
        """Bytes held: entry pool, tuple index, by-source index, heap."""
        return {"entry_size": sizeof(ct_entry_t), "entries": self.ent_cap * sizeof(ct_entry_t),
                "index": self.idx_cap * sizeof(uint32_t), "bysource": self.bys_cap * sizeof(uint32_t),
                "heap": self.heap_cap * sizeof(heap_item_t),
                "scratch": self.scratch_cap * sizeof(uint32_t)}

    # --- export / import (ConntrackTable's dict format) -------------------------------
    cdef dict _to_dict(self, uint32_t s):
        cdef const ct_entry_t* e = &self.ents[s]
        states, tindexes, _ci, dirs = _CT_NAMES
        d = {"id": e.id,
             "orig": {"proto": e.proto, "src": _ip_str(e.osrc), "dst": _ip_str(e.odst),
                      "sport": e.osport, "dport": e.odport},
             "reply": {"proto": e.proto, "src": _ip_str(e.rsrc), "dst": _ip_str(e.rdst),
                       "sport": e.rsport, "dport": e.rdport},
             "status": e.status, "created": e.created, "timeout_at": e.timeout_at,
             "mark": e.mark, "udp_stream_at": e.created + 2.0 if e.proto == P_UDP else 0.0,
             "masq_dev": self.masq_names[e.masq_dev]}
        if e.flags & F_TCP:
            d["tcp"] = {"state": states[e.tcp & 0xF], "last_index": tindexes[(e.tcp >> 4) & 7],
                        "last_dir": dirs[(e.tcp >> 7) & 1],
                        "close_init": [bool(e.tcp & 0x100), bool(e.tcp & 0x200)]}
        return d

    cdef list _table_order(self):
        """Slots of the confirmed entries in insertion order (the reference's dict order)."""
        cdef uint32_t s
        cdef list pairs = []
        for s in range(self.ent_cap):
            if self.ents[s].flags & F_INTABLE:
                pairs.append((self.ents[s].seq, s))
        pairs.sort()
        return [p[1] for p in pairs]

    def export(self):
        """The table as ConntrackTable.export() gives it (same dicts, same order)."""
        return [self._to_dict(s) for s in self._table_order()]

    def to_conntrack_l(self, now):
        """The table as `conntrack -L` prints it (ConntrackTable.to_conntrack_l)."""
        from kdp.conntrack.entry import ConntrackEntry
        from kdp.conntrack.table import conntrack_line
        out = []
        for s in self._table_order():
            if self.ents[<uint32_t>s].timeout_at > now:
                out.append(conntrack_line(ConntrackEntry.from_dict(self._to_dict(s)), now) + "\n")
        return "".join(out)

    def export_array(self):
        """The confirmed entries as a CT_ENTRY_DTYPE array, in table order."""
        cdef uint32_t s
        cdef Py_ssize_t i
        order = self._table_order()
        out = np.zeros(len(order), dtype=CT_ENTRY_DTYPE)
        cdef ct_entry_t* rows = <ct_entry_t*><uintptr_t>out.ctypes.data
        for i in range(len(order)):
            s = order[i]
            rows[i] = self.ents[s]
            rows[i].flags &= F_TCP
        return out

    def import_(self, items):
        """ConntrackTable.import_(): load exported entries (confirmed), replacing any
        entry holding the same tuples or id."""
        cdef uint32_t s
        cdef int64_t ns
        cdef ct_entry_t* e
        cdef tup_t o, r
        cdef uint32_t ref
        cdef int k
        from kdp.conntrack.tcp import STATES
        from .fast.contract import TCP_INDEXES
        by_id = {}
        for s in range(self.ent_cap):
            if self.ents[s].flags & F_INTABLE:
                by_id[self.ents[s].id] = s
        for d in items:
            eid = int(d["id"])
            if not 0 <= eid <= 0xFFFFFFFF:
                raise OverflowError(f"entry id {eid} does not fit the compiled table (32 bits)")
            o_, r_ = d["orig"], d["reply"]
            proto = int(o_["proto"])
            if int(r_["proto"]) != proto:
                raise ValueError("original and reply tuples of different protocols")
            created = float(d["created"])
            stream = float(d.get("udp_stream_at", 0.0))
            if stream != (created + 2.0 if proto == P_UDP else 0.0):
                raise ValueError(f"udp_stream_at {stream} of entry {eid}: the compiled table "
                                 "keeps it as created + 2 s (UDP) or 0")
            status = (int(d["status"]) | S_CONFIRMED) & ~S_DYING
            if not 0 <= status <= 0xFFFF:
                raise ValueError(f"status {status:#x} does not fit 16 bits")
            o.proto = r.proto = proto
            o.src, o.dst, o.sport, o.dport = (_ip_int(o_["src"]), _ip_int(o_["dst"]),
                                              int(o_["sport"]), int(o_["dport"]))
            r.src, r.dst, r.sport, r.dport = (_ip_int(r_["src"]), _ip_int(r_["dst"]),
                                              int(r_["sport"]), int(r_["dport"]))
            masq = self._masq_code(d.get("masq_dev"))
            tcpbits = -1
            if "tcp" in d:
                t = d["tcp"]
                ci = list(t["close_init"])
                tcpbits = (STATES.index(t["state"]) | (TCP_INDEXES.index(t["last_index"]) << 4)
                           | ((1 if t["last_dir"] == "reply" else 0) << 7)
                           | (int(bool(ci[0])) << 8) | (int(bool(ci[1])) << 9))
            want = by_id.get(eid)           # the replaced entry's slot: reused, as the
            for k in range(2):              # reference's heap items refer to the id
                ref = self._idx_find(&o if k == 0 else &r, self._th(&o if k == 0 else &r))
                if ref:
                    by_id.pop(self.ents[(ref - 1) >> 1].id, None)
                    self._remove((ref - 1) >> 1)
            old = by_id.pop(eid, None)
            if old is not None:
                self._remove(old)
            ns = self._take_slot(want) if want is not None else self._new_slot()
            if ns < 0:
                raise MemoryError("conntrack table")
            e = &self.ents[ns]
            e.id = eid
            e.proto = proto
            e.osrc, e.odst, e.osport, e.odport = o.src, o.dst, o.sport, o.dport
            e.rsrc, e.rdst, e.rsport, e.rdport = r.src, r.dst, r.sport, r.dport
            e.status = status
            e.created = created
            e.timeout_at = float(d["timeout_at"])
            e.mark = int(d.get("mark", 0)) & 0xFFFFFFFF
            e.masq_dev = masq
            if tcpbits >= 0:
                e.flags |= F_TCP
                e.tcp = tcpbits
            if self._insert(<uint32_t>ns) < 0:
                raise MemoryError("conntrack table")
            by_id[eid] = ns
            self.next_id = max(self.next_id, eid + 1)

    # --- batches (FLOW_DTYPE in, CT_RESULT_DTYPE out) ------------------------------------
    def lookup_batch(self, flows):
        """lookup() of every record's tuple at its time; code CT_OK (hit) or
        CT_MISS. A software pipeline: record i's hash and index slot are
        prefetched D records ahead of reading the slot (and prefetching the
        entry), which is D records ahead of the comparison."""
        arr = _rows(flows, FLOW_DTYPE, "flows")
        cdef Py_ssize_t n = len(arr), i, a, b
        out = np.empty(n, dtype=CT_RESULT_DTYPE)
        if n == 0:
            return out
        cdef flow_t* fl = <flow_t*><uintptr_t>arr.ctypes.data
        cdef ct_result_t* rs = <ct_result_t*><uintptr_t>out.ctypes.data
        cdef tup_t t[64]
        cdef uint64_t h[64]
        cdef uint32_t cand[64]
        cdef uint32_t r, s
        cdef int shift = 64 - self.idx_bits
        cdef Py_ssize_t D = 16
        with nogil:
            for i in range(n + 2 * D):
                if i < n:                               # stage 1: hash, prefetch the slot
                    a = i & 63
                    t[a].src = fl[i].src
                    t[a].dst = fl[i].dst
                    t[a].sport = fl[i].sport
                    t[a].dport = fl[i].dport
                    t[a].proto = fl[i].proto
                    h[a] = self._th(&t[a])
                    KDP_PREFETCH(&self.idx[h[a] >> shift])
                b = i - D
                if 0 <= b < n:                          # stage 2: prefetch the likely entry
                    r = self._idx_candidate(h[b & 63])
                    cand[b & 63] = r
                    if r != 0:
                        KDP_PREFETCH(&self.ents[(r - 1) >> 1])
                b = i - 2 * D
                if 0 <= b < n:                          # stage 3: compare, expire, answer
                    a = b & 63
                    _ct_result_clear(&rs[b])
                    r = cand[a]
                    if r == 0:
                        continue
                    if not ((self.ents[(r - 1) >> 1].flags & F_INTABLE)
                            and _dir_eq(&self.ents[(r - 1) >> 1], (r - 1) & 1, &t[a])):
                        r = self._idx_find(&t[a], h[a])
                        if r == 0:
                            continue
                    s = (r - 1) >> 1
                    if self.ents[s].timeout_at <= fl[b].now:
                        self.st_expired += 1
                        self._remove(s)
                        continue
                    _ct_result_hit(&rs[b], &self.ents[s], s, (r - 1) & 1)
        return out

    def process_batch(self, flows, bint confirm=True):
        """process() of every record (its tcp_flags, local -> not PREROUTING,
        checksum_ok, now), confirming new entries at once when `confirm` (the
        packet passed every hook). Unconfirmed new entries stay pending."""
        cdef Py_ssize_t n = len(flows), i
        out = np.empty(n, dtype=CT_RESULT_DTYPE)
        if n == 0:
            return out
        arr = _rows(flows, FLOW_DTYPE, "flows")
        cdef flow_t* fl = <flow_t*><uintptr_t>arr.ctypes.data
        cdef ct_result_t* rs = <ct_result_t*><uintptr_t>out.ctypes.data
        cdef tup_t t
        cdef ct_res_t res
        cdef bint nomem = False
        cdef int c
        cdef tup_t pt, pr
        cdef Py_ssize_t D = 16
        with nogil:
            for i in range(n):
                if i + D < n:                   # prefetch the index slots of both tuples
                    pt.src = fl[i + D].src
                    pt.dst = fl[i + D].dst
                    pt.sport = fl[i + D].sport
                    pt.dport = fl[i + D].dport
                    pt.proto = fl[i + D].proto
                    KDP_PREFETCH(&self.idx[self._th(&pt) >> (64 - self.idx_bits)])
                    if _invert(&pt, &pr):
                        KDP_PREFETCH(&self.idx[self._th(&pr) >> (64 - self.idx_bits)])
                t.src = fl[i].src
                t.dst = fl[i].dst
                t.sport = fl[i].sport
                t.dport = fl[i].dport
                t.proto = fl[i].proto
                if t.proto == P_ICMP and _ICMP_ERROR[t.dport >> 8]:
                    _ct_result_clear(&rs[i])        # an ICMP error: related(), not here
                    continue
                self._process(&t, fl[i].tcp_flags, fl[i].now, fl[i].local == 0,
                              fl[i].checksum_ok != 0, &res)
                if res.code == CT_DROP_ and res.reason == R_NOMEM:
                    nomem = True
                    break
                if confirm and res.code == CT_OK_ and res.new:
                    c = self._confirm(<uint32_t>res.slot, res.id, fl[i].now)
                    if c < 0:
                        nomem = True
                        break
                    if c == 0:
                        res.code = CT_DROP_
                rs[i].handle = ((res.slot << 32) | res.id) if res.slot >= 0 else -1
                rs[i].id = res.id
                rs[i].status = res.status
                rs[i].ctinfo = res.ctinfo
                rs[i].direction = res.direction
                rs[i].new = res.new
                rs[i].code = res.code
                rs[i].state = res.state
        if nomem:
            raise MemoryError("conntrack table")
        return out


cdef inline void _ct_result_clear(ct_result_t* r) noexcept nogil:
    r.handle = -1
    r.id = 0
    r.status = 0
    r.ctinfo = -1
    r.direction = -1
    r.new = 0
    r.code = CT_MISS_
    r.state = -1


cdef inline void _ct_result_hit(ct_result_t* r, const ct_entry_t* e, uint32_t s,
                                int d) noexcept nogil:
    r.handle = ((<int64_t>s) << 32) | e.id
    r.id = e.id
    r.status = e.status
    r.direction = d
    r.code = CT_OK_
    r.state = (e.tcp & 0xF) if (e.flags & F_TCP) else -1


cdef object _rows(arr, dtype, what):
    """arr as a C-contiguous array of exactly `dtype` (records of the contract)."""
    a = np.ascontiguousarray(arr)
    if a.dtype != dtype or a.ndim != 1:
        raise TypeError(f"{what} must be a 1-d array of dtype {dtype}, not {a.dtype} {a.shape}")
    return a


cdef str _ip_str(uint32_t x):
    return f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"


cdef uint32_t _ip_int(s) except? 0xFFFFFFFF:
    from ipaddress import IPv4Address
    return int(IPv4Address(s))


def _ct_reason(int reason, int arg1, int arg2, tuple inputs):
    """The reference's invalid-packet text for a reason code."""
    from ipaddress import IPv4Address
    from kdp.conntrack.tcp import STATES
    from kdp.conntrack.tuples import Tuple
    from kdp.wire import PROTO_NAMES, tcp_flag_str
    kind, proto, src, dst, sport, dport, extra = inputs
    tup = Tuple(proto, IPv4Address(int(src)), IPv4Address(int(dst)), sport, dport)
    if reason == R_FLAGS:
        return "invalid tcp flag combination"
    if reason == R_ICMP_TYPE:
        return f"invalid icmp type {arg1}"
    if reason == R_CSUM:
        return f"bad {PROTO_NAMES.get(proto, str(proto))} checksum"
    if reason == R_INVERT:
        return f"cannot invert {tup}"
    if reason == R_TCP_NEW:
        return f"tcp [{tcp_flag_str(extra)}] cannot open a connection"
    if reason == R_TCP_STATE:
        return (f"tcp [{tcp_flag_str(extra)}] invalid in state {STATES[arg1]} "
                f"({'reply' if arg2 else 'original'})")
    if reason == R_ICMP_NEW:
        return f"icmp type {arg1} cannot open a connection"
    if reason == R_REOPEN_LOOP:
        return "reopen loop"
    if reason == R_REL_CSUM:
        return "bad icmp checksum"
    if reason == R_REL_UNTRACKABLE:
        return f"icmp error about untrackable {tup}"
    if reason == R_REL_UNKNOWN:
        return f"icmp error about unknown connection {tup}"
    if reason == R_REL_DADDR:
        return f"icmp error outer daddr {IPv4Address(extra)} != {IPv4Address(arg1 & 0xFFFFFFFF)}"
    return f"invalid ({reason})"
