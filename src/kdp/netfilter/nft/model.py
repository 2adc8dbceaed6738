# netfilter.nft.model: an nftables ruleset as `nft list ruleset` shows it — tables,
# sets and maps with their elements, chains (base chains with type, hook, priority and
# policy), rules as lists of statements, and the expressions statements read (payload,
# meta, ct, numgen, fib, concatenations, bitwise operations). Plain frozen values kept in
# the kernel's order (sets and chains in creation order, rules in chain order) so a later
# engine can walk them; the whole ruleset is ruleset.NftRuleset, printing lives in render,
# reading in parse.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

# -- expressions (what a rule reads from the packet or its metadata) ----------------------


@dataclass(frozen=True)
class Payload:
    """A header field: ``ip daddr``, ``th dport``, ``tcp dport``."""

    proto: str
    field: str


@dataclass(frozen=True)
class Meta:
    """Packet metadata: ``meta l4proto``, ``meta mark``, ``iifname``."""

    key: str


@dataclass(frozen=True)
class Ct:
    """Conntrack state of the packet's entry: ``ct state``, ``ct mark``."""

    key: str


@dataclass(frozen=True)
class Numgen:
    """``numgen random mod N [offset M]``: a number in [offset, offset+N)."""

    mode: str
    mod: int
    offset: int = 0


@dataclass(frozen=True)
class Fib:
    """A FIB lookup: ``fib daddr type`` (flags ("daddr",), result "type")."""

    flags: tuple[str, ...]
    result: str


@dataclass(frozen=True)
class Concat:
    """``a . b . c``: the key of a concatenated set or map lookup."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class BinOp:
    """A bitwise operation on an expression: ``meta mark & 0x00004000``."""

    left: Expr
    op: str                      # & | ^
    right: str


Expr = Union[Payload, Meta, Ct, Numgen, Fib, Concat, BinOp]

# -- right-hand sides -----------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """A constant as nft prints it: ``10.0.0.1``, ``10.0.0.0/8``, ``1-5``, ``tcp``, ``new``,
    ``"azv*"`` (strings keep their quotes)."""

    text: str


@dataclass(frozen=True)
class SetRef:
    """A named set or map: ``@service-ips``."""

    name: str


@dataclass(frozen=True)
class Element:
    """One element of a set or map: key parts (concatenation), the mapped value
    (``goto CHAIN``, ``drop``; None in a set), and nft's per-element options."""

    key: tuple[str, ...]
    value: str | None = None
    comment: str | None = None
    extra: str | None = None     # e.g. "timeout 3h expires 2h59m58s" of dynamic elements


@dataclass(frozen=True)
class AnonSet:
    """An anonymous set or map written in the rule: ``{ 0 : goto a, 1 : goto b }``."""

    elements: tuple[Element, ...]


Rhs = Union[Value, SetRef, AnonSet]

# -- statements -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """``LEFT [op] RIGHT``: the rule stops here unless the relation holds."""

    left: Expr
    op: str                      # == != < > <= >=
    right: Rhs


@dataclass(frozen=True)
class Vmap:
    """``KEY vmap MAP``: the verdict of the element KEY finds (no element: continue)."""

    key: Expr
    map: SetRef | AnonSet


@dataclass(frozen=True)
class Counter:
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Verdict:
    """accept drop return continue, or jump/goto CHAIN."""

    kind: str
    chain: str | None = None


@dataclass(frozen=True)
class Nat:
    """dnat/snat ``to ADDR[:PORT]``, masquerade/redirect ``[to :PORT]``, with flags."""

    kind: str
    addr: str | None = None
    port: str | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reject:
    """``reject`` (ICMP port unreachable) or ``reject with icmp X`` / ``with tcp reset``."""

    with_: str | None = None


@dataclass(frozen=True)
class MetaSet:
    """``meta mark set EXPR`` / ``ct mark set EXPR``."""

    key: Meta | Ct
    value: Expr | Value


@dataclass(frozen=True)
class SetUpdate:
    """``update @SET { KEY }`` / ``add @SET { KEY }`` from the packet path."""

    op: str
    set: str
    key: Expr


Statement = Union[Match, Vmap, Counter, Verdict, Nat, Reject, MetaSet, SetUpdate]

# -- objects ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    statements: tuple[Statement, ...]
    comment: str | None = None
    # where it was read (errors, traces); neither printed nor compared
    line: int | None = field(default=None, compare=False)


@dataclass
class Chain:
    name: str
    type: str | None = None      # filter | nat | route: a base chain
    hook: str | None = None
    priority: int = 0
    policy: str | None = None
    comment: str | None = None
    rules: list[Rule] = field(default_factory=list)
    devices: tuple[str, ...] = ()   # a netdev (or inet ingress) chain's devices
    family: str = "ip"              # its table's (how nft names the priority)

    @property
    def base(self) -> bool:
        return self.hook is not None


@dataclass
class NftSet:
    """A named set (``data_type`` None) or map (``data_type`` "verdict", ...)."""

    name: str
    key_types: tuple[str, ...]
    data_type: str | None = None
    flags: tuple[str, ...] = ()
    timeout: int | None = None   # seconds
    size: int | None = None
    comment: str | None = None
    elements: list[Element] = field(default_factory=list)

    @property
    def is_map(self) -> bool:
        return self.data_type is not None


@dataclass
class Table:
    family: str
    name: str
    comment: str | None = None
    sets: dict[str, NftSet] = field(default_factory=dict)     # creation order
    chains: dict[str, Chain] = field(default_factory=dict)    # creation order
