# conntrack.nat: NAT bindings on conntrack entries (nf_nat_core.c) — the
# range a NAT target asks for, choosing the new tuple (keep the port when the
# reply tuple is free, the by-source mapping, address choice by jhash, port
# search from a keyed-hash offset), null bindings, and rewriting packets from
# an entry's binding (nf_nat_packet / nf_nat_icmp_reply_translation).
# Packet bytes are changed only through kdp.wire (incremental checksums).
from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from kdp.frozen import fast_init
from kdp.wire import ICMP, Packet, l4_checksum_of, rewrite_addr

from .events import Event
from .entry import (DST_NAT, DST_NAT_DONE, NAT_MASK, ORIGINAL, REPLY, SRC_NAT, SRC_NAT_DONE,
                    ConntrackEntry)
from .keyed import decision_point, fast_flow_hash, jhash2, reciprocal_scale
from .quoted import rewrite_quoted
from .table import ConntrackTable
from .tuples import PORT_PROTOS, PROTO_ICMP, Tuple

SRC, DST = "SRC", "DST"
MAX_ATTEMPTS = 128          # NF_NAT_MAX_ATTEMPTS


@fast_init
@dataclass(frozen=True, slots=True)
class NatRange:
    """struct nf_nat_range2 as a NAT target fills it."""

    min_ip: IPv4Address | None = None
    max_ip: IPv4Address | None = None
    min_port: int | None = None
    max_port: int | None = None
    random: bool = False
    random_fully: bool = False
    persistent: bool = False

    @property
    def map_ips(self) -> bool:
        return self.min_ip is not None

    @property
    def proto_specified(self) -> bool:
        return self.min_port is not None

    @property
    def random_all(self) -> bool:
        return self.random or self.random_fully


@fast_init
@dataclass(frozen=True, slots=True)
class NatContext:
    """Where the keyed-hash choices come from: the seed and the namespace."""

    table: ConntrackTable
    now: float
    seed: int = 0
    namespace: str = ""


def nat_initialized(e: ConntrackEntry, manip: str) -> bool:
    return bool(e.status & (SRC_NAT_DONE if manip == SRC else DST_NAT_DONE))


def setup_nat(cx: NatContext, e: ConntrackEntry, manip: str, rng: NatRange) -> bool:
    """nf_nat_setup_info(): bind the entry to a tuple in `rng`. Returns True
    when the binding changes addresses/ports (SNAT/DNAT status set)."""
    cur = e.reply.invert()
    new = _unique_tuple(cx, e, cur, rng, manip)
    changed = new != cur
    if changed:
        e.reply = new.invert()
        e.status |= SRC_NAT if manip == SRC else DST_NAT
    e.status |= SRC_NAT_DONE if manip == SRC else DST_NAT_DONE
    return changed


def null_binding(cx: NatContext, e: ConntrackEntry, manip: str) -> bool:
    """nf_nat_alloc_null_binding(): no NAT rule matched; keep the address but
    still make the reply tuple unique (may move the source port)."""
    ip = e.reply.dst if manip == SRC else e.reply.src
    return setup_nat(cx, e, manip, NatRange(ip, ip))


# --- choosing the tuple ----------------------------------------------------

def _used(cx: NatContext, t: Tuple, e: ConntrackEntry) -> bool:
    inv = t.invert()
    return inv is not None and cx.table.tuple_taken(inv, e, cx.now)


def _key(t: Tuple, manip: str) -> int:
    if t.proto == PROTO_ICMP:
        return t.sport
    return t.sport if manip == SRC else t.dport


def _with_key(t: Tuple, manip: str, value: int) -> Tuple:
    if t.proto == PROTO_ICMP or manip == SRC:
        return Tuple(t.proto, t.src, t.dst, value, t.dport)
    return Tuple(t.proto, t.src, t.dst, t.sport, value)


def _l4_in_range(t: Tuple, manip: str, rng: NatRange) -> bool:
    if t.proto != PROTO_ICMP and t.proto not in PORT_PROTOS:
        return True
    return rng.min_port <= _key(t, manip) <= rng.max_port


def _in_range(t: Tuple, rng: NatRange) -> bool:
    """nf_in_range() for a source manip."""
    if rng.map_ips and not int(rng.min_ip) <= int(t.src) <= int(rng.max_ip):
        return False
    return not rng.proto_specified or _l4_in_range(t, SRC, rng)


def _appropriate_src(cx: NatContext, t: Tuple, rng: NatRange) -> Tuple | None:
    """find_appropriate_src(): reuse the mapping an existing connection from the
    same source address and port got (endpoint-independent mapping)."""
    for other in cx.table.by_source(t.proto, t.src, t.sport):
        mapped = other.reply.invert()
        if mapped is None:
            continue
        result = Tuple(t.proto, mapped.src, t.dst, mapped.sport, t.dport)
        if _in_range(result, rng):
            return result
    return None


def _best_ip(t: Tuple, rng: NatRange, manip: str) -> Tuple:
    """find_best_ips_proto(): one address, or jhash of the source (and of the
    destination unless --persistent) scaled into the address range."""
    if not rng.map_ips:
        return t
    lo, hi = int(rng.min_ip), int(rng.max_ip)
    if lo == hi:
        ip = rng.min_ip
    else:
        initval = 0 if rng.persistent else int.from_bytes(t.dst.packed, "little")
        j = jhash2([int.from_bytes(t.src.packed, "little"), 0, 0, 0], initval)
        ip = IPv4Address(lo + reciprocal_scale(j, hi - lo + 1))
    return Tuple(t.proto, ip, t.dst, t.sport, t.dport) if manip == SRC else \
        Tuple(t.proto, t.src, ip, t.sport, t.dport)


def _unique_tuple(cx: NatContext, e: ConntrackEntry, cur: Tuple, rng: NatRange,
                  manip: str) -> Tuple:
    """get_unique_tuple()."""
    if manip == SRC and not rng.random_all:
        if _in_range(cur, rng):
            if not _used(cx, cur, e):
                return cur
        else:
            found = _appropriate_src(cx, cur, rng)
            if found is not None and not _used(cx, found, e):
                return found
    t = _best_ip(cur, rng, manip)
    if not rng.random_all:
        if rng.proto_specified:
            if _l4_in_range(t, manip, rng) and (rng.min_port == rng.max_port
                                                or not _used(cx, t, e)):
                return t
        elif not _used(cx, t, e):
            return t
    return _pick_port(cx, e, t, rng, manip)


def _pick_port(cx: NatContext, e: ConntrackEntry, t: Tuple, rng: NatRange, manip: str) -> Tuple:
    """nf_nat_l4proto_unique_tuple(): search the port range starting at an
    offset. The kernel draws the offset from get_random_u16(); kdp takes it
    from flow_hash(seed, point, original tuple), the decision point naming
    (namespace, manip, round)."""
    if t.proto == PROTO_ICMP:
        lo, size = (0, 65536) if not rng.proto_specified else \
            (rng.min_port, rng.max_port - rng.min_port + 1)
    elif t.proto in PORT_PROTOS:
        if not rng.proto_specified:
            if manip == DST:
                return t
            port = _key(t, manip)
            if port < 512:
                lo, size = 1, 511
            elif port < 1024:
                lo, size = 600, 1023 - 600 + 1
            else:
                lo, size = 1024, 65535 - 1024 + 1
        else:
            lo, hi = sorted((rng.min_port, rng.max_port))
            size = hi - lo + 1
    else:
        return t
    rnd = 0

    def offset() -> int:
        if rng.random_all or manip != DST:
            o = e.orig
            point = decision_point("nat-port", cx.namespace, manip, rnd)
            return fast_flow_hash(cx.seed, point, o.proto, o.src._ip, o.dst._ip, o.sport, o.dport) & 0xFFFF
        return 0

    off = offset()
    attempts = min(size, MAX_ATTEMPTS)
    cand = t
    while True:
        for _ in range(attempts):
            cand = _with_key(t, manip, lo + off % size)
            if not _used(cx, cand, e):
                return cand
            off = (off + 1) & 0xFFFF
        if attempts >= size or attempts < 16:
            return cand          # every try was taken: confirm will see the clash
        attempts //= 2
        rnd += 1
        off = offset()


# --- rewriting packets from a binding -----------------------------------------

def _statusbit(manip: str, direction: str) -> int:
    bit = SRC_NAT if manip == SRC else DST_NAT
    return bit ^ NAT_MASK if direction == REPLY else bit


def _ep(ip: IPv4Address, port: int | None) -> str:
    return f"{ip}" if port is None else f"{ip}:{port}"


class _Endpoint:
    """ip[:port] of an event, formatted when the event's text is read."""

    __slots__ = ("ip", "port")

    def __init__(self, ip: IPv4Address, port: int | None) -> None:
        self.ip, self.port = ip, port

    def __format__(self, spec: str) -> str:
        return _ep(self.ip, self.port)


def _kind(manip: str, direction: str) -> str:
    if direction == ORIGINAL:
        return "snat" if manip == SRC else "dnat"
    return "un-dnat" if manip == SRC else "un-snat"


def manip_packet(pkt: Packet, e: ConntrackEntry, direction: str,
                 manip: str) -> tuple[Packet, str | None]:
    """nf_nat_packet(): rewrite this hook's side (source at POSTROUTING/INPUT,
    destination at PREROUTING/OUTPUT) from the entry, for either direction."""
    if not e.status & _statusbit(manip, direction):
        return pkt, None
    other = e.reply if direction == ORIGINAL else e.orig
    target = other.invert()
    ip, l4 = pkt.ip, pkt.l4
    ports = target.proto in PORT_PROTOS and l4 is not None
    icmp = isinstance(l4, ICMP)
    if manip == SRC:
        old = (ip.src, l4.sport if ports else None)
        new_pkt = rewrite_addr(pkt, src=target.src,
                               sport=target.sport if (ports or icmp) else None)
        new = (target.src, target.sport if ports else None)
    else:
        old = (ip.dst, l4.dport if ports else None)
        new_pkt = rewrite_addr(pkt, dst=target.dst, dport=target.dport if ports else None,
                               sport=target.sport if icmp else None)
        new = (target.dst, target.dport if ports else None)
    if new_pkt == pkt:
        return pkt, None
    return new_pkt, Event("nat {} {} -> {}", _kind(manip, direction), _Endpoint(*old), _Endpoint(*new))


def icmp_reply_translation(pkt: Packet, e: ConntrackEntry, direction: str,
                           manip: str) -> tuple[Packet | None, str | None]:
    """nf_nat_icmp_reply_translation(): an ICMP error RELATED to a NATed
    entry gets the quoted packet translated back (inner addresses/ports with
    their checksums, then a full ICMP checksum) and its outer address
    rewritten. Returns (None, why) when the kernel would drop it."""
    if not e.status & _statusbit(manip, direction):
        return pkt, None
    icmp = pkt.l4
    if l4_checksum_of(pkt.ip, icmp) != icmp.checksum:
        return None, "nat: bad icmp checksum"
    other = e.reply if direction == ORIGINAL else e.orig
    inner_manip = DST if manip == SRC else SRC
    payload = rewrite_quoted(icmp.payload, other, inner_manip == SRC)
    if payload is None:
        return pkt, None
    icmp = replace(icmp, payload=payload)
    icmp = replace(icmp, checksum=l4_checksum_of(pkt.ip, icmp))
    pkt = replace(pkt, l4=icmp)
    target = other.invert() or Tuple(other.proto, other.dst, other.src)
    if manip == SRC:
        old, pkt2 = pkt.ip.src, rewrite_addr(pkt, src=target.src)
        new = target.src
    else:
        old, pkt2 = pkt.ip.dst, rewrite_addr(pkt, dst=target.dst)
        new = target.dst
    return pkt2, (f"nat related icmp: quoted {other} restored, outer "
                  f"{'src' if manip == SRC else 'dst'} {old} -> {new}")
