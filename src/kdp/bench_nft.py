# bench_nft: kube-proxy's nftables mode in `kdp bench rules` — a node's `ip kube-proxy`
# table (kdp.k8s.kubeproxy_nft) beside the iptables rules that stay (kubelet's,
# ip-masq-agent's), walked by kdp's reference path (kdp.netfilter with the nft engine
# attached, as kdp.k8s.cni builds an nftables-mode node); the first packet's decision and
# the walk's work counted (rules, chains entered, set and verdict-map lookups); the compiled
# matcher's program for the same Services with each endpoint draw re-pointed at the table's
# `numgen random mod N vmap` (its decision point, its modulus, its element order); and the
# transaction cut into `nft -f` batches for the kernel (bench_kernel). Measures nothing
# itself (kdp.bench_rules times); never changes kdp's behaviour.
from __future__ import annotations

from ipaddress import IPv4Address

from .conntrack.keyed import decision_point
from .fast.svcmatch import ALWAYS, Decision

TABLE = "ip kube-proxy"
PROTO = {"tcp": 6, "udp": 17}


def node_tables(cluster, node: str):
    """(the `nft -f` transaction kube-proxy writes, the parsed table, the iptables-save
    text that stays iptables on the node)."""
    from .k8s.cni import _iptables_beside_nft
    from .k8s.kubeproxy_nft import node_transaction
    from .netfilter.nft import parse_ruleset
    tx = node_transaction(cluster, node)
    return tx, parse_ruleset(tx, f"<kube-proxy nftables sync on {node}>"), \
        _iptables_beside_nft(cluster, node)


def _table(ruleset):
    for t in ruleset.tables:
        if f"{t.family} {t.name}" == TABLE:
            return t
    return None


def targets_of(ruleset) -> list[tuple[int, int, int, int]]:
    """Every (destination, protocol, port) of the `service-ips` verdict map, in element
    order, each at position 1: the `services` chain's one vmap rule decides them all."""
    t = _table(ruleset)
    m = t.sets.get("service-ips") if t is not None else None
    out = []
    for el in (m.elements if m is not None else ()):
        ip, proto, port = el.key
        if proto in PROTO:
            out.append((int(IPv4Address(ip)), PROTO[proto], int(port), 1))
    return out


def reference_netfilter(ruleset, iptables_text: str, ns_name: str, addresses, seed: int = 0,
                        *, trace: bool = False):
    """The node's Netfilter (its iptables tables) with the nft table attached."""
    from .fast.svcref import reference_netfilter as iptables_netfilter
    from .netfilter.nft.engine import NftEngine
    nf = iptables_netfilter(iptables_text, ns_name, addresses, seed, trace=trace)
    nf.attach_nft(NftEngine(ruleset, f"kube-proxy nftables rules of {ns_name}", ns_name, seed))
    return nf


def reference_decision(nf, proto: int, src: int, dst: int, sport: int, dport: int, now: float,
                       in_local: bool = False) -> Decision:
    """What the reference walk does with the first packet (fast.svcref's walk: the first
    hook, then FORWARD or INPUT); DNAT is read off the conntrack binding, since nft's
    `dnat to` is a statement, not an iptables target."""
    from .fast.svcref import _first_packet
    from .netfilter import HookState, SkbMeta
    pkt = _first_packet(proto, src, dst, sport, dport)
    meta = SkbMeta()
    hook = "OUTPUT" if in_local else "PREROUTING"
    res = nf.hook(HookState(hook, pkt, out_dev="eth0" if in_local else None,
                            in_dev=None if in_local else "eth0", now=now), meta)
    rules = res.rules_evaluated
    ct = meta.ct
    dnat = ct is not None and any(t.kind == "nat" and t.outcome.startswith("nat bind dnat")
                                  for t in res.trace)
    mark = bool(meta.mark & 0x4000)
    verdict = None
    if res.verdict == "DROP":
        verdict = "reject" if res.rejected else "drop"
    else:
        after = res.packet
        local = nf.info.addr_type(after.ip.dst) == "LOCAL"
        res2 = None
        if in_local and local:
            res2 = nf.hook(HookState("INPUT", after, in_dev="lo", now=now), meta)
        elif not in_local:
            res2 = nf.hook(HookState("INPUT" if local else "FORWARD", after, in_dev="eth0",
                                     out_dev=None if local else "eth0", now=now), meta)
        if res2 is not None and res2.verdict == "DROP":
            verdict = "reject" if res2.rejected else "drop"
    nf.conntrack.flush()
    if verdict is None:
        verdict = "dnat" if dnat else "none"
    ep = ct.reply.src if verdict == "dnat" else None
    port = ct.reply.sport if verdict == "dnat" else None
    return Decision(verdict, ep, port, mark, rules, None)


def count_work(nf, flows) -> dict:
    """Mean work of the first hook's walk per first packet, over `flows` (not timed):
    rules evaluated, nft chains entered (base chains walked, jumps and gotos taken) and
    set and verdict-map lookups (named and anonymous: RuntimeSet.lookup calls)."""
    from .netfilter import HookState, SkbMeta
    from .netfilter.nft.engine import NftEngine
    from .netfilter.nft.sets import RuntimeSet
    from .fast.svcref import _first_packet
    counts = {"lookups": 0, "walks": 0}
    lookup, walk = RuntimeSet.lookup, NftEngine.walk

    def counting_lookup(self, key, now):
        counts["lookups"] += 1
        return lookup(self, key, now)

    def counting_walk(self, pc, table, base):
        counts["walks"] += 1
        return walk(self, pc, table, base)

    rules = jumps = n = 0
    RuntimeSet.lookup, NftEngine.walk = counting_lookup, counting_walk
    try:
        for src, dst, sport, dport, proto, _fl, local, _ok, now in flows.tolist():
            pkt = _first_packet(proto, src, dst, sport, dport)
            hook = "OUTPUT" if local else "PREROUTING"
            res = nf.hook(HookState(hook, pkt, in_dev=None if local else "eth0",
                                    out_dev="eth0" if local else None, now=now), SkbMeta())
            nf.conntrack.flush()
            rules += res.rules_evaluated
            jumps += sum(1 for t in res.trace if t.kind == "rule" and t.table == TABLE
                         and t.outcome.startswith(("match -> jump", "match -> goto")))
            n += 1
    finally:
        RuntimeSet.lookup, NftEngine.walk = lookup, walk
    n = max(1, n)
    return {"rules_per_packet": round(rules / n, 2),
            "chains_per_packet": round((counts["walks"] + jumps) / n, 2),
            "lookups_per_packet": round(counts["lookups"] / n, 2), "counted": n}


# --- the compiled matcher's program for the nft table ---------------------------------

def _numgen_rule(chain):
    """(rule number, [chain of element 0, 1, ...]) of a chain's numgen vmap rule."""
    from .netfilter.nft.model import AnonSet, Numgen, Vmap
    for i, r in enumerate(chain.rules, 1):
        for st in r.statements:
            if isinstance(st, Vmap) and isinstance(st.key, Numgen) and isinstance(st.map, AnonSet):
                order = sorted(st.map.elements, key=lambda e: int(e.key[0]))
                return i, [e.value.split()[-1] for e in order], st.key.mod
    return None


def _dnat_target(chain) -> tuple[int, int] | None:
    from .netfilter.nft.model import Nat
    for r in chain.rules:
        for st in r.statements:
            if isinstance(st, Nat) and st.kind == "dnat" and st.addr is not None and st.port:
                return int(IPv4Address(st.addr.split("-")[0])), int(st.port.split("-")[0])
    return None


def numgen_thresholds(n: int) -> list[int]:
    """The statistic match's 31-bit thresholds that pick element i of `numgen random mod
    n` from the same 64-bit hash h: numgen takes ((h >> 32) * n) >> 32, the matcher the
    first i with (h >> 33) < threshold[i]; equal except where ceil((i+1) 2^32 / n) is odd
    (then one value of h >> 32 in 2^32 lands one element later)."""
    out = []
    for i in range(n - 1):
        t = -(-((i + 1) << 32) // n)
        out.append(min(ALWAYS - 1, (t + 1) // 2))
    return out + [ALWAYS]


def compile_matcher(cluster, node: str, ruleset, seed: int, addresses):
    """The compiled matcher (a kdp.fast.svcsplit.SplitMatcher) of the node's Services with
    every endpoint draw the nft table's; its Split counts the service-ips elements
    (dump_rules) and those compiled, and lists the chains whose draw could not be
    re-pointed, with why (their Services' first packets go to the reference walk)."""
    from .fast import svcmatch as sm
    from .fast.svcsplit import Split, SplitMatcher
    from .k8s import kubeproxy as kp
    from .k8s.kubeproxy_nft import port_base
    opts = kp.node_options(cluster)
    ns_name = f"node/{node}"
    prog = sm.compile_program(cluster, node, opts, seed, ns_name, addresses)
    split = Split()
    targets = targets_of(ruleset)
    split.dump_rules = len(targets)
    if prog is None:
        split.everything_slow = "the model uses what the matcher does not (SCTP, -i detectors)"
        split.reasons.append(("(all)", split.everything_slow))
        return SplitMatcher(None, split, opts)
    t = _table(ruleset)
    eps = prog.eps
    ports = kp._Gen(cluster, node, opts).ports
    for p, spr in zip(ports, prog.sps.tolist()):
        base = port_base(p)
        for prefix, off, n in (("service-", spr[12], spr[13]), ("local-", spr[14], spr[15])):
            if n == 0:
                continue
            name = prefix + base
            chain = t.chains.get(name)
            found = _numgen_rule(chain) if chain is not None else None
            if found is None or found[2] != n:
                _to_reference(split, p, name, "no `numgen random mod N vmap` with the "
                                              "Service's endpoints")
                continue
            number, chains, _mod = found
            point = decision_point("numgen", ns_name, TABLE, name, number)
            rows = {(int(e["ip"]), int(e["port"])): e.copy() for e in eps[off:off + n]}
            order = [_dnat_target(t.chains[c]) if c in t.chains else None for c in chains]
            if any(o not in rows for o in order):
                _to_reference(split, p, name, "its numgen elements do not DNAT to the "
                                              "Service's endpoints")
                continue
            for i, (o, prob) in enumerate(zip(order, numgen_thresholds(n))):
                row = rows[o]
                row["point"], row["prob"] = point, prob
                eps[off + i] = row
    split.compiled_rules = sum(1 for ip, proto, port, _ in targets
                               if sm.key_of(sm.S_SVC, ip, proto, port) not in split.slow_keys)
    return SplitMatcher(sm.Matcher(prog), split, opts)


def _to_reference(split, p, chain: str, why: str) -> None:
    """The Service port's addresses go to the reference walk (SplitMatcher.slow_mask)."""
    from .fast import svcmatch as sm
    proto = PROTO.get(p.proto, 0)
    for ip in [p.svc.cluster_ip, *p.svc.external_ips, *p.lb_vips]:
        split.slow_keys.add(sm.key_of(sm.S_SVC, int(ip), proto, p.port.port))
    split.reasons.append((chain, why))


# --- the kernel ----------------------------------------------------------------------

def kernel_batches(tx: str, lines_per_batch: int = 20000) -> list[str]:
    """The transaction as `nft -f` inputs: every table, set, map and chain first (one
    batch), then elements and rules in batches of `lines_per_batch` lines, in the
    transaction's order (a rule's chain and a verdict's target exist before it). The
    table listed afterwards is the one transaction's."""
    head, rest = [], []
    for line in tx.splitlines():
        (rest if line.startswith(("add rule ", "insert rule ", "add element ")) else
         head).append(line)
    out = ["\n".join(head) + "\n"]
    for i in range(0, len(rest), lines_per_batch):
        out.append("\n".join(rest[i:i + lines_per_batch]) + "\n")
    return out
