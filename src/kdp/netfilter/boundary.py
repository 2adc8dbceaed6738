# netfilter.boundary: the values that cross the netfilter boundary — the hook
# state the datapath passes in, the per-packet metadata (skb mark, attached
# conntrack entry), the result and trace handed back, the namespace facts
# netfilter asks the datapath for, and RulesetError. No rule logic here.
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from typing import NamedTuple, Protocol, runtime_checkable

from kdp.conntrack import ConntrackEntry, Tuple, ctinfo_state
from kdp.errors import KdpError
from kdp.wire import Packet

HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


class RulesetError(KdpError):
    """A ruleset that cannot be loaded: names the source, line and option."""

    def __init__(self, message: str, *, source: str = "-", line: int | None = None,
                 option: str | None = None):
        self.source, self.line, self.option, self.message = source, line, option, message
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}")


@runtime_checkable
class NamespaceInfo(Protocol):
    """What netfilter needs to know about the namespace it runs in."""

    name: str

    def is_local(self, ip: IPv4Address) -> bool: ...

    def addr_type(self, ip: IPv4Address, dev: str | None) -> str: ...

    def source_address(self, out_dev: str | None, dst: IPv4Address) -> IPv4Address | None: ...


@dataclass
class StaticNamespaceInfo:
    """A NamespaceInfo from a fixed list of addresses per device (tests, tools)."""

    name: str = "ns"
    addresses: dict[str, list[IPv4Interface]] = field(default_factory=dict)

    def _all(self, dev: str | None = None):
        for d, addrs in self.addresses.items():
            if dev is None or d == dev:
                yield from addrs

    def is_local(self, ip: IPv4Address) -> bool:
        return ip.is_loopback or any(a.ip == ip for a in self._all())

    def addr_type(self, ip: IPv4Address, dev: str | None) -> str:
        if int(ip) == 0:
            return "UNSPEC"
        if ip.is_multicast:
            return "MULTICAST"
        if ip == IPv4Address("255.255.255.255"):
            return "BROADCAST"
        if ip.is_loopback or any(a.ip == ip for a in self._all(dev)):
            return "LOCAL"
        if any(a.network.prefixlen < 31 and ip == a.network.broadcast_address
               for a in self._all(dev)):
            return "BROADCAST"
        return "UNICAST"

    def source_address(self, out_dev: str | None, dst: IPv4Address) -> IPv4Address | None:
        addrs = list(self._all(out_dev))
        for a in addrs:
            if dst in a.network:
                return a.ip
        return addrs[0].ip if addrs else None


class HookState(NamedTuple):
    """The arguments of one hook call (struct nf_hook_state); a NamedTuple:
    immutable, and cheap to make once per hook per packet."""

    hook: str
    packet: Packet
    in_dev: str | None = None
    out_dev: str | None = None
    physin: str | None = None
    physout: str | None = None
    now: float = 0.0


@dataclass(slots=True)
class SkbMeta:
    """Per-packet metadata within one namespace (the sk_buff fields netfilter
    uses). Create one when a frame enters a namespace; pass it to every hook
    call there; reset it when the frame crosses into another namespace."""

    mark: int = 0
    ct: ConntrackEntry | None = None
    ct_dir: str | None = None          # "original" | "reply"
    ctinfo: str | None = None          # NEW ESTABLISHED RELATED (+_REPLY), UNTRACKED; None: none
    notrack: bool = False              # raw NOTRACK / CT --notrack hit
    invalid: str | None = None         # why conntrack left the packet without an entry

    @property
    def state(self) -> str:
        """What --ctstate sees: NEW/ESTABLISHED/RELATED/INVALID/UNTRACKED."""
        if self.notrack and self.ct is None:
            return "UNTRACKED"
        return ctinfo_state(self.ctinfo if self.ct is not None else None)

    @property
    def nat_done_src(self) -> bool:
        from kdp.conntrack import SRC_NAT_DONE
        return self.ct is not None and bool(self.ct.status & SRC_NAT_DONE)

    @property
    def nat_done_dst(self) -> bool:
        from kdp.conntrack import DST_NAT_DONE
        return self.ct is not None and bool(self.ct.status & DST_NAT_DONE)


class TraceEntry(NamedTuple):
    """One step of a hook walk (immutable). kind: "rule" (a rule was
    evaluated), "policy" (a builtin chain's policy applied, rule_number 0),
    "return" (fell off the end of a user chain, rule_number 0), "conntrack",
    "nat" (a rewrite/binding from conntrack; table "conntrack"), "log"."""

    table: str
    chain: str
    rule_number: int
    rule: str
    outcome: str
    kind: str = "rule"

    def __str__(self) -> str:
        if self.kind in ("conntrack", "nat"):
            return f"[{self.chain}] {self.outcome}"
        where = f"{self.table}/{self.chain}"
        if self.rule_number:
            where += f"#{self.rule_number}"
        return f"{where}: {self.rule} => {self.outcome}" if self.rule else f"{where}: {self.outcome}"


class HookResult:
    """What a hook did to one packet. (A plain class with slots, not a
    dataclass: one is made per hook call, ~15 per frame.)"""

    __slots__ = ("verdict", "packet", "reason", "trace", "generated", "log", "rejected",
                 "generated_meta", "rules_evaluated")

    def __init__(self, verdict: str, packet: Packet, reason: str | None = None,
                 trace: list[TraceEntry] | None = None, generated: list[Packet] | None = None,
                 log: list[str] | None = None, rejected: bool = False,
                 generated_meta: list[SkbMeta] | None = None, rules_evaluated: int = 0):
        self.verdict = verdict
        self.packet = packet
        self.reason = reason
        self.trace = [] if trace is None else trace
        self.generated = [] if generated is None else generated
        self.log = [] if log is None else log
        self.rejected = rejected                  # a REJECT answered the dropped packet
        self.generated_meta = [] if generated_meta is None else generated_meta   # ct attached
        self.rules_evaluated = rules_evaluated

    @property
    def accepted(self) -> bool:
        return self.verdict == "ACCEPT"

    def __repr__(self) -> str:
        return (f"HookResult(verdict={self.verdict!r}, reason={self.reason!r}, "
                f"trace={len(self.trace)} entries, generated={len(self.generated)})")


@dataclass(frozen=True)
class StatisticQuery:
    """Asked of Netfilter.force_statistic before a `-m statistic --mode
    random` rule decides; answer True/False to force, None to let the keyed
    hash decide."""

    namespace: str
    table: str
    chain: str
    rule_number: int
    probability: float
    tuple: Tuple | None
    packet: Packet
