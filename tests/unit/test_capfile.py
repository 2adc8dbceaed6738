# kdp.capfile: every capture format kdp reads gives `kdp run` the same frames
# (classic pcap in both byte orders, micro- and nanoseconds, pcapng, Linux
# cooked SLL and SLL2, each plain or gzip), and no input -- truncated,
# corrupted, unknown -- gets past it as anything but a one-line error after the
# frames read so far or a per-frame malformed-frame drop.
import gzip
import importlib.util
import io
import random
import struct
from pathlib import Path

import pytest

from kdp import capconvert
from kdp.capfile import PcapError
from kdp.emulator import Emulator
from kdp.errors import KdpError
from kdp.io import read_pcap
from kdp.runner import PcapRun

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("kdp_bench_make_pcap", ROOT / "benchmarks" / "make_pcap.py")
mp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp)

AT = "pod/default/client"
RECORDS = list(mp.generate(600, flows=30, mix="full", seed=5))
ALL = capconvert.FORMATS + tuple(f + ".gz" for f in capconvert.FORMATS)


def run(path, fastpath=True, out_dir=None):
    """(output lines, counts, error or None) of `kdp run demo --json`."""
    out = io.BytesIO()
    emu = Emulator.demo(capture=False, trace=False)
    r = PcapRun(emu, AT, out, json_lines=True, out_dir=out_dir, fastpath=fastpath)
    try:
        counts, err = r.run(str(path)), None
    except KdpError as e:
        counts, err = None, str(e)
    return out.getvalue().splitlines(), counts, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    p = d / "ref.pcap"
    capconvert.write(str(p), RECORDS, "pcap")
    lines, counts, err = run(p, out_dir=str(d / "out"))
    assert err is None and counts["frames"] == 600 and counts["fastpath_hits"] > 300
    return lines, counts, {f.name: f.read_bytes() for f in (d / "out").iterdir()}


@pytest.mark.parametrize("fmt", ALL)
def test_every_format_runs_identically(tmp_path, reference, fmt):
    p = tmp_path / f"cap.{fmt}"
    capconvert.write(str(p), RECORDS, fmt)
    lines, counts, err = run(p, out_dir=str(tmp_path / "out"))
    assert err is None
    ref_lines, ref_counts, ref_pcaps = reference
    assert lines == ref_lines
    assert counts == ref_counts                     # the fast path replays every format alike
    assert {f.name: f.read_bytes() for f in (tmp_path / "out").iterdir()} == ref_pcaps


def test_read_pcap_gives_the_ethernet_frames_and_times_of_every_format(tmp_path):
    want = [(ts / 1e6, f) for ts, f in RECORDS[:50]]
    for fmt in ("pcap-ns", "sll2.gz", "pcapng-ns"):
        p = tmp_path / f"c.{fmt}"
        capconvert.write(str(p), RECORDS[:50], fmt)
        emu = Emulator.demo(capture=False, trace=False)
        got = list(read_pcap(str(p), emu.link_macs(emu.attach_device(AT))))
        assert [f for _, f in got] == [f for _, f in want]
        assert all(abs(a - b) < 1e-6 for (a, _), (b, _) in zip(got, want))


def test_cooked_frames_get_the_next_hops_mac(tmp_path):
    """A cooked frame to a pod on the client's own node goes to that pod's MAC
    (an L2 neighbour), one to another node's pod to cbr0's (the gateway)."""
    emu = Emulator.demo(capture=False, trace=False)
    dev = emu.attach_device(AT)
    macs = emu.link_macs(dev)
    client = emu.cluster.pod("default", "client")
    same = next(p for p in emu.cluster.pods if p.node == client.node and p.key != client.key
                and not p.host_network)
    other = next(p for p in emu.cluster.pods if p.node != client.node and not p.host_network)
    mac = lambda s: bytes.fromhex(s.replace(":", ""))
    assert macs(same.ip.packed) == (mac(emu.attach_device(f"pod/{same.namespace}/{same.name}").mac), mac(dev.mac))
    cbr0 = emu.namespace(f"node/{client.node}").devices["cbr0"].mac
    assert macs(other.ip.packed) == (mac(cbr0), mac(dev.mac))


def _pcapng_idb(linktype: int) -> bytes:
    shb = capconvert._block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    return shb + capconvert._block(1, struct.pack("<HHI", linktype, 0, 262144))


@pytest.mark.parametrize("content, message", [
    (_pcapng_idb(101), "interface 0: link type 101 (raw IP) is not one kdp reads (Ethernet 1, "
                       "Linux cooked SLL 113 or SLL2 276)"),
    (_pcapng_idb(1) + struct.pack("<II", 6, 14) + b"\0" * 6, "pcapng block at offset 48: block length 14 is "
                                                              "not a multiple of 4"),
    (_pcapng_idb(1) + capconvert._block(6, struct.pack("<IIIII", 3, 0, 0, 4, 4) + b"abcd"),
     "interface 3 was not described"),
    (capconvert.encode(RECORDS[:30], "pcap.gz")[:-100], "gzip data is corrupt or cut short"),
    (gzip.compress(b"hello, world", mtime=0), "not a pcap or pcapng file, plain or gzip"),
], ids=["unknown-link-type", "bad-block-length", "undescribed-interface", "gzip-cut", "gzip-not-pcap"])
def test_bad_captures_are_one_line_errors(tmp_path, content, message):
    p = tmp_path / "bad"
    p.write_bytes(content)
    for fastpath in (True, False):
        _lines, _counts, err = run(p, fastpath)
        assert err is not None and message in err and "\n" not in err and err.startswith(str(p))


def test_fuzzed_captures_never_crash(tmp_path):
    """Cut, overwritten and random captures of every format: each run ends
    normally (bad frames dropped as malformed-frame) or with a one-line
    error, and the lines printed before it are the undamaged run's (for cuts)."""
    recs = RECORDS[:40]
    rng = random.Random(12)
    whole = {}
    for i in range(60):
        fmt = rng.choice(ALL)
        data = bytearray(capconvert.encode(recs, fmt))
        kind = ("cut", "flip", "garbage")[i % 3]
        if kind == "cut":
            data = data[:rng.randrange(len(data))]
        elif kind == "flip":
            for _ in range(rng.randint(1, 40)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
        p = tmp_path / f"fz{i}"
        p.write_bytes(bytes(data))
        for fastpath in (True, False):
            lines, counts, err = run(p, fastpath)
            assert err is None or ("\n" not in err and err.startswith(str(p))), err
            if kind == "cut":
                if fmt not in whole:
                    q = tmp_path / f"whole.{fmt}"
                    capconvert.write(str(q), recs, fmt)
                    whole[fmt] = run(q)[0]
                assert lines == whole[fmt][:len(lines)]
            if err is None and kind == "flip":
                assert counts["frames"] == len(lines)


def test_the_compiled_converter_and_its_pure_twin_agree():
    """fast/capture.pxi and kdp.fast.capture: the same statuses and bytes, for
    cooked classic records and pcapng blocks, with and without MACs known."""
    compiled = pytest.importorskip("kdp._fastpath")
    from kdp.fast import capture as pure
    recs = RECORDS[:80] + [(RECORDS[80][0], b"\x00\x04\x00")]          # and a frame too short to convert
    for fmt, link in (("sll", 113), ("sll2", 276), ("pcapng-sll2", 276), ("pcapng", 1)):
        data = capconvert.encode(recs, fmt)
        for macs in (None, {}, {bytes(recs[0][1][30:34]): b"\x01" * 12}):
            got = []
            for impl in (compiled, pure):
                out = bytearray()
                if fmt.startswith("pcapng"):
                    start = 28 + 24                             # after the section and interface blocks
                    res = impl.convert_pcapng(data, start, len(data), False, [(link, 1_000_000, 0)],
                                              1_000_000, macs, out)
                else:
                    res = impl.convert_pcap(data, 24, len(data), False, link, macs, out)
                got.append((res, bytes(out)))
            assert got[0] == got[1]
            assert got[0][0][2] > 0 or macs == {}
