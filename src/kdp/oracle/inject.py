# oracle.inject: transmit exact frame bytes on a device inside a namespace, as
# kdp's Emulator.send does: an AF_PACKET raw socket bound to the device (opened
# from a thread that entered the namespace), no socket of the stack behind it.
# Sockets are cached per device and closed by close(). Captures nothing.
from __future__ import annotations

import socket

from . import netns as N

ETH_P_ALL = 0x0003


class Injector:
    def __init__(self) -> None:
        self._socks: dict[tuple[str, str], socket.socket] = {}

    def _sock(self, netns: str, dev: str) -> socket.socket:
        key = (netns, dev)
        s = self._socks.get(key)
        if s is None:
            def work():
                # protocol 0: this socket receives nothing, it only sends
                sk = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                sk.bind((dev, 0))
                return sk
            s = self._socks[key] = N.run_in(netns, work)
        return s

    def send(self, netns: str, dev: str, frame: bytes) -> None:
        n = self._sock(netns, dev).send(frame)
        if n != len(frame):
            raise N.NetnsError(f"short AF_PACKET send on {netns}:{dev} ({n} of {len(frame)} bytes)")

    def close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks.clear()
