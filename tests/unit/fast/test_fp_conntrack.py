# The compiled conntrack table (_fastpath.CtTable) against its twin, the
# reference table (kdp.fast.conntrack.CtTable over kdp.conntrack): random packet sequences
# (Hypothesis) with NAT bindings, confirms, discards, ICMP errors, expiry, a
# full table with early drop, removals and export/import give the same verdict
# for every packet, the same entries (NAT tuples included) and the same export
# and stats; plus known answers for both twins and the batch calls.
from __future__ import annotations

from ipaddress import IPv4Address

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdp import fast
from kdp.fast import conntrack as pure_ct
from kdp import wire
from kdp.fast import contract
from kdp.conntrack import Timeouts

try:
    from kdp import _fastpath
except ImportError:  # pragma: no cover
    _fastpath = None

needs_fastpath = pytest.mark.skipif(_fastpath is None, reason="kdp._fastpath is not built")
TWINS = [pytest.param(pure_ct, id="python"),
         pytest.param(_fastpath, id="cython", marks=needs_fastpath)]
over_twins = pytest.mark.parametrize("impl", TWINS)

IPS = [int(IPv4Address(a)) for a in ("10.244.0.5", "10.244.1.6", "10.96.0.10", "10.240.0.4")]
PORTS = [80, 1000, 1001, 53, 40000]
SYN, ACK, FIN, RST, URG, PSH = 0x02, 0x10, 0x01, 0x04, 0x20, 0x08
FLAGS = [SYN, SYN | ACK, ACK, FIN | ACK, RST, RST | ACK, ACK | PSH, SYN | FIN, 0, URG]
ICMP_TYPES = [8, 0, 13, 14, 9, 19]


# --- known answers (both twins) -------------------------------------------------

@over_twins
def test_tcp_handshake_states_and_assured(impl):
    t = impl.CtTable(64, Timeouts.kube_proxy())
    a, b = IPS[0], IPS[1]
    v = t.process(6, a, b, 40000, 80, SYN, 0.0)
    assert (v.new, v.ctinfo, v.direction, v.state) == (True, "NEW", "original", "SYN_SENT")
    assert t.confirm(v.handle, 0.0) and len(t) == 1
    v = t.process(6, b, a, 80, 40000, SYN | ACK, 0.1)
    assert (v.ctinfo, v.direction, v.state) == ("ESTABLISHED_REPLY", "reply", "SYN_RECV")
    v = t.process(6, a, b, 40000, 80, ACK, 0.2)
    assert (v.ctinfo, v.state) == ("ESTABLISHED", "ESTABLISHED") and v.status & 4   # ASSURED
    e = t.entry(v.handle)
    assert e["timeout_at"] == 0.2 + 86400 and e["tcp"]["last_index"] == "ACK"


@over_twins
def test_invalid_reasons_are_the_references(impl):
    t = impl.CtTable(64)
    assert t.process(6, IPS[0], IPS[1], 1, 2, SYN | FIN, 0).invalid == "invalid tcp flag combination"
    assert t.process(6, IPS[0], IPS[1], 1, 2, ACK, 0, checksum_ok=False).invalid == "bad tcp checksum"
    assert t.process(1, IPS[0], IPS[1], 7, 9 << 8, 0, 0).invalid.startswith("cannot invert icmp")
    v = t.process(1, IPS[0], IPS[1], 7, 0 << 8, 0, 0)
    assert v.invalid == "icmp type 0 cannot open a connection"
    strict = impl.CtTable(64, tcp_loose=False)
    assert strict.process(6, IPS[0], IPS[1], 1, 2, ACK, 0).invalid == "tcp [.] cannot open a connection"
    v = t.related(IPS[2], IPS[0], 3, 3, 17, IPS[0], IPS[1], 5, 53, 0)
    assert v.invalid.startswith("icmp error about unknown connection udp 10.244.0.5:5->")
    with pytest.raises(ValueError):
        t.process(1, IPS[0], IPS[1], 0, 3 << 8, 0, 0)


@over_twins
def test_dnat_binding_and_reply_lookup(impl):
    t = impl.CtTable(64)
    v = t.process(6, IPS[0], IPS[2], 40000, 80, SYN, 0.0)
    ep = IPS[1]
    assert t.nat(v.handle, "DST", 0.0, ep, ep, 8080, 8080)
    assert t.null_binding(v.handle, "SRC", 0.0) is False
    assert t.confirm(v.handle, 0.0)
    e = t.export()[0]
    assert e["reply"] == {"proto": 6, "src": "10.244.1.6", "dst": "10.244.0.5", "sport": 8080,
                          "dport": 40000}
    assert e["status"] & 0x20 and e["status"] & 0x180 == 0x180       # DST_NAT, both NAT_DONE
    assert t.lookup(6, ep, IPS[0], 8080, 40000, 1.0) == (v.id, "reply")
    with pytest.raises(ValueError):
        t.nat(v.handle, "DST", 0.0, ep, ep, 1, 1)                    # confirmed: too late


@over_twins
def test_table_full_drops_and_early_drop(impl):
    t = impl.CtTable(3, buckets=1)
    for sport in range(3):
        v = t.process(17, IPS[0], IPS[1], 1000 + sport, 53, 0, 0.0)
        assert t.confirm(v.handle, 0.0)
    v = t.process(17, IPS[0], IPS[1], 2000, 53, 0, 1.0)                 # evicts all three
    assert v.new and t.stats["early_drop"] == 3
    assert t.confirm(v.handle, 1.0) and len(t) == 1


# --- the twins agree ----------------------------------------------------------

ips = st.sampled_from(IPS)
ports = st.sampled_from(PORTS)


THENS = ["confirm", "confirm", "dnat", "snat_rf", "snat_small", "masq", "null", "discard",
         "pending", "dnat_range"]


@st.composite
def packet_ops(draw):
    kind = draw(st.sampled_from(["tcp", "tcp", "udp", "icmp", "gre", "again", "again", "reply",
                                 "reply", "reply", "related", "sweep", "remove", "mark",
                                 "reimport", "lookup"]))
    dt = draw(st.sampled_from([0.0, 0.0, 0.01, 0.5, 1.0, 2.5, 31.0, 65.0, 121.0, 400.0]))
    then = draw(st.sampled_from(THENS))
    pre = draw(st.booleans())
    csum = draw(st.sampled_from([True, True, True, False]))
    if kind in ("tcp", "udp", "icmp", "gre"):
        proto = {"tcp": 6, "udp": 17, "icmp": 1, "gre": 47}[kind]
        src, dst = draw(ips), draw(ips)
        if proto == 1:
            sport, dport = draw(st.sampled_from([7, 8])), draw(st.sampled_from(ICMP_TYPES)) << 8
        elif proto == 47:
            sport = dport = 0
        else:
            sport, dport = draw(ports), draw(ports)
        flags = draw(st.sampled_from(FLAGS)) if proto == 6 else 0
        return (kind, dt, (proto, src, dst, sport, dport), flags, pre, csum, then, draw(ips))
    if kind in ("again", "reply"):
        return (kind, dt, draw(st.integers(0, 30)), draw(st.sampled_from(FLAGS)), pre, csum,
                then, draw(ips))
    if kind == "related":
        return (kind, dt, draw(st.integers(0, 30)), draw(st.integers(0, 2)),
                draw(st.sampled_from([3, 11])), pre, csum)
    return (kind, dt, draw(st.integers(0, 50)), draw(st.integers(0, 3)))


def _verdict_key(v):
    return v._replace(handle=None)


def _invert(t):
    proto, src, dst, sport, dport = t
    if proto == 1:
        inv = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}.get(dport >> 8)
        return None if inv is None else (1, dst, src, sport, (inv << 8) | (dport & 0xFF))
    return (proto, dst, src, dport, sport)


def _tuple(d):
    return (d["proto"], int(IPv4Address(d["src"])), int(IPv4Address(d["dst"])), d["sport"],
            d["dport"])


class Run:
    """One twin's table and the flows (original tuple, handle) it has seen."""

    def __init__(self, table):
        self.t, self.flows, self.handles = table, [], []

    def flow_tuples(self, k):
        """(original, reply) tuples of flow k: from its entry when alive."""
        orig, handle = self.flows[k % len(self.flows)]
        e = self.t.entry(handle)
        if e is not None:
            return _tuple(e["orig"]), _tuple(e["reply"])
        return orig, _invert(orig)


def _packet(run, tup, flags, pre, csum, then, nat_ip, now):
    t = run.t
    proto, src, dst, sport, dport = tup
    if proto == 1 and (dport >> 8) in wire.ICMP_ERROR_TYPES:
        return ["icmp error"]
    if proto != 6:
        flags = 0
    v = t.process(proto, src, dst, sport, dport, flags, now, prerouting=pre, checksum_ok=csum)
    out = [_verdict_key(v)]
    if v.handle is None:
        return out
    run.handles.append(v.handle)
    if not v.new:
        return out
    run.flows.append((tup, v.handle))
    h = v.handle
    if then == "dnat":
        out.append(t.nat(h, "DST", now, nat_ip, nat_ip, 8080, 8080))
    elif then == "dnat_range":
        out.append(t.nat(h, "DST", now, IPS[3], IPS[0], 8080, 8081))
    elif then == "snat_rf":
        out.append(t.nat(h, "SRC", now, nat_ip, nat_ip, 1024, 65535, random_fully=True))
    elif then == "snat_small":
        out.append(t.nat(h, "SRC", now, nat_ip, nat_ip, 1000, 1001))
    elif then == "masq":
        out.append(t.nat(h, "SRC", now, IPS[3], IPS[3]))
        t.set_masq_dev(h, "eth0")
    elif then == "null":
        out.append(t.null_binding(h, "SRC", now))
    out.append(t.entry(h))
    if then == "discard":
        t.discard(h)
    elif then != "pending":
        if then not in ("null", "confirm"):
            out.append(t.null_binding(h, "SRC", now))
        out.append(t.confirm(h, now))
    return out


def _apply(run, op, now):
    """One op on one twin; returns what to compare."""
    t, kind = run.t, op[0]
    if kind in ("tcp", "udp", "icmp", "gre"):
        _k, _dt, tup, flags, pre, csum, then, nat_ip = op
        return _packet(run, tup, flags, pre, csum, then, nat_ip, now)
    if kind in ("again", "reply"):
        if not run.flows:
            return ["no flow"]
        _k, _dt, k, flags, pre, csum, then, nat_ip = op
        orig, reply = run.flow_tuples(k)
        tup = orig if kind == "again" else reply
        return ["no tuple"] if tup is None else _packet(run, tup, flags, pre, csum, then, nat_ip, now)
    if kind == "related":
        if not run.flows:
            return ["no flow"]
        _k, _dt, k, mode, typ, pre, csum = op
        orig, reply = run.flow_tuples(k)
        if reply is None:
            return ["no tuple"]
        # the quoted packet as it travelled: the inverse of the tuple conntrack holds
        q, outer_dst = (_invert(reply), reply[2]) if mode != 2 else (_invert(orig), orig[2])
        if q is None:
            return ["no quote"]
        if mode == 1:
            outer_dst = IPS[0] if outer_dst != IPS[0] else IPS[1]
        v = t.related(IPS[2], outer_dst, typ, 0, *q, now, prerouting=pre, checksum_ok=csum)
        return [_verdict_key(v)]
    if kind == "sweep":
        return [t.sweep(now)]
    if kind == "lookup":
        return [t.lookup(6, IPS[op[3]], IPS[(op[3] + 1) % 4], PORTS[op[2] % 5], 80, now)]
    pick = run.handles[op[2] % len(run.handles)] if run.handles else None
    if kind == "remove" and pick is not None:
        t.remove(pick)
    elif kind == "mark" and pick is not None:
        t.set_mark(pick, op[2] * 0x101)
    elif kind == "reimport":
        items = t.export()
        t.import_(items[op[3]:] + items[:1])       # same ids and tuples: replaced in place
    return [t.entry(pick) if pick is not None else None]


@needs_fastpath
@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(packet_ops(), min_size=5, max_size=80),
       max_entries=st.sampled_from([0, 2, 3, 5, 64]),
       buckets=st.sampled_from([None, 1, 2, 7]),
       seed=st.sampled_from([0, 5]),
       kube=st.booleans(), loose=st.booleans())
def test_twins_agree_on_random_packet_sequences(ops, max_entries, buckets, seed, kube, loose):
    tm = Timeouts.kube_proxy() if kube else Timeouts()
    ref = pure_ct.CtTable(max_entries, tm, buckets=buckets, seed=seed, namespace="node/n1",
                          tcp_loose=loose)
    fast = _fastpath.CtTable(max_entries, tm, buckets=buckets, seed=seed, namespace="node/n1",
                             tcp_loose=loose)
    now = 0.0
    r_ref, r_fast = Run(ref), Run(fast)
    for i, op in enumerate(ops):
        now += op[1]
        a = _apply(r_ref, op, now)
        b = _apply(r_fast, op, now)
        assert a == b, f"op {i} {op}"
        assert len(ref) == len(fast)
    assert fast.export() == ref.export()
    assert fast.stats == ref.stats
    assert fast.to_conntrack_l(now) == ref.to_conntrack_l(now)


def _run_twins(ops, **kw):
    ref, fast = pure_ct.CtTable(**kw), _fastpath.CtTable(**kw)
    r_ref, r_fast, now = Run(ref), Run(fast), 0.0
    for i, op in enumerate(ops):
        now += op[1]
        assert _apply(r_ref, op, now) == _apply(r_fast, op, now), f"op {i} {op}"
    assert fast.export() == ref.export() and fast.stats == ref.stats
    return ref


@needs_fastpath
@pytest.mark.parametrize("seed", range(6))
def test_twins_agree_on_long_seeded_runs(seed):
    """Long runs (3000 ops) over a small address space: replies, reopens,
    RST kills, NAT port searches, by-source reuse, table full, expiry."""
    import random
    rng = random.Random(seed)
    kinds = ["tcp", "udp", "icmp", "again", "again", "reply", "reply", "reply", "related",
             "sweep", "remove", "reimport"]
    ops = []
    for _ in range(3000):
        kind = rng.choice(kinds)
        dt = rng.choice([0.0, 0.0, 0.01, 0.5, 2.5, 31.0, 121.0])
        then, pre = rng.choice(THENS), rng.random() < 0.8
        csum = rng.random() < 0.95
        if kind in ("tcp", "udp", "icmp"):
            proto = {"tcp": 6, "udp": 17, "icmp": 1}[kind]
            src, dst = rng.choice(IPS), rng.choice(IPS)
            if proto == 1:
                sport, dport = rng.choice([7, 8]), rng.choice(ICMP_TYPES) << 8
            else:
                sport, dport = rng.choice(PORTS), rng.choice(PORTS)
            ops.append((kind, dt, (proto, src, dst, sport, dport), rng.choice(FLAGS), pre, csum,
                        then, rng.choice(IPS)))
        elif kind in ("again", "reply"):
            ops.append((kind, dt, rng.randrange(60), rng.choice(FLAGS), pre, csum, then,
                        rng.choice(IPS)))
        elif kind == "related":
            ops.append((kind, dt, rng.randrange(60), rng.randrange(3), rng.choice([3, 11]), pre,
                        csum))
        else:
            ops.append((kind, dt, rng.randrange(50), rng.randrange(4)))
    ref = _run_twins(ops, max_entries=[0, 8, 24][seed % 3], buckets=[None, 3][seed % 2],
                     seed=seed, namespace="node/n1", timeouts=Timeouts.kube_proxy())
    assert ref.stats["new"] > 100


@needs_fastpath
@settings(deadline=None, max_examples=100)
@given(ops=st.lists(packet_ops(), min_size=1, max_size=40))
def test_export_moves_between_twins(ops):
    """A reference export loads into the compiled table (and back) unchanged."""
    ref = pure_ct.CtTable(0, namespace="n")
    run, now = Run(ref), 0.0
    for op in ops:
        now += op[1]
        _apply(run, op, now)
    fast = _fastpath.CtTable(0, namespace="n")
    fast.import_(ref.export())
    assert fast.export() == ref.export()
    back = pure_ct.CtTable(0, namespace="n")
    back.import_(fast.export())
    assert back.export() == ref.export()


# --- batches and layout ----------------------------------------------------------

def _flows(rows):
    arr = np.zeros(len(rows), dtype=contract.FLOW_DTYPE)
    for i, (proto, src, dst, sport, dport, flags, now) in enumerate(rows):
        arr[i] = (src, dst, sport, dport, proto, flags, 0, 1, now)
    return arr


@needs_fastpath
def test_process_batch_equals_calls_and_lookup_batch_finds_both_directions():
    rows = [(6, IPS[0], IPS[1], 40000 + i, 80, SYN, float(i)) for i in range(100)]
    rows += [(17, IPS[1], IPS[0], 53, 2000 + i, 0, 100.0) for i in range(50)]
    one = _fastpath.CtTable(1000)
    expect = []
    for proto, src, dst, sport, dport, flags, now in rows:
        v = one.process(proto, src, dst, sport, dport, flags, now)
        one.confirm(v.handle, now)
        expect.append((v.id, v.state))
    batch = _fastpath.CtTable(1000)
    res = batch.process_batch(_flows(rows))
    assert [(int(r["id"]), contract_state(r["state"])) for r in res] == expect
    assert batch.export() == one.export()
    probe = _flows([(6, IPS[1], IPS[0], 80, 40000 + i, 0, 101.0) for i in range(120)])
    hits = batch.lookup_batch(probe)
    assert list(hits["code"][:100]) == [contract.CT_OK] * 100
    assert list(hits["code"][100:]) == [contract.CT_MISS] * 20
    assert set(hits["direction"][:100]) == {1} and list(hits["id"][:100]) == list(range(1, 101))


def contract_state(code):
    from kdp.conntrack.tcp import STATES
    return STATES[code] if code >= 0 else None


@needs_fastpath
def test_compiled_structs_follow_the_contract():
    for dtype, (size, offsets, sizes) in ((contract.CT_ENTRY_DTYPE, _fastpath.CT_ENTRY_STRUCT),
                                          (contract.CT_EXPORT_DTYPE, _fastpath.CT_EXPORT_STRUCT),
                                          (contract.FLOW_DTYPE, _fastpath.FLOW_STRUCT),
                                          (contract.CT_RESULT_DTYPE, _fastpath.CT_RESULT_STRUCT)):
        contract.check_layout("probe", dtype, size, offsets, sizes)
    assert _fastpath.CtTable(8).memory()["entry_size"] == 32


@needs_fastpath
def test_export_array_is_the_entry_records():
    t = _fastpath.CtTable(64)
    v = t.process(17, IPS[0], IPS[1], 5, 53, 0, 1.5)
    t.confirm(v.handle, 1.5)
    assert t.nat(t.process(17, IPS[0], IPS[1], 6, 53, 0, 1.5).handle, "DST", 1.5, IPS[2], IPS[2])
    t.set_mark(2, 0)                            # (a dead handle: nothing)
    for h in (v.handle, (v.handle & ~0xFFFFFFFF) | 7):
        t.set_mark(h, 0x4000)
    arr = t.export_array()
    assert arr.dtype == contract.CT_EXPORT_DTYPE and len(arr) == 1
    r = arr[0]
    assert (int(r["osrc"]), int(r["odport"]), int(r["id"]), float(r["created"])) == (IPS[0], 53, 1, 1.5)
    assert (int(r["rsrc"]), int(r["rdst"]), int(r["rsport"]), int(r["mark"])) == (IPS[1], IPS[0], 53,
                                                                                  0x4000)
    assert [(e["id"], e["mark"]) for e in t.export()] == [(1, 0x4000)]


# --- rare paths, both twins side by side -------------------------------------------

def _both(**kw):
    return pure_ct.CtTable(**kw), _fastpath.CtTable(**kw)


@needs_fastpath
def test_twins_agree_on_reopen_kill_and_heap_rebuild():
    ref, fast = _both(max_entries=0, timeouts=Timeouts.kube_proxy(), namespace="n")
    a, b = IPS[0], IPS[1]
    script = [
        (6, a, b, 1000, 80, SYN), (6, b, a, 80, 1000, SYN | ACK), (6, a, b, 1000, 80, ACK),
        (6, a, b, 1000, 80, FIN | ACK), (6, b, a, 80, 1000, FIN | ACK), (6, a, b, 1000, 80, ACK),
        (6, a, b, 1000, 80, SYN),                                   # TIME_WAIT + SYN: reopen
        (6, a, b, 1001, 80, SYN), (6, b, a, 80, 1001, RST),         # RST before any reply: kill
        (6, a, b, 1001, 80, SYN), (6, a, b, 1001, 80, RST), (6, a, b, 1001, 80, SYN),
    ]
    for i, (proto, s, d, sp, dp, fl) in enumerate(script):
        va = ref.process(proto, s, d, sp, dp, fl, float(i))
        vb = fast.process(proto, s, d, sp, dp, fl, float(i))
        assert _verdict_key(va) == _verdict_key(vb), i
        if va.new:
            assert ref.confirm(va.handle, float(i)) == fast.confirm(vb.handle, float(i))
    assert fast.export() == ref.export() and fast.stats == ref.stats
    # 1500 removals leave stale heap items: the sweep rebuilds the heap in both
    handles = []
    for i in range(3000):
        va = ref.process(17, a, b, 2000 + i % 60000, 53, 0, 100.0 + i * 0.001)
        vb = fast.process(17, a, b, 2000 + i % 60000, 53, 0, 100.0 + i * 0.001)
        ref.confirm(va.handle, 100.0), fast.confirm(vb.handle, 100.0)
        handles.append((va.handle, vb.handle))
    for ha, hb in handles[:2800]:
        ref.remove(ha), fast.remove(hb)
    for now in (110.0, 200.0, 5000.0):
        assert ref.sweep(now) == fast.sweep(now)
        assert fast.export() == ref.export() and fast.stats == ref.stats


@needs_fastpath
def test_twins_agree_when_a_small_port_range_runs_out():
    """SNAT into 200 ports from one address: the port search halves its attempts
    (128 -> 8) and finally hands back a taken tuple; confirm then clashes."""
    ref, fast = _both(max_entries=0, namespace="n", seed=9)
    for i in range(230):
        seen = []
        for t in (ref, fast):
            v = t.process(17, IPS[0], IPS[1], 3000 + i, 53, 0, 1.0)
            changed = t.nat(v.handle, "SRC", 1.0, IPS[3], IPS[3], 1024, 1223)
            seen.append((changed, t.entry(v.handle)["reply"], t.confirm(v.handle, 1.0)))
        assert seen[0] == seen[1]
        assert fast.export() == ref.export()
    assert fast.stats == ref.stats and fast.stats["insert_failed"] >= 8


@needs_fastpath
def test_twins_agree_on_a_full_table_of_assured_and_closing_entries():
    """Assured entries are never early-dropped (the new packet is); an assured
    entry whose timeout shrank (RST: 10 s) is not swept by its old heap item but
    is removed as expired when early drop scans its bucket."""
    ref, fast = _both(max_entries=3, buckets=1, timeouts=Timeouts.kube_proxy(), namespace="n")
    a, b = IPS[0], IPS[1]
    seen = []
    for t in (ref, fast):
        out = []
        for sp in (1000, 1001, 1002):
            for fl, s_, d_, p1, p2 in ((SYN, a, b, sp, 80), (SYN | ACK, b, a, 80, sp),
                                       (ACK, a, b, sp, 80)):
                v = t.process(6, s_, d_, p1, p2, fl, 0.0)
                if v.new:
                    t.confirm(v.handle, 0.0)
        v = t.process(17, a, b, 5, 53, 0, 1.0)                 # full of assured: dropped
        out.append(_verdict_key(v))
        out.append(_verdict_key(t.process(6, a, b, 1001, 80, RST, 2.0)))   # CLOSE, 10 s
        # early drop finds it expired and removes it, but evicts nothing: still dropped
        out.append(_verdict_key(t.process(17, a, b, 6, 53, 0, 30.0)))
        v = t.process(17, a, b, 7, 53, 0, 31.0)                # now there is room
        out += [_verdict_key(v), t.confirm(v.handle, 31.0), t.export(), t.stats]
        seen.append(out)
    assert seen[0] == seen[1]
    assert seen[0][0].drop == seen[0][2].drop == "conntrack-table-full" and seen[0][3].new


@needs_fastpath
def test_lookup_batch_equals_lookups_with_expiry_and_repeats():
    """Lazy expiry inside the batch (an entry expired by an earlier record,
    the same tuple asked twice) gives what lookup() one by one gives."""
    import random
    rng = random.Random(3)
    rows = [(17, IPS[i % 4], IPS[(i + 1) % 4], 1000 + i, 53, 0, float(i % 50)) for i in range(400)]
    a, b = _fastpath.CtTable(0), _fastpath.CtTable(0)
    a.process_batch(_flows(rows)), b.process_batch(_flows(rows))
    probe = []
    for _ in range(1500):
        proto, s, d, sp, dp, _f, _t = rng.choice(rows)
        if rng.random() < 0.5:
            s, d, sp, dp = d, s, dp, sp
        probe.append((proto, s, d, sp, dp, 0, 60.0 + rng.random() * 30))
    probe.sort(key=lambda r: r[6])
    got = a.lookup_batch(_flows(probe))
    for r, (proto, s, d, sp, dp, _f, now) in zip(got, probe):
        want = b.lookup(proto, s, d, sp, dp, now)
        assert (None if r["code"] == contract.CT_MISS else
                (int(r["id"]), "reply" if r["direction"] else "original")) == want
    assert a.export() == b.export() and a.stats == b.stats and a.stats["expired"] > 0


@needs_fastpath
def test_matcher_structs_follow_the_contract():
    for dtype, probe in ((contract.MATCH_RULE_DTYPE, _fastpath.MATCH_RULE_STRUCT),
                         (contract.MATCH_SP_DTYPE, _fastpath.MATCH_SP_STRUCT),
                         (contract.MATCH_EP_DTYPE, _fastpath.MATCH_EP_STRUCT),
                         (contract.MATCH_CIDR_DTYPE, _fastpath.MATCH_CIDR_STRUCT),
                         (contract.DECISION_DTYPE, _fastpath.DECISION_STRUCT)):
        contract.check_layout("probe", dtype, *probe)


def test_selector_chooses_the_conntrack_and_matcher_twins():
    if fast.IMPLEMENTATION == "cython":
        assert fast.CtTable is _fastpath.CtTable and fast.flow_hash is _fastpath.flow_hash
    else:
        assert fast.CtTable is pure_ct.CtTable
    assert fast.matcher_implementation() == fast.IMPLEMENTATION


@needs_fastpath
def test_batches_of_both_twins_agree():
    rows = [(6, IPS[i % 4], IPS[(i + 1) % 4], 2000 + i % 7, 80, SYN if i < 20 else ACK, i * 0.5)
            for i in range(40)] + [(17, IPS[1], IPS[0], 53, 2000 + i, 0, 30.0) for i in range(9)]
    ref, fast = pure_ct.CtTable(16, buckets=4), _fastpath.CtTable(16, buckets=4)
    a, b = ref.process_batch(_flows(rows)), fast.process_batch(_flows(rows))
    keep = [n for n in contract.CT_RESULT_DTYPE.names if n != "handle"]
    assert a[keep].tolist() == b[keep].tolist()
    probe = _flows([(r[0], r[2], r[1], r[4], r[3], 0, 40.0) for r in rows])
    assert ref.lookup_batch(probe)[keep].tolist() == fast.lookup_batch(probe)[keep].tolist()
    assert ref.export() == fast.export() and ref.stats == fast.stats
