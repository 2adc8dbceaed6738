# The components' Protocols (kdp.fast.contract) against both twins: every
# member a Protocol names is on the pure twin and on the compiled one (methods
# callable, data attributes on an instance), every public method both twins
# share is named by the Protocol (so it stays their whole common interface),
# and what kdp.fast selected satisfies them.
from __future__ import annotations

import pytest

from kdp import fast
from kdp.fast import conntrack, contract, flowengine, headers, matcher

try:
    from kdp import _fastpath
except ImportError:  # pragma: no cover
    _fastpath = None

needs_fastpath = pytest.mark.skipif(_fastpath is None, reason="kdp._fastpath is not built")


def members(proto) -> set[str]:
    """The names a Protocol declares: annotated attributes, methods, properties."""
    names = set(getattr(proto, "__annotations__", {}))
    names |= {n for n, v in vars(proto).items()
              if (callable(v) or isinstance(v, property))
              and (not n.startswith("_") or n == "__len__")}
    return names


def public_methods(cls) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}


# (Protocol, pure twin, name of the compiled twin in kdp._fastpath, factory of an instance or None)
COMPONENTS = [
    (contract.HeadersTwin, headers, None, None),
    (contract.CtTableTwin, conntrack.CtTable, "CtTable", lambda cls: cls(8, seed=3, namespace="n")),
    (contract.MatcherKernelTwin, matcher.MatcherKernel, "MatcherKernel", None),
    (contract.FlowEngineTwin, flowengine.FlowEngine, "FlowEngine", lambda cls: cls(False)),
]


def twins():
    for proto, pure, compiled, make in COMPONENTS:
        yield pytest.param(proto, pure, make, id=f"{proto.__name__}-python")
        impl = None if _fastpath is None else (_fastpath if compiled is None
                                               else getattr(_fastpath, compiled))
        yield pytest.param(proto, impl, make, id=f"{proto.__name__}-cython", marks=needs_fastpath)


@pytest.mark.parametrize("proto,twin,make", list(twins()))
def test_twin_has_every_member_of_its_protocol(proto, twin, make):
    names = members(proto)
    assert names, proto
    methods = {n for n in names if n not in getattr(proto, "__annotations__", {})}
    missing = sorted(n for n in methods if not hasattr(twin, n))
    assert not missing, f"{twin!r} lacks {missing} of {proto.__name__}"
    assert all(callable(getattr(twin, n)) for n in methods
               if not isinstance(vars(proto).get(n), property))
    obj = twin if make is None else make(twin)
    data = set(getattr(proto, "__annotations__", {}))
    assert not sorted(n for n in data if not hasattr(obj, n))
    assert isinstance(obj, proto)


@needs_fastpath
@pytest.mark.parametrize("proto,pure,compiled,make", COMPONENTS[1:],
                         ids=[c[0].__name__ for c in COMPONENTS[1:]])
def test_protocol_names_every_method_both_twins_share(proto, pure, compiled, make):
    shared = public_methods(pure) & public_methods(getattr(_fastpath, compiled))
    assert shared - members(proto) == set()


def test_headers_protocol_names_every_shared_routine():
    routines = {n for n in dir(headers) if not n.startswith("_") and callable(getattr(headers, n))
                and getattr(getattr(headers, n), "__module__", "").startswith("kdp.")}
    assert routines - {"batch_index_args", "span_error"} == members(contract.HeadersTwin) - {
        "IMPLEMENTATION"}


def test_the_selected_twins_satisfy_the_protocols():
    assert isinstance(fast.impl, contract.HeadersTwin)
    assert isinstance(fast.CtTable(8), contract.CtTableTwin)
    assert isinstance(fast.FlowEngine(False), contract.FlowEngineTwin)
    assert members(contract.MatcherKernelTwin) <= public_methods(fast.MatcherKernel)
