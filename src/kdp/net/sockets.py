# net.sockets: the sockets living in a namespace and what the apps behind them
# answer, as a Linux host would: listening TCP/UDP ports of the pod's
# containers (echo servers), a minimal TCP state per connection, client sockets
# for traffic kdp originates, ICMP echo. Builds answer packets (IP layer, Ether
# left blank); the datapath routes them out.
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from .. import wire
from ..wire import ACK, FIN, ICMP, IPv4, Packet, PSH, RST, SYN, TCP, UDP

BLANK_ETH = wire.Ether("00:00:00:00:00:00", "00:00:00:00:00:00", wire.ETH_P_IP)


def keyed(seed: int, *parts) -> int:
    h = hashlib.blake2b(repr((seed,) + parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")


class EchoApp:
    """What listens behind a container port unless something else is said: an
    echo server. Apps are the extension point for real services (DNS, HTTP):

    - datagram(payload, src, dst, now) -> (reply payload or None, detail)
    - stream(conn, data, now) -> (bytes to send, close after sending?, detail);
      `conn` is a dict the app may keep per-connection state in (e.g. a buffer).
    src/dst are (IPv4Address, port) as seen by the socket (after DNAT)."""

    name = "echo"

    def datagram(self, payload: bytes, src, dst, now: float):
        return payload, f"echoed {len(payload)} bytes"

    def stream(self, conn: dict, data: bytes, now: float):
        return data, False, f"{len(data)} bytes echoed"


ECHO = EchoApp()
MSS = 1460
TCP_RMEM = (4096, 131072, 6291456)   # net.ipv4.tcp_rmem, the kernel's default


def window_scale(rmem_max: int = TCP_RMEM[2]) -> int:
    """tcp_select_initial_window(): the shift that fits the largest receive buffer."""
    space, wscale = rmem_max, 0
    while space > 65535 and wscale < 14:
        space >>= 1
        wscale += 1
    return wscale


@dataclass(frozen=True)
class Listener:
    port: int
    protocol: str                   # TCP | UDP
    owner: str                      # container name (or "kubelet", "sshd"...)
    app: object = ECHO


@dataclass
class TcpConn:
    state: str                      # SYN_RECV | ESTABLISHED | LAST_ACK | CLIENT
    snd_nxt: int
    rcv_nxt: int
    ts_ok: bool = False
    app_state: dict = field(default_factory=dict)
    wscale: int = 0                 # our receive window shift (0 when the peer did not offer scaling)
    ip_id: int = 0                  # inet_id: a random start, +1 per segment (connected socket)
    pingpong: bool = False          # interactive mode: ACKs ride on the answers (no quick ACK)


@dataclass
class Delivery:
    """What the socket layer did with a locally delivered packet."""

    action: str                     # accepted | answered | consumed | closed
    detail: str
    answers: list[Packet] = field(default_factory=list)
    owner: str | None = None


class SocketTable:
    def __init__(self, ns_name: str, seed: int = 0, icmp_echo: bool = True):
        self.ns_name = ns_name
        self.seed = seed
        self.icmp_echo = icmp_echo
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.tcp: dict[tuple, TcpConn] = {}
        self.clients: set[tuple] = set()          # (proto, local ip, local port, remote ip, remote port)
        self._now = 0.0

    def listen(self, port: int, protocol: str, owner: str, app=None) -> None:
        self.listeners[(protocol.upper(), port)] = Listener(port, protocol.upper(), owner, app or ECHO)

    def listening(self) -> list[Listener]:
        return [self.listeners[k] for k in sorted(self.listeners)]

    def add_client(self, proto: str, lip: IPv4Address, lport: int, rip: IPv4Address, rport: int) -> None:
        self.clients.add((proto, lip, lport, rip, rport))

    # --- delivery ---------------------------------------------------------
    def deliver(self, pkt: Packet, now: float) -> Delivery:
        ip, l4 = pkt.ip, pkt.l4
        self._now = now
        if isinstance(l4, ICMP):
            return self._icmp(pkt, now)
        if isinstance(l4, TCP):
            return self._tcp(ip, l4, now)
        if isinstance(l4, UDP):
            return self._udp(ip, l4)
        return Delivery("closed", f"no socket for IP protocol {ip.proto}",
                        [icmp_error(pkt, wire.ICMP_DEST_UNREACH, 2, self._icmp_id(pkt))])

    def _icmp(self, pkt: Packet, now: float) -> Delivery:
        ip, l4 = pkt.ip, pkt.l4
        if l4.type == wire.ICMP_ECHO and self.icmp_echo:
            if ("icmp", ip.dst, l4.ident, ip.src, 0) in self.clients:
                return Delivery("consumed", "echo request to own client socket")
            reply = Packet(BLANK_ETH, ip=IPv4(ip.dst, ip.src, wire.PROTO_ICMP, 64, self._icmp_id(pkt), 0),
                           l4=ICMP(wire.ICMP_ECHOREPLY, 0, 0, l4.rest, l4.payload))
            return Delivery("answered", "ICMP echo reply", [wire.finalize(reply)], "kernel")
        if l4.type == wire.ICMP_ECHOREPLY:
            return Delivery("consumed", "echo reply received by the pinging socket", owner="ping")
        if l4.type in wire.ICMP_ERROR_TYPES:
            return Delivery("consumed", f"ICMP error ({wire.icmp_str(l4)}) reported to the socket")
        return Delivery("consumed", f"ICMP type {l4.type} ignored")

    def _udp(self, ip: IPv4, l4: UDP) -> Delivery:
        if ("udp", ip.dst, l4.dport, ip.src, l4.sport) in self.clients:
            return Delivery("consumed", f"UDP reply received by client socket :{l4.dport}")
        lst = self.listeners.get(("UDP", l4.dport))
        if lst is None:
            pkt = Packet(BLANK_ETH, ip=ip, l4=l4)
            return Delivery("closed", f"UDP port {l4.dport} closed: ICMP port unreachable",
                            [icmp_error(pkt, wire.ICMP_DEST_UNREACH, wire.ICMP_PORT_UNREACH,
                                        self._icmp_id(pkt))])
        payload, detail = lst.app.datagram(l4.payload, (ip.src, l4.sport), (ip.dst, l4.dport), self._now)
        if payload is None:
            return Delivery("accepted", f"UDP :{l4.dport} ({lst.owner}): {detail}", owner=lst.owner)
        ident = keyed(self.seed, "udp-id", self.ns_name, str(ip.dst), str(ip.src), l4.sport) & 0xFFFF
        reply = Packet(BLANK_ETH, ip=IPv4(ip.dst, ip.src, wire.PROTO_UDP, 64, ident or 1, 2),
                       l4=UDP(l4.dport, l4.sport, 0, payload))
        return Delivery("answered", f"UDP :{l4.dport} ({lst.owner}) {detail}",
                        [wire.finalize(reply)], lst.owner)

    def _tcp(self, ip: IPv4, l4: TCP, now: float) -> Delivery:
        key = (ip.dst, l4.dport, ip.src, l4.sport)
        if ("tcp", ip.dst, l4.dport, ip.src, l4.sport) in self.clients:
            return Delivery("consumed", f"TCP [{wire.tcp_flag_str(l4.flags)}] received by client socket")
        conn = self.tcp.get(key)
        lst = self.listeners.get(("TCP", l4.dport))
        if l4.flags & RST:
            self.tcp.pop(key, None)
            return Delivery("consumed", "RST received: connection reset")
        if conn is None:
            if l4.flags & SYN and not l4.flags & ACK and lst is not None:
                return self._syn(ip, l4, lst, now)
            return Delivery("closed", f"TCP port {l4.dport}: no socket, RST sent", [tcp_reset(ip, l4)])
        return self._segment(ip, l4, conn, lst, now, key)

    def _syn(self, ip: IPv4, l4: TCP, lst: Listener, now: float) -> Delivery:
        key = (ip.dst, l4.dport, ip.src, l4.sport)
        isn = keyed(self.seed, "isn", self.ns_name, str(ip.dst), l4.dport, str(ip.src), l4.sport) & 0xFFFFFFFF
        opts = parse_tcp_options(l4.options)
        ts_ok = "ts" in opts
        conn = TcpConn("SYN_RECV", isn + 1, (l4.seq + 1) & 0xFFFFFFFF, ts_ok)
        conn.wscale = window_scale() if "ws" in opts else 0
        conn.ip_id = keyed(self.seed, "inet_id", self.ns_name, str(ip.dst), l4.dport, str(ip.src),
                           l4.sport) & 0xFFFF
        self.tcp[key] = conn
        options = synack_options(opts, self._tsval(now), mss=1460, wscale=conn.wscale)
        window = 65160 if ts_ok else 64240
        seg = TCP(l4.dport, l4.sport, isn, (l4.seq + 1) & 0xFFFFFFFF, SYN | ACK, window, 0, 0, options)
        return Delivery("answered", f"SYN to :{l4.dport} ({lst.owner}): SYN-ACK", [self._out(ip, seg)], lst.owner)

    def _segment(self, ip, l4, conn, lst, now, key) -> Delivery:
        owner = lst.owner if lst else None
        if l4.flags & SYN:
            return Delivery("consumed", "retransmitted SYN for a known connection", owner=owner)
        seq_end = (l4.seq + len(l4.payload) + (1 if l4.flags & FIN else 0)) & 0xFFFFFFFF
        if conn.state == "SYN_RECV" and l4.flags & ACK:
            conn.state = "ESTABLISHED"
        if conn.state == "LAST_ACK" and l4.flags & ACK and not l4.payload:
            del self.tcp[key]
            return Delivery("consumed", "final ACK: connection closed", owner=owner)
        answers, what = [], []
        if l4.payload or l4.flags & FIN:
            conn.rcv_nxt = seq_end
        close = False
        if l4.payload and lst is not None and conn.state != "LAST_ACK":
            if not conn.pingpong:            # quick-ACK mode: the data is ACKed at once
                answers.append(self._seg(ip, l4, conn, ACK, b"", now))
            out, close, detail = lst.app.stream(conn.app_state, l4.payload, now)
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
        if l4.flags & FIN and conn.state == "FIN_WAIT1":
            answers.append(self._seg(ip, l4, conn, ACK, b"", now))
            del self.tcp[key]
            what.append("peer's FIN acknowledged: closed")
        elif l4.flags & FIN:
            answers.append(self._seg(ip, l4, conn, FIN | ACK, b"", now))
            conn.state = "LAST_ACK"
            what.append("FIN answered with FIN-ACK")
        if not answers:
            return Delivery("accepted", f"ACK on {conn.state} connection", owner=owner)
        return Delivery("answered", ", ".join(what), answers, owner)

    # --- helpers ----------------------------------------------------------
    def _out(self, ip: IPv4, seg: TCP, ident: int = 0) -> Packet:
        return wire.finalize(Packet(BLANK_ETH, ip=IPv4(ip.dst, ip.src, wire.PROTO_TCP, 64, ident, 2), l4=seg))

    def _seg(self, ip: IPv4, l4: TCP, conn: TcpConn, flags: int, payload: bytes, now: float) -> Packet:
        """A segment of an established connection: sequence numbers advance,
        the window is the initial receive window scaled, the IP ID counts up."""
        window = (65160 if conn.ts_ok else 64240) >> conn.wscale
        seg = TCP(l4.dport, l4.sport, conn.snd_nxt, conn.rcv_nxt, flags, min(window, 65535), 0, 0,
                  self._ts_opt(conn, l4, now), payload)
        conn.snd_nxt = (conn.snd_nxt + len(payload) + (1 if flags & (FIN | SYN) else 0)) & 0xFFFFFFFF
        ident, conn.ip_id = conn.ip_id, (conn.ip_id + 1) & 0xFFFF
        return self._out(ip, seg, ident)

    def _tsval(self, now: float) -> int:
        return (keyed(self.seed, "ts", self.ns_name) + int(now * 1000)) & 0xFFFFFFFF

    def _ts_opt(self, conn: TcpConn, l4: TCP, now: float) -> bytes:
        if not conn.ts_ok:
            return b""
        peer = parse_tcp_options(l4.options).get("ts", (0, 0))[0]
        return b"\x01\x01\x08\x0a" + struct.pack("!II", self._tsval(now), peer)

    def _icmp_id(self, pkt: Packet) -> int:
        ip = pkt.ip
        return keyed(self.seed, "ipid", self.ns_name, str(ip.src), str(ip.dst), ip.ident) & 0xFFFF


def parse_tcp_options(raw: bytes) -> dict:
    out, i = {}, 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2:
            break
        ln = raw[i + 1]
        body = raw[i + 2:i + ln]
        if kind == 2 and len(body) == 2:
            out["mss"] = struct.unpack("!H", body)[0]
        elif kind == 3 and len(body) == 1:
            out["ws"] = body[0]
        elif kind == 4:
            out["sack"] = True
        elif kind == 8 and len(body) == 8:
            out["ts"] = struct.unpack("!II", body)
        i += ln
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


def tcp_reset(ip: IPv4, l4: TCP) -> Packet:
    """tcp_v4_send_reset(): RST for a segment that found no socket."""
    if l4.flags & ACK:
        seg = TCP(l4.dport, l4.sport, l4.ack, 0, RST, 0)
    else:
        seg_len = len(l4.payload) + (1 if l4.flags & SYN else 0) + (1 if l4.flags & FIN else 0)
        seg = TCP(l4.dport, l4.sport, 0, (l4.seq + seg_len) & 0xFFFFFFFF, RST | ACK, 0)
    return wire.finalize(Packet(BLANK_ETH, ip=IPv4(ip.dst, ip.src, wire.PROTO_TCP, 64, 0, 2), l4=seg))


def icmp_error(pkt: Packet, typ: int, code: int, ident: int, src: IPv4Address | None = None) -> Packet:
    """icmp_send(): quote the offending IP header and the first 8 bytes of its
    payload (the kernel quotes up to 576 bytes in total; we quote what fits)."""
    ip = pkt.ip
    l4_bytes = wire.emit_l4(pkt.l4) if pkt.l4 is not None else pkt.payload
    quoted = wire.ip_header(ip, len(l4_bytes)) + l4_bytes
    quoted = quoted[:576 - 28]
    out = Packet(BLANK_ETH, ip=IPv4(src or ip.dst, ip.src, wire.PROTO_ICMP, 64, ident, 0, tos=0xC0),
                 l4=ICMP(typ, code, 0, 0, quoted))
    return wire.finalize(out)
