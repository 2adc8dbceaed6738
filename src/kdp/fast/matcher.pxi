# fast/matcher.pxi (included by _fastpath.pyx): the compiled service matcher's
# kernel, MatcherKernel — the C twin of kdp._purematch.Kernel over a
# kdp.k8s.svcmatch.MatcherProgram (arrays of the MATCH_* dtypes in
# kdp.contract). One decision: a hash lookup of (dst, proto, dport), the
# per-service chains as the iptables walk takes them (statistic choices from
# flow_hash, `recent` affinity lists: recent.pxi's rc_t), the mark, the filter
# verdicts; the batch loop runs without the GIL.

cdef struct m_rule_t:
    int32_t next
    int32_t pos
    int32_t sp
    int8_t kind
    int8_t flag

cdef struct m_sp_t:
    uint32_t cip
    uint16_t port
    uint8_t proto
    uint8_t internal_local
    uint8_t ext_local
    uint8_t has_external
    uint8_t affinity
    int8_t svc_masq
    int8_t svl_masq
    uint8_t ext_pod_rule    # KUBE-EXT (eTP=Local) starts with the "pod traffic" rule
    uint8_t pad[2]
    double affinity_seconds
    int32_t svc_off
    int32_t svc_n
    int32_t svl_off
    int32_t svl_n
    int32_t fw_off
    int32_t fw_n

cdef struct m_ep_t:
    uint64_t point
    uint32_t ip
    uint32_t prob
    int32_t table
    uint16_t port
    uint8_t filter

cdef struct m_cidr_t:
    uint32_t net
    uint32_t mask

cdef struct decision_t:
    uint32_t ep_ip
    uint16_t ep_port
    int8_t verdict
    uint8_t masquerade
    int32_t service
    int32_t rules

# A dispatch slot: the key and a copy of its first rule (one cache line access).
cdef struct m_slot_t:
    uint64_t key
    int32_t pos
    int32_t sp
    int32_t next            # the key's next rule in `rules`, or -1
    int8_t kind
    int8_t flag
    int16_t pad

# A cluster IP rule whose chain has 1-3 endpoints, no affinity and no filter
# rule that could touch its DNAT: the whole decision in one 64-byte record,
# kept in its own open-addressing table (one cache line per first packet).
cdef struct m_fast_t:
    uint64_t key
    uint64_t point[2]       # statistic rules 0 and 1 (the last rule draws nothing)
    uint32_t prob[2]
    uint32_t ip[3]
    uint16_t port[3]
    int32_t pos             # the rule's position in KUBE-SERVICES
    int32_t sp
    uint8_t n
    int8_t masq
    uint8_t pad[4]

cdef struct m_walk_t:
    uint32_t src
    uint32_t dst
    uint16_t dport
    uint8_t proto
    uint64_t base
    double now
    int32_t rules
    bint mark
    int32_t ep
    const m_sp_t* hint_sp    # the chain whose statistic draws are precomputed in hint_hits
    bint hint_local
    uint32_t hint_hits       # 0: none

cdef enum:
    MK_INT = 0
    MK_EXT = 1
    MK_FW = 2
    MK_NP = 3
    MF_FWDROP = 4
    MF_SVC = 5
    MF_EXT = 6
    MF_EXTNP = 7
    MF_HC = 8
    MS_SVC = 0
    MS_NP = 1
    MS_FILTER = 2
    MS_FILTER_NP = 3
    MS_HC = 4
    MM_NONE = 0
    MM_ALL = 2
    MV_NONE = 0
    MV_DNAT = 1
    MV_DROP = 3

cdef uint64_t _M_EMPTY = 0xFFFFFFFFFFFFFFFFULL
cdef uint32_t _M_ALWAYS = 0xFFFFFFFFU


@cython.final
cdef class MatcherKernel:
    """Decisions over one MatcherProgram (see kdp._purematch.Kernel)."""

    cdef object prog, _arrays
    cdef m_slot_t* slots
    cdef int bits
    cdef void* fast_mem
    cdef kdp_region fast_reg
    cdef m_fast_t* fast
    cdef int fast_bits
    cdef readonly Py_ssize_t fast_records
    cdef public Py_ssize_t pipe         # batch pipeline depth (records prefetched ahead)
    cdef const m_rule_t* rules
    cdef const m_sp_t* sps
    cdef const m_ep_t* eps
    cdef const m_cidr_t* cidrs
    cdef const uint32_t* local_ips
    cdef Py_ssize_t n_local
    cdef const uint32_t* bcast_ips
    cdef Py_ssize_t n_bcast
    cdef uint64_t seed64
    cdef uint64_t smix
    cdef uint32_t cluster_net, cluster_mask
    cdef bint localnet_drop, localhost_np
    cdef int32_t n_ks, n_np
    cdef rc_t rc                        # the `recent` lists (recent.pxi)

    def __cinit__(self):
        memset(&self.rc, 0, sizeof(rc_t))
        self.slots = NULL
        self.fast_mem = NULL

    def __init__(self, prog):
        from .fast.contract import (MATCH_CIDR_DTYPE, MATCH_EP_DTYPE, MATCH_RULE_DTYPE,
                                    MATCH_SP_DTYPE)
        self.prog = prog
        arrays = {
            "keys": _rows(prog.keys, np.dtype(np.uint64), "keys"),
            "vals": _rows(prog.vals, np.dtype(np.int32), "vals"),
            "rules": _rows(prog.rules, MATCH_RULE_DTYPE, "rules"),
            "sps": _rows(prog.sps, MATCH_SP_DTYPE, "sps"),
            "eps": _rows(prog.eps, MATCH_EP_DTYPE, "eps"),
            "cidrs": _rows(prog.cidrs, MATCH_CIDR_DTYPE, "cidrs"),
            "local": _rows(prog.local_ips, np.dtype(np.uint32), "local_ips"),
            "bcast": _rows(prog.bcast_ips, np.dtype(np.uint32), "bcast_ips"),
        }
        self._arrays = arrays                   # keeps the buffers alive
        self.rules = <const m_rule_t*><uintptr_t>arrays["rules"].ctypes.data
        self.sps = <const m_sp_t*><uintptr_t>arrays["sps"].ctypes.data
        self.eps = <const m_ep_t*><uintptr_t>arrays["eps"].ctypes.data
        self.cidrs = <const m_cidr_t*><uintptr_t>arrays["cidrs"].ctypes.data
        self.local_ips = <const uint32_t*><uintptr_t>arrays["local"].ctypes.data
        self.n_local = len(arrays["local"])
        self.bcast_ips = <const uint32_t*><uintptr_t>arrays["bcast"].ctypes.data
        self.n_bcast = len(arrays["bcast"])
        n = len(arrays["keys"])
        if n & (n - 1) or n < 2 or len(arrays["vals"]) != n:
            raise ValueError("the key table size must be a power of two")
        self.bits = n.bit_length() - 1
        self.slots = <m_slot_t*>malloc(n * sizeof(m_slot_t))
        if self.slots == NULL:
            raise MemoryError()
        cdef const uint64_t* keys = <const uint64_t*><uintptr_t>arrays["keys"].ctypes.data
        cdef const int32_t* vals = <const int32_t*><uintptr_t>arrays["vals"].ctypes.data
        cdef Py_ssize_t i
        cdef int32_t r
        for i in range(n):
            self.slots[i].key = keys[i]
            r = vals[i]
            if keys[i] != _M_EMPTY:
                self.slots[i].pos = self.rules[r].pos
                self.slots[i].sp = self.rules[r].sp
                self.slots[i].next = self.rules[r].next
                self.slots[i].kind = self.rules[r].kind
                self.slots[i].flag = self.rules[r].flag
            else:
                self.slots[i].next = -1
        self.seed64 = <uint64_t>(int(prog.seed) & 0xFFFFFFFFFFFFFFFF)
        self.smix = _seed_mix(self.seed64)
        self.pipe = 20
        self._build_fast(n)
        self.cluster_net = prog.cluster_net
        self.cluster_mask = prog.cluster_mask
        self.localnet_drop = prog.localnet_drop
        self.localhost_np = prog.localhost_nodeports
        self.n_ks = prog.n_ks
        self.n_np = prog.n_np
        if rc_open(&self.rc, len(prog.recent_names)) < 0:
            raise MemoryError()

    cdef _build_fast(self, Py_ssize_t n):
        """The m_fast_t table of every cluster IP rule that qualifies."""
        cdef Py_ssize_t i, count = 0, cap
        cdef int32_t off, m, e
        cdef const m_sp_t* sp
        cdef uint64_t mask, h
        cdef m_fast_t* f
        cdef bint ok
        for i in range(n):
            if self._fast_ok(&self.slots[i]):
                count += 1
        self.fast_records = count
        self.fast_bits = 4
        while (1 << self.fast_bits) < 2 * count:
            self.fast_bits += 1
        cap = 1 << self.fast_bits
        self.fast_mem = kdp_alloc(cap * sizeof(m_fast_t) + 64, &self.fast_reg)
        if self.fast_mem == NULL:
            raise MemoryError()
        self.fast = <m_fast_t*>((<uintptr_t>self.fast_mem + 63) & ~(<uintptr_t>63))
        for i in range(cap):
            self.fast[i].key = _M_EMPTY
        mask = cap - 1
        for i in range(n):
            if not self._fast_ok(&self.slots[i]):
                continue
            sp = &self.sps[self.slots[i].sp]
            off = sp.svl_off if sp.internal_local else sp.svc_off
            m = sp.svl_n if sp.internal_local else sp.svc_n
            h = (self.slots[i].key * 0x9E3779B97F4A7C15ULL) >> (64 - self.fast_bits)
            while self.fast[h].key != _M_EMPTY:
                h = (h + 1) & mask
            f = &self.fast[h]
            f.key = self.slots[i].key
            f.pos = self.slots[i].pos
            f.sp = self.slots[i].sp
            f.n = m
            f.masq = sp.svl_masq if sp.internal_local else sp.svc_masq
            for e in range(m):
                if e < 2:
                    f.point[e] = self.eps[off + e].point
                    f.prob[e] = self.eps[off + e].prob
                f.ip[e] = self.eps[off + e].ip
                f.port[e] = self.eps[off + e].port

    cdef bint _fast_ok(self, const m_slot_t* slot):
        cdef const m_sp_t* sp
        cdef int32_t off, m, e
        if slot.key == _M_EMPTY or (slot.key & 0xFF) != MS_SVC or slot.kind != MK_INT \
                or slot.next >= 0:
            return False
        sp = &self.sps[slot.sp]
        off = sp.svl_off if sp.internal_local else sp.svc_off
        m = sp.svl_n if sp.internal_local else sp.svc_n
        if sp.affinity or m < 1 or m > 3 or sp.cip != <uint32_t>(slot.key >> 32):
            return False
        for e in range(m):
            if self.eps[off + e].filter:
                return False
        return True

    def __dealloc__(self):
        rc_close(&self.rc)
        free(self.slots)
        if self.fast_mem != NULL:
            kdp_free(self.fast_mem, &self.fast_reg)

    # --- lookups -----------------------------------------------------------------
    cdef inline uint64_t _home(self, uint64_t key) noexcept nogil:
        return (key * 0x9E3779B97F4A7C15ULL) >> (64 - self.bits)

    cdef inline const m_slot_t* _find(self, uint64_t key) noexcept nogil:
        """The slot of key (its first rule), or NULL."""
        cdef uint64_t mask = (1ULL << self.bits) - 1
        cdef uint64_t h = self._home(key)
        cdef uint64_t k
        while True:
            k = self.slots[h].key
            if k == key:
                return &self.slots[h]
            if k == _M_EMPTY:
                return NULL
            h = (h + 1) & mask

    cdef inline bint _is_local(self, uint32_t ip) noexcept nogil:
        cdef Py_ssize_t i
        if (ip >> 28) == 14 or ip == 0:
            return False
        for i in range(self.n_bcast):
            if self.bcast_ips[i] == ip:
                return False
        if (ip >> 24) == 127:
            return True
        for i in range(self.n_local):
            if self.local_ips[i] == ip:
                return True
        return False

    cdef inline bint _in_cluster(self, uint32_t ip) noexcept nogil:
        return (ip & self.cluster_mask) == self.cluster_net

    def recent(self):
        """{list index: [(address, stamps)]} in LRU order (oldest first)."""
        return rc_lists(&self.rc)

    # --- the chains ----------------------------------------------------------------
    cdef inline bint _svc(self, m_walk_t* w, const m_sp_t* sp, bint local_chain) noexcept nogil:
        cdef int8_t masq = sp.svl_masq if local_chain else sp.svc_masq
        cdef int32_t off = sp.svl_off if local_chain else sp.svc_off
        cdef int32_t n = sp.svl_n if local_chain else sp.svc_n
        cdef int32_t i
        cdef uint32_t hits
        cdef const m_ep_t* ep
        if masq != MM_NONE:
            w.rules += 1
            if (w.dst == sp.cip and w.dport == sp.port
                    and (masq == MM_ALL or not self._in_cluster(w.src))):
                w.rules += 1
                w.mark = True
        if sp.affinity:
            for i in range(off, off + n):
                w.rules += 1
                if rc_check(&self.rc, self.eps[i].table, w.src, sp.affinity_seconds, w.now):
                    return self._sep(w, i, True)
        if 0 < n <= 4:
            # Few endpoints: every statistic rule's draw at once, the first hit by
            # count-trailing-zeros (no unpredictable branch per rule; the walk
            # still stops at the first hit, as the rule count says).
            if w.hint_hits and w.hint_sp == sp and w.hint_local == local_chain:
                hits = w.hint_hits
            else:
                hits = self._draws(w.base, off, n)
            i = KDP_CTZ(hits)
            w.rules += i + 1
            return self._sep(w, off + i, sp.affinity)
        for i in range(off, off + n):
            w.rules += 1
            ep = &self.eps[i]
            if ep.prob == _M_ALWAYS or (_hstep(w.base, ep.point) >> 33) < ep.prob:
                return self._sep(w, i, sp.affinity)
        return False

    cdef inline uint32_t _draws(self, uint64_t base, int32_t off, int32_t n) noexcept nogil:
        """Bit i set: statistic rule i of the chain's n (<= 4) would match."""
        cdef uint32_t hits = 1U << (n - 1)
        cdef int32_t i
        cdef const m_ep_t* ep
        for i in range(n - 1):
            ep = &self.eps[off + i]
            hits |= (<uint32_t>(ep.prob == _M_ALWAYS
                                or (_hstep(base, ep.point) >> 33) < ep.prob)) << i
        return hits

    cdef inline bint _sep(self, m_walk_t* w, int32_t i, bint affinity) noexcept nogil:
        w.rules += 1
        if w.src == self.eps[i].ip:
            w.rules += 1
            w.mark = True
        w.rules += 1
        if affinity:
            rc_set(&self.rc, self.eps[i].table, w.src, w.now)
        w.ep = i
        return True

    cdef inline bint _ext(self, m_walk_t* w, const m_sp_t* sp) noexcept nogil:
        cdef bint src_local
        if not sp.ext_local:
            w.rules += 2
            w.mark = True
            if sp.has_external:
                w.rules += 1
                return self._svc(w, sp, False)
            return False
        if sp.ext_pod_rule:
            w.rules += 1
            if self._in_cluster(w.src) and self._svc(w, sp, False):
                return True
        src_local = self._is_local(w.src)
        w.rules += 1
        if src_local:
            w.rules += 1
            w.mark = True
        w.rules += 1
        if src_local and self._svc(w, sp, False):
            return True
        if sp.has_external:
            w.rules += 1
            return self._svc(w, sp, True)
        return False

    cdef inline bint _fw(self, m_walk_t* w, const m_sp_t* sp) noexcept nogil:
        cdef int32_t i
        for i in range(sp.fw_off, sp.fw_off + sp.fw_n):
            w.rules += 1
            if (w.src & self.cidrs[i].mask) == self.cidrs[i].net and self._ext(w, sp):
                return True
        w.rules += 1
        return False

    cdef inline bint _dispatch(self, m_walk_t* w, int8_t kind, int32_t spi) noexcept nogil:
        cdef const m_sp_t* sp = &self.sps[spi]
        if kind == MK_INT:
            return self._svc(w, sp, sp.internal_local)
        if kind == MK_FW:
            return self._fw(w, sp)
        return self._ext(w, sp)

    cdef inline int32_t _nat(self, m_walk_t* w, const m_slot_t* slot) noexcept nogil:
        """The nat walk from the KUBE-SERVICES slot of the packet (or NULL):
        the deciding service port, or -1."""
        cdef int32_t last = 0, r, pos, spi, nxt
        cdef int8_t kind, flag
        cdef bint loop
        if slot != NULL:
            pos, spi, kind, nxt = slot.pos, slot.sp, slot.kind, slot.next
            while True:
                w.rules += pos - last
                last = pos
                if self._dispatch(w, kind, spi):
                    return spi
                if nxt < 0:
                    break
                pos, spi, kind = self.rules[nxt].pos, self.rules[nxt].sp, self.rules[nxt].kind
                nxt = self.rules[nxt].next
        w.rules += self.n_ks - last
        loop = (w.dst >> 24) == 127
        if not self._is_local(w.dst) or (loop and not self.localhost_np):
            return -1
        last = 0
        slot = self._find(((<uint64_t>w.dport) << 16) | ((<uint64_t>w.proto) << 8) | MS_NP)
        if slot != NULL:
            pos, spi, flag, nxt = slot.pos, slot.sp, slot.flag, slot.next
            while True:
                if not (flag and not loop):
                    w.rules += pos - last
                    last = pos
                    if self._ext(w, &self.sps[spi]):
                        return spi
                if nxt < 0:
                    break
                pos, spi, flag = self.rules[nxt].pos, self.rules[nxt].sp, self.rules[nxt].flag
                nxt = self.rules[nxt].next
        w.rules += self.n_np - last
        return -1

    # --- filter ---------------------------------------------------------------------
    cdef inline bint _first(self, uint64_t key, int kind, int32_t* pos, int32_t* sp,
                            int8_t* flag) noexcept nogil:
        """The first rule of `kind` under key: its position, service port, flag."""
        cdef const m_slot_t* slot = self._find(key)
        cdef int32_t r
        if slot == NULL:
            return False
        if slot.kind == kind:
            pos[0], sp[0], flag[0] = slot.pos, slot.sp, slot.flag
            return True
        r = slot.next
        while r >= 0:
            if self.rules[r].kind == kind:
                pos[0], sp[0], flag[0] = self.rules[r].pos, self.rules[r].sp, self.rules[r].flag
                return True
            r = self.rules[r].next
        return False

    cdef bint _extsvc(self, uint64_t ipkey, uint32_t proto, uint32_t dport, bint dst_local,
                      int32_t* sp, int8_t* flag) noexcept nogil:
        """KUBE-EXTERNAL-SERVICES: the first matching rule (address or node port)."""
        cdef int32_t pa = 0, pb = 0, sa = -1, sb = -1
        cdef int8_t fa = 0, fb = 0
        cdef bint a = self._first(ipkey | MS_FILTER, MF_EXT, &pa, &sa, &fa)
        cdef bint b = False
        if dst_local:
            b = self._first(((<uint64_t>dport) << 16) | ((<uint64_t>proto) << 8) | MS_FILTER_NP,
                            MF_EXTNP, &pb, &sb, &fb)
        if a and (not b or pa < pb):
            sp[0], flag[0] = sa, fa
            return True
        if b:
            sp[0], flag[0] = sb, fb
            return True
        return False

    cdef inline bint _localnet(self, uint32_t src, uint32_t dst, bint dnat) noexcept nogil:
        return self.localnet_drop and (dst >> 24) == 127 and (src >> 24) != 127 and not dnat

    cdef int _input(self, uint64_t ipkey, uint32_t src, uint32_t dst, uint32_t proto,
                    uint32_t dport, bint dnat, int32_t* sp) noexcept nogil:
        cdef int32_t pos
        cdef int8_t flag
        if self._first(ipkey | MS_FILTER, MF_FWDROP, &pos, sp, &flag):
            return MV_DROP
        if proto == 6 and self._find(((<uint64_t>dport) << 16) | (6 << 8) | MS_HC) != NULL:
            sp[0] = -1
            return MV_NONE
        if self._extsvc(ipkey, proto, dport, True, sp, &flag):
            return flag
        sp[0] = -1
        if self._localnet(src, dst, dnat):
            return MV_DROP
        return MV_NONE

    cdef int _filter(self, uint32_t src, uint32_t dst, uint32_t proto, uint32_t dport, bint mark,
                     bint dnat, bint in_local, bint dst_local, int32_t* sp) noexcept nogil:
        cdef uint64_t ipkey = ((<uint64_t>dst) << 32) | ((<uint64_t>dport) << 16) | (proto << 8)
        cdef int32_t pos
        cdef int8_t flag
        if in_local:
            if self._first(ipkey | MS_FILTER, MF_FWDROP, &pos, sp, &flag):
                return MV_DROP
            if self._first(ipkey | MS_FILTER, MF_SVC, &pos, sp, &flag):
                return flag
            sp[0] = -1
            if self._localnet(src, dst, dnat):
                return MV_DROP
            if dst_local:
                return self._input(ipkey, src, dst, proto, dport, dnat, sp)
            return MV_NONE
        if dst_local:
            return self._input(ipkey, src, dst, proto, dport, dnat, sp)
        if self._first(ipkey | MS_FILTER, MF_FWDROP, &pos, sp, &flag):
            return MV_DROP
        if not mark:
            if self._first(ipkey | MS_FILTER, MF_SVC, &pos, sp, &flag):
                return flag
            if self._extsvc(ipkey, proto, dport, False, sp, &flag):
                return flag
        sp[0] = -1
        return MV_NONE

    # --- one decision ------------------------------------------------------------------
    cdef inline void _decide(self, uint32_t proto, uint32_t src, uint32_t dst, uint32_t sport,
                             uint32_t dport, double now, bint in_local, uint64_t base,
                             const m_slot_t* slot, uint32_t hint, decision_t* out) noexcept nogil:
        """One decision; base = flow_base of the tuple, slot = its KUBE-SERVICES slot."""
        cdef m_walk_t w
        cdef int32_t sp, fsp = -1
        cdef int v
        cdef const m_ep_t* ep
        w.src = src
        w.dst = dst
        w.dport = <uint16_t>dport
        w.proto = <uint8_t>proto
        w.base = base
        w.now = now
        w.rules = 1
        w.mark = False
        w.ep = -1
        w.hint_hits = hint
        if hint:
            w.hint_sp = &self.sps[slot.sp]
            w.hint_local = w.hint_sp.internal_local
        sp = self._nat(&w, slot)
        out.masquerade = w.mark
        out.rules = w.rules
        out.ep_ip = 0
        out.ep_port = 0
        if w.ep >= 0:
            ep = &self.eps[w.ep]
            v = MV_NONE
            if ep.filter:
                v = self._filter(src, ep.ip, proto, ep.port, w.mark, True, in_local,
                                 self._is_local(ep.ip), &fsp)
            if v == MV_NONE:
                out.verdict = MV_DNAT
                out.ep_ip = ep.ip
                out.ep_port = ep.port
                out.service = sp
            else:
                out.verdict = v
                out.service = fsp
            return
        v = self._filter(src, dst, proto, dport, w.mark, False, in_local, self._is_local(dst), &fsp)
        out.verdict = v
        out.service = fsp if v != MV_NONE else sp

    cdef inline uint64_t _svc_key(self, uint32_t proto, uint32_t dst, uint32_t dport) noexcept nogil:
        return ((<uint64_t>dst) << 32) | ((<uint64_t>dport) << 16) | ((<uint64_t>proto) << 8) | MS_SVC

    cdef inline uint32_t _hint(self, const m_slot_t* slot, uint64_t base) noexcept nogil:
        """The statistic draws of the chain a KUBE-SERVICES cluster IP rule jumps to
        (when it has 1-4 endpoints and no affinity), else 0."""
        cdef const m_sp_t* sp
        cdef int32_t n
        if slot == NULL or slot.kind != MK_INT:
            return 0
        sp = &self.sps[slot.sp]
        n = sp.svl_n if sp.internal_local else sp.svc_n
        if sp.affinity or n < 1 or n > 4:
            return 0
        return self._draws(base, sp.svl_off if sp.internal_local else sp.svc_off, n)

    cdef inline void _fast_decide(self, const flow_t* f, const m_fast_t* r, uint64_t base,
                                  decision_t* out) noexcept nogil:
        """The walk of _decide for a packet whose only KUBE-SERVICES rule is the
        cluster IP rule of record r: same choice, mark and rule count."""
        cdef int32_t rules = 1 + r.pos
        cdef uint32_t hits = 1U << (r.n - 1)
        cdef uint32_t c
        cdef bint mark = False
        if r.masq != MM_NONE:
            rules += 1
            if (f.dst == <uint32_t>(r.key >> 32) and f.dport == <uint16_t>(r.key >> 16)
                    and (r.masq == MM_ALL or not self._in_cluster(f.src))):
                rules += 1
                mark = True
        if r.n > 1:
            hits |= <uint32_t>(r.prob[0] == _M_ALWAYS or (_hstep(base, r.point[0]) >> 33) < r.prob[0])
        if r.n > 2:
            hits |= (<uint32_t>(r.prob[1] == _M_ALWAYS
                                or (_hstep(base, r.point[1]) >> 33) < r.prob[1])) << 1
        c = KDP_CTZ(hits)
        rules += c + 3
        if f.src == r.ip[c]:
            rules += 1
            mark = True
        out.ep_ip = r.ip[c]
        out.ep_port = r.port[c]
        out.verdict = MV_DNAT
        out.masquerade = mark
        out.service = r.sp
        out.rules = rules

    cdef inline const m_fast_t* _fast_find(self, uint64_t key, uint64_t h) noexcept nogil:
        cdef uint64_t mask = (1ULL << self.fast_bits) - 1
        cdef uint64_t k
        while True:
            k = self.fast[h].key
            if k == key:
                return &self.fast[h]
            if k == _M_EMPTY:
                return NULL
            h = (h + 1) & mask

    cdef inline void _ahead(self, const flow_t* f, uint64_t* key, uint64_t* fh,
                            uint64_t* base) noexcept nogil:
        """The pure first steps of a record: its KUBE-SERVICES key, fast-table
        home (prefetched) and flow hash."""
        key[0] = self._svc_key(f.proto, f.dst, f.dport)
        fh[0] = (key[0] * 0x9E3779B97F4A7C15ULL) >> (64 - self.fast_bits)
        KDP_PREFETCH(&self.fast[fh[0]])
        base[0] = _flow_base_s(self.smix, f.proto, f.src, f.dst, f.sport, f.dport)

    cdef void _run(self, const flow_t* fl, Py_ssize_t n, decision_t* ds,
                   uint64_t* acc) noexcept nogil:
        """decide() of n records in record order (the affinity lists are state),
        software-pipelined: record i + pipe's key and flow hash are computed and
        its fast record prefetched while record i is decided."""
        cdef Py_ssize_t i, a, b, lim
        cdef uint64_t key[64]
        cdef uint64_t fh[64]
        cdef uint64_t base[64]
        cdef const m_fast_t* r
        cdef const m_slot_t* slot
        cdef decision_t d
        cdef decision_t* out
        cdef Py_ssize_t pipe = self.pipe if 0 <= self.pipe < 64 else 20
        lim = pipe if n > pipe else n
        for i in range(lim):
            self._ahead(&fl[i], &key[i & 63], &fh[i & 63], &base[i & 63])
        for i in range(n):
            if i + pipe < n:
                b = (i + pipe) & 63
                self._ahead(&fl[i + pipe], &key[b], &fh[b], &base[b])
            a = i & 63
            if pipe == 0:
                self._ahead(&fl[i], &key[a], &fh[a], &base[a])
            out = &ds[i] if ds != NULL else &d
            r = self._fast_find(key[a], fh[a])
            if r != NULL:
                self._fast_decide(&fl[i], r, base[a], out)
            else:
                slot = self._find(key[a])
                self._decide(fl[i].proto, fl[i].src, fl[i].dst, fl[i].sport, fl[i].dport,
                             fl[i].now, fl[i].local != 0, base[a], slot,
                             self._hint(slot, base[a]), out)
            if ds == NULL:
                acc[0] += d.ep_ip + <uint64_t>d.verdict
                acc[1] += <uint64_t>d.rules

    def decide(self, proto, src, dst, sport, dport, now, in_local=False):
        """(verdict, endpoint ip, endpoint port, masquerade, service port, nat rules)."""
        cdef decision_t d
        cdef uint32_t s = int(src), t = int(dst)
        self._decide(proto, s, t, sport, dport, now, in_local,
                     _flow_base_s(self.smix, proto, s, t, sport, dport),
                     self._find(self._svc_key(proto, t, dport)), 0, &d)
        return (d.verdict, d.ep_ip, d.ep_port, d.masquerade, d.service, d.rules)

    def decide_batch(self, flows):
        """decide() of every FLOW_DTYPE record, in order, without the GIL."""
        arr = _rows(flows, FLOW_DTYPE, "flows")
        cdef Py_ssize_t n = len(arr)
        out = np.empty(n, dtype=DECISION_DTYPE)
        if n == 0:
            return out
        cdef const flow_t* fl = <const flow_t*><uintptr_t>arr.ctypes.data
        cdef decision_t* ds = <decision_t*><uintptr_t>out.ctypes.data
        with nogil:
            self._run(fl, n, ds, NULL)
        return out

    def decide_count(self, flows, Py_ssize_t repeat=1):
        """Benchmark form of decide_batch(): `repeat` passes over the records
        (affinity state carries over) keeping no answers; returns (checksum,
        total nat rules)."""
        arr = _rows(flows, FLOW_DTYPE, "flows")
        cdef Py_ssize_t n = len(arr), r
        cdef const flow_t* fl = <const flow_t*><uintptr_t>arr.ctypes.data
        cdef uint64_t acc[2]
        acc[0] = acc[1] = 0
        with nogil:
            for r in range(repeat):
                self._run(fl, n, NULL, acc)
        return acc[0], acc[1]
