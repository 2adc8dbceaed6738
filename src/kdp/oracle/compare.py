# oracle.compare: kdp's per-device captures against the kernel's. Per device,
# the frames each side saw are paired (same direction and flow signature, in
# order; then a looser signature so a changed field shows as a field diff
# rather than a missing frame), the values the kernel draws at random are
# learned from the kernel capture and mapped onto kdp's (TCP ISN of a SYN-ACK
# and every seq/ack after it, TCP timestamp clocks, IP IDs of packets without
# DF; checksums covering them are recomputed when the kernel's were valid),
# and every header field is compared. Nothing here touches a namespace.
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from .. import wire
from ..checksum import inet_checksum
from ..net.tcpstate import parse_tcp_options
from ..wire import ICMP, TCP, UDP, Packet


@dataclass
class Frame:
    ts: float
    direction: str              # in | out
    raw: bytes
    pkt: Packet | None = None   # None: not parseable by kdp.wire
    error: str | None = None

    @classmethod
    def of(cls, ts: float, raw: bytes, direction: str) -> "Frame":
        try:
            return cls(ts, direction, raw, wire.parse(raw))
        except wire.MalformedFrame as e:
            return cls(ts, direction, raw, None, str(e))

    def summary(self) -> str:
        if self.pkt is None:
            return f"unparsed {len(self.raw)} bytes ({self.error})"
        return self.pkt.summary()


@dataclass
class FieldResult:
    name: str
    kdp: object
    kernel: object
    status: str                 # equal | differ | mapped
    note: str = ""


@dataclass
class Pair:
    device: tuple[str, str]
    kdp_index: int | None
    kernel_index: int | None
    kdp: Frame | None
    kernel: Frame | None
    fields: list[FieldResult] = field(default_factory=list)

    @property
    def kind(self) -> str:
        if self.kdp is None:
            return "extra-in-kernel"
        if self.kernel is None:
            return "missing-in-kernel"
        return "differ" if any(f.status == "differ" for f in self.fields) else "agree"


@dataclass
class Mapper:
    """Kernel-random values learned from the kernel capture, per scenario."""

    isn: dict = field(default_factory=dict)      # (src, sport, dst, dport) -> kdp - kernel
    ts: dict = field(default_factory=dict)       # (src ip, dst ip) -> {kernel tsval: kdp tsval}
    ipid: dict = field(default_factory=dict)     # (src, dst, proto, kernel id) -> kdp id
    # (src, dst, proto, kdp id) -> the kernel id mapped to it: the map is one to one,
    # so two packets the kernel told apart may not share one kdp ID (nor the reverse)
    ipid_rev: dict = field(default_factory=dict)
    fixed_senders: set = field(default_factory=set)   # (ip, port) whose values are injected as is
    fixed_ids: set = field(default_factory=set)       # (src, dst, proto, id) of injected packets
    used: dict = field(default_factory=dict)     # description -> count (for the report)

    def note(self, what: str) -> None:
        self.used[what] = self.used.get(what, 0) + 1


def _key(f: Frame, loose: int = 0) -> tuple:
    p = f.pkt
    if p is None:
        return ("raw", f.direction, f.raw[12:14])
    if p.arp is not None:
        return ("arp", f.direction, p.arp.op) + ((p.arp.spa, p.arp.tpa), (p.arp.spa,), (p.arp.tpa,))[loose]
    if p.ip is None:
        return ("eth", f.direction, p.eth.type)
    k = ("ip", f.direction, p.ip.proto)
    if loose >= 2:
        return k
    k += (p.ip.src, p.ip.dst)
    if loose:
        return k
    if isinstance(p.l4, TCP):
        return k + (p.l4.sport, p.l4.dport, p.l4.flags)
    if isinstance(p.l4, UDP):
        return k + (p.l4.sport, p.l4.dport)
    if isinstance(p.l4, ICMP):
        return k + (p.l4.type, p.l4.code)
    return k


def pair_frames(device, kdp: list[Frame], kern: list[Frame]) -> list[Pair]:
    """Pair the two ordered lists: strict signature first, then looser ones."""
    used_k: set[int] = set()
    match: dict[int, int] = {}
    for loose in (0, 1, 2):
        for i, f in enumerate(kdp):
            if i in match:
                continue
            k = _key(f, loose)
            for j, g in enumerate(kern):
                if j not in used_k and _key(g, loose) == k:
                    match[i] = j
                    used_k.add(j)
                    break
    pairs = [Pair(device, i, match.get(i), f, kern[match[i]] if i in match else None)
             for i, f in enumerate(kdp)]
    for j, g in enumerate(kern):
        if j not in used_k:
            pairs.append(Pair(device, None, j, None, g))
    return pairs


# Two segments of one TCP connection, one direction, one of them a pure ACK (it takes
# no sequence space), that the kernel sent this close together are not ordered: the
# pure ACK comes from softirq context (quick or delayed ACK) and the data from the
# application's write, often on another CPU, and veth's netif_rx() queues each on its
# own CPU's backlog, so under load either may reach the capture first. Neither caused
# the other; kdp's virtual clock draws one order. Everything else keeps its order:
# frames of different senders, two segments that both take sequence space, a frame
# that answers another, and any two frames sent further apart.
CONCURRENT_SLACK = 0.01


def _tcp_seq_space(p: Packet) -> int:
    return len(p.l4.payload) + bool(p.l4.flags & wire.SYN) + bool(p.l4.flags & wire.FIN)


def concurrent(a: Frame, b: Frame) -> bool:
    """Whether the kernel's order between its frames a and b is a matter of timing
    (see CONCURRENT_SLACK), not of cause."""
    pa, pb = a.pkt, b.pkt
    if pa is None or pb is None or pa.ip is None or pb.ip is None or a.direction != b.direction:
        return False
    if not (isinstance(pa.l4, TCP) and isinstance(pb.l4, TCP)):
        return False
    if (pa.ip.src, pa.l4.sport, pa.ip.dst, pa.l4.dport) != (pb.ip.src, pb.l4.sport, pb.ip.dst, pb.l4.dport):
        return False
    if _tcp_seq_space(pa) and _tcp_seq_space(pb):
        return False
    return abs(a.ts - b.ts) <= CONCURRENT_SLACK


def order_problems(pairs: list[Pair]) -> list[str]:
    """Pairs whose relative order differs between kdp and the kernel, but for two frames
    the kernel sent concurrently (concurrent()): for each kdp frame, the nearest earlier
    kdp frame the kernel put after it."""
    matched = sorted((p.kdp_index, p.kernel_index, p.kernel) for p in pairs if p.kdp and p.kernel)
    out = []
    for n, (i2, j2, k2) in enumerate(matched):
        for i1, j1, k1 in reversed(matched[:n]):
            if j1 > j2 and not concurrent(k1, k2):
                out.append(f"kdp frame #{i2} comes after #{i1}, the kernel's #{j2} before #{j1}")
                break
    return out


# --- learning and applying the kernel's random values -------------------------------

def _ts(pkt: Packet):
    if isinstance(pkt.l4, TCP):
        return parse_tcp_options(pkt.l4.options).get("ts")
    return None


def learn(m: Mapper, k: Packet, r: Packet) -> None:
    """Learn kernel-random values from a (kdp, kernel) pair of the same frame."""
    if k.ip is None or r.ip is None:
        return
    if isinstance(k.l4, TCP) and isinstance(r.l4, TCP):
        conn = (r.ip.src, r.l4.sport, r.ip.dst, r.l4.dport)
        sender = (r.ip.src, r.l4.sport)
        if sender not in m.fixed_senders:
            if r.l4.flags & wire.SYN and conn not in m.isn:
                m.isn[conn] = (k.l4.seq - r.l4.seq) & 0xFFFFFFFF
            kts, rts = _ts(k), _ts(r)
            if kts and rts:      # a clock with a random offset: mapped value by value
                m.ts.setdefault((r.ip.src, r.ip.dst), {}).setdefault(rts[0], kts[0])
    key = (r.ip.src, r.ip.dst, r.ip.proto, r.ip.ident)
    if r.ip.ident == k.ip.ident:
        m.ipid_rev.setdefault((r.ip.src, r.ip.dst, r.ip.proto, k.ip.ident), r.ip.ident)
    elif key not in m.fixed_ids and r.ip.ident != 0 and key not in m.ipid:
        rev = (r.ip.src, r.ip.dst, r.ip.proto, k.ip.ident)
        if m.ipid_rev.setdefault(rev, r.ip.ident) == r.ip.ident:
            m.ipid[key] = k.ip.ident
        # else: kdp gave this ID to another packet the kernel numbered apart
        # (a repeated ID): left unmapped, it shows as a difference


def _fix_tcp_options(opts: bytes, tsval_map: dict, tsecr_map: dict) -> bytes:
    out = bytearray(opts)
    for kind, i, ln in wire.tcp_options(out):
        if kind == 8 and ln == 10 and i + 10 <= len(out):
            val, ecr = struct.unpack("!II", out[i + 2:i + 10])
            val = tsval_map.get(val, val)
            ecr = tsecr_map.get(ecr, ecr) if ecr else ecr
            out[i + 2:i + 10] = struct.pack("!II", val, ecr)
    return bytes(out)


def normalise(m: Mapper, r: Packet) -> tuple[Packet, dict[str, str]]:
    """The kernel packet with its random values replaced by kdp's; returns the
    packet and {field: note} for every field that was mapped."""
    mapped: dict[str, str] = {}
    if r.ip is None:
        return r, mapped
    ip_ok, l4_ok = wire.ip_checksum_ok(r), wire.l4_checksum_ok(r)
    ip, l4 = r.ip, r.l4
    idkey = (ip.src, ip.dst, ip.proto, ip.ident)
    if idkey in m.ipid and m.ipid[idkey] != ip.ident:
        mapped["ip.id"] = f"kernel hashed IP ID {ip.ident} mapped"
        ip = replace(ip, ident=m.ipid[idkey])
    if isinstance(l4, TCP):
        fwd = m.isn.get((ip.src, l4.sport, ip.dst, l4.dport))
        rev = m.isn.get((ip.dst, l4.dport, ip.src, l4.sport))
        if fwd:
            mapped["tcp.seq"] = f"kernel ISN mapped (offset {fwd})"
            l4 = replace(l4, seq=(l4.seq + fwd) & 0xFFFFFFFF)
        if rev and l4.flags & wire.ACK:
            mapped["tcp.ack"] = f"peer's kernel ISN mapped (offset {rev})"
            l4 = replace(l4, ack=(l4.ack + rev) & 0xFFFFFFFF)
        tsv, tse = m.ts.get((ip.src, ip.dst), {}), m.ts.get((ip.dst, ip.src), {})
        ts = _ts(r)
        if ts and (ts[0] in tsv or (ts[1] and ts[1] in tse)):
            new_opts = _fix_tcp_options(l4.options, tsv, tse)
            if new_opts != l4.options:
                mapped["tcp.options"] = "kernel TCP timestamp clock (random offset) mapped"
                l4 = replace(l4, options=new_opts)
    elif isinstance(l4, ICMP) and l4.type in wire.ICMP_ERROR_TYPES:
        new_payload = _normalise_quote(m, l4.payload)
        if new_payload != l4.payload:
            mapped["icmp.payload"] = "random fields of the quoted packet mapped"
            l4 = replace(l4, payload=new_payload)
    out = Packet(r.eth, ip=ip, l4=l4, payload=r.payload)
    if mapped:
        if l4 is not None and l4_ok and (l4 is not r.l4 or ip.ident != r.ip.ident):
            fixed = wire.finalize(out)
            out = replace(out, l4=fixed.l4)
        if ip_ok:
            l4_len = len(wire.emit_l4(out.l4)) if out.l4 is not None else len(out.payload)
            out = replace(out, ip=replace(out.ip, checksum=inet_checksum(wire.ip_header(out.ip, l4_len, 0))))
    return out, mapped


def _normalise_quote(m: Mapper, q: bytes) -> bytes:
    if len(q) < 20 or q[0] >> 4 != 4:
        return q
    ihl = (q[0] & 0xF) * 4
    ident, ff = struct.unpack("!HH", q[4:8])
    src, dst, proto = IPv4Address(q[12:16]), IPv4Address(q[16:20]), q[9]
    out = bytearray(q)
    key = (src, dst, proto, ident)
    if key in m.ipid:
        out[4:6] = struct.pack("!H", m.ipid[key])
    if proto == wire.PROTO_TCP and len(q) >= ihl + 8:
        sport, dport, seq = struct.unpack("!HHI", q[ihl:ihl + 8])
        d = m.isn.get((src, sport, dst, dport))
        if d:
            out[ihl + 4:ihl + 8] = struct.pack("!I", (seq + d) & 0xFFFFFFFF)
    if bytes(out) != q and inet_checksum(q[:ihl]) == 0:
        out[10:12] = b"\0\0"
        out[10:12] = struct.pack("!H", inet_checksum(bytes(out[:ihl])))
    return bytes(out)


# --- field comparison --------------------------------------------------------

def _raw_lengths(raw: bytes) -> dict:
    d = {"frame.len": len(raw)}
    if len(raw) >= 34 and raw[12:14] == b"\x08\x00":
        ihl = (raw[14] & 0xF) * 4
        total = struct.unpack("!H", raw[16:18])[0]
        d["ip.len"] = total
        d["ip.ihl"] = ihl
        d["frame.trailer"] = raw[14 + total:].hex()
        if raw[23] == wire.PROTO_UDP and len(raw) >= 14 + ihl + 8:
            d["udp.len"] = struct.unpack("!H", raw[14 + ihl + 4:14 + ihl + 6])[0]
    return d


def packet_fields(p: Packet, raw: bytes) -> dict[str, object]:
    d: dict[str, object] = {"eth.dst": p.eth.dst, "eth.src": p.eth.src, "eth.type": f"0x{p.eth.type:04x}"}
    d.update(_raw_lengths(raw))
    if p.arp is not None:
        a = p.arp
        d.update({"arp.op": a.op, "arp.sha": a.sha, "arp.spa": str(a.spa), "arp.tha": a.tha,
                  "arp.tpa": str(a.tpa)})
        return d
    if p.ip is None:
        d["payload"] = p.payload.hex()
        return d
    ip = p.ip
    d.update({"ip.src": str(ip.src), "ip.dst": str(ip.dst), "ip.proto": ip.proto, "ip.ttl": ip.ttl,
              "ip.id": ip.ident, "ip.flags": ip.flags, "ip.frag": ip.frag, "ip.tos": f"0x{ip.tos:02x}",
              "ip.checksum": f"0x{ip.checksum:04x}", "ip.options": ip.options.hex()})
    l4 = p.l4
    if isinstance(l4, TCP):
        d.update({"tcp.sport": l4.sport, "tcp.dport": l4.dport, "tcp.seq": l4.seq, "tcp.ack": l4.ack,
                  "tcp.flags": wire.tcp_flag_str(l4.flags), "tcp.window": l4.window,
                  "tcp.checksum": f"0x{l4.checksum:04x}", "tcp.urg": l4.urg,
                  "tcp.options": l4.options.hex(), "tcp.payload": l4.payload.hex()})
    elif isinstance(l4, UDP):
        d.update({"udp.sport": l4.sport, "udp.dport": l4.dport, "udp.checksum": f"0x{l4.checksum:04x}",
                  "udp.payload": l4.payload.hex()})
    elif isinstance(l4, ICMP):
        d.update({"icmp.type": l4.type, "icmp.code": l4.code, "icmp.checksum": f"0x{l4.checksum:04x}",
                  "icmp.rest": f"0x{l4.rest:08x}", "icmp.payload": l4.payload.hex()})
    else:
        d["ip.payload"] = p.payload.hex()
    return d


CHECKSUM_COVERS = {"ip.checksum": ("ip.id",), "tcp.checksum": ("tcp.seq", "tcp.ack", "tcp.options", "ip.id"),
                   "icmp.checksum": ("icmp.payload",)}


def compare_pair(m: Mapper, pair: Pair) -> None:
    k, r = pair.kdp, pair.kernel
    if k.pkt is None or r.pkt is None:
        same = k.raw == r.raw
        pair.fields = [FieldResult("frame.bytes", k.raw.hex(), r.raw.hex(), "equal" if same else "differ")]
        return
    learn(m, k.pkt, r.pkt)
    norm, mapped = normalise(m, r.pkt)
    kf = packet_fields(k.pkt, k.raw)
    rf_orig = packet_fields(r.pkt, r.raw)
    rf = packet_fields(norm, r.raw)
    for name in mapped:
        m.note(name)
    for name in list(dict.fromkeys(list(kf) + list(rf))):
        kv, rv = kf.get(name), rf.get(name)
        if name in mapped or (name in CHECKSUM_COVERS and any(c in mapped for c in CHECKSUM_COVERS[name])
                              and rf_orig.get(name) != rv):
            status = "mapped" if kv == rv else "differ"
            note = mapped.get(name) or "recomputed after mapping"
            if name == "ip.id" and kv == 0:
                status, note = "differ", ("the kernel writes a nonzero IP ID here (ip_select_ident: hashed "
                                          "for no-DF or DF+ignore_df packets such as UDP datagrams, a random-"
                                          "seeded per-socket counter for connected sockets); kdp writes 0")
                rv = rf_orig.get(name)
            elif rf_orig.get(name) != rv and name != "ip.id":
                note += f"; kernel's own value {rf_orig.get(name)}"
            pair.fields.append(FieldResult(name, kv, rv, status, note))
        else:
            pair.fields.append(FieldResult(name, kv, rv, "equal" if kv == rv else "differ"))
    _derive_checksums(pair, k.pkt, norm)


CHECKSUM_LAYER = {"ip.checksum": "ip.", "tcp.checksum": "tcp.", "udp.checksum": "udp.", "icmp.checksum": "icmp."}


def _derive_checksums(pair: Pair, k: Packet, r: Packet) -> None:
    """A checksum that differs only because fields it covers differ, while each
    side's checksum is valid for its own frame, is 'derived', not a finding."""
    differing = {f.name for f in pair.fields if f.status == "differ"}
    ok = {"ip.checksum": (wire.ip_checksum_ok(k), wire.ip_checksum_ok(r))}
    for name in ("tcp.checksum", "udp.checksum", "icmp.checksum"):
        ok[name] = (wire.l4_checksum_ok(k), wire.l4_checksum_ok(r))
    for f in pair.fields:
        if f.status != "differ" or f.name not in CHECKSUM_LAYER:
            continue
        layer = CHECKSUM_LAYER[f.name]
        others = [d for d in differing if d != f.name and (d.startswith(layer) or
                  (layer != "ip." and d in ("ip.src", "ip.dst", "ip.len")) or
                  (layer == "ip." and d == "ip.len"))]
        if others and all(ok[f.name]):
            f.status = "derived"
            f.note = f"valid on both sides; differs because {', '.join(sorted(others))} differ"


@dataclass
class DeviceResult:
    device: tuple[str, str]
    pairs: list[Pair]
    order: list[str]


def compare_captures(kdp_caps: dict, kern_caps: dict, mapper: Mapper,
                     devices: list[tuple[str, str]]) -> list[DeviceResult]:
    """kdp_caps / kern_caps: {(ns, dev): [Frame]}. Devices are compared in the
    order their first frame appeared (so random values are learned where they
    are born), the rest in the given order."""
    def first_ts(d):
        fs = kern_caps.get(d) or []
        return min((f.ts for f in fs), default=float("inf"))
    paired = []
    for d in sorted(devices, key=first_ts):
        a, b = kdp_caps.get(d, []), kern_caps.get(d, [])
        if not a and not b:
            continue
        paired.append((d, pair_frames(d, a, b)))
    # learn every random value first: behind a NAT the same connection has other
    # addresses on other devices, and a device may show a segment acknowledging
    # an ISN (or echoing a timestamp) before the device where it is learned
    for _d, pairs in paired:
        for p in pairs:
            if p.kdp is not None and p.kernel is not None and p.kdp.pkt is not None and p.kernel.pkt is not None:
                learn(mapper, p.kdp.pkt, p.kernel.pkt)
    results = []
    for d, pairs in paired:
        for p in pairs:
            if p.kdp is not None and p.kernel is not None:
                compare_pair(mapper, p)
        results.append(DeviceResult(d, pairs, order_problems(pairs)))
    return results
