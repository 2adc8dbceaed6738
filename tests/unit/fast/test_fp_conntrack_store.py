# The compiled conntrack table's storage (fast/conntrack_store.pxi): an index of
# any size (home slot by reciprocal_scale, at most 2/3 full), pool, index and
# heap grown no further than max_entries needs, 12-byte heap items (the entry
# knows its item's place; same-id imports keep a side heap), the by-source map sized by the
# entries with a source binding, early drop's scratch list grown on demand —
# checked by what memory() reports and, over random runs on tables of odd
# sizes, against the reference twin (same decisions, evictions, expiry, export).
from __future__ import annotations

import random
from ipaddress import IPv4Address

import pytest

from kdp import bench
from kdp.conntrack import Timeouts
from kdp.fast import conntrack as pure_ct

try:
    from kdp import _fastpath
except ImportError:  # pragma: no cover
    _fastpath = None

pytestmark = pytest.mark.skipif(_fastpath is None, reason="kdp._fastpath is not built")
IPS = [int(IPv4Address(a)) for a in ("10.244.0.5", "10.244.1.6", "10.96.0.10", "10.240.0.4")]


def _fill(n, max_entries):
    t = _fastpath.CtTable(max_entries, Timeouts.kube_proxy())
    t.process_batch(bench.conntrack_flows(n + n // 50)[:n])
    assert len(t) == n
    return t


@pytest.mark.parametrize("n", [1000, 5000, 20000])
def test_a_full_table_holds_no_power_of_two_slack(n):
    m = _fill(n, n).memory()
    slot = m["entry_size"] + 8                                  # hot entry + creation time
    assert m["entry_size"] == 32
    assert m["entries"] <= (n + 64) * slot                      # pool: max_entries + 64
    assert m["index"] <= 4 * (8 * n // 3 + 1)                   # 2 tuples at <= 3/4 load
    assert m["index"] >= 4 * 8 * n // 3                         # ... and never fuller
    assert m["heap"] <= 12 * (n + 1024)                         # 12-byte items, no side heap
    assert m["bysource"] <= 4 * 16 and m["scratch"] == 0        # no NAT, no early drop
    assert m["order"] == 0 and m["ext"] <= 12 * ((n + 64) // 1024 + 1)   # no pages: no NAT
    per_entry = sum(v for k, v in m.items() if k != "entry_size") / n
    assert per_entry <= slot * (1 + 64 / n) + 32 / 3 + 12 * (1 + 1024 / n) + 80 / n
    if n >= 20000:
        assert per_entry <= 64


def test_an_unbounded_table_keeps_growing_and_finds_everything():
    t = _fill(3000, 0)
    m = t.memory()
    assert m["index"] >= 4 * 8 * 3000 // 3 and m["entries"] >= 3000 * (m["entry_size"] + 8)
    f = bench.conntrack_flows(3000 + 60)[:3000]
    f["now"] = 1.0
    assert (t.lookup_batch(f)["code"] == 0).all()


def test_the_by_source_map_grows_with_source_bindings_only():
    t = _fastpath.CtTable(10000)
    for i in range(300):
        v = t.process(17, IPS[0], IPS[1], 1000 + i, 53, 0, 1.0)
        assert t.nat(v.handle, "SRC", 1.0, IPS[3], IPS[3], 2000, 9000)
        assert t.confirm(v.handle, 1.0)
    assert 4 * 600 <= t.memory()["bysource"] <= 4 * 2048
    for i in range(300):                                        # the NAT port search finds them
        v = t.process(17, IPS[0], IPS[1], 1000 + i, 53, 0, 1.0)
        assert not v.new


def test_early_drop_grows_its_scratch_list_to_the_bucket():
    """One bucket of 500 entries: early drop sees every one (the new flow is
    admitted by evicting all non-assured entries, as the reference does)."""
    ref = pure_ct.CtTable(500, buckets=1)
    fast = _fastpath.CtTable(500, buckets=1)
    for t in (ref, fast):
        for i in range(500):
            v = t.process(17, IPS[0], IPS[1], 1000 + i, 53, 0, 1.0)
            t.confirm(v.handle, 1.0)
        v = t.process(17, IPS[0], IPS[1], 9, 53, 0, 2.0)
        assert v.new and t.confirm(v.handle, 2.0)
    assert fast.export() == ref.export() and fast.stats == ref.stats
    assert fast.stats["early_drop"] == 500
    assert 4 * 500 <= fast.memory()["scratch"] <= 4 * 1024


def _random_run(seed, max_entries, buckets, n_ops):
    """Both twins through n_ops random operations; compared after every one."""
    rng = random.Random(seed)
    tm = Timeouts.kube_proxy()
    ref = pure_ct.CtTable(max_entries, tm, buckets=buckets, seed=seed)
    fast = _fastpath.CtTable(max_entries, tm, buckets=buckets, seed=seed)
    live = [], []
    now = 0.0
    for i in range(n_ops):
        x = rng.random()            # mostly close together; now and then past a timeout
        now += 130.0 if x < 0.003 else 31.0 if x < 0.013 else rng.choice([0.0, 0.001, 0.01])
        op = rng.random()
        seen = [], []
        for k, t in enumerate((ref, fast)):
            r = random.Random(i * 7919 + seed)
            out = seen[k]
            if op < 0.55:                       # a new or known flow, either way round
                proto = r.choice([6, 6, 17, 17, 1])
                a, b = r.sample(IPS, 2)
                sp, dp = r.randrange(1000, 1000 + max_entries // 3 + 8), r.choice([53, 80])
                if proto == 1:
                    sp, dp = r.randrange(1, 40), 8 << 8
                flags = r.choice([0x02, 0x12, 0x10, 0x11, 0x04, 0x14])
                if r.random() < 0.3 and proto != 1:
                    a, b, sp, dp = b, a, dp, sp
                v = t.process(proto, a, b, sp, dp, flags, now)
                if v.new:
                    if r.random() < 0.15:
                        t.nat(v.handle, "SRC", now, IPS[3], IPS[3], 5000, 5100)
                    ok = t.confirm(v.handle, now)
                    if ok:
                        live[k].append(v.handle)
                    out.append(ok)
                out.append((v.id, v.direction, v.ctinfo, v.drop, v.invalid, v.state, v.status))
            elif op < 0.75:
                out.append(t.sweep(now))
            elif op < 0.9 and live[k]:
                h = live[k].pop(r.randrange(len(live[k])))
                out.append(t.entry(h) and t.entry(h)["id"])
                t.remove(h)
            elif live[k]:
                h = live[k][r.randrange(len(live[k]))]
                out.append(t.lookup(17, IPS[0], IPS[1], 1000 + r.randrange(50), 53, now))
        assert seen[0] == seen[1], f"op {i}"
        assert len(ref) == len(fast), f"op {i}"
    assert fast.export() == ref.export()
    assert fast.stats == ref.stats
    return ref.stats


@pytest.mark.parametrize("seed,max_entries,buckets", [(1, 37, None), (2, 100, 7), (3, 250, None),
                                                      (4, 61, 3), (5, 1000, 11)])
def test_twins_agree_on_expiry_and_eviction_over_long_random_runs(seed, max_entries, buckets):
    stats = _random_run(seed, max_entries, buckets, 2500)
    assert stats["insert"] > 200 and stats["expired"] > 0
    if max_entries <= 100:
        assert stats["early_drop"] + stats["drop"] > 0


def test_twins_agree_on_stale_duplicate_and_shrunk_heap_items():
    """The heap's hard cases, against the reference: items of removed entries
    whose slots are reused (stale), an import replacing entries by the same id
    (the old item then belongs to the new entry: two live items), TCP entries
    whose timeout shrank (RST: not swept by their old item), and heap rebuilds
    (more than 2n + 1024 items). Export and stats compared after every step."""
    rng = random.Random(11)
    ref, fast = pure_ct.CtTable(0, Timeouts.kube_proxy()), _fastpath.CtTable(0, Timeouts.kube_proxy())
    handles = ([], [])
    now = 0.0
    for step in range(60):
        now += rng.choice([0.0, 1.0, 11.0, 40.0, 130.0])
        for k, t in enumerate((ref, fast)):
            r = random.Random(step)
            for i in range(r.choice([5, 40, 400])):         # new flows, some TCP made assured
                sp = r.randrange(1024, 60000)
                v = t.process(6, IPS[0], IPS[1], sp, 80, 0x02, now)
                if v.new and t.confirm(v.handle, now):
                    handles[k].append((v.handle, sp))
                    t.process(6, IPS[1], IPS[0], 80, sp, 0x12, now)
                    t.process(6, IPS[0], IPS[1], sp, 80, 0x10, now)
            for _ in range(r.randrange(0, 60)):             # shrink some timeouts (RST: 10 s)
                if handles[k]:
                    _h, sp = handles[k][r.randrange(len(handles[k]))]
                    t.process(6, IPS[0], IPS[1], sp, 80, 0x14, now)
            if r.random() < 0.5:                            # remove many: stale items
                for _ in range(r.randrange(0, 700)):
                    if handles[k]:
                        t.remove(handles[k].pop(r.randrange(len(handles[k])))[0])
            if r.random() < 0.3:                            # same ids back: duplicate items
                items = t.export()
                t.import_(items[: r.randrange(0, len(items) + 1)])
            t.sweep(now + r.choice([0.0, 5.0, 12.0]))
        assert fast.export() == ref.export(), step
        assert fast.stats == ref.stats, step
    assert ref.stats["expired"] > 100 and ref.stats["insert"] > 1000


def test_table_order_follows_confirms_not_ids():
    """Entries confirmed out of id order, and imports of old and new ids: export
    order (the reference's insertion order) and the by-source reuse (the oldest
    binding in table order) agree with the reference twin."""
    out = []
    for t in (pure_ct.CtTable(0), _fastpath.CtTable(0)):
        hs = [t.process(17, IPS[0], IPS[1], 2000 + i, 53, 0, 1.0).handle for i in range(6)]
        for i in (3, 1, 5, 0):                      # ids 4, 2, 6, 1 in this order
            assert t.nat(hs[i], "SRC", 1.0, IPS[3], IPS[3], 7000 + i, 7000 + i)
            assert t.confirm(hs[i], 1.0)
        t.import_([dict(t.export()[1], id=50), dict(t.export()[0], id=30)])   # ids up, down
        t.confirm(hs[2], 1.0)
        v = t.process(17, IPS[0], IPS[2], 2001, 53, 0, 1.0)     # same source as id 2 and 50
        t.nat(v.handle, "SRC", 1.0, IPS[3], IPS[3], 7000, 7010)
        t.confirm(v.handle, 1.0)
        out.append((t.export(), t.entry(v.handle)))
    assert out[0] == out[1]
    assert [e["id"] for e in out[1][0]] == [6, 1, 50, 30, 3, 51]
    got = []
    for t in (pure_ct.CtTable(0), _fastpath.CtTable(0)):     # one source, three bindings
        dsts = (IPS[1], IPS[2], IPS[1] + 7)
        hs = [t.process(17, IPS[0], d, 2000, 53, 0, 1.0).handle for d in dsts]
        for i in (2, 0, 1):
            assert t.nat(hs[i], "SRC", 1.0, IPS[3], IPS[3], 7000 + i, 7000 + i)
            assert t.confirm(hs[i], 1.0)
        v = t.process(17, IPS[0], IPS[1] + 9, 2000, 53, 0, 1.0)
        t.nat(v.handle, "SRC", 1.0, IPS[3], IPS[3], 7000, 7010)
        got.append(t.entry(v.handle)["reply"]["dport"])
    assert got == [7002, 7002]                  # the oldest in table order (id 3), not id 1


def _churn_round(t, r, now):
    """~1,000 flows at `now`: 600 TCP connections made assured, 500 of them
    removed at once (their expiry items still ~a day ahead), 400 UDP flows to a
    DNAT'ed service, half of them marked; everything is gone by now + 100,000."""
    for i in range(600):
        sp = 1024 + (r * 600 + i) % 60000
        v = t.process(6, IPS[0], IPS[1], sp, 80, 0x02, now)
        if v.new and t.confirm(v.handle, now):
            t.process(6, IPS[1], IPS[0], 80, sp, 0x12, now)
            t.process(6, IPS[0], IPS[1], sp, 80, 0x10, now)
            if i < 500:
                t.remove(v.handle)
    for i in range(400):
        v = t.process(17, IPS[0], IPS[2], 1024 + (r * 400 + i) % 60000, 53, 0, now)
        if v.new:
            t.nat(v.handle, "DST", now, IPS[3], IPS[3], 5353, 5353)
            if i % 2:
                t.set_mark(v.handle, 0x4000)
            t.confirm(v.handle, now)
    t.sweep(now + 100_000)


def test_memory_stays_flat_while_flows_come_and_go():
    """Constant churn (new flows, early removals, NAT bindings, marks, expiry):
    after a few rounds memory() no longer grows, the ext pages of NAT'ed
    entries and the slots of removed entries are given back, and the twins
    agree all along."""
    ref, fast = pure_ct.CtTable(4000, Timeouts.kube_proxy()), \
        _fastpath.CtTable(4000, Timeouts.kube_proxy())
    for r in range(3):
        for t in (ref, fast):
            _churn_round(t, r, r * 200_000.0)
        assert fast.export() == ref.export() and fast.stats == ref.stats, r
    seen = []
    for r in range(3, 40):
        _churn_round(fast, r, r * 200_000.0)
        seen.append(sum(v for k, v in fast.memory().items() if k != "entry_size"))
    assert max(seen[5:]) <= seen[4]
    assert len(fast) == 0 and fast.slots["table"] == 0 and fast.slots["pending"] == 0
    fast.sweep(1e9)
    m = fast.memory()
    assert m["ext"] < 4096 and m["order"] == 0           # no ext page held, no side keys
    assert fast.slots["removed"] == 0 and fast.slots["heap_items"] == 0


def test_a_removed_entry_keeps_its_slot_until_its_heap_item_comes_up():
    t = _fastpath.CtTable(100, Timeouts.kube_proxy())
    v = t.process(17, IPS[0], IPS[1], 1000, 53, 0, 1.0)
    assert t.confirm(v.handle, 1.0)
    t.remove(v.handle)
    assert t.slots["removed"] == 1 and t.slots["heap_items"] == 1 and t.entry(v.handle) is None
    w = t.process(17, IPS[0], IPS[1], 1001, 53, 0, 1.0)     # another slot
    assert w.handle >> 32 != v.handle >> 32
    t.sweep(1.0 + 29.0)
    assert t.slots["removed"] == 1                          # its item (31.0) not due yet
    t.sweep(31.0)
    assert t.slots["removed"] == 0 and t.slots["heap_items"] == 0
