# net.route: a namespace's routing table (main table plus the implicit local
# table built from its addresses) with longest-prefix-match lookup.
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from ..watch import Watch


@dataclass(frozen=True)
class Route:
    dst: IPv4Network
    dev: str
    via: IPv4Address | None = None
    src: IPv4Address | None = None      # preferred source ("src" in `ip route`)
    scope: str = "universe"             # universe | link | host
    metric: int = 0
    kind: str = "unicast"               # unicast | local | blackhole | unreachable
    linkdown: bool = False

    def __str__(self) -> str:
        head = "default" if self.dst.prefixlen == 0 else str(self.dst)
        if self.kind in ("blackhole", "unreachable"):
            return f"{self.kind} {head}"
        parts = [head]
        if self.via is not None:
            parts.append(f"via {self.via}")
        parts.append(f"dev {self.dev}")
        if self.scope != "universe":
            parts.append(f"proto kernel scope {self.scope}" if self.via is None else f"scope {self.scope}")
        if self.src is not None:
            parts.append(f"src {self.src}")
        if self.metric:
            parts.append(f"metric {self.metric}")
        if self.linkdown:
            parts.append("linkdown")
        return " ".join(parts)


class RouteTable:
    """The main routing table. Lookups take the longest prefix, then the lowest
    metric, then insertion order (as the kernel's FIB keeps the first route).
    Changes are reported to `watch` (the owning datapath's, once it has one)."""

    def __init__(self, watch: Watch | None = None) -> None:
        self.routes: list[Route] = []
        self.watch = watch if watch is not None else Watch()
        # lookup results by destination address (an int); valid while the
        # route list is the one they were computed from (the same object, held
        # here so its identity cannot be reused, and the same length)
        self._cache: dict[int, Route | None] = {}
        self._cache_of: tuple = (None, -1)

    def add(self, route: Route) -> None:
        self.routes.append(route)
        self.watch.bump()

    def remove_dev(self, dev: str) -> None:
        self.routes = [r for r in self.routes if r.dev != dev]
        self.watch.bump()

    def lookup(self, dst: IPv4Address) -> Route | None:
        routes = self.routes
        held, length = self._cache_of
        if held is not routes or length != len(routes):
            self._cache, self._cache_of = {}, (routes, len(routes))
        n = dst._ip                               # int(dst), without the call
        try:
            return self._cache[n]
        except KeyError:
            pass
        best: Route | None = None
        for r in routes:                  # linkdown routes still match (ignore_routes_with_linkdown=0)
            if n & int(r.dst.netmask) != int(r.dst.network_address):
                continue
            if best is None or r.dst.prefixlen > best.dst.prefixlen or \
                    (r.dst.prefixlen == best.dst.prefixlen and r.metric < best.metric):
                best = r
        if len(self._cache) < 65536:
            self._cache[n] = best
        return best

    def __iter__(self):
        return iter(self.routes)

    def dump(self) -> list[str]:
        """`ip route show` lines, sorted like iproute2 prints them (default first)."""
        ordered = sorted(self.routes, key=lambda r: (r.dst.prefixlen != 0, int(r.dst.network_address),
                                                     -r.dst.prefixlen, r.metric))
        return [str(r) for r in ordered]
