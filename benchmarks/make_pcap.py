# make_pcap: a deterministic (seeded), streaming generator of large classic
# pcap files for `kdp run demo --at pod/default/client` — the input of the end
# to end benchmark (bench_e2e.py) and of the fast path equivalence tests
# (tests/scenarios/test_fastpath_equivalence.py). Owns the workload mixes and
# the frame templates; frames are written with `struct`, not Scapy: every flow
# has a header template and a precomputed partial checksum, each frame patches
# IP ID / length / seq / ack / flags and finishes both checksums arithmetically.
#
#   python benchmarks/make_pcap.py --frames 1000000 --flows 1000 --mix established \
#       --seed 1 --out /tmp/est.pcap
#
# Library: generate(...) yields (timestamp_us, frame bytes); write_records(path,
# records) writes any such stream; write_pcap(path, frames=..., ...) does both
# and returns the number of frames written.
#
# Mixes (the client pod 10.244.0.2 on node ...000000, frames as they leave its eth0):
#   established  every flow opens with one SYN, then ACK segments (a quarter of
#                them, --payload-fraction, PSH|ACK with 1..512 bytes of payload,
#                the rest without payload), flows picked at random
#   full         ~80% as above; ~10% new TCP flows (a SYN with a fresh source port)
#                to Services (ClusterIP 10.2.0.2:80, 10.2.0.1:80, NodePort
#                10.240.0.5:30080); ~5% DNS queries (UDP, 40-120 bytes) to
#                8.8.8.8:53; ~5% straight to pods (DNS to a CoreDNS pod, SYNs to
#                service-a pods' 8080)
from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import time
from typing import Iterable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CLIENT_IP = "10.244.0.2"
CLIENT_AT = "pod/default/client"
CLIENT_NODE = "aks-nodepool1-71771131-vmss000000"
# The demo cluster's MACs (kdp topology demo); resolve_macs() asks kdp itself.
DEMO_CLIENT_MAC = "82:31:22:76:f4:57"
DEMO_CBR0_MAC = "fe:e9:96:21:4c:14"

# Established flows go round the destinations in this order (flow i -> i % len).
ESTABLISHED_DESTS = [
    ("10.244.1.3", 80),        # nginx pod on node ...001
    ("10.244.2.3", 80),        # nginx pod on node ...002
    ("10.2.0.2", 80),          # Service default/nginx (ClusterIP)
    ("10.240.0.5", 30080),     # Service default/web-nodeport on node ...001's IP
    ("93.184.216.34", 443),    # off-cluster (masqueraded egress)
    ("8.8.8.8", 443),          # off-cluster
]
NEW_FLOW_DESTS = [("10.2.0.2", 80), ("10.2.0.1", 80), ("10.240.0.5", 30080)]
DNS_SERVER = ("8.8.8.8", 53)
POD_DNS = ("10.244.1.4", 53)                              # a CoreDNS pod
POD_TCP = [("10.244.1.2", 8080), ("10.244.2.2", 8080)]    # service-a pods

MIXES = ("established", "full")
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
PROTO_TCP, PROTO_UDP = 6, 17
# Linux-like SYN options: MSS 1460, SACK permitted, window scale 7 (12 bytes).
SYN_OPTIONS = bytes.fromhex("020405b4" "01010402" "01030307")
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)   # µs, Ethernet
RECORD = struct.Struct("<IIII")
# eth+ip-prefix(16) totlen id flags/ttl/proto(4) csum src+dst(8) ports(4) seq ack offflags win csum urg
TCP_HDR = struct.Struct("!16sHH4sH8s4sIIHHHH")
UDP_HDR = struct.Struct("!16sHH4sH8sHHHH")      # ... sport dport length csum
PORT_SPAN = 39000                               # established sports 1024..40023
NEW_PORT_LO, NEW_PORT_SPAN = 40024, 25512       # fresh sports 40024..65535


# --- checksums -------------------------------------------------------------

def ones_sum(data: bytes) -> int:
    """Unfolded sum of the 16-bit big-endian words of data (odd length: zero-padded)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def fold(s: int) -> int:
    """The Internet checksum of a partial sum: end-around carry, complemented."""
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def inet_checksum(data: bytes) -> int:
    return fold(ones_sum(data))


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def ip_bytes(ip: str) -> bytes:
    return bytes(int(x) for x in ip.split("."))


_MACS: tuple[str, str] | None = None


def resolve_macs() -> tuple[str, str]:
    """(client eth0 MAC, node cbr0 MAC) of the demo cluster, from kdp itself
    (falls back to the values kdp printed when this was written)."""
    global _MACS
    if _MACS is None:
        try:
            sys.path.insert(0, os.path.join(ROOT, "src"))
            from kdp.emulator import Emulator
            emu = Emulator.demo()
            _MACS = (emu.attach_device(CLIENT_AT).mac,
                     emu.topology.node_ns[CLIENT_NODE].devices["cbr0"].mac)
        except Exception:                       # kdp not importable: the known values
            _MACS = (DEMO_CLIENT_MAC, DEMO_CBR0_MAC)
    return _MACS


# --- templates ---------------------------------------------------------------

class HeaderTemplate:
    """The constant parts of every frame from one source to one destination:
    Ethernet header, IP header words and the pseudo header's partial sum."""

    def __init__(self, src_mac: str, dst_mac: str, src: str, dst: str, proto: int):
        self.head = mac_bytes(dst_mac) + mac_bytes(src_mac) + b"\x08\x00\x45\x00"  # +IHL, TOS
        self.mid = struct.pack("!HBB", 0x4000, 64, proto)   # DF, TTL 64, protocol
        self.addrs = ip_bytes(src) + ip_bytes(dst)
        # IP header words that never change: 0x4500, DF, TTL/proto, addresses
        self.ip_const = 0x4500 + 0x4000 + ((64 << 8) | proto) + ones_sum(self.addrs)
        # pseudo header without the length: addresses + protocol
        self.pseudo = ones_sum(self.addrs) + proto

    def ip_csum(self, total: int, ident: int) -> int:
        return fold(self.ip_const + total + ident)


class _Flow:
    __slots__ = ("path", "ports", "port_sum", "seq", "ack", "ident", "opened", "sport", "dport")

    def __init__(self, path: HeaderTemplate, sport: int, dport: int, rng: random.Random):
        self.path, self.sport, self.dport = path, sport, dport
        self.ports = struct.pack("!HH", sport, dport)
        self.port_sum = sport + dport
        self.seq = rng.getrandbits(32)
        self.ack = rng.getrandbits(32)             # the peer's ISN + 1, as the client saw it
        self.ident = rng.getrandbits(16)
        self.opened = False


class _Payloads:
    """A pool of deterministic payloads (1..max bytes) with their checksum sums."""

    def __init__(self, rng: random.Random, count: int = 64, lo: int = 1, hi: int = 512):
        self.items = []
        for _ in range(count):
            n = rng.randint(lo, hi)
            data = bytes(rng.getrandbits(8) for _ in range(n))
            self.items.append((data, len(data), ones_sum(data)))


def _sum32(x: int) -> int:
    return (x >> 16) + (x & 0xFFFF)


def tcp_frame(path: HeaderTemplate, ports: bytes, port_sum: int, seq: int, ack: int, flags: int,
              ident: int, window: int = 502, options: bytes = b"", payload: bytes = b"",
              payload_sum: int | None = None) -> bytes:
    """One Ethernet/IPv4/TCP frame with correct checksums, from a path template."""
    n_opt, n_pay = len(options), len(payload)
    tcp_len = 20 + n_opt + n_pay
    offflags = (((20 + n_opt) // 4) << 12) | flags
    if payload_sum is None:
        payload_sum = ones_sum(payload)
    s = (path.pseudo + tcp_len + port_sum + _sum32(seq) + _sum32(ack) + offflags + window
         + (ones_sum(options) if n_opt else 0) + payload_sum)
    total = 20 + tcp_len
    return TCP_HDR.pack(path.head, total, ident, path.mid, path.ip_csum(total, ident), path.addrs,
                        ports, seq, ack, offflags, window, fold(s), 0) + options + payload


def udp_frame(path: HeaderTemplate, sport: int, dport: int, ident: int, payload: bytes) -> bytes:
    """One Ethernet/IPv4/UDP frame with correct checksums (never the 'no checksum' 0)."""
    length = 8 + len(payload)
    s = path.pseudo + length + sport + dport + length + ones_sum(payload)
    csum = fold(s) or 0xFFFF
    total = 20 + length
    return UDP_HDR.pack(path.head, total, ident, path.mid, path.ip_csum(total, ident), path.addrs,
                        sport, dport, length, csum) + payload


def fix_checksums(frame: bytes) -> bytes:
    """Recompute the IPv4 header checksum and the TCP/UDP checksum of an
    Ethernet/IPv4 frame edited by hand (a fragment gets only its IP checksum;
    anything too short to hold the headers is returned unchanged)."""
    b = bytearray(frame)
    if len(b) < 34 or b[12:14] != b"\x08\x00":
        return bytes(b)
    ihl = (b[14] & 0x0F) * 4
    total = int.from_bytes(b[16:18], "big")
    if ihl < 20 or len(b) < 14 + ihl:
        return bytes(b)
    b[24:26] = b"\x00\x00"
    b[24:26] = inet_checksum(bytes(b[14:14 + ihl])).to_bytes(2, "big")
    proto, frag = b[23], int.from_bytes(b[20:22], "big") & 0x3FFF     # MF + offset
    l4 = 14 + ihl
    end = min(len(b), 14 + total)
    at = {PROTO_TCP: 16, PROTO_UDP: 6}.get(proto)
    if at is None or frag or end - l4 < at + 2:
        return bytes(b)
    b[l4 + at:l4 + at + 2] = b"\x00\x00"
    s = ones_sum(bytes(b[26:34])) + proto + (end - l4) + ones_sum(bytes(b[l4:end]))
    csum = fold(s)
    if proto == PROTO_UDP and csum == 0:
        csum = 0xFFFF
    b[l4 + at:l4 + at + 2] = csum.to_bytes(2, "big")
    return bytes(b)


def dns_query(txid: int, size: int, rng: random.Random) -> bytes:
    """A DNS query (RD, one A question, EDNS0 OPT) for [labels.]example.com, `size`
    bytes long (40..120: example.com alone is 40; each extra label adds len+1)."""
    extra = max(0, size - 40)
    if extra == 1:
        extra = 2
    labels = []
    while extra:
        n = min(extra, 64) - 1
        if extra - (n + 1) == 1:            # never leave a 1-byte remainder (an empty label)
            n -= 1
        labels.append(bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n)))
        extra -= n + 1
    qname = b"".join(bytes([len(x)]) + x for x in labels + [b"example", b"com"]) + b"\x00"
    head = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 1)
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)          # root, OPT, UDP size 1232
    return head + qname + struct.pack("!HH", 1, 1) + opt


# --- the workload ------------------------------------------------------------

def generate(frames: int, flows: int = 1000, mix: str = "established", seed: int = 0,
             src_mac: str | None = None, dst_mac: str | None = None, start: float = 1_700_000_000.0,
             gap_us: tuple[int, int] = (1, 1000), payload_fraction: float = 0.25,
             dests: list[tuple[str, int]] | None = None,
             shared_ports: bool = False) -> Iterator[tuple[int, bytes]]:
    """Yield `frames` (timestamp in µs, Ethernet frame) records, deterministic for
    the arguments. Timestamps start at `start` seconds and grow by gap_us.

    Established flow i goes to dests[i % len(dests)] from source port
    1024 + i % 39000 (unique up to 39,000 flows). shared_ports=True gives flows
    to different destinations the same source ports (1024 + i // len(dests)):
    a ClusterIP flow DNATed to a pod then clashes with the direct flow to that
    pod, and conntrack NATs the second one's source port."""
    if mix not in MIXES:
        raise ValueError(f"mix {mix!r}: expected one of {', '.join(MIXES)}")
    if flows < 1:
        raise ValueError("flows must be >= 1")
    if src_mac is None or dst_mac is None:
        client, cbr0 = resolve_macs()
        src_mac, dst_mac = src_mac or client, dst_mac or cbr0
    rng = random.Random(seed)
    paths: dict[tuple[str, int], HeaderTemplate] = {}

    def path(dst: str, proto: int) -> HeaderTemplate:
        p = paths.get((dst, proto))
        if p is None:
            p = paths[(dst, proto)] = HeaderTemplate(src_mac, dst_mac, CLIENT_IP, dst, proto)
        return p

    dests = dests or ESTABLISHED_DESTS
    nd = len(dests)
    flow_list = []
    for i in range(flows):
        dst, dport = dests[i % nd]
        sport = 1024 + ((i // nd) if shared_ports else i) % PORT_SPAN
        flow_list.append(_Flow(path(dst, PROTO_TCP), sport, dport, rng))
    pool = _Payloads(rng)
    items, n_items = pool.items, len(pool.items)
    ts = int(round(start * 1_000_000))
    gap_lo, gap_span = gap_us[0], gap_us[1] - gap_us[0] + 1
    rand = rng.random
    new_port = 0
    full = mix == "full"

    def fresh_sport() -> int:
        nonlocal new_port
        new_port += 1
        return NEW_PORT_LO + (new_port * 7919) % NEW_PORT_SPAN    # a stride over the range

    for _ in range(frames):
        ts += gap_lo + int(rand() * gap_span)
        r = rand() if full else 0.0
        if r < 0.80:                                   # a segment of an established flow
            f = flow_list[int(rand() * flows)]
            f.ident = (f.ident + 1) & 0xFFFF
            if not f.opened:
                f.opened = True
                frame = tcp_frame(f.path, f.ports, f.port_sum, f.seq, 0, SYN, f.ident, 64240,
                                  SYN_OPTIONS)
                f.seq = (f.seq + 1) & 0xFFFFFFFF
            elif rand() < payload_fraction:
                data, n, dsum = items[int(rand() * n_items)]
                frame = tcp_frame(f.path, f.ports, f.port_sum, f.seq, f.ack, PSH | ACK, f.ident,
                                  payload=data, payload_sum=dsum)
                f.seq = (f.seq + n) & 0xFFFFFFFF
            else:
                frame = tcp_frame(f.path, f.ports, f.port_sum, f.seq, f.ack, ACK, f.ident)
        elif r < 0.90:                                 # a new flow to a Service
            dst, dport = NEW_FLOW_DESTS[int(rand() * len(NEW_FLOW_DESTS))]
            sport = fresh_sport()
            frame = tcp_frame(path(dst, PROTO_TCP), struct.pack("!HH", sport, dport), sport + dport,
                              rng.getrandbits(32), 0, SYN, rng.getrandbits(16), 64240, SYN_OPTIONS)
        elif r < 0.95:                                 # a DNS query off-cluster
            frame = udp_frame(path(DNS_SERVER[0], PROTO_UDP), fresh_sport(), DNS_SERVER[1],
                              rng.getrandbits(16),
                              dns_query(rng.getrandbits(16), rng.randint(40, 120), rng))
        elif rand() < 0.5:                             # DNS straight to a CoreDNS pod
            frame = udp_frame(path(POD_DNS[0], PROTO_UDP), fresh_sport(), POD_DNS[1],
                              rng.getrandbits(16),
                              dns_query(rng.getrandbits(16), rng.randint(40, 120), rng))
        else:                                          # a SYN straight to a service-a pod
            dst, dport = POD_TCP[int(rand() * len(POD_TCP))]
            sport = fresh_sport()
            frame = tcp_frame(path(dst, PROTO_TCP), struct.pack("!HH", sport, dport), sport + dport,
                              rng.getrandbits(32), 0, SYN, rng.getrandbits(16), 64240, SYN_OPTIONS)
        yield ts, frame


def write_records(path: str, records: Iterable[tuple[int, bytes]], chunk: int = 8192) -> int:
    """Write (timestamp µs, frame) records as a classic little-endian µs pcap
    (Ethernet); returns the number written. Streams: memory stays flat."""
    n = 0
    buf: list[bytes] = []
    pack = RECORD.pack
    with open(path, "wb") as fh:
        fh.write(PCAP_HEADER)
        for ts, frame in records:
            ln = len(frame)
            buf.append(pack(ts // 1_000_000, ts % 1_000_000, ln, ln))
            buf.append(frame)
            n += 1
            if len(buf) >= chunk:
                fh.write(b"".join(buf))
                buf.clear()
        fh.write(b"".join(buf))
    return n


def read_records(path: str) -> Iterator[tuple[int, bytes]]:
    """The records of a pcap written by write_records (timestamps in µs)."""
    with open(path, "rb") as fh:
        if fh.read(24)[:4] != PCAP_HEADER[:4]:
            raise ValueError(f"{path}: not a little-endian µs pcap")
        while True:
            hdr = fh.read(16)
            if len(hdr) < 16:
                return
            sec, usec, incl, _ = RECORD.unpack(hdr)
            yield sec * 1_000_000 + usec, fh.read(incl)


def write_pcap(path: str, frames: int, flows: int = 1000, mix: str = "established", seed: int = 0,
               **kw) -> int:
    """Generate `frames` frames (see generate()) into the pcap at `path`; returns
    the number of frames written."""
    return write_records(path, generate(frames, flows=flows, mix=mix, seed=seed, **kw))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a seeded pcap of client-pod traffic for kdp run demo.")
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--flows", type=int, default=1000, help="concurrent established TCP flows")
    p.add_argument("--mix", choices=MIXES, default="established")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--payload-fraction", type=float, default=0.25,
                   help="share of established segments carrying 1..512 bytes")
    p.add_argument("--src-mac", help="default: the demo client's eth0 MAC")
    p.add_argument("--dst-mac", help="default: the demo node's cbr0 MAC")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    n = write_pcap(a.out, a.frames, flows=a.flows, mix=a.mix, seed=a.seed, src_mac=a.src_mac,
                   dst_mac=a.dst_mac, payload_fraction=a.payload_fraction)
    secs = time.perf_counter() - t0
    print(f"{a.out}: {n:,} frames ({a.mix}, {a.flows} flows, seed {a.seed}), "
          f"{os.path.getsize(a.out) / 1e6:.1f} MB in {secs:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
