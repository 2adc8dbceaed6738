# netfilter.ext: the shape every match and target extension has — its
# options (names, argument counts, which may be inverted with `!`), parsing
# into fields, load-time checks, and printing back in iptables-save's
# canonical form — plus the registries by name. Concrete extensions live in
# matches.py, ctmatches.py, targets.py and nattargets.py.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .syntax import SyntaxProblem

ACCEPT, DROP, CONTINUE, RETURN = "ACCEPT", "DROP", "CONTINUE", "RETURN"


@dataclass
class RuleSpec:
    """What an extension may look at while its rule is being parsed."""

    table: str
    chain: str
    proto: int = 0
    proto_inv: bool = False


class Extension:
    """A match (-m NAME) or target (-j NAME) with its options.

    OPTIONS maps each spelling to a canonical key; NARGS gives the argument
    count per key (default 1); INVERTIBLE the keys that accept a leading `!`."""

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, str]] = {}
    NARGS: ClassVar[dict[str, int]] = {}
    INVERTIBLE: ClassVar[frozenset[str]] = frozenset()
    ONCE: ClassVar[bool] = True            # an option may be given only once
    HOOKS: ClassVar[frozenset[str] | None] = None     # hooks it may be reached from
    TABLES: ClassVar[frozenset[str] | None] = None

    def __init__(self) -> None:
        self.given: list[str] = []

    # --- parsing ---------------------------------------------------------
    @classmethod
    def key_for(cls, option: str) -> str | None:
        return cls.OPTIONS.get(option)

    def nargs(self, key: str) -> int:
        return self.NARGS.get(key, 1)

    def take(self, key: str, option: str, args: list[str], invert: bool, spec: RuleSpec) -> None:
        if invert and key not in self.INVERTIBLE:
            raise SyntaxProblem(f"option '{option}' cannot be inverted")
        if self.ONCE and key in self.given:
            raise SyntaxProblem(f"multiple '{option}' options are not allowed")
        self.given.append(key)
        self.set(key, args, invert, spec)

    def set(self, key: str, args: list[str], invert: bool, spec: RuleSpec) -> None:
        raise NotImplementedError

    def finish(self, spec: RuleSpec) -> None:
        """Checks once the whole rule is parsed (raise SyntaxProblem)."""

    def hooks_for(self) -> frozenset[str] | None:
        """Hooks this instance may be reached from (None: any)."""
        return self.HOOKS

    # --- printing ----------------------------------------------------------
    def save(self) -> str:
        """Options as iptables-save prints them, each preceded by a space."""
        return ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}{self.save()}>"


class Match(Extension):
    # volatile: the result depends on state or time the flow cache does not key
    # on (recent lists, counters, expiry), or evaluating it changes state
    volatile: ClassVar[bool] = False
    # matches() is True for every packet and has no side effect (comment): the
    # compiled rule test (model.Rule.test) leaves it out
    always: ClassVar[bool] = False

    def matches(self, pc: Any) -> bool:
        raise NotImplementedError

    def guarded(self, pc: Any) -> bool:
        """A volatile match whose result the flow cache can recompute (a draw by
        the flow's hash, noted in pc.nf.guards as it is made): True keeps the
        decision cacheable as a megaflow branch (kdp.datapath.megaflow)."""
        return False


class Target(Extension):
    terminal: ClassVar[bool] = False
    volatile: ClassVar[bool] = False        # running it changes state or generates packets
    # what the chain walk does with it: "jump" (a chain offset), "verdict" (ACCEPT/DROP/RETURN),
    # None (run it); the walk compares by identity with targets.JUMP / targets.VERDICT
    KIND: ClassVar[str | None] = None

    def run(self, pc: Any) -> str:
        """Execute; return ACCEPT, DROP or CONTINUE."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}{self.save()}"

    def guarded(self, pc: Any) -> bool:
        """A volatile target whose effect the flow cache can make again for a
        new flow (Match.guarded; kdp.datapath.megaflow)."""
        return False


MATCHES: dict[str, type[Match]] = {}
TARGETS: dict[str, type[Target]] = {}


def register_match(cls: type[Match]) -> type[Match]:
    MATCHES[cls.name] = cls
    return cls


def register_target(cls: type[Target]) -> type[Target]:
    TARGETS[cls.name] = cls
    return cls


def need_proto(spec: RuleSpec, what: str, protos: tuple[int, ...]) -> None:
    if spec.proto not in protos or spec.proto_inv:
        names = {6: "tcp", 17: "udp", 1: "icmp", 132: "sctp", 33: "dccp", 136: "udplite"}
        want = " or ".join(f"-p {names.get(p, p)}" for p in protos)
        raise SyntaxProblem(f"{what} needs {want}")
