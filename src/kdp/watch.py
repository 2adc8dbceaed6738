# watch: the change log the flow cache revalidates against. Code that
# changes state a cached decision may rest on says so here: `bump()` for
# changes that invalidate every cached flow (routes, rules, listeners,
# neighbour entries), `touch(token)` for a change to one named thing (a
# socket appearing for a 4-tuple, an FDB entry moving). It records only;
# kdp.datapath.flowcache decides what to forget. No other logic lives here.
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


WATCH = Watch()
