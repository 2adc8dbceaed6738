# The per-packet choice hash (kdp.conntrack.keyed.flow_hash) and its C twin:
# pinned values (a change of the hash changes every seeded choice: it must be
# deliberate), Python == C on random inputs, every input matters, the top 31
# bits the statistic match uses are uniform, the kernel's jhash2 in C.
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdp.conntrack.keyed import (decision_point, entry_base, flow_base, flow_hash, hash_step, jhash2,
                                 random31)

try:
    from kdp import _fastpath
except ImportError:  # pragma: no cover
    _fastpath = None

needs_fastpath = pytest.mark.skipif(_fastpath is None, reason="kdp._fastpath is not built")
u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)


def test_pinned_values():
    assert flow_hash(0, 0, 6, 0x0AF40005, 0x0A60000A, 40000, 80) == 0x0C028614E46DD144
    point = decision_point("statistic", "node/n1", "nat", "KUBE-SVC-X", 2)
    assert point == 0x255D573CA1267E7F
    assert flow_hash(7, point, 17, 0x0AF40005, 0x0A60000A, 5353, 53) == 0x1BCB0BC171D0D2EC


def test_point_enters_last():
    base = flow_base(3, 6, 1, 2, 3, 4)
    assert flow_hash(3, 99, 6, 1, 2, 3, 4) == hash_step(base, 99)


def test_every_input_changes_the_hash():
    args = [5, 11, 6, 0x0A000001, 0x0A000002, 1000, 80]
    base = flow_hash(*args)
    for i in range(len(args)):
        other = list(args)
        other[i] += 1
        assert flow_hash(*other) != base, i


def test_random31_is_uniform_enough():
    rng = random.Random(1)
    n, hits = 40000, 0
    for _ in range(n):
        h = flow_hash(9, 77, 6, rng.getrandbits(32), 0x0A600001, rng.getrandbits(16), 80)
        hits += random31(h) < 0x80000000 // 3
    assert abs(hits / n - 1 / 3) < 0.015


@needs_fastpath
@settings(max_examples=400, deadline=None)
@given(seed=u64, point=u64, proto=st.integers(0, 255), src=u32, dst=u32, sport=u16, dport=u16)
def test_c_equals_python(seed, point, proto, src, dst, sport, dport):
    assert _fastpath.flow_hash(seed, point, proto, src, dst, sport, dport) == \
        flow_hash(seed, point, proto, src, dst, sport, dport)
    assert _fastpath.flow_base(seed, proto, src, dst, sport, dport) == \
        flow_base(seed, proto, src, dst, sport, dport)


@needs_fastpath
@settings(max_examples=200, deadline=None)
@given(seed=u64, point=u64, src=u32, sport=u16, gen=st.integers(0, 1 << 40))
def test_c_equals_python_for_reopened_entries(seed, point, src, sport, gen):
    assert _fastpath.flow_hash(seed, point, 6, src, 0x0A600008, sport, 80, gen) == \
        flow_hash(seed, point, 6, src, 0x0A600008, sport, 80, gen)
    base = flow_base(seed, 6, src, 0x0A600008, sport, 80)
    assert _fastpath.entry_base(base, gen) == entry_base(base, gen)


def test_a_reopen_draws_anew_and_the_first_entry_as_before():
    args = (5, 1234, 6, 0x0AF40002, 0x0A600008, 41000, 80)
    assert flow_hash(*args, 0) == flow_hash(*args)              # gen 0: the value it always had
    draws = {flow_hash(*args, g) for g in range(64)}
    assert len(draws) == 64                                     # every reopen its own draw
    assert flow_hash(*args, 3) == hash_step(entry_base(flow_base(*args[:1], *args[2:]), 3), 1234)


@needs_fastpath
@settings(max_examples=300, deadline=None)
@given(words=st.lists(u32, min_size=4, max_size=4), initval=u32)
def test_c_jhash2_equals_python(words, initval):
    assert _fastpath.jhash2_4(*words, initval) == jhash2(words, initval)
