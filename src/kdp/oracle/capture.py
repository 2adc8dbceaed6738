# oracle.capture: what the kernel put on every device, as `tcpdump -i DEV -Q
# inout` shows it. One AF_PACKET/ETH_P_ALL socket per device (opened inside the
# device's namespace, bound to it) with a TPACKET_V2 receive ring, as libpcap
# uses: the kernel copies each frame into the ring at the tap itself
# (tpacket_rcv), so a header the stack rewrites afterwards (br_netfilter's
# bridged DNAT puts the sender's MAC back after the bridge device's tap) is seen
# as it was at the tap, not as a plain recvmsg() copying the shared data later
# would see it. All rings are read by one thread of this process: frames with
# their kernel timestamp and direction (PACKET_OUTGOING = "out", every other
# packet type = "in"). Also the pcap writer for --keep-pcaps. Owns no namespaces
# and sends nothing.
from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import threading
import time

from . import netns as N

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_RX_RING, PACKET_VERSION, TPACKET_V2 = 263, 5, 10, 1
TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
# the ring of one device: 4 blocks of 1 MiB, frames of 4 KiB (1024 frames; a
# frame longer than 4 KiB less the headers is cut, as with tcpdump -s)
FRAME_SIZE, BLOCK_SIZE, BLOCK_NR = 4096, 1 << 20, 4
FRAME_NR = BLOCK_SIZE // FRAME_SIZE * BLOCK_NR
# struct tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec (then vlan, padding);
# struct sockaddr_ll follows at TPACKET_ALIGN(32): its sll_pkttype at 32 + 10
TPACKET2_HDR = struct.Struct("IIIHHII")
SLL_PKTTYPE = 32 + 10


class Ring:
    """One socket's mmapped TPACKET_V2 receive ring and the next frame to read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.map = mmap.mmap(sock.fileno(), BLOCK_SIZE * BLOCK_NR, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self.index = 0

    def frames(self):
        """(timestamp, bytes, packet type) of every frame ready, handed back to the kernel."""
        m = self.map
        while True:
            off = self.index * FRAME_SIZE
            status, _len, snaplen, mac, _net, sec, nsec = TPACKET2_HDR.unpack_from(m, off)
            if not status & TP_STATUS_USER:
                return
            data = bytes(m[off + mac:off + mac + snaplen])
            pkttype = m[off + SLL_PKTTYPE]
            struct.pack_into("I", m, off, TP_STATUS_KERNEL)
            self.index = (self.index + 1) % FRAME_NR
            yield sec + nsec / 1e9, data, pkttype

    def close(self) -> None:
        self.map.close()
        self.sock.close()


class Sniffer:
    def __init__(self) -> None:
        self._socks: dict[int, tuple[Ring, tuple[str, str]]] = {}
        self._frames: dict[tuple[str, str], list] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_frame = time.monotonic()
        self.count = 0

    def open(self, netns: str, kdp_ns: str, devices: list[str]) -> None:
        def work():
            out = []
            for d in devices:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
                s.setsockopt(SOL_PACKET, PACKET_RX_RING,
                             struct.pack("IIII", BLOCK_SIZE, BLOCK_NR, FRAME_SIZE, FRAME_NR))
                s.bind((d, ETH_P_ALL))
                s.setblocking(False)
                out.append((d, s))
            return out
        for d, s in N.run_in(netns, work):
            self._socks[s.fileno()] = (Ring(s), (kdp_ns, d))
            self._frames.setdefault((kdp_ns, d), [])

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="oracle-sniffer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        poller = select.poll()
        for fd in self._socks:
            poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ev in poller.poll(20):
                self._drain(fd)

    def _drain(self, fd: int) -> None:
        ring, key = self._socks[fd]
        got = [(ts, data, "out" if pkttype == PACKET_OUTGOING else "in")
               for ts, data, pkttype in ring.frames()]
        if got:
            with self._lock:
                self._frames[key].extend(got)
                self.count += len(got)
                self.last_frame = time.monotonic()

    def clear(self) -> None:
        with self._lock:
            for v in self._frames.values():
                v.clear()

    def wait_quiet(self, quiet: float, max_wait: float, min_wait: float = 0.0) -> float:
        """Wait until no frame arrived for `quiet` seconds (at least min_wait,
        at most max_wait). Returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            now = time.monotonic()
            with self._lock:
                idle = now - max(self.last_frame, t0)
            if now - t0 >= max_wait or (idle >= quiet and now - t0 >= min_wait):
                return now - t0
            time.sleep(0.01)

    def peek(self, key: tuple[str, str]) -> list:
        """The frames captured on one device so far (not cleared)."""
        with self._lock:
            return list(self._frames.get(key, []))

    def take(self) -> dict[tuple[str, str], list]:
        """The frames captured since the last clear/take: {(kdp ns, dev): [(ts, bytes, dir)]}."""
        with self._lock:
            out = {k: list(v) for k, v in self._frames.items() if v}
            for v in self._frames.values():
                v.clear()
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        for ring, _k in self._socks.values():
            ring.close()
        self._socks.clear()


def write_pcap(path: str, frames: list[tuple[float, bytes]]) -> None:
    """A classic pcap file (Ethernet) of (timestamp, bytes) records."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        for ts, raw in frames:
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, int(round((ts - sec) * 1e9)) % 1000000000, len(raw), len(raw)))
            f.write(raw)
