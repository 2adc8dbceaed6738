# net.neigh: the neighbour (ARP) cache of one namespace: resolved entries and
# packets queued while a resolution is in flight (the kernel's arp_queue).
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ..watch import Watch


@dataclass
class NeighEntry:
    ip: IPv4Address
    dev: str
    mac: str | None = None
    state: str = "INCOMPLETE"          # INCOMPLETE | REACHABLE | STALE | FAILED | PERMANENT
    updated: float = 0.0
    queue: list = field(default_factory=list)   # packets waiting for the MAC
    hh: bool = False                    # the cached header: set once output used the entry


_USABLE = ("REACHABLE", "STALE", "PERMANENT")     # states whose MAC output uses


class NeighTable:
    """Changes are reported to `watch` (the owning datapath's, once it has one)."""

    QUEUE_LEN = 101                     # kernel default unres_qlen_bytes ~ 101 packets of 1 KiB

    def __init__(self, watch: Watch | None = None) -> None:
        self.entries: dict[tuple[str, IPv4Address], NeighEntry] = {}
        self.watch = watch if watch is not None else Watch()
        # False: no entry is INCOMPLETE (only incomplete() makes one), so pending(),
        # asked after every frame, has nothing to look for
        self._maybe_incomplete = False

    def get(self, dev: str, ip: IPv4Address) -> NeighEntry | None:
        return self.entries.get((dev, ip))

    def lookup_mac(self, dev: str, ip: IPv4Address) -> str | None:
        e = self.entries.get((dev, ip))
        return e.mac if e is not None and e.state in _USABLE else None

    def resolve(self, dev: str, ip: IPv4Address) -> tuple[NeighEntry | None, str | None]:
        """(get(dev, ip), lookup_mac(dev, ip)) in one lookup."""
        e = self.entries.get((dev, ip))
        return e, (e.mac if e is not None and e.state in _USABLE else None)

    def update(self, dev: str, ip: IPv4Address, mac: str, now: float, create: bool = True) -> list:
        """Record ip→mac on dev; returns the packets that were waiting for it."""
        e = self.entries.get((dev, ip))
        if e is None:
            if not create:
                return []
            e = self.entries[(dev, ip)] = NeighEntry(ip, dev)
        if e.state == "PERMANENT":
            return []
        self.watch.bump()
        e.mac, e.state, e.updated = mac, "REACHABLE", now
        waiting, e.queue = e.queue, []
        return waiting

    def add_permanent(self, dev: str, ip: IPv4Address, mac: str) -> None:
        self.entries[(dev, ip)] = NeighEntry(ip, dev, mac, "PERMANENT")
        self.watch.bump()

    def incomplete(self, dev: str, ip: IPv4Address, now: float) -> NeighEntry:
        e = self.entries.get((dev, ip))
        if e is None or e.state == "FAILED":
            e = self.entries[(dev, ip)] = NeighEntry(ip, dev, updated=now)
            self.watch.bump()
        self._maybe_incomplete = True
        return e

    def cache_header(self, e: NeighEntry) -> None:
        """Output used the entry: its hardware header is cached from now on."""
        if not e.hh:
            e.hh = True
            self.watch.bump()

    def fail(self, e: NeighEntry) -> None:
        """No answer came: the entry is FAILED (its queue is the caller's to drain)."""
        e.state = "FAILED"
        self.watch.bump()

    def pending(self) -> list[NeighEntry]:
        """INCOMPLETE entries with packets queued."""
        if not self._maybe_incomplete:
            return []
        incomplete = [e for e in self.entries.values() if e.state == "INCOMPLETE"]
        if not incomplete:
            self._maybe_incomplete = False
        return [e for e in incomplete if e.queue]

    def dump(self) -> list[str]:
        """`ip neigh show` lines."""
        out = []
        for (dev, ip), e in sorted(self.entries.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
            mac = f" lladdr {e.mac}" if e.mac else ""
            out.append(f"{ip} dev {dev}{mac} {e.state}")
        return out
