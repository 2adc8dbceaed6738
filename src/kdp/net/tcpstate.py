# net.tcpstate: the TCP state machines of a namespace's sockets, as Linux
# runs them: passive connections (SYN to a listener -> SYN-ACK with Linux's
# options, data handed to the listener's app, FIN handshakes, TIME_WAIT),
# active ones apps open themselves (connect(): SYN with Linux's options, ACK +
# queued data on the SYN-ACK, data and FIN handed to the app, RST), the
# segments either side sends (sequence numbers, windows, timestamps, IP IDs)
# and the TCP option codecs. What a socket accepts is checked as tcp_ack()
# does (RFC 5961 5.2): in SYN-RECEIVED only the ACK of our SYN-ACK (else RST);
# later an ACK of data never sent, or older than the bytes the peer ever
# acknowledged, drops the segment (a challenge ACK in ESTABLISHED, at most one
# per tcp_invalid_ratelimit). TcpSockets is the TCP half of
# net.sockets.SocketTable and works on the table's state (connections,
# listeners, client sockets, capture-owned flows, outbox); it owns neither the table nor UDP, ICMP
# or the listeners themselves.
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from .. import wire
from ..addr import ip_text
from ..conntrack.keyed import keyed_hash
from ..wire import ACK, FIN, IPv4, Packet, PSH, RST, SYN, TCP
from .replies import BLANK_ETH, Delivery, tcp_reset

if TYPE_CHECKING:
    from .sockets import Listener, SocketTable

MSS = 1460
TIME_WAIT_LEN = 60.0                 # TCP_TIMEWAIT_LEN, seconds
TCP_RMEM = (4096, 131072, 6291456)   # net.ipv4.tcp_rmem, the kernel's default
INVALID_RATELIMIT = 0.5              # net.ipv4.tcp_invalid_ratelimit (500 ms): answers to bad segments
M32 = 0xFFFFFFFF


def seq_after(a: int, b: int) -> bool:
    """after(a, b): a is later than b in sequence space."""
    return 0 < ((a - b) & M32) < 0x80000000


def window_scale(rmem_max: int = TCP_RMEM[2]) -> int:
    """tcp_select_initial_window(): the shift that fits the largest receive buffer."""
    space, wscale = rmem_max, 0
    while space > 65535 and wscale < 14:
        space >>= 1
        wscale += 1
    return wscale


@dataclass
class TcpConn:
    state: str                      # SYN_SENT | SYN_RECV | ESTABLISHED | FIN_WAIT1 | FIN_WAIT2 |
    #                                 CLOSE_WAIT | LAST_ACK | TIME_WAIT
    snd_nxt: int
    rcv_nxt: int
    ts_ok: bool = False
    app_state: dict = field(default_factory=dict)
    wscale: int = 0                 # our receive window shift (0 when the peer did not offer scaling)
    ip_id: int = 0                  # inet_id: a random start, +1 per segment (connected socket)
    pingpong: bool = False          # interactive mode: ACKs ride on the answers (no quick ACK)
    since: float = 0.0              # when TIME_WAIT began
    ts_recent: int = 0              # the peer's last TSval (echoed in TSecr)
    handle: "TcpHandle | None" = None
    # what the peer acknowledged (tcp_ack): the oldest unacknowledged sequence number,
    # bytes acknowledged so far, the largest window it offered and its window shift
    snd_una: int = 0
    bytes_acked: int = 0
    max_window: int = 0
    snd_wscale: int = 0
    sack_ok: bool = False           # the peer offered SACK (our ACKs may carry D-SACK blocks)
    last_oow: float | None = None   # when the last answer to an unacceptable segment left
    # active (client) connections only
    isn: int = 0
    mss: int = MSS                  # the peer's MSS (minus the timestamp option's 12 bytes)
    queued: bytes = b""             # written before the handshake completed
    close_queued: bool = False      # close() before the handshake completed
    received: int = 0               # bytes handed to the app
    sent: int = 0                   # bytes sent by the app


@dataclass(eq=False)
class TcpHandle:
    """One TCP connection as an app sees it: an accepted one (side "server") or
    one it opened with SocketTable.connect (side "client"). key is (local ip,
    local port, remote ip, remote port). send()/close() queue segments in the
    table's outbox; they leave with the current delivery (or SocketTable.flush())."""

    table: "SocketTable"
    key: tuple
    side: str                       # server | client
    app: object = None              # client side: receives the callbacks
    tag: object = None              # the app's own data (e.g. the connection it proxies for)
    auto_close: bool = True         # client side: answer the peer's FIN with FIN-ACK at once
    owner: str = ""
    reset: str | None = None        # why the connection was reset, if it was

    @property
    def local(self) -> tuple:
        return self.key[0], self.key[1]

    @property
    def remote(self) -> tuple:
        return self.key[2], self.key[3]

    @property
    def state(self) -> str:
        conn = self.table.tcp.get(self.key)
        if conn is None or conn.handle is not self or conn.state == "TIME_WAIT":
            return "CLOSED"                  # TIME_WAIT: closed for the app, the socket lingers
        return conn.state

    def send(self, data: bytes, close: bool = False, now: float | None = None) -> int:
        """Queue data (and a FIN when close): the number of segments queued."""
        return self.table.send(self, data, close, now)

    def close(self, now: float | None = None) -> int:
        return self.table.send(self, b"", True, now)

    def __repr__(self) -> str:
        lip, lport, rip, rport = self.key
        return f"TcpHandle({self.side} {lip}:{lport} <-> {rip}:{rport} {self.state})"


class TcpSockets:
    """The TCP sockets of a SocketTable (see the module comment). The table
    supplies seed, ns_name, listeners, tcp, clients, outbox, connects, watch
    and _now."""

    # --- active connections ------------------------------------------------
    def connect(self, local_ip: IPv4Address, remote_ip: IPv4Address, remote_port: int,
                now: float | None = None, app=None, data: bytes = b"", close: bool = False,
                tag=None, owner: str = "", auto_close: bool = True,
                local_port: int | None = None) -> TcpHandle:
        """Open a TCP connection as connect() would: a keyed ephemeral source port
        (ip_local_port_range 32768-60999), a keyed ISN, the SYN with Linux's
        options queued in the outbox. data (and close) are sent once the
        handshake completes."""
        now = self._now if now is None else now
        lip, rip = IPv4Address(local_ip), IPv4Address(remote_ip)
        self.connects += 1
        if local_port is None:
            for attempt in range(64):
                local_port = 32768 + keyed_hash(self.seed, "ephemeral", self.ns_name, str(lip), str(rip),
                                                remote_port, self.connects, attempt,
                                                seed_as_key=False) % 28232
                if (lip, local_port, rip, remote_port) not in self.tcp:
                    break
        key = (lip, local_port, rip, remote_port)
        isn = keyed_hash(self.seed, "isn", self.ns_name, str(lip), local_port, str(rip), remote_port,
                         seed_as_key=False) & 0xFFFFFFFF
        conn = TcpConn("SYN_SENT", (isn + 1) & 0xFFFFFFFF, 0, isn=isn, queued=bytes(data),
                       close_queued=close)
        conn.ip_id = keyed_hash(self.seed, "inet_id", self.ns_name, str(lip), local_port, str(rip),
                                remote_port, seed_as_key=False) & 0xFFFF
        conn.handle = TcpHandle(self, key, "client", app, tag, auto_close, owner)
        self.tcp[key] = conn
        self.watch.touch(("sock", id(self), key))
        options = (struct.pack("!BBH", 2, 4, MSS) + b"\x04\x02\x08\x0a"
                   + struct.pack("!II", self._tsval(now), 0) + b"\x01\x03\x03" + bytes([window_scale()]))
        seg = TCP(local_port, remote_port, isn, 0, SYN, 64240, 0, 0, options)
        self.outbox.append(self._emit(key, conn, seg))
        return conn.handle

    def send(self, handle: TcpHandle, data: bytes, close: bool = False, now: float | None = None) -> int:
        """Segments of data (MSS-sized, PSH on each) and a FIN when close, on the
        connection of handle, into the outbox. Before the handshake completes
        the data waits; after the connection closed nothing is sent."""
        now = self._now if now is None else now
        conn = self.tcp.get(handle.key)
        if conn is None or conn.handle is not handle:
            return 0
        if conn.state == "SYN_SENT":
            conn.queued += data
            conn.close_queued |= close
            return 0
        if conn.state not in ("ESTABLISHED", "CLOSE_WAIT"):
            return 0
        n = 0
        size = conn.mss if handle.side == "client" else MSS
        for i in range(0, len(data), size):
            self.outbox.append(self._conn_seg(handle.key, conn, PSH | ACK, data[i:i + size], now))
            n += 1
        conn.sent += len(data)
        if data:
            conn.pingpong = True
        if close:
            self.outbox.append(self._conn_seg(handle.key, conn, FIN | ACK, b"", now))
            conn.state = "FIN_WAIT1" if conn.state == "ESTABLISHED" else "LAST_ACK"
            n += 1
        return n

    # --- what arrives: the connection's socket, a listener or a RST ------------
    def _tcp(self, ip: IPv4, l4: TCP, now: float) -> Delivery:
        key = (ip.dst, l4.dport, ip.src, l4.sport)
        owned = self.capture_owned.get(key) if self.capture_owned else None
        if owned is not None:                 # a flow kdp run's capture opened (kdp.livetcp)
            return owned.segment(ip, l4, now)
        if self.clients and ("tcp", ip.dst, l4.dport, ip.src, l4.sport) in self.clients:
            return Delivery("consumed", f"TCP [{wire.tcp_flag_str(l4.flags)}] received by client socket",
                            stateless=True)
        conn = self.tcp.get(key)
        no_socket = conn is None
        lst = self.listeners.get(("TCP", l4.dport))
        if l4.flags & RST:
            self.tcp.pop(key, None)
            if conn is not None and conn.handle is not None and conn.handle.side == "client":
                return self._client_reset(conn, now)
            return Delivery("consumed", "RST received: connection reset", stateless=no_socket,
                            event="rst" if conn is not None and conn.state == "SYN_RECV" else None)
        if conn is not None and conn.state == "TIME_WAIT" and now - conn.since >= TIME_WAIT_LEN:
            del self.tcp[key]                # TCP_TIMEWAIT_LEN passed: the socket is gone
            conn = None
        if conn is not None and conn.state == "TIME_WAIT":
            return self._time_wait(ip, l4, conn, lst, key, now)
        if conn is not None and conn.handle is not None and conn.handle.side == "client":
            return self._client_segment(ip, l4, conn, key, now)
        if conn is None:
            if l4.flags & SYN and not l4.flags & ACK and lst is not None:
                return self._syn(ip, l4, lst, now)
            return Delivery("closed", f"TCP port {l4.dport}: no socket, RST sent", [tcp_reset(ip, l4)],
                            stateless=no_socket, event="closed" if no_socket else None)
        return self._segment(ip, l4, conn, lst, now, key)

    def _syn(self, ip: IPv4, l4: TCP, lst: Listener, now: float) -> Delivery:
        key = (ip.dst, l4.dport, ip.src, l4.sport)
        isn = keyed_hash(self.seed, "isn", self.ns_name, ip_text(ip.dst), l4.dport, ip_text(ip.src),
                         l4.sport, seed_as_key=False) & 0xFFFFFFFF
        opts = parse_tcp_options(l4.options)
        ts_ok = "ts" in opts
        conn = TcpConn("SYN_RECV", isn + 1, (l4.seq + 1) & 0xFFFFFFFF, ts_ok)
        conn.ts_recent = opts["ts"][0] if ts_ok else 0
        conn.wscale = window_scale() if "ws" in opts else 0
        conn.snd_wscale = min(opts.get("ws", 0), 14)
        conn.sack_ok = bool(opts.get("sack"))
        conn.snd_una = (isn + 1) & M32               # the child socket's, once the handshake completes
        conn.ip_id = keyed_hash(self.seed, "inet_id", self.ns_name, ip_text(ip.dst), l4.dport,
                                ip_text(ip.src), l4.sport, seed_as_key=False) & 0xFFFF
        self.tcp[key] = conn
        self.watch.touch(("sock", id(self), key))
        options = synack_options(opts, self._tsval(now), mss=1460, wscale=conn.wscale)
        window = 65160 if ts_ok else 64240
        seg = TCP(l4.dport, l4.sport, isn, (l4.seq + 1) & 0xFFFFFFFF, SYN | ACK, window, 0, 0, options)
        return Delivery("answered", f"SYN to :{l4.dport} ({lst.owner}): SYN-ACK", [self._out(ip, seg)], lst.owner,
                        event="syn")

    def _segment(self, ip, l4, conn, lst, now, key) -> Delivery:
        owner = lst.owner if lst else None
        if l4.flags & SYN:
            self._track_ts(conn, l4)
            if conn.state == "SYN_RECV" and not l4.flags & ACK and lst is not None:
                return self._syn(ip, l4, lst, now)    # the SYN-ACK is sent again (same ISN)
            return Delivery("consumed", "retransmitted SYN for a known connection", owner=owner)
        old_ack = seq_after(conn.snd_una, l4.ack) and conn.state != "SYN_RECV"
        refused = self._ack_refused(ip, l4, conn, key, now, owner)
        if refused is not None:
            return refused
        if not old_ack:                  # tcp_ack: an old (but acceptable) ACK leaves ts_recent
            self._track_ts(conn, l4)
        if conn.handle is None:
            conn.handle = TcpHandle(self, key, "server", owner=owner or "")
        conn.app_state.setdefault("_handle", conn.handle)
        seq_end = (l4.seq + len(l4.payload) + (1 if l4.flags & FIN else 0)) & 0xFFFFFFFF
        if conn.state == "SYN_RECV" and l4.flags & ACK:
            conn.state = "ESTABLISHED"
        if conn.state == "LAST_ACK" and l4.flags & ACK and not l4.payload and l4.ack == conn.snd_nxt:
            del self.tcp[key]
            return Delivery("consumed", "final ACK: connection closed", owner=owner)
        data, dsack = l4.payload, None
        if (data or l4.flags & FIN) and not seq_after(seq_end, conn.rcv_nxt):
            return self._retransmitted(ip, l4, conn, seq_end, now, owner)
        if data and seq_after(conn.rcv_nxt, l4.seq):      # partly old: the new part is taken
            dsack = (l4.seq, conn.rcv_nxt)
            data = data[(conn.rcv_nxt - l4.seq) & M32:]
        answers, what = [], []
        if data or l4.flags & FIN:
            conn.rcv_nxt = seq_end
        close = False
        if dsack is not None:
            what.append(f"{len(l4.payload) - len(data)} bytes already received (D-SACK)")
            conn.pingpong = False
            answers.append(self._seg(ip, l4, conn, ACK, b"", now, dsack))
        if data and lst is not None and conn.state != "LAST_ACK":
            if not conn.pingpong:            # quick-ACK mode: the data is ACKed at once
                answers.append(self._seg(ip, l4, conn, ACK, b"", now))
            out, close, detail = lst.app.stream(conn.app_state, data, now)
            what.append(detail)
            if not out and conn.pingpong:
                answers.append(self._seg(ip, l4, conn, ACK, b"", now))
            for i in range(0, len(out), MSS):
                answers.append(self._seg(ip, l4, conn, PSH | ACK, out[i:i + MSS], now))
            if out:
                conn.pingpong = True         # answered right away: interactive from now on
        if close and not l4.flags & FIN:
            answers.append(self._seg(ip, l4, conn, FIN | ACK, b"", now))
            conn.state = "FIN_WAIT1"
            what.append("server closes (FIN)")
        if conn.state == "FIN_WAIT1" and l4.flags & ACK and l4.ack == conn.snd_nxt and not l4.flags & FIN:
            conn.state = "FIN_WAIT2"
            what.append("our FIN acknowledged")
        if l4.flags & FIN and conn.state in ("FIN_WAIT1", "FIN_WAIT2"):
            answers.append(self._seg(ip, l4, conn, ACK, b"", now))
            conn.state, conn.since = "TIME_WAIT", now
            what.append("peer's FIN acknowledged (TIME_WAIT)")
        elif l4.flags & FIN:
            answers.append(self._seg(ip, l4, conn, FIN | ACK, b"", now))
            conn.state = "LAST_ACK"
            what.append("FIN answered with FIN-ACK")
        if not answers:
            return Delivery("accepted", f"ACK on {conn.state} connection", owner=owner)
        return Delivery("answered", ", ".join(what), answers, owner)

    def _retransmitted(self, ip, l4, conn: TcpConn, seq_end: int, now: float, owner) -> Delivery:
        """tcp_data_queue(): a segment whose data (or FIN) was all received
        before, a retransmission: dropped, ACKed at once with a D-SACK block
        for it (when the peer offered SACK), quick-ACK mode entered."""
        conn.pingpong = False
        n = len(l4.payload)
        what = f"{n} bytes" if n else "FIN"
        return Delivery("answered", f"retransmitted {what} already received: dropped, ACKed again"
                        + (" with D-SACK" if conn.sack_ok else ""),
                        [self._seg(ip, l4, conn, ACK, b"", now, (l4.seq, seq_end))], owner)

    def _ack_refused(self, ip, l4, conn: TcpConn, key: tuple, now: float, owner) -> Delivery | None:
        """The ACK check of a segment for a connection (tcp_check_req in
        SYN-RECEIVED, tcp_ack later): a Delivery when the segment is refused,
        None when it goes on (snd_una, bytes_acked and max_window advanced)."""
        ack = l4.ack
        if conn.state == "SYN_RECV":
            if l4.flags & ACK and ack != conn.snd_nxt:
                return Delivery("answered", f"ACK {ack} is not for our SYN-ACK (expected {conn.snd_nxt}): "
                                "RST sent, the connection request stays", [tcp_reset(ip, l4)], owner)
            if not l4.flags & ACK:
                return Delivery("consumed", "segment without ACK for a connection request: dropped",
                                owner=owner)
        elif not l4.flags & ACK:
            return Delivery("consumed", f"segment without ACK on {conn.state} connection: dropped (TCP_FLAGS)",
                            owner=owner)
        window = l4.window << conn.snd_wscale
        if conn.state == "SYN_RECV":
            conn.max_window = window                 # tcp_create_openreq_child: snd_wnd of the final ACK
            return None
        limit = (conn.snd_una - min(conn.max_window, conn.bytes_acked)) & M32
        if seq_after(limit, ack):
            why = (f"ACK {ack} too old (before {limit}: snd_una {conn.snd_una} less the "
                   f"{min(conn.max_window, conn.bytes_acked)} bytes it may lag): segment dropped (TCP_TOO_OLD_ACK)")
        elif seq_after(ack, conn.snd_nxt):
            why = (f"ACK {ack} of data never sent (snd_nxt {conn.snd_nxt}): segment dropped "
                   "(TCP_ACK_UNSENT_DATA)")
        else:
            if seq_after(ack, conn.snd_una):
                conn.bytes_acked += (ack - conn.snd_una) & M32
                conn.snd_una = ack
            conn.max_window = max(conn.max_window, window)
            return None
        if conn.state != "ESTABLISHED":              # tcp_rcv_state_process: FLAG_NO_CHALLENGE_ACK
            return Delivery("consumed", why, owner=owner)
        if conn.last_oow is not None and 0 <= now - conn.last_oow < INVALID_RATELIMIT:
            return Delivery("consumed", why + ", challenge ACK rate-limited (tcp_invalid_ratelimit)",
                            owner=owner)
        conn.last_oow = now
        return Delivery("answered", why + ", challenge ACK sent",
                        [self._conn_seg(key, conn, ACK, b"", now)], owner)

    # --- active connections: what arrives -------------------------------------
    def _client_segment(self, ip: IPv4, l4: TCP, conn: TcpConn, key: tuple, now: float) -> Delivery:
        h = conn.handle
        owner = h.owner or None
        self._track_ts(conn, l4)
        if conn.state == "SYN_SENT":
            if l4.flags & (SYN | ACK) != (SYN | ACK) or l4.ack != conn.snd_nxt:
                if l4.flags & ACK:            # not for our SYN: RST (tcp_rcv_synsent_state_process)
                    return Delivery("closed", "unexpected segment for a connecting socket: RST",
                                    [tcp_reset(ip, l4)], owner)
                return Delivery("consumed", "segment without ACK ignored by a connecting socket", owner=owner)
            opts = parse_tcp_options(l4.options)
            conn.ts_ok = "ts" in opts
            conn.wscale = window_scale() if "ws" in opts else 0
            conn.mss = min(opts.get("mss", 536), MSS) - (12 if conn.ts_ok else 0)
            conn.rcv_nxt = (l4.seq + 1) & 0xFFFFFFFF
            conn.state = "ESTABLISHED"
            out = [self._conn_seg(key, conn, ACK, b"", now)]
            what = ["SYN-ACK: connected, ACK sent"]
            self._call(h, "on_connected", now)
            data, close = conn.queued, conn.close_queued
            conn.queued, conn.close_queued = b"", False
            if data or close:
                n = self.send(h, data, close, now)
                what.append(f"{len(data)} bytes sent in {n} segment{'s' * (n != 1)}" + (" + FIN" if close else ""))
            return Delivery("answered", ", ".join(what), out, owner)
        if l4.flags & SYN:
            return Delivery("consumed", "retransmitted SYN-ACK for an established connection", owner=owner)
        what, out = [], []
        if l4.payload and conn.state in ("ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2"):
            conn.rcv_nxt = (l4.seq + len(l4.payload)) & 0xFFFFFFFF
            conn.received += len(l4.payload)
            if not l4.flags & FIN:            # quick ACK: the data is acknowledged at once
                out.append(self._conn_seg(key, conn, ACK, b"", now))
            detail = self._call(h, "on_upstream", l4.payload, now)
            what.append(f"{len(l4.payload)} bytes received" + (f": {detail}" if detail else ""))
        if l4.flags & ACK and l4.ack == conn.snd_nxt and not l4.flags & FIN:
            if conn.state == "LAST_ACK":
                del self.tcp[key]
                what.append("final ACK: connection closed")
            elif conn.state == "FIN_WAIT1":
                conn.state = "FIN_WAIT2"
                what.append("our FIN acknowledged")
        if l4.flags & FIN and conn.state in ("ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2"):
            conn.rcv_nxt = (l4.seq + len(l4.payload) + 1) & 0xFFFFFFFF
            if conn.state == "ESTABLISHED":
                self._call(h, "on_closed", now)
                if conn.state == "ESTABLISHED" and h.auto_close:
                    out.append(self._conn_seg(key, conn, FIN | ACK, b"", now))
                    conn.state = "LAST_ACK"
                    what.append("peer's FIN answered with FIN-ACK")
                elif conn.state == "ESTABLISHED":
                    out.append(self._conn_seg(key, conn, ACK, b"", now))
                    conn.state = "CLOSE_WAIT"
                    what.append("peer's FIN acknowledged (CLOSE_WAIT)")
            else:
                out.append(self._conn_seg(key, conn, ACK, b"", now))
                conn.state, conn.since = "TIME_WAIT", now
                what.append("peer's FIN acknowledged (TIME_WAIT)")
        if not out and not self.outbox:
            return Delivery("accepted", ", ".join(what) or f"ACK on {conn.state} connection", owner=owner)
        return Delivery("answered", ", ".join(what) or "answered", out, owner)

    def _time_wait(self, ip, l4, conn: TcpConn, lst, key, now: float) -> Delivery:
        """A TIME_WAIT socket (tcp_timewait_state_process): a retransmitted FIN is
        ACKed again, a new SYN to a listener starts a new connection, anything
        else is dropped without an answer."""
        if l4.flags & SYN and not l4.flags & ACK and lst is not None:
            del self.tcp[key]
            return self._syn(ip, l4, lst, now)
        if l4.flags & FIN:
            seg = TCP(l4.dport, l4.sport, conn.snd_nxt, conn.rcv_nxt, ACK,
                      min((65160 if conn.ts_ok else 64240) >> conn.wscale, 65535), 0, 0,
                      self._ts_opt(conn, l4, now))
            ident, conn.ip_id = conn.ip_id, (conn.ip_id + 1) & 0xFFFF
            return Delivery("answered", "TIME_WAIT: retransmitted FIN ACKed again", [self._out(ip, seg, ident)])
        return Delivery("consumed", "TIME_WAIT: segment dropped")

    def _client_reset(self, conn: TcpConn, now: float) -> Delivery:
        h = conn.handle
        h.reset = "connection refused" if conn.state == "SYN_SENT" else "connection reset by peer"
        self._call(h, "on_reset", h.reset, now)
        return Delivery("consumed", f"RST received: {h.reset}", owner=h.owner or None)

    @staticmethod
    def _call(h: TcpHandle, name: str, *args):
        fn = getattr(h.app, name, None) if h.app is not None else None
        return fn(h, *args) if fn is not None else None

    def _track_ts(self, conn: TcpConn, l4: TCP) -> None:
        ts = parse_tcp_options(l4.options).get("ts")
        if ts is not None:
            conn.ts_recent = ts[0]

    def _conn_seg(self, key: tuple, conn: TcpConn, flags: int, payload: bytes, now: float) -> Packet:
        """A segment of conn built from its own state (not from a segment being
        answered): for sends an app makes, and for active connections."""
        if conn.handle is not None and conn.handle.side == "client":
            shift = conn.wscale
            window = (64240 + (1 << shift) - 1) >> shift     # tcp_select_window rounds up
        else:
            window = (65160 if conn.ts_ok else 64240) >> conn.wscale
        opts = b"\x01\x01\x08\x0a" + struct.pack("!II", self._tsval(now), conn.ts_recent) if conn.ts_ok else b""
        seg = TCP(key[1], key[3], conn.snd_nxt, conn.rcv_nxt, flags, min(window, 65535), 0, 0, opts, payload)
        conn.snd_nxt = (conn.snd_nxt + len(payload) + (1 if flags & (FIN | SYN) else 0)) & 0xFFFFFFFF
        return self._emit(key, conn, seg)

    def _emit(self, key: tuple, conn: TcpConn, seg: TCP) -> Packet:
        ident, conn.ip_id = conn.ip_id, (conn.ip_id + 1) & 0xFFFF
        return wire.finalize(Packet(BLANK_ETH, ip=IPv4(key[0], key[2], wire.PROTO_TCP, 64, ident, 2), l4=seg))

    # --- helpers ----------------------------------------------------------
    def _out(self, ip: IPv4, seg: TCP, ident: int = 0) -> Packet:
        return wire.finalize(Packet(BLANK_ETH, ip=IPv4(ip.dst, ip.src, wire.PROTO_TCP, 64, ident, 2), l4=seg))

    def _seg(self, ip: IPv4, l4: TCP, conn: TcpConn, flags: int, payload: bytes, now: float,
             dsack: tuple | None = None) -> Packet:
        """A segment of an established connection: sequence numbers advance,
        the window is the initial receive window scaled, the IP ID counts up.
        dsack: (start, end) of data received twice, reported in a D-SACK block
        (RFC 2883) when the peer offered SACK."""
        window = (65160 if conn.ts_ok else 64240) >> conn.wscale
        # TSecr: ts_recent, the TSval of the last segment that advanced it (tcp_ack)
        opts = b"\x01\x01\x08\x0a" + struct.pack("!II", self._tsval(now), conn.ts_recent) if conn.ts_ok else b""
        if dsack is not None and conn.sack_ok:           # tcp_options_write: NOP NOP SACK
            opts += b"\x01\x01\x05\x0a" + struct.pack("!II", dsack[0] & M32, dsack[1] & M32)
        seg = TCP(l4.dport, l4.sport, conn.snd_nxt, conn.rcv_nxt, flags, min(window, 65535), 0, 0,
                  opts, payload)
        conn.snd_nxt = (conn.snd_nxt + len(payload) + (1 if flags & (FIN | SYN) else 0)) & 0xFFFFFFFF
        ident, conn.ip_id = conn.ip_id, (conn.ip_id + 1) & 0xFFFF
        return self._out(ip, seg, ident)

    def _tsval(self, now: float) -> int:
        return (keyed_hash(self.seed, "ts", self.ns_name, seed_as_key=False) + int(now * 1000)) & 0xFFFFFFFF

    def _ts_opt(self, conn: TcpConn, l4: TCP, now: float) -> bytes:
        if not conn.ts_ok:
            return b""
        peer = parse_tcp_options(l4.options).get("ts", (0, 0))[0]
        return b"\x01\x01\x08\x0a" + struct.pack("!II", self._tsval(now), peer)


def parse_tcp_options(raw: bytes) -> dict:
    out = {}
    for kind, i, ln in wire.tcp_options(raw):
        body = raw[i + 2:i + ln]
        if kind == 2 and len(body) == 2:
            out["mss"] = struct.unpack("!H", body)[0]
        elif kind == 3 and len(body) == 1:
            out["ws"] = body[0]
        elif kind == 4:
            out["sack"] = True
        elif kind == 8 and len(body) == 8:
            out["ts"] = struct.unpack("!II", body)
    return out


def synack_options(offered: dict, tsval: int, mss: int, wscale: int = 7) -> bytes:
    """The SYN-ACK options Linux writes (tcp_options_write order)."""
    out = struct.pack("!BBH", 2, 4, min(mss, offered.get("mss", mss)) if "mss" in offered else mss)
    if "ts" in offered:
        lead = b"\x04\x02" if offered.get("sack") else b"\x01\x01"
        out += lead + b"\x08\x0a" + struct.pack("!II", tsval, offered["ts"][0])
    elif offered.get("sack"):
        out += b"\x01\x01\x04\x02"
    if "ws" in offered:
        out += b"\x01\x03\x03" + bytes([wscale])
    return out
