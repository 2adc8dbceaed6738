# Live TCP replay against the kernel (kdp.livetcp, `kdp run`'s default): a
# recorded client conversation with a ClusterIP, recorded against a server
# with another ISN and TSval, each later segment translated by kdp.livetcp
# from what the real server sent (real sockets: the oracle's echo servers in
# throwaway namespaces) — kdp and the kernel agree on every device, the
# conversation completes (data echoed, FIN both ways, no RST) and the kernel's
# conntrack ends in TIME_WAIT.
from kdp import wire
from kdp.oracle.report import report_dict
from kdp.oracle.runner import run_oracle
from kdp.oracle.scenarios import _svc_spec, _tcp_ports, live_replay_session

from ..scenarios.svc_cluster import svc_cluster
from .conftest import needs_kernel


@needs_kernel
def test_live_replay_agrees_with_the_kernel():
    cluster = svc_cluster()
    svc, port, eps = next((s, p, e) for s, p, e in _tcp_ports(cluster)
                          if e and s.session_affinity != "ClientIP" and s.internal_traffic_policy == "Cluster")
    sc = live_replay_session(cluster, 0, "pod/default/client", _svc_spec(svc), port.port, "live-replay")
    (r,), info = run_oracle(cluster, [sc])
    rep = report_dict([r], info)["scenarios"][0]
    assert not [n for n in r.notes if "stopped" in n], r.notes
    assert rep["agree"], rep
    assert rep["frames"]["kernel"] == rep["frames"]["kdp"] > 10
    back = [p.kernel.pkt for dr in r.devices if dr.device == ("pod/default/client", "eth0") for p in dr.pairs
            if p.kernel is not None and p.kernel.direction == "in" and isinstance(p.kernel.pkt.l4, wire.TCP)]
    assert any(p.l4.payload == b"GET / HTTP/1.0\r\n\r\n" for p in back)          # echoed by the real server
    assert any(p.l4.flags & wire.FIN for p in back) and not any(p.l4.flags & wire.RST for p in back)
    synack = next(p for p in back if p.l4.flags & wire.SYN)
    assert synack.l4.seq != 5000
    out = [p.kernel.pkt for dr in r.devices if dr.device == ("pod/default/client", "eth0") for p in dr.pairs
           if p.kernel is not None and p.kernel.direction == "out" and isinstance(p.kernel.pkt.l4, wire.TCP)]
    assert out[1].l4.ack == (synack.l4.seq + 1) & 0xFFFFFFFF                        # translated
    assert any("TIME_WAIT" in line for lines in r.kernel_conntrack.values() for line in lines)


@needs_kernel
def test_recorded_retransmission_agrees_with_the_kernel():
    """The recorded request twice (the client retransmitted it): the real server
    ACKs the copy again with a D-SACK block and echoes the request once; kdp's
    server does the same."""
    cluster = svc_cluster()
    svc, port, eps = next((s, p, e) for s, p, e in _tcp_ports(cluster)
                          if e and s.session_affinity != "ClientIP" and s.internal_traffic_policy == "Cluster")
    sc = live_replay_session(cluster, 0, "pod/default/client", _svc_spec(svc), port.port, "live-retransmission",
                             retransmit=True)
    (r,), info = run_oracle(cluster, [sc])
    rep = report_dict([r], info)["scenarios"][0]
    assert rep["agree"], rep
    back = [p.kernel.pkt for dr in r.devices if dr.device == ("pod/default/client", "eth0") for p in dr.pairs
            if p.kernel is not None and p.kernel.direction == "in" and isinstance(p.kernel.pkt.l4, wire.TCP)]
    assert [p.l4.payload for p in back if p.l4.payload] == [b"GET / HTTP/1.0\r\n\r\n"]      # echoed once
    assert len([p for p in back if p.l4.options[-10:-8] == b"\x05\x0a"]) == 1             # D-SACK
    assert not any(p.l4.flags & wire.RST for p in back)
