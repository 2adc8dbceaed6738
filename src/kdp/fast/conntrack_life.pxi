# fast/conntrack_life.pxi (included by _fastpath.pyx): the life cycle of the
# compiled conntrack table's entries — twin of kdp/conntrack/track.py (a packet
# finds or creates its entry, which is confirmed or dropped), tcp.py (TCP
# states from the very table in kdp.conntrack.tcp, copied into C on first use)
# and timeouts.py (how long each state lives). Works on conntrack_store.pxi's
# ct_t; owns no policy: rules and hooks stay in kdp.netfilter.

# One packet's answer inside the table (CtTable turns it into a CtVerdict or a
# CT_RESULT_DTYPE record).
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

# result codes (kdp.contract CT_OK, ...; checked at import)
cdef enum:
    CT_OK_ = 0
    CT_INVALID_ = 1
    CT_DROP_ = 2
    CT_MISS_ = 3

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
        raise RuntimeError("kdp.conntrack.tcp.STATES changed: update fast/conntrack_life.pxi")
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


cdef int ct_set_timeouts(ct_t* ct, tm) except -1:
    """The timeouts of a kdp.conntrack.timeouts.Timeouts, in seconds per state."""
    from kdp.conntrack import tcp as tcpct
    for i, s in enumerate(tcpct.STATES):
        ct.to_tcp[i] = 0.0 if s == "NONE" else float(tm.tcp(s))
    ct.to_tcp_close = tm.tcp_close
    ct.to_tcp_unack = tm.tcp_unack
    ct.to_udp = tm.udp
    ct.to_udp_stream = tm.udp_stream
    ct.to_icmp = tm.icmp
    ct.to_generic = tm.generic
    return 0


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


# --- per-protocol packet handlers (tcp.py, track._handle) ------------------------

cdef int ct_tcp_packet(ct_t* ct, ct_entry_t* e, int d, uint8_t flags, double now,
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
    timeout = ct.to_tcp_close if index == X_RST else ct.to_tcp[new]
    if not (e.status & S_SEEN_REPLY):
        if flags & 0x04:
            return O_KILL
        if index == X_SYN and old == T_SS:
            return O_ACCEPT
        if new == T_ES and timeout > ct.to_tcp_unack:
            timeout = ct.to_tcp_unack
    elif not (e.status & S_ASSURED) and (old == T_SR or old == T_ES) and new == T_ES:
        e.status |= S_ASSURED
    e.timeout_at = now + timeout
    return O_ACCEPT


cdef int ct_handle(ct_t* ct, uint32_t s, int d, bint new, uint8_t flags, double now,
                   ct_res_t* res) noexcept nogil:
    """track._handle(): the per-protocol packet() handler."""
    cdef int old = 0, outcome
    cdef uint8_t nstate
    cdef double extra
    cdef bint stream
    cdef ct_entry_t* e = &ct.ents[s]
    if e.proto == P_TCP:
        if new:
            nstate = _TCP_NEXT[0][_TCP_INDEX_OF[flags]][T_NO]
            if not (nstate == T_SS or (nstate != T_IV and nstate != T_IG and ct.tcp_loose)):
                res.reason = R_TCP_NEW
                return O_INVALID
        outcome = ct_tcp_packet(ct, e, d, flags, now, &old)
        if outcome == O_INVALID:
            res.reason = R_TCP_STATE
            res.arg1 = old
            res.arg2 = d
        return outcome
    if e.proto == P_UDP:
        if e.status & S_SEEN_REPLY:
            extra = ct.to_udp
            stream = False
            if now > ct.created[s] + 2.0:
                extra = ct.to_udp_stream
                stream = not (e.status & S_ASSURED)
            e.timeout_at = now + extra
            if stream:
                e.status |= S_ASSURED
        else:
            e.timeout_at = now + ct.to_udp
        return O_ACCEPT
    if e.proto == P_ICMP:
        if not _ICMP_NEW_OK[e.odport >> 8]:
            res.reason = R_ICMP_NEW
            res.arg1 = e.odport >> 8
            return O_INVALID
        e.timeout_at = now + ct.to_icmp
        return O_ACCEPT
    e.timeout_at = now + ct.to_generic
    return O_ACCEPT


# --- results ------------------------------------------------------------------------

cdef inline void ct_res_start(ct_res_t* res) noexcept nogil:
    """No entry, no ctinfo, direction or state yet."""
    memset(res, 0, sizeof(ct_res_t))
    res.slot = -1
    res.ctinfo = -1
    res.direction = -1
    res.state = -1


cdef inline void ct_fill(const ct_t* ct, ct_res_t* res, uint32_t s) noexcept nogil:
    cdef const ct_entry_t* e = &ct.ents[s]
    res.status = e.status
    res.state = (e.tcp & 0xF) if (e.flags & F_TCP) else -1


cdef void ct_invalid(ct_t* ct, ct_res_t* res, int reason) noexcept nogil:
    ct.st_invalid += 1
    res.slot = -1
    res.code = CT_INVALID_
    res.ctinfo = -1
    res.direction = -1
    res.new = 0
    res.state = -1
    res.status = 0
    if reason != R_NONE:
        res.reason = reason


# --- conntrack_in (track.conntrack_in) -------------------------------------------------

cdef inline bint ct_proto_ok(ct_t* ct, const tup_t* t, uint8_t flags, bint prerouting,
                             bint csum_ok, ct_res_t* res) noexcept nogil:
    """track._proto_error(): False (res invalid) for flags, ICMP type or checksum."""
    if t.proto == P_TCP and not _TCP_FLAGS_OK[flags]:
        ct_invalid(ct, res, R_FLAGS)
        return False
    if t.proto == P_ICMP and (t.dport >> 8) > 18:
        ct_invalid(ct, res, R_ICMP_TYPE)
        res.arg1 = t.dport >> 8
        return False
    if (prerouting and ct.checksum and not csum_ok
            and (t.proto == P_TCP or t.proto == P_UDP or t.proto == P_ICMP)):
        ct_invalid(ct, res, R_CSUM)
        return False
    return True


cdef inline int64_t ct_new_entry(ct_t* ct, const tup_t* t, double now,
                                 ct_res_t* res) noexcept nogil:
    """ConntrackTable.new_entry(): a pending entry for t (room made first), or -1
    with res invalid or dropped."""
    cdef tup_t rep
    cdef int64_t s
    cdef ct_entry_t* e
    if not _invert(t, &rep):
        ct_invalid(ct, res, R_INVERT)
        return -1
    if not ct_make_room(ct, t, now):
        res.code = CT_DROP_
        res.reason = R_TABLE_FULL
        res.ctinfo = -1
        return -1
    s = ct_slot_new(ct)
    if s < 0:
        res.code = CT_DROP_
        res.reason = R_NOMEM
        res.ctinfo = -1
        return -1
    if ct.next_id > 0xFFFFFFFFU:
        ct_slot_free(ct, <uint32_t>s)
        res.code = CT_DROP_
        res.reason = R_NOMEM
        res.ctinfo = -1
        return -1
    e = &ct.ents[s]
    e.id = <uint32_t>ct.next_id
    ct.next_id += 1
    ct.st_new += 1
    e.osrc = t.src
    e.odst = t.dst
    e.osport = t.sport
    e.odport = t.dport
    e.proto = t.proto                   # (the reply: rep, the inverse)
    ct.created[s] = now
    if t.proto == P_TCP:
        e.flags |= F_TCP
        e.tcp = 5 << 4
    return s


cdef inline int64_t ct_resolve(ct_t* ct, const tup_t* t, double now, int* d, bint* is_new,
                               ct_res_t* res) noexcept nogil:
    """resolve_normal_ct(): the entry of t, found or new (direction d, ctinfo),
    or -1 with res invalid or dropped."""
    cdef int64_t s
    cdef const ct_entry_t* e
    is_new[0] = False
    s = ct_lookup(ct, t, now, d)
    if s >= 0:
        ct.st_found += 1
        e = &ct.ents[s]
        if d[0] == 1:
            res.ctinfo = CI_ESTABLISHED_REPLY
        else:
            res.ctinfo = CI_ESTABLISHED if (e.status & S_SEEN_REPLY) else CI_NEW
        return s
    s = ct_new_entry(ct, t, now, res)
    if s < 0:
        return -1
    d[0] = 0
    res.ctinfo = CI_NEW
    is_new[0] = True
    return s


cdef void ct_process(ct_t* ct, const tup_t* t, uint8_t flags, double now, bint prerouting,
                     bint csum_ok, ct_res_t* res) noexcept nogil:
    """conntrack_in() for a packet that is not an ICMP error."""
    cdef int attempt, d = 0, outcome
    cdef int64_t s
    cdef ct_entry_t* e
    cdef bint is_new
    ct_res_start(res)
    if not ct_proto_ok(ct, t, flags, prerouting, csum_ok, res):
        return
    for attempt in range(2):
        s = ct_resolve(ct, t, now, &d, &is_new, res)
        if s < 0:
            return
        e = &ct.ents[s]
        res.direction = d
        res.new = is_new
        outcome = ct_handle(ct, <uint32_t>s, d, is_new, flags, now, res)
        if outcome == O_REOPEN:
            ct_remove(ct, <uint32_t>s)
            continue
        if outcome == O_INVALID:
            if is_new:
                ct_slot_free(ct, <uint32_t>s)
            ct_invalid(ct, res, R_NONE)
            return
        res.slot = s
        res.id = e.id
        res.code = CT_OK_
        ct_fill(ct, res, <uint32_t>s)
        if outcome == O_KILL:
            ct_remove(ct, <uint32_t>s)       # frees the slot; report its last status
            res.status |= S_DYING
            if d == 1:
                res.status |= S_SEEN_REPLY
        elif d == 1 and not (e.status & S_SEEN_REPLY):
            e.status |= S_SEEN_REPLY
            res.status = e.status
        return
    ct_invalid(ct, res, R_REOPEN_LOOP)


cdef void ct_related(ct_t* ct, uint32_t outer_dst, const tup_t* q, double now, bint prerouting,
                     bint csum_ok, ct_res_t* res) noexcept nogil:
    """_icmp_error(): an ICMP error quoting tuple q."""
    cdef tup_t inner
    cdef int d = 0
    cdef int64_t s
    cdef const ct_entry_t* e
    cdef uint32_t tdst
    ct_res_start(res)
    if prerouting and ct.checksum and not csum_ok:
        ct_invalid(ct, res, R_REL_CSUM)
        return
    if not _invert(q, &inner):
        ct_invalid(ct, res, R_REL_UNTRACKABLE)
        return
    s = ct_lookup(ct, &inner, now, &d)
    if s < 0:
        ct_invalid(ct, res, R_REL_UNKNOWN)
        return
    e = &ct.ents[s]
    _reply_of(ct, <uint32_t>s, &inner)
    tdst = e.odst if d == 0 else inner.dst
    if tdst != outer_dst:
        ct_invalid(ct, res, R_REL_DADDR)
        res.arg1 = <int>tdst
        return
    res.slot = s
    res.id = e.id
    res.code = CT_OK_
    res.direction = d
    res.ctinfo = CI_RELATED_REPLY if d == 1 else CI_RELATED
    ct_fill(ct, res, <uint32_t>s)


# --- confirmation (ConntrackTable.confirm) -----------------------------------------------

cdef int ct_confirm(ct_t* ct, uint32_t s, uint32_t id, double now) noexcept nogil:
    """ConntrackTable.confirm() of a pending entry: 1 ok, 0 clash, -1 no memory."""
    cdef ct_entry_t* e
    cdef tup_t o, r
    cdef int d
    if s >= ct.ent_cap or not (ct.ents[s].flags & F_USED) or ct.ents[s].id != id:
        return 1                    # removed already (CONFIRMED|DYING)
    e = &ct.ents[s]
    if e.status & (S_CONFIRMED | S_DYING):
        if not (e.flags & F_INTABLE):
            ct_slot_free(ct, s)
        return 1
    _orig_of(e, &o)
    _reply_of(ct, s, &r)
    if ct_lookup(ct, &o, now, &d) >= 0 or ct_lookup(ct, &r, now, &d) >= 0:
        ct.st_insert_failed += 1
        ct_slot_free(ct, s)
        return 0
    ct_sweep(ct, now)
    e = &ct.ents[s]
    e.status |= S_CONFIRMED
    if ct_insert(ct, s) < 0:
        return -1
    ct.st_insert += 1
    return 1
