# fast/conntrack_nat.pxi (included by _fastpath.pyx): NAT bindings of the
# compiled conntrack table's pending entries — twin of kdp/conntrack/nat.py
# (nf_nat_setup_info: the by-source reuse, the address choice, the port
# search with the same keyed offsets). Works on conntrack_store.pxi's ct_t and
# its by-source map; rewriting packets stays in Python.

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

cdef enum:
    NAT_MAX_ATTEMPTS = 128


cdef int ct_nat_keys(ct_t* ct, namespace) except -1:
    """The port search's decision points (nat.py's `offset`) for this namespace."""
    from kdp.conntrack.keyed import decision_point
    for m, manip in enumerate(("SRC", "DST")):
        for r in range(8):
            ct.nat_points[m][r] = <uint64_t>decision_point("nat-port", namespace, manip, r)
    return 0


cdef inline bint _port_proto(uint8_t p) noexcept nogil:
    return p == 6 or p == 17 or p == 132 or p == 33 or p == 136


cdef bint ct_nat_used(ct_t* ct, const tup_t* t, uint32_t self_slot, double now) noexcept nogil:
    """nat._used(): another entry's reply already maps to t."""
    cdef tup_t inv
    cdef int d
    cdef int64_t s
    if not _invert(t, &inv):
        return False
    s = ct_lookup(ct, &inv, now, &d)
    return s >= 0 and <uint32_t>s != self_slot


cdef inline uint16_t ct_nat_key(const tup_t* t, bint src) noexcept nogil:
    if t.proto == P_ICMP or src:
        return t.sport
    return t.dport


cdef inline void ct_nat_with_key(tup_t* t, bint src, uint32_t v) noexcept nogil:
    if t.proto == P_ICMP or src:
        t.sport = <uint16_t>v
    else:
        t.dport = <uint16_t>v


cdef inline bint ct_nat_l4_in_range(const tup_t* t, bint src,
                                    const nat_range_t* rng) noexcept nogil:
    cdef uint16_t k
    if t.proto != P_ICMP and not _port_proto(t.proto):
        return True
    k = ct_nat_key(t, src)
    return rng.min_port <= k and k <= rng.max_port


cdef inline bint ct_nat_in_range(const tup_t* t, const nat_range_t* rng) noexcept nogil:
    if rng.map_ips and not (rng.min_ip <= t.src and t.src <= rng.max_ip):
        return False
    return not rng.proto_specified or ct_nat_l4_in_range(t, True, rng)


cdef bint ct_nat_appropriate_src(const ct_t* ct, const tup_t* t, const nat_range_t* rng,
                                 double now, tup_t* out) noexcept nogil:
    """find_appropriate_src(): the oldest (table order) by-source mapping in range."""
    cdef uint32_t mask = ct.bys_cap - 1
    cdef uint32_t pos = <uint32_t>(ct_bh(ct, t.proto, t.src, t.sport) >> (64 - ct.bys_bits))
    cdef uint32_t s
    cdef uint64_t best_key = 0xFFFFFFFFFFFFFFFFULL, key
    cdef const ct_entry_t* o
    cdef tup_t rep, mapped, res
    cdef bint found = False
    while ct.bys[pos] != 0:
        s = ct.bys[pos] - 1
        o = &ct.ents[s]
        key = ct_order_key(ct, s) if (o.proto == t.proto and o.osrc == t.src
                                      and o.osport == t.sport) else best_key
        if key < best_key:
            _reply_of(ct, s, &rep)
            if _invert(&rep, &mapped):
                res.proto = t.proto
                res.src = mapped.src
                res.dst = t.dst
                res.sport = mapped.sport
                res.dport = t.dport
                if ct_nat_in_range(&res, rng):
                    out[0] = res
                    best_key = key
                    found = True
        pos = (pos + 1) & mask
    return found


cdef void ct_nat_best_ip(tup_t* t, const nat_range_t* rng, bint src) noexcept nogil:
    """find_best_ips_proto()."""
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


cdef inline bint ct_nat_port_span(const tup_t* t, const nat_range_t* rng, bint src,
                                  uint32_t* lo, uint32_t* size) noexcept nogil:
    """The ports the search may take (lo, size); False: the tuple keeps its port."""
    cdef uint32_t port
    if t.proto == P_ICMP:
        if not rng.proto_specified:
            lo[0] = 0
            size[0] = 65536
        else:
            lo[0] = rng.min_port
            size[0] = rng.max_port - rng.min_port + 1
    elif _port_proto(t.proto):
        if not rng.proto_specified:
            if not src:
                return False
            port = ct_nat_key(t, src)
            if port < 512:
                lo[0] = 1
                size[0] = 511
            elif port < 1024:
                lo[0] = 600
                size[0] = 1023 - 600 + 1
            else:
                lo[0] = 1024
                size[0] = 65535 - 1024 + 1
        else:
            lo[0] = rng.min_port if rng.min_port <= rng.max_port else rng.max_port
            size[0] = (rng.max_port if rng.min_port <= rng.max_port else rng.min_port) - lo[0] + 1
    else:
        return False
    return True


cdef void ct_nat_pick_port(ct_t* ct, uint32_t s, tup_t* t, const nat_range_t* rng, bint src,
                           double now) noexcept nogil:
    """nf_nat_l4proto_unique_tuple(); t is updated in place."""
    cdef uint32_t lo, size, off, attempts, i
    cdef int rnd = 0
    cdef tup_t cand, base = t[0]
    cdef const ct_entry_t* e = &ct.ents[s]
    cdef bint hashed = rng.random or rng.random_fully or src
    if not ct_nat_port_span(t, rng, src, &lo, &size):
        return
    off = 0
    if hashed:
        off = <uint32_t>(_flow_hash(ct.seed64, ct.nat_points[0 if src else 1][0], e.proto,
                                    e.osrc, e.odst, e.osport, e.odport) & 0xFFFF)
    attempts = size if size < NAT_MAX_ATTEMPTS else NAT_MAX_ATTEMPTS
    cand = base
    while True:
        for i in range(attempts):
            cand = base
            ct_nat_with_key(&cand, src, lo + off % size)
            if not ct_nat_used(ct, &cand, s, now):
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
            off = <uint32_t>(_flow_hash(ct.seed64, ct.nat_points[0 if src else 1][rnd & 7],
                                        e.proto, e.osrc, e.odst, e.osport, e.odport) & 0xFFFF)


cdef int ct_setup_nat(ct_t* ct, uint32_t s, bint src, const nat_range_t* rng,
                      double now) noexcept nogil:
    """setup_nat(): 1 when the tuple changed, -1 out of memory."""
    cdef ct_entry_t* e = &ct.ents[s]
    cdef tup_t rep, cur, t, found
    cdef bint random_all = rng.random or rng.random_fully
    cdef bint done = False
    _reply_of(ct, s, &rep)
    _invert(&rep, &cur)
    t = cur
    if src and not random_all:
        if ct_nat_in_range(&cur, rng):
            if not ct_nat_used(ct, &cur, s, now):
                done = True
        elif ct_nat_appropriate_src(ct, &cur, rng, now, &found):
            if not ct_nat_used(ct, &found, s, now):
                t = found
                done = True
    if not done:
        t = cur
        ct_nat_best_ip(&t, rng, src)
        if not random_all:
            if rng.proto_specified:
                if ct_nat_l4_in_range(&t, src, rng) and (rng.min_port == rng.max_port
                                                         or not ct_nat_used(ct, &t, s, now)):
                    done = True
            elif not ct_nat_used(ct, &t, s, now):
                done = True
        if not done:
            ct_nat_pick_port(ct, s, &t, rng, src, now)
    e = &ct.ents[s]
    changed = not _tup_eq(&t, &cur)
    if changed:
        _invert(&t, &rep)
        if ct_set_reply(ct, s, &rep) < 0:
            return -1
        e = &ct.ents[s]
        e.status |= S_SRC_NAT if src else S_DST_NAT
    e.status |= S_SRC_NAT_DONE if src else S_DST_NAT_DONE
    return 1 if changed else 0


cdef int ct_nat_range(nat_range_t* rng, min_ip, max_ip, min_port, max_port, random,
                      random_fully, persistent) except -1:
    """A NatRange's fields (None: not given) in C."""
    rng.map_ips = min_ip is not None
    rng.min_ip = int(min_ip) if min_ip is not None else 0
    rng.max_ip = int(max_ip) if max_ip is not None else 0
    rng.proto_specified = min_port is not None
    rng.min_port = min_port if min_port is not None else 0
    rng.max_port = max_port if max_port is not None else 0
    rng.random = random
    rng.random_fully = random_fully
    rng.persistent = persistent
    return 0
