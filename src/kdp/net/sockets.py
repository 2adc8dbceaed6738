# net.sockets: the sockets living in a namespace and what the apps behind them
# answer, as a Linux host would: the socket table (listening TCP/UDP/SCTP ports of
# the pod's containers, echo servers unless an app says otherwise; client
# sockets for traffic kdp originates, capture-owned ones for kdp run's live
# TCP replay), the delivery of a local packet to it,
# UDP datagrams and ICMP echo. TCP connections, passive and active, run in
# net.tcpstate (SocketTable's TCP half); the Delivery record and the RST and
# ICMP error builders are net.replies. Builds answer packets (IP layer, Ether
# left blank); the datapath routes them out.
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from .. import wire
from ..watch import Watch
from ..wire import ICMP, SCTP, IPv4, Packet, TCP, UDP
from .ipident import IpIdents
from .replies import BLANK_ETH, ECHO_ICMP, ECHO_UDP, ICMP_ERROR, Delivery, icmp_error
from .sctpsock import sctp_deliver
from .tcpstate import TcpConn, TcpHandle, TcpSockets


class EchoApp:
    """What listens behind a container port unless something else is said: an
    echo server. Apps are the extension point for real services (DNS, HTTP):

    - datagram(payload, src, dst, now) -> (reply payload or None, detail)
    - stream(conn, data, now) -> (bytes to send, close after sending?, detail);
      `conn` is a dict the app may keep per-connection state in (e.g. a buffer).
      Inside kdp it also holds "_handle": the connection's TcpHandle, through
      which the app may answer later (handle.send) or open connections of its
      own (handle.table.connect); elsewhere (the oracle's real sockets) it is absent.
    src/dst are (IPv4Address, port) as seen by the socket (after DNAT).

    An app that opens connections (SocketTable.connect(..., app=APP)) gets:
    - on_connected(handle, now): the handshake completed (queued data follows);
    - on_upstream(handle, data, now) -> detail or None: bytes arrived;
    - on_closed(handle, now): the peer sent FIN (with auto_close the socket
      answers FIN-ACK at once; else it ACKs and waits for handle.close());
    - on_reset(handle, why, now): RST received (or the connection was refused).
    Every callback is optional; packets they cause (handle.send on any
    connection of the namespace) leave with the delivery that caused them."""

    name = "echo"

    def datagram(self, payload: bytes, src, dst, now: float):
        return payload, f"echoed {len(payload)} bytes"

    def stream(self, conn: dict, data: bytes, now: float):
        return data, False, f"{len(data)} bytes echoed"


ECHO = EchoApp()


@dataclass(frozen=True)
class Listener:
    port: int
    protocol: str                   # TCP | UDP | SCTP
    owner: str                      # container name (or "kubelet", "sshd"...)
    app: object = ECHO


class SocketTable(TcpSockets):
    """The sockets of one namespace; TCP runs in the TcpSockets half
    (net.tcpstate). Changes are reported to `watch` (the owning datapath's,
    once it has one)."""

    def __init__(self, ns_name: str, seed: int = 0, icmp_echo: bool = True, watch: Watch | None = None):
        self.ns_name = ns_name
        self.watch = watch if watch is not None else Watch()
        self.seed = seed
        self.icmp_echo = icmp_echo
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.tcp: dict[tuple, TcpConn] = {}
        self.sctp: dict[tuple, tuple] = {}        # SCTP associations (net.sctpsock)
        # the kernel's sctp module is loaded (the first SCTP socket on the host loads
        # it); without it SCTP gets ICMP protocol unreachable like any unknown protocol
        self.sctp_stack = True
        self.clients: set[tuple] = set()          # (proto, local ip, local port, remote ip, remote port)
        self.outbox: list[Packet] = []            # segments apps queued (send/connect/close)
        self.connects = 0                         # connect() calls: keys the ephemeral ports
        self._now = 0.0
        self.idents = IpIdents(seed, ns_name)     # IP IDs of unconnected sends and ICMP
        self.silent = False                       # kdp run --apps off: every segment consumed, none answered
        # kdp run's live TCP replay (kdp.livetcp): flows a capture opened from here, by
        # (local ip, local port, remote ip, remote port); .segment(ip, l4, now) consumes
        self.capture_owned: dict[tuple, object] = {}

    def listen(self, port: int, protocol: str, owner: str, app=None) -> None:
        self.listeners[(protocol.upper(), port)] = Listener(port, protocol.upper(), owner, app or ECHO)
        self.watch.bump()

    def open_connections(self) -> dict:
        """TCP connections that are not closed (TIME_WAIT sockets only linger)."""
        return {k: c for k, c in self.tcp.items() if c.state != "TIME_WAIT"}

    def listening(self) -> list[Listener]:
        return [self.listeners[k] for k in sorted(self.listeners)]

    def add_client(self, proto: str, lip: IPv4Address, lport: int, rip: IPv4Address, rport: int) -> None:
        self.clients.add((proto, lip, lport, rip, rport))
        self.watch.touch(("sock", id(self), (lip, lport, rip, rport)))

    def flush(self) -> list[Packet]:
        """The queued segments (for a caller driving a connection from outside a delivery)."""
        out, self.outbox = self.outbox, []
        return out

    def handles(self) -> list[TcpHandle]:
        return [c.handle for c in self.tcp.values() if c.handle is not None]

    # --- delivery ---------------------------------------------------------
    def deliver(self, pkt: Packet, now: float) -> Delivery:
        if self.silent:
            return Delivery("consumed", "consumed (apps off: the capture holds this host's own answers)",
                            stateless=isinstance(pkt.l4, (TCP, UDP)))     # (the flow cache keys TCP/UDP only)
        d = self._deliver(pkt, now)
        if self.outbox:                           # what apps queued meanwhile leaves now
            d.answers.extend(self.flush())
            if d.action in ("accepted", "consumed"):
                d.action = "answered"
        return d

    def _deliver(self, pkt: Packet, now: float) -> Delivery:
        ip, l4 = pkt.ip, pkt.l4
        self._now = now
        if isinstance(l4, ICMP):
            return self._icmp(pkt, now)
        if isinstance(l4, TCP):
            return self._tcp(ip, l4, now)
        if isinstance(l4, UDP):
            return self._udp(ip, l4)
        if isinstance(l4, SCTP) and self.sctp_stack:
            return sctp_deliver(self, ip, l4)
        return Delivery("closed", f"no socket for IP protocol {ip.proto}",
                        [icmp_error(pkt, wire.ICMP_DEST_UNREACH, 2, self._icmp_id(pkt))])

    def _icmp(self, pkt: Packet, now: float) -> Delivery:
        ip, l4 = pkt.ip, pkt.l4
        if l4.type == wire.ICMP_ECHO and self.icmp_echo:
            ident, bucket = self.idents.select_in(ip.dst, ip.src, wire.PROTO_ICMP, self._now)
            reply = Packet(BLANK_ETH, ip=IPv4(ip.dst, ip.src, wire.PROTO_ICMP, 64, ident, 0),
                           l4=ICMP(wire.ICMP_ECHOREPLY, 0, 0, l4.rest, l4.payload))
            return Delivery("answered", "ICMP echo reply", [wire.finalize(reply)], "kernel",
                            template=(ECHO_ICMP, self.idents, bucket))
        if l4.type == wire.ICMP_ECHOREPLY:
            return Delivery("consumed", "echo reply received by the pinging socket", owner="ping",
                            stateless=True)
        if l4.type in wire.ICMP_ERROR_TYPES:
            return Delivery("consumed", f"ICMP error ({wire.icmp_str(l4)}) reported to the socket",
                            stateless=True)
        return Delivery("consumed", f"ICMP type {l4.type} ignored")

    def _udp(self, ip: IPv4, l4: UDP) -> Delivery:
        if self.clients and ("udp", ip.dst, l4.dport, ip.src, l4.sport) in self.clients:
            return Delivery("consumed", f"UDP reply received by client socket :{l4.dport}",
                            stateless=True)
        lst = self.listeners.get(("UDP", l4.dport))
        if lst is None:
            pkt = Packet(BLANK_ETH, ip=ip, l4=l4)
            ident, bucket = self.idents.select_in(ip.dst, ip.src, wire.PROTO_ICMP, self._now)
            return Delivery("closed", f"UDP port {l4.dport} closed: ICMP port unreachable",
                            [icmp_error(pkt, wire.ICMP_DEST_UNREACH, wire.ICMP_PORT_UNREACH, ident)],
                            template=(ICMP_ERROR, self.idents, bucket))
        payload, detail = lst.app.datagram(l4.payload, (ip.src, l4.sport), (ip.dst, l4.dport), self._now)
        if payload is None:
            return Delivery("accepted", f"UDP :{l4.dport} ({lst.owner}): {detail}", owner=lst.owner)
        # an unconnected socket's sendto(): DF, and (on this kernel) a hashed IP ID
        ident, bucket = self.idents.select_in(ip.dst, ip.src, wire.PROTO_UDP, self._now)
        reply = Packet(BLANK_ETH, ip=IPv4(ip.dst, ip.src, wire.PROTO_UDP, 64, ident, 2),
                       l4=UDP(l4.dport, l4.sport, 0, payload))
        echo = (ECHO_UDP, self.idents, bucket) if type(lst.app) is EchoApp else None
        return Delivery("answered", f"UDP :{l4.dport} ({lst.owner}) {detail}",
                        [wire.finalize(reply)], lst.owner, template=echo)

    def _icmp_id(self, pkt: Packet) -> int:
        """The IP ID of an ICMP answer to pkt (echo reply, error): icmp_sk is unconnected."""
        return self.idents.select(pkt.ip.dst, pkt.ip.src, wire.PROTO_ICMP, self._now)
