# fast: the selector of the fast path. Chooses, once at import, the compiled
# module kdp._fastpath or its pure-Python twins in this package (headers,
# conntrack, flowengine, matcher, capture) by the rule kdp.checksum follows
# (KDP_NO_EXTENSIONS=1, or an extension that is not built, gives the twins),
# and exports what the chosen side provides under one set of names. Everything
# else in kdp imports these from here, never from either twin; checksums come
# from kdp.checksum. The array layouts both twins follow are kdp.fast.contract.
#
# Import order: kdp._fastpath may be loading when this runs (it binds the
# contract at the end of its own import, which loads this package first). Its
# attributes are all defined by then, but kdp.wire may be half loaded, and
# kdp.checksum too (extensions_disabled is written before it imports the
# extension): the compiled branch imports nothing but the contract and
# kdp._fastpath; only the pure branch imports the twins (and through them
# kdp.conntrack and kdp.wire).
from __future__ import annotations

from ..checksum import extensions_disabled
from . import contract
from .contract import CHECKSUM_DTYPE, HEADER_DTYPE, HEADER_FIELDS


def _compiled():
    """kdp._fastpath, proven against the contract; None when it is not wanted
    or not built. A layout mismatch raises LayoutMismatch (no fallback)."""
    if extensions_disabled():
        return None
    try:
        from .. import _fastpath
    except ImportError:  # extension not built (e.g. running from a source tree)
        return None
    contract.check_compiled(_fastpath)
    return _fastpath


_compiled_module = _compiled()
if _compiled_module is not None:
    impl = _compiled_module
    CtTable = _compiled_module.CtTable
    FlowEngine = _compiled_module.FlowEngine
    MatcherKernel = _compiled_module.MatcherKernel
    flow_hash = _compiled_module.flow_hash
    convert_pcap = _compiled_module.convert_pcap
    convert_pcapng = _compiled_module.convert_pcapng
else:
    from . import headers as impl
    from ..conntrack.keyed import flow_hash
    from .conntrack import CtTable
    from .flowengine import FlowEngine
    from .matcher import MatcherKernel
    from .capture import convert_pcap, convert_pcapng

IMPLEMENTATION: str = impl.IMPLEMENTATION
parse_headers = impl.parse_headers
parse_batch = impl.parse_batch
checksum_batch = impl.checksum_batch


def matcher_kernel(program):
    """The per-packet kernel of a kdp.fast.svcmatch.MatcherProgram."""
    return MatcherKernel(program)


def matcher_implementation() -> str:
    return IMPLEMENTATION


__all__ = ["IMPLEMENTATION", "HEADER_FIELDS", "HEADER_DTYPE", "CHECKSUM_DTYPE",
           "parse_headers", "parse_batch", "checksum_batch", "CtTable", "FlowEngine",
           "MatcherKernel", "flow_hash", "matcher_kernel", "matcher_implementation"]
