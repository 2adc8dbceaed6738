# accel: selects the compiled module (_fastpath) or its pure-Python twin
# (_purepath). KDP_NO_EXTENSIONS=1 forces the twin. Everything else in kdp
# imports checksum and header routines from here, never from either module.
# Array layouts shared by both twins are declared in kdp.contract.
from __future__ import annotations

import os

from .contract import CHECKSUM_DTYPE, HEADER_DTYPE, HEADER_FIELDS

if os.environ.get("KDP_NO_EXTENSIONS", "") not in ("", "0"):
    from . import _purepath as impl
else:
    try:
        from . import _fastpath as impl  # type: ignore[attr-defined]
    except ImportError:  # extension not built (e.g. running from a source tree)
        from . import _purepath as impl

IMPLEMENTATION: str = impl.IMPLEMENTATION
inet_checksum = impl.inet_checksum
csum_replace = impl.csum_replace
parse_headers = impl.parse_headers
parse_batch = impl.parse_batch
checksum_batch = impl.checksum_batch

__all__ = ["IMPLEMENTATION", "HEADER_FIELDS", "HEADER_DTYPE", "CHECKSUM_DTYPE",
           "inet_checksum", "csum_replace", "parse_headers", "parse_batch", "checksum_batch"]
