# netfilter.nft: nftables rulesets as text and values — the model (tables, sets, maps,
# chains, rules with structured expressions), the parser of `nft list ruleset` output and
# `nft -f` transactions, and the printer that reproduces `nft list ruleset` byte for byte;
# the packet path's evaluation lives in engine (expr, sets: what rules read and look up).
from .model import (AnonSet, BinOp, Chain, Concat, Counter, Ct, Element, Fib, Match, Meta,
                    MetaSet, Nat, NftSet, Numgen, Payload, Reject, Rule, SetRef, SetUpdate, Table,
                    Value, Verdict, Vmap)
from .ruleset import NftRuleset
from .parse import parse_rule, parse_ruleset

__all__ = [
    "AnonSet", "BinOp", "Chain", "Concat", "Counter", "Ct", "Element", "Fib", "Match", "Meta",
    "MetaSet", "Nat", "NftRuleset", "NftSet", "Numgen", "Payload", "Reject", "Rule", "SetRef",
    "SetUpdate", "Table", "Value", "Verdict", "Vmap", "parse_rule", "parse_ruleset",
]
