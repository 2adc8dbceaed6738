# conntrack.table: one network namespace's conntrack table — both tuples of
# every confirmed entry indexed, expiry on packet time (lazy on lookup plus a
# sweep when inserting), capacity (nf_conntrack_max) with the kernel's early
# drop of non-assured entries, confirm with clash detection, the NAT by-source
# index, each original tuple's entry generation (a reopen draws anew),
# `conntrack -L` text and a plain-dict export. Per-packet tracking logic
# lives in conntrack.track; NAT in conntrack.nat.
from __future__ import annotations

import heapq
from collections.abc import Iterator
from itertools import islice

from .entry import ASSURED, CONFIRMED, DYING, ORIGINAL, REPLY, SEEN_REPLY, SRC_NAT_DONE, ConntrackEntry
from .keyed import decision_point, fast_flow_base
from .timeouts import Timeouts
from .tuples import Tuple

GENERATION_MEMORY = 16384  # original tuples whose entry generation a table remembers
EVICTION_RANGE = 8          # NF_CT_EVICTION_RANGE: buckets early_drop() looks at
BUCKET_SALT = decision_point("ct-bucket")   # the bucket hash is flow_base(seed ^ salt, tuple)
_L_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 132: "sctp", 136: "udplite"}


class ConntrackTable:
    """Confirmed conntrack entries of one namespace.

    Early drop (table full): every tuple hashes (keyed, deterministic) into one
    of `buckets` hash buckets — by default as many as max_entries, as the
    kernel sizes nf_conntrack_max from the hash size. The bucket is the
    kernel's reciprocal_scale() of the top 32 bits of flow_base(seed ^
    BUCKET_SALT, tuple) (bucket_of(); the compiled table uses the same hash
    for its index, so a bucket's entries are found from it). When a new connection
    finds the table full, the buckets starting at the new original tuple's
    bucket are scanned, up to 8 of them, and every non-ASSURED entry in the
    first bucket holding any is evicted (early_drop/early_drop_list). If none
    is found the new packet is dropped ("conntrack-table-full")."""

    def __init__(self, max_entries: int = 262144, timeouts: Timeouts | None = None, *,
                 buckets: int | None = None, tcp_loose: bool = True, checksum: bool = True,
                 seed: int = 0):
        self.max_entries = max_entries
        self.timeouts = timeouts or Timeouts()
        self.buckets = max(1, buckets if buckets is not None else max_entries or 1)
        self.tcp_loose = tcp_loose          # nf_conntrack_tcp_loose
        self.checksum = checksum            # nf_conntrack_checksum
        self.seed = seed
        self.stats = {"found": 0, "new": 0, "insert": 0, "insert_failed": 0, "drop": 0,
                      "early_drop": 0, "invalid": 0, "expired": 0}
        self._next_id = 1
        self._entries: dict[int, ConntrackEntry] = {}
        self._by_tuple: dict[Tuple, tuple[ConntrackEntry, str]] = {}
        # bucket -> its entries, for early drop only: built the first time the
        # table is full (from every entry), kept from then on
        self._buckets: dict[int, dict[int, ConntrackEntry]] | None = None
        self._by_source: dict[tuple, dict[int, ConntrackEntry]] = {}
        self._heap: list[tuple[float, int]] = []
        # original tuple -> entries of it confirmed so far: the next one's gen
        # (a reopened tuple draws its statistic choices anew). Bounded: the
        # GENERATION_MEMORY most recently confirmed tuples are remembered, so
        # memory stays flat however many flows a run sees (a tuple reopened
        # after that many other confirmations draws as its first entry did)
        self._generation: dict[Tuple, int] = {}
        self.recorder = None        # the flow cache's recorder while it watches a packet
        self.on_remove = None       # callable(entry) told of every removal (the flow cache)

    # --- queries ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ConntrackEntry]:
        return iter(list(self._entries.values()))

    def entries(self) -> list[ConntrackEntry]:
        return list(self._entries.values())

    def lookup(self, t: Tuple, now: float) -> tuple[ConntrackEntry, str] | None:
        """The entry and direction whose tuple is t; an expired entry is
        removed on the way (lazy expiry) and not returned."""
        hit = self._by_tuple.get(t)
        if hit is None:
            return None
        if hit[0].timeout_at <= now:
            self.stats["expired"] += 1
            self.remove(hit[0])
            return None
        return hit

    def tuple_taken(self, t: Tuple, ignore: ConntrackEntry | None, now: float) -> bool:
        """nf_conntrack_tuple_taken(): t is a tuple of another live entry."""
        hit = self.lookup(t, now)
        return hit is not None and hit[0] is not ignore

    def generation(self, t: Tuple) -> int:
        """How many entries of original tuple t the table confirmed (as far as
        it remembers): the next one's generation."""
        return self._generation.get(t, 0)

    def by_source(self, proto: int, src, sport: int) -> list[ConntrackEntry]:
        """Entries whose original tuple starts at (proto, src, sport) and that
        had their source manip set up (nf_nat_bysource)."""
        return list(self._by_source.get((proto, src, sport), {}).values())

    # --- lifecycle ------------------------------------------------------------
    def new_entry(self, orig: Tuple, reply: Tuple, now: float) -> ConntrackEntry:
        """An unconfirmed entry: attached to the packet, not yet in the table."""
        e = ConntrackEntry(orig, reply, created=now, id=self._next_id,
                           gen=self._generation.get(orig, 0))
        self._next_id += 1
        self.stats["new"] += 1
        return e

    def make_room(self, orig: Tuple, now: float) -> tuple[bool, list[ConntrackEntry]]:
        """Capacity check before a new entry is allocated. Returns (ok, evicted)."""
        if not self.max_entries or len(self._entries) < self.max_entries:
            return True, []
        self.sweep(now)
        if len(self._entries) < self.max_entries:
            return True, []
        evicted = self._early_drop(orig, now)
        if evicted:
            self.stats["early_drop"] += len(evicted)
            return True, evicted
        self.stats["drop"] += 1
        return False, []

    def confirm(self, e: ConntrackEntry, now: float) -> bool:
        """__nf_conntrack_confirm(): insert both tuples. False on a clash
        (either tuple already belongs to a live entry)."""
        if e.status & (CONFIRMED | DYING):
            return True
        for t in (e.orig, e.reply):
            if self.lookup(t, now) is not None:
                self.stats["insert_failed"] += 1
                return False
        self.sweep(now)
        e.status |= CONFIRMED
        self._remember_generation(e.orig, e.gen + 1)
        self._insert(e)
        self.stats["insert"] += 1
        if self.recorder is not None:
            self.recorder.ct_confirmed(self, e)
        return True

    def _remember_generation(self, orig: Tuple, gen: int) -> None:
        gens = self._generation
        gens.pop(orig, None)                # most recent last
        gens[orig] = gen
        if len(gens) > GENERATION_MEMORY + GENERATION_MEMORY // 4:
            for t in list(islice(gens, len(gens) - GENERATION_MEMORY)):
                del gens[t]

    def remove(self, e: ConntrackEntry) -> None:
        e.status |= DYING
        if self._entries.pop(e.id, None) is None:
            return
        if self.on_remove is not None:
            self.on_remove(e)
        for t in (e.orig, e.reply):
            if self._by_tuple.get(t, (None,))[0] is e:
                del self._by_tuple[t]
            if self._buckets is not None:
                b = self._buckets.get(self._bucket(t))
                if b is not None:
                    b.pop(e.id, None)
        src = self._by_source.get((e.orig.proto, e.orig.src, e.orig.sport))
        if src is not None:
            src.pop(e.id, None)
            if not src:
                del self._by_source[(e.orig.proto, e.orig.src, e.orig.sport)]

    def sweep(self, now: float) -> int:
        """Remove every entry whose timeout has passed (the GC worker)."""
        n = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, eid = heapq.heappop(heap)
            e = self._entries.get(eid)
            if e is None:
                continue
            if e.timeout_at <= now:
                self.remove(e)
                self.stats["expired"] += 1
                n += 1
            else:
                heapq.heappush(heap, (e.timeout_at, eid))
        if len(heap) > 2 * len(self._entries) + 1024:
            self._heap = [(e.timeout_at, e.id) for e in self._entries.values()]
            heapq.heapify(self._heap)
        return n

    def flush(self) -> None:
        for e in list(self._entries.values()):
            self.remove(e)

    # --- internals ------------------------------------------------------------
    def _bucket(self, t: Tuple) -> int:
        return bucket_of(self.seed, self.buckets, t)

    def _insert(self, e: ConntrackEntry) -> None:
        self._entries[e.id] = e
        self._by_tuple[e.orig] = (e, ORIGINAL)
        self._by_tuple[e.reply] = (e, REPLY)
        if self._buckets is not None:
            for t in (e.orig, e.reply):
                self._buckets.setdefault(self._bucket(t), {})[e.id] = e
        if e.status & SRC_NAT_DONE:
            self._by_source.setdefault((e.orig.proto, e.orig.src, e.orig.sport), {})[e.id] = e
        heapq.heappush(self._heap, (e.timeout_at, e.id))

    def _early_drop(self, orig: Tuple, now: float) -> list[ConntrackEntry]:
        if self._buckets is None:
            self._buckets = {}
            for e in self._entries.values():
                for t in (e.orig, e.reply):
                    self._buckets.setdefault(self._bucket(t), {})[e.id] = e
        start = self._bucket(orig)
        for i in range(min(EVICTION_RANGE, self.buckets)):
            chain = self._buckets.get((start + i) % self.buckets)
            if not chain:
                continue
            victims = []
            for e in list(chain.values()):
                if e.timeout_at <= now:
                    self.remove(e)
                    self.stats["expired"] += 1
                elif not e.status & ASSURED:
                    victims.append(e)
            for e in victims:
                self.remove(e)
            if victims:
                return victims
        return []

    # --- views ------------------------------------------------------------------
    def to_conntrack_l(self, now: float) -> str:
        """The table as `conntrack -L` prints it (remaining timeout at `now`)."""
        return "".join(conntrack_line(e, now) + "\n" for e in self._entries.values()
                       if e.timeout_at > now)

    def export(self) -> list[dict]:
        return [e.to_dict() for e in self._entries.values()]

    def import_(self, items: list[dict]) -> None:
        """Load exported entries (confirmed) into this table, replacing any
        entry holding the same tuples."""
        for d in items:
            e = ConntrackEntry.from_dict(d)
            e.status |= CONFIRMED
            e.status &= ~DYING
            for t in (e.orig, e.reply):
                hit = self._by_tuple.get(t)
                if hit is not None:
                    self.remove(hit[0])
            old = self._entries.get(e.id)
            if old is not None:
                self.remove(old)
            self._insert(e)
            self._remember_generation(e.orig, max(self._generation.get(e.orig, 0), 1))   # it existed
            self._next_id = max(self._next_id, e.id + 1)


def bucket_of(seed: int, buckets: int, t: Tuple) -> int:
    """The hash bucket of a tuple: reciprocal_scale(hash >> 32, buckets), as
    the kernel's hash_conntrack() scales its hash to the table size."""
    h = fast_flow_base(seed ^ BUCKET_SALT, t.proto, t.src._ip, t.dst._ip, t.sport, t.dport)
    return ((h >> 32) * buckets) >> 32


def conntrack_line(e: ConntrackEntry, now: float) -> str:
    proto = e.orig.proto
    parts = [f"{_L_NAMES.get(proto, 'unknown'):<8} {proto} {int(e.remaining(now))}"]
    if e.proto_state is not None:
        parts.append(e.proto_state)
    parts.append(e.orig.conntrack_fields())
    if not e.status & SEEN_REPLY:
        parts.append("[UNREPLIED]")
    parts.append(e.reply.conntrack_fields())
    if e.status & ASSURED:
        parts.append("[ASSURED]")
    parts.append(f"mark={e.mark} use=1")
    return " ".join(parts)
