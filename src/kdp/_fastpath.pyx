# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# _fastpath: the one compiled extension, the C twin of kdp.fast's pure modules.
# Holds only the includes of its parts (fast/*.pxi) and the glue that binds
# the layout contract. Owns no policy; kdp.checksum and kdp.fast
# choose between this module and the pure twins.
#
# Import order: kdp.checksum imports this module while kdp.wire is loading, so
# nothing from kdp is imported until every part below is defined; only then
# does the glue at the end bind the contract's names (which may load kdp.fast,
# whose selector reads this module's attributes, all defined by then).
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t, uintptr_t)
from libc.string cimport memcpy, memset

import numpy as np

IMPLEMENTATION = "cython"

# The contract's names the parts read as module globals at call time (array
# dtypes, the verdict record, argument rules): None until _bind_contract() at
# the end of this file sets them to kdp.fast.contract's own objects.
HEADER_DTYPE = CHECKSUM_DTYPE = batch_index_args = span_error = None
CT_ENTRY_DTYPE = CT_EXPORT_DTYPE = CT_RESULT_DTYPE = DECISION_DTYPE = FLOW_DTYPE = None
MATCH_CIDR_DTYPE = MATCH_EP_DTYPE = MATCH_RULE_DTYPE = MATCH_SP_DTYPE = None
CtVerdict = check_nat_args = check_process_args = None

include "fast/headers.pxi"
include "fast/hash.pxi"
include "fast/mem.pxi"
include "fast/conntrack_store.pxi"
include "fast/conntrack_life.pxi"
include "fast/conntrack_nat.pxi"
include "fast/conntrack.pxi"
include "fast/recent.pxi"
include "fast/matcher.pxi"
include "fast/layout.pxi"
include "fast/flowengine.pxi"
include "fast/capture.pxi"


# --- glue: bind the contract once every part is defined -----------------------

def _bind_contract():
    """Refuse this module unless its structs are the contract's records
    (LayoutMismatch), then bind the contract's names here."""
    global HEADER_DTYPE, CHECKSUM_DTYPE, batch_index_args, span_error
    global CT_ENTRY_DTYPE, CT_EXPORT_DTYPE, CT_RESULT_DTYPE, DECISION_DTYPE, FLOW_DTYPE
    global MATCH_CIDR_DTYPE, MATCH_EP_DTYPE, MATCH_RULE_DTYPE, MATCH_SP_DTYPE
    global CtVerdict, check_nat_args, check_process_args
    import sys
    from .fast import contract as c
    c.check_compiled(sys.modules[__name__])
    HEADER_DTYPE, CHECKSUM_DTYPE = c.HEADER_DTYPE, c.CHECKSUM_DTYPE
    batch_index_args, span_error = c.batch_index_args, c.span_error
    CT_ENTRY_DTYPE, CT_RESULT_DTYPE = c.CT_ENTRY_DTYPE, c.CT_RESULT_DTYPE
    CT_EXPORT_DTYPE = c.CT_EXPORT_DTYPE
    DECISION_DTYPE, FLOW_DTYPE = c.DECISION_DTYPE, c.FLOW_DTYPE
    MATCH_CIDR_DTYPE, MATCH_EP_DTYPE = c.MATCH_CIDR_DTYPE, c.MATCH_EP_DTYPE
    MATCH_RULE_DTYPE, MATCH_SP_DTYPE = c.MATCH_RULE_DTYPE, c.MATCH_SP_DTYPE
    CtVerdict, check_nat_args, check_process_args = (c.CtVerdict, c.check_nat_args,
                                                     c.check_process_args)


_bind_contract()
