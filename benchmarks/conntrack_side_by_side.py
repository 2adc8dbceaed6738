# The compiled conntrack table in one process, for old-vs-new runs side by side: bytes per
# entry all-in (CtTable.memory(), every allocation at its capacity, and the process's RSS
# growth while the table fills, as a cross-check) at 10k and 1M entries, inserts/s
# (process_batch of new flows) and lookups/s (lookup_batch of both directions, random
# order) at 1M (benchmarks/bench_conntrack.py's workload), medians of N repeats. Run:
#   python benchmarks/conntrack_side_by_side.py 5
# and against another build: PYTHONPATH=<other worktree>/src python benchmarks/conntrack_side_by_side.py 5
# With --nat: the same 1M flows, each DNAT'ed to an endpoint (process, nat, confirm per
# flow), bytes per entry and lookups/s of both directions (the reply tuples as NAT made them).
from __future__ import annotations

import ctypes
import gc
import os
import statistics
import sys
import time

import numpy as np

from kdp import _fastpath, bench
from kdp.conntrack import Timeouts


def lookups(f: np.ndarray) -> np.ndarray:
    """Both directions of every flow, in random order: kdp.bench.conntrack_lookups, kept
    here because this script also runs against older trees that lack it."""
    q = f.copy()
    q["now"] = 2.0
    rev = q.copy()
    rev["src"], rev["dst"], rev["sport"], rev["dport"] = q["dst"], q["src"], q["dport"], q["sport"]
    return np.concatenate([q, rev])[np.random.default_rng(3).permutation(2 * len(f))]


def rss() -> int:
    """Resident bytes, after returning freed heap memory to the system (the
    batches' result arrays would otherwise stay counted)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(repeats: int) -> dict:
    out = {}
    for n in (10_000, 1_000_000):
        f = bench.conntrack_flows(n + n // 50)[:n]
        q = lookups(f)
        before = rss()
        t = _fastpath.CtTable(n, Timeouts.kube_proxy())
        t.process_batch(f)
        out[f"rss_bpe_{n}"] = round((rss() - before) / n, 2)
        m = t.memory()
        out[f"bpe_{n}"] = round(sum(v for k, v in m.items() if k != "entry_size") / n, 2)
        del t
        if n == 1_000_000:
            out["memory_1M"] = {k: (round(v / n, 2) if k != "entry_size" else v)
                                for k, v in m.items()}
            ins = []
            for _ in range(repeats):
                t = None
                gc.collect()
                t = _fastpath.CtTable(n, Timeouts.kube_proxy())
                t0 = time.perf_counter(); t.process_batch(f); ins.append(n / (time.perf_counter() - t0))
            t.lookup_batch(q)
            lk, lk_cpu = [], []
            for _ in range(repeats):
                c0, t0 = time.process_time(), time.perf_counter()
                r = t.lookup_batch(q)
                lk.append(len(q) / (time.perf_counter() - t0))
                lk_cpu.append(len(q) / (time.process_time() - c0))
            assert (r["code"] == 0).all() and len(t) == n
            out["inserts_per_s_1M"] = round(statistics.median(ins) / 1e6, 2)
            out["inserts_range"] = (round(min(ins) / 1e6, 2), round(max(ins) / 1e6, 2))
            out["lookups_per_s_1M"] = round(statistics.median(lk) / 1e6, 2)
            out["lookups_range"] = (round(min(lk) / 1e6, 2), round(max(lk) / 1e6, 2))
            # per second of this process's CPU time: the rate with the other jobs of a
            # shared machine's cores taken out (not their cache and memory traffic)
            out["lookups_per_cpu_s_1M"] = round(statistics.median(lk_cpu) / 1e6, 2)
    return out


def main_nat(repeats: int, n: int = 1_000_000) -> dict:
    f = bench.conntrack_flows(n + n // 50)[:n]
    before = rss()
    t = _fastpath.CtTable(n, Timeouts.kube_proxy())
    eps = (10 << 24) | (244 << 16) | np.arange(n, dtype=np.uint32) % 4096
    for (src, dst, sport, dport, proto, _fl, _l, _c, now), ep in zip(f.tolist(), eps.tolist()):
        v = t.process(proto, src, dst, sport, dport, 0x02, now)
        t.nat(v.handle, "DST", now, ep, ep, 8080, 8080)
        t.confirm(v.handle, now)
    m = t.memory()
    out = {"rss_bpe_nat": round((rss() - before) / n, 2),
           "bpe_nat": round(sum(v for k, v in m.items() if k != "entry_size") / n, 2),
           "memory_nat": {k: (round(v / n, 2) if k != "entry_size" else v) for k, v in m.items()}}
    q = f.copy()
    q["now"] = 2.0
    rev = q.copy()
    rev["src"], rev["dst"], rev["sport"], rev["dport"] = eps, q["src"], 8080, q["sport"]
    q = np.concatenate([q, rev])[np.random.default_rng(3).permutation(2 * n)]
    lk, lk_cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        r = t.lookup_batch(q)
        lk.append(len(q) / (time.perf_counter() - t0))
        lk_cpu.append(len(q) / (time.process_time() - c0))
    assert (r["code"] == 0).all()
    out["lookups_per_s_nat"] = round(statistics.median(lk) / 1e6, 2)
    out["lookups_per_cpu_s_nat"] = round(statistics.median(lk_cpu) / 1e6, 2)
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--nat"]
    run = main_nat if "--nat" in sys.argv else main
    print(_fastpath.__file__, run(int(args[0]) if args else 5))
