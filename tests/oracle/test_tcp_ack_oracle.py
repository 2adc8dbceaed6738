# What a server socket accepts, kdp against the kernel (net.tcpstate): wrong
# ACKs in SYN-RECEIVED (RST, the request stays), an ACK of unsent data and a
# too-old ACK in ESTABLISHED (challenge ACK, rate-limited, segment dropped),
# an old ACK within what was acknowledged (taken, ts_recent kept), data and
# FIN received twice (ACKed again with D-SACK), a refused FIN after
# ESTABLISHED. Pod to pod across nodes with no rules on either side: the
# kernel's conntrack tracks TCP windows and kube-proxy drops what it marks
# INVALID (an ACK of data it never saw), while kdp's conntrack tracks no
# windows (docs/concepts.md), so with rules such segments would not reach the
# socket in the kernel only; without rules both sides hand them to the socket.
import pytest

from kdp import wire
from kdp.oracle.report import report_dict
from kdp.oracle.runner import run_oracle
from kdp.oracle.scenarios import tcp_steps

from .conftest import needs_kernel

A, PA, FA = wire.ACK, wire.PSH | wire.ACK, wire.FIN | wire.ACK
HELLO, AGAIN = b"hello oracle\n", b"hello again\n"
D = ("13 bytes", PA, HELLO, 0, 0)
K = ("ACK of the echo", A, b"", 13, 0)
PLANS = {
    "synrecv-ack-too-new": [("ACK 100 past the SYN-ACK", A, b"", 0, 100), D, K],
    "synrecv-ack-too-old": [("ACK of the ISN", A, b"", 0, -1), D, K],
    "ack-of-unsent-data": [D, K, ("data, ACK 100 ahead", PA, AGAIN, 13, 100),
                           ("again (rate-limited)", PA, AGAIN, 13, 100), ("data", PA, AGAIN, 13, 0),
                           ("ACK", A, b"", 25, 0)],
    "old-ack-and-retransmission": [D, K, ("data, ACK 10 back (13 acknowledged: taken)", PA, AGAIN, 13, -10),
                                   ("the same data again", PA, AGAIN, 13, 0), ("ACK", A, b"", 25, 0)],
    "too-old-ack": [D, K, ("data, ACK 20 back (13 acknowledged)", PA, AGAIN, 13, -20),
                    ("data", PA, AGAIN, 13, 0), ("ACK", A, b"", 25, 0)],
    "pure-ack-of-unsent-data": [D, K, ("ACK 100 ahead", A, b"", 13, 100), ("data", PA, AGAIN, 13, 0),
                                ("ACK", A, b"", 25, 0)],
    "fin-ack-of-unsent-data": [D, K, ("FIN, ACK 100 ahead", FA, b"", 13, 100), ("FIN", FA, b"", 13, 0),
                               ("ACK of the server's FIN", A, b"", 14, 0)],
}


@pytest.fixture(scope="module")
def ack_run(small_cluster_kubenet):
    cluster = small_cluster_kubenet
    scs = [tcp_steps(cluster, 0, "pod/default/a", "pod/default/c", 80, name, plan, sport=42100 + i)
           for i, (name, plan) in enumerate(PLANS.items())]
    results, info = run_oracle(cluster, scs, rules=False)
    return {r.scenario.name: r for r in results}, info


@pytest.fixture(scope="module")
def small_cluster_kubenet():
    from tests.scenarios.conftest import small_cluster
    return small_cluster("kubenet")


def _server(r, side):
    """The server pod's TCP frames of one side, in order: (direction, flags, payload, pkt)."""
    (dr,) = [d for d in r.devices if d.device == ("pod/default/c", "eth0")]
    frames = sorted(((p.kernel_index, p.kernel) if side == "kernel" else (p.kdp_index, p.kdp))
                    for p in dr.pairs if getattr(p, side) is not None)
    return [(f.direction, f.pkt.l4.flags, f.pkt.l4.payload, f.pkt) for _i, f in frames
            if f.pkt is not None and isinstance(f.pkt.l4, wire.TCP)]


@needs_kernel
@pytest.mark.parametrize("name", list(PLANS))
def test_server_acceptance_agrees_with_the_kernel(ack_run, name):
    results, info = ack_run
    r = results[name]
    rep = report_dict([r], info)["scenarios"][0]
    assert rep["agree"], rep
    out = [(fl, data, p) for d, fl, data, p in _server(r, "kernel") if d == "out"]
    echoes = [data for fl, data, p in out if data]
    if name.startswith("synrecv"):
        rst = [p for fl, data, p in out if fl & wire.RST]
        assert len(rst) == 1 and echoes == [HELLO]
    elif name == "ack-of-unsent-data":
        assert echoes == [HELLO, AGAIN]                          # the refused copy was not taken
        assert len([1 for fl, data, p in out if fl == A]) == 2   # quick ACK + one challenge ACK (not two)
    elif name == "too-old-ack":
        assert echoes == [HELLO, AGAIN] and len([1 for fl, data, p in out if fl == A]) == 2
    elif name == "old-ack-and-retransmission":
        dsack = [p for fl, data, p in out if fl == A and p.l4.options[-10:-8] == b"\x05\x0a"]
        assert echoes == [HELLO, AGAIN] and len(dsack) == 1     # the copy: ACKed again with D-SACK
    elif name == "fin-ack-of-unsent-data":
        assert [fl for fl, data, p in out if fl & wire.FIN] == [FA]
