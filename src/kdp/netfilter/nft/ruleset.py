# netfilter.nft.ruleset: NftRuleset, every nftables table of one namespace in creation
# order, with the lookups a walker needs and its `nft list ruleset` text (render).
from __future__ import annotations

from dataclasses import dataclass, field

from .model import Table
from .render import render_ruleset


@dataclass
class NftRuleset:
    """Every table of one namespace, in creation order."""

    tables: list[Table] = field(default_factory=list)

    def table(self, family: str, name: str) -> Table | None:
        for t in self.tables:
            if t.family == family and t.name == name:
                return t
        return None

    def render(self) -> str:
        """The ruleset as `nft list ruleset` prints it."""
        return render_ruleset(self.tables)
