# fast.svcsplit: the compiled service matcher for *any* iptables-save dump of a
# node, chain by chain. The dump is reconciled with the rules kube-proxy would
# write for a model of the node (kdp.k8s.kubeproxy.generate_rules over a Cluster:
# the user's, or one read back from the dump by kdp.k8s.fromrules):
#  - the chains every first packet reads (the built-in hooks and the chains they
#    reach, KUBE-MARK-MASQ, the filter chains) must equal kube-proxy's, or nothing
#    is compiled;
#  - nat KUBE-NODEPORTS likewise rule by rule: a node port whose rule or chains
#    differ goes to the reference walk for packets to the node's own addresses
#    (any packet to them, if a rule without -p/--dport was added);
#  - nat KUBE-SERVICES is compared rule by rule (difflib): a rule of kube-proxy's
#    whose service chains (KUBE-SVC/SVL/EXT/FW/SEP reached from it) are identical
#    in the dump is compiled, at the position it holds *in the dump*; a rule
#    missing from the dump, one whose chains differ, and a rule only the dump has
#    send that (destination, protocol, port) to the reference walk; a rule only
#    the dump has that is not of that shape (no -d a.b.c.d/32 -p --dport) sends
#    every packet whose decision lies after it to the reference walk.
# Each chain (or rule) left to the reference walk is listed with the reason.
# SplitMatcher.slow_mask() says which first packets the compiled kernel must not
# decide. Builds programs through kdp.fast.svcmatch; never changes the kernels.
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

import numpy as np

from kdp.k8s import kubeproxy as kp

from . import svcmatch as sm

SERVICE_CHAINS = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")
BUILTIN = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_JUMP = re.compile(r"\s-[jg]\s+(\S+)")
_KEY = re.compile(r"^-A \S+ -d (\d+\.\d+\.\d+\.\d+)/32 -p (tcp|udp)\b.*--dport (\d+)\b")
_NPKEY = re.compile(r"^-A KUBE-NODEPORTS .*-p (tcp|udp)\b.*--dport (\d+)\b")
_PROTO = {"tcp": 6, "udp": 17}


def chains_of(text: str) -> dict[tuple[str, str], list[str]]:
    """{(table, chain): [its -A lines, whitespace-normalised]} of an iptables-save
    text (chains declared without rules are present, empty)."""
    out: dict[tuple[str, str], list[str]] = {}
    table = None
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and table:
            out.setdefault((table, line[1:].split()[0]), [])
        elif line.startswith("-A ") and table:
            out.setdefault((table, line.split()[1]), []).append(line)
    return out


def _targets(lines: list[str]) -> list[str]:
    return [m.group(1) for ln in lines for m in [_JUMP.search(ln)] if m]


def _is_service_chain(name: str) -> bool:
    return name.startswith(SERVICE_CHAINS)


@dataclass
class Split:
    """What was compiled and what was left to the reference walk."""

    compiled_rules: int = 0                       # nat KUBE-SERVICES rules compiled
    dump_rules: int = 0                           # nat KUBE-SERVICES rules in the dump
    slow_keys: set[int] = field(default_factory=set)      # svcmatch S_SVC keys
    barrier: int | None = None                    # dump position of the first generic rule
    everything_slow: str | None = None            # why nothing was compiled
    slow_nodeports: set[int] = field(default_factory=set)   # proto << 16 | port
    nodeports_slow: bool = False                  # every packet to a local address
    nodeport_rules: int = 0                       # nat KUBE-NODEPORTS rules in the dump
    reasons: list[tuple[str, str]] = field(default_factory=list)   # (chain or rule, why)


def _closure(table: dict, start: str) -> list[str]:
    """Service chains reachable from `start` (itself included), in visit order."""
    seen, todo = [], [start]
    while todo:
        c = todo.pop()
        if c in seen or not _is_service_chain(c):
            continue
        seen.append(c)
        todo.extend(_targets(table.get(("nat", c), [])))
    return seen


def _why_differs(name: str, mine: list[str] | None, theirs: list[str] | None) -> str:
    if theirs is None:
        return f"chain {name} is missing from the dump"
    if mine is None:
        return f"chain {name} is not one kube-proxy writes for this model"
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            return f"rule {i + 1} of {name} differs from kube-proxy's: {b}"
    if len(theirs) > len(mine):
        return f"{name} has {len(theirs) - len(mine)} rule(s) more than kube-proxy's: {theirs[len(mine)]}"
    return f"{name} has {len(mine) - len(theirs)} rule(s) fewer than kube-proxy's"


def _global_chains(gen: dict, dump: dict) -> str | None:
    """The first chain every first packet may read that differs, with why."""
    todo = [(t, c) for t in ("raw", "mangle", "nat", "filter") for c in BUILTIN]
    todo += [("nat", "KUBE-MARK-MASQ")]
    seen = set()
    while todo:
        t, c = todo.pop(0)
        if (t, c) in seen or (t == "nat" and (c in ("KUBE-SERVICES", "KUBE-NODEPORTS")
                                              or _is_service_chain(c))):
            continue
        seen.add((t, c))
        mine, theirs = gen.get((t, c), []), dump.get((t, c), [])
        if mine != theirs:
            return f"{t} {_why_differs(c, mine, theirs)}"
        todo.extend((t, x) for x in _targets(mine) if x not in BUILTIN)
    return None


def _np_key(line: str) -> int | None:
    m = _NPKEY.match(line)
    return None if not m else (_PROTO[m.group(1)] << 16) | int(m.group(2))


def _nodeports(gen: dict, dump: dict, split: Split) -> dict[int, int]:
    """nat KUBE-NODEPORTS rule by rule (as KUBE-SERVICES): the node ports left
    to the reference walk; the map of generated positions to the dump's."""
    g, d = gen.get(("nat", "KUBE-NODEPORTS"), []), dump.get(("nat", "KUBE-NODEPORTS"), [])
    split.nodeport_rules = len(d)
    posmap: dict[int, int] = {}
    sm_ = difflib.SequenceMatcher(None, g, d, autojunk=False)
    for tag, i1, i2, j1, j2 in sm_.get_opcodes():
        if tag == "equal":
            posmap.update({i1 + k + 1: j1 + k + 1 for k in range(i2 - i1)})
            for line in g[i1:i2]:
                t = _targets([line])
                for c in _closure(gen, t[0] if t else ""):
                    if gen.get(("nat", c)) != dump.get(("nat", c)):
                        split.reasons.append((t[0], "nat " + _why_differs(
                            c, gen.get(("nat", c)), dump.get(("nat", c)))))
                        key = _np_key(line)
                        split.slow_nodeports.add(key) if key is not None else None
                        break
            continue
        for where, lines, lo, hi, what in (("of kube-proxy's", g, i1, i2, "missing from the dump"),
                                           ("", d, j1, j2, "not kube-proxy's")):
            for i in range(lo, hi):
                split.reasons.append((f"nat KUBE-NODEPORTS rule {i + 1} {where}".rstrip(),
                                      f"{what}: {lines[i]}"))
                key = _np_key(lines[i])
                if key is None:
                    split.nodeports_slow = True
                else:
                    split.slow_nodeports.add(key)
    return posmap


def _key_of_rule(line: str) -> int | None:
    m = _KEY.match(line)
    if not m:
        return None
    return sm.key_of(sm.S_SVC, int(IPv4Address(m.group(1))), _PROTO[m.group(2)], int(m.group(3)))


def reconcile(gen_text: str, dump_text: str) -> tuple[Split, dict[int, int], dict[int, int]]:
    """Compare the dump with kube-proxy's rules; the Split and the maps from the
    generated KUBE-SERVICES and KUBE-NODEPORTS positions (1-based) to the dump's."""
    gen, dump = chains_of(gen_text), chains_of(dump_text)
    split = Split()
    why = _global_chains(gen, dump)
    g_ks, d_ks = gen.get(("nat", "KUBE-SERVICES"), []), dump.get(("nat", "KUBE-SERVICES"), [])
    split.dump_rules = len(d_ks)
    if why:
        split.everything_slow = why
        split.reasons.append(("(all)", why))
        return split, {}, {}
    np_posmap = _nodeports(gen, dump, split)
    posmap: dict[int, int] = {}
    added: list[int] = []
    sm_ = difflib.SequenceMatcher(None, g_ks, d_ks, autojunk=False)
    for tag, i1, i2, j1, j2 in sm_.get_opcodes():
        if tag == "equal":
            posmap.update({i1 + k + 1: j1 + k + 1 for k in range(i2 - i1)})
            continue
        for i in range(i1, i2):
            key = _key_of_rule(g_ks[i])
            split.reasons.append((f"nat KUBE-SERVICES rule {i + 1} of kube-proxy's",
                                  f"missing from the dump: {g_ks[i]}"))
            if key is not None:
                split.slow_keys.add(key)
            else:                                   # the final KUBE-NODEPORTS jump
                added.append(j1 + 1)
        for j in range(j1, j2):
            key = _key_of_rule(d_ks[j])
            split.reasons.append((f"nat KUBE-SERVICES rule {j + 1}",
                                  f"not kube-proxy's: {d_ks[j]}"))
            if key is not None:
                split.slow_keys.add(key)
            else:
                added.append(j + 1)
    if added:
        split.barrier = min(added)
        split.reasons.append((f"nat KUBE-SERVICES rules {split.barrier}-{len(d_ks)}",
                              f"rule {split.barrier} could match any packet: every decision "
                              "after it goes to the reference walk"))
    for gpos, dpos in posmap.items():
        line = g_ks[gpos - 1]
        key = _key_of_rule(line)
        if key is None:
            continue
        t = _targets([line])
        bad = None
        for c in _closure(gen, t[0] if t else ""):
            if gen.get(("nat", c)) != dump.get(("nat", c)):
                bad = "nat " + _why_differs(c, gen.get(("nat", c)), dump.get(("nat", c)))
                break
        if bad is None and split.barrier is not None and dpos > split.barrier:
            bad = f"after rule {split.barrier} of nat KUBE-SERVICES (not kube-proxy's)"
        if bad:
            split.slow_keys.add(key)
            split.reasons.append((t[0] if t else line, bad))
        else:
            split.compiled_rules += 1
    return split, posmap, np_posmap


@dataclass
class SplitMatcher:
    """The compiled matcher over the chains that compiled, and what did not."""

    matcher: sm.Matcher | None
    split: Split
    options: kp.Options | None

    @property
    def implementation(self) -> str:
        return self.matcher.implementation if self.matcher else "none"

    def slow_mask(self, flows: np.ndarray) -> np.ndarray:
        """True for the first packets the reference walk must decide."""
        if self.matcher is None:
            return np.ones(len(flows), dtype=bool)
        keys = ((flows["dst"].astype(np.uint64) << np.uint64(32))
                | (flows["dport"].astype(np.uint64) << np.uint64(16))
                | (flows["proto"].astype(np.uint64) << np.uint64(8)))
        slow = np.isin(keys, np.fromiter(self.split.slow_keys, np.uint64,
                                         len(self.split.slow_keys)))
        if self.split.barrier is not None:          # no compiled rule before the barrier
            slow |= ~np.isin(keys, self._early_keys())
        if self.split.nodeports_slow or self.split.slow_nodeports:
            dst = flows["dst"]
            local = np.isin(dst, self.matcher.program.local_ips) | ((dst >> 24) == 127)
            if self.split.nodeports_slow:
                slow |= local
            else:
                np_keys = (flows["proto"].astype(np.int64) << 16) | flows["dport"]
                slow |= local & np.isin(np_keys, np.fromiter(self.split.slow_nodeports,
                                                             np.int64))
        return slow

    def _early_keys(self) -> np.ndarray:
        if not hasattr(self, "_early"):
            p = self.matcher.program
            early = []
            for k, v in zip(p.keys.tolist(), p.vals.tolist()):
                if v < 0 or (k & 0xFF) != sm.S_SVC:
                    continue
                r = p.rules[v]
                if r["kind"] == sm.K_INT and r["pos"] < self.split.barrier and r["next"] < 0:
                    early.append(k)
            self._early = np.array(sorted(set(early) - self.split.slow_keys), dtype=np.uint64)
        return self._early


def compile_ruleset(cluster, node_name: str, dump_text: str, seed: int = 0,
                    ns_name: str | None = None, *,
                    addresses: list[IPv4Interface] | None = None) -> SplitMatcher:
    """The SplitMatcher of a node's dump against kube-proxy's rules for the model."""
    ns_name = ns_name or f"node/{node_name}"
    addresses = addresses if addresses is not None else sm.node_addresses(cluster, node_name)
    first = kp.Options(nfacct=cluster.config.kube_proxy.nfacct)
    tried = [first] + [kp.Options(rf, nf, lib, kl) for rf in (True, False) for nf in (True, False)
                       for lib in (False, True) for kl in (True, False) if
                       kp.Options(rf, nf, lib, kl) != first]
    best = None
    for opts in tried:
        gen_text = kp._Gen(cluster, node_name, opts).run()
        split, posmap, np_posmap = reconcile(gen_text, dump_text)
        if split.everything_slow is None:
            best = (opts, split, posmap, np_posmap)
            break
        best = best or (opts, split, posmap, np_posmap)
    opts, split, posmap, np_posmap = best
    if split.everything_slow is not None:
        return SplitMatcher(None, split, opts)
    prog = sm.compile_program(cluster, node_name, opts, seed, ns_name, addresses)
    if prog is None:
        split.everything_slow = "the model uses what the matcher does not (SCTP, -i detectors)"
        split.reasons.append(("(all)", split.everything_slow))
        return SplitMatcher(None, split, opts)
    nat = np.isin(prog.rules["kind"], (sm.K_INT, sm.K_EXT, sm.K_FW))
    for i in np.flatnonzero(nat):
        prog.rules[i]["pos"] = posmap.get(int(prog.rules[i]["pos"]), int(prog.rules[i]["pos"]))
    prog.n_ks = split.dump_rules
    for i in np.flatnonzero(prog.rules["kind"] == sm.K_NP):
        prog.rules[i]["pos"] = np_posmap.get(int(prog.rules[i]["pos"]), int(prog.rules[i]["pos"]))
    prog.n_np = split.nodeport_rules
    return SplitMatcher(sm.Matcher(prog), split, opts)
