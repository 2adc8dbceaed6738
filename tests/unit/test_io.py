# kdp.io: the pcap edge. One header check and one set of error messages serve
# read_pcap and kdp run's block reader; write_pcap and the flow engine write
# the same records.
import io as _io
import struct

import pytest

from kdp.emulator import Emulator
from kdp.io import PCAP_HEADER, PcapError, pcap_record, read_pcap, write_pcap
from kdp.runner import PcapRun

FRAME = bytes(range(60))


def _both(path):
    """The error each reader raises for path."""
    errors = []
    with pytest.raises(PcapError) as e:
        list(read_pcap(path))
    errors.append(str(e.value))
    emu = Emulator.demo(capture=False, trace=False)
    with pytest.raises(PcapError) as e:
        PcapRun(emu, "pod/default/client", _io.BytesIO(), json_lines=True, out_dir=None).run(path)
    errors.append(str(e.value))
    return errors


def test_write_then_read_round_trips(tmp_path):
    p = str(tmp_path / "a.pcap")
    write_pcap(p, [(1.5, FRAME), (2.000001, FRAME[:20])])
    data = open(p, "rb").read()
    assert data[:24] == PCAP_HEADER
    assert data[24:] == pcap_record(1.5, FRAME) + pcap_record(2.000001, FRAME[:20])
    assert list(read_pcap(p)) == [(1.5, FRAME), (2.000001, FRAME[:20])]


@pytest.mark.parametrize("content, message", [
    (b"not a pcap at all, not at all", "not a pcap or pcapng file, plain or gzip (its first bytes: 6e6f7420)"),
    (PCAP_HEADER[:20] + struct.pack("<I", 101), "link type 101 (raw IP) is not one kdp reads (Ethernet 1, Linux cooked SLL 113 or "
     "SLL2 276); capture on an Ethernet device (tcpdump -i eth0) or with -i any"),
    (PCAP_HEADER + pcap_record(1.0, FRAME)[:10], "record 0 header is truncated"),
    (PCAP_HEADER + pcap_record(1.0, FRAME) + pcap_record(2.0, FRAME)[:-4],
     "record 1 is truncated (56 of 60 bytes)"),
])
def test_both_readers_refuse_bad_pcaps_alike(tmp_path, content, message):
    p = tmp_path / "bad.pcap"
    p.write_bytes(content)
    assert _both(str(p)) == [f"{p}: {message}"] * 2


def test_a_missing_file_is_named(tmp_path):
    p = str(tmp_path / "nope.pcap")
    assert all(m.startswith(p + ": ") for m in _both(p))
