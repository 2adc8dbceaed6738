# netfilter.engine: Netfilter — one namespace's netfilter. For each hook call
# it runs the stages in the kernel's legacy priority order (raw, conntrack
# in, mangle, nat, filter, conntrack confirm), walks chains with jump/goto/
# RETURN semantics and policies, counts packets and bytes per rule, applies
# NAT bindings from conntrack, and records every rule visited in the trace.
# Matches/targets live in their modules; conntrack logic in kdp.conntrack.
from __future__ import annotations

from collections.abc import Callable

from kdp import errors
from kdp.conntrack import (DST, NEW, ORIGINAL, RELATED, RELATED_REPLY, REPLY, SRC, ConntrackTable,
                           NatContext, conntrack_in, icmp_reply_translation, manip_packet,
                           nat_initialized, null_binding, setup_nat)
from kdp.conntrack.events import Event
from kdp.conntrack.tuples import is_icmp_error
from kdp.watch import Watch
from kdp.wire import Packet, l4_length

from .boundary import (HookResult, HookState, NamespaceInfo, SkbMeta, StaticNamespaceInfo,
                       StatisticQuery, TraceEntry)
from .ext import ACCEPT, CONTINUE, DROP, RETURN
from .model import DST_RUN_MIN, Ruleset
from .recent import RecentTables
from .targets import JUMP, VERDICT

STAGES = {
    "PREROUTING": ("raw", "conntrack", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "nat", "confirm"),
    "FORWARD": ("mangle", "filter"),
    "OUTPUT": ("raw", "conntrack", "mangle", "nat", "filter"),
    "POSTROUTING": ("mangle", "nat", "confirm"),
}
NAT_MANIP = {"PREROUTING": DST, "OUTPUT": DST, "INPUT": SRC, "POSTROUTING": SRC}
MAX_JUMP_DEPTH = 256


def ip_length(pkt: Packet) -> int:
    """IP total length, what iptables counts as bytes."""
    l4 = pkt.l4
    return 20 + len(pkt.ip.options) + (l4_length(l4) if l4 is not None else len(pkt.payload))


class PacketCtx:
    """What matches and targets see while one packet walks one hook."""

    __slots__ = ("nf", "meta", "res", "hook", "in_dev", "out_dev", "physin", "physout", "now",
                 "table", "chain", "rule_number", "rejected", "drop_note", "pkt", "ip", "l4", "src",
                 "dst", "proto", "src_int", "dst_int", "ip_len")

    def __init__(self, nf: "Netfilter", hook: str, pkt: Packet, in_dev: str | None,
                 out_dev: str | None, physin: str | None, physout: str | None, now: float,
                 meta: SkbMeta, res: HookResult):
        self.nf, self.meta, self.res = nf, meta, res
        self.hook, self.in_dev, self.out_dev, self.physin, self.physout, self.now = \
            hook, in_dev, out_dev, physin, physout, now
        self.table = self.chain = ""
        self.rule_number = 0
        self.rejected = False
        self.drop_note: str | None = None
        ip = pkt.ip
        self.pkt, self.ip, self.l4 = pkt, ip, pkt.l4
        src, dst = ip.src, ip.dst
        self.src, self.dst, self.proto = src, dst, ip.proto
        self.src_int, self.dst_int = src._ip, dst._ip      # int(src), without the call
        self.ip_len = ip_length(pkt)

    @property
    def hs(self) -> HookState:
        """The hook's arguments as they were passed (the packet as it entered)."""
        return HookState(self.hook, self.res.packet, self.in_dev, self.out_dev, self.physin,
                         self.physout, self.now)

    def set_packet(self, pkt: Packet) -> None:
        ip = pkt.ip
        self.pkt, self.ip, self.l4 = pkt, ip, pkt.l4
        if ip is None:              # a frame at a bridge, netdev or arp hook (l2_hook)
            self.src = self.dst = self.proto = self.src_int = self.dst_int = None
            return
        src, dst = ip.src, ip.dst
        self.src, self.dst, self.proto = src, dst, ip.proto
        self.src_int, self.dst_int = int(src), int(dst)

    def trace(self, table: str, chain: str, number: int, rule: str, outcome: str,
              kind: str = "rule") -> None:
        if self.nf.tracing:
            self.res.trace.append(TraceEntry(table, chain, number, rule, outcome, kind))

    def event(self, text, kind: str = "conntrack") -> None:
        """text: a str, or a kdp.conntrack.events.Event (formatted only here)."""
        if self.nf.tracing:
            self.res.trace.append(TraceEntry("conntrack", self.hook, 0, "", str(text), kind))

    def add_log(self, line: str) -> None:
        self.res.log.append(line)
        self.trace(self.table, self.chain, self.rule_number, "", f"log: {line}", "log")

    def note(self, text: str) -> None:
        self.drop_note = text

    def add_generated(self, pkt: Packet) -> None:
        """A locally generated answer; like nf_ct_attach() it carries the
        offending packet's entry as RELATED in the opposite direction."""
        meta = self.meta
        if meta.ct is None:
            gm = SkbMeta()
        elif meta.ct_dir == ORIGINAL:
            gm = SkbMeta(ct=meta.ct, ct_dir=REPLY, ctinfo=RELATED_REPLY)
        else:
            gm = SkbMeta(ct=meta.ct, ct_dir=ORIGINAL, ctinfo=RELATED)
        self.res.generated.append(pkt)
        self.res.generated_meta.append(gm)

    def nat_setup(self, manip: str, rng) -> str:
        """Called by NAT targets: bind the entry (nf_nat_setup_info)."""
        ct = self.meta.ct
        if ct is None:
            return ACCEPT
        changed = setup_nat(self.nf.nat_context(self.now), ct, manip, rng)
        if not self.nf.tracing:
            return ACCEPT                   # (the event's text is not built when nobody reads it)
        kind = "snat" if manip == SRC else "dnat"
        if changed:
            t = ct.reply.invert()
            side = t.endpoints().split("->")[0 if manip == SRC else 1]
            self.event(f"nat bind {kind} {ct.orig} to {side}", "nat")
        else:
            self.event(f"nat bind {kind} {ct.orig}: tuple unchanged", "nat")
        return ACCEPT


class Netfilter:
    """Netfilter of one network namespace.

    hook(state, meta) runs one hook for one packet and returns a HookResult.
    The caller (the datapath) owns routing: when OUTPUT changes the packet's
    destination (DNAT/REDIRECT) it must route again (ip_route_me_harder).

    force_statistic: None, or a callable taking a StatisticQuery and returning
    True/False (force the `-m statistic --mode random` rule to match or not)
    or None (let the keyed hash decide).
    trace_misses: record rules that did not match in the trace (default).
    watch: where rule changes are reported (the owning datapath's change log)."""

    def __init__(self, ruleset: Ruleset | None = None, conntrack: ConntrackTable | None = None,
                 info: NamespaceInfo | None = None, seed: int = 0, *, trace_misses: bool = True,
                 watch: Watch | None = None):
        self.ruleset = ruleset if ruleset is not None else Ruleset.empty()
        self.ruleset.validate()
        self.conntrack = conntrack if conntrack is not None else ConntrackTable()
        self.info = info if info is not None else StaticNamespaceInfo()
        self.seed = seed
        self.force_statistic: Callable[[StatisticQuery], bool | None] | None = None
        self.recent = RecentTables()
        self.nfacct: dict[str, list[int]] = {}
        self.trace_misses = trace_misses
        self.tracing = True          # False: no TraceEntry at all (bulk runs that print no hops)
        # counted: None, or a list the flow cache's recorder reads: (rule or chain,
        # bytes) per counter increment, None for a volatile rule evaluated
        self.counted: list | None = None
        # guards: None, or a list the recorder reads: the statistic draws by flow
        # hash made (kdp.datapath.megaflow recomputes them for a new flow)
        self.guards: list | None = None
        self.watch = watch if watch is not None else Watch()
        # nftables beside the iptables tables (attach_nft): the stages per hook, with
        # its base chains among them, and the nat chains nf_nat runs per hook
        self.nft = None
        self.stages: dict = STAGES
        self.plans: dict = _PLANS          # the stages as hook() runs them (_plans)
        self.nat_chains: dict = {}
        # the nftables base chains of the bridge, netdev and arp hooks (l2_hook)
        self.l2: dict = {}

    def attach_nft(self, engine) -> None:
        """Evaluate an nftables ruleset (a kdp.netfilter.nft.NftEngine, or None to
        remove it) at the hooks beside the iptables tables."""
        self.nft = engine
        self.stages, self.nat_chains = engine.stages(STAGES) if engine is not None else (STAGES, {})
        self.plans = _plans(self.stages)
        self.l2 = engine.l2_chains() if engine is not None else {}
        self.watch.bump()

    def has_l2(self, family: str, hook: str, device: str | None = None) -> bool:
        """Whether any base chain of this family and hook (on this device) would run."""
        chains = self.l2.get((family, hook))
        if not chains:
            return False
        return device is None or any(not devs or device in devs for _p, devs, _s in chains)

    def l2_hook(self, family: str, hook: str, state: HookState, meta: SkbMeta, nbytes: int,
                device: str | None = None, below: int | None = None,
                from_: int | None = None) -> HookResult:
        """The nftables base chains of a bridge, netdev or arp hook, in priority order
        (those of priority < below, or >= from_, where br_netfilter sits among them).
        nbytes: what a counter counts (skb->len at that hook). device: a netdev hook's
        device. Any frame: an ARP packet has no ip header (its ip matches break)."""
        res = HookResult(ACCEPT, state.packet)
        chains = self.l2.get((family, hook))
        if not chains:
            return res
        pc = None
        is_ip = state.packet.ip is not None
        for prio, devs, stage in chains:
            if (below is not None and prio >= below) or (from_ is not None and prio < from_):
                continue
            if devs and device not in devs:
                continue
            if stage.table.family == "inet" and not is_ip:
                continue                   # inet ingress: IPv4 (and IPv6) frames only
            if pc is None:
                pc = PacketCtx.__new__(PacketCtx)
                pc.nf, pc.meta, pc.res = self, meta, res
                pc.hook, _pkt, pc.in_dev, pc.out_dev, pc.physin, pc.physout, pc.now = state
                pc.table = pc.chain = ""
                pc.rule_number = 0
                pc.rejected = False
                pc.drop_note = None
                pc.set_packet(state.packet)
                pc.ip_len = nbytes
            verdict, reason = stage(pc)
            if verdict == DROP:
                res.verdict, res.reason = DROP, reason
                break
        return res

    def load(self, ruleset: Ruleset) -> None:
        """Swap in a new ruleset (conntrack, recent lists and nfacct stay)."""
        ruleset.validate()
        self.ruleset = ruleset
        self.watch.bump()

    def nat_context(self, now: float) -> NatContext:
        return NatContext(self.conntrack, now, self.seed, self.info.name)

    # --- the hook ----------------------------------------------------------
    def hook(self, state: HookState, meta: SkbMeta) -> HookResult:
        return self.run_hook(*state, meta)

    def run_hook(self, hook: str, pkt: Packet, in_dev: str | None, out_dev: str | None,
                 physin: str | None, physout: str | None, now: float, meta: SkbMeta) -> HookResult:
        """hook() with the HookState's fields as arguments (the datapath's call)."""
        plan = self.plans.get(hook)
        if plan is None:
            raise ValueError(f"unknown hook {hook!r} (one of {', '.join(STAGES)})")
        res = HookResult(ACCEPT, pkt)
        if pkt.ip is None:
            return res                      # ARP and other non-IPv4 frames: not iptables' business
        pc = PacketCtx(self, hook, pkt, in_dev, out_dev, physin, physout, now, meta, res)
        tables = self.ruleset.tables
        for table_name, special in plan:
            if special is not None:
                verdict, reason = special(self, pc)
            else:
                start = tables[table_name].chains.get(hook)
                if start is None:
                    continue
                if not start.rules and start.policy == ACCEPT:
                    # an empty chain: only its policy counter moves (_walk, without the call)
                    start.packets += 1
                    start.bytes += pc.ip_len
                    if self.counted is not None:
                        self.counted.append((start, pc.ip_len))
                    continue
                verdict, reason = self._walk(pc, table_name)
            if verdict == DROP:
                res.verdict, res.reason, res.rejected = DROP, reason, pc.rejected
                break
        res.packet = pc.pkt
        return res

    # --- stages --------------------------------------------------------------
    def _conntrack(self, pc: PacketCtx) -> tuple[str, str | None]:
        meta = pc.meta
        if meta.ct is not None:
            return ACCEPT, None             # already attached (loopback, nf_ct_attach)
        if meta.notrack:
            pc.event("conntrack: untracked (NOTRACK)")
            return ACCEPT, None
        r = conntrack_in(self.conntrack, pc.pkt, pc.now, prerouting=pc.hook == "PREROUTING")
        if self.tracing:
            for ev in r.events:
                pc.event(ev)
        if r.drop:
            return DROP, r.drop
        meta.ct, meta.ct_dir, meta.ctinfo, meta.invalid = r.entry, r.direction, r.ctinfo, r.invalid
        return ACCEPT, None

    def _nat(self, pc: PacketCtx) -> tuple[str, str | None]:
        """nf_nat_ipv4_fn(): walk the nat table for the first packet of a
        connection (per manip type), else rewrite from the entry's binding."""
        if not self.ruleset.tables["nat"].loaded and not self.nat_chains:
            return ACCEPT, None
        meta = pc.meta
        ct = meta.ct
        if ct is None:
            return ACCEPT, None
        manip = NAT_MANIP[pc.hook]
        if meta.ctinfo in (RELATED, RELATED_REPLY) and is_icmp_error(pc.pkt):
            new, ev = icmp_reply_translation(pc.pkt, ct, meta.ct_dir, manip)
            if new is None:
                return DROP, errors.NAT_ICMP_TRANSLATION
            if ev:
                pc.event(ev, "nat")
                pc.set_packet(new)
            return ACCEPT, None
        if meta.ctinfo in (NEW, RELATED, RELATED_REPLY) and not nat_initialized(ct, manip):
            verdict, reason = self._nat_walk(pc, manip)
            if verdict == DROP:
                return verdict, reason
            if not nat_initialized(ct, manip):
                before = ct.reply
                null_binding(self.nat_context(pc.now), ct, manip)
                if ct.reply != before:
                    pc.event(f"nat null binding moved {ct.orig}: reply now {ct.reply}", "nat")
        new, ev = manip_packet(pc.pkt, ct, meta.ct_dir, manip)
        if ev:
            pc.event(ev, "nat")
            pc.set_packet(new)
        return ACCEPT, None

    def _nat_walk(self, pc: PacketCtx, manip: str) -> tuple[str, str | None]:
        """nf_nat_inet_fn(): the hook's nat chains in priority order (iptables' nat
        table, nftables' nat base chains) until one binds the connection."""
        chains = self.nat_chains.get(pc.hook)
        if chains is None:
            return self._walk(pc, "nat")
        for chain in chains:
            verdict, reason = self._walk(pc, "nat") if chain == "nat" else chain(pc)
            if verdict == DROP or nat_initialized(pc.meta.ct, manip):
                return verdict, reason
        return ACCEPT, None

    def _confirm(self, pc: PacketCtx) -> tuple[str, str | None]:
        meta = pc.meta
        ct = meta.ct
        if ct is None or ct.confirmed or meta.ct_dir != ORIGINAL or meta.ctinfo != NEW:
            return ACCEPT, None
        if not self.conntrack.confirm(ct, pc.now):
            pc.event(f"conntrack clash: {ct.orig} / reply {ct.reply} already in the table")
            return DROP, errors.CONNTRACK_CLASH
        pc.event(Event("conntrack confirm {}", ct.orig))
        return ACCEPT, None

    # --- the chain walk (ipt_do_table) ---------------------------------------
    def _walk(self, pc: PacketCtx, table_name: str) -> tuple[str, str | None]:
        table = self.ruleset.tables[table_name]
        start = table.chains.get(pc.hook)
        if start is None:
            return ACCEPT, None
        pc.table = table_name
        counted = self.counted
        ip_len = pc.ip_len
        if not start.rules and start.policy == ACCEPT:
            start.packets += 1
            start.bytes += ip_len
            if counted is not None:
                counted.append((start, ip_len))
            return ACCEPT, None
        stack: list[tuple] = []
        cur, idx = start, 0
        tracing = self.tracing
        trace_misses = self.trace_misses and tracing
        # the destination index (Chain.dst_skips) skips rules whose -d cannot match,
        # whose test would have failed without a side effect; not when every rule
        # evaluated is traced ("no match" entries)
        indexed = not trace_misses
        res = pc.res
        trace = res.trace
        # the chain being walked: its rules, their number, its name, its index
        rules = cur.rules
        n = len(rules)
        name = cur.name
        skips = cur.dst_skips() if indexed and n >= DST_RUN_MIN else None
        evaluated = 0
        while True:
            if idx >= n:
                if cur is not start:
                    if tracing:
                        pc.trace(table_name, name, 0, "", "return", "return")
                    if stack:
                        cur, idx = stack.pop()
                        rules, name = cur.rules, cur.name
                        n = len(rules)
                        skips = cur.dst_skips() if indexed and n >= DST_RUN_MIN else None
                        continue
                res.rules_evaluated += evaluated
                return self._policy(pc, start)
            if skips is not None:
                run = skips[idx]
                if run is not None:
                    end, mask, where = run
                    nxt = end
                    for pos in where.get(pc.dst_int & mask, ()):
                        if pos >= idx:
                            nxt = pos
                            break
                    if nxt > idx:
                        evaluated += nxt - idx
                        idx = nxt
                        continue
            rule = rules[idx]
            idx += 1
            pc.chain, pc.rule_number = name, idx
            evaluated += 1
            if counted is not None and rule.volatile:
                matched = rule.ip_matches(pc) and _matches_noting_volatile(rule, pc, counted)
            else:
                test = rule.test
                matched = test is None or test(pc)
            if not matched:
                if trace_misses:
                    trace.append(TraceEntry(table_name, name, idx, rule.text, "no match"))
                continue
            rule.packets += 1
            rule.bytes += ip_len
            t = rule.target
            if counted is not None:
                counted.append((rule, ip_len))
                if t is not None and t.volatile and not t.guarded(pc):
                    counted.append(None)
            if t is None:
                if tracing:
                    pc.trace(table_name, name, idx, rule.text, "match")
                continue
            kind = t.KIND
            if kind is JUMP:
                if tracing:
                    pc.trace(table_name, name, idx, rule.text, f"match -> {t.describe()}")
                if not t.goto:
                    stack.append((cur, idx))
                    if len(stack) > MAX_JUMP_DEPTH:
                        res.rules_evaluated += evaluated
                        return DROP, errors.JUMP_DEPTH
                cur, idx = table.chains[t.chain], 0
                rules, name = cur.rules, cur.name
                n = len(rules)
                skips = cur.dst_skips() if indexed and n >= DST_RUN_MIN else None
                continue
            if kind is VERDICT:
                if tracing:
                    pc.trace(table_name, name, idx, rule.text, f"match -> {t.verdict}")
                verdict = t.verdict
                if verdict == RETURN:
                    if stack:
                        cur, idx = stack.pop()
                        rules, name = cur.rules, cur.name
                        n = len(rules)
                        skips = cur.dst_skips() if indexed and n >= DST_RUN_MIN else None
                        continue
                    res.rules_evaluated += evaluated
                    return self._policy(pc, start)
                res.rules_evaluated += evaluated
                if verdict == DROP:
                    return DROP, f"rule:{table_name}/{name}#{idx}"
                return ACCEPT, None
            if tracing:
                pc.trace(table_name, name, idx, rule.text, f"match -> {t.describe()}")
            verdict = t.run(pc)
            if verdict == CONTINUE:
                continue
            res.rules_evaluated += evaluated
            if verdict == DROP:
                return DROP, pc.drop_note or f"rule:{table_name}/{name}#{idx}"
            return verdict, None

    def _policy(self, pc: PacketCtx, chain) -> tuple[str, str | None]:
        chain.packets += 1
        chain.bytes += pc.ip_len
        if self.counted is not None:
            self.counted.append((chain, pc.ip_len))
        pc.trace(pc.table, chain.name, 0, f"-P {chain.name} {chain.policy}",
                 f"policy {chain.policy}", "policy")
        if chain.policy == DROP:
            return DROP, f"policy:{pc.table}/{chain.name}"
        return ACCEPT, None


# The stages that are not a table walk, by name (Netfilter.hook).
_STAGE_METHODS = {"conntrack": Netfilter._conntrack, "nat": Netfilter._nat,
                  "confirm": Netfilter._confirm}


def _plans(stages: dict) -> dict:
    """Each hook's stages as Netfilter.hook runs them: (table to walk, None) or
    (None, stage): a stage method, or an nftables base chain (called as one)."""
    return {hook: tuple(((None, _STAGE_METHODS[s]) if s in _STAGE_METHODS else (s, None))
                        if s.__class__ is str else (None, s) for s in hook_stages)
            for hook, hook_stages in stages.items()}


_PLANS = _plans(STAGES)


def _matches_noting_volatile(rule, pc: PacketCtx, counted: list) -> bool:
    """The rule's matches in order, as the walk evaluates them; each volatile
    one actually evaluated leaves a None in counted (the flow cache's recorder
    then keeps the decision out of the cache), but for a draw by the flow's
    hash, which notes itself in nf.guards (Match.guarded). One that is never reached
    (an earlier match failed) had no say and no side effect."""
    for m in rule.matches:
        if m.volatile and not m.guarded(pc):
            counted.append(None)
        if not m.matches(pc):
            return False
    return True
