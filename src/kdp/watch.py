# watch: the change log a flow cache revalidates against. Each Datapath owns
# one (Datapath.watch) and hands it to the objects of its namespaces that
# report changes: routing and neighbour tables, socket tables, netfilter (and
# the datapath's own ARP). `bump()` for changes that invalidate every cached
# flow (routes, rules, listeners, neighbour entries), `touch(token)` for a
# change to one named thing (a socket appearing for a 4-tuple, an FDB entry
# moving). It records only; kdp.datapath.flowcache decides what to forget. No
# process-wide instance: two datapaths in one process never hear each other.
from __future__ import annotations


class Watch:
    def __init__(self) -> None:
        self.generation = 0
        self.tokens: list | None = None     # a list while a flow cache listens

    def bump(self) -> None:
        self.generation += 1

    def touch(self, token) -> None:
        if self.tokens is not None:
            self.tokens.append(token)
