# livetcp: `kdp run`'s live TCP replay (the default; --raw turns it off). It
# owns the TCP flows a capture opens from the attachment point (a SYN sent
# from it; with --at auto, from any sender's device): a capture-owned socket
# per flow in the sending namespace's socket table consumes what the live
# peer answers (no RST from that stack) and learns the peer's ISN, timestamps and how far it has sent; the flow's
# later frames have their acknowledgement number, SACK blocks and timestamp
# echo shifted from the recorded peer's sequence space into the live peer's,
# TCP checksum updated incrementally (a wrong one stays wrong). Frames the
# capture holds from the peer to the attachment point are not injected (the
# live peer answers): the runner reports them skipped. A segment the live
# peer would not accept is reported on its line, never fixed; so is a
# retransmission (data, FIN or SYN the capture already sent on the flow),
# sent as recorded (translated like any segment): the live peer ACKs it again.
#
# UDP flows the capture sends from the attachment point (with --at auto, from
# any sender's) belong to it too, as a client's socket would (a connected UDP
# socket, SocketTable.add_client): the live peer's datagrams back to it are
# consumed there, not answered with ICMP port unreachable, and the recorded
# peer's datagrams are skipped. Nothing of a UDP frame is translated.
from __future__ import annotations

import struct
from ipaddress import IPv4Address
from dataclasses import dataclass

from . import wire
from .checksum import csum_replace
from .net.replies import Delivery
from .net.tcpstate import parse_tcp_options

PEER_ANSWERS = "live-peer-answers"        # skip reason: the peer's recorded frame (the live peer answers)
M32 = 0xFFFFFFFF


def _after(a: int, b: int) -> bool:
    """a is after b in sequence space (before(b, a) in the kernel)."""
    return 0 < ((a - b) & M32) < 0x80000000


@dataclass
class LiveFlow:
    """One capture-owned TCP flow: key is (local ip, local port, remote ip,
    remote port) as the capture sends it from the attachment point."""
    key: tuple
    client_isn: int
    rec_isn: int | None = None           # the recorded peer's ISN (capture's SYN-ACK, or first ACK - 1)
    rec_ts: int | None = None            # the recorded peer's first TSval
    live_isn: int | None = None          # the live peer's ISN (its SYN-ACK, consumed here)
    live_ts: int | None = None           # the live peer's first TSval
    live_nxt: int | None = None          # the sequence number after the last the live peer sent
    reset: bool = False                  # the live peer reset the flow
    fin: bool = False                    # the live peer sent its FIN
    received: int = 0                    # payload bytes the live peer sent
    sent_nxt: int | None = None          # the sequence number after the last the capture sent
    acked: int | None = None             # the highest ack the live peer took (its snd_una)
    max_window: int = 0                  # the largest window the capture offered it (scaled)
    wscale: int | None = None            # the capture's window shift (its SYN's; None: not offered)

    # --- the capture-owned socket: what the live peer sends ----------------------
    def segment(self, ip, l4, now: float) -> Delivery:
        """A segment of the live peer arriving at the attachment namespace:
        consumed as the recording's client application's socket would."""
        if l4.flags & wire.RST:
            self.reset = True
            return Delivery("consumed", "RST consumed by the capture's socket (live TCP replay)")
        ts = parse_tcp_options(l4.options).get("ts")
        first = False
        if l4.flags & wire.SYN and l4.flags & wire.ACK:
            first = self.live_isn is None and self.live_nxt is None
            if self.live_isn is None:
                self.live_isn = l4.seq
                self.live_ts = ts[0] if ts else None
                if "ws" not in parse_tcp_options(l4.options):
                    self.wscale = None               # scaling needs both sides' offer
            what = "SYN-ACK"
        else:
            what = f"{len(l4.payload)} bytes" if l4.payload else "ACK"
            if l4.flags & wire.FIN:
                what += " + FIN"
                self.fin = True
        end = (l4.seq + len(l4.payload) + (1 if l4.flags & (wire.SYN | wire.FIN) else 0)) & M32
        if self.live_nxt is None or _after(end, self.live_nxt):
            self.live_nxt = end
        self.received += len(l4.payload)
        return Delivery("consumed", f"{what} consumed by the capture's socket (live TCP replay)",
                        event="live" if what == "SYN-ACK" and first else None)


class LiveTcp:
    """The capture-owned flows of one run, attached at device `dev` (None:
    each frame's own device is passed to outbound(), as with --at auto)."""

    def __init__(self, dev=None) -> None:
        self.dev = dev
        self.table = dev.namespace.sockets if dev is not None else None   # None: no sockets (replayed())
        self.flows: dict[tuple, LiveFlow] = {}
        self.by_local: dict[tuple, LiveFlow] = {}     # (local ip, local port) -> the flow (peer frames)
        # capture-owned UDP flows: (local ip, port, remote ip, port), addresses as integers
        self.udp: set[tuple] = set()

    def outbound(self, frame: bytes, pkt, dev=None) -> tuple:
        """What to do with a parsed frame about to be injected at the
        attachment point (or at `dev`, its sender's device): (action, info)
        where action is "raw" (not a capture-owned flow), "skip" (info:
        reason), or "live" (info: dict with the translated frame's fields:
        "frame" bytes or None when unchanged, "translated" {field: [recorded,
        sent]}, "unacceptable" text or None)."""
        ip, l4 = pkt.ip, pkt.l4
        if ip is not None and isinstance(l4, wire.UDP) and not (ip.frag or ip.flags & 1):
            return self._udp(ip, l4, dev)
        if ip is None or not isinstance(l4, wire.TCP) or ip.frag or ip.flags & 1:
            return "raw", None
        key = (ip.src, l4.sport, ip.dst, l4.dport)
        flow = self.flows.get(key)
        if l4.flags & wire.SYN and not l4.flags & wire.ACK:
            table = self.table if dev is None else dev.namespace.sockets
            if dev is not None and table is None:            # a sender with no sockets modelled
                return "raw", None
            again = None
            if flow is None or flow.client_isn != l4.seq:        # a new flow (or the port reused)
                flow = self._own(key, l4.seq, table)
                flow.wscale = parse_tcp_options(l4.options).get("ws")
            else:
                again = "SYN sent before"
            return "live", {"frame": None, "translated": {}, "unacceptable": None, "retransmission": again}
        if flow is None:
            peer = self.by_local.get((ip.dst, l4.dport))
            if peer is not None:                 # the recorded peer's side: learn, do not inject
                if l4.flags & wire.SYN and l4.flags & wire.ACK and l4.ack == (peer.client_isn + 1) & M32:
                    peer.rec_isn = l4.seq
                    ts = parse_tcp_options(l4.options).get("ts")
                    peer.rec_ts = ts[0] if ts else None
                return "skip", PEER_ANSWERS
            return "raw", None
        info = self._translate(flow, frame, pkt)
        info["retransmission"] = self._retransmission(flow, l4)
        return "live", info

    @staticmethod
    def _retransmission(flow: LiveFlow, l4) -> str | None:
        """What of this segment the capture sent on the flow before (None: nothing)."""
        n = len(l4.payload) + (1 if l4.flags & wire.FIN else 0)
        if not n:
            return None
        end = (l4.seq + n) & M32
        if flow.sent_nxt is None or _after(end, flow.sent_nxt):
            old = 0 if flow.sent_nxt is None or not _after(flow.sent_nxt, l4.seq) else \
                (flow.sent_nxt - l4.seq) & M32
            flow.sent_nxt = end
            return f"{old} of its {n} bytes sent before" if old else None
        return ("FIN sent before" if not l4.payload else
                f"{len(l4.payload)} bytes sent before" + (" + FIN" if l4.flags & wire.FIN else ""))

    def _udp(self, ip, l4, dev=None) -> tuple:
        """A UDP datagram: the capture's own flow (raw injection; its socket
        consumes the answers), or the recorded peer's datagram of one (skipped)."""
        key = (ip.src._ip, l4.sport, ip.dst._ip, l4.dport)
        if key in self.udp:
            return "raw", None
        if (key[2], key[3], key[0], key[1]) in self.udp:
            return "skip", PEER_ANSWERS
        table = self.table if dev is None else dev.namespace.sockets
        if dev is not None and table is None:            # a sender with no sockets modelled
            return "raw", None
        self.udp.add(key)
        if table is not None:
            table.add_client("udp", ip.src, l4.sport, ip.dst, l4.dport)
        return "raw", None

    @staticmethod
    def _udp_key(frame: bytes) -> tuple:
        return (int.from_bytes(frame[26:30], "big"), (frame[34] << 8) | frame[35],
                int.from_bytes(frame[30:34], "big"), (frame[36] << 8) | frame[37])

    def udp_claimable(self, frame: bytes) -> bool:
        """A UDP frame from the attachment point opens a capture-owned flow
        (_udp() would make its socket): neither it nor its peer is known."""
        key = self._udp_key(frame)
        return self.table is not None and key not in self.udp and \
            (key[2], key[3], key[0], key[1]) not in self.udp

    def claim_udp(self, frame: bytes) -> None:
        """Take a new UDP flow from the attachment point as _udp() takes it
        (udp_claimable() said it opens one): its socket made."""
        key = self._udp_key(frame)
        self.udp.add(key)
        self.table.add_client("udp", IPv4Address(key[0]), key[1], IPv4Address(key[2]), key[3])

    def _own(self, key: tuple, isn: int, table) -> LiveFlow:
        flow = LiveFlow(key, isn, sent_nxt=(isn + 1) & M32)
        self.flows[key] = flow
        self.by_local[(key[0], key[1])] = flow
        if table is not None:
            table.capture_owned[key] = flow
            table.watch.touch(("sock", id(table), key))
        return flow

    def _translate(self, flow: LiveFlow, frame: bytes, pkt) -> dict:
        l4 = pkt.l4
        out = {"frame": None, "translated": {}, "unacceptable": None}
        if not l4.flags & wire.ACK:
            return out
        if frame[12:14] != b"\x08\x00":
            out["unacceptable"] = "not a plain Ethernet IPv4 frame: not translated"
            return out
        opts = parse_tcp_options(l4.options)
        if flow.rec_isn is None:                 # a one-sided capture: the client's first ACK
            flow.rec_isn = (l4.ack - 1) & M32
            if "ts" in opts:
                flow.rec_ts = opts["ts"][1]
        if flow.reset:
            out["unacceptable"] = "the live peer reset this flow"
        if flow.live_isn is None:
            out["unacceptable"] = out["unacceptable"] or "the live peer sent no SYN-ACK: not translated"
            return out
        delta = (flow.live_isn - flow.rec_isn) & M32
        ts_delta = ((flow.live_ts - flow.rec_ts) & M32
                    if flow.live_ts is not None and flow.rec_ts is not None else None)
        return self._rewrite(flow, frame, delta, ts_delta, out)

    def _rewrite(self, flow: LiveFlow, frame: bytes, delta: int, ts_delta, out: dict) -> dict:
        raw = bytearray(frame)
        l4at = 14 + (raw[14] & 0x0F) * 4
        doff = (raw[l4at + 12] >> 4) * 4
        csum = struct.unpack_from("!H", raw, l4at + 16)[0]
        tr = out["translated"]

        def put32(at: int, value: int) -> int:
            nonlocal csum
            old = bytes(raw[at:at + 4])
            new = struct.pack("!I", value & M32)
            raw[at:at + 4] = new
            csum = csum_replace(csum, old, new) if (at - l4at) % 2 == 0 else _odd(raw, l4at, csum, at, old)
            return value & M32

        old_ack = struct.unpack_from("!I", raw, l4at + 8)[0]
        new_ack = put32(l4at + 8, old_ack + delta)
        if delta:
            tr["ack"] = [old_ack, new_ack]
        end = l4at + doff
        for kind, i, ln in wire.tcp_options(raw, l4at + 20, end):
            if kind == 5 and delta:              # SACK blocks: edges in the peer's space
                for at in range(i + 2, min(i + ln, end) - 7, 8):
                    for edge in (at, at + 4):
                        put32(edge, struct.unpack_from("!I", raw, edge)[0] + delta)
                tr["sack"] = tr.get("sack", 0) + (ln - 2) // 8
            elif kind == 8 and ln == 10 and ts_delta:
                old = struct.unpack_from("!I", raw, i + 6)[0]
                tr["tsecr"] = [old, put32(i + 6, old + ts_delta)]
        struct.pack_into("!H", raw, l4at + 16, csum)
        if tr:
            out["frame"] = bytes(raw)
        if flow.live_nxt is not None and _after(new_ack, flow.live_nxt):
            out["unacceptable"] = out["unacceptable"] or (
                f"acknowledges {(new_ack - flow.live_nxt) & M32} bytes the live peer has not sent "
                f"(ack {new_ack}, the peer sent up to {flow.live_nxt})")
        else:
            self._too_old(flow, new_ack, struct.unpack_from("!H", raw, l4at + 14)[0], out)
        return out

    @staticmethod
    def _too_old(flow: LiveFlow, ack: int, window: int, out: dict) -> None:
        """The live peer's tcp_ack() takes an ACK back to its snd_una less the
        smaller of the largest window offered and the bytes acknowledged
        (RFC 5961 5.2); an older one is dropped: reported. Else the ACK moves
        what the peer took."""
        window <<= flow.wscale or 0
        if flow.acked is None:                   # the handshake's ACK: exactly the SYN-ACK's
            if ack != (flow.live_isn + 1) & M32:
                out["unacceptable"] = out["unacceptable"] or (
                    f"is not the ACK of the live peer's SYN-ACK (ack {ack}, expected "
                    f"{(flow.live_isn + 1) & M32}): the peer answers RST")
                return
            flow.acked, flow.max_window = ack, window
            return
        lag = min(flow.max_window, (flow.acked - flow.live_isn - 1) & M32)
        if _after((flow.acked - lag) & M32, ack):
            out["unacceptable"] = out["unacceptable"] or (
                f"acknowledges {(flow.acked - ack) & M32} bytes less than before, more than the "
                f"{lag} the live peer lets an ACK lag: too old (ack {ack}, acknowledged up to {flow.acked})")
            return
        if _after(ack, flow.acked):
            flow.acked = ack
        flow.max_window = max(flow.max_window, window)


def _odd(raw: bytearray, l4at: int, csum: int, at: int, old: bytes) -> int:
    """A 32-bit field at an odd offset of the segment (options can put one
    there): update the checksum over the 6 aligned bytes around it."""
    start = at - 1
    tail = bytes(raw[at + 4:at + 5]) or b"\x00"       # the segment may end there (padded with zero)
    before = bytes(raw[start:start + 1]) + old + tail
    return csum_replace(csum, before, bytes(raw[start:at + 4]) + tail)


def translated_text(info: dict) -> str:
    """The text line's note: what was translated and what the peer would not accept."""
    parts = []
    tr = info.get("translated") or {}
    if "ack" in tr:
        parts.append(f"ack {tr['ack'][0]}->{tr['ack'][1]}")
    if "sack" in tr:
        parts.append(f"{tr['sack']} SACK block{'s' * (tr['sack'] != 1)}")
    if "tsecr" in tr:
        parts.append(f"tsecr {tr['tsecr'][0]}->{tr['tsecr'][1]}")
    text = f"  translated {', '.join(parts)}" if parts else ""
    if info.get("retransmission"):
        text += f"  retransmission: {info['retransmission']}"
    if info.get("unacceptable"):
        text += f"  ! {info['unacceptable']}"
    return text



def replayed(recorded: list[bytes], k: int, inbound: list) -> bytes:
    """recorded[k] (frames one client sent, its SYN first) as live replay
    transmits it, given the live peer's segments that reached the client so far
    (parsed packets, in order): for a driver other than `kdp run` — the kernel
    oracle's scenario, whose kdp and kernel sides translate alike."""
    live = LiveTcp(None)
    for i, frame in enumerate(recorded[:k + 1]):
        pkt = wire.parse(frame)
        _action, info = live.outbound(frame, pkt)
        if i == 0:
            (flow,) = live.flows.values()
            lip, lport, rip, rport = flow.key
            for q in inbound:
                if q is not None and q.ip is not None and isinstance(q.l4, wire.TCP) \
                        and (q.ip.dst, q.l4.dport, q.ip.src, q.l4.sport) == (lip, lport, rip, rport):
                    flow.segment(q.ip, q.l4, 0.0)
    return (info or {}).get("frame") or recorded[k]
