# accel: selects the compiled module (_fastpath) or its pure-Python twins
# (_purepath; _purect for the conntrack table, _purematch for the service
# matcher's kernel). KDP_NO_EXTENSIONS=1 forces the twins. Everything else in
# kdp imports these routines from here, never from either module.
# Array layouts shared by both twins are declared in kdp.contract.
from __future__ import annotations

from ..checksum import extensions_disabled
from .contract import CHECKSUM_DTYPE, HEADER_DTYPE, HEADER_FIELDS

if extensions_disabled():
    from . import headers as impl
else:
    try:
        from .. import _fastpath as impl  # type: ignore[attr-defined]
    except ImportError:  # extension not built (e.g. running from a source tree)
        from . import headers as impl

IMPLEMENTATION: str = impl.IMPLEMENTATION
inet_checksum = impl.inet_checksum
csum_replace = impl.csum_replace
parse_headers = impl.parse_headers
parse_batch = impl.parse_batch
checksum_batch = impl.checksum_batch


# The compiled conntrack table and the service matcher's kernel, loaded on first
# use (their pure twins import kdp.conntrack, which imports kdp.wire, which
# imports this module).
def __getattr__(name: str):
    if name == "CtTable":
        if impl.IMPLEMENTATION == "cython":
            return impl.CtTable
        from .conntrack import CtTable
        return CtTable
    if name == "FlowEngine":
        if impl.IMPLEMENTATION == "cython":
            return impl.FlowEngine
        from .flowengine import FlowEngine
        return FlowEngine
    if name == "flow_hash":
        if impl.IMPLEMENTATION == "cython":
            return impl.flow_hash
        from ..conntrack.keyed import flow_hash
        return flow_hash
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def matcher_kernel(program):
    """The per-packet kernel of a kdp.k8s.svcmatch.MatcherProgram."""
    if impl.IMPLEMENTATION == "cython":
        return impl.MatcherKernel(program)
    from .matcher import Kernel
    return Kernel(program)


def matcher_implementation() -> str:
    return impl.IMPLEMENTATION


__all__ = ["IMPLEMENTATION", "HEADER_FIELDS", "HEADER_DTYPE", "CHECKSUM_DTYPE",
           "inet_checksum", "csum_replace", "parse_headers", "parse_batch", "checksum_batch",
           "CtTable", "FlowEngine", "flow_hash", "matcher_kernel", "matcher_implementation"]
