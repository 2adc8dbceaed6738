# The compiled conntrack table in one process, for old-vs-new runs side by side: bytes per
# entry (CtTable.memory(), all of it) at 10k and 1M entries, inserts/s and lookups/s at 1M
# (benchmarks/bench_conntrack.py's workload), medians of N repeats. Run:
#   python benchmarks/conntrack_side_by_side.py 5
# and against another build: PYTHONPATH=<other worktree>/src python benchmarks/conntrack_side_by_side.py 5
from __future__ import annotations

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


def main(repeats: int) -> dict:
    out = {}
    for n in (10_000, 1_000_000):
        f = bench.conntrack_flows(n + n // 50)[:n]
        ins = []
        for _ in range(repeats if n > 10_000 else 1):
            t = _fastpath.CtTable(n, Timeouts.kube_proxy())
            t0 = time.perf_counter(); t.process_batch(f); ins.append(n / (time.perf_counter() - t0))
        m = t.memory()
        out[f"bpe_{n}"] = round(sum(v for k, v in m.items() if k != "entry_size") / n, 2)
        if n == 1_000_000:
            q = lookups(f); t.lookup_batch(q)
            lk = []
            for _ in range(repeats):
                t0 = time.perf_counter(); r = t.lookup_batch(q); lk.append(len(q) / (time.perf_counter() - t0))
            assert (r["code"] == 0).all()
            out["inserts_per_s_1M"] = round(statistics.median(ins) / 1e6, 2)
            out["lookups_per_s_1M"] = round(statistics.median(lk) / 1e6, 2)
    return out


if __name__ == "__main__":
    print(_fastpath.__file__, main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
