# netfilter: iptables semantics for one network namespace (layer 4 of kdp) —
# tables/chains/rules, the iptables-save parser and emitter, matches and
# targets, and the hook walk with conntrack and NAT. See engine.Netfilter.
from . import ctmatches, matches, nattargets, sctpmatch, targets  # noqa: F401  (register extensions)
from .engine import Netfilter, PacketCtx, ip_length
from .ext import MATCHES, TARGETS
from .model import SAVE_ORDER, TABLE_CHAINS, Chain, Rule, Ruleset, Table
from .restore import parse_iptables_save, parse_rule, restore_into
from .boundary import (HOOKS, HookResult, HookState, NamespaceInfo, RulesetError, SkbMeta,
                       StaticNamespaceInfo, StatisticQuery, TraceEntry)

__all__ = [
    "Netfilter", "PacketCtx", "ip_length", "MATCHES", "TARGETS", "SAVE_ORDER", "TABLE_CHAINS",
    "Chain", "Rule", "Ruleset", "Table", "parse_iptables_save", "parse_rule", "restore_into", "HOOKS",
    "HookResult", "HookState", "NamespaceInfo", "RulesetError", "SkbMeta", "StaticNamespaceInfo",
    "StatisticQuery", "TraceEntry",
]
