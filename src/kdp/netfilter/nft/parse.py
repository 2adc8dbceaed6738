# netfilter.nft.parse: reads nftables text into an NftRuleset — both what `nft list ruleset`
# prints (`table ip t { set ... chain ... }` blocks) and the `nft -f` transactions kube-proxy
# writes (`add table/chain/set/map/rule/element`, `insert rule`, `flush chain/set/map/table/
# ruleset`, `delete chain/set/map/element/table`), applied in order. Values are brought to
# the form nft lists them in (`mark` → `meta mark`, `or 0x4000` → `| 0x00004000`, `{ x }` →
# `x`, anonymous address sets merged), so parse → render gives `nft list ruleset`'s text.
# Anything else is a RulesetError naming the source and line, never a traceback.
from __future__ import annotations

import re

from kdp.netfilter.boundary import RulesetError

from .model import (AnonSet, BinOp, Chain, Concat, Counter, Ct, Element, Fib, Match, Meta,
                    MetaSet, Nat, NftSet, Numgen, Payload, Reject, Rule, SetRef, SetUpdate, Table,
                    Value, Verdict, Vmap)
from .ruleset import NftRuleset
from .values import (ValueProblem, element_sort_key, ipv4_bounds, format_ct_state, format_mark, format_proto,
                     merge_ipv4, parse_priority, parse_time)

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
VERDICTS = ("accept", "drop", "return", "continue")
OPS = ("==", "!=", "<", ">", "<=", ">=", "eq", "ne")
BINOPS = {"&": "&", "and": "&", "|": "|", "or": "|", "^": "^", "xor": "^"}
META_KEYS = ("mark", "iif", "oif", "iifname", "oifname", "iiftype", "oiftype", "l4proto",
             "nfproto", "protocol", "skuid", "skgid", "pkttype", "length", "priority", "cpu")
PAYLOAD_PROTOS = ("ip", "th", "tcp", "udp", "sctp", "icmp", "ether", "arp")
DYNAMIC_SET_SIZE = 65535
NAT_FLAGS = ("random", "fully-random", "persistent")
_TOKEN = re.compile(r'"[^"\n]*"|[{},;\n]|[^\s{},;"]+|[ \t\r]+|"')


class _Tok:
    __slots__ = ("text", "line", "quoted")

    def __init__(self, text: str, line: int, quoted: bool = False):
        self.text, self.line, self.quoted = text, line, quoted

    def __repr__(self):
        return f"{self.text!r}@{self.line}"


def tokenize(text: str, source: str) -> list[_Tok]:
    out: list[_Tok] = []
    line = 1
    for raw in text.split("\n"):
        for m in _TOKEN.finditer(raw):
            t = m.group()
            if t[0] in " \t\r":
                continue
            if t == '"':
                raise RulesetError("unterminated string", source=source, line=line)
            if t.startswith("#"):
                break
            if t[0] == '"':
                out.append(_Tok(t[1:-1], line, True))
            else:
                out.append(_Tok(t, line))
        out.append(_Tok("\n", line))
        line += 1
    return out


def expr_type(e) -> tuple[str, ...]:
    """The nft data types of an expression's value (for sorting and merging)."""
    if isinstance(e, Concat):
        return tuple(t for p in e.parts for t in expr_type(p))
    if isinstance(e, Payload):
        if e.proto == "ip" and e.field in ("saddr", "daddr"):
            return ("ipv4_addr",)
        if e.field in ("sport", "dport"):
            return ("inet_service",)
        if e.field == "protocol":
            return ("inet_proto",)
    if isinstance(e, (Meta, Ct)):
        return {"mark": ("mark",), "l4proto": ("inet_proto",), "state": ("ct_state",)}.get(
            e.key, ("string",) if e.key.endswith("name") else ("integer",))
    if isinstance(e, BinOp):
        return expr_type(e.left)
    return ("integer",)


def canon_value(left, text: str) -> str:
    """A constant as nft prints it for a match on ``left``."""
    key = left.left if isinstance(left, BinOp) else left
    if isinstance(key, (Meta, Ct)) and key.key == "mark":
        return format_mark(text)
    if isinstance(key, Ct) and key.key == "state":
        return format_ct_state(text)
    if isinstance(key, Payload) and key.proto == "ip" and key.field in ("saddr", "daddr"):
        ipv4_bounds(text)                # raises ValueProblem for a bad address
    if (isinstance(key, Meta) and key.key == "l4proto") or (
            isinstance(key, Payload) and key.field == "protocol"):
        return format_proto(text)
    return text


def _canon_key(part: str, dtype: str) -> str:
    if dtype == "inet_proto":
        return format_proto(part)
    if dtype == "mark":
        return format_mark(part)
    return part


class _Parser:
    def __init__(self, text: str, source: str):
        self.source = source
        self.toks = tokenize(text, source)
        self.pos = 0
        self.rs = NftRuleset()
        self._keys: dict[int, tuple] = {}       # id(set) -> (its element list, length, keys)

    # -- token helpers ----------------------------------------------------------------------

    def error(self, msg: str, tok: _Tok | None = None):
        tok = tok or self.peek_tok()
        raise RulesetError(msg, source=self.source, line=tok.line if tok else None)

    def peek_tok(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else (
            self.toks[-1] if self.toks else None)

    def peek(self) -> str | None:
        return self.toks[self.pos].text if self.pos < len(self.toks) else None

    def next(self) -> _Tok:
        if self.pos >= len(self.toks):
            self.error("unexpected end of input")
        t = self.toks[self.pos]
        self.pos += 1
        return t

    def word(self, what: str) -> str:
        t = self.next()
        if t.text in ("\n", ";", "{", "}", ",") and not t.quoted:
            self.error(f"expected {what}, found {t.text.strip() or 'end of line'!r}", t)
        return t.text

    def expect(self, text: str):
        t = self.next()
        if t.text != text or t.quoted:
            self.error(f"expected {text!r}, found {t.text.strip() or 'end of line'!r}", t)

    def skip_seps(self):
        while self.peek() in ("\n", ";"):
            self.pos += 1

    def until_sep(self, stop_at_brace: bool = True) -> list[_Tok]:
        """Tokens up to the end of the statement (newline or `;` outside braces)."""
        out, depth = [], 0
        while self.pos < len(self.toks):
            t = self.toks[self.pos]
            if not t.quoted:
                if t.text in ("\n", ";") and depth == 0:
                    break
                if t.text == "}" and depth == 0 and stop_at_brace:
                    break
                if t.text == "{":
                    depth += 1
                elif t.text == "}":
                    depth -= 1
            if t.text != "\n" or depth == 0:
                out.append(t)
            self.pos += 1
        return out

    # -- ruleset level ----------------------------------------------------------------------

    def parse(self) -> NftRuleset:
        while True:
            self.skip_seps()
            if self.peek() is None:
                return self.rs
            t = self.next()
            if t.text == "table":
                self.table_block()
            elif t.text in ("add", "create", "insert", "flush", "delete", "destroy"):
                self.command(t)
            else:
                self.error(f"unsupported nft command {t.text!r}", t)

    def family_name(self) -> tuple[str, str]:
        first = self.word("table family or name")
        if first in FAMILIES and self.peek() not in ("{", "\n", ";", None):
            return first, self.word("table name")
        return "ip", first

    def get_table(self, family: str, name: str, create: bool = False) -> Table:
        t = self.rs.table(family, name)
        if t is None:
            if not create:
                self.error(f"no table {family} {name}")
            t = Table(family, name)
            self.rs.tables.append(t)
        return t

    def table_block(self):
        family, name = self.family_name()
        table = self.get_table(family, name, create=True)
        self.expect("{")
        while True:
            self.skip_seps()
            t = self.next()
            if t.text == "}":
                return
            if t.text == "comment":
                table.comment = self.word("comment")
            elif t.text in ("set", "map"):
                name = self.word("set name")
                s = table.sets.get(name) or NftSet(name, ())
                table.sets[name] = s
                self.expect("{")
                self.set_body(s, t.text == "map")
            elif t.text == "chain":
                name = self.word("chain name")
                c = table.chains.get(name) or Chain(name, family=family)
                table.chains[name] = c
                self.expect("{")
                self.chain_body(c, rules=True)
            else:
                self.error(f"unsupported table item {t.text!r}", t)

    def set_body(self, s: NftSet, is_map: bool):
        while True:
            self.skip_seps()
            t = self.next()
            if t.text == "}":
                break
            what = t.text
            if what == "type":
                words = [x.text for x in self.until_sep()]
                if is_map:
                    if ":" not in words:
                        self.error("a map's type needs `KEY : DATA`", t)
                    i = words.index(":")
                    key, data = words[:i], " ".join(words[i + 1:])
                else:
                    key, data = words, None
                s.key_types = tuple(w for w in key if w != ".")
                s.data_type = data
            elif what == "flags":
                s.flags = tuple(f for x in self.until_sep() for f in x.text.split(",") if f)
            elif what == "timeout":
                s.timeout = self._value(parse_time, self.word("timeout"), t)
            elif what == "size":
                s.size = self._value(int, self.word("size"), t)
            elif what == "comment":
                s.comment = self.word("comment")
            elif what == "elements":
                self.expect("=")
                self.expect("{")
                s.elements.extend(self.elements(s.key_types))
                self._forget_keys(s)
            else:
                self.error(f"unsupported set option {what!r}", t)
        if not s.key_types:
            self.error(f"set {s.name} has no type")

    def _value(self, fn, text: str, tok: _Tok):
        try:
            return fn(text)
        except (ValueError, ValueProblem) as e:
            self.error(str(e) if isinstance(e, ValueProblem) else f"bad number {text!r}", tok)

    def elements(self, types: tuple[str, ...]) -> list[Element]:
        """Elements up to the closing brace (the `{` is consumed)."""
        out: list[Element] = []
        while True:
            while self.peek() in ("\n", ","):
                self.pos += 1
            if self.peek() == "}":
                self.pos += 1
                return out
            out.append(self.element(types))

    def element(self, types: tuple[str, ...]) -> Element:
        first = self.peek_tok()
        key = [self.word("element")]
        while self.peek() == ".":
            self.pos += 1
            key.append(self.word("element"))
        comment = None
        extra: list[str] = []
        value = None
        while True:
            w = self.peek()
            if w == "comment":
                self.pos += 1
                comment = self.word("comment")
            elif w in ("timeout", "expires"):
                self.pos += 1
                extra += [w, self.word(w)]
            elif w == ":":
                self.pos += 1
                words = []
                while self.peek() not in (",", "}", "\n", None):
                    words.append(self.next().text)
                if not words:
                    self.error("element value missing", first)
                value = " ".join(words)
            elif w in (",", "}", "\n"):
                break
            else:
                self.error(f"unsupported element option {w!r}")
        if types and len(key) != len(types):
            self.error(f"element {' . '.join(key)} does not match type {' . '.join(types)}", first)
        try:
            key = [_canon_key(k, t) for k, t in zip(key, types)] if types else key
        except ValueProblem as e:
            self.error(str(e), first)
        return Element(tuple(key), value, comment, " ".join(extra) or None)

    def chain_body(self, c: Chain, rules: bool):
        while True:
            self.skip_seps()
            t = self.peek_tok()
            if t is None or self.peek() is None:
                self.error("unterminated chain block")
            if t.text == "}":
                self.pos += 1
                return
            if t.text == "type":
                self.pos += 1
                self.base_chain(c)
            elif t.text == "policy":
                self.pos += 1
                c.policy = self.word("policy")
            elif t.text == "comment" and not c.rules:
                self.pos += 1
                c.comment = self.word("comment")
            elif rules:
                toks = self.until_sep()
                c.rules.append(self.rule(toks, listed=True))
            else:
                self.error(f"unsupported chain option {t.text!r}", t)

    def base_chain(self, c: Chain):
        c.type = self.word("chain type")
        self.expect("hook")
        c.hook = self.word("hook")
        t = self.next()
        if t.text == "device" and not t.quoted:
            c.devices = (self.word("device name"),)
            t = self.next()
        elif t.text == "devices" and not t.quoted:
            self.expect("=")
            self.expect("{")
            devs = []
            while True:
                w = self.next()
                if w.text == "}" and not w.quoted:
                    break
                if w.text != ",":
                    devs.append(w.text)
            c.devices = tuple(sorted(devs))
            t = self.next()
        if t.text != "priority":
            self.error(f"unsupported chain option {t.text!r}", t)
        words = [x.text for x in self.until_sep()]
        c.priority = self._value(lambda s: parse_priority(s, c.hook, c.family), " ".join(words), t)
        c.policy = c.policy or "accept"

    # -- nft -f commands ----------------------------------------------------------------------

    def command(self, verb: _Tok):
        obj = self.word("object")
        v = verb.text
        if obj == "ruleset" and v == "flush":
            self.rs.tables.clear()
            return
        if obj not in ("table", "chain", "set", "map", "rule", "element"):
            self.error(f"unsupported nft command {v} {obj!r}", verb)
        family, tname = self.family_name()
        if obj == "table":
            if v in ("add", "create"):
                table = self.get_table(family, tname, create=True)
                if self.peek() == "{":
                    self.pos += 1
                    self.table_options(table)
            elif v == "flush":
                table = self.get_table(family, tname)
                for c in table.chains.values():
                    c.rules.clear()
                for s in table.sets.values():
                    s.elements.clear()
                    self._forget_keys(s)
            elif v in ("delete", "destroy"):
                t = self.rs.table(family, tname)
                if t is not None:
                    self.rs.tables.remove(t)
            return
        table = self.get_table(family, tname)
        name = self.word(f"{obj} name")
        if obj == "chain":
            self.chain_command(v, table, name, verb)
        elif obj in ("set", "map"):
            self.set_command(v, table, name, obj == "map", verb)
        elif obj == "rule":
            if v not in ("add", "insert"):
                self.error(f"unsupported nft command {v} rule", verb)
            c = table.chains.get(name)
            if c is None:
                self.error(f"rule for unknown chain {name!r}", verb)
            r = self.rule(self.until_sep(stop_at_brace=False))
            if v == "add":
                c.rules.append(r)
            else:
                c.rules.insert(0, r)
        else:
            s = table.sets.get(name)
            if s is None:
                self.error(f"element for unknown set {name!r}", verb)
            self.expect("{")
            els = self.elements(s.key_types)
            if v in ("add", "create"):
                have = self._element_keys(s)
                for e in els:
                    if e.key not in have:
                        have.add(e.key)
                        s.elements.append(e)
                self._keys[id(s)] = (s.elements, len(s.elements), have)
            elif v in ("delete", "destroy"):
                gone = {e.key for e in els}
                s.elements[:] = [e for e in s.elements if e.key not in gone]
                self._forget_keys(s)
            else:
                self.error(f"unsupported nft command {v} element", verb)

    def _forget_keys(self, s) -> None:
        """A set changed other than by `add element`: its kept keys go."""
        self._keys.pop(id(s), None)

    def _element_keys(self, s) -> set:
        """The keys of a set's elements, kept between `add element` commands (a sync adds
        one service's elements at a time: a set rebuilt per command is quadratic)."""
        cached = self._keys.get(id(s))
        if cached is not None and cached[0] is s.elements and cached[1] == len(s.elements):
            return cached[2]
        return {e.key for e in s.elements}

    def rule(self, toks: list[_Tok], listed: bool = False) -> Rule:
        r = parse_rule_tokens(toks, self.source, listed)
        for st in r.statements:
            # nft gives a set the packet path updates a size when it has none
            if isinstance(st, SetUpdate):
                for t in self.rs.tables:
                    s = t.sets.get(st.set)
                    if s is not None and s.size is None:
                        s.size = DYNAMIC_SET_SIZE
        return r

    def table_options(self, table: Table):
        while True:
            self.skip_seps()
            t = self.next()
            if t.text == "}":
                return
            if t.text == "comment":
                table.comment = self.word("comment")
            else:
                self.error(f"unsupported table option {t.text!r}", t)

    def chain_command(self, v: str, table: Table, name: str, verb: _Tok):
        if v in ("add", "create"):
            c = table.chains.get(name)
            if c is None:
                c = table.chains[name] = Chain(name, family=table.family)
            if self.peek() == "{":
                self.pos += 1
                self.chain_body(c, rules=False)
        elif v == "flush":
            if name not in table.chains:
                self.error(f"flush of unknown chain {name!r}", verb)
            table.chains[name].rules.clear()
        elif v in ("delete", "destroy"):
            table.chains.pop(name, None)
        else:
            self.error(f"unsupported nft command {v} chain", verb)

    def set_command(self, v: str, table: Table, name: str, is_map: bool, verb: _Tok):
        if v in ("add", "create"):
            s = table.sets.get(name)
            fresh = s is None
            if fresh:
                s = NftSet(name, ())
            if self.peek() == "{":
                self.pos += 1
                self.set_body(s, is_map)
            elif fresh:
                self.error(f"set {name} needs a type", verb)
            table.sets[name] = s
        elif v == "flush":
            if name not in table.sets:
                self.error(f"flush of unknown set {name!r}", verb)
            table.sets[name].elements.clear()
            self._forget_keys(table.sets[name])
        elif v in ("delete", "destroy"):
            table.sets.pop(name, None)
        else:
            self.error(f"unsupported nft command {v} {'map' if is_map else 'set'}", verb)


# -- rules ----------------------------------------------------------------------------------------


class _RuleParser:
    """One rule's statements from its tokens (no newlines inside)."""

    def __init__(self, toks: list[_Tok], source: str, listed: bool = False):
        self.toks, self.pos, self.source = toks, 0, source
        self.listed = listed            # text nft printed: a one-element `{ x }` stays a set
        self.line = toks[0].line if toks else None

    def error(self, msg: str):
        raise RulesetError(msg, source=self.source, line=self.line)

    def peek(self, k: int = 0) -> str | None:
        i = self.pos + k
        return self.toks[i].text if i < len(self.toks) else None

    def next(self) -> str:
        if self.pos >= len(self.toks):
            self.error("rule ends too early")
        self.pos += 1
        return self.toks[self.pos - 1].text

    def int(self, what: str) -> int:
        w = self.next()
        if not w.isdigit():
            self.error(f"expected {what}, found {w!r}")
        return int(w)

    def quoted(self) -> str:
        if self.pos >= len(self.toks) or not self.toks[self.pos].quoted:
            self.error("expected a quoted string")
        return self.next()

    def rule(self) -> Rule:
        stmts = []
        comment = None
        while self.pos < len(self.toks):
            if self.peek() == "comment":
                self.pos += 1
                comment = self.quoted()
                continue
            stmts.append(self.statement())
        if not stmts:
            self.error("empty rule")
        return Rule(tuple(stmts), comment, self.line)

    def statement(self):
        w = self.peek()
        if w == "counter":
            self.pos += 1
            packets = bytes_ = 0
            if self.peek() == "packets":
                self.pos += 1
                packets = self.int("a packet count")
                if self.next() != "bytes":
                    self.error("expected `bytes` after the packet count")
                bytes_ = self.int("a byte count")
            return Counter(packets, bytes_)
        if w in VERDICTS:
            self.pos += 1
            return Verdict(w)
        if w in ("jump", "goto"):
            self.pos += 1
            return Verdict(w, self.next())
        if w == "reject":
            self.pos += 1
            return Reject(self.reject_with())
        if w in ("masquerade", "redirect"):
            self.pos += 1
            port = None
            if self.peek() == "to":
                self.pos += 1
                port = self.next().lstrip(":")
            return Nat(w, None, port, self.nat_flags())
        if w in ("dnat", "snat"):
            self.pos += 1
            if self.peek() == "ip":
                self.pos += 1
            if self.next() != "to":
                self.error(f"expected `to` after {w}")
            target = self.next()
            addr, _, port = target.partition(":")
            return Nat(w, addr or None, port or None, self.nat_flags())
        if w in ("update", "add") and (self.peek(1) or "").startswith("@"):
            self.pos += 1
            name = self.next()[1:]
            if self.next() != "{":
                self.error(f"expected `{{` after @{name}")
            key = self.concat()
            if self.next() != "}":
                self.error("expected `}` closing the set update key")
            return SetUpdate(w, name, key)
        left = self.concat()
        nw = self.peek()
        if nw == "set":
            if not isinstance(left, (Meta, Ct)):
                self.error(f"cannot set {w!r}")
            self.pos += 1
            return MetaSet(left, self.set_value(left))
        if nw in BINOPS:
            self.pos += 1
            left = BinOp(left, BINOPS[nw], self.canon(left, self.next()))
            nw = self.peek()
        if nw == "vmap":
            self.pos += 1
            return Vmap(left, self.map_ref(left))
        op = "=="
        if nw in OPS:
            self.pos += 1
            op = {"eq": "==", "ne": "!="}.get(nw, nw)
        if self.peek() is None:
            self.error(f"match on {w!r} has no value")
        return Match(left, op, self.rhs(left))

    def reject_with(self) -> str | None:
        if self.peek() != "with":
            return None
        self.pos += 1
        kind = self.next()
        if kind == "tcp":
            if self.next() != "reset":
                self.error("unsupported reject type")
            return "tcp reset"
        if kind not in ("icmp", "icmpx"):
            self.error(f"unsupported reject type {kind!r}")
        code = self.next()
        if code == "type":
            code = self.next()
        return None if (kind, code) == ("icmp", "port-unreachable") else f"{kind} {code}"

    def nat_flags(self) -> tuple[str, ...]:
        flags: list[str] = []
        while self.peek() is not None and all(f in NAT_FLAGS for f in self.peek().split(",")):
            flags += self.next().split(",")
        return tuple(flags)

    def canon(self, left, text: str) -> str:
        try:
            return canon_value(left, text)
        except ValueProblem as e:
            self.error(str(e))

    def set_value(self, key):
        w = self.peek()
        if w in ("meta", "ct", "mark") or w in META_KEYS and w != "mark":
            inner = self.primary()
            if self.peek() in BINOPS:
                op = BINOPS[self.next()]
                return BinOp(inner, op, self.canon(inner, self.next()))
            return inner
        return Value(self.canon(key, self.next()))

    def map_ref(self, key):
        w = self.next()
        if w.startswith("@"):
            return SetRef(w[1:])
        if w != "{":
            self.error(f"expected a map after vmap, found {w!r}")
        return AnonSet(tuple(self.sorted_elements(key, self.anon_elements(key))))

    def rhs(self, left):
        w = self.peek()
        if w.startswith("@") and not self.toks[self.pos].quoted:
            self.pos += 1
            return SetRef(w[1:])
        if w == "{" and not self.toks[self.pos].quoted:
            self.pos += 1
            els = self.anon_elements(left)
            types = expr_type(left)
            if len(els) == 1 and len(types) == 1 and els[0].value is None and not self.listed:
                return Value(els[0].key[0])         # nft turns `{ x }` into a plain match
            if types == ("ipv4_addr",):
                try:
                    keys = merge_ipv4([e.key[0] for e in els])
                except ValueProblem as e:
                    self.error(str(e))
                els = [Element((k,)) for k in keys]
            elif len(types) == 1:
                els = self.sorted_elements(left, els)
            return AnonSet(tuple(els))
        tok = self.toks[self.pos]
        self.pos += 1
        return Value(f'"{tok.text}"' if tok.quoted else self.canon(left, tok.text))

    def sorted_elements(self, left, els: list[Element]) -> list[Element]:
        types = expr_type(left)
        return sorted(els, key=lambda e: element_sort_key(e.key, types))

    def anon_elements(self, left) -> list[Element]:
        out = []
        while True:
            w = self.next()
            if w == "}":
                return out
            if w == ",":
                continue
            key = [w]
            while self.peek() == ".":
                self.pos += 1
                key.append(self.next())
            value = None
            if self.peek() == ":":
                self.pos += 1
                words = []
                while self.peek() not in (",", "}", None):
                    words.append(self.next())
                value = " ".join(words)
            if len(key) == 1:
                key = [self.canon(left, key[0])]
            out.append(Element(tuple(key), value))

    def concat(self):
        parts = [self.primary()]
        while self.peek() == ".":
            self.pos += 1
            parts.append(self.primary())
        return parts[0] if len(parts) == 1 else Concat(tuple(parts))

    def primary(self):
        w = self.next()
        if w in PAYLOAD_PROTOS:
            return Payload(w, self.next())
        if w == "meta":
            return Meta(self.next())
        if w in META_KEYS:
            return Meta(w)
        if w == "ct":
            return Ct(self.next())
        if w == "numgen":
            mode = self.next()
            if self.next() != "mod":
                self.error("expected `mod` after numgen")
            mod = self.int("a modulus")
            offset = 0
            if self.peek() == "offset":
                self.pos += 1
                offset = self.int("an offset")
            return Numgen(mode, mod, offset)
        if w == "fib":
            flags = [self.next()]
            while self.peek() == ".":
                self.pos += 1
                flags.append(self.next())
            return Fib(tuple(flags), self.next())
        self.error(f"unsupported expression {w!r}")


def _join_lists(toks: list[_Tok]) -> list[_Tok]:
    """Outside braces a comma only joins a list value (``established,related``,
    ``random,persistent``): glue it back into one token."""
    out: list[_Tok] = []
    depth = 0
    i = 0
    while i < len(toks):
        t = toks[i]
        if not t.quoted and t.text in ("{", "}"):
            depth += 1 if t.text == "{" else -1
        if (depth == 0 and not t.quoted and t.text == "," and out and i + 1 < len(toks)):
            out[-1] = _Tok(out[-1].text + "," + toks[i + 1].text, out[-1].line)
            i += 2
            continue
        out.append(t)
        i += 1
    return out


def parse_rule_tokens(toks: list[_Tok], source: str, listed: bool = False) -> Rule:
    return _RuleParser(_join_lists(toks), source, listed).rule()


def parse_rule(text: str, source: str = "-", line: int = 1, listed: bool = False) -> Rule:
    """One rule's statements (``ip daddr 10.0.0.1 tcp dport 80 accept``), as `nft add rule`
    takes them, or (listed) as `nft list` printed them."""
    toks = [t for t in tokenize(text, source) if t.text != "\n"]
    for t in toks:
        t.line = line
    return parse_rule_tokens(toks, source, listed)


def parse_ruleset(text: str, source: str = "-") -> NftRuleset:
    """An `nft list ruleset` dump or an `nft -f` file (commands applied in order)."""
    return _Parser(text, source).parse()
