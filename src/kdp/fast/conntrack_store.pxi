# fast/conntrack_store.pxi (included by _fastpath.pyx): the storage of the
# compiled conntrack table — twin of kdp/conntrack/table.py's storage. Owns the
# table state ct_t and what keeps it: 64-byte C entries in a pool; both tuples
# of every confirmed entry in one open-addressing index (linear probing over a
# table of any size, home slot = reciprocal_scale of the hash, so slots stay in
# hash order; up to 80% full; backward-shift delete); the NAT by-source
# multimap, sized by the entries that have a source binding; a binary heap of
# 12-byte (timeout, slot) items swept as the reference's heap is (the entry
# knows its item's place; see "the expiry heap" below); capacity with the
# same early-drop buckets (bucket = reciprocal_scale of the same flow_hash).
# Pool, index and heap grow by doubling but never past what max_entries needs
# (the pool only beyond it for pending entries), so a full table holds no
# power-of-two slack.
# Packets, states and NAT are in conntrack_life.pxi and conntrack_nat.pxi; the
# Python-facing CtTable in conntrack.pxi.

from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

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
    # the entry pool (free entries chained through .seq)
    ct_entry_t* ents
    kdp_region ents_reg, idx_reg, bys_reg
    uint32_t ent_cap
    uint32_t free_head
    uint32_t n_used
    uint32_t n_table
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
    # entry ids, table order, counters
    uint64_t next_id
    uint32_t next_seq
    int64_t st_found, st_new, st_insert, st_insert_failed, st_drop, st_early_drop
    int64_t st_invalid, st_expired


# --- the tuples of an entry ---------------------------------------------------

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
    IDX_LOAD_NUM = 2
    IDX_LOAD_DEN = 3
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


cdef int ct_store_open(ct_t* ct, uint32_t cap) noexcept nogil:
    """Pool, index, by-source map and heap for cap entries; -1: no memory."""
    cdef uint32_t i
    cdef uint64_t lim = ct_idx_limit(ct)
    ct.ents = <ct_entry_t*>kdp_alloc(cap * sizeof(ct_entry_t), &ct.ents_reg)
    ct.heap_cap = 1024
    ct.heap = <heap_item_t*>malloc(ct.heap_cap * sizeof(heap_item_t))
    if ct.ents == NULL or ct.heap == NULL:
        return -1
    ct.ent_cap = cap
    for i in range(cap):
        ct.ents[i].seq = i + 1 if i + 1 < cap else EMPTY_SLOT
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
    if ct.ents != NULL:
        kdp_free(ct.ents, &ct.ents_reg)
    if ct.idx != NULL:
        kdp_free(ct.idx, &ct.idx_reg)
    if ct.bys != NULL:
        kdp_free(ct.bys, &ct.bys_reg)
    free(ct.heap)
    free(ct.dup)
    free(ct.scratch)


# --- the entry pool -------------------------------------------------------------

cdef int ct_pool_grow(ct_t* ct) noexcept nogil:
    cdef uint64_t want = ct_grown(ct.ent_cap, ct.ent_cap + 1,
                                  ct.max_entries + POOL_SPARE if ct.max_entries else 0)
    cdef uint32_t cap, i
    cdef ct_entry_t* p
    if want > MAX_SLOTS:
        return -1
    cap = <uint32_t>want
    cdef kdp_region reg
    p = <ct_entry_t*>kdp_alloc(<size_t>cap * sizeof(ct_entry_t), &reg)
    if p == NULL:
        return -1
    memcpy(p, ct.ents, <size_t>ct.ent_cap * sizeof(ct_entry_t))
    kdp_free(ct.ents, &ct.ents_reg)
    ct.ents = p
    ct.ents_reg = reg
    for i in range(ct.ent_cap, cap):
        p[i].seq = i + 1 if i + 1 < cap else ct.free_head
    ct.free_head = ct.ent_cap
    ct.ent_cap = cap
    return 0


cdef int64_t ct_slot_new(ct_t* ct) noexcept nogil:
    cdef uint32_t s
    if ct.free_head == EMPTY_SLOT:
        if ct_pool_grow(ct) < 0:
            return -1
    s = ct.free_head
    ct.free_head = ct.ents[s].seq
    memset(&ct.ents[s], 0, sizeof(ct_entry_t))
    ct.ents[s].flags = F_USED
    ct.n_used += 1
    return s


cdef int64_t ct_slot_take(ct_t* ct, uint32_t want) noexcept nogil:
    """Allocate this free slot (unlink it from the free list)."""
    cdef uint32_t prev = EMPTY_SLOT, cur = ct.free_head
    while cur != EMPTY_SLOT and cur != want:
        prev = cur
        cur = ct.ents[cur].seq
    if cur == EMPTY_SLOT:
        return ct_slot_new(ct)
    if prev == EMPTY_SLOT:
        ct.free_head = ct.ents[cur].seq
    else:
        ct.ents[prev].seq = ct.ents[cur].seq
    memset(&ct.ents[cur], 0, sizeof(ct_entry_t))
    ct.ents[cur].flags = F_USED
    ct.n_used += 1
    return cur


cdef inline void ct_slot_free(ct_t* ct, uint32_t s) noexcept nogil:
    ct.ents[s].flags = 0
    ct.ents[s].id = 0
    ct.ents[s].seq = ct.free_head
    ct.free_head = s
    ct.n_used -= 1


# --- hashing ----------------------------------------------------------------------

cdef inline uint64_t ct_th(const ct_t* ct, const tup_t* t) noexcept nogil:
    return _flow_base_s(ct.smix_bucket, t.proto, t.src, t.dst, t.sport, t.dport)


cdef inline uint64_t ct_ref_hash(const ct_t* ct, uint32_t ref) noexcept nogil:
    cdef tup_t t
    ref &= REF_MASK
    cdef const ct_entry_t* e = &ct.ents[(ref - 1) >> 1]
    if (ref - 1) & 1:
        _reply_of(e, &t)
    else:
        _orig_of(e, &t)
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
            if _dir_eq(&ct.ents[(r - 1) >> 1], (r - 1) & 1, t):
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
# rule). Here an item is (timeout, slot), 12 bytes; the entry keeps the index of
# its own item (ct_hpos, in its pad bytes), so an item is live iff its slot's
# entry is in the table and points back at it — an item left by a removed entry
# is stale even when its slot is reused. The one case of two live items for one
# entry (import_ replacing an entry by the same id: the old item then belongs to
# the new entry, as the reference's items name ids) keeps the old item in the
# side heap `dup` of (timeout, slot, id) items, live while slot and id match.

cdef inline uint32_t ct_hpos(const ct_entry_t* e) noexcept nogil:
    return (<const uint32_t*>&e.pad[1])[0]


cdef inline void ct_set_hpos(ct_entry_t* e, uint32_t i) noexcept nogil:
    (<uint32_t*>&e.pad[1])[0] = i


cdef inline bint ct_item_live(const ct_t* ct, size_t i) noexcept nogil:
    """Item i of the heap is its entry's own (else: stale)."""
    cdef uint32_t s = ct.heap[i].slot
    return ((ct.ents[s].flags & F_INTABLE) != 0 and ct_hpos(&ct.ents[s]) == i)


cdef inline void ct_item_move(ct_t* ct, size_t src, size_t dst) noexcept nogil:
    """heap[dst] = heap[src], the live item's entry following it."""
    if ct_item_live(ct, src):
        ct_set_hpos(&ct.ents[ct.heap[src].slot], <uint32_t>dst)
    ct.heap[dst] = ct.heap[src]


cdef inline void ct_item_place(ct_t* ct, size_t i, heap_item_t it, bint live) noexcept nogil:
    ct.heap[i] = it
    if live:
        ct_set_hpos(&ct.ents[it.slot], <uint32_t>i)


cdef void ct_heap_sift_up(ct_t* ct, size_t i, heap_item_t it, bint live) noexcept nogil:
    """Place item `it` (live: its entry's own) at the hole i, moving it up."""
    cdef size_t p
    while i > 0:
        p = (i - 1) >> 1
        if not (it.t < ct.heap[p].t):
            break
        ct_item_move(ct, p, i)
        i = p
    ct_item_place(ct, i, it, live)


cdef void ct_heap_sift_down(ct_t* ct, size_t i, heap_item_t it, bint live) noexcept nogil:
    """Place item `it` at the hole i, moving it down."""
    cdef size_t n = ct.heap_len, l, r, m
    while True:
        l = 2 * i + 1
        if l >= n:
            break
        r = l + 1
        m = r if (r < n and ct.heap[r].t < ct.heap[l].t) else l
        if not (ct.heap[m].t < it.t):
            break
        ct_item_move(ct, m, i)
        i = m
    ct_item_place(ct, i, it, live)


cdef int ct_heap_push(ct_t* ct, double t, uint32_t slot) noexcept nogil:
    """The entry in `slot` gets a new own item (timeout t)."""
    cdef heap_item_t* nh
    cdef heap_item_t it
    cdef size_t ncap
    if ct.heap_len == ct.heap_cap:
        ncap = <size_t>ct_grown(ct.heap_cap, ct.heap_cap + 1,
                                ct.max_entries + HEAP_SPARE if ct.max_entries else 0)
        nh = <heap_item_t*>realloc(ct.heap, ncap * sizeof(heap_item_t))
        if nh == NULL:
            return -1
        ct.heap = nh
        ct.heap_cap = ncap
    it.t = t
    it.slot = slot
    ct.heap_len += 1
    ct_heap_sift_up(ct, ct.heap_len - 1, it, True)
    return 0


cdef heap_item_t ct_heap_pop(ct_t* ct, bint* live) noexcept nogil:
    """The first item, and whether it was live (its entry now has no own item)."""
    cdef heap_item_t top = ct.heap[0]
    live[0] = ct_item_live(ct, 0)
    if live[0]:
        ct_set_hpos(&ct.ents[top.slot], 0xFFFFFFFFU)
    ct.heap_len -= 1
    if ct.heap_len:
        ct_heap_sift_down(ct, 0, ct.heap[ct.heap_len], ct_item_live(ct, ct.heap_len))
    return top


cdef void ct_heap_take(ct_t* ct, size_t i) noexcept nogil:
    """Remove item i (any place) from the heap."""
    cdef heap_item_t last
    cdef bint live
    if ct_item_live(ct, i):
        ct_set_hpos(&ct.ents[ct.heap[i].slot], 0xFFFFFFFFU)
    ct.heap_len -= 1
    if i == ct.heap_len:
        return
    live = ct_item_live(ct, ct.heap_len)
    last = ct.heap[ct.heap_len]
    if i > 0 and last.t < ct.heap[(i - 1) >> 1].t:
        ct_heap_sift_up(ct, i, last, live)
    else:
        ct_heap_sift_down(ct, i, last, live)


cdef void ct_heap_rebuild(ct_t* ct) noexcept nogil:
    """One own item per table entry (timeout_at), stale and duplicate items gone."""
    cdef uint32_t s
    cdef size_t i
    ct.heap_len = 0
    ct.dup_len = 0
    for s in range(ct.ent_cap):
        if ct.ents[s].flags & F_INTABLE:
            ct.heap[ct.heap_len].t = ct.ents[s].timeout_at
            ct.heap[ct.heap_len].slot = s
            ct_set_hpos(&ct.ents[s], <uint32_t>ct.heap_len)
            ct.heap_len += 1
    if ct.heap_len > 1:
        i = (ct.heap_len - 2) // 2 + 1
        while i > 0:
            i -= 1
            ct_heap_sift_down(ct, i, ct.heap[i], True)


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


cdef int ct_heap_keep_for_id(ct_t* ct, uint32_t s) noexcept nogil:
    """Before the table entry in slot s is replaced by one of the same id in the
    same slot (import_): its own item becomes a duplicate item of that id."""
    cdef size_t i = ct_hpos(&ct.ents[s])
    cdef double t
    if not (ct.ents[s].flags & F_INTABLE) or i >= ct.heap_len or ct.heap[i].slot != s:
        return 0
    t = ct.heap[i].t
    ct_heap_take(ct, i)
    ct_set_hpos(&ct.ents[s], 0xFFFFFFFFU)
    return ct_dup_push(ct, t, s, ct.ents[s].id)


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
    cdef bint live
    while ct.heap_len and ct.heap[0].t <= now:
        it = ct_heap_pop(ct, &live)
        if not live:
            continue
        e = &ct.ents[it.slot]
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

cdef void ct_remove(ct_t* ct, uint32_t s) noexcept nogil:
    """ConntrackTable.remove(): unindex a table entry and free its slot; an
    entry not in the table only becomes DYING."""
    cdef ct_entry_t* e = &ct.ents[s]
    cdef tup_t o, r
    e.status |= S_DYING
    if not (e.flags & F_INTABLE):
        return
    _orig_of(e, &o)
    _reply_of(e, &r)
    if _tup_eq(&o, &r):                 # one index entry (the reply mapping)
        ct_idx_del(ct, (s << 1) + 2, ct_th(ct, &o))
    else:
        ct_idx_del(ct, (s << 1) + 1, ct_th(ct, &o))
        ct_idx_del(ct, (s << 1) + 2, ct_th(ct, &r))
    if e.flags & F_BYSRC:
        ct_bys_del(ct, s)
    e.flags &= ~(F_INTABLE | F_BYSRC)
    ct.n_table -= 1
    ct_slot_free(ct, s)


cdef int ct_insert(ct_t* ct, uint32_t s) noexcept nogil:
    """ConntrackTable._insert()."""
    cdef ct_entry_t* e = &ct.ents[s]
    cdef tup_t o, r
    cdef uint64_t ho
    cdef uint32_t pos, mask
    cdef uint64_t need = ((<uint64_t>ct.n_table + 1) * 2 * IDX_LOAD_DEN + IDX_LOAD_NUM - 1) \
        // IDX_LOAD_NUM
    if need > ct.idx_cap:
        if ct_idx_rehash(ct, need) < 0:
            return -1
    if (<uint64_t>ct.n_bys + 1) * 2 > ct.bys_cap:
        if ct_bys_rehash(ct) < 0:
            return -1
    e = &ct.ents[s]
    e.flags |= F_INTABLE
    e.seq = ct.next_seq
    ct.next_seq += 1
    ct.n_table += 1
    _orig_of(e, &o)
    _reply_of(e, &r)
    ho = ct_th(ct, &o)
    if _tup_eq(&o, &r):
        ct_idx_put(ct, (s << 1) + 2, ho)      # the later (reply) mapping wins
    else:
        ct_idx_put(ct, (s << 1) + 1, ho)
        ct_idx_put(ct, (s << 1) + 2, ct_th(ct, &r))
    if e.status & S_SRC_NAT_DONE:
        ct_bys_put(ct, s)
        e.flags |= F_BYSRC
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
