# fast.conntrack: the pure-Python twin of the compiled conntrack table
# (kdp._fastpath.CtTable, in fast/conntrack*.pxi). It *is* the reference: every call goes through kdp.conntrack
# (ConntrackTable, conntrack_in, setup_nat, null_binding, confirm) on a packet
# built from the integers the compiled API takes, so the two twins can be run
# side by side on the same calls and compared (exports, stats, verdicts).
# Selected by kdp.fast (KDP_NO_EXTENSIONS=1 or no extension); holds no
# conntrack logic of its own and must not grow any.
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import numpy as np

from kdp.wire import ICMP_ERROR_TYPES

from .contract import (CT_DROP, CT_INVALID, CT_MISS, CT_OK, CT_RESULT_DTYPE, CTINFOS, DIRECTIONS,
                       FLOW_DTYPE, CtVerdict, check_nat_args,
                       check_process_args)

IMPLEMENTATION = "python"
_ETH = None


def _packet(proto: int, src: int, dst: int, sport: int, dport: int, flags: int,
            checksum_ok: bool, payload: bytes = b""):
    """A wire.Packet carrying this tuple, with right (or deliberately wrong) checksums."""
    from kdp import wire
    global _ETH
    if _ETH is None:
        _ETH = wire.Ether("02:00:00:00:00:02", "02:00:00:00:00:01", wire.ETH_P_IP)
    ip = wire.IPv4(IPv4Address(src), IPv4Address(dst), proto)
    if proto == wire.PROTO_TCP:
        l4 = wire.TCP(sport, dport, flags=flags)
    elif proto == wire.PROTO_UDP:
        l4 = wire.UDP(sport, dport, payload=b"x")
    elif proto == wire.PROTO_ICMP:
        l4 = wire.ICMP(dport >> 8, dport & 0xFF, rest=(sport << 16) | 1, payload=payload)
    else:
        l4 = None
    pkt = wire.finalize(wire.Packet(_ETH, ip=ip, l4=l4))
    if not checksum_ok and pkt.l4 is not None:
        bad = pkt.l4.checksum ^ 0x8000 or 1
        pkt = replace(pkt, l4=replace(pkt.l4, checksum=bad))
    return pkt


def _quoted(proto: int, src: int, dst: int, sport: int, dport: int) -> bytes:
    """The first bytes of a packet as an ICMP error quotes it (IP header + 8)."""
    import struct
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, proto, 0,
                      IPv4Address(src).packed, IPv4Address(dst).packed)
    if proto == 1:
        l4 = struct.pack("!BBHHH", dport >> 8, dport & 0xFF, 0, sport, 1)
    elif proto in (6, 17, 132, 33, 136):
        l4 = struct.pack("!HHI", sport, dport, 0)
    else:
        l4 = b"\x00" * 8
    return hdr + l4


class CtTable:
    """The integer API of the compiled conntrack table over the reference one.

    Handles are entry ids. An entry created by process() stays pending until
    confirm() (inserted, or dead after a clash) or discard()."""

    def __init__(self, max_entries: int = 262144, timeouts=None, *, buckets: int | None = None,
                 tcp_loose: bool = True, checksum: bool = True, seed: int = 0,
                 namespace: str = ""):
        from kdp.conntrack import ConntrackTable
        self.table = ConntrackTable(max_entries, timeouts, buckets=buckets, tcp_loose=tcp_loose,
                                    checksum=checksum, seed=seed)
        self.seed, self.namespace = seed, namespace
        self._pending: dict[int, object] = {}

    # --- per packet ----------------------------------------------------------
    def process(self, proto: int, src: int, dst: int, sport: int, dport: int, flags: int,
                now: float, *, prerouting: bool = True, checksum_ok: bool = True) -> CtVerdict:
        """nf_conntrack_in() for a packet with this tuple (not an ICMP error)."""
        from kdp.conntrack import conntrack_in
        check_process_args(proto, dport)
        pkt = _packet(proto, src, dst, sport, dport, flags, checksum_ok)
        return self._verdict(conntrack_in(self.table, pkt, now, prerouting=prerouting))

    def related(self, outer_src: int, outer_dst: int, icmp_type: int, icmp_code: int,
                proto: int, src: int, dst: int, sport: int, dport: int, now: float, *,
                prerouting: bool = True, checksum_ok: bool = True) -> CtVerdict:
        """An ICMP error (type 3/4/5/11/12) quoting a packet with this tuple."""
        from kdp.conntrack import conntrack_in
        pkt = _packet(1, outer_src, outer_dst, 0, (icmp_type << 8) | icmp_code, 0, checksum_ok,
                      payload=_quoted(proto, src, dst, sport, dport))
        return self._verdict(conntrack_in(self.table, pkt, now, prerouting=prerouting))

    def _verdict(self, r) -> CtVerdict:
        e = r.entry
        if e is None:
            return CtVerdict(None, None, None, None, False, r.drop, r.invalid, None, 0)
        if r.new:
            self._pending[e.id] = e
        return CtVerdict(e.id, e.id, r.direction, r.ctinfo, r.new, None, None,
                         e.tcp.state if e.tcp is not None else None, e.status)

    def _entry(self, handle: int):
        e = self._pending.get(handle)
        return e if e is not None else self.table._entries.get(handle)

    def _pending_entry(self, handle: int):
        """The entry NAT may bind: pending (unconfirmed), or None when gone."""
        e = self._entry(handle)
        if e is not None and self.table._entries.get(e.id) is e:
            raise ValueError("NAT bindings are set up before the entry is confirmed")
        return e

    def nat(self, handle: int, manip: str, now: float, min_ip: int | None = None,
            max_ip: int | None = None, min_port: int | None = None, max_port: int | None = None,
            *, random: bool = False, random_fully: bool = False, persistent: bool = False) -> bool:
        """nf_nat_setup_info() on a pending entry; True when the tuple changed."""
        from kdp.conntrack import NatContext, NatRange, setup_nat
        check_nat_args(manip, min_ip, max_ip, min_port, max_port)
        e = self._pending_entry(handle)
        if e is None:
            return False
        rng = NatRange(None if min_ip is None else IPv4Address(min_ip),
                       None if max_ip is None else IPv4Address(max_ip),
                       min_port, max_port, random, random_fully, persistent)
        return setup_nat(NatContext(self.table, now, self.seed, self.namespace), e, manip, rng)

    def null_binding(self, handle: int, manip: str, now: float) -> bool:
        from kdp.conntrack import NatContext, null_binding
        check_nat_args(manip)
        e = self._pending_entry(handle)
        if e is None:
            return False
        return null_binding(NatContext(self.table, now, self.seed, self.namespace), e, manip)

    def confirm(self, handle: int, now: float) -> bool:
        e = self._pending.pop(handle, None)
        if e is None:
            return True          # confirmed already, or removed (CONFIRMED|DYING)
        return self.table.confirm(e, now)

    def discard(self, handle: int) -> None:
        """Forget a pending entry whose packet was dropped before confirm."""
        self._pending.pop(handle, None)

    def set_mark(self, handle: int, mark: int) -> None:
        e = self._entry(handle)
        if e is not None:
            e.mark = mark & 0xFFFFFFFF

    def set_masq_dev(self, handle: int, dev: str | None) -> None:
        e = self._entry(handle)
        if e is not None:
            e.masq_dev = dev

    def entry(self, handle: int) -> dict | None:
        e = self._entry(handle)
        return None if e is None else e.to_dict()

    def remove(self, handle: int) -> None:
        e = self._entry(handle)
        if e is not None:
            self.table.remove(e)

    # --- the table -----------------------------------------------------------
    def lookup(self, proto: int, src: int, dst: int, sport: int, dport: int,
               now: float) -> tuple[int, str] | None:
        from kdp.conntrack import Tuple
        hit = self.table.lookup(Tuple(proto, IPv4Address(src), IPv4Address(dst), sport, dport), now)
        return None if hit is None else (hit[0].id, hit[1])

    def sweep(self, now: float) -> int:
        return self.table.sweep(now)

    def flush(self) -> None:
        self.table.flush()

    def export(self) -> list[dict]:
        return self.table.export()

    def import_(self, items: list[dict]) -> None:
        self.table.import_(items)

    def to_conntrack_l(self, now: float) -> str:
        return self.table.to_conntrack_l(now)

    @property
    def stats(self) -> dict:
        return dict(self.table.stats)

    def __len__(self) -> int:
        return len(self.table)

    # --- batches (FLOW_DTYPE in, CT_RESULT_DTYPE out), as the compiled table --------
    def _rows(self, flows):
        arr = np.ascontiguousarray(flows)
        if arr.dtype != FLOW_DTYPE or arr.ndim != 1:
            raise TypeError(f"flows must be a 1-d array of dtype {FLOW_DTYPE}, not {arr.dtype}")
        return arr.tolist()

    def lookup_batch(self, flows) -> np.ndarray:
        from kdp.conntrack.tcp import STATES
        out = np.zeros(len(flows), dtype=CT_RESULT_DTYPE)
        for i, (src, dst, sport, dport, proto, _fl, _loc, _ok, now) in enumerate(self._rows(flows)):
            hit = self.lookup(proto, src, dst, sport, dport, now)
            if hit is None:
                out[i] = (-1, 0, 0, -1, -1, 0, CT_MISS, -1)
                continue
            e = self.table._entries[hit[0]]
            state = STATES.index(e.tcp.state) if e.tcp is not None else -1
            out[i] = (e.id, e.id, e.status, -1, DIRECTIONS.index(hit[1]), 0, CT_OK, state)
        return out

    def process_batch(self, flows, confirm: bool = True) -> np.ndarray:
        from kdp.conntrack.tcp import STATES
        out = np.zeros(len(flows), dtype=CT_RESULT_DTYPE)
        for i, (src, dst, sport, dport, proto, flags, local, ok, now) in \
                enumerate(self._rows(flows)):
            if proto == 1 and (dport >> 8) in ICMP_ERROR_TYPES:
                out[i] = (-1, 0, 0, -1, -1, 0, CT_MISS, -1)
                continue
            v = self.process(proto, src, dst, sport, dport, flags, now, prerouting=not local,
                             checksum_ok=bool(ok))
            if v.handle is None:
                out[i] = (-1, 0, 0, -1, -1, 0, CT_DROP if v.drop else CT_INVALID, -1)
                continue
            code = CT_OK
            if confirm and v.new and not self.confirm(v.handle, now):
                code = CT_DROP
            out[i] = (v.handle, v.id, v.status, CTINFOS.index(v.ctinfo),
                      DIRECTIONS.index(v.direction), int(v.new), code,
                      STATES.index(v.state) if v.state is not None else -1)
        return out

    def memory(self) -> dict:
        """The compiled table's byte counts; the reference keeps Python objects."""
        return {"entry_size": None}
