# netfilter.restore: reading iptables-save / iptables-restore text into a
# Ruleset — tables, chain declarations with policies and counters, rule
# commands (-A, -I, -N, -X, -F, -P), and each rule's options dispatched to
# the core IP part or to its match/target extensions. Every unsupported
# module, option or target is a RulesetError naming the line and option.
from __future__ import annotations

from .ext import MATCHES, TARGETS, Extension, RuleSpec
from .model import TABLE_CHAINS, Chain, Rule, Ruleset
from .syntax import SyntaxProblem, parse_cidr, parse_iface, parse_proto, parse_uint, tokenize
from .targets import TARGET_VERDICTS, ChainJump, Verdict
from .boundary import RulesetError

CORE = {"-s": "s", "--source": "s", "--src": "s", "-d": "d", "--destination": "d",
        "--dst": "d", "-i": "i", "--in-interface": "i", "-o": "o", "--out-interface": "o",
        "-p": "p", "--protocol": "p", "-m": "m", "--match": "m", "-j": "j", "--jump": "j",
        "-g": "g", "--goto": "g", "-c": "c", "--set-counters": "c"}
IMPLICIT = {6: "tcp", 17: "udp", 1: "icmp"}
# Targets iptables knows that kdp does not emulate (anything else unknown is a chain name).
UNSUPPORTED_TARGETS = frozenset({
    "QUEUE", "NFQUEUE", "TRACE", "TCPMSS", "NETMAP", "TPROXY", "DSCP", "TOS", "TTL", "SET",
    "CLASSIFY", "NFLOG", "ULOG", "AUDIT", "CHECKSUM", "SECMARK", "CONNSECMARK", "IDLETIMER",
    "LED", "RATEEST", "TEE", "SYNPROXY", "HMARK", "CLUSTERIP", "ECN", "NFACCT"})


class _Lines:
    """Error helper bound to a source name and the current line."""

    def __init__(self, source: str):
        self.source, self.line = source, 0

    def error(self, msg: str, option: str | None = None) -> RulesetError:
        return RulesetError(msg, source=self.source, line=self.line, option=option)


def parse_iptables_save(text: str, source: str = "-") -> Ruleset:
    """Parse `iptables-save` output (or `iptables-restore` input) into a new
    Ruleset. Tables absent from the text exist with empty builtin chains but
    are not printed back."""
    rs = Ruleset(loaded=False)
    restore_into(rs, text, source=source)
    return rs


def restore_into(rs: Ruleset, text: str, *, noflush: bool = False, source: str = "-") -> None:
    """Apply iptables-restore input to rs (atomically: on error nothing changes).
    Without noflush every table named in the input is flushed first; with
    noflush, user chains declared with ':' are flushed, the rest stays."""
    work = rs.copy()
    at = _Lines(source)
    table = None
    table_line = 0
    for at.line, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            if table is not None:
                raise at.error(f"table {table.name} (line {table_line}) has no COMMIT before "
                               f"table {line[1:]}")
            name = line[1:].strip()
            if name not in TABLE_CHAINS:
                raise at.error(f"unsupported table '{name}'", option=name)
            table, table_line = work.tables[name], at.line
            if not noflush:
                table.flush()
            table.loaded = True
            continue
        if line == "COMMIT":
            if table is None:
                raise at.error("COMMIT outside a table")
            table = None
            continue
        if table is None:
            raise at.error("rule or chain outside a table (missing '*table' line)")
        if line.startswith(":"):
            _declare(table, line, noflush, at)
            continue
        try:
            tokens = tokenize(line)
        except SyntaxProblem as e:
            raise at.error(str(e)) from None
        _command(table, tokens, at)
    if table is not None:
        at.line = table_line
        raise at.error(f"table {table.name} is missing COMMIT")
    work.validate(source)
    rs.tables = work.tables


def _counters(text: str, at: _Lines) -> tuple[int, int]:
    if not (text.startswith("[") and text.endswith("]") and ":" in text):
        raise at.error(f"bad counters '{text}'")
    p, b = text[1:-1].split(":", 1)
    try:
        return parse_uint(p, 2**64 - 1, "packet counter"), parse_uint(b, 2**64 - 1, "byte counter")
    except SyntaxProblem as e:
        raise at.error(str(e)) from None


def _declare(table, line: str, noflush: bool, at: _Lines) -> None:
    parts = line[1:].split()
    if len(parts) < 2:
        raise at.error(f"bad chain line '{line}'")
    name, policy = parts[0], parts[1]
    pkts, byts = _counters(parts[2], at) if len(parts) > 2 else (0, 0)
    if len(name) > 28:
        raise at.error(f"chain name '{name}' is longer than 28 characters")
    chain = table.chains.get(name)
    if name in TABLE_CHAINS[table.name]:
        if policy not in ("ACCEPT", "DROP"):
            raise at.error(f"bad policy '{policy}' for builtin chain {name}", option=policy)
        chain.policy, chain.packets, chain.bytes = policy, pkts, byts
        return
    if policy != "-":
        raise at.error(f"user chain {name} cannot have a policy ('{policy}')", option=policy)
    if chain is not None and not noflush:
        raise at.error(f"chain {name} declared twice")
    table.chains[name] = Chain(name)


def _command(table, tokens: list[str], at: _Lines) -> None:
    counters = None
    if tokens and tokens[0].startswith("["):
        counters = _counters(tokens[0], at)
        tokens = tokens[1:]
    if not tokens:
        raise at.error("empty command")
    cmd, args = tokens[0], tokens[1:]
    if cmd in ("-A", "--append", "-I", "--insert"):
        if not args:
            raise at.error(f"{cmd} needs a chain")
        chain = table.chains.get(args[0])
        if chain is None:
            raise at.error(f"chain '{args[0]}' does not exist in table {table.name} "
                           f"(no ':{args[0]}' line before)", option=args[0])
        pos = len(chain.rules)
        rest = args[1:]
        if cmd in ("-I", "--insert"):
            pos = 0
            if rest and rest[0].isdigit():
                pos = int(rest[0]) - 1
                rest = rest[1:]
                if not 0 <= pos <= len(chain.rules):
                    raise at.error(f"index of insertion too big: {pos + 1}")
        rule = parse_rule(table.name, chain.name, rest, at)
        if counters:
            rule.packets, rule.bytes = counters
        chain.rules.insert(pos, rule)
    elif cmd in ("-N", "--new-chain"):
        if len(args) != 1 or args[0] in table.chains:
            raise at.error(f"cannot create chain {' '.join(args)}")
        table.chains[args[0]] = Chain(args[0])
    elif cmd in ("-X", "--delete-chain"):
        names = args or [c.name for c in table.chains.values() if not c.builtin]
        for n in names:
            c = table.chains.get(n)
            if c is None or c.builtin:
                raise at.error(f"cannot delete chain '{n}'")
            del table.chains[n]
    elif cmd in ("-F", "--flush"):
        for c in ([table.chains[args[0]]] if args and args[0] in table.chains else
                  table.chains.values() if not args else []):
            c.rules = []
        if args and args[0] not in table.chains:
            raise at.error(f"chain '{args[0]}' does not exist")
    elif cmd in ("-P", "--policy"):
        if len(args) != 2 or args[0] not in TABLE_CHAINS[table.name] or \
                args[1] not in ("ACCEPT", "DROP"):
            raise at.error(f"bad policy command '{' '.join(tokens)}'")
        table.chains[args[0]].policy = args[1]
    else:
        raise at.error(f"unsupported command '{cmd}'", option=cmd)


def _take_arg(tokens: list[str], i: int, opt: str, at: _Lines) -> str:
    if i >= len(tokens):
        raise at.error(f"option '{opt}' requires an argument", option=opt)
    return tokens[i]


def parse_rule(table: str, chain: str, tokens: list[str], at: _Lines | None = None) -> Rule:
    """Parse the options of one rule (everything after `-A CHAIN`)."""
    at = at or _Lines("-")
    spec = RuleSpec(table, chain)
    rule = Rule(chain, line=at.line or None)
    loaded: list[Extension] = []
    seen_core: set[str] = set()
    implicit_done = False
    inv = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "!":
            if inv:
                raise at.error("multiple '!' flags not allowed", option=tok)
            inv = True
            continue
        key = CORE.get(tok)
        try:
            if key is not None:
                if key in ("s", "d", "i", "o", "p", "j", "g", "c") and key in seen_core:
                    raise SyntaxProblem(f"multiple '{tok}' flags not allowed")
                seen_core.add(key)
                if inv and key not in ("s", "d", "i", "o", "p"):
                    raise SyntaxProblem(f"'!' cannot precede '{tok}'")
                if key == "c":
                    p = parse_uint(_take_arg(tokens, i, tok, at), 2**64 - 1, "counter")
                    b = parse_uint(_take_arg(tokens, i + 1, tok, at), 2**64 - 1, "counter")
                    rule.packets, rule.bytes = p, b
                    i += 2
                    continue
                arg = _take_arg(tokens, i, tok, at)
                i += 1
                _core(rule, spec, key, arg, inv, loaded, at, tok)
                inv = False
                continue
            if tok.startswith("-") and len(tok) > 1:
                ext, ekey = _find(loaded, tok)
                if ext is None and not implicit_done and spec.proto in IMPLICIT \
                        and not spec.proto_inv:
                    implicit_done = True
                    name = IMPLICIT[spec.proto]
                    if not any(m.name == name for m in rule.matches):
                        m = MATCHES[name]()
                        rule.matches.append(m)
                        loaded.append(m)
                        ext, ekey = _find(loaded, tok)
                if ext is None:
                    mods = ", ".join(e.name for e in loaded) or "none"
                    raise at.error(f"unsupported option '{tok}' (loaded modules: {mods})",
                                   option=tok)
                n = ext.nargs(ekey)
                if i + n > len(tokens):
                    raise SyntaxProblem(f"option '{tok}' requires {n} argument(s)")
                ext.take(ekey, tok, tokens[i:i + n], inv, spec)
                i += n
                inv = False
                continue
            raise SyntaxProblem(f"unexpected argument '{tok}'")
        except SyntaxProblem as e:
            raise at.error(str(e), option=tok) from None
    if inv:
        raise at.error("'!' at the end of the rule", option="!")
    _finish(rule, spec, at)
    return rule


def _find(loaded: list[Extension], option: str):
    for ext in reversed(loaded):
        key = ext.key_for(option)
        if key is not None:
            return ext, key
    return None, None


def _core(rule: Rule, spec: RuleSpec, key: str, arg: str, inv: bool, loaded, at, tok) -> None:
    if key == "s":
        rule.src, rule.src_inv = parse_cidr(arg), inv
    elif key == "d":
        rule.dst, rule.dst_inv = parse_cidr(arg), inv
    elif key == "i":
        rule.in_iface, rule.in_inv = parse_iface(arg), inv
    elif key == "o":
        rule.out_iface, rule.out_inv = parse_iface(arg), inv
    elif key == "p":
        rule.proto, rule.proto_inv = parse_proto(arg), inv
        if inv and rule.proto == 0:
            raise SyntaxProblem("rule would never match protocol")
        spec.proto, spec.proto_inv = rule.proto, inv
    elif key == "m":
        cls = MATCHES.get(arg)
        if cls is None:
            raise at.error(f"unsupported match module '{arg}'", option=arg)
        m = cls()
        rule.matches.append(m)
        loaded.append(m)
    else:   # j / g
        if arg in TARGETS:
            if key == "g":
                raise SyntaxProblem(f"goto needs a user chain, not target {arg}")
            t = TARGETS[arg]()
            loaded.append(t)
        elif arg in TARGET_VERDICTS:
            if key == "g":
                raise SyntaxProblem(f"goto needs a user chain, not {arg}")
            if arg == "DROP" and spec.table == "nat":
                raise SyntaxProblem('the "nat" table is not intended for filtering, '
                                    'the use of DROP is therefore inhibited')
            t = Verdict(arg)
        elif arg in UNSUPPORTED_TARGETS:
            raise at.error(f"unsupported target '{arg}'", option=arg)
        else:
            t = ChainJump(arg, goto=key == "g")
        rule.target = t


def _finish(rule: Rule, spec: RuleSpec, at: _Lines) -> None:
    if rule.in_iface is not None and rule.chain in ("OUTPUT", "POSTROUTING"):
        raise at.error(f"Can't use -i with {rule.chain}", option="-i")
    if rule.out_iface is not None and rule.chain in ("INPUT", "PREROUTING"):
        raise at.error(f"Can't use -o with {rule.chain}", option="-o")
    for ext in rule.extensions():
        try:
            ext.finish(spec)
        except SyntaxProblem as e:
            raise at.error(f"{ext.name}: {e}", option=ext.name) from None
    rule.compile()
