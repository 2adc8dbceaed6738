# fast/conntrack_store.pxi (included by _fastpath.pyx): the storage of the
# compiled conntrack table — twin of kdp/conntrack/table.py's storage. Owns the
# table state ct_t and what keeps it, sized so a full table costs under 64
# bytes per entry all-in:
# - the entry pool: 32-byte hot entries (ct_entry_t: timeout, original tuple,
#   id, status, TCP state, flags — all a lookup reads) and, beside them, each
#   slot's creation time (8 bytes); the reply tuple is the original's inverse
#   and is stored only when NAT changed it, with a non-zero mark, in 16-byte
#   records on pages (up to 2 MiB: huge pages; a table has at least 8) held
#   while a slot of theirs needs one;
# - both tuples of every confirmed entry in one open-addressing index (linear
#   probing over a table of any size, home slot = reciprocal_scale of the
#   hash, so slots stay in hash order; at most 3/4 full; backward-shift delete);
# - table order (the reference's dict order) as a key per entry: its id while
#   ids are inserted in increasing order, else a key kept in a small side map;
# - a binary heap of 12-byte (timeout, slot) items swept as the reference's
#   heap is (see "the expiry heap" below: a slot whose entry is gone keeps its
#   item's place until the item comes up, so items need no entry pointer back);
# - the NAT by-source multimap, sized by the entries that have a source binding;
# - capacity with the same early-drop buckets (bucket = reciprocal_scale of the
#   same flow_hash).
# Pool, index and heap grow by doubling but never past what max_entries needs
# (the pool only beyond it for pending entries), so a full table holds no
# power-of-two slack; freed slots, pages and items are reused.
# Packets, states and NAT are in conntrack_life.pxi and conntrack_nat.pxi; the
# Python-facing CtTable in conntrack.pxi.

from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

cdef struct ct_entry_t:     # 32 bytes (kdp.fast.contract.CT_ENTRY_DTYPE)
    double timeout_at
    uint32_t osrc
    uint32_t odst
    uint16_t osport
    uint16_t odport
    uint32_t id             # (free slots: the next free slot)
    uint16_t status
    uint16_t tcp
    uint8_t proto
    uint8_t flags
    uint8_t masq_dev
    uint8_t pad

cdef struct ct_ext_t:       # 16 bytes: what only some entries have
    uint32_t rsrc
    uint32_t rdst
    uint16_t rsport
    uint16_t rdport
    uint32_t mark

cdef struct tup_t:
    uint32_t src
    uint32_t dst
    uint16_t sport
    uint16_t dport
    uint8_t proto

cdef packed struct heap_item_t:    # 12 bytes
    double t
    uint32_t slot

cdef struct dup_item_t:
    double t
    uint32_t slot
    uint32_t id

cdef struct ord_item_t:     # a table-order key kept aside (F_ORDER)
    uint64_t key
    uint32_t slot1          # slot + 1; 0: empty
    uint32_t pad

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

# entry flags. A slot is free (flags 0), used (F_USED: pending or in the
# table), or, with F_HEAP alone, a removed entry whose heap item has not come
# up yet (it keeps the slot until then).
cdef enum:
    F_USED = 1
    F_TCP = 2
    F_INTABLE = 4
    F_BYSRC = 8
    F_HEAP = 16             # the slot's own item is in the main heap
    F_XREPLY = 32           # the reply tuple is in the slot's ext record (NAT)
    F_XMARK = 64            # the mark (non-zero) is in the slot's ext record
    F_ORDER = 128           # the table-order key is in the side map

cdef enum:
    EMPTY_SLOT = 0xFFFFFFFF
    REF_BITS = 27           # index values: 5-bit hash tag << 27 | (slot << 1 | dir) + 1
    REF_MASK = (1 << 27) - 1
    MAX_SLOTS = 1 << 25      # entries (refs must stay below 2**27)
    EVICTION_RANGE = 8
    P_ICMP = 1
    P_TCP = 6
    P_UDP = 17

# The state of one table (CtTable owns one). Every function of the
# conntrack_*.pxi files works on a ct_t*.
cdef struct ct_t:
    # the entry pool (free slots chained through .id), creation times beside it
    ct_entry_t* ents
    double* created
    kdp_region ents_reg, created_reg, idx_reg, bys_reg
    uint32_t ent_cap
    uint32_t free_head
    uint32_t n_used
    uint32_t n_table
    uint32_t n_zombie       # removed entries waiting for their heap item
    # ext records: pages of 1 << ext_shift (a table of max_entries has at least
    # 8 pages, each at most 2 MiB: huge pages), how many slots of each hold one
    int ext_shift
    ct_ext_t** ext
    uint32_t* ext_used
    kdp_region* ext_reg
    uint32_t ext_npages
    uint32_t ext_live
    # table order: keys of in-order entries are id << 32; the others' aside
    uint64_t ord_major
    uint32_t ord_minor
    ord_item_t* ord
    uint32_t ord_cap
    uint32_t ord_n
    # the tuple index
    uint32_t* idx
    uint32_t idx_cap        # any size >= 16 (home slot: ct_idx_home)
    # the by-source multimap
    uint32_t* bys
    uint32_t bys_cap
    int bys_bits
    uint32_t n_bys
    # the expiry heap, and early drop's scratch list
    heap_item_t* heap
    size_t heap_len
    size_t heap_cap
    dup_item_t* dup
    size_t dup_len
    size_t dup_cap
    uint32_t* scratch
    uint32_t scratch_cap
    # configuration and keys (nat_points: conntrack_nat.pxi)
    uint64_t max_entries
    uint64_t buckets
    bint tcp_loose
    bint checksum
    uint64_t seed64
    uint64_t smix
    uint64_t smix_bucket
    uint64_t bysrc_point
    uint64_t nat_points[2][8]
    # timeouts (conntrack_life.pxi fills them from kdp.conntrack.timeouts)
    double to_tcp[10]
    double to_tcp_close
    double to_tcp_unack
    double to_udp
    double to_udp_stream
    double to_icmp
    double to_generic
    # entry ids, counters
    uint64_t next_id
    int64_t st_found, st_new, st_insert, st_insert_failed, st_drop, st_early_drop
    int64_t st_invalid, st_expired


# --- the tuples of an entry ---------------------------------------------------

cdef inline void _orig_of(const ct_entry_t* e, tup_t* t) noexcept nogil:
    t.src = e.osrc
    t.dst = e.odst
    t.sport = e.osport
    t.dport = e.odport
    t.proto = e.proto


cdef inline ct_ext_t* ct_ext_at(const ct_t* ct, uint32_t s) noexcept nogil:
    """Slot s's ext record (only while it holds one: F_XREPLY or F_XMARK)."""
    return &ct.ext[s >> ct.ext_shift][s & ((1U << ct.ext_shift) - 1)]


cdef inline void _reply_of(const ct_t* ct, uint32_t s, tup_t* t) noexcept nogil:
    """The reply tuple of the entry in slot s: stored (NAT), else the original's inverse."""
    cdef const ct_entry_t* e = &ct.ents[s]
    cdef const ct_ext_t* x
    cdef tup_t o
    if e.flags & F_XREPLY:
        x = ct_ext_at(ct, s)
        t.src = x.rsrc
        t.dst = x.rdst
        t.sport = x.rsport
        t.dport = x.rdport
        t.proto = e.proto
    else:
        _orig_of(e, &o)
        if not _invert(&o, t):          # (never: such an entry keeps its reply)
            t[0] = o


cdef inline bint _dir_eq(const ct_t* ct, uint32_t s, int d, const tup_t* t) noexcept nogil:
    """The tuple of direction d of the entry in slot s is t."""
    return _dir_eq_at(ct, &ct.ents[s], s, d, t)


cdef inline bint _dir_eq_at(const ct_t* ct, const ct_entry_t* e, uint32_t s, int d,
                            const tup_t* t) noexcept nogil:
    """_dir_eq() with the entry at hand (e is slot s's): ct is read only for a
    stored reply tuple or an ICMP inverse."""
    cdef const ct_ext_t* x
    cdef tup_t r
    if e.proto != t.proto:
        return False
    if d == 0:
        return e.osrc == t.src and e.odst == t.dst and e.osport == t.sport and e.odport == t.dport
    if e.flags & F_XREPLY:
        x = ct_ext_at(ct, s)
        return x.rsrc == t.src and x.rdst == t.dst and x.rsport == t.sport and x.rdport == t.dport
    if t.proto != P_ICMP:
        return e.odst == t.src and e.osrc == t.dst and e.odport == t.sport and e.osport == t.dport
    _reply_of(ct, s, &r)
    return _tup_eq(&r, t)


cdef inline bint _tup_eq(const tup_t* a, const tup_t* b) noexcept nogil:
    return (a.proto == b.proto and a.src == b.src and a.dst == b.dst and a.sport == b.sport
            and a.dport == b.dport)


# --- ext records: the reply tuple (when NAT changed it) and the mark -----------------

cdef ct_ext_t* ct_ext_hold(ct_t* ct, uint32_t s) noexcept nogil:
    """Slot s's ext record, made (zeroed) when it has none; NULL: no memory."""
    cdef uint32_t p = s >> ct.ext_shift
    if ct.ents[s].flags & (F_XREPLY | F_XMARK):
        return ct_ext_at(ct, s)
    if ct.ext[p] == NULL:
        ct.ext[p] = <ct_ext_t*>kdp_alloc((<size_t>1 << ct.ext_shift) * sizeof(ct_ext_t),
                                            &ct.ext_reg[p])
        if ct.ext[p] == NULL:
            return NULL
        ct.ext_live += 1
    ct.ext_used[p] += 1
    memset(ct_ext_at(ct, s), 0, sizeof(ct_ext_t))
    return ct_ext_at(ct, s)


cdef void ct_ext_drop(ct_t* ct, uint32_t s, uint8_t bits) noexcept nogil:
    """Slot s keeps `bits` (F_XREPLY, F_XMARK) no more: its record goes when it
    keeps nothing, the record's page when no slot of it has one."""
    cdef ct_entry_t* e = &ct.ents[s]
    cdef uint32_t p = s >> ct.ext_shift
    if not (e.flags & bits):
        return
    e.flags &= ~bits
    if e.flags & (F_XREPLY | F_XMARK):
        return
    ct.ext_used[p] -= 1
    if ct.ext_used[p] == 0:
        kdp_free(ct.ext[p], &ct.ext_reg[p])
        ct.ext[p] = NULL
        ct.ext_live -= 1


cdef int ct_set_reply(ct_t* ct, uint32_t s, const tup_t* r) noexcept nogil:
    """The entry's reply tuple becomes r (kept only when it is not the
    original's inverse); -1: no memory."""
    cdef ct_entry_t* e = &ct.ents[s]
    cdef tup_t o, inv
    cdef ct_ext_t* x
    _orig_of(e, &o)
    if _invert(&o, &inv) and inv.src == r.src and inv.dst == r.dst and inv.sport == r.sport \
            and inv.dport == r.dport:
        ct_ext_drop(ct, s, F_XREPLY)
        return 0
    x = ct_ext_hold(ct, s)
    if x == NULL:
        return -1
    x.rsrc = r.src
    x.rdst = r.dst
    x.rsport = r.sport
    x.rdport = r.dport
    ct.ents[s].flags |= F_XREPLY
    return 0


cdef inline uint32_t ct_mark_of(const ct_t* ct, uint32_t s) noexcept nogil:
    return ct_ext_at(ct, s).mark if (ct.ents[s].flags & F_XMARK) else 0


cdef int ct_set_mark(ct_t* ct, uint32_t s, uint32_t mark) noexcept nogil:
    """The entry's mark (kept only when not 0); -1: no memory."""
    cdef ct_ext_t* x
    if mark == 0:
        if ct.ents[s].flags & F_XMARK:
            ct_ext_at(ct, s).mark = 0
            ct_ext_drop(ct, s, F_XMARK)
        return 0
    x = ct_ext_hold(ct, s)
    if x == NULL:
        return -1
    x.mark = mark
    ct.ents[s].flags |= F_XMARK
    return 0


# --- table order (the reference's dict order: insertion into the table) ------------
#
# An entry inserted with an id above every id-keyed entry before it is keyed by
# its id (id << 32); any other (a pending entry confirmed after a newer one, an
# import) gets (greatest id key so far << 32 | a running count), kept in a small
# side map by slot (F_ORDER). Either way each insert's key is above all before.

cdef inline uint32_t _ord_home(uint32_t s, uint32_t cap) noexcept nogil:
    return <uint32_t>((<uint64_t>(s * <uint32_t>0x9E3779B1U) * cap) >> 32)


cdef uint32_t ct_ord_find(const ct_t* ct, uint32_t s) noexcept nogil:
    cdef uint32_t pos
    if ct.ord_cap == 0:
        return EMPTY_SLOT
    pos = _ord_home(s, ct.ord_cap)
    while ct.ord[pos].slot1 != 0:
        if ct.ord[pos].slot1 == s + 1:
            return pos
        pos = (pos + 1) & (ct.ord_cap - 1)
    return EMPTY_SLOT


cdef void _ord_place(ord_item_t* tab, uint32_t cap, uint32_t s, uint64_t key) noexcept nogil:
    cdef uint32_t pos = _ord_home(s, cap)
    while tab[pos].slot1 != 0:
        pos = (pos + 1) & (cap - 1)
    tab[pos].slot1 = s + 1
    tab[pos].key = key


cdef int ct_ord_put(ct_t* ct, uint32_t s, uint64_t key) noexcept nogil:
    cdef uint32_t cap, i
    cdef ord_item_t* t
    if (<uint64_t>ct.ord_n + 1) * 2 > ct.ord_cap:
        cap = 2 * ct.ord_cap if ct.ord_cap else 16
        t = <ord_item_t*>calloc(cap, sizeof(ord_item_t))
        if t == NULL:
            return -1
        for i in range(ct.ord_cap):
            if ct.ord[i].slot1 != 0:
                _ord_place(t, cap, ct.ord[i].slot1 - 1, ct.ord[i].key)
        free(ct.ord)
        ct.ord = t
        ct.ord_cap = cap
    _ord_place(ct.ord, ct.ord_cap, s, key)
    ct.ord_n += 1
    return 0


cdef void ct_ord_del(ct_t* ct, uint32_t s) noexcept nogil:
    cdef uint32_t mask = ct.ord_cap - 1
    cdef uint32_t i = ct_ord_find(ct, s)
    cdef uint32_t j, k
    if i == EMPTY_SLOT:
        return
    j = i
    while True:                     # backward-shift deletion
        j = (j + 1) & mask
        if ct.ord[j].slot1 == 0:
            break
        k = _ord_home(ct.ord[j].slot1 - 1, ct.ord_cap)
        if (i <= j and i < k and k <= j) or (i > j and (i < k or k <= j)):
            continue
        ct.ord[i] = ct.ord[j]
        i = j
    ct.ord[i].slot1 = 0
    ct.ord_n -= 1
    if ct.ord_n == 0:               # back to nothing held
        free(ct.ord)
        ct.ord = NULL
        ct.ord_cap = 0


cdef inline uint64_t ct_order_key(const ct_t* ct, uint32_t s) noexcept nogil:
    if ct.ents[s].flags & F_ORDER:
        return ct.ord[ct_ord_find(ct, s)].key
    return (<uint64_t>ct.ents[s].id) << 32


cdef int ct_order_assign(ct_t* ct, uint32_t s) noexcept nogil:
    """The key of an entry going into the table (above every key before)."""
    cdef uint32_t id = ct.ents[s].id
    if id > ct.ord_major:
        ct.ord_major = id
        return 0
    ct.ord_minor += 1
    if ct_ord_put(ct, s, (ct.ord_major << 32) | ct.ord_minor) < 0:
        return -1
    ct.ents[s].flags |= F_ORDER
    return 0


# --- opening and closing the storage ------------------------------------------

cdef int ct_store_keys(ct_t* ct) except -1:
    """The bucket and by-source hash keys of seed64 (set before)."""
    from kdp.conntrack.keyed import decision_point
    from kdp.conntrack.table import BUCKET_SALT
    ct.smix_bucket = _seed_mix(ct.seed64 ^ <uint64_t>BUCKET_SALT)
    ct.bysrc_point = <uint64_t>decision_point("ct-bysource")
    return 0


# Index load: at most IDX_LOAD_NUM / IDX_LOAD_DEN of the slots hold a ref.
cdef enum:
    IDX_LOAD_NUM = 3
    IDX_LOAD_DEN = 4
    POOL_SPARE = 64         # pool slots past max_entries before doubling (pending entries)
    HEAP_SPARE = 1024       # heap items past max_entries before doubling (stale items)


cdef inline uint64_t ct_grown(uint64_t cap, uint64_t need, uint64_t limit) noexcept nogil:
    """The next capacity: double, but not past limit (0: none) unless need is beyond it."""
    cdef uint64_t c = cap * 2
    if limit and c > limit:
        c = limit if limit > cap else cap * 2
    return c if c >= need else need


cdef inline uint64_t ct_idx_limit(const ct_t* ct) noexcept nogil:
    """Index slots a table of max_entries needs (both tuples of each, at the load limit)."""
    if not ct.max_entries:
        return 0
    return (2 * ct.max_entries * IDX_LOAD_DEN + IDX_LOAD_NUM - 1) // IDX_LOAD_NUM


cdef inline uint32_t ct_ext_pages_for(const ct_t* ct, uint32_t cap) noexcept nogil:
    return (cap + (1U << ct.ext_shift) - 1) >> ct.ext_shift


cdef int ct_store_open(ct_t* ct, uint32_t cap) noexcept nogil:
    """Pool, index, by-source map and heap for cap entries; -1: no memory."""
    cdef uint32_t i
    cdef uint64_t lim = ct_idx_limit(ct)
    ct.ents = <ct_entry_t*>kdp_alloc(cap * sizeof(ct_entry_t), &ct.ents_reg)
    ct.created = <double*>kdp_alloc(cap * sizeof(double), &ct.created_reg)
    ct.ext_shift = 10
    while ct.ext_shift < 17 and (<uint64_t>1 << (ct.ext_shift + 3)) < ct.max_entries:
        ct.ext_shift += 1
    ct.ext_npages = ct_ext_pages_for(ct, cap)
    ct.ext = <ct_ext_t**>calloc(ct.ext_npages, sizeof(ct_ext_t*))
    ct.ext_used = <uint32_t*>calloc(ct.ext_npages, sizeof(uint32_t))
    ct.ext_reg = <kdp_region*>calloc(ct.ext_npages, sizeof(kdp_region))
    ct.heap_cap = 1024
    ct.heap = <heap_item_t*>malloc(ct.heap_cap * sizeof(heap_item_t))
    if ct.ents == NULL or ct.created == NULL or ct.ext == NULL or ct.ext_used == NULL or ct.ext_reg == NULL \
            or ct.heap == NULL:
        return -1
    ct.ent_cap = cap
    for i in range(cap):
        ct.ents[i].id = i + 1 if i + 1 < cap else EMPTY_SLOT
    ct.free_head = 0
    ct.idx_cap = 4 * cap
    if lim and ct.idx_cap > lim:
        ct.idx_cap = <uint32_t>(lim if lim > 16 else 16)
    ct.idx = <uint32_t*>kdp_alloc(ct.idx_cap * sizeof(uint32_t), &ct.idx_reg)
    ct.bys_bits = 4                 # grows with the entries that have a source binding
    ct.bys_cap = 1 << ct.bys_bits
    ct.bys = <uint32_t*>kdp_alloc(ct.bys_cap * sizeof(uint32_t), &ct.bys_reg)
    if ct.idx == NULL or ct.bys == NULL:
        return -1
    return 0


cdef void ct_store_close(ct_t* ct) noexcept nogil:
    cdef uint32_t p
    if ct.ents != NULL:
        kdp_free(ct.ents, &ct.ents_reg)
    if ct.created != NULL:
        kdp_free(ct.created, &ct.created_reg)
    if ct.idx != NULL:
        kdp_free(ct.idx, &ct.idx_reg)
    if ct.bys != NULL:
        kdp_free(ct.bys, &ct.bys_reg)
    if ct.ext != NULL:
        for p in range(ct.ext_npages):
            if ct.ext[p] != NULL:
                kdp_free(ct.ext[p], &ct.ext_reg[p])
    free(ct.ext)
    free(ct.ext_reg)
    free(ct.ext_used)
    free(ct.ord)
    free(ct.heap)
    free(ct.dup)
    free(ct.scratch)


# --- the entry pool -------------------------------------------------------------

cdef int ct_pool_grow(ct_t* ct) noexcept nogil:
    cdef uint64_t want = ct_grown(ct.ent_cap, ct.ent_cap + 1,
                                  ct.max_entries + POOL_SPARE if ct.max_entries else 0)
    cdef uint32_t cap, i, np
    cdef ct_entry_t* p
    cdef double* c
    cdef ct_ext_t** xp
    cdef uint32_t* xu
    cdef kdp_region* xr
    cdef kdp_region reg, creg
    if want > MAX_SLOTS:
        return -1
    cap = <uint32_t>want
    np = ct_ext_pages_for(ct, cap)
    if np > ct.ext_npages:
        xp = <ct_ext_t**>realloc(ct.ext, np * sizeof(ct_ext_t*))
        if xp == NULL:
            return -1
        ct.ext = xp
        xu = <uint32_t*>realloc(ct.ext_used, np * sizeof(uint32_t))
        if xu == NULL:
            return -1
        ct.ext_used = xu
        xr = <kdp_region*>realloc(ct.ext_reg, np * sizeof(kdp_region))
        if xr == NULL:
            return -1
        ct.ext_reg = xr
        for i in range(ct.ext_npages, np):
            ct.ext[i] = NULL
            ct.ext_used[i] = 0
            ct.ext_reg[i].base = NULL
            ct.ext_reg[i].len = 0
        ct.ext_npages = np
    p = <ct_entry_t*>kdp_alloc(<size_t>cap * sizeof(ct_entry_t), &reg)
    if p == NULL:
        return -1
    c = <double*>kdp_alloc(<size_t>cap * sizeof(double), &creg)
    if c == NULL:
        kdp_free(p, &reg)
        return -1
    memcpy(p, ct.ents, <size_t>ct.ent_cap * sizeof(ct_entry_t))
    memcpy(c, ct.created, <size_t>ct.ent_cap * sizeof(double))
    kdp_free(ct.ents, &ct.ents_reg)
    kdp_free(ct.created, &ct.created_reg)
    ct.ents = p
    ct.ents_reg = reg
    ct.created = c
    ct.created_reg = creg
    for i in range(ct.ent_cap, cap):
        p[i].id = i + 1 if i + 1 < cap else ct.free_head
    ct.free_head = ct.ent_cap
    ct.ent_cap = cap
    return 0


cdef int64_t ct_slot_new(ct_t* ct) noexcept nogil:
    cdef uint32_t s
    if ct.free_head == EMPTY_SLOT:
        if ct_pool_grow(ct) < 0:
            return -1
    s = ct.free_head
    ct.free_head = ct.ents[s].id
    memset(&ct.ents[s], 0, sizeof(ct_entry_t))
    ct.ents[s].flags = F_USED
    ct.created[s] = 0.0
    ct.n_used += 1
    return s


cdef inline void _slot_to_free_list(ct_t* ct, uint32_t s) noexcept nogil:
    ct.ents[s].flags = 0
    ct.ents[s].id = ct.free_head
    ct.free_head = s


cdef void ct_slot_free(ct_t* ct, uint32_t s) noexcept nogil:
    """Give up a used slot (not in the table): its ext record goes; the slot is
    free again, or, while its heap item is still in the heap, kept (F_HEAP
    alone) until the item comes up."""
    ct_ext_drop(ct, s, F_XREPLY | F_XMARK)
    ct.n_used -= 1
    if ct.ents[s].flags & F_HEAP:
        ct.ents[s].flags = F_HEAP
        ct.ents[s].id = 0
        ct.n_zombie += 1
    else:
        _slot_to_free_list(ct, s)


cdef inline void ct_zombie_free(ct_t* ct, uint32_t s) noexcept nogil:
    """A removed entry's slot whose heap item came up (or went in a rebuild)."""
    ct.n_zombie -= 1
    _slot_to_free_list(ct, s)


# --- hashing ----------------------------------------------------------------------

cdef inline uint64_t ct_th(const ct_t* ct, const tup_t* t) noexcept nogil:
    return _flow_base_s(ct.smix_bucket, t.proto, t.src, t.dst, t.sport, t.dport)


cdef inline uint64_t ct_ref_hash(const ct_t* ct, uint32_t ref) noexcept nogil:
    cdef tup_t t
    ref &= REF_MASK
    cdef uint32_t s = (ref - 1) >> 1
    if (ref - 1) & 1:
        _reply_of(ct, s, &t)
    else:
        _orig_of(&ct.ents[s], &t)
    return ct_th(ct, &t)


cdef inline uint64_t ct_bh(const ct_t* ct, uint8_t proto, uint32_t src,
                           uint16_t sport) noexcept nogil:
    return _hstep(_flow_base_s(ct.smix, proto, src, 0, sport, 0), ct.bysrc_point)


cdef inline uint32_t ct_bucket_of_hash(const ct_t* ct, uint64_t h) noexcept nogil:
    return <uint32_t>(((h >> 32) * ct.buckets) >> 32)


# --- the tuple index ----------------------------------------------------------------

cdef inline uint32_t ct_idx_home(uint64_t h, uint32_t cap) noexcept nogil:
    """The home slot of hash h: reciprocal_scale of its top 32 bits (monotone in h)."""
    return <uint32_t>(((h >> 32) * cap) >> 32)


cdef uint32_t ct_idx_find(const ct_t* ct, const tup_t* t, uint64_t h) noexcept nogil:
    """The ref ((slot << 1 | dir) + 1) of tuple t (hash h), or 0."""
    cdef uint32_t cap = ct.idx_cap
    cdef uint32_t pos = ct_idx_home(h, cap)
    cdef uint32_t tag = <uint32_t>(h & 31)
    cdef uint32_t v, r
    while True:
        v = ct.idx[pos]
        if v == 0:
            return 0
        if (v >> REF_BITS) == tag:
            r = v & REF_MASK
            if _dir_eq(ct, (r - 1) >> 1, (r - 1) & 1, t):
                return r
        pos += 1
        if pos == cap:
            pos = 0


cdef inline uint32_t ct_idx_candidate(const ct_t* ct, uint64_t h) noexcept nogil:
    """The first ref in h's probe run whose tag matches (usually the hit)."""
    cdef uint32_t cap = ct.idx_cap
    cdef uint32_t pos = ct_idx_home(h, cap)
    cdef uint32_t tag = <uint32_t>(h & 31)
    cdef uint32_t v
    while True:
        v = ct.idx[pos]
        if v == 0 or (v >> REF_BITS) == tag:
            return v & REF_MASK
        pos += 1
        if pos == cap:
            pos = 0


cdef void ct_idx_put(ct_t* ct, uint32_t ref, uint64_t h) noexcept nogil:
    cdef uint32_t cap = ct.idx_cap
    cdef uint32_t pos = ct_idx_home(h, cap)
    while ct.idx[pos] != 0:
        pos += 1
        if pos == cap:
            pos = 0
    ct.idx[pos] = ((<uint32_t>(h & 31)) << REF_BITS) | ref


cdef void ct_idx_del(ct_t* ct, uint32_t ref, uint64_t h) noexcept nogil:
    cdef uint32_t cap = ct.idx_cap
    cdef uint32_t i = ct_idx_home(h, cap)
    cdef uint32_t j, k
    cdef uint32_t n = 0
    while (ct.idx[i] & REF_MASK) != ref:
        if ct.idx[i] == 0 or n > ct.idx_cap:
            return
        i += 1
        if i == cap:
            i = 0
        n += 1
    j = i
    while True:                     # backward-shift deletion
        j += 1
        if j == cap:
            j = 0
        if ct.idx[j] == 0:
            break
        k = ct_idx_home(ct_ref_hash(ct, ct.idx[j]), cap)
        if (i <= j and i < k and k <= j) or (i > j and (i < k or k <= j)):
            continue
        ct.idx[i] = ct.idx[j]
        i = j
    ct.idx[i] = 0


cdef int ct_idx_rehash(ct_t* ct, uint64_t need) noexcept nogil:
    """Grow the index to hold at least `need` slots (doubling, up to what
    max_entries needs)."""
    cdef uint64_t want = ct_grown(ct.idx_cap, need, ct_idx_limit(ct))
    cdef uint32_t cap
    cdef uint32_t* old = ct.idx
    cdef kdp_region old_reg = ct.idx_reg
    cdef uint32_t oldcap = ct.idx_cap, i, r
    if want > 0xFFFFFFFFU:
        return -1
    cap = <uint32_t>want
    ct.idx = <uint32_t*>kdp_alloc(<size_t>cap * sizeof(uint32_t), &ct.idx_reg)
    if ct.idx == NULL:
        ct.idx = old
        ct.idx_reg = old_reg
        return -1
    ct.idx_cap = cap
    for i in range(oldcap):
        r = old[i] & REF_MASK
        if r != 0:
            ct_idx_put(ct, r, ct_ref_hash(ct, r))
    kdp_free(old, &old_reg)
    return 0


# --- the by-source multimap (nf_nat_bysource) ------------------------------------

cdef void ct_bys_put(ct_t* ct, uint32_t s) noexcept nogil:
    cdef const ct_entry_t* e = &ct.ents[s]
    cdef uint32_t mask = ct.bys_cap - 1
    cdef uint32_t pos = <uint32_t>(ct_bh(ct, e.proto, e.osrc, e.osport) >> (64 - ct.bys_bits))
    while ct.bys[pos] != 0:
        pos = (pos + 1) & mask
    ct.bys[pos] = s + 1
    ct.n_bys += 1


cdef void ct_bys_del(ct_t* ct, uint32_t s) noexcept nogil:
    cdef const ct_entry_t* e = &ct.ents[s]
    cdef uint32_t mask = ct.bys_cap - 1
    cdef uint32_t shift = 64 - ct.bys_bits
    cdef uint32_t i = <uint32_t>(ct_bh(ct, e.proto, e.osrc, e.osport) >> shift)
    cdef uint32_t j, k, n = 0
    cdef const ct_entry_t* o
    while ct.bys[i] != s + 1:
        if ct.bys[i] == 0 or n > ct.bys_cap:
            return
        i = (i + 1) & mask
        n += 1
    j = i
    while True:
        j = (j + 1) & mask
        if ct.bys[j] == 0:
            break
        o = &ct.ents[ct.bys[j] - 1]
        k = <uint32_t>(ct_bh(ct, o.proto, o.osrc, o.osport) >> shift)
        if (i <= j and i < k and k <= j) or (i > j and (i < k or k <= j)):
            continue
        ct.bys[i] = ct.bys[j]
        i = j
    ct.bys[i] = 0
    ct.n_bys -= 1


cdef int ct_bys_rehash(ct_t* ct) noexcept nogil:
    cdef int bits = ct.bys_bits + 1
    cdef uint32_t cap = 1 << bits
    cdef uint32_t* old = ct.bys
    cdef kdp_region old_reg = ct.bys_reg
    cdef uint32_t oldcap = ct.bys_cap, i
    if bits > 31:
        return -1
    ct.bys = <uint32_t*>kdp_alloc(<size_t>cap * sizeof(uint32_t), &ct.bys_reg)
    if ct.bys == NULL:
        ct.bys = old
        ct.bys_reg = old_reg
        return -1
    ct.bys_bits = bits
    ct.bys_cap = cap
    ct.n_bys = 0
    for i in range(oldcap):
        if old[i] != 0:
            ct_bys_put(ct, old[i] - 1)
    kdp_free(old, &old_reg)
    return 0


# --- the expiry heap (as ConntrackTable._heap: (timeout, entry) items) --------------
#
# The reference heap holds (timeout, id) items: one per table entry, pushed at
# insert and again when a sweep finds the entry's timeout moved on, plus stale
# items of removed entries (skipped when they come up; counted by the rebuild
# rule). Here an item is (timeout, slot), 12 bytes, and a slot holds at most one
# item of the main heap (F_HEAP): a removed entry whose item is still in the
# heap keeps its slot (flags F_HEAP alone) until the item comes up, so an item
# is live iff its slot's entry is in the table — no pointer from the entry to
# its item is needed. The one case of two live items for one entry (import_
# replacing an entry by the same id: the old item then belongs to the new
# entry, as the reference's items name ids) puts the new entry's own item in
# the side heap `dup` of (timeout, slot, id) items, live while slot and id match.

cdef void ct_heap_sift_down(ct_t* ct, size_t i, heap_item_t it) noexcept nogil:
    """Place item `it` at the hole i, moving it down."""
    cdef size_t n = ct.heap_len, l, r, m
    cdef heap_item_t* h = ct.heap
    while True:
        l = 2 * i + 1
        if l >= n:
            break
        r = l + 1
        m = r if (r < n and h[r].t < h[l].t) else l
        if not (h[m].t < it.t):
            break
        h[i] = h[m]
        i = m
    h[i] = it


cdef int ct_heap_push(ct_t* ct, double t, uint32_t slot) noexcept nogil:
    """The entry in `slot` gets its item in the main heap (timeout t)."""
    cdef heap_item_t* nh
    cdef heap_item_t* h
    cdef size_t ncap, i, p
    if ct.heap_len == ct.heap_cap:
        ncap = <size_t>ct_grown(ct.heap_cap, ct.heap_cap + 1,
                                ct.max_entries + HEAP_SPARE if ct.max_entries else 0)
        nh = <heap_item_t*>realloc(ct.heap, ncap * sizeof(heap_item_t))
        if nh == NULL:
            return -1
        ct.heap = nh
        ct.heap_cap = ncap
    h = ct.heap
    i = ct.heap_len
    ct.heap_len += 1
    while i > 0:
        p = (i - 1) >> 1
        if not (t < h[p].t):
            break
        h[i] = h[p]
        i = p
    h[i].t = t
    h[i].slot = slot
    ct.ents[slot].flags |= F_HEAP
    return 0


cdef heap_item_t ct_heap_pop(ct_t* ct) noexcept nogil:
    """The first item; its slot holds no item any more."""
    cdef heap_item_t top = ct.heap[0]
    ct.ents[top.slot].flags &= ~F_HEAP
    ct.heap_len -= 1
    if ct.heap_len:
        ct_heap_sift_down(ct, 0, ct.heap[ct.heap_len])
    return top


cdef void ct_heap_rebuild(ct_t* ct) noexcept nogil:
    """One item per table entry (timeout_at); stale and duplicate items gone
    (and with them the slots of removed entries that waited for theirs)."""
    cdef uint32_t s
    cdef size_t i
    ct.heap_len = 0
    ct.dup_len = 0
    for s in range(ct.ent_cap):
        if ct.ents[s].flags & F_INTABLE:
            ct.heap[ct.heap_len].t = ct.ents[s].timeout_at
            ct.heap[ct.heap_len].slot = s
            ct.ents[s].flags |= F_HEAP
            ct.heap_len += 1
        elif ct.ents[s].flags == F_HEAP:
            ct_zombie_free(ct, s)
    if ct.heap_len > 1:
        i = (ct.heap_len - 2) // 2 + 1
        while i > 0:
            i -= 1
            ct_heap_sift_down(ct, i, ct.heap[i])


# the duplicate items (a plain binary heap of (timeout, slot, id))

cdef int ct_dup_push(ct_t* ct, double t, uint32_t slot, uint32_t id) noexcept nogil:
    cdef size_t i, p
    cdef dup_item_t tmp
    cdef dup_item_t* nd
    cdef size_t ncap
    if ct.dup_len == ct.dup_cap:
        ncap = 2 * ct.dup_cap if ct.dup_cap else 16
        nd = <dup_item_t*>realloc(ct.dup, ncap * sizeof(dup_item_t))
        if nd == NULL:
            return -1
        ct.dup = nd
        ct.dup_cap = ncap
    i = ct.dup_len
    ct.dup_len += 1
    ct.dup[i].t = t
    ct.dup[i].slot = slot
    ct.dup[i].id = id
    while i > 0:
        p = (i - 1) >> 1
        if not (ct.dup[i].t < ct.dup[p].t):
            break
        tmp = ct.dup[i]
        ct.dup[i] = ct.dup[p]
        ct.dup[p] = tmp
        i = p
    return 0


cdef dup_item_t ct_dup_pop(ct_t* ct) noexcept nogil:
    cdef dup_item_t top = ct.dup[0], tmp
    cdef size_t i = 0, n, l, r, m
    ct.dup_len -= 1
    n = ct.dup_len
    if n:
        ct.dup[0] = ct.dup[n]
        while True:
            l = 2 * i + 1
            if l >= n:
                break
            r = l + 1
            m = r if (r < n and ct.dup[r].t < ct.dup[l].t) else l
            if not (ct.dup[m].t < ct.dup[i].t):
                break
            tmp = ct.dup[i]
            ct.dup[i] = ct.dup[m]
            ct.dup[m] = tmp
            i = m
    return top


cdef inline bint ct_live(const ct_t* ct, uint32_t slot, uint32_t id) noexcept nogil:
    return (slot < ct.ent_cap and (ct.ents[slot].flags & F_INTABLE) != 0
            and ct.ents[slot].id == id)


cdef int64_t ct_sweep(ct_t* ct, double now) noexcept nogil:
    """ConntrackTable.sweep(): every item due (own or duplicate) comes up; its
    entry is removed when expired, else it gets an item at its timeout."""
    cdef int64_t n = 0
    cdef heap_item_t it
    cdef dup_item_t di
    cdef ct_entry_t* e
    while ct.heap_len and ct.heap[0].t <= now:
        it = ct_heap_pop(ct)
        e = &ct.ents[it.slot]
        if not (e.flags & F_INTABLE):          # stale: its entry was removed
            if e.flags == 0:                    # (the slot waited for this item)
                ct_zombie_free(ct, it.slot)
            continue
        if e.timeout_at <= now:
            ct_remove(ct, it.slot)
            ct.st_expired += 1
            n += 1
        else:
            ct_heap_push(ct, e.timeout_at, it.slot)
    while ct.dup_len and ct.dup[0].t <= now:
        di = ct_dup_pop(ct)
        if not ct_live(ct, di.slot, di.id):
            continue
        e = &ct.ents[di.slot]
        if e.timeout_at <= now:
            ct_remove(ct, di.slot)
            ct.st_expired += 1
            n += 1
        else:
            ct_dup_push(ct, e.timeout_at, di.slot, di.id)
    if ct.heap_len + ct.dup_len > 2 * <size_t>ct.n_table + 1024:
        ct_heap_rebuild(ct)
    return n


# --- the table: insert, remove, lookup -----------------------------------------------

cdef void ct_unlink(ct_t* ct, uint32_t s) noexcept nogil:
    """Take a table entry out of the index, the by-source map and table order
    (its slot stays used)."""
    cdef ct_entry_t* e = &ct.ents[s]
    cdef tup_t o, r
    _orig_of(e, &o)
    _reply_of(ct, s, &r)
    if _tup_eq(&o, &r):                 # one index entry (the reply mapping)
        ct_idx_del(ct, (s << 1) + 2, ct_th(ct, &o))
    else:
        ct_idx_del(ct, (s << 1) + 1, ct_th(ct, &o))
        ct_idx_del(ct, (s << 1) + 2, ct_th(ct, &r))
    if e.flags & F_BYSRC:
        ct_bys_del(ct, s)
    if e.flags & F_ORDER:
        ct_ord_del(ct, s)
    e.flags &= ~(F_INTABLE | F_BYSRC | F_ORDER)
    ct.n_table -= 1


cdef void ct_remove(ct_t* ct, uint32_t s) noexcept nogil:
    """ConntrackTable.remove(): unindex a table entry and free its slot; an
    entry not in the table only becomes DYING."""
    cdef ct_entry_t* e = &ct.ents[s]
    e.status |= S_DYING
    if not (e.flags & F_INTABLE):
        return
    ct_unlink(ct, s)
    ct_slot_free(ct, s)


cdef int ct_insert(ct_t* ct, uint32_t s) noexcept nogil:
    """ConntrackTable._insert()."""
    cdef ct_entry_t* e
    cdef tup_t o, r
    cdef uint64_t ho
    cdef uint64_t need = ((<uint64_t>ct.n_table + 1) * 2 * IDX_LOAD_DEN + IDX_LOAD_NUM - 1) \
        // IDX_LOAD_NUM
    if need > ct.idx_cap:
        if ct_idx_rehash(ct, need) < 0:
            return -1
    if (<uint64_t>ct.n_bys + 1) * 2 > ct.bys_cap:
        if ct_bys_rehash(ct) < 0:
            return -1
    if ct_order_assign(ct, s) < 0:
        return -1
    e = &ct.ents[s]
    e.flags |= F_INTABLE
    ct.n_table += 1
    _orig_of(e, &o)
    _reply_of(ct, s, &r)
    ho = ct_th(ct, &o)
    if _tup_eq(&o, &r):
        ct_idx_put(ct, (s << 1) + 2, ho)      # the later (reply) mapping wins
    else:
        ct_idx_put(ct, (s << 1) + 1, ho)
        ct_idx_put(ct, (s << 1) + 2, ct_th(ct, &r))
    if e.status & S_SRC_NAT_DONE:
        ct_bys_put(ct, s)
        e.flags |= F_BYSRC
    if e.flags & F_HEAP:                # the slot's item is the replaced entry's (import_)
        return ct_dup_push(ct, e.timeout_at, s, e.id)
    return ct_heap_push(ct, e.timeout_at, s)


cdef int64_t ct_lookup(ct_t* ct, const tup_t* t, double now, int* direction) noexcept nogil:
    """ConntrackTable.lookup() with lazy expiry: slot or -1."""
    cdef uint32_t r = ct_idx_find(ct, t, ct_th(ct, t))
    cdef uint32_t s
    if r == 0:
        return -1
    s = (r - 1) >> 1
    if ct.ents[s].timeout_at <= now:
        ct.st_expired += 1
        ct_remove(ct, s)
        return -1
    direction[0] = (r - 1) & 1
    return s


# --- capacity: early drop (ConntrackTable.make_room) ---------------------------------

cdef int ct_collect_bucket(const ct_t* ct, uint32_t b, uint32_t* out, int cap) noexcept nogil:
    """Slots of the table entries with a tuple in early-drop bucket b."""
    cdef uint64_t lo32 = ((<uint64_t>b << 32) + ct.buckets - 1) // ct.buckets
    cdef uint64_t hi32 = ((<uint64_t>(b + 1) << 32) + ct.buckets - 1) // ct.buckets
    cdef uint64_t icap = ct.idx_cap
    cdef uint64_t p_lo = (lo32 * icap) >> 32
    cdef uint64_t span = (((hi32 - 1) * icap) >> 32) - p_lo
    cdef uint64_t steps = 0
    cdef uint32_t r, s
    cdef int n = 0, k
    cdef bint seen
    while steps <= <uint64_t>ct.idx_cap + span:
        r = ct.idx[(p_lo + steps) % icap] & REF_MASK
        if r == 0:
            if steps > span:
                break
        elif ct_bucket_of_hash(ct, ct_ref_hash(ct, r)) == b:
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


cdef int ct_early_drop(ct_t* ct, const tup_t* orig, double now) noexcept nogil:
    """ConntrackTable._early_drop(): evict the non-ASSURED entries of the first
    bucket (of up to 8 from the new tuple's) holding any. Returns how many."""
    cdef uint32_t start = ct_bucket_of_hash(ct, ct_th(ct, orig))
    cdef uint64_t i, lim = EVICTION_RANGE if ct.buckets > EVICTION_RANGE else ct.buckets
    cdef int n, k, victims
    cdef uint32_t s, b
    cdef uint32_t* nb
    cdef size_t ncap
    for i in range(lim):
        b = <uint32_t>((start + i) % ct.buckets)
        while True:                 # the scratch list grows to the largest bucket seen
            n = ct_collect_bucket(ct, b, ct.scratch, ct.scratch_cap)
            if <uint32_t>n < ct.scratch_cap:
                break
            ncap = 2 * <size_t>ct.scratch_cap if ct.scratch_cap else 16
            nb = <uint32_t*>realloc(ct.scratch, ncap * sizeof(uint32_t))
            if nb == NULL:
                return 0
            ct.scratch = nb
            ct.scratch_cap = <uint32_t>ncap
        victims = 0
        for k in range(n):
            s = ct.scratch[k]
            if ct.ents[s].timeout_at <= now:
                ct_remove(ct, s)
                ct.st_expired += 1
                ct.scratch[k] = EMPTY_SLOT
            elif not (ct.ents[s].status & S_ASSURED):
                victims += 1
            else:
                ct.scratch[k] = EMPTY_SLOT
        for k in range(n):
            if ct.scratch[k] != EMPTY_SLOT:
                ct_remove(ct, ct.scratch[k])
        if victims:
            return victims
    return 0


cdef int ct_make_room(ct_t* ct, const tup_t* orig, double now) noexcept nogil:
    """ConntrackTable.make_room(): 1 ok, 0 table full (drop)."""
    cdef int ev
    if ct.max_entries == 0 or ct.n_table < ct.max_entries:
        return 1
    ct_sweep(ct, now)
    if ct.n_table < ct.max_entries:
        return 1
    ev = ct_early_drop(ct, orig, now)
    if ev:
        ct.st_early_drop += ev
        return 1
    ct.st_drop += 1
    return 0
