# net.neigh: the neighbour (ARP) cache of one namespace: resolved entries and
# packets queued while a resolution is in flight (the kernel's arp_queue).
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ..watch import WATCH


@dataclass
class NeighEntry:
    ip: IPv4Address
    dev: str
    mac: str | None = None
    state: str = "INCOMPLETE"          # INCOMPLETE | REACHABLE | STALE | FAILED | PERMANENT
    updated: float = 0.0
    queue: list = field(default_factory=list)   # packets waiting for the MAC
    hh: bool = False                    # the cached header: set once output used the entry

    def cache_header(self) -> None:
        """Output used the entry: its hardware header is cached from now on."""
        if not self.hh:
            self.hh = True
            WATCH.bump()


class NeighTable:
    QUEUE_LEN = 101                     # kernel default unres_qlen_bytes ~ 101 packets of 1 KiB

    def __init__(self) -> None:
        self.entries: dict[tuple[str, IPv4Address], NeighEntry] = {}

    def get(self, dev: str, ip: IPv4Address) -> NeighEntry | None:
        return self.entries.get((dev, ip))

    def lookup_mac(self, dev: str, ip: IPv4Address) -> str | None:
        e = self.entries.get((dev, ip))
        return e.mac if e is not None and e.state in ("REACHABLE", "STALE", "PERMANENT") else None

    def update(self, dev: str, ip: IPv4Address, mac: str, now: float, create: bool = True) -> list:
        """Record ip→mac on dev; returns the packets that were waiting for it."""
        e = self.entries.get((dev, ip))
        if e is None:
            if not create:
                return []
            e = self.entries[(dev, ip)] = NeighEntry(ip, dev)
        if e.state == "PERMANENT":
            return []
        WATCH.bump()
        e.mac, e.state, e.updated = mac, "REACHABLE", now
        waiting, e.queue = e.queue, []
        return waiting

    def add_permanent(self, dev: str, ip: IPv4Address, mac: str) -> None:
        self.entries[(dev, ip)] = NeighEntry(ip, dev, mac, "PERMANENT")
        WATCH.bump()

    def incomplete(self, dev: str, ip: IPv4Address, now: float) -> NeighEntry:
        e = self.entries.get((dev, ip))
        if e is None or e.state == "FAILED":
            e = self.entries[(dev, ip)] = NeighEntry(ip, dev, updated=now)
            WATCH.bump()
        return e

    def pending(self) -> list[NeighEntry]:
        return [e for e in self.entries.values() if e.state == "INCOMPLETE" and e.queue]

    def dump(self) -> list[str]:
        """`ip neigh show` lines."""
        out = []
        for (dev, ip), e in sorted(self.entries.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
            mac = f" lladdr {e.mac}" if e.mac else ""
            out.append(f"{ip} dev {dev}{mac} {e.state}")
        return out
