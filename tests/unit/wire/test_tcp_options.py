# wire.tcp_options: the one walk of TCP options (parse_tcp_options, live
# replay's translation and the oracle's timestamp mapping all use it).
from kdp import wire

MSS = b"\x02\x04\x05\xb4"
SACK_OK = b"\x04\x02"
TS = b"\x08\x0a" + bytes(8)


def test_nops_are_skipped_and_offsets_point_at_each_option():
    opts = MSS + b"\x01\x01" + SACK_OK + TS
    assert list(wire.tcp_options(opts)) == [(2, 0, 4), (4, 6, 2), (8, 8, 10)]


def test_the_walk_stops_at_eol_and_at_a_bad_length():
    assert list(wire.tcp_options(MSS + b"\x00" + TS)) == [(2, 0, 4)]
    assert list(wire.tcp_options(MSS + b"\x08\x01" + bytes(8))) == [(2, 0, 4)]
    assert list(wire.tcp_options(MSS + b"\x08")) == [(2, 0, 4)]          # no length byte


def test_a_window_of_a_frame():
    frame = b"xx" + MSS + TS + b"yy"
    assert list(wire.tcp_options(frame, 2, 2 + len(MSS) + len(TS))) == [(2, 2, 4), (8, 6, 10)]
