# oracle.force: make kdp take the random decisions the kernel took. The
# kernel's `-m statistic --mode random` picks a service endpoint with
# prandom_u32(); its choice shows in the node's conntrack table (the reply
# tuple's source is the endpoint). This module parses `conntrack -L` and builds
# a Netfilter.force_statistic callback that makes kdp's statistic rules match
# exactly when their KUBE-SEP chain DNATs to the endpoint the kernel chose for
# that connection. Pure: no namespaces, no I/O.
from __future__ import annotations

import re
from ipaddress import IPv4Address

PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
_KV = re.compile(r"(src|dst|sport|dport|type|code|id)=(\S+)")


def parse_conntrack(lines: list[str]) -> list[dict]:
    """`conntrack -L` lines -> [{"proto": n, "orig": {...}, "reply": {...}}]."""
    out = []
    for line in lines:
        parts = line.split()
        if not parts or parts[0] not in PROTOS:
            continue
        pairs = _KV.findall(line)
        half, orig, reply = 0, {}, {}
        for k, v in pairs:
            cur = orig if half == 0 else reply
            if k in cur:
                half, cur = 1, reply
            cur[k] = v
        if orig and reply:
            out.append({"proto": PROTOS[parts[0]], "orig": orig, "reply": reply})
    return out


def endpoint_choices(dumps: dict[str, list[str]]) -> dict[tuple, tuple]:
    """{(node ns, proto, src, dst, sport, dport): (endpoint ip, endpoint port)}
    for every connection the kernel DNATed."""
    out = {}
    for ns, lines in dumps.items():
        for e in parse_conntrack(lines):
            o, r = e["orig"], e["reply"]
            if "sport" not in o or "sport" not in r:
                continue
            if r["src"] != o["dst"] or r["sport"] != o["dport"]:
                key = (ns, e["proto"], IPv4Address(o["src"]), IPv4Address(o["dst"]), int(o["sport"]),
                       int(o["dport"]))
                out[key] = (IPv4Address(r["src"]), int(r["sport"]))
    return out


def _dnat_of(nf, table: str, chain: str):
    try:
        c = nf.ruleset.chain(table, chain)
    except KeyError:
        return None
    for r in c.rules:
        t = r.target
        if t is not None and getattr(t, "name", "") == "DNAT" and getattr(t, "range", None) is not None:
            return t.range.min_ip, t.range.min_port
    return None


def statistic_forcer(nf, ns_name: str, choices: dict[tuple, tuple]):
    """A Netfilter.force_statistic callback for namespace `ns_name`."""
    def force(q):
        t = q.tuple
        if t is None:
            return None
        ep = choices.get((ns_name, t.proto, t.src, t.dst, t.sport, t.dport))
        if ep is None:
            return None
        try:
            rule = nf.ruleset.chain(q.table, q.chain).rules[q.rule_number - 1]
        except (KeyError, IndexError):
            return None
        target = getattr(rule.target, "chain", None)
        dnat = _dnat_of(nf, q.table, target) if target else None
        if dnat is None:
            return None
        return dnat[0] == ep[0] and (dnat[1] is None or dnat[1] == ep[1])
    return force


def force_emulator(emu, dumps: dict[str, list[str]]) -> int:
    """Install forcers on every kdp namespace with a netfilter; returns how
    many kernel choices were found."""
    choices = endpoint_choices(dumps)
    if not choices:
        return 0
    for ns in emu.topology.namespaces.values():
        if ns.netfilter is not None:
            ns.netfilter.force_statistic = statistic_forcer(ns.netfilter, ns.name, choices)
    return len(choices)
