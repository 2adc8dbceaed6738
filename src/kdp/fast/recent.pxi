# fast/recent.pxi (included by _fastpath.pyx): the `recent` lists the compiled
# service matcher keeps for session affinity — twin of kdp/netfilter/recent.py
# (xt_recent: per list, addresses in LRU order with their last
# IP_PKT_LIST_TOT stamps; --rcheck --seconds --reap and --set). MatcherKernel
# (matcher.pxi) owns one rc_t; entries live in a pool with a hash index over
# (list, address).

# xt_recent: one address in one list, its last IP_PKT_LIST_TOT stamps
cdef struct rc_entry_t:
    uint32_t addr
    int32_t table
    int32_t prev            # LRU neighbours within the list (prev: older)
    int32_t next
    uint8_t n
    uint8_t start
    double stamps[20]

cdef struct rc_list_t:
    int32_t head            # oldest
    int32_t tail
    int32_t count

# All the lists of one matcher: the entry pool (free entries chained through
# .next), the (list, address) index, the lists' ends and counts.
cdef struct rc_t:
    rc_entry_t* ents
    int32_t cap, free_head, used
    rc_list_t* lists
    int32_t n_lists
    int32_t* idx
    int bits

cdef enum:
    RC_LIST_TOT = 100
    RC_PKT_TOT = 20


cdef int rc_open(rc_t* rc, int32_t n_lists) noexcept nogil:
    """n_lists empty lists (no entries yet); -1: no memory."""
    cdef int32_t r
    rc.n_lists = n_lists
    rc.lists = <rc_list_t*>malloc(max(1, rc.n_lists) * sizeof(rc_list_t))
    if rc.lists == NULL:
        return -1
    for r in range(rc.n_lists):
        rc.lists[r].head = rc.lists[r].tail = -1
        rc.lists[r].count = 0
    rc.cap = 0
    rc.free_head = -1
    rc.used = 0
    rc.bits = 0
    return 0


cdef void rc_close(rc_t* rc) noexcept nogil:
    free(rc.ents)
    free(rc.lists)
    free(rc.idx)


cdef dict rc_lists(const rc_t* rc):
    """{list index: [(address, stamps)]} in LRU order (oldest first)."""
    out = {}
    cdef int32_t t, e
    for t in range(rc.n_lists):
        e = rc.lists[t].head
        items = []
        while e >= 0:
            items.append((rc.ents[e].addr, [rc.ents[e].stamps[(rc.ents[e].start + i) % RC_PKT_TOT]
                                            for i in range(rc.ents[e].n)]))
            e = rc.ents[e].next
        if items:
            out[t] = items
    return out


# --- the (list, address) index ---------------------------------------------------

cdef inline uint64_t rc_key(int32_t table, uint32_t addr) noexcept nogil:
    return ((<uint64_t>table) << 32) | addr


cdef inline uint32_t rc_home(const rc_t* rc, uint64_t key) noexcept nogil:
    return <uint32_t>((key * 0x9E3779B97F4A7C15ULL) >> (64 - rc.bits))


cdef int32_t rc_find(const rc_t* rc, int32_t table, uint32_t addr) noexcept nogil:
    cdef uint32_t mask, h
    cdef int32_t e
    if rc.bits == 0:
        return -1
    mask = (1U << rc.bits) - 1
    h = rc_home(rc, rc_key(table, addr))
    while True:
        e = rc.idx[h]
        if e < 0:
            return -1
        if rc.ents[e].addr == addr and rc.ents[e].table == table:
            return e
        h = (h + 1) & mask


cdef void rc_idx_put(rc_t* rc, int32_t e) noexcept nogil:
    cdef uint32_t mask = (1U << rc.bits) - 1
    cdef uint32_t h = rc_home(rc, rc_key(rc.ents[e].table, rc.ents[e].addr))
    while rc.idx[h] >= 0:
        h = (h + 1) & mask
    rc.idx[h] = e


cdef void rc_idx_del(rc_t* rc, int32_t e) noexcept nogil:
    cdef uint32_t mask = (1U << rc.bits) - 1
    cdef uint32_t i = rc_home(rc, rc_key(rc.ents[e].table, rc.ents[e].addr))
    cdef uint32_t j, k
    while rc.idx[i] != e:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if rc.idx[j] < 0:
            break
        k = rc_home(rc, rc_key(rc.ents[rc.idx[j]].table, rc.ents[rc.idx[j]].addr))
        if (i <= j and i < k and k <= j) or (i > j and (i < k or k <= j)):
            continue
        rc.idx[i] = rc.idx[j]
        i = j
    rc.idx[i] = -1


cdef int rc_grow(rc_t* rc) noexcept nogil:
    cdef int32_t cap = 64 if rc.cap == 0 else rc.cap * 2, i
    cdef int bits = 7
    cdef rc_entry_t* p = <rc_entry_t*>realloc(rc.ents, <size_t>cap * sizeof(rc_entry_t))
    if p == NULL:
        return -1
    rc.ents = p
    for i in range(rc.cap, cap):
        p[i].next = i + 1 if i + 1 < cap else rc.free_head
        p[i].table = -1
    rc.free_head = rc.cap
    rc.cap = cap
    while (1 << bits) < 2 * cap:
        bits += 1
    free(rc.idx)
    rc.idx = <int32_t*>malloc((<size_t>1 << bits) * sizeof(int32_t))
    if rc.idx == NULL:
        return -1
    memset(rc.idx, 0xFF, (<size_t>1 << bits) * sizeof(int32_t))
    rc.bits = bits
    for i in range(rc.cap):
        if rc.ents[i].table >= 0:
            rc_idx_put(rc, i)
    return 0


# --- the LRU lists -----------------------------------------------------------------

cdef void rc_unlink(rc_t* rc, int32_t e) noexcept nogil:
    cdef rc_list_t* l = &rc.lists[rc.ents[e].table]
    if rc.ents[e].prev >= 0:
        rc.ents[rc.ents[e].prev].next = rc.ents[e].next
    else:
        l.head = rc.ents[e].next
    if rc.ents[e].next >= 0:
        rc.ents[rc.ents[e].next].prev = rc.ents[e].prev
    else:
        l.tail = rc.ents[e].prev


cdef void rc_append(rc_t* rc, int32_t e) noexcept nogil:
    cdef rc_list_t* l = &rc.lists[rc.ents[e].table]
    rc.ents[e].prev = l.tail
    rc.ents[e].next = -1
    if l.tail >= 0:
        rc.ents[l.tail].next = e
    else:
        l.head = e
    l.tail = e


cdef void rc_delete(rc_t* rc, int32_t e) noexcept nogil:
    rc_idx_del(rc, e)
    rc_unlink(rc, e)
    rc.lists[rc.ents[e].table].count -= 1
    rc.ents[e].table = -1
    rc.ents[e].next = rc.free_head
    rc.free_head = e
    rc.used -= 1


cdef inline double rc_last(const rc_t* rc, int32_t e) noexcept nogil:
    return rc.ents[e].stamps[(rc.ents[e].start + rc.ents[e].n - 1) % RC_PKT_TOT]


# --- the matches ----------------------------------------------------------------------

cdef bint rc_check(rc_t* rc, int32_t table, uint32_t addr, double seconds,
                   double now) noexcept nogil:
    """--rcheck --seconds S --reap."""
    cdef int32_t e = rc_find(rc, table, addr), oldest
    cdef double since
    cdef bint hit = False
    cdef int i
    if e < 0:
        return False
    since = now - seconds
    for i in range(rc.ents[e].n):
        if not (since > rc.ents[e].stamps[(rc.ents[e].start + i) % RC_PKT_TOT]):
            hit = True
            break
    oldest = rc.lists[table].head
    if since > rc_last(rc, oldest):
        rc_delete(rc, oldest)
    return hit


cdef int rc_set(rc_t* rc, int32_t table, uint32_t addr, double now) noexcept nogil:
    """--set."""
    cdef int32_t e = rc_find(rc, table, addr)
    cdef rc_entry_t* p
    if e < 0:
        if rc.lists[table].count >= RC_LIST_TOT:
            rc_delete(rc, rc.lists[table].head)
        if rc.free_head < 0 or 2 * (rc.used + 1) > (1 << rc.bits):
            if rc_grow(rc) < 0:
                return -1
        e = rc.free_head
        rc.free_head = rc.ents[e].next
        p = &rc.ents[e]
        p.addr = addr
        p.table = table
        p.n = 1
        p.start = 0
        p.stamps[0] = now
        rc_append(rc, e)
        rc_idx_put(rc, e)
        rc.lists[table].count += 1
        rc.used += 1
        return 0
    p = &rc.ents[e]
    if p.n < RC_PKT_TOT:
        p.stamps[(p.start + p.n) % RC_PKT_TOT] = now
        p.n += 1
    else:
        p.stamps[p.start] = now
        p.start = (p.start + 1) % RC_PKT_TOT
    rc_unlink(rc, e)
    rc_append(rc, e)
    return 0
