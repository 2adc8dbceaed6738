# oracle.listeners: the apps behind kdp's SocketTables, for real: in each real
# namespace, a real TCP and UDP socket on every port the kdp namespace listens
# on (pods' container ports, the nodes' sshd/kubelet/kube-proxy ports, the
# outside hosts' ports), whose payloads come from the very app object kdp runs
# there (echo by default; CoreDNS, the VNet's DNS...), so the same answers
# exist on both sides while the real kernel does all the networking. UDP
# replies leave from the address the request was sent to (IP_PKTINFO), which
# matters in the catch-all `ext` namespace. One thread serves every socket.
# Closed ports are left to the kernel (RST, ICMP port unreachable).
from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import threading

from ..net.sockets import ECHO
from . import netns as N

IP_PKTINFO = 8
IP_TRANSPARENT = 19


class EchoServers:
    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.opened: list[tuple[str, str, int]] = []     # (kdp ns, proto, port)
        self.errors: list[str] = []

    def open(self, netns: str, kdp_ns: str, listeners, transparent: bool = False) -> None:
        """transparent: IP_TRANSPARENT sockets (the catch-all namespace answers
        from addresses it does not own)."""
        apps = {(l.protocol.upper(), l.port): getattr(l, "app", None) for l in listeners}
        wanted = [(l.protocol.upper(), l.port) for l in listeners if l.protocol.upper() in ("TCP", "UDP")]

        def work():
            out, errs = [], []
            for proto, port in wanted:
                try:
                    if proto == "TCP":
                        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        if transparent:
                            s.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        s.bind(("0.0.0.0", port))
                        s.listen(128)
                    else:
                        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                        if transparent:
                            s.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
                        s.bind(("0.0.0.0", port))
                    s.setblocking(False)
                    out.append((proto, port, s))
                except OSError as e:
                    errs.append(f"{kdp_ns} {proto}/{port}: {e.strerror}")
            return out, errs
        socks, errs = N.run_in(netns, work)
        self.errors += errs
        for proto, port, s in socks:
            self._socks.append(s)
            self._sel.register(s, selectors.EVENT_READ, (proto, "listen", apps.get((proto, port)) or ECHO, None))
            self.opened.append((kdp_ns, proto, port))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="oracle-echo", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _mask in self._sel.select(0.05):
                proto, role, app, state = key.data
                try:
                    if proto == "TCP" and role == "listen":
                        self._accept(key.fileobj, app)
                    elif proto == "TCP":
                        self._echo_tcp(key.fileobj, app, state)
                    else:
                        self._echo_udp(key.fileobj, app)
                except OSError:
                    pass

    def _accept(self, s: socket.socket, app) -> None:
        try:
            conn, _ = s.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._socks.append(conn)
        self._sel.register(conn, selectors.EVENT_READ, ("TCP", "conn", app, {}))

    def _echo_tcp(self, c: socket.socket, app, state: dict) -> None:
        try:
            data = c.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            out, close, _detail = app.stream(state, data, 0.0)
            c.setblocking(True)
            c.settimeout(1.0)
            if out:
                c.sendall(out)
            if close:
                c.shutdown(socket.SHUT_WR)
            c.setblocking(False)
            return
        self._sel.unregister(c)
        self._socks.remove(c)
        c.close()

    def _echo_udp(self, s: socket.socket, app) -> None:
        while True:
            try:
                data, anc, _fl, addr = s.recvmsg(65536, 256)
            except BlockingIOError:
                return
            cmsg, local = [], None
            for level, typ, blob in anc:
                if level == socket.IPPROTO_IP and typ == IP_PKTINFO and len(blob) >= 12:
                    _ifi, _spec, dst = struct.unpack("I4s4s", blob[:12])
                    local = (ipaddress.IPv4Address(dst), s.getsockname()[1])
                    cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("I4s4s", 0, dst, b"\0" * 4))]
            reply, _detail = app.datagram(data, (ipaddress.IPv4Address(addr[0]), addr[1]), local, 0.0)
            if reply is not None:
                s.sendmsg([reply], cmsg, 0, addr)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        for s in self._socks:
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self._socks.clear()
        self._sel.close()
