# fast.contract: the one declaration of what the compiled fast path
# (kdp._fastpath) and its pure twins in kdp.fast share: the array layouts (the
# header-summary record, checksum results, conntrack flows/results/entries, the
# service matcher's program and decisions, the flow cache's replay programs),
# the argument rules both twins enforce, the check that proves the compiled
# structs are these records (check_compiled), and one Protocol per component
# that both twins satisfy. Holds no packet logic; imports nothing from kdp but
# kdp.errors (kdp._fastpath and the selector import it while kdp.wire loads).
from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..errors import KdpError

# Order and meaning are those of parse_headers()'s tuple; -1/0 where a field
# does not apply (see kdp.fast.headers.parse_headers).
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


# --- the compiled conntrack table and service matcher ------------------------
#
# One record per packet handed to a batch call: the tuple (for ICMP queries
# sport is the echo id and dport type << 8 | code, as in conntrack.Tuple), TCP
# flags, whether the packet is locally generated (OUTPUT path; else it arrived:
# PREROUTING), whether its L4 checksum is right, and the packet time.
FLOW_DTYPE = np.dtype(
    [
        ("src", np.uint32),
        ("dst", np.uint32),
        ("sport", np.uint16),
        ("dport", np.uint16),
        ("proto", np.uint8),
        ("tcp_flags", np.uint8),
        ("local", np.uint8),
        ("checksum_ok", np.uint8),
        ("now", np.float64),
    ],
    align=True,
)

# The service matcher's answer for one first packet (kdp.fast.svcmatch).
VERDICTS: tuple[str, ...] = ("none", "dnat", "reject", "drop", "slow")
V_NONE, V_DNAT, V_REJECT, V_DROP, V_SLOW = range(5)
DECISION_DTYPE = np.dtype(
    [
        ("ep_ip", np.uint32),        # DNAT destination (verdict dnat), else 0
        ("ep_port", np.uint16),
        ("verdict", np.int8),        # index into VERDICTS
        ("masquerade", np.uint8),    # mark 0x4000 set by the nat walk
        ("service", np.int32),       # service port index (-1: none)
        ("rules", np.int32),         # nat rules the iptables walk evaluates for this packet
    ],
    align=True,
)

# Conntrack results (CtTable.process_batch / lookup_batch).
CTINFOS: tuple[str, ...] = ("NEW", "ESTABLISHED", "RELATED", "ESTABLISHED_REPLY",
                            "RELATED_REPLY")
DIRECTIONS: tuple[str, ...] = ("original", "reply")
CT_OK, CT_INVALID, CT_DROP, CT_MISS = 0, 1, 2, 3
CT_RESULT_DTYPE = np.dtype(
    [
        ("handle", np.int64),        # -1: no entry
        ("id", np.uint32),
        ("status", np.uint16),
        ("ctinfo", np.int8),         # index into CTINFOS, -1 none
        ("direction", np.int8),      # index into DIRECTIONS, -1 none
        ("new", np.uint8),
        ("code", np.int8),           # CT_OK / CT_INVALID / CT_DROP / CT_MISS (lookup)
        ("state", np.int8),          # TCP state index (conntrack.tcp.STATES), -1 none
    ],
    align=True,
)

# One compiled conntrack entry as the table stores it (struct ct_entry_t in
# fast/conntrack_store.pxi): 32 bytes, all a lookup reads. What is not here is
# kept beside it: the creation time (an array of doubles by slot), the reply
# tuple when NAT made it differ from the original's inverse and a non-zero
# mark (ext records, by slot), table order (the id, or a side map). `tcp`
# packs state (4 bits), last index (3), last direction (1) and the two
# close_init flags; masq_dev indexes the table's device names; `flags` are the
# table's own bits (in use, TCP, in the table, ...).
CT_ENTRY_DTYPE = np.dtype(
    [
        ("timeout_at", np.float64),
        ("osrc", np.uint32), ("odst", np.uint32), ("osport", np.uint16), ("odport", np.uint16),
        ("id", np.uint32),
        ("status", np.uint16),
        ("tcp", np.uint16),
        ("proto", np.uint8),
        ("flags", np.uint8),
        ("masq_dev", np.uint8),
        ("pad", np.uint8),
    ],
    align=True,
)
assert CT_ENTRY_DTYPE.itemsize == 32

# One confirmed entry with every field (CtTable.export_array(), struct
# ct_export_t): both tuples as integers, times, id, mark, status, TCP bits,
# proto, masq_dev; flags holds only the TCP bit (2). udp_stream_at is not a
# field (it is created + 2 s for UDP, 0 otherwise).
CT_EXPORT_DTYPE = np.dtype(
    [
        ("timeout_at", np.float64),
        ("created", np.float64),
        ("osrc", np.uint32), ("odst", np.uint32), ("osport", np.uint16), ("odport", np.uint16),
        ("rsrc", np.uint32), ("rdst", np.uint32), ("rsport", np.uint16), ("rdport", np.uint16),
        ("id", np.uint32),
        ("mark", np.uint32),
        ("status", np.uint16),
        ("tcp", np.uint16),
        ("proto", np.uint8),
        ("masq_dev", np.uint8),
        ("flags", np.uint8),
    ],
    align=True,
)

TCP_INDEXES: tuple[str, ...] = ("SYN", "SYNACK", "FIN", "ACK", "RST", "NONE")


class CtVerdict(NamedTuple):
    """What conntrack decided for one packet (both twins return this).
    handle: pass it to nat()/confirm()/discard(); None when there is no entry."""

    handle: int | None
    id: int | None
    direction: str | None
    ctinfo: str | None
    new: bool
    drop: str | None
    invalid: str | None
    state: str | None           # TCP state after the packet
    status: int                 # IPS_* bits after the packet


def check_nat_args(manip: str, min_ip=None, max_ip=None, min_port=None, max_port=None) -> None:
    """The argument rules of CtTable.nat(), shared by both twins."""
    if manip not in ("SRC", "DST"):
        raise ValueError(f"manip must be 'SRC' or 'DST', not {manip!r}")
    if (min_ip is None) != (max_ip is None) or (min_port is None) != (max_port is None):
        raise ValueError("give both ends of an address or port range, or neither")


def check_process_args(proto: int, dport: int) -> None:
    """CtTable.process() takes no ICMP errors (those go to related())."""
    # Bound here, not at module level: _fastpath binds this contract while kdp.wire may still be
    # importing its checksums (the compiled ones) from it.
    from kdp.wire import ICMP_ERROR_TYPES
    if proto == 1 and (dport >> 8) in ICMP_ERROR_TYPES:
        raise ValueError(f"ICMP type {dport >> 8} is an error: use related()")


# The compiled service matcher's program (kdp.fast.svcmatch.MatcherProgram):
# dispatch rules (chained per hash key), service ports, the SVC/SVL chains'
# endpoints and the KUBE-FW source ranges. Meanings in kdp.fast.svcmatch.
MATCH_RULE_DTYPE = np.dtype([("next", np.int32), ("pos", np.int32), ("sp", np.int32),
                             ("kind", np.int8), ("flag", np.int8)], align=True)
MATCH_SP_DTYPE = np.dtype([
    ("cip", np.uint32), ("port", np.uint16), ("proto", np.uint8), ("internal_local", np.uint8),
    ("ext_local", np.uint8), ("has_external", np.uint8), ("affinity", np.uint8),
    ("svc_masq", np.int8), ("svl_masq", np.int8), ("ext_pod_rule", np.uint8),
    ("pad", np.uint8, (2,)),
    ("affinity_seconds", np.float64),
    ("svc_off", np.int32), ("svc_n", np.int32), ("svl_off", np.int32), ("svl_n", np.int32),
    ("fw_off", np.int32), ("fw_n", np.int32)], align=True)
MATCH_EP_DTYPE = np.dtype([("point", np.uint64), ("ip", np.uint32), ("prob", np.uint32),
                           ("table", np.int32), ("port", np.uint16), ("filter", np.uint8)],
                          align=True)
MATCH_CIDR_DTYPE = np.dtype([("net", np.uint32), ("mask", np.uint32)], align=True)


# --- the flow cache's replay programs (kdp.datapath.flowcache) --------------
# An entry's program is a sequence of FLOW_OP records, run in order after every
# check has passed. Both twins (kdp.fast.flowengine.FlowEngine, _fastpath.FlowEngine)
# read exactly this layout.
#   OP_CT        slot=conntrack slot, x=timeout it sets (NaN: leaves it), y=the
#                latest time the decision holds (+inf: no bound). Check:
#                now < timeout_at[slot] and now <= y.
#   OP_FDB_CHECK slot=FDB slot, x=ageing. Check: now - updated[slot] <= x.
#   OP_FDB_LEARN slot=FDB slot. Sets updated[slot] = now.
#   OP_GEN_RST   a=1: seq from the frame's ack (ACK set); a=2: ack = seq + payload + slot
#                (the SYN/FIN count). Builds source 1 from the entry's RST base.
#   OP_ANSWER    a=kind (1 UDP echo, 2 ICMP echo reply, 3 ICMP error), slot=IP ID
#                slot. Draws the answer's IP ID from the slot's ip_idents bucket
#                (kdp.net.ipident.draw) and builds source 2: for 1 and 2 the frame
#                mirrored (MACs, addresses and ports swapped), TOS 0, TTL 64, DF for
#                UDP, ICMP type echo reply, checksums updated; for 3 the ICMP error
#                (type b >> 8, code b & 0xFF) quoting the frame as delivered: the
#                frame through the template at blob offset x (replay.error_source).
#   OP_CAPTURE   a=source (0 frame, 1 RST, 2 answer), b=sink, slot=byte offset
#                of the capture's template in the entry's template blob.
FLOW_OP = struct.Struct("<BBHIdd")
OP_CT, OP_FDB_CHECK, OP_FDB_LEARN, OP_GEN_RST, OP_CAPTURE, OP_ANSWER = 1, 2, 3, 4, 5, 6
# A capture template: count of overwrites, IP and L4 checksum deltas (sums of
# ~old+new per changed 16-bit word), L4 kind (0 none, 6 TCP, 17 UDP), then
# count x (position u16, value u8).
FLOW_TEMPLATE = struct.Struct("<HIIB")
FLOW_OVERWRITE = struct.Struct("<HB")
FLOW_KEY_LEN = 36
# An IP ID slot: a bucket of one namespace's ip_idents (kdp.net.ipident): its
# counter and tstamp (jiffies), both u32, and the bucket's 64-bit draw key.


# --- the components' interfaces ------------------------------------------------
# What each compiled component and its pure twin both provide; kdp.fast exports
# whichever was chosen, so callers may rely on these members only.
# tests/unit/fast/test_protocols.py checks both twins against them.

@runtime_checkable
class HeadersTwin(Protocol):
    """The header routines: kdp._fastpath and the module kdp.fast.headers."""

    IMPLEMENTATION: str

    def inet_checksum(self, data, initial: int = 0) -> int: ...
    def csum_replace(self, check: int, old: bytes, new: bytes) -> int: ...
    def parse_headers(self, frame) -> tuple: ...
    def parse_batch(self, frames) -> np.ndarray: ...
    def checksum_batch(self, frames, offsets, lengths) -> np.ndarray: ...


@runtime_checkable
class CtTableTwin(Protocol):
    """One namespace's conntrack table on integers: kdp._fastpath.CtTable and
    kdp.fast.conntrack.CtTable. Handles come from process()/related()/lookup()."""

    seed: int
    namespace: str

    def process(self, proto: int, src: int, dst: int, sport: int, dport: int, flags: int,
                now: float, *, prerouting: bool = True, checksum_ok: bool = True) -> CtVerdict: ...
    def related(self, outer_src: int, outer_dst: int, icmp_type: int, icmp_code: int, proto: int,
                src: int, dst: int, sport: int, dport: int, now: float, *,
                prerouting: bool = True, checksum_ok: bool = True) -> CtVerdict: ...
    def nat(self, handle: int, manip: str, now: float, min_ip: int | None = None,
            max_ip: int | None = None, min_port: int | None = None, max_port: int | None = None,
            *, random: bool = False, random_fully: bool = False,
            persistent: bool = False) -> bool: ...
    def null_binding(self, handle: int, manip: str, now: float) -> bool: ...
    def confirm(self, handle: int, now: float) -> bool: ...
    def discard(self, handle: int) -> None: ...
    def set_mark(self, handle: int, mark: int) -> None: ...
    def set_masq_dev(self, handle: int, dev: str | None) -> None: ...
    def entry(self, handle: int) -> dict | None: ...
    def remove(self, handle: int) -> None: ...
    def lookup(self, proto: int, src: int, dst: int, sport: int, dport: int,
               now: float) -> tuple[int, str] | None: ...
    def sweep(self, now: float) -> int: ...
    def flush(self) -> None: ...
    def export(self) -> list[dict]: ...
    def import_(self, items: list[dict]) -> None: ...
    def to_conntrack_l(self, now: float) -> str: ...
    @property
    def stats(self) -> dict: ...
    def __len__(self) -> int: ...
    def lookup_batch(self, flows) -> np.ndarray: ...
    def process_batch(self, flows, confirm: bool = True) -> np.ndarray: ...
    def memory(self) -> dict: ...


@runtime_checkable
class MatcherKernelTwin(Protocol):
    """Decisions over one kdp.fast.svcmatch.MatcherProgram:
    kdp._fastpath.MatcherKernel and kdp.fast.matcher.MatcherKernel."""

    def recent(self) -> dict[int, list[tuple[int, list[float]]]]: ...
    def decide(self, proto: int, src: int, dst: int, sport: int, dport: int, now: float,
               in_local: bool = False) -> tuple[int, int, int, int, int, int]: ...
    def decide_batch(self, flows: np.ndarray) -> np.ndarray: ...
    def decide_count(self, flows: np.ndarray, repeat: int = 1) -> tuple[int, int]: ...


@runtime_checkable
class FlowEngineTwin(Protocol):
    """The flow cache's replay engine: kdp._fastpath.FlowEngine and
    kdp.fast.flowengine.FlowEngine (constructed as FlowEngine(capture, text))."""

    def ct_new(self, value: float) -> int: ...
    def ct_get(self, slot: int) -> float: ...
    def ct_set(self, slot: int, value: float) -> None: ...
    def fdb_new(self, value: float) -> int: ...
    def fdb_get(self, slot: int) -> float: ...
    def fdb_set(self, slot: int, value: float) -> None: ...
    def ipid_new(self, counter: int, tstamp: int, key: int) -> int: ...
    def ipid_get(self, slot: int) -> tuple[int, int]: ...
    def ipid_set(self, slot: int, counter: int, tstamp: int) -> None: ...
    def sink_new(self) -> int: ...
    def sink_append(self, sink: int, t: float, data: bytes) -> None: ...
    def sink_take(self, sink: int) -> bytes: ...
    def buffered(self) -> int: ...
    def out_take(self) -> bytes: ...
    def set_carry_psh(self, on: bool) -> None: ...
    def add(self, key: bytes, prog: bytes, blob: bytes, rst: bytes, prefix: bytes,
            suffix: bytes, tail: bytes | None = None) -> int: ...
    def remove(self, eid: int) -> None: ...
    def take_hits(self, eid: int) -> tuple[int, float, int, int]: ...
    def take_dirty_slots(self) -> tuple[list[int], list[int], list[int]]: ...
    def take_dirty(self) -> tuple[list[int], list[int], list[int], list[int]]: ...
    def key(self, frame: bytes) -> bytes | None: ...
    def lookup(self, frame: bytes) -> int: ...
    def check(self, eid: int, now: float) -> bool: ...
    def commit(self, eid: int, frame: bytes, now: float) -> None: ...
    def out_append(self, data: bytes) -> None: ...
    def predict(self, eid: int, frame: bytes, now: float, index: int): ...
    def run(self, buf, pos: int, end: int, index: int, now: float, unit: float,
            big_endian: bool, limit: int = -1) -> tuple[int, int, int, float]: ...


# --- the compiled module's proof ----------------------------------------------

def check_compiled(mod) -> None:
    """Raise LayoutMismatch unless every C struct of the compiled module `mod`
    (kdp._fastpath; its descriptions in fast/layout.pxi) is exactly the record
    declared here, and its conntrack result codes and flow key length are ours.
    A mismatch is a build bug: LayoutMismatch is not an ImportError, so the
    selector refuses the module loudly instead of falling back to the twins."""
    check_layout("_fastpath.header_t", HEADER_DTYPE, mod.HEADER_STRUCT_SIZE,
                 mod.HEADER_STRUCT_OFFSETS, mod.HEADER_STRUCT_SIZES)
    for name, dtype, probe in (("m_rule_t", MATCH_RULE_DTYPE, mod.MATCH_RULE_STRUCT),
                               ("m_sp_t", MATCH_SP_DTYPE, mod.MATCH_SP_STRUCT),
                               ("m_ep_t", MATCH_EP_DTYPE, mod.MATCH_EP_STRUCT),
                               ("m_cidr_t", MATCH_CIDR_DTYPE, mod.MATCH_CIDR_STRUCT),
                               ("decision_t", DECISION_DTYPE, mod.DECISION_STRUCT),
                               ("ct_entry_t", CT_ENTRY_DTYPE, mod.CT_ENTRY_STRUCT),
                               ("ct_export_t", CT_EXPORT_DTYPE, mod.CT_EXPORT_STRUCT),
                               ("flow_t", FLOW_DTYPE, mod.FLOW_STRUCT),
                               ("ct_result_t", CT_RESULT_DTYPE, mod.CT_RESULT_STRUCT)):
        check_layout(f"_fastpath.{name}", dtype, *probe)
    if tuple(mod.CT_CODES) != (CT_OK, CT_INVALID, CT_DROP, CT_MISS):
        raise LayoutMismatch("conntrack result codes differ from kdp.fast.contract")
    if mod.FLOW_KEY_STRUCT_LEN != FLOW_KEY_LEN:
        raise LayoutMismatch("kdp.fast.contract.FLOW_KEY_LEN and the compiled flow engine disagree")
