# contract: the one declaration of the array layouts shared by the compiled
# fast path (_fastpath.pyx) and its pure twin (_purepath.py): the header-summary
# record (HEADER_DTYPE, field order = HEADER_FIELDS), the checksum result dtype,
# and the layout check that proves the .pyx struct matches. Both twins follow
# this module; it holds no packet logic and imports nothing from kdp.
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import KdpError

# Order and meaning are those of parse_headers()'s tuple; -1/0 where a field
# does not apply (see _purepath.parse_headers).
HEADER_FIELDS: tuple[str, ...] = (
    "ethertype", "l3_offset", "ip_proto", "src_ip", "dst_ip", "ttl",
    "l4_offset", "sport", "dport", "ip_header_ok",
)

# One record per frame. align=True gives the natural C layout of
#   struct { int32 ethertype, l3_offset, ip_proto; uint32 src_ip, dst_ip;
#            int32 ttl, l4_offset, sport, dport; int8 ip_header_ok; }
# i.e. 40 bytes with 3 bytes of tail padding, which the .pyx struct reproduces.
HEADER_DTYPE = np.dtype(
    [
        ("ethertype", np.int32),
        ("l3_offset", np.int32),
        ("ip_proto", np.int32),
        ("src_ip", np.uint32),
        ("dst_ip", np.uint32),
        ("ttl", np.int32),
        ("l4_offset", np.int32),
        ("sport", np.int32),
        ("dport", np.int32),
        ("ip_header_ok", np.int8),
    ],
    align=True,
)

# checksum_batch() returns one Internet checksum per (frame, offset, length).
CHECKSUM_DTYPE = np.dtype(np.uint16)

assert HEADER_DTYPE.names == HEADER_FIELDS


class LayoutMismatch(KdpError):
    """A compiled struct does not have the layout the contract declares (a build bug)."""


def layout_of(dtype: np.dtype) -> tuple[int, dict[str, int]]:
    """(itemsize, {field: byte offset}) of a structured dtype."""
    return dtype.itemsize, {name: dtype.fields[name][1] for name in dtype.names}


def check_layout(name: str, dtype: np.dtype, size: int, offsets: Mapping[str, int],
                 sizes: Mapping[str, int] | None = None) -> None:
    """Raise LayoutMismatch unless a C struct of `size` bytes with field `offsets`
    (and, if given, field `sizes`) is exactly `dtype`."""
    want_size, want = layout_of(dtype)
    got = dict(offsets)
    problems = []
    if sizes is not None:
        problems += [f"{f} is {sizes[f]} bytes, not {dtype.fields[f][0].itemsize}"
                     for f in dtype.names if f in sizes and sizes[f] != dtype.fields[f][0].itemsize]
    if size != want_size:
        problems.append(f"size {size} != {want_size}")
    if set(got) != set(want):
        problems.append(f"fields {sorted(got)} != {sorted(want)}")
    problems += [f"{f} at {got[f]} != {want[f]}" for f in want if f in got and got[f] != want[f]]
    if problems:
        raise LayoutMismatch(f"{name} layout differs from the contract: " + "; ".join(problems))


def batch_index_args(frames, offsets, lengths) -> tuple[list, np.ndarray, np.ndarray]:
    """The calling convention of checksum_batch(), shared by both twins so that they
    accept and reject the same arguments: frames as a list, offsets and lengths as
    contiguous int64 arrays of the same length."""
    frames = frames if isinstance(frames, list) else list(frames)
    arrays = []
    for what, values in (("offsets", offsets), ("lengths", lengths)):
        arr = np.asarray(values)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{what} must be integers, not {arr.dtype}")
        if arr.ndim != 1 or arr.shape[0] != len(frames):
            raise ValueError(f"{what} has shape {arr.shape}, expected ({len(frames)},)")
        arrays.append(np.ascontiguousarray(arr, dtype=np.int64))
    return frames, arrays[0], arrays[1]


def span_error(index: int, offset: int, length: int, size: int) -> ValueError:
    """The error both twins raise for a checksum span outside its frame."""
    return ValueError(f"frame {index}: span offset {offset} length {length} "
                      f"is outside its {size} bytes")
