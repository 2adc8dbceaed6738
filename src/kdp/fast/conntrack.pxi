# fast/conntrack.pxi (included by _fastpath.pyx): the compiled conntrack
# table's Python face, CtTable — the twin of kdp._purect.CtTable (which is the
# reference kdp.conntrack, ConntrackTable's API). Owns a ct_t (the state the
# conntrack_store/life/nat.pxi functions work on) and what only Python needs:
# handles, verdicts and the reasons' text, entry dicts (export, import,
# `conntrack -L`), MASQUERADE device names, the FLOW_DTYPE/CT_RESULT_DTYPE
# batches.

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

# One CT_EXPORT_DTYPE record (export_array).
cdef struct ct_export_t:
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
    uint32_t mark
    uint16_t status
    uint16_t tcp
    uint8_t proto
    uint8_t masq_dev
    uint8_t flags


@cython.final
cdef class CtTable:
    """Conntrack of one namespace in C structs (see kdp._purect.CtTable, the
    reference twin, for the API). Handles are slot << 32 | entry id."""

    cdef ct_t ct
    cdef readonly object seed
    cdef readonly object namespace
    cdef readonly object timeouts
    cdef list masq_names
    cdef dict masq_index

    def __cinit__(self):
        memset(&self.ct, 0, sizeof(ct_t))

    def __init__(self, max_entries=262144, timeouts=None, *, buckets=None, tcp_loose=True,
                 checksum=True, seed=0, namespace=""):
        from kdp.conntrack.timeouts import Timeouts
        _ct_init()
        self.ct.max_entries = max_entries
        self.ct.buckets = max(1, buckets if buckets is not None else max_entries or 1)
        if self.ct.buckets > 0xFFFFFFFF:
            raise ValueError("at most 2**32 - 1 buckets")
        self.ct.tcp_loose = tcp_loose
        self.ct.checksum = checksum
        self.seed = seed
        self.ct.seed64 = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self.ct.smix = _seed_mix(self.ct.seed64)
        self.namespace = namespace
        self.timeouts = timeouts or Timeouts()
        ct_set_timeouts(&self.ct, self.timeouts)
        ct_store_keys(&self.ct)
        ct_nat_keys(&self.ct, namespace)
        self.ct.next_id = 1
        self.masq_names = [None]
        self.masq_index = {None: 0}
        if ct_store_open(&self.ct, max(16, min(int(max_entries) if max_entries else 1024,
                                               1 << 16))) < 0:
            raise MemoryError()

    def __dealloc__(self):
        ct_store_close(&self.ct)

    @property
    def max_entries(self):
        return self.ct.max_entries

    @property
    def buckets(self):
        return self.ct.buckets

    @property
    def tcp_loose(self):
        return self.ct.tcp_loose

    @property
    def checksum(self):
        return self.ct.checksum

    # --- handles and verdicts ---------------------------------------------------------
    cdef int64_t _slot_of(self, handle) except -2:
        """The slot of a live handle (pending or in the table), else -1."""
        cdef uint64_t h
        cdef uint32_t s, id
        if handle is None:
            return -1
        h = <uint64_t>handle
        s = <uint32_t>(h >> 32)
        id = <uint32_t>(h & 0xFFFFFFFF)
        if s >= self.ct.ent_cap or not (self.ct.ents[s].flags & F_USED) or self.ct.ents[s].id != id:
            return -1
        return s

    cdef object _verdict(self, ct_res_t* res, tuple inputs):
        states, _idx, ctinfos, dirs = _CT_NAMES
        if res.code == CT_DROP_:
            if res.reason == R_NOMEM:
                raise MemoryError("conntrack table")
            from kdp.errors import CONNTRACK_FULL
            return CtVerdict(None, None, None, None, False, CONNTRACK_FULL, None, None, 0)
        if res.code == CT_INVALID_:
            return CtVerdict(None, None, None, None, False, None,
                             _ct_reason(res.reason, res.arg1, res.arg2, inputs), None, 0)
        handle = (<uint64_t>res.slot << 32) | res.id
        return CtVerdict(handle, res.id, dirs[res.direction], ctinfos[res.ctinfo], bool(res.new),
                         None, None, states[res.state] if res.state >= 0 else None, res.status)

    # --- the Python API -----------------------------------------------------------------
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
        ct_process(&self.ct, &t, flags, now, prerouting, checksum_ok, &res)
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
        ct_related(&self.ct, int(outer_dst), &q, now, prerouting, checksum_ok, &res)
        return self._verdict(&res, ("related", proto, src, dst, sport, dport, int(outer_dst)))

    def nat(self, handle, manip, now, min_ip=None, max_ip=None, min_port=None, max_port=None, *,
            random=False, random_fully=False, persistent=False):
        """nf_nat_setup_info() on a pending entry; True when the tuple changed."""
        cdef nat_range_t rng
        check_nat_args(manip, min_ip, max_ip, min_port, max_port)
        cdef int64_t s = self._slot_of(handle)
        if s < 0:
            return False
        if self.ct.ents[s].flags & F_INTABLE:
            raise ValueError("NAT bindings are set up before the entry is confirmed")
        ct_nat_range(&rng, min_ip, max_ip, min_port, max_port, random, random_fully, persistent)
        return _nat_done(ct_setup_nat(&self.ct, <uint32_t>s, manip == "SRC", &rng, now))

    def null_binding(self, handle, manip, now):
        """nf_nat_alloc_null_binding(): keep the address, make the reply unique."""
        cdef nat_range_t rng
        cdef tup_t r
        check_nat_args(manip)
        cdef int64_t s = self._slot_of(handle)
        if s < 0:
            return False
        if self.ct.ents[s].flags & F_INTABLE:
            raise ValueError("NAT bindings are set up before the entry is confirmed")
        memset(&rng, 0, sizeof(nat_range_t))
        rng.map_ips = True
        _reply_of(&self.ct, <uint32_t>s, &r)
        rng.min_ip = rng.max_ip = r.dst if manip == "SRC" else r.src
        return _nat_done(ct_setup_nat(&self.ct, <uint32_t>s, manip == "SRC", &rng, now))

    def confirm(self, handle, now):
        if handle is None:
            return True
        cdef uint64_t h = <uint64_t>handle
        cdef int r = ct_confirm(&self.ct, <uint32_t>(h >> 32), <uint32_t>(h & 0xFFFFFFFF), now)
        if r < 0:
            raise MemoryError("conntrack table")
        return bool(r)

    def discard(self, handle):
        """Forget a pending entry whose packet was dropped before confirm."""
        cdef int64_t s = self._slot_of(handle)
        if s >= 0 and not (self.ct.ents[s].flags & F_INTABLE):
            ct_slot_free(&self.ct, <uint32_t>s)

    def set_mark(self, handle, mark):
        cdef int64_t s = self._slot_of(handle)
        if s >= 0 and ct_set_mark(&self.ct, <uint32_t>s, mark & 0xFFFFFFFF) < 0:
            raise MemoryError("conntrack table")

    def set_masq_dev(self, handle, dev):
        cdef int64_t s = self._slot_of(handle)
        if s >= 0:
            self.ct.ents[s].masq_dev = self._masq_code(dev)

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
            ct_remove(&self.ct, <uint32_t>s)

    def lookup(self, proto, src, dst, sport, dport, now):
        cdef tup_t t
        cdef int d = 0
        t.proto = proto
        t.src = int(src)
        t.dst = int(dst)
        t.sport = sport
        t.dport = dport
        cdef int64_t s = ct_lookup(&self.ct, &t, now, &d)
        if s < 0:
            return None
        return (self.ct.ents[s].id, "reply" if d else "original")

    def sweep(self, now):
        return ct_sweep(&self.ct, now)

    def flush(self):
        cdef uint32_t s
        for s in range(self.ct.ent_cap):
            if self.ct.ents[s].flags & F_INTABLE:
                ct_remove(&self.ct, s)

    def __len__(self):
        return self.ct.n_table

    @property
    def stats(self):
        cdef const ct_t* ct = &self.ct
        return {"found": ct.st_found, "new": ct.st_new, "insert": ct.st_insert,
                "insert_failed": ct.st_insert_failed, "drop": ct.st_drop,
                "early_drop": ct.st_early_drop, "invalid": ct.st_invalid,
                "expired": ct.st_expired}

    def memory(self):
        """Bytes held, every allocation at its capacity: entry pool (hot entries
        and creation times), ext records (reply tuples changed by NAT, marks: the
        pages held and the page table), table-order side map, tuple index,
        by-source index, expiry heap (with its same-id side heap), early drop's
        scratch list. `entry_size` is sizeof(ct_entry_t), not a count."""
        cdef const ct_t* ct = &self.ct
        return {"entry_size": sizeof(ct_entry_t),
                "entries": ct.ent_cap * (sizeof(ct_entry_t) + sizeof(double)),
                "ext": (ct.ext_live * (<size_t>1 << ct.ext_shift) * sizeof(ct_ext_t)
                        + ct.ext_npages * (sizeof(ct_ext_t*) + sizeof(uint32_t))),
                "order": ct.ord_cap * sizeof(ord_item_t),
                "index": ct.idx_cap * sizeof(uint32_t), "bysource": ct.bys_cap * sizeof(uint32_t),
                "heap": ct.heap_cap * sizeof(heap_item_t) + ct.dup_cap * sizeof(dup_item_t),
                "scratch": ct.scratch_cap * sizeof(uint32_t)}

    @property
    def slots(self):
        """Slots of the pool by use: in the table, pending, waiting for their
        heap item (removed entries), free; and the heap's items."""
        cdef const ct_t* ct = &self.ct
        return {"table": ct.n_table, "pending": ct.n_used - ct.n_table,
                "removed": ct.n_zombie,
                "free": ct.ent_cap - ct.n_used - ct.n_zombie,
                "heap_items": ct.heap_len + ct.dup_len}

    # --- export / import (ConntrackTable's dict format) -------------------------------
    cdef dict _to_dict(self, uint32_t s):
        cdef const ct_entry_t* e = &self.ct.ents[s]
        cdef tup_t r
        cdef double created = self.ct.created[s]
        _reply_of(&self.ct, s, &r)
        states, tindexes, _ci, dirs = _CT_NAMES
        d = {"id": e.id,
             "orig": {"proto": e.proto, "src": _ip_str(e.osrc), "dst": _ip_str(e.odst),
                      "sport": e.osport, "dport": e.odport},
             "reply": {"proto": e.proto, "src": _ip_str(r.src), "dst": _ip_str(r.dst),
                       "sport": r.sport, "dport": r.dport},
             "status": e.status, "created": created, "timeout_at": e.timeout_at,
             "mark": ct_mark_of(&self.ct, s),
             "udp_stream_at": created + 2.0 if e.proto == P_UDP else 0.0,
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
        for s in range(self.ct.ent_cap):
            if self.ct.ents[s].flags & F_INTABLE:
                pairs.append((ct_order_key(&self.ct, s), s))
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
            if self.ct.ents[<uint32_t>s].timeout_at > now:
                out.append(conntrack_line(ConntrackEntry.from_dict(self._to_dict(s)), now) + "\n")
        return "".join(out)

    def export_array(self):
        """The confirmed entries as a CT_EXPORT_DTYPE array (every field, the
        reply tuple and mark included), in table order."""
        cdef uint32_t s
        cdef Py_ssize_t i
        cdef tup_t r
        cdef const ct_entry_t* e
        order = self._table_order()
        out = np.zeros(len(order), dtype=CT_EXPORT_DTYPE)
        cdef ct_export_t* rows = <ct_export_t*><uintptr_t>out.ctypes.data
        for i in range(len(order)):
            s = order[i]
            e = &self.ct.ents[s]
            _reply_of(&self.ct, s, &r)
            rows[i].timeout_at = e.timeout_at
            rows[i].created = self.ct.created[s]
            rows[i].osrc, rows[i].odst, rows[i].osport, rows[i].odport = (e.osrc, e.odst,
                                                                          e.osport, e.odport)
            rows[i].rsrc, rows[i].rdst, rows[i].rsport, rows[i].rdport = r.src, r.dst, r.sport, r.dport
            rows[i].id = e.id
            rows[i].mark = ct_mark_of(&self.ct, s)
            rows[i].status = e.status
            rows[i].tcp = e.tcp
            rows[i].proto = e.proto
            rows[i].masq_dev = e.masq_dev
            rows[i].flags = e.flags & F_TCP
        return out

    def import_(self, items):
        """ConntrackTable.import_(): load exported entries (confirmed), replacing any
        entry holding the same tuples or id."""
        cdef uint32_t s
        from kdp.conntrack.tcp import STATES
        from .fast.contract import TCP_INDEXES
        by_id = {}
        for s in range(self.ct.ent_cap):
            if self.ct.ents[s].flags & F_INTABLE:
                by_id[self.ct.ents[s].id] = s
        for d in items:
            self._import_one(d, by_id, STATES, TCP_INDEXES)

    cdef _import_one(self, d, dict by_id, STATES, TCP_INDEXES):
        """One exported entry: checked and read, then placed in the table."""
        cdef tup_t o, r
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
        self._import_place(d, eid, &o, &r, status, created, masq, tcpbits, by_id)

    cdef _import_place(self, d, eid, tup_t* o, tup_t* r, status, created, masq, tcpbits,
                       dict by_id):
        """Confirm a read entry. The entries holding its tuples and the entry of
        its id go first; the last one's slot becomes the new entry's, and with it
        the old entry's heap item (the reference's items name ids)."""
        cdef int64_t ns
        cdef ct_entry_t* e
        cdef uint32_t ref, slot
        cdef uint8_t keep
        cdef int k
        want = by_id.get(eid)
        for k in range(2):
            ref = ct_idx_find(&self.ct, o if k == 0 else r, ct_th(&self.ct, o if k == 0 else r))
            if ref:
                slot = (ref - 1) >> 1
                by_id.pop(self.ct.ents[slot].id, None)
                if want is not None and slot == <uint32_t>want:
                    ct_unlink(&self.ct, slot)
                else:
                    ct_remove(&self.ct, slot)
        if by_id.pop(eid, None) is not None:
            ct_unlink(&self.ct, <uint32_t>want)
        if want is not None:
            ns = want
            ct_ext_drop(&self.ct, <uint32_t>ns, F_XREPLY | F_XMARK)
            e = &self.ct.ents[ns]
            keep = e.flags & F_HEAP
            memset(e, 0, sizeof(ct_entry_t))
            e.flags = F_USED | keep
        else:
            ns = ct_slot_new(&self.ct)
            if ns < 0:
                raise MemoryError("conntrack table")
        e = &self.ct.ents[ns]
        e.id = eid
        e.proto = o.proto
        e.osrc, e.odst, e.osport, e.odport = o.src, o.dst, o.sport, o.dport
        e.status = status
        e.timeout_at = float(d["timeout_at"])
        e.masq_dev = masq
        self.ct.created[ns] = created
        if tcpbits >= 0:
            e.flags |= F_TCP
            e.tcp = tcpbits
        if (ct_set_reply(&self.ct, <uint32_t>ns, r) < 0
                or ct_set_mark(&self.ct, <uint32_t>ns, int(d.get("mark", 0)) & 0xFFFFFFFF) < 0
                or ct_insert(&self.ct, <uint32_t>ns) < 0):
            raise MemoryError("conntrack table")
        by_id[eid] = ns
        self.ct.next_id = max(self.ct.next_id, eid + 1)

    # --- batches (FLOW_DTYPE in, CT_RESULT_DTYPE out) ------------------------------------
    def lookup_batch(self, flows):
        """lookup() of every record's tuple at its time; code CT_OK (hit) or
        CT_MISS. A software pipeline: record i's hash and index slot are
        prefetched D records ahead of reading the slot (and prefetching the
        entry), which is D records ahead of the comparison."""
        arr = _rows(flows, FLOW_DTYPE, "flows")
        cdef Py_ssize_t n = len(arr)
        out = np.empty(n, dtype=CT_RESULT_DTYPE)
        if n == 0:
            return out
        cdef const flow_t* fl = <const flow_t*><uintptr_t>arr.ctypes.data
        cdef ct_result_t* rs = <ct_result_t*><uintptr_t>out.ctypes.data
        cdef ct_t* ct = &self.ct
        cdef Py_ssize_t i, a, b
        cdef tup_t t[64]
        cdef uint64_t h[64]
        cdef uint32_t cand[64]
        cdef uint32_t r, s
        cdef uint32_t icap = ct.idx_cap
        # Held in locals: nothing in the loop moves them (ct_remove reallocates
        # nothing), and reading them through ct after each byte store of a
        # result record cost up to ~20% on lookups of a small table.
        cdef const uint32_t* idx = ct.idx
        cdef const ct_entry_t* ents = ct.ents
        cdef ct_ext_t** ext = ct.ext            # (pages may come and go, the array stays)
        cdef int xs = ct.ext_shift
        cdef uint64_t key = ct.smix_bucket
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
                    h[a] = _flow_base_s(key, t[a].proto, t[a].src, t[a].dst, t[a].sport,
                                         t[a].dport)
                    KDP_PREFETCH(&idx[ct_idx_home(h[a], icap)])
                b = i - D
                if 0 <= b < n:                          # stage 2: prefetch the likely entry
                    r = ct_idx_candidate(ct, h[b & 63])
                    cand[b & 63] = r
                    if r != 0:
                        s = (r - 1) >> 1
                        KDP_PREFETCH(&ents[s])
                        if (r - 1) & 1 and ext[s >> xs] != NULL:     # a NAT'ed reply's
                            KDP_PREFETCH(&ext[s >> xs][s & ((1U << xs) - 1)])   # stored tuple
                b = i - 2 * D
                if 0 <= b < n:                          # stage 3: compare, expire, answer
                    a = b & 63
                    _ct_result_clear(&rs[b])
                    r = cand[a]
                    if r == 0:
                        continue
                    if not ((ents[(r - 1) >> 1].flags & F_INTABLE)
                            and _dir_eq_at(ct, &ents[(r - 1) >> 1], (r - 1) >> 1, (r - 1) & 1,
                                           &t[a])):
                        r = ct_idx_find(ct, &t[a], h[a])
                        if r == 0:
                            continue
                    s = (r - 1) >> 1
                    if ents[s].timeout_at <= fl[b].now:
                        ct.st_expired += 1
                        ct_remove(ct, s)
                        continue
                    _ct_result_hit(&rs[b], &ents[s], s, (r - 1) & 1)
        return out

    def process_batch(self, flows, bint confirm=True):
        """process() of every record (its tcp_flags, local -> not PREROUTING,
        checksum_ok, now), confirming new entries at once when `confirm` (the
        packet passed every hook). Unconfirmed new entries stay pending."""
        cdef Py_ssize_t n = len(flows)
        cdef bint nomem
        out = np.empty(n, dtype=CT_RESULT_DTYPE)
        if n == 0:
            return out
        arr = _rows(flows, FLOW_DTYPE, "flows")
        cdef const flow_t* fl = <const flow_t*><uintptr_t>arr.ctypes.data
        cdef ct_result_t* rs = <ct_result_t*><uintptr_t>out.ctypes.data
        with nogil:
            nomem = ct_process_run(&self.ct, fl, n, rs, confirm)
        if nomem:
            raise MemoryError("conntrack table")
        return out


# --- the batch loops (without the GIL) -------------------------------------------------

cdef bint ct_process_run(ct_t* ct, const flow_t* fl, Py_ssize_t n, ct_result_t* rs,
                         bint confirm) noexcept nogil:
    """process_batch()'s loop over n records; True: out of memory (stopped)."""
    cdef Py_ssize_t i
    cdef tup_t t
    cdef ct_res_t res
    cdef int c
    cdef tup_t pt, pr
    cdef Py_ssize_t D = 16
    for i in range(n):
        if i + D < n:                   # prefetch the index slots of both tuples
            pt.src = fl[i + D].src
            pt.dst = fl[i + D].dst
            pt.sport = fl[i + D].sport
            pt.dport = fl[i + D].dport
            pt.proto = fl[i + D].proto
            KDP_PREFETCH(&ct.idx[ct_idx_home(ct_th(ct, &pt), ct.idx_cap)])
            if _invert(&pt, &pr):
                KDP_PREFETCH(&ct.idx[ct_idx_home(ct_th(ct, &pr), ct.idx_cap)])
        t.src = fl[i].src
        t.dst = fl[i].dst
        t.sport = fl[i].sport
        t.dport = fl[i].dport
        t.proto = fl[i].proto
        if t.proto == P_ICMP and _ICMP_ERROR[t.dport >> 8]:
            _ct_result_clear(&rs[i])        # an ICMP error: related(), not here
            continue
        ct_process(ct, &t, fl[i].tcp_flags, fl[i].now, fl[i].local == 0,
                   fl[i].checksum_ok != 0, &res)
        if res.code == CT_DROP_ and res.reason == R_NOMEM:
            return True
        if confirm and res.code == CT_OK_ and res.new:
            c = ct_confirm(ct, <uint32_t>res.slot, res.id, fl[i].now)
            if c < 0:
                return True
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
    return False


cdef object _nat_done(int r):
    """ct_setup_nat()'s answer as nat() gives it: changed or not, or no memory."""
    if r < 0:
        raise MemoryError("conntrack table")
    return r == 1


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
