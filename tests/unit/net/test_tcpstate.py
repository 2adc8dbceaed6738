# net.tcpstate: the TCP option codecs and the receive window shift (the state
# machines themselves are exercised through SocketTable in test_sockets.py and
# test_sockets_connect.py).
from kdp.net.tcpstate import parse_tcp_options, synack_options, window_scale


def test_synack_options_without_timestamps():
    assert synack_options({"mss": 1400, "sack": True}, 0, 1460) == bytes.fromhex("02040578" "01010402")


def test_synack_options_echo_the_peers_timestamp_after_sack_permitted():
    offered = parse_tcp_options(bytes.fromhex("020405b40402080a0000000100000000" "01030307"))
    assert offered == {"mss": 1460, "sack": True, "ts": (1, 0), "ws": 7}
    assert synack_options(offered, 9, 1460) == bytes.fromhex("020405b4" "0402080a" "00000009" "00000001"
                                                             "01030307")


def test_window_scale_follows_tcp_rmem_like_the_kernel():
    assert window_scale(6291456) == 7 and window_scale(33554432) == 10 and window_scale(65535) == 0
