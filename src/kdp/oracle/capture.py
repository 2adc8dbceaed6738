# oracle.capture: what the kernel put on every device. One AF_PACKET/ETH_P_ALL
# socket per device (opened inside the device's namespace, bound to it, like
# `tcpdump -i DEV -Q inout`), all read by one thread of this process: frames
# with their kernel timestamp and direction (PACKET_OUTGOING = "out", every
# other packet type = "in"). Also the pcap writer for --keep-pcaps. Owns no
# namespaces and sends nothing.
from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

from . import netns as N

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
RCVBUF = 4 << 20
SO_RCVBUFFORCE = 33


class Sniffer:
    def __init__(self) -> None:
        self._socks: dict[int, tuple[socket.socket, tuple[str, str]]] = {}
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
                try:
                    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                s.bind((d, ETH_P_ALL))
                s.setblocking(False)
                out.append((d, s))
            return out
        for d, s in N.run_in(netns, work):
            self._socks[s.fileno()] = (s, (kdp_ns, d))
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
        s, key = self._socks[fd]
        while True:
            try:
                data, anc, _flags, addr = s.recvmsg(65600, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            ts = time.time()
            for level, typ, blob in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(blob) >= 16:
                    sec, nsec = struct.unpack("qq", blob[:16])
                    ts = sec + nsec / 1e9
            direction = "out" if addr[2] == PACKET_OUTGOING else "in"
            with self._lock:
                self._frames[key].append((ts, bytes(data), direction))
                self.count += 1
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
        for s, _k in self._socks.values():
            s.close()
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
