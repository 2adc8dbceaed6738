# netfilter.nft.render: an NftRuleset printed exactly as `nft list ruleset` (nft 1.0.x)
# prints it — tab indentation, sets and maps before chains, a blank line between objects,
# set elements sorted the way nft sorts them and wrapped as many to a line as nft puts
# there, base chains with `type T hook H priority P; policy X;`, rules one to a line.
from __future__ import annotations

from .model import (AnonSet, BinOp, Chain, Concat, Counter, Ct, Element, Fib, Match, Meta,
                    MetaSet, Nat, NftSet, Numgen, Payload, Reject, Rule, SetRef, SetUpdate, Table,
                    Value, Verdict, Vmap)
from .values import element_sort_key, format_priority, format_time, per_line, quote

# meta keys nft prints without the `meta` keyword
BARE_META = frozenset({"iif", "oif", "iifname", "oifname", "iiftype", "oiftype", "skuid", "skgid",
                       "nftrace", "rtclassid", "pkttype", "cpu", "iifgroup", "oifgroup",
                       "cgroup"})
_WRAP = ",\n\t\t\t     "


def expr(e) -> str:
    if isinstance(e, Payload):
        return f"{e.proto} {e.field}"
    if isinstance(e, Meta):
        return e.key if e.key in BARE_META else f"meta {e.key}"
    if isinstance(e, Ct):
        return f"ct {e.key}"
    if isinstance(e, Numgen):
        return f"numgen {e.mode} mod {e.mod}" + (f" offset {e.offset}" if e.offset else "")
    if isinstance(e, Fib):
        return f"fib {' . '.join(e.flags)} {e.result}"
    if isinstance(e, Concat):
        return " . ".join(expr(p) for p in e.parts)
    if isinstance(e, BinOp):
        return f"{expr(e.left)} {e.op} {e.right}"
    if isinstance(e, Value):
        return e.text
    raise TypeError(f"not an nft expression: {e!r}")


def element(el: Element) -> str:
    s = " . ".join(el.key)
    if el.extra:
        s += " " + el.extra
    if el.comment is not None:
        s += f" comment {quote(el.comment)}"
    if el.value is not None:
        s += f" : {el.value}"
    return s


def rhs(r) -> str:
    if isinstance(r, Value):
        return r.text
    if isinstance(r, SetRef):
        return f"@{r.name}"
    if isinstance(r, AnonSet):
        return "{ " + ", ".join(element(e) for e in r.elements) + " }"
    raise TypeError(f"not an nft value: {r!r}")


def statement(s) -> str:
    if isinstance(s, Match):
        op = "" if s.op == "==" and not isinstance(s.left, BinOp) else f"{s.op} "
        return f"{expr(s.left)} {op}{rhs(s.right)}"
    if isinstance(s, Vmap):
        return f"{expr(s.key)} vmap {rhs(s.map)}"
    if isinstance(s, Counter):
        return f"counter packets {s.packets} bytes {s.bytes}"
    if isinstance(s, Verdict):
        return s.kind if s.chain is None else f"{s.kind} {s.chain}"
    if isinstance(s, Nat):
        out = s.kind
        if s.addr is not None or s.port is not None:
            out += " to " + (s.addr or "") + (f":{s.port}" if s.port is not None else "")
        if s.flags:
            out += " " + ",".join(s.flags)
        return out
    if isinstance(s, Reject):
        return "reject" if s.with_ is None else f"reject with {s.with_}"
    if isinstance(s, MetaSet):
        return f"{expr(s.key)} set {expr(s.value)}"
    if isinstance(s, SetUpdate):
        return f"{s.op} @{s.set} {{ {expr(s.key)} }}"
    raise TypeError(f"not an nft statement: {s!r}")


def rule(r: Rule) -> str:
    text = " ".join(statement(s) for s in r.statements)
    if r.comment is not None:
        text += f" comment {quote(r.comment)}"
    return text


def sorted_elements(s: NftSet) -> list[Element]:
    return sorted(s.elements, key=lambda e: element_sort_key(e.key, s.key_types))


def set_lines(s: NftSet) -> list[str]:
    kind = "map" if s.is_map else "set"
    typ = " . ".join(s.key_types) + (f" : {s.data_type}" if s.is_map else "")
    lines = [f"\t{kind} {s.name} {{", f"\t\ttype {typ}"]
    if s.size is not None:
        lines.append(f"\t\tsize {s.size}")
    if s.flags:
        lines.append(f"\t\tflags {','.join(s.flags)}")
    if s.timeout is not None:
        lines.append(f"\t\ttimeout {format_time(s.timeout)}")
    if s.comment is not None:
        lines.append(f"\t\tcomment {quote(s.comment)}")
    if s.elements:
        n = per_line(s.key_types)
        parts = []
        for i, e in enumerate(sorted_elements(s)):
            if i:
                parts.append(_WRAP if i % n == 0 else ", ")
            parts.append(element(e))
        lines += ("\t\telements = { " + "".join(parts) + " }").split("\n")
    lines.append("\t}")
    return lines


def chain_lines(c: Chain) -> list[str]:
    lines = [f"\tchain {c.name} {{"]
    if c.comment is not None:
        lines.append(f"\t\tcomment {quote(c.comment)}")
    if c.base:
        dev = ""
        if len(c.devices) == 1:
            dev = f" device {quote(c.devices[0])}"
        elif c.devices:
            dev = " devices = { " + ", ".join(c.devices) + " }"
        lines.append(f"\t\ttype {c.type} hook {c.hook}{dev} priority "
                     f"{format_priority(c.priority, c.hook, c.family)}; policy {c.policy or 'accept'};")
    lines += [f"\t\t{rule(r)}" for r in c.rules]
    lines.append("\t}")
    return lines


def table_lines(t: Table) -> list[str]:
    lines = [f"table {t.family} {t.name} {{"]
    if t.comment is not None:
        lines.append(f"\tcomment {quote(t.comment)}")
    blocks = [set_lines(s) for s in t.sets.values()] + [chain_lines(c) for c in t.chains.values()]
    for i, b in enumerate(blocks):
        if i:
            lines.append("")
        lines += b
    lines.append("}")
    return lines


def render_ruleset(tables: list[Table]) -> str:
    """`nft list ruleset` of these tables."""
    lines: list[str] = []
    for t in tables:
        lines += table_lines(t)
    return "".join(line + "\n" for line in lines)
