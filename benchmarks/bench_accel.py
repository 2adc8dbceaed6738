# Benchmarks of the header twins (kdp.fast.headers, kdp._fastpath) side by side
# (pytest-benchmark): per-frame checksums and header parsing, and the batch parse
# of 10k frames against a Scapy dissection of the same frames. Run:
#   python -m pytest benchmarks/bench_accel.py -p no:cacheprovider --benchmark-columns=median,ops
# Compare medians within a group (e.g. --benchmark-group-by=group).
from __future__ import annotations

import random
import struct

import pytest

from kdp.fast import headers

try:
    from kdp import _fastpath
except ImportError:
    _fastpath = None

IMPLS = [
    pytest.param(headers, id="python"),
    pytest.param(_fastpath, id="cython",
                 marks=pytest.mark.skipif(_fastpath is None, reason="kdp._fastpath not built")),
]
N_FRAMES = 10_000


def _frames(n: int) -> list[bytes]:
    """n frames of a pod-to-service mix (TCP 60%, UDP 30%, ICMP 10%), built by Scapy."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether

    rng = random.Random(1)
    templates = []
    for i in range(64):
        ip = IP(src=f"10.244.{i % 4}.{i + 2}", dst=f"10.96.0.{i % 16 + 1}", ttl=64)
        kind = rng.random()
        if kind < 0.6:
            l4 = TCP(sport=rng.randrange(32768, 61000), dport=rng.choice([80, 443, 8080]), flags="S")
        elif kind < 0.9:
            l4 = UDP(sport=rng.randrange(32768, 61000), dport=53) / bytes(rng.randrange(20, 60))
        else:
            l4 = ICMP(type=8, id=i, seq=1) / bytes(56)
        templates.append(bytes(Ether(src="02:42:0a:f4:00:05", dst="02:42:0a:f4:00:01") / ip / l4))
    out = []
    for j in range(n):
        raw = bytearray(templates[j % len(templates)])
        raw[18:20] = struct.pack("!H", j & 0xFFFF)    # vary the IP id (checksum now stale)
        out.append(bytes(raw))
    return out


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return _frames(N_FRAMES)


@pytest.mark.parametrize("impl", IMPLS)
def test_checksum_ip_header(benchmark, impl, frames):
    header = frames[0][14:34]
    benchmark.group = "checksum 20B IPv4 header"
    assert benchmark(impl.inet_checksum, header) == headers.inet_checksum(header)


@pytest.mark.parametrize("impl", IMPLS)
def test_checksum_1500B(benchmark, impl):
    data = bytes(random.Random(2).randbytes(1500))
    benchmark.group = "checksum 1500B"
    assert benchmark(impl.inet_checksum, data) == headers.inet_checksum(data)


@pytest.mark.parametrize("impl", IMPLS)
def test_csum_replace_addr(benchmark, impl):
    benchmark.group = "csum_replace 4B"
    benchmark(impl.csum_replace, 0x1234, b"\x0a\x60\x00\x0a", b"\x0a\xf4\x01\x07")


@pytest.mark.parametrize("impl", IMPLS)
def test_parse_headers(benchmark, impl, frames):
    benchmark.group = "parse_headers per frame"
    frame = frames[0]
    assert benchmark(impl.parse_headers, frame) == headers.parse_headers(frame)


@pytest.mark.parametrize("impl", IMPLS)
def test_parse_batch_10k(benchmark, impl, frames):
    benchmark.group = "parse 10k frames"
    arr = benchmark(impl.parse_batch, frames)
    assert len(arr) == N_FRAMES


def test_scapy_parse_10k(benchmark, frames):
    """What the batch parse replaces: Scapy dissection plus reading the same fields."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    def dissect(batch):
        out = []
        for raw in batch:
            pkt = Ether(raw)
            ip = pkt[IP]
            l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
            out.append((pkt.type, ip.proto, ip.src, ip.dst, ip.ttl,
                        l4.sport if l4 else -1, l4.dport if l4 else -1))
        return out

    benchmark.group = "parse 10k frames"
    out = benchmark.pedantic(dissect, args=(frames,), rounds=3, iterations=1)
    assert len(out) == N_FRAMES


@pytest.mark.parametrize("impl", IMPLS)
def test_checksum_batch_10k_ip_headers(benchmark, impl, frames):
    benchmark.group = "checksum_batch 10k IPv4 headers"
    offs, lens = [14] * len(frames), [20] * len(frames)
    out = benchmark(impl.checksum_batch, frames, offs, lens)
    assert len(out) == N_FRAMES
