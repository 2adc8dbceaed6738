# netfilter.recent: the per-namespace address lists of the `recent` match
# (xt_recent.c): tables by name, entries per (masked) address with the last
# ip_pkt_list_tot time stamps, LRU eviction at ip_list_tot entries, and the
# set/rcheck/update/remove/reap logic on packet time.
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from ipaddress import IPv4Address

IP_LIST_TOT = 100        # module parameter ip_list_tot: entries per table
IP_PKT_LIST_TOT = 20     # module parameter ip_pkt_list_tot: stamps per entry


@dataclass
class RecentEntry:
    addr: IPv4Address
    ttl: int
    stamps: list[float] = field(default_factory=list)


@dataclass
class RecentTable:
    name: str
    mask: IPv4Address
    entries: OrderedDict = field(default_factory=OrderedDict)    # addr -> RecentEntry (LRU order)


class RecentTables:
    """All recent tables of one namespace (/proc/net/xt_recent/*)."""

    def __init__(self, ip_list_tot: int = IP_LIST_TOT, ip_pkt_list_tot: int = IP_PKT_LIST_TOT):
        self.ip_list_tot = ip_list_tot
        self.ip_pkt_list_tot = ip_pkt_list_tot
        self.tables: dict[str, RecentTable] = {}

    def table(self, name: str, mask: IPv4Address | None = None) -> RecentTable:
        t = self.tables.get(name)
        if t is None:
            t = self.tables[name] = RecentTable(name, mask or IPv4Address("255.255.255.255"))
        return t

    def show(self, name: str, now: float) -> list[str]:
        """Lines like /proc/net/xt_recent/NAME (times relative to now)."""
        t = self.tables.get(name)
        if t is None:
            return []
        return [f"src={e.addr} ttl: {e.ttl} last_seen: {e.stamps[-1]:.3f} oldest_pkt: "
                f"{len(e.stamps)} " + ", ".join(f"{s:.3f}" for s in e.stamps)
                for e in t.entries.values()]

    def _update(self, t: RecentTable, e: RecentEntry, now: float) -> None:
        e.stamps.append(now)
        if len(e.stamps) > self.ip_pkt_list_tot:
            del e.stamps[0]
        t.entries.move_to_end(e.addr)

    @staticmethod
    def _reap(t: RecentTable, since: float, working: RecentEntry, updating: bool) -> None:
        """recent_entry_reap(): drop the least recently used entry if stale."""
        oldest = next(iter(t.entries.values()))
        if oldest is working and updating:
            return
        if since > oldest.stamps[-1]:
            del t.entries[oldest.addr]

    def match(self, m, pc) -> bool:
        """recent_mt()."""
        ip = pc.ip
        addr = ip.dst if m.side == "rdest" else ip.src
        ttl = ip.ttl + (1 if pc.out_dev is not None and pc.hook != "OUTPUT" else 0)
        t = self.table(m.table, m.mask)
        addr = IPv4Address(int(addr) & int(t.mask))
        now = pc.now
        ret = m.inv
        e = t.entries.get(addr)
        if e is not None and m.rttl and e.ttl != ttl:
            e = None
        if e is None:
            if m.mode != "set":
                return ret
            if len(t.entries) >= self.ip_list_tot:
                t.entries.popitem(last=False)
            e = t.entries[addr] = RecentEntry(addr, ttl)
            self._update(t, e, now)
            return not ret
        if m.mode == "set":
            ret = not ret
        elif m.mode == "remove":
            del t.entries[addr]
            return not ret
        else:   # rcheck / update
            since = now - m.seconds
            hits = 0
            for s in e.stamps:
                if m.seconds and since > s:
                    continue
                hits += 1
                if not m.hitcount or hits >= m.hitcount:
                    ret = not ret
                    break
            if m.reap:
                self._reap(t, since, e, m.mode == "update" and ret)
        if m.mode == "set" or (m.mode == "update" and ret):
            self._update(t, e, now)
            e.ttl = ttl
        return ret
