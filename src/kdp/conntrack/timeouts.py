# conntrack.timeouts: the per-protocol, per-state conntrack timeouts (seconds)
# with the kernel defaults and kube-proxy's overrides. Values only.
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Timeouts:
    """nf_conntrack_*_timeout_* sysctls. Defaults are the kernel's."""

    tcp_syn_sent: float = 120
    tcp_syn_recv: float = 60
    tcp_established: float = 432000
    tcp_fin_wait: float = 120
    tcp_close_wait: float = 60
    tcp_last_ack: float = 30
    tcp_time_wait: float = 120
    tcp_close: float = 10
    tcp_syn_sent2: float = 120
    tcp_retrans: float = 300
    tcp_unack: float = 300
    udp: float = 30
    udp_stream: float = 120
    icmp: float = 30
    generic: float = 600
    sctp_closed: float = 10             # nf_conntrack_sctp_timeout_* (Linux 6.4+)
    sctp_cookie_wait: float = 3
    sctp_cookie_echoed: float = 3
    sctp_established: float = 210
    sctp_shutdown_sent: float = 3
    sctp_shutdown_recd: float = 3
    sctp_shutdown_ack_sent: float = 3
    sctp_heartbeat_sent: float = 30

    @classmethod
    def kernel(cls) -> "Timeouts":
        return cls()

    @classmethod
    def kube_proxy(cls, established: float = 86400, close_wait: float = 3600) -> "Timeouts":
        """What kube-proxy sets at start-up (conntrack.tcpEstablishedTimeout,
        conntrack.tcpCloseWaitTimeout)."""
        return replace(cls(), tcp_established=established, tcp_close_wait=close_wait)

    def tcp(self, state: str) -> float:
        return getattr(self, "tcp_" + state.lower())
