# netfilter.nft.engine: NftEngine — an nftables ruleset (netfilter.nft.ruleset.NftRuleset)
# evaluated at the IPv4 hooks beside the iptables tables of netfilter.engine.Netfilter.
# Base chains of `ip` and `inet` tables become hook stages ordered by priority among
# iptables' stages (raw -300, conntrack -200, mangle -150, nat, filter 0, confirm last);
# nat-type chains run inside the NAT stage, in priority order after iptables' nat table,
# until one binds the connection (nf_nat_inet_fn). Rules are compiled once: each statement
# a function of the packet context (netfilter.engine.PacketCtx) that lets the rule go on,
# breaks it, or gives a verdict; jump/goto/return as nft_do_chain walks them; counters,
# marks, set updates, NAT through conntrack (as the iptables NAT targets), reject.
# Every rule evaluated is traced (table, chain, rule number, the element that matched).
# The other families IPv4 frames cross are hook points of their own (l2_chains): `bridge`
# base chains at the bridge hooks (prerouting, input, forward, output, postrouting of the
# node's bridges), `netdev` ingress/egress chains (and `inet` ingress chains, IPv4 frames
# only) on their devices, `arp` input/output for the ARP packets the stacks receive and
# send. `ip6` tables are parsed and printed but never evaluated: no IPv4 frame reaches
# their hooks (kdp has no IPv6 traffic).
from __future__ import annotations

from dataclasses import replace

from kdp import errors
from kdp.conntrack import DST, SRC, NatRange

from ..boundary import RulesetError, TraceEntry
from ..ext import ACCEPT, DROP
from ..nattargets import redirect_address
from ..reject import build_reject
from . import render
from .expr import (Problem, compile_expr, const_matches, describe_value, kind_of, numgen,
                   parse_const)
from .model import (AnonSet, Counter, Ct, Match, Meta, MetaSet, Nat, Numgen, Reject, SetRef,
                    SetUpdate, Verdict, Vmap)
from .ruleset import NftRuleset
from .sets import RuntimeSet, parse_verdict

HOOKS = {"prerouting": "PREROUTING", "input": "INPUT", "forward": "FORWARD",
         "output": "OUTPUT", "postrouting": "POSTROUTING"}
FAMILIES = ("ip", "inet", "bridge", "netdev", "arp")    # the tables IPv4 frames cross (not ip6)
# the hooks of the families that are not the IPv4 hooks: family -> hooks kdp runs
L2_HOOKS = {"bridge": ("prerouting", "input", "forward", "output", "postrouting"),
            "netdev": ("ingress", "egress"), "arp": ("input", "output")}
# iptables' stages (netfilter.engine.STAGES) at their kernel priorities; nat depends on
# the hook (NF_IP_PRI_NAT_DST -100 / NF_IP_PRI_NAT_SRC 100)
STAGE_PRIORITY = {"raw": -300, "conntrack": -200, "mangle": -150, "filter": 0, "security": 50,
                  "confirm": 2 ** 31 - 1}
NAT_PRIORITY = {"PREROUTING": -100, "OUTPUT": -100, "INPUT": 100, "POSTROUTING": 100}
MAX_JUMP_DEPTH = 256
REJECT_WITH = {None: "icmp-port-unreachable", "tcp reset": "tcp-reset",
               "icmp port-unreachable": "icmp-port-unreachable",
               "icmp type port-unreachable": "icmp-port-unreachable",
               "icmp host-unreachable": "icmp-host-unreachable",
               "icmp type host-unreachable": "icmp-host-unreachable",
               "icmp net-unreachable": "icmp-net-unreachable",
               "icmp type net-unreachable": "icmp-net-unreachable",
               "icmp prot-unreachable": "icmp-proto-unreachable",
               "icmp type prot-unreachable": "icmp-proto-unreachable",
               "icmp admin-prohibited": "icmp-admin-prohibited",
               "icmp type admin-prohibited": "icmp-admin-prohibited",
               "icmp host-prohibited": "icmp-host-prohibited",
               "icmp type host-prohibited": "icmp-host-prohibited",
               "icmp net-prohibited": "icmp-net-prohibited",
               "icmp type net-prohibited": "icmp-net-prohibited"}
NEXT, BREAK = True, False


class NftCounter:
    """A `counter` statement's packets and bytes (what the flow cache replays)."""

    __slots__ = ("packets", "bytes")

    def __init__(self, packets: int = 0, nbytes: int = 0):
        self.packets, self.bytes = packets, nbytes


class CRule:
    """A compiled rule: its statements as functions, its text for traces."""

    __slots__ = ("ops", "text", "number", "counters", "source")

    def __init__(self, ops, text, number, counters, source):
        self.ops, self.text, self.number, self.counters, self.source = ops, text, number, counters, source


class CChain:
    __slots__ = ("name", "rules", "base", "policy", "hook", "priority", "type", "devices")

    def __init__(self, name, rules, base=False, policy="accept", hook=None, priority=0, type=None,
                 devices=()):
        self.name, self.rules, self.base, self.policy = name, rules, base, policy
        self.hook, self.priority, self.type, self.devices = hook, priority, type, devices


class CTable:
    def __init__(self, family, name):
        self.family, self.name = family, name
        self.label = f"{family} {name}"
        self.sets: dict[str, RuntimeSet] = {}
        self.chains: dict[str, CChain] = {}


class BaseChainStage:
    """One base chain as a stage of a Netfilter hook: called with the packet context
    (or the Netfilter and the packet context, as its stage methods are), returns
    (verdict, drop reason) as iptables' stages do."""

    __slots__ = ("engine", "table", "chain", "priority")

    def __init__(self, engine, table, chain):
        self.engine, self.table, self.chain, self.priority = engine, table, chain, chain.priority

    def __call__(self, *args):
        return self.engine.walk(args[-1], self.table, self.chain)

    def __repr__(self):
        return f"<nft {self.table.label} {self.chain.name} {self.chain.hook} {self.priority}>"


class NftEngine:
    """The nftables tables of one namespace, compiled for the packet path.

    ns_name and seed fix numgen's decision points (the namespace, as the statistic match)."""

    def __init__(self, ruleset: NftRuleset, source: str = "-", ns_name: str = "ns", seed: int = 0):
        self.ruleset, self.source, self.ns_name, self.seed = ruleset, source, ns_name, seed
        self.tables: list[CTable] = []
        # force_choice: None, or a callable (table label, chain name, the connection's
        # original tuple or None) -> True/False/None that steers `numgen ... vmap` to the
        # first element whose chain it accepts (None everywhere: the hash decides) --
        # kdp.testing's endpoint probes and the kernel oracle, as Netfilter.force_statistic
        # steers the statistic match
        self.force_choice = None
        self.note: list = [None]     # the set or map element the rule being walked matched
        for t in ruleset.tables:
            if t.family in FAMILIES:
                self.tables.append(self._table(t))

    # -- loading ------------------------------------------------------------------------
    def _error(self, line, message):
        return RulesetError(message, source=self.source, line=line)

    def _table(self, t) -> CTable:
        ct = CTable(t.family, t.name)
        for s in t.sets.values():
            try:
                ct.sets[s.name] = RuntimeSet.from_decl(s)
            except Problem as e:
                raise self._error(None, f"table {ct.label}: {e}") from None
        for c in t.chains.values():
            hook = self._hook(t.family, c)
            ct.chains[c.name] = CChain(c.name, [], c.base, c.policy or "accept",
                                       hook, c.priority, c.type, c.devices)
        for c in t.chains.values():
            chain = ct.chains[c.name]
            for i, r in enumerate(c.rules, 1):
                try:
                    chain.rules.append(self._rule(ct, chain, i, r))
                except Problem as e:
                    raise self._error(r.line, f"chain {c.name}: {e}") from None
        return ct

    def _hook(self, family: str, c):
        """The hook a base chain runs at: an IPv4 hook name (PREROUTING...), or for the
        other families (family, hook) (netfilter.engine.Netfilter.l2_hook's key)."""
        if c.hook is None:
            return None
        where = f"chain {family} {c.name}"
        if family in ("ip", "inet") and c.hook in HOOKS:
            if c.devices:
                raise self._error(None, f"{where}: a device on the {c.hook} hook")
            return HOOKS[c.hook]
        if family == "inet" and c.hook == "ingress":
            family = "netdev"                  # IPv4 frames only (the rule's ip payload)
        elif family not in L2_HOOKS or c.hook not in L2_HOOKS[family]:
            raise self._error(None, f"{where}: kdp has no {c.hook} hook for the {family} family")
        if c.type != "filter":
            raise self._error(None, f"{where}: kdp runs only filter chains in the {family} family")
        if family == "netdev" and not c.devices:
            raise self._error(None, f"{where}: a {c.hook} chain needs a device")
        return (family, c.hook)

    def _rule(self, table: CTable, chain: CChain, number: int, r) -> CRule:
        ops, counters = [], []
        for st in r.statements:
            ops.append(self._statement(table, chain, number, st, counters))
        text = render.rule(replace(r, statements=tuple(
            Counter() if isinstance(s, Counter) else s for s in r.statements))).replace(
            "counter packets 0 bytes 0", "counter")
        return CRule(tuple(ops), text, number, counters, r)

    def _key(self, table, chain, number, e):
        if isinstance(e, Numgen):
            return numgen(e, self.ns_name, table.label, chain.name, number, self.seed), "int", True
        return compile_expr(e), kind_of(e), False

    def _set(self, table: CTable, ref, kind, *, is_map: bool) -> RuntimeSet:
        if isinstance(ref, SetRef):
            s = table.sets.get(ref.name)
            if s is None:
                raise Problem(f"no set or map named {ref.name!r}")
            if s.is_map != is_map:
                raise Problem(f"@{ref.name} is a {'map' if s.is_map else 'set'}")
            want = kind if isinstance(kind, tuple) else (kind,)
            if tuple(k for k in want) != s.kinds:
                raise Problem(f"@{ref.name}: its key type does not fit the expression")
            return s
        kinds = kind if isinstance(kind, tuple) else (kind,)
        return RuntimeSet(None, kinds, ref.elements, is_map=is_map)

    def _statement(self, table, chain, number, st, counters):
        if isinstance(st, Match):
            return self._match(table, chain, number, st)
        if isinstance(st, Vmap):
            key, kind, volatile = self._key(table, chain, number, st.key)
            s = self._set(table, st.map, kind, is_map=True)
            for _v, el in s.exact.values():
                self._check_target(table, el.value)
            if isinstance(st.key, Numgen):
                return _numgen_vmap(self, table, key, kind, s, self.note)
            return _vmap(key, kind, s, volatile, self.note)
        if isinstance(st, Counter):
            c = NftCounter(st.packets, st.bytes)
            counters.append(c)
            return _counter(c)
        if isinstance(st, Verdict):
            if st.kind in ("jump", "goto"):
                self._check_target(table, f"{st.kind} {st.chain}")
            v = (st.kind, st.chain)
            return lambda pc: v
        if table.family not in ("ip", "inet") and isinstance(st, (Nat, Reject)):
            raise Problem(f"`{render.statement(st)}` in the {table.family} family: kdp runs it "
                          "only in ip and inet tables")
        if isinstance(st, Nat):
            if chain.base and chain.type != "nat":
                raise Problem(f"{st.kind} in a {chain.type} chain (nat chains only)")
            return _nat(st)
        if isinstance(st, Reject):
            how = REJECT_WITH.get(st.with_)
            if how is None:
                raise Problem(f"unsupported `reject with {st.with_}`")
            return _reject(how)
        if isinstance(st, MetaSet):
            value, _k, vol = self._key(table, chain, number, st.value) \
                if not hasattr(st.value, "text") else (_const_int(st.value.text), "int", False)
            if isinstance(st.key, Meta) and st.key.key == "mark":
                return _set_mark(value, vol)
            if isinstance(st.key, Ct) and st.key.key == "mark":
                return _set_ct_mark(value, vol)
            raise Problem(f"unsupported statement `{render.statement(st)}`")
        if isinstance(st, SetUpdate):
            s = table.sets.get(st.set)
            if s is None:
                raise Problem(f"no set named {st.set!r}")
            key, kind, _vol = self._key(table, chain, number, st.key)
            if (kind if isinstance(kind, tuple) else (kind,)) != s.kinds:
                raise Problem(f"@{st.set}: its key type does not fit the expression")
            return _update(key, s, st.op == "add")
        raise Problem(f"unsupported statement {st!r}")

    def _check_target(self, table, verdict_text):
        kind, target = parse_verdict(verdict_text)
        if target is not None and target not in table.chains:
            raise Problem(f"{kind} to a chain that does not exist: {target}")

    def _match(self, table, chain, number, st: Match):
        key, kind, volatile = self._key(table, chain, number, st.left)
        op = st.op
        if isinstance(st.right, (SetRef, AnonSet)):
            if op not in ("==", "!="):
                raise Problem(f"`{op}` with a set")
            s = self._set(table, st.right, kind, is_map=False)
            return _in_set(key, kind, s, op == "==", volatile or s.dynamic, self.note)
        if isinstance(kind, tuple):
            raise Problem("a concatenation compared with a single value")
        c = parse_const(st.right.text, kind)
        if op in ("<", ">", "<=", ">="):
            if c[0] != "eq" or not isinstance(c[1], int):
                raise Problem(f"`{op}` needs a number")
            return _compare(key, op, c[1], volatile)
        return _equal(key, c, op == "==", volatile)

    # -- the hook stages ----------------------------------------------------------------
    def base_chains(self):
        """The base chains at the IPv4 hooks."""
        for t in self.tables:
            for c in t.chains.values():
                if c.base and isinstance(c.hook, str):
                    yield t, c

    def l2_chains(self) -> dict:
        """The base chains of the other hooks, each hook's in priority order (the order
        of the tables and chains for one priority): {(family, hook): ((priority,
        devices, stage), ...)}, family "netdev" holding the inet ingress chains too."""
        out: dict = {}
        for t in self.tables:
            for c in t.chains.values():
                if c.base and isinstance(c.hook, tuple):
                    out.setdefault(c.hook, []).append((c.priority, c.devices, BaseChainStage(self, t, c)))
        return {k: tuple(sorted(v, key=lambda x: x[0])) for k, v in out.items()}

    def stages(self, iptables_stages: dict) -> tuple[dict, dict]:
        """(stages per hook, nat chains per hook): iptables' stage names and this
        engine's base chains ordered by priority (an nft chain after an iptables table of
        the same priority); the nat list holds "nat" (iptables' nat table) and the nft
        nat chains in the order nf_nat runs them."""
        stages, nat = {}, {}
        for hook, names in iptables_stages.items():
            items = [(STAGE_PRIORITY.get(n, NAT_PRIORITY.get(hook, 0)) if n != "nat"
                      else NAT_PRIORITY[hook], 0, i, n) for i, n in enumerate(names)]
            nat_items = [(NAT_PRIORITY.get(hook, 0), 0, -1, "nat")] if "nat" in names else []
            for j, (t, c) in enumerate(self.base_chains()):
                if c.hook != hook:
                    continue
                stage = BaseChainStage(self, t, c)
                if c.type == "nat":
                    nat_items.append((c.priority, 1, j, stage))
                else:
                    items.append((c.priority, 1, j, stage))
            if nat_items and "nat" not in names:
                raise RulesetError(f"nat chains at the {hook} hook: kdp has no NAT stage there",
                                   source=self.source)
            # confirm stays last whatever an nft chain's priority says
            items.sort(key=lambda x: (x[3] == "confirm", x[0], x[1], x[2]))
            stages[hook] = tuple(x[3] for x in items)
            if len(nat_items) > 1:
                nat_items.sort(key=lambda x: (x[0], x[1], x[2]))
                nat[hook] = tuple(x[3] for x in nat_items)
        return stages, nat

    # -- the walk (nft_do_chain) --------------------------------------------------------
    def walk(self, pc, table: CTable, base: CChain):
        nf = pc.nf
        res = pc.res
        tracing = nf.tracing
        trace_misses = nf.trace_misses and tracing
        label = table.label
        pc.table = label
        chains = table.chains
        note_box = self.note
        stack: list = []
        cur, idx = base, 0
        rules = cur.rules
        while True:
            if idx >= len(rules):
                if stack:
                    if tracing:
                        res.trace.append(TraceEntry(label, cur.name, 0, "", "return", "return"))
                    cur, idx = stack.pop()
                    rules = cur.rules
                    continue
                return self._policy(pc, label, base)
            rule = rules[idx]
            idx += 1
            pc.chain, pc.rule_number = cur.name, rule.number
            note_box[0] = None
            res.rules_evaluated += 1
            v = NEXT
            for op in rule.ops:
                v = op(pc)
                if v is not NEXT:
                    break
            if v is BREAK:
                if trace_misses:
                    res.trace.append(TraceEntry(label, cur.name, rule.number, rule.text, "no match"))
                continue
            note = f" {note_box[0]}" if note_box[0] else ""
            if v is NEXT:
                if tracing:
                    res.trace.append(TraceEntry(label, cur.name, rule.number, rule.text,
                                                "match" + note))
                continue
            kind, target = v
            if tracing:         # "match -> VERDICT [ELEMENT]" (kdp.render reads the verdict)
                res.trace.append(TraceEntry(label, cur.name, rule.number, rule.text,
                                            f"match -> {kind}" + (f" {target}" if target else "")
                                            + note))
            if kind == "continue":
                continue
            if kind in ("jump", "goto"):
                if kind == "jump":
                    stack.append((cur, idx))
                    if len(stack) > MAX_JUMP_DEPTH:
                        return DROP, errors.JUMP_DEPTH
                cur, idx = chains[target], 0
                rules = cur.rules
                continue
            if kind == "return":
                if stack:
                    cur, idx = stack.pop()
                    rules = cur.rules
                    continue
                return self._policy(pc, label, base)
            if kind == "drop":
                return DROP, pc.drop_note or f"rule:{label}/{cur.name}#{rule.number}"
            return ACCEPT, None

    def _policy(self, pc, label, base: CChain):
        if pc.nf.tracing:
            pc.res.trace.append(TraceEntry(label, base.name, 0, "",
                                           f"policy {base.policy}", "policy"))
        if base.policy == "drop":
            return DROP, f"policy:{label}/{base.name}"
        return ACCEPT, None

    def dnat_of(self, label: str, chain: str):
        """(address, port or None) of the chain's first `dnat to` statement, or None."""
        from ipaddress import IPv4Address
        for t in self.ruleset.tables:
            if f"{t.family} {t.name}" == label and chain in t.chains:
                for r in t.chains[chain].rules:
                    for st in r.statements:
                        if isinstance(st, Nat) and st.kind == "dnat" and st.addr is not None:
                            return (IPv4Address(st.addr.split("-")[0]),
                                    int(st.port.split("-")[0]) if st.port else None)
        return None

    def hide_dynamic_elements(self):
        """Empty the dynamic sets (affinity memory) for a probe; returns the undo."""
        saved = [(s, s.exact, s.expires, s.added) for t in self.tables for s in t.sets.values()
                 if s.dynamic]
        for s, *_ in saved:
            s.exact, s.expires, s.added = {}, {}, {}

        def undo():
            for s, exact, expires, added in saved:
                s.exact, s.expires, s.added = exact, expires, added
        return undo

    # -- listing ------------------------------------------------------------------------
    def listing(self, now: float) -> NftRuleset:
        """The ruleset as `nft list ruleset` shows it now: counters as counted, dynamic
        set elements with their timeouts left."""
        out = []
        compiled = {(t.family, t.name): t for t in self.tables}
        for t in self.ruleset.tables:
            ct = compiled.get((t.family, t.name))
            if ct is None:
                out.append(t)
                continue
            nt = replace(t, sets=dict(t.sets), chains=dict(t.chains))
            for name, s in t.sets.items():
                rs = ct.sets[name]
                if rs.dynamic or rs.added:
                    nt.sets[name] = replace(s, elements=rs.listed_elements(now))
            for name, c in t.chains.items():
                cc = ct.chains[name]
                rules = []
                for r, crule in zip(c.rules, cc.rules):
                    counters = iter(crule.counters)
                    rules.append(replace(r, statements=tuple(
                        _counted(next(counters)) if isinstance(s, Counter) else s
                        for s in r.statements)))
                nt.chains[name] = replace(c, rules=rules)
            out.append(nt)
        return NftRuleset(out)


def _counted(c: NftCounter) -> Counter:
    return Counter(c.packets, c.bytes)


def _const_int(text: str):
    try:
        v = int(text, 0)
    except ValueError:
        raise Problem(f"cannot read {text!r} as a number") from None
    return lambda pc: v


def _volatile(pc) -> None:
    """A decision that may differ next time (random, set state, NAT, an answer): the
    flow cache's recorder keeps it out of the cache (netfilter.engine's counted list)."""
    counted = pc.nf.counted
    if counted is not None:
        counted.append(None)


# -- statements as functions of the packet context ---------------------------------------

def _equal(key, c, want: bool, volatile: bool):
    def equal(pc):
        if volatile:
            _volatile(pc)
        v = key(pc)
        if v is None:
            return BREAK
        return NEXT if const_matches(c, v) == want else BREAK
    return equal


def _compare(key, op, n, volatile):
    test = {"<": int.__lt__, ">": int.__gt__, "<=": int.__le__, ">=": int.__ge__}[op]

    def compare(pc):
        if volatile:
            _volatile(pc)
        v = key(pc)
        return BREAK if v is None or not test(v, n) else NEXT
    return compare


def _in_set(key, kind, s: RuntimeSet, want: bool, volatile: bool, note: list):
    def lookup(pc):
        if volatile:
            _volatile(pc)
        v = key(pc)
        if v is None:
            return BREAK
        hit = s.lookup(v, pc.now)
        if hit is not None and want and s.name is not None:
            note[0] = f"[@{s.name} {describe_value(v, kind)}]"
        return NEXT if (hit is not None) == want else BREAK
    return lookup


def _vmap(key, kind, s: RuntimeSet, volatile: bool, note: list):
    def vmap(pc):
        if volatile or s.dynamic:
            _volatile(pc)
        v = key(pc)
        if v is None:
            return BREAK
        hit = s.lookup(v, pc.now)
        if hit is None:
            return BREAK
        value, el = hit
        where = f"@{s.name} " if s.name is not None else ""
        note[0] = f"[{where}{describe_value(v, kind)}]"
        return value
    return vmap


def _numgen_vmap(engine, table, key, kind, s: RuntimeSet, note: list):
    """``numgen random mod N vmap { ... }``: the drawn number's element, or (force_choice
    set) the first element whose chain force_choice accepts."""
    plain = _vmap(key, kind, s, True, note)
    drawn = _vmap(key, kind, s, False, note)       # a draw by flow hash the recorder notes
    elements = sorted(s.exact.items())

    def numgen_vmap(pc):
        force = engine.force_choice
        if force is None and pc.nf.guards is not None and pc.meta.ct is not None:
            return drawn(pc)
        if force is not None:
            ct = pc.meta.ct
            t = ct.orig if ct is not None else None
            for n, (value, el) in elements:
                if value[1] is not None and force(table.label, value[1], t):
                    _volatile(pc)
                    note[0] = f"[{n} (forced)]"
                    return value
        return plain(pc)
    return numgen_vmap


def _counter(c: NftCounter):
    def counter(pc):
        c.packets += 1
        c.bytes += pc.ip_len
        counted = pc.nf.counted
        if counted is not None:
            counted.append((c, pc.ip_len))
        return NEXT
    return counter


def _set_mark(value, volatile):
    def set_mark(pc):
        if volatile:
            _volatile(pc)
        v = value(pc)
        if v is None:
            return BREAK
        pc.meta.mark = v & 0xFFFFFFFF
        return NEXT
    return set_mark


def _set_ct_mark(value, volatile):
    def set_ct_mark(pc):
        _volatile(pc)
        v = value(pc)
        ct = pc.meta.ct
        if v is None or ct is None:
            return BREAK
        ct.mark = v & 0xFFFFFFFF
        return NEXT
    return set_ct_mark


def _update(key, s: RuntimeSet, add_only: bool):
    def update(pc):
        _volatile(pc)
        v = key(pc)
        if v is None:
            return BREAK
        s.update(v, pc.now, add_only)
        return NEXT
    return update


def _reject(how: str):
    def reject(pc):
        _volatile(pc)
        reply = build_reject(pc.pkt, how, pc)
        if reply is not None:
            pc.add_generated(reply)
        pc.rejected = True
        return ("drop", None)
    return reject


def _nat(st: Nat):
    from ipaddress import IPv4Address
    flags = set(st.flags)
    # a binding a megaflow recipe makes again (netfilter.nattargets' rule): no
    # flag draws, one address, a port only where it replaces the destination's
    single_port = st.port is None or "-" not in st.port
    recipe = not flags and (st.addr is None or "-" not in st.addr) and \
        (st.port is None or (st.kind in ("dnat", "redirect") and single_port))

    def note(pc):
        if not (recipe and pc.nf.guards is not None):
            _volatile(pc)
    extra = dict(random="random" in flags, random_fully="fully-random" in flags,
                 persistent="persistent" in flags)
    ports = (None, None)
    if st.port is not None:
        lo, _, hi = st.port.partition("-")
        ports = (int(lo), int(hi or lo))
    if st.kind in ("dnat", "snat"):
        if st.addr is None:
            raise Problem(f"{st.kind} needs an address")
        lo, _, hi = st.addr.partition("-")
        try:
            rng = NatRange(IPv4Address(lo), IPv4Address(hi or lo), *ports, **extra)
        except ValueError:
            raise Problem(f"bad address {st.addr!r}") from None
        manip = DST if st.kind == "dnat" else SRC

        def to(pc):
            note(pc)
            pc.nat_setup(manip, rng)
            return ("accept", None)
        return to
    if st.kind == "masquerade":
        def masquerade(pc):
            """nf_nat_masquerade_ipv4(): the address the route out of out_dev picks."""
            note(pc)
            newsrc = pc.nf.info.source_address(pc.out_dev, pc.dst)
            if newsrc is None or int(newsrc) == 0:
                pc.note(f"masquerade: {pc.out_dev} has no address")
                return ("drop", None)
            if pc.meta.ct is not None:
                pc.meta.ct.masq_dev = pc.out_dev
            pc.nat_setup(SRC, NatRange(newsrc, newsrc, *ports, **extra))
            return ("accept", None)
        return masquerade
    if st.kind == "redirect":
        def redirect(pc):
            note(pc)
            newdst = redirect_address(pc)
            if newdst is None:
                pc.note(f"redirect: {pc.in_dev} has no address")
                return ("drop", None)
            pc.nat_setup(DST, NatRange(newdst, newdst, *ports, **extra))
            return ("accept", None)
        return redirect
    raise Problem(f"unsupported statement {st.kind}")
