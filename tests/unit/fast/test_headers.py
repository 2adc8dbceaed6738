# Tests for the header twins (kdp.fast.headers, kdp._fastpath), kdp.checksum
# and the kdp.fast selector: known answers, incremental == full checksums, the
# twins agree byte for byte on random and Scapy-built frames, batches ==
# per-frame calls, the compiled struct follows kdp.fast.contract, and the
# selector really loads the compiled module.
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kdp.fast import contract, headers

try:
    from kdp import _fastpath
    FASTPATH_MISSING = ""
except ImportError as exc:  # extension not built (source tree without pip install)
    _fastpath = None
    FASTPATH_MISSING = f"kdp._fastpath is not built ({exc}); run pip install -e ."

needs_fastpath = pytest.mark.skipif(_fastpath is None, reason=FASTPATH_MISSING or "built")

IMPLS = [
    pytest.param(headers, id="python"),
    pytest.param(_fastpath, id="cython", marks=needs_fastpath),
]
over_impls = pytest.mark.parametrize("impl", IMPLS)
HYP = settings(deadline=None, max_examples=150)

# A real IPv4 header (UDP, 192.168.0.1 -> 192.168.0.199) with checksum 0xb861.
REAL_IP_HEADER = bytes.fromhex("450000730000400040 11 b861 c0a80001 c0a800c7".replace(" ", ""))


# --- strategies ------------------------------------------------------------

@st.composite
def ipv4_headers(draw, min_options: int = 0) -> bytes:
    """A random IPv4 header (with options) carrying its correct checksum."""
    words = draw(st.integers(min_options, 10))
    body = bytearray(draw(st.binary(min_size=20 + 4 * words, max_size=20 + 4 * words)))
    body[0] = 0x40 | (5 + words)
    body[10:12] = b"\x00\x00"
    body[10:12] = struct.pack("!H", headers.inet_checksum(bytes(body)))
    return bytes(body)


@st.composite
def frames(draw) -> bytes:
    """Ethernet frames that reach every branch of parse_headers: VLAN or not,
    IPv4/ARP/other ethertypes, odd IHLs and versions, fragments, ICMP/TCP/UDP/other
    protocols, right or wrong header checksums, and truncation anywhere."""
    macs = draw(st.binary(min_size=12, max_size=12))
    ethertype = draw(st.sampled_from([0x0800, 0x0800, 0x0800, 0x0806, 0x86DD, 0x8100]) |
                     st.integers(0, 0xFFFF))
    head = macs
    if draw(st.booleans()):
        head += b"\x81\x00" + draw(st.binary(min_size=2, max_size=2))
    head += struct.pack("!H", ethertype)
    words = draw(st.integers(0, 10))
    ip = bytearray(draw(st.binary(min_size=20 + 4 * words, max_size=20 + 4 * words)))
    ip[0] = draw(st.sampled_from([0x40 | (5 + words)]) | st.integers(0, 255))
    ip[9] = draw(st.sampled_from([1, 6, 17]) | st.integers(0, 255))
    frag = draw(st.sampled_from([0, 0x4000, 0x2000, 0x0001, 0x1FFF]) | st.integers(0, 0xFFFF))
    ip[6:8] = struct.pack("!H", frag)
    if draw(st.booleans()):
        ip[10:12] = b"\x00\x00"
        ip[10:12] = struct.pack("!H", headers.inet_checksum(bytes(ip[:(ip[0] & 15) * 4])))
    frame = head + bytes(ip) + draw(st.binary(max_size=40))
    if draw(st.booleans()):
        frame = frame[:draw(st.integers(0, len(frame)))]
    return frame


any_frames = frames() | st.binary(max_size=80)


# --- known answers ---------------------------------------------------------

@over_impls
def test_rfc1071_example(impl):
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded)
    assert impl.inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2 == 0x220D


@over_impls
def test_odd_length_pads_with_zero(impl):
    assert impl.inet_checksum(b"\x01") == 0xFEFF
    assert impl.inet_checksum(b"\x01\x02\x03") == impl.inet_checksum(b"\x01\x02\x03\x00")
    assert impl.inet_checksum(b"") == 0xFFFF


@over_impls
def test_real_ipv4_header(impl):
    zeroed = REAL_IP_HEADER[:10] + b"\x00\x00" + REAL_IP_HEADER[12:]
    assert impl.inet_checksum(zeroed) == 0xB861
    assert impl.inet_checksum(REAL_IP_HEADER) == 0


@over_impls
def test_initial_partial_sum(impl):
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert impl.inet_checksum(data[4:], initial=0x0001 + 0xF203) == impl.inet_checksum(data)


@over_impls
def test_all_buffer_types_agree(impl):
    data = REAL_IP_HEADER + b"\x07"
    want = impl.inet_checksum(data)
    assert impl.inet_checksum(bytearray(data)) == want
    assert impl.inet_checksum(memoryview(data)) == want
    assert impl.inet_checksum(np.frombuffer(data, dtype=np.uint8)) == want


@over_impls
def test_non_bytes_rejected(impl):
    with pytest.raises(TypeError):
        impl.inet_checksum("not bytes")
    with pytest.raises(TypeError):
        impl.parse_headers("0123456789abcdef")


@over_impls
def test_csum_replace_known_ttl_decrement(impl):
    # TTL 64 -> 63 on the real header: the checksum rises by 0x0100
    new = impl.csum_replace(0xB861, bytes([0x40, 0x11]), bytes([0x3F, 0x11]))
    assert new == 0xB961
    rebuilt = REAL_IP_HEADER[:8] + b"\x3f" + REAL_IP_HEADER[9:10] + struct.pack("!H", new) + \
        REAL_IP_HEADER[12:]
    assert impl.inet_checksum(rebuilt) == 0


@over_impls
def test_csum_replace_rejects_bad_lengths(impl):
    with pytest.raises(IndexError):
        impl.csum_replace(0, b"\x01\x02\x03", b"\x01\x02\x03")
    with pytest.raises(IndexError):
        impl.csum_replace(0, b"\x01\x02\x03\x04", b"\x01\x02")


# --- properties ------------------------------------------------------------

@over_impls
@HYP
@given(header=ipv4_headers(), data=st.data())
def test_csum_replace_equals_full_recomputation(impl, header, data):
    width = data.draw(st.sampled_from([2, 4, 6]))
    at = data.draw(st.sampled_from([o for o in range(0, len(header) - width + 1, 2)
                                    if o + width <= 10 or o >= 12]))
    new_bytes = data.draw(st.binary(min_size=width, max_size=width))
    old_check = struct.unpack("!H", header[10:12])[0]
    rewritten = header[:at] + new_bytes + header[at + width:]
    # a full recomputation over an all-zero header gives 0xffff, eqn. 3 gives 0
    assume(any(rewritten[:10] + rewritten[12:]))
    zeroed = rewritten[:10] + b"\x00\x00" + rewritten[12:]
    incremental = impl.csum_replace(old_check, header[at:at + width], new_bytes)
    assert incremental == impl.inet_checksum(zeroed)


@needs_fastpath
@HYP
@given(data=st.binary(max_size=3000),
       initial=st.integers(0, 0xFFFFFFFF) | st.integers(-2**70, 2**70) | st.just(0))
def test_twins_agree_on_inet_checksum(data, initial):
    assert _fastpath.inet_checksum(data, initial) == headers.inet_checksum(data, initial)
    assert _fastpath.inet_checksum(data) == headers.inet_checksum(data)


@needs_fastpath
@HYP
@given(check=st.integers(-2**20, 2**20), pair=st.integers(0, 20).flatmap(
    lambda n: st.tuples(st.binary(min_size=2 * n, max_size=2 * n),
                        st.binary(min_size=2 * n, max_size=2 * n))))
def test_twins_agree_on_csum_replace(check, pair):
    old, new = pair
    assert _fastpath.csum_replace(check, old, new) == headers.csum_replace(check, old, new)


@needs_fastpath
@HYP
@given(frame=any_frames)
def test_twins_agree_on_parse_headers(frame):
    want = headers.parse_headers(frame)
    got = _fastpath.parse_headers(frame)
    assert got == want
    assert all(type(v) is int for v in got)
    assert _fastpath.parse_headers(bytearray(frame)) == want
    assert _fastpath.parse_headers(memoryview(frame)) == want


@over_impls
@HYP
@given(batch=st.lists(any_frames, max_size=12))
def test_parse_batch_equals_per_frame(impl, batch):
    arr = impl.parse_batch(batch)
    assert arr.dtype == contract.HEADER_DTYPE
    assert arr.shape == (len(batch),)
    assert arr.tolist() == [impl.parse_headers(f) for f in batch]


@needs_fastpath
@HYP
@given(batch=st.lists(any_frames, max_size=12))
def test_twins_agree_on_parse_batch(batch):
    assert _fastpath.parse_batch(batch).tolist() == headers.parse_batch(batch).tolist()
    assert _fastpath.parse_batch(iter(batch)).tolist() == headers.parse_batch(tuple(batch)).tolist()


@st.composite
def spans(draw):
    frames_ = draw(st.lists(st.binary(max_size=200), max_size=10))
    offs, lens = [], []
    for f in frames_:
        o = draw(st.integers(0, len(f)))
        offs.append(o)
        lens.append(draw(st.integers(0, len(f) - o)))
    return frames_, offs, lens


@over_impls
@HYP
@given(args=spans())
def test_checksum_batch_equals_per_frame(impl, args):
    frames_, offs, lens = args
    out = impl.checksum_batch(frames_, offs, lens)
    assert out.dtype == contract.CHECKSUM_DTYPE
    assert out.tolist() == [impl.inet_checksum(f[o:o + n]) for f, o, n in zip(frames_, offs, lens)]
    as_arrays = impl.checksum_batch(frames_, np.array(offs, dtype=np.int32),
                                    np.array(lens, dtype=np.uint16))
    assert as_arrays.tolist() == out.tolist()


@over_impls
@pytest.mark.parametrize("offset,length", [(-1, 2), (0, 21), (20, 1), (3, -1)])
def test_checksum_batch_rejects_spans_outside_the_frame(impl, offset, length):
    with pytest.raises(ValueError, match="frame 1: span"):
        impl.checksum_batch([b"\x00" * 20, b"\x00" * 20], [0, offset], [20, length])


@over_impls
def test_checksum_batch_argument_errors(impl):
    with pytest.raises(ValueError):
        impl.checksum_batch([b"ab", b"cd"], [0], [2, 2])
    with pytest.raises(TypeError):
        impl.checksum_batch([b"ab"], [0.5], [2])
    assert impl.checksum_batch([], [], []).tolist() == []
    assert impl.parse_batch([]).shape == (0,)


# --- Scapy-built frames ------------------------------------------------------

def _scapy_frames() -> dict[str, bytes]:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    eth = Ether(src="02:42:0a:f4:00:05", dst="02:42:0a:f4:00:01")
    ip = IP(src="10.244.0.5", dst="10.96.0.10", ttl=63)
    built = {
        "tcp": eth / ip / TCP(sport=40000, dport=80, flags="S"),
        "udp": eth / ip / UDP(sport=5353, dport=53) / b"\x12\x34",
        "icmp": eth / ip / ICMP(type=8, id=7, seq=1),
        "icmp-unreach": eth / ip / ICMP(type=3, code=3) / IP(dst="1.2.3.4") / UDP(),
        "arp": Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc="10.244.0.5", pdst="10.244.0.1"),
        "vlan-tcp": eth / Dot1Q(vlan=100) / ip / TCP(sport=1, dport=443),
        "ip-options": eth / IP(src="1.1.1.1", dst="2.2.2.2", options=b"\x01" * 8) / UDP(),
        "fragment": eth / IP(src="1.1.1.1", dst="2.2.2.2", frag=185, flags="MF") / (b"x" * 16),
        "gre": eth / IP(src="1.1.1.1", dst="2.2.2.2", proto=47) / bytes(8),
        "bad-ip-checksum": eth / IP(src="1.1.1.1", dst="2.2.2.2", chksum=0x1234) / TCP(),
    }
    out = {name: bytes(pkt) for name, pkt in built.items()}
    for name in ("tcp", "vlan-tcp", "ip-options"):
        raw = out[name]
        for cut in (13, 14, 17, 20, 33, 34, 36, len(raw) - 1):
            out[f"{name}-truncated-{cut}"] = raw[:cut]
    return out


SCAPY_FRAMES = _scapy_frames()


@over_impls
def test_scapy_frames_known_answers(impl):
    src, dst = 0x0AF40005, 0x0A60000A
    f = SCAPY_FRAMES
    assert impl.parse_headers(f["tcp"]) == (0x0800, 14, 6, src, dst, 63, 34, 40000, 80, 1)
    assert impl.parse_headers(f["udp"]) == (0x0800, 14, 17, src, dst, 63, 34, 5353, 53, 1)
    assert impl.parse_headers(f["icmp"]) == (0x0800, 14, 1, src, dst, 63, 34, 8, 0, 1)
    assert impl.parse_headers(f["icmp-unreach"])[7:9] == (3, 3)
    assert impl.parse_headers(f["arp"]) == (0x0806, 14, -1, 0, 0, 0, -1, -1, -1, 0)
    assert impl.parse_headers(f["vlan-tcp"]) == (0x0800, 18, 6, src, dst, 63, 38, 1, 443, 1)
    assert impl.parse_headers(f["ip-options"])[6] == 14 + 28
    assert impl.parse_headers(f["fragment"])[7:] == (-1, -1, 1)
    assert impl.parse_headers(f["gre"])[2:] == (47, 0x01010101, 0x02020202, 64, 34, -1, -1, 1)
    assert impl.parse_headers(f["bad-ip-checksum"])[9] == 0
    assert impl.parse_headers(f["tcp-truncated-13"]) == (-1, -1, -1, 0, 0, 0, -1, -1, -1, 0)
    assert impl.parse_headers(f["tcp-truncated-33"]) == (0x0800, 14, -1, 0, 0, 0, -1, -1, -1, 0)
    assert impl.parse_headers(f["tcp-truncated-36"])[7:] == (-1, -1, 1)


@needs_fastpath
@pytest.mark.parametrize("name", sorted(SCAPY_FRAMES))
def test_twins_agree_on_scapy_frames(name):
    frame = SCAPY_FRAMES[name]
    assert _fastpath.parse_headers(frame) == headers.parse_headers(frame)


@over_impls
def test_batch_of_scapy_frames(impl):
    batch = list(SCAPY_FRAMES.values()) * 3
    rng = random.Random(7)
    rng.shuffle(batch)
    arr = impl.parse_batch(batch)
    assert arr.tolist() == [impl.parse_headers(f) for f in batch]
    assert arr["ip_proto"].tolist() == [impl.parse_headers(f)[2] for f in batch]
    ok = arr["ip_header_ok"] == 1
    offs, lens = arr["l3_offset"][ok], (arr["l4_offset"] - arr["l3_offset"])[ok]
    ip_frames = [f for f, good in zip(batch, ok) if good]
    assert (impl.checksum_batch(ip_frames, offs, lens) == 0).all()


# --- the contract and the selector ---------------------------------------------

@needs_fastpath
def test_compiled_struct_follows_the_contract():
    size, offsets = contract.layout_of(contract.HEADER_DTYPE)
    assert _fastpath.HEADER_STRUCT_SIZE == size == contract.HEADER_DTYPE.itemsize
    assert _fastpath.HEADER_STRUCT_OFFSETS == offsets
    assert _fastpath.HEADER_STRUCT_SIZES == {
        name: contract.HEADER_DTYPE.fields[name][0].itemsize for name in contract.HEADER_FIELDS}
    assert tuple(_fastpath.HEADER_STRUCT_OFFSETS) == contract.HEADER_FIELDS


def test_layout_check_catches_a_mismatch():
    size, offsets = contract.layout_of(contract.HEADER_DTYPE)
    contract.check_layout("ok", contract.HEADER_DTYPE, size, offsets)
    with pytest.raises(contract.LayoutMismatch, match="size"):
        contract.check_layout("short", contract.HEADER_DTYPE, size - 4, offsets)
    with pytest.raises(contract.LayoutMismatch, match="ttl at 24"):
        contract.check_layout("moved", contract.HEADER_DTYPE, size, {**offsets, "ttl": 24})
    with pytest.raises(contract.LayoutMismatch, match="src_ip is 8 bytes"):
        contract.check_layout("wide", contract.HEADER_DTYPE, size, offsets, {"src_ip": 8})


def test_selector_exports_the_contract_fields():
    from kdp import checksum, fast
    assert fast.HEADER_FIELDS == contract.HEADER_FIELDS == contract.HEADER_DTYPE.names
    for name in ("parse_headers", "parse_batch", "checksum_batch"):
        assert getattr(fast, name) is getattr(fast.impl, name)
    for name in ("inet_checksum", "csum_replace"):
        assert getattr(checksum, name) is getattr(fast.impl, name)


@pytest.mark.skipif(os.environ.get("KDP_NO_EXTENSIONS", "") not in ("", "0"),
                    reason="KDP_NO_EXTENSIONS is set: the pure twin is expected")
def test_installed_package_loads_the_compiled_module():
    from kdp import fast
    assert fast.IMPLEMENTATION == "cython", (
        "kdp.fast fell back to the pure twin: the extension did not build or load "
        f"({FASTPATH_MISSING or 'import of kdp._fastpath succeeded here'})")
    assert fast.impl is _fastpath
    assert _fastpath.__file__.endswith((".so", ".pyd"))


def _selected(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KDP_NO_EXTENSIONS"}
    if env_value is not None:
        env["KDP_NO_EXTENSIONS"] = env_value
    code = "import kdp.fast as a; print(a.IMPLEMENTATION, a.parse_batch.__module__)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_env_var_selects_the_python_twin():
    assert _selected("1") == "python kdp.fast.headers"


@needs_fastpath
def test_without_env_var_the_compiled_module_is_selected():
    assert _selected(None).startswith("cython")
    assert _selected("0").startswith("cython")
