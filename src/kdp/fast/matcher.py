# fast.matcher: the pure-Python kernel of the compiled service matcher
# (kdp.fast.svcmatch), twin of kdp._fastpath.MatcherKernel: one decision per first
# packet over a MatcherProgram's arrays, with the `recent` (session affinity)
# lists kept exactly as xt_recent keeps them (ip_list_tot 100 per list, the
# last 20 stamps per address, LRU eviction, --reap of the oldest). Selected by
# kdp.fast; the program's meaning is documented in kdp.fast.svcmatch, which
# alone builds programs (this kernel only reads them).
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .contract import DECISION_DTYPE
from ..conntrack.keyed import flow_base, hash_step

IMPLEMENTATION = "python"
IP_LIST_TOT, IP_PKT_LIST_TOT = 100, 20
ALWAYS = 0xFFFFFFFF
K_INT, K_EXT, K_FW, K_NP = 0, 1, 2, 3
F_FWDROP, F_SVC, F_EXT, F_EXTNP, F_HC = 4, 5, 6, 7, 8
S_SVC, S_NP, S_FILTER, S_FILTER_NP, S_HC = 0, 1, 2, 3, 4
M_NONE, M_NOT_CLUSTER, M_ALL = 0, 1, 2
V_NONE, V_DNAT, V_REJECT, V_DROP = 0, 1, 2, 3
GOLDEN = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1


class _Walk:
    """One packet's walk state."""

    __slots__ = ("src", "dst", "dport", "proto", "base", "now", "rules", "mark", "ep")

    def __init__(self, proto, src, dst, dport, base, now):
        self.proto, self.src, self.dst, self.dport = proto, src, dst, dport
        self.base, self.now = base, now
        self.rules, self.mark, self.ep = 1, False, None


class MatcherKernel:
    """Decisions over one MatcherProgram (the pure twin of kdp._fastpath.MatcherKernel)."""

    def __init__(self, prog):
        self.prog = prog
        self.seed = prog.seed
        self.keys = prog.keys.tolist()
        self.vals = prog.vals.tolist()
        self.bits = prog.hash_bits
        self.rules = prog.rules.tolist()        # (next, pos, sp, kind, flag)
        self.sps = prog.sps.tolist()
        self.eps = prog.eps.tolist()            # (point, ip, prob, table, port, filter)
        self.cidrs = prog.cidrs.tolist()
        self.local = set(prog.local_ips.tolist())
        self.bcast = set(prog.bcast_ips.tolist())
        self.recent_tables: dict[int, OrderedDict] = {}

    # --- lookups ------------------------------------------------------------------
    def _find(self, key: int) -> int:
        mask = (1 << self.bits) - 1
        h = ((key * GOLDEN) & M64) >> (64 - self.bits)
        keys = self.keys
        while True:
            k = keys[h]
            if k == key:
                return self.vals[h]
            if k == M64:
                return -1
            h = (h + 1) & mask

    def is_local(self, ip: int) -> bool:
        """addrtype LOCAL in the node's namespace (NamespaceInfo.addr_type)."""
        if ip >> 28 == 14 or ip == 0 or ip in self.bcast:
            return False
        return ip >> 24 == 127 or ip in self.local

    def _in_cluster(self, ip: int) -> bool:
        return (ip & self.prog.cluster_mask) == self.prog.cluster_net

    # --- recent (xt_recent) -------------------------------------------------------
    def _rcheck(self, table: int, addr: int, seconds: float, now: float) -> bool:
        t = self.recent_tables.get(table)
        e = None if t is None else t.get(addr)
        if e is None:
            return False
        since = now - seconds
        hit = any(not since > s for s in e)
        oldest_addr, oldest = next(iter(t.items()))
        if since > oldest[-1]:                      # --reap
            del t[oldest_addr]
        return hit

    def _set(self, table: int, addr: int, now: float) -> None:
        t = self.recent_tables.setdefault(table, OrderedDict())
        e = t.get(addr)
        if e is None:
            if len(t) >= IP_LIST_TOT:
                t.popitem(last=False)
            t[addr] = [now]
            return
        e.append(now)
        if len(e) > IP_PKT_LIST_TOT:
            del e[0]
        t.move_to_end(addr)

    def recent(self) -> dict[int, list[tuple[int, list[float]]]]:
        return {t: [(a, list(s)) for a, s in entries.items()]
                for t, entries in self.recent_tables.items() if entries}

    # --- the chains -----------------------------------------------------------------
    def _svc(self, w: _Walk, sp, local_chain: bool) -> bool:
        """KUBE-SVC-/KUBE-SVL-: True when it DNATs (terminal)."""
        (cip, port, _proto, _il, _el, _he, affinity, svc_masq, svl_masq, _pod, _pad, seconds,
         svc_off, svc_n, svl_off, svl_n, _fo, _fn) = sp
        masq, off, n = (svl_masq, svl_off, svl_n) if local_chain else (svc_masq, svc_off, svc_n)
        if masq != M_NONE:
            w.rules += 1
            if w.dst == cip and w.dport == port and (masq == M_ALL or not self._in_cluster(w.src)):
                w.rules += 1
                w.mark = True
        eps = self.eps
        if affinity:
            for i in range(off, off + n):
                w.rules += 1
                if self._rcheck(eps[i][3], w.src, seconds, w.now):
                    return self._sep(w, i, affinity)
        for i in range(off, off + n):
            w.rules += 1
            prob = eps[i][2]
            if prob == ALWAYS or (hash_step(w.base, eps[i][0]) >> 33) < prob:
                return self._sep(w, i, affinity)
        return False

    def _sep(self, w: _Walk, i: int, affinity: bool) -> bool:
        _point, ip, _prob, table, port, _f = self.eps[i]
        w.rules += 1
        if w.src == ip:
            w.rules += 1
            w.mark = True
        w.rules += 1
        if affinity:
            self._set(table, w.src, w.now)
        w.ep = i
        return True

    def _ext(self, w: _Walk, sp) -> bool:
        ext_local, has_external = sp[4], sp[5]
        if not ext_local:
            w.rules += 2
            w.mark = True
            if has_external:
                w.rules += 1
                return self._svc(w, sp, False)
            return False
        if sp[9]:                           # the "pod traffic" rule (a local detector is set)
            w.rules += 1
            if self._in_cluster(w.src) and self._svc(w, sp, False):
                return True
        src_local = self.is_local(w.src)
        w.rules += 1
        if src_local:
            w.rules += 1
            w.mark = True
        w.rules += 1
        if src_local and self._svc(w, sp, False):
            return True
        if has_external:
            w.rules += 1
            return self._svc(w, sp, True)
        return False

    def _fw(self, w: _Walk, sp) -> bool:
        off, n = sp[16], sp[17]
        for i in range(off, off + n):
            w.rules += 1
            net, mask = self.cidrs[i]
            if (w.src & mask) == net and self._ext(w, sp):
                return True
        w.rules += 1                        # the comment-only rule: matches, no target
        return False

    def _chain_of(self, w: _Walk, kind: int, sp) -> bool:
        if kind == K_INT:
            return self._svc(w, sp, bool(sp[3]))
        if kind == K_FW:
            return self._fw(w, sp)
        return self._ext(w, sp)

    # --- nat ---------------------------------------------------------------------------
    def _nat(self, w: _Walk) -> int:
        """The nat walk: KUBE-SERVICES (and KUBE-NODEPORTS). Returns the deciding
        service port index, or -1."""
        prog, rules = self.prog, self.rules
        last = 0
        r = self._find((w.dst << 32) | (w.dport << 16) | (w.proto << 8) | S_SVC)
        while r >= 0:
            nxt, pos, sp, kind, _flag = rules[r]
            w.rules += pos - last
            last = pos
            if self._chain_of(w, kind, self.sps[sp]):
                return sp
            r = nxt
        w.rules += prog.n_ks - last
        dst = w.dst
        loop = dst >> 24 == 127
        if not self.is_local(dst) or (loop and not prog.localhost_nodeports):
            return -1                       # the final rule: [! -d 127/8] --dst-type LOCAL
        last = 0
        r = self._find((w.dport << 16) | (w.proto << 8) | S_NP)
        while r >= 0:
            nxt, pos, sp, kind, flag = rules[r]
            if flag and not loop:
                r = nxt
                continue
            w.rules += pos - last
            last = pos
            if self._ext(w, self.sps[sp]):
                return sp
            r = nxt
        w.rules += prog.n_np - last
        return -1

    # --- filter ---------------------------------------------------------------------------
    def _first(self, key: int, kinds: tuple[int, ...]):
        """(pos, verdict, sp) of the first rule of the given kinds under key."""
        r = self._find(key)
        while r >= 0:
            nxt, pos, sp, kind, flag = self.rules[r]
            if kind in kinds:
                return pos, flag, sp
            r = nxt
        return None

    def _filter(self, src: int, dst: int, proto: int, dport: int, mark: bool, dnat: bool,
                in_local: bool, dst_local: bool):
        """(verdict, sp) from the filter hooks the first packet walks."""
        ipkey = (dst << 32) | (dport << 16) | (proto << 8)

        def fwdrop():
            return self._first(ipkey | S_FILTER, (F_FWDROP,))

        def extsvc():
            hits = [self._first(ipkey | S_FILTER, (F_EXT,))]
            if dst_local:
                hits.append(self._first((dport << 16) | (proto << 8) | S_FILTER_NP, (F_EXTNP,)))
            hits = [h for h in hits if h is not None]
            return min(hits) if hits else None

        def localnet():
            return (self.prog.localnet_drop and dst >> 24 == 127 and src >> 24 != 127
                    and not dnat)

        def input_chain():
            hit = fwdrop()
            if hit:
                return V_DROP, hit[2]
            if proto == 6 and self._find((dport << 16) | (6 << 8) | S_HC) >= 0:
                return V_NONE, -1                       # health check node port: ACCEPT
            hit = extsvc()
            if hit:
                return hit[1], hit[2]
            if localnet():
                return V_DROP, -1
            return V_NONE, -1

        if in_local:
            hit = fwdrop()
            if hit:
                return V_DROP, hit[2]
            hit = self._first(ipkey | S_FILTER, (F_SVC,))
            if hit:
                return hit[1], hit[2]
            if localnet():
                return V_DROP, -1
            return input_chain() if dst_local else (V_NONE, -1)
        if dst_local:
            return input_chain()
        hit = fwdrop()                                  # FORWARD
        if hit:
            return V_DROP, hit[2]
        if mark:
            return V_NONE, -1                           # KUBE-FORWARD: mark 0x4000 ACCEPT
        hit = self._first(ipkey | S_FILTER, (F_SVC,))
        if hit:
            return hit[1], hit[2]
        hit = extsvc()
        if hit:
            return hit[1], hit[2]
        return V_NONE, -1

    # --- one decision ----------------------------------------------------------------------
    def decide(self, proto: int, src: int, dst: int, sport: int, dport: int, now: float,
               in_local: bool = False) -> tuple[int, int, int, int, int, int]:
        """(verdict, endpoint ip, endpoint port, masquerade, service port, nat rules)."""
        w = _Walk(proto, src, dst, dport,
                  flow_base(self.seed, proto, src, dst, sport, dport), now)
        sp = self._nat(w)
        if w.ep is not None:
            ep = self.eps[w.ep]
            ip, port = ep[1], ep[4]
            if not ep[5]:
                return V_DNAT, ip, port, int(w.mark), sp, w.rules
            v, fsp = self._filter(src, ip, proto, port, w.mark, True, in_local, self.is_local(ip))
            if v == V_NONE:
                return V_DNAT, ip, port, int(w.mark), sp, w.rules
            return v, 0, 0, int(w.mark), fsp, w.rules
        v, fsp = self._filter(src, dst, proto, dport, w.mark, False, in_local, self.is_local(dst))
        return v, 0, 0, int(w.mark), fsp if v != V_NONE else sp, w.rules

    def decide_batch(self, flows: np.ndarray) -> np.ndarray:
        out = np.zeros(len(flows), dtype=DECISION_DTYPE)
        for i, f in enumerate(flows.tolist()):
            src, dst, sport, dport, proto, _flags, local, _ok, now = f
            v, ip, port, masq, sp, rules = self.decide(proto, src, dst, sport, dport, now,
                                                        bool(local))
            out[i] = (ip, port, v, masq, sp, rules)
        return out

    def decide_count(self, flows: np.ndarray, repeat: int = 1) -> tuple[int, int]:
        """Benchmark form of decide_batch(): (checksum, total nat rules)."""
        acc = rules_total = 0
        rows = flows.tolist()
        for _ in range(repeat):
            for src, dst, sport, dport, proto, _flags, local, _ok, now in rows:
                v, ip, _port, _masq, _sp, rules = self.decide(proto, src, dst, sport, dport, now,
                                                              bool(local))
                acc += ip + v
                rules_total += rules
        return acc & M64, rules_total
