# netfilter.model: the ruleset data — tables, chains (builtin with policy,
# user), rules (the IP part, matches, target, counters) — printing in
# iptables-save's canonical form, and the load-time checks the kernel makes
# (jump targets exist, no loops, targets/matches only where allowed).
# Parsing (and applying iptables-restore input to a Ruleset) lives in
# restore.py; evaluation in engine.py.
from __future__ import annotations

import copy
from ipaddress import IPv4Network

from .ext import Match, Target
from .syntax import fmt_cidr, fmt_proto, iface_match
from .targets import ChainJump
from .boundary import HOOKS, RulesetError

TABLE_CHAINS = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": HOOKS,
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}
SAVE_ORDER = ("mangle", "raw", "filter", "nat")    # as iptables-nft 1.8.9 prints them


class Rule:
    """One rule: IP header part, matches in order, a target (or none)."""

    def __init__(self, chain: str, *, line: int | None = None):
        self.chain = chain
        self.src: IPv4Network | None = None
        self.src_inv = False
        self.dst: IPv4Network | None = None
        self.dst_inv = False
        self.in_iface: str | None = None
        self.in_inv = False
        self.out_iface: str | None = None
        self.out_inv = False
        self.proto = 0
        self.proto_inv = False
        self.matches: list[Match] = []
        self.target: Target | None = None
        self.packets = 0
        self.bytes = 0
        self.line = line
        self._text: str | None = None
        self._src = self._dst = None
        self._volatile: bool | None = None
        self.test = self._first_test

    @property
    def volatile(self) -> bool:
        """A match or the target reads state or time, or changes state: a
        decision that evaluated this rule is not cached (kdp.datapath.flowcache)."""
        if self._volatile is None:
            self._volatile = any(m.volatile for m in self.matches) or \
                bool(self.target is not None and self.target.volatile)
        return self._volatile

    def compile(self) -> None:
        """Precompute integer address/mask pairs for matching."""
        self._src = (int(self.src.network_address), int(self.src.netmask)) if self.src else None
        self._dst = (int(self.dst.network_address), int(self.dst.netmask)) if self.dst else None
        self._text = None
        self.test = self._first_test
        COMPILED[0] += 1                    # chains' destination indexes are rebuilt

    # test(pc): ip_matches() and then every match in order, as one function built
    # the first time the walk reaches the rule (None: the rule matches every
    # packet). Same answer, same match calls (side effects) in the same order;
    # comment matches, always true, are left out.
    def _first_test(self, pc) -> bool:
        self.test = test = _build_test(self)
        return test is None or test(pc)

    def __getstate__(self) -> dict:         # copies (Ruleset.copy(deep=True)) build their own test
        state = self.__dict__.copy()
        del state["test"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.test = self._first_test

    def ip_matches(self, pc) -> bool:
        """ip_packet_match(): addresses, interfaces, protocol."""
        if self._src is not None and ((pc.src_int & self._src[1]) == self._src[0]) == self.src_inv:
            return False
        if self._dst is not None and ((pc.dst_int & self._dst[1]) == self._dst[0]) == self.dst_inv:
            return False
        if self.in_iface is not None and iface_match(self.in_iface, pc.in_dev) == self.in_inv:
            return False
        if self.out_iface is not None and iface_match(self.out_iface, pc.out_dev) == self.out_inv:
            return False
        if self.proto and (pc.proto == self.proto) == self.proto_inv:
            return False
        return True

    @property
    def text(self) -> str:
        """The rule as iptables-save prints it: `-A CHAIN ...`."""
        if self._text is None:
            self._text = self._render()
        return self._text

    def _render(self) -> str:
        out = [f"-A {self.chain}"]

        def opt(inv: bool, flag: str, value: str) -> None:
            out.append(("! " if inv else "") + f"{flag} {value}")

        if self.src is not None:
            opt(self.src_inv, "-s", fmt_cidr(self.src))
        if self.dst is not None:
            opt(self.dst_inv, "-d", fmt_cidr(self.dst))
        if self.in_iface is not None:
            opt(self.in_inv, "-i", self.in_iface)
        if self.out_iface is not None:
            opt(self.out_inv, "-o", self.out_iface)
        if self.proto:
            opt(self.proto_inv, "-p", fmt_proto(self.proto))
        for m in self.matches:
            out.append(f"-m {m.name}{m.save()}")
        t = self.target
        if isinstance(t, ChainJump):
            out.append(("-g " if t.goto else "-j ") + t.chain)
        elif t is not None:
            out.append(f"-j {t.name}{t.save()}")
        return " ".join(out)

    def save(self, counters: bool = False) -> str:
        return f"[{self.packets}:{self.bytes}] {self.text}" if counters else self.text

    def extensions(self) -> list:
        return [*self.matches, *([self.target] if self.target is not None else [])]

    def __repr__(self) -> str:
        return f"<Rule {self.text}>"


def _build_test(rule: Rule):
    """The rule's test as one generated function (see Rule.test). The source
    names the rule's values (env) rather than spelling them, so rules of one
    shape (kube-proxy writes thousands alike) share one compiled code object."""
    env: dict = {"iface_match": iface_match}
    lines = []
    if rule._src is not None:
        env["src_net"], env["src_mask"], env["src_inv"] = rule._src[0], rule._src[1], bool(rule.src_inv)
        lines.append("if ((pc.src_int & src_mask) == src_net) == src_inv: return False")
    if rule._dst is not None:
        env["dst_net"], env["dst_mask"], env["dst_inv"] = rule._dst[0], rule._dst[1], bool(rule.dst_inv)
        lines.append("if ((pc.dst_int & dst_mask) == dst_net) == dst_inv: return False")
    if rule.in_iface is not None:
        env["in_iface"], env["in_inv"] = rule.in_iface, bool(rule.in_inv)
        lines.append("if iface_match(in_iface, pc.in_dev) == in_inv: return False")
    if rule.out_iface is not None:
        env["out_iface"], env["out_inv"] = rule.out_iface, bool(rule.out_inv)
        lines.append("if iface_match(out_iface, pc.out_dev) == out_inv: return False")
    if rule.proto:
        env["proto"], env["proto_inv"] = rule.proto, bool(rule.proto_inv)
        lines.append("if (pc.proto == proto) == proto_inv: return False")
    for i, m in enumerate(rule.matches):
        if not m.always:
            env[f"m{i}"] = m.matches
            lines.append(f"if not m{i}(pc): return False")
    if not lines:
        return None
    shape = tuple(lines)
    code = _TEST_CODE.get(shape)
    if code is None:
        src = "def test(pc):\n" + "".join(f"    {line}\n" for line in lines) + "    return True\n"
        code = _TEST_CODE[shape] = compile(src, "<rule test>", "exec")
    exec(code, env)
    return env["test"]


_TEST_CODE: dict[tuple, object] = {}     # rule shape -> compiled `def test` (see _build_test)


# bumped by every Rule.compile(): a chain's destination index made before is stale
COMPILED = [0]
DST_RUN_MIN = 4         # shorter runs of destination rules are walked one by one


class Chain:
    def __init__(self, name: str, policy: str | None = None):
        self.name = name
        self.policy = policy            # ACCEPT/DROP for builtin chains, None for user chains
        self.rules: list[Rule] = []
        self.packets = 0
        self.bytes = 0
        self._dst_index: tuple | None = None

    def dst_skips(self) -> list | None:
        """The destination index of the chain (kube-proxy's KUBE-SERVICES: one
        `-d IP/32` rule per Service port): for each rule position, None, or the
        run of consecutive rules it belongs to whose destinations are all
        `-d NET/MASK` with the same mask and not negated, as (end of the run,
        mask, {network: positions in the run with that network}). A packet whose
        destination is not one of a rule's cannot match it; the walk goes
        straight to the next rule in the run that it can match (or past the run),
        counting the ones between as evaluated. None: no such run. Rebuilt when
        the rule list changed (appended, inserted, replaced) or a rule was compiled."""
        rules = self.rules
        cached = self._dst_index
        if cached is not None and cached[0] is rules and cached[1] == len(rules) \
                and cached[2] == COMPILED[0]:
            return cached[3]
        skips: list | None = None
        i, n = 0, len(rules)
        while i < n:
            r = rules[i]
            if r._dst is None or r.dst_inv:
                i += 1
                continue
            mask = r._dst[1]
            j = i
            where: dict[int, list[int]] = {}
            while j < n and rules[j]._dst is not None and not rules[j].dst_inv \
                    and rules[j]._dst[1] == mask:
                where.setdefault(rules[j]._dst[0], []).append(j)
                j += 1
            if j - i >= DST_RUN_MIN:
                if skips is None:
                    skips = [None] * n
                run = (j, mask, {net: tuple(pos) for net, pos in where.items()})
                for k in range(i, j):
                    skips[k] = run
            i = j
        self._dst_index = (rules, n, COMPILED[0], skips)
        return skips

    @property
    def builtin(self) -> bool:
        return self.policy is not None

    def __repr__(self) -> str:
        return f"<Chain {self.name} {self.policy or '-'} {len(self.rules)} rules>"


class Table:
    def __init__(self, name: str, loaded: bool = False):
        self.name = name
        self.loaded = loaded
        self.chains: dict[str, Chain] = {c: Chain(c, "ACCEPT") for c in TABLE_CHAINS[name]}

    def flush(self) -> None:
        """What iptables-restore does to a table it is about to load."""
        self.chains = {c: Chain(c, "ACCEPT") for c in TABLE_CHAINS[self.name]}

    def ordered(self) -> list[Chain]:
        """Builtin chains in hook order, then user chains sorted by name."""
        builtin = [self.chains[c] for c in TABLE_CHAINS[self.name]]
        users = sorted((c for c in self.chains.values() if not c.builtin), key=lambda c: c.name)
        return builtin + users


class Ruleset:
    """The four tables of one namespace (raw, mangle, nat, filter)."""

    def __init__(self, loaded: bool = False):
        self.tables: dict[str, Table] = {n: Table(n, loaded) for n in TABLE_CHAINS}

    @classmethod
    def empty(cls) -> "Ruleset":
        """All builtin chains, policy ACCEPT, no rules; every table loaded."""
        return cls(loaded=True)

    def chain(self, table: str, name: str) -> Chain:
        return self.tables[table].chains[name]

    def copy(self, deep: bool = False) -> "Ruleset":
        """A copy whose tables, chains and rule lists can change independently;
        Rule objects (and their counters) are shared unless deep=True."""
        if deep:
            return copy.deepcopy(self)
        rs = Ruleset.__new__(Ruleset)
        rs.tables = {}
        for name, t in self.tables.items():
            nt = Table.__new__(Table)
            nt.name, nt.loaded, nt.chains = t.name, t.loaded, {}
            for cname, c in t.chains.items():
                nc = Chain(c.name, c.policy)
                nc.rules, nc.packets, nc.bytes = list(c.rules), c.packets, c.bytes
                nt.chains[cname] = nc
            rs.tables[name] = nt
        return rs

    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.tables.values() for c in t.chains.values())

    def reset_counters(self) -> None:
        for t in self.tables.values():
            for c in t.chains.values():
                c.packets = c.bytes = 0
                for r in c.rules:
                    r.packets = r.bytes = 0

    def to_iptables_save(self, counters: bool = False) -> str:
        """The ruleset as `iptables-save` (counters=True: `iptables-save -c`)."""
        out: list[str] = []
        for tname in SAVE_ORDER:
            t = self.tables[tname]
            if not t.loaded:
                continue
            out.append("# Generated by kdp")
            out.append(f"*{tname}")
            chains = t.ordered()
            for c in chains:
                cnt = f"[{c.packets}:{c.bytes}]" if counters and c.builtin else "[0:0]"
                out.append(f":{c.name} {c.policy or '-'} {cnt}")
            for c in chains:
                out.extend(r.save(counters) for r in c.rules)
            out.append("COMMIT")
            out.append("# Completed by kdp")
        return "\n".join(out) + "\n" if out else ""

    # --- load-time checks (the kernel's translate_table / xt_check_*) -------
    def validate(self, source: str = "-") -> None:
        for t in self.tables.values():
            _check_table(t, source)


def _fail(source: str, rule: Rule | None, msg: str) -> RulesetError:
    return RulesetError(msg, source=source, line=rule.line if rule else None)


def _check_table(t: Table, source: str) -> None:
    edges: dict[str, list[tuple[str, Rule]]] = {name: [] for name in t.chains}
    for c in t.chains.values():
        for r in c.rules:
            tgt = r.target
            if isinstance(tgt, ChainJump):
                dest = t.chains.get(tgt.chain)
                if dest is None:
                    raise _fail(source, r, f"chain '{tgt.chain}' does not exist in table {t.name} "
                                           f"(target of {r.text})")
                if dest.builtin:
                    raise _fail(source, r, f"cannot jump to builtin chain '{tgt.chain}'")
                edges[c.name].append((tgt.chain, r))
    _check_loops(t, edges, source)
    reach: dict[str, set[str]] = {name: set() for name in t.chains}
    for hook in TABLE_CHAINS[t.name]:
        stack = [hook]
        while stack:
            name = stack.pop()
            if hook in reach[name]:
                continue
            reach[name].add(hook)
            stack.extend(dest for dest, _r in edges[name])
    for c in t.chains.values():
        hooks = reach[c.name]
        for r in c.rules:
            for ext in r.extensions():
                if ext.TABLES is not None and t.name not in ext.TABLES:
                    raise _fail(source, r, f"{ext.name} is only valid in the "
                                           f"{'/'.join(sorted(ext.TABLES))} table, not {t.name}")
                allowed = ext.hooks_for()
                if allowed is not None and hooks - allowed:
                    bad = ", ".join(sorted(hooks - allowed))
                    raise _fail(source, r, f"{ext.name} is not valid in {bad} "
                                           f"(chain {c.name} of table {t.name} is reached from it)")


def _check_loops(t: Table, edges, source: str) -> None:
    state: dict[str, int] = {}          # 1 = on the stack, 2 = done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dest, rule in edges[name]:
            if state.get(dest) == 1:
                cycle = " -> ".join(path[path.index(dest):] + [dest]) if dest in path else dest
                raise _fail(source, rule, f"loop in table {t.name}: {cycle}")
            if dest not in state:
                visit(dest, path + [dest])
        state[name] = 2

    for name in t.chains:
        if name not in state:
            visit(name, [name])
