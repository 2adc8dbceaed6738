# k8s.kubeproxy_chains: kube-proxy's per-service chain names (KUBE-SVC/SVL/EXT/FW/SEP
# hashes) and the canonical form iptables-save gives its rules: comment quoting,
# statistic probabilities, addresses, match/target spelling, the -s/-d/-p-first order
# (Rule) and the table layout (Table: builtin chains, then user chains sorted by name,
# each chain's rules together). Verified against real iptables-save 1.8.9 in a netns.
# Pure values and functions; no model, no I/O. Rule *content* lives in k8s.kubeproxy.
from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

SVC_PREFIX = "KUBE-SVC-"   # Cluster traffic policy endpoints
SVL_PREFIX = "KUBE-SVL-"   # Local traffic policy endpoints
EXT_PREFIX = "KUBE-EXT-"   # external destinations (NodePort, LB, externalIP)
FW_PREFIX = "KUBE-FW-"     # loadBalancerSourceRanges
SEP_PREFIX = "KUBE-SEP-"   # one endpoint

MASQ_MARK = 0x4000         # bit 14, kube-proxy's default masqueradeBit


def service_port_name(namespace: str, name: str, port_name: str | None) -> str:
    """kube-proxy's ServicePortName string: ``ns/name:port``, or ``ns/name`` for an unnamed port."""
    base = f"{namespace}/{name}"
    return f"{base}:{port_name}" if port_name else base


def _hash16(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def chain_name(prefix: str, service_port_name: str, protocol: str) -> str:
    """``PREFIX`` + first 16 base32 chars of SHA-256(service port name + lower-case protocol).

    ``prefix`` is ``KUBE-SVC``/``KUBE-SVL``/``KUBE-EXT``/``KUBE-FW`` (trailing dash optional).
    """
    if not prefix.endswith("-"):
        prefix += "-"
    return prefix + _hash16(service_port_name + protocol.lower())


def sep_chain_name(service_port_name: str, protocol: str, endpoint: str) -> str:
    """``KUBE-SEP-`` + hash of service port name + protocol + ``IP:port`` of the endpoint."""
    return SEP_PREFIX + _hash16(service_port_name + protocol.lower() + endpoint)


# --- what iptables-save prints -------------------------------------------------------

_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ESCAPE = frozenset("\"\\'")


def save_string(value: str) -> str:
    """A string argument as iptables-save prints it (libxtables ``xtables_save_string``).

    Bare when it is non-empty and only letters, digits, ``_`` and ``-``; otherwise in double
    quotes with ``"``, ``\\`` and ``'`` backslash-escaped.
    """
    if value and all(c in _NO_QUOTE for c in value):
        return value
    return '"' + "".join("\\" + c if c in _ESCAPE else c for c in value) + '"'


def probability(n: int) -> str:
    """What kube-proxy writes for the first of ``n`` remaining endpoints: 1/n, %0.10f."""
    return f"{1.0 / n:0.10f}"


def saved_probability(n: int) -> str:
    """How iptables-save prints kube-proxy's 1/n back.

    The statistic match keeps ``lround(p * 2^31)`` as a u32 and prints ``value / 2^31`` with 11
    decimals, so ``0.3333333333`` comes back as ``0.33333333349``.
    """
    stored = math.floor(float(probability(n)) * 0x80000000 + 0.5)
    return f"{stored / 0x80000000:.11f}"


def addr(value: IPv4Address | IPv4Network | str) -> str:
    """An address or network as iptables-save prints it (hosts get ``/32``)."""
    if isinstance(value, IPv4Network):
        return value.with_prefixlen
    return IPv4Network(str(value), strict=False).with_prefixlen


# Matches and targets in iptables-save's spelling. Each returns one fragment; the rule
# renderer (k8s.kubeproxy.Rule) puts -s/-d/-p first and keeps matches in the order given.

def m_comment(text: str) -> str:
    return f"-m comment --comment {save_string(text)}"


def m_l4(protocol: str, dport: int | None = None) -> str:
    proto = protocol.lower()
    return f"-m {proto} --dport {dport}" if dport is not None else f"-m {proto}"


def m_addrtype(*, dst: str | None = None, src: str | None = None, negate: bool = False) -> str:
    bang = "! " if negate else ""
    if src is not None:
        return f"-m addrtype {bang}--src-type {src}"
    return f"-m addrtype {bang}--dst-type {dst}"


def m_conntrack(states: str, *, negate: bool = False) -> str:
    return f"-m conntrack {'! ' if negate else ''}--ctstate {states}"


def m_mark(mark: int = MASQ_MARK, *, negate: bool = False) -> str:
    return f"-m mark {'! ' if negate else ''}--mark {mark:#x}/{mark:#x}"


def m_recent_check(name: str, seconds: int) -> str:
    return (f"-m recent --rcheck --seconds {seconds} --reap --name {name} "
            "--mask 255.255.255.255 --rsource")


def m_recent_set(name: str) -> str:
    return f"-m recent --set --name {name} --mask 255.255.255.255 --rsource"


def m_statistic(n: int) -> str:
    return f"-m statistic --mode random --probability {saved_probability(n)}"


def m_nfacct(counter: str) -> str:
    # libxt_nfacct prints " --nfacct-name " and then the saved string with its own
    # leading space: real iptables-save output has two spaces here.
    return f"-m nfacct --nfacct-name  {save_string(counter)}"


def j_reject() -> str:
    return "-j REJECT --reject-with icmp-port-unreachable"


def j_or_mark(mark: int = MASQ_MARK) -> str:
    return f"-j MARK --set-xmark {mark:#x}/{mark:#x}"


def j_xor_mark(mark: int = MASQ_MARK) -> str:
    return f"-j MARK --set-xmark {mark:#x}/0x0"


def j_dnat(endpoint: str) -> str:
    return f"-j DNAT --to-destination {endpoint}"


def j_masquerade(random_fully: bool = False) -> str:
    return "-j MASQUERADE --random-fully" if random_fully else "-j MASQUERADE"


# --- rules and tables as iptables-save prints them ---------------------------------------

_BUILTINS = {
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}
TABLE_ORDER = ("mangle", "filter", "nat")   # iptables-nft-save prints tables in this order


@dataclass(frozen=True)
class Rule:
    """One rule in iptables-save's canonical order: -s, -d, -i, -p, then matches, then -j."""

    chain: str
    matches: tuple[str, ...] = ()
    target: str | None = None
    src: str | None = None
    src_neg: bool = False
    dst: str | None = None
    dst_neg: bool = False
    proto: str | None = None
    in_iface: str | None = None
    in_neg: bool = False

    def render(self) -> str:
        parts = ["-A", self.chain]
        if self.src is not None:
            parts += (["!"] if self.src_neg else []) + ["-s", addr(self.src)]
        if self.dst is not None:
            parts += (["!"] if self.dst_neg else []) + ["-d", addr(self.dst)]
        if self.in_iface is not None:
            parts += (["!"] if self.in_neg else []) + ["-i", self.in_iface]
        if self.proto is not None:
            parts += ["-p", self.proto]
        parts += self.matches
        if self.target is not None:
            parts.append(self.target)
        return " ".join(parts)


class Table:
    """Chains and rules of one table, printed the way iptables-save prints them."""

    def __init__(self, name: str):
        self.name = name
        self.builtins = _BUILTINS[name]
        self.rules: dict[str, list[Rule]] = {c: [] for c in self.builtins}

    def chain(self, name: str) -> None:
        self.rules.setdefault(name, [])

    def add(self, rule: Rule) -> None:
        self.chain(rule.chain)
        self.rules[rule.chain].append(rule)

    def ensure_first(self, rule: Rule) -> None:
        """`iptables -C` then `-I CHAIN 1` (utiliptables EnsureRule(Prepend))."""
        self.chain(rule.chain)
        if rule not in self.rules[rule.chain]:
            self.rules[rule.chain].insert(0, rule)

    def render(self) -> list[str]:
        user = sorted(c for c in self.rules if c not in self.builtins)
        lines = [f"*{self.name}"]
        lines += [f":{c} ACCEPT [0:0]" for c in self.builtins]
        lines += [f":{c} - [0:0]" for c in user]
        for c in (*self.builtins, *user):
            lines += [r.render() for r in self.rules[c]]
        lines.append("COMMIT")
        return lines


def render_tables(tables: tuple[Table, ...]) -> str:
    """The iptables-save text of ``tables`` (no "# Generated by" lines, counters [0:0])."""
    lines: list[str] = []
    for t in sorted(tables, key=lambda t: TABLE_ORDER.index(t.name)):
        lines += t.render()
    return "\n".join(lines) + "\n"
