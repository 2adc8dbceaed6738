# fast.svcmatch: the compiled service DNAT matcher — kube-proxy's iptables answer
# for the first packet of a connection, from hash lookups instead of the linear
# KUBE-SERVICES walk. compile_matcher() builds a MatcherProgram (flat numpy
# arrays, layouts in kdp.fast.contract) from the node's Services, but only when the
# node's ruleset is exactly what kdp.k8s.kubeproxy.generate_rules wrote (else
# None: the reference walk decides; kdp.fast.svcsplit compiles any other dump
# chain by chain through compile_program); the per-packet kernels (decide, batch,
# affinity tables) are kdp.fast's: kdp._fastpath (C) or kdp.fast.matcher (pure
# Python). Used by `kdp bench rules` and the equivalence tests, not by `kdp run`.
#
# What one decision covers (the reference: kdp.netfilter walking the rules):
# nat PREROUTING/OUTPUT -> KUBE-SERVICES (cluster IP, external IP, LB IP rules;
# the final addrtype LOCAL rule -> KUBE-NODEPORTS), the per-service chains
# (KUBE-FW source ranges, KUBE-EXT with both traffic policies, KUBE-SVC/SVL
# with the masquerade rule, `recent` affinity and the statistic rules,
# KUBE-SEP with the hairpin masquerade and DNAT), the mark 0x4000, and the
# filter verdicts the first packet meets afterwards (KUBE-PROXY-FIREWALL,
# KUBE-FORWARD's mark ACCEPT, KUBE-SERVICES and KUBE-EXTERNAL-SERVICES
# REJECT/DROP, health-check ACCEPT, KUBE-FIREWALL's localnet DROP), in the
# order FORWARD / INPUT / OUTPUT(+INPUT) put them. `rules` is the number of
# nat rules the iptables walk evaluates for that packet. Its statistic draws are
# those of a tuple's first conntrack entry (generation 0); a reopened tuple's
# (keyed.entry_base) is drawn by the reference, which owns the table.
# Knows nothing of devices, routes or conntrack (the datapath owns those).
from __future__ import annotations

import math
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import NamedTuple

import numpy as np

from kdp.conntrack.keyed import decision_point
from kdp.fast.contract import (DECISION_DTYPE, FLOW_DTYPE, MATCH_CIDR_DTYPE, MATCH_EP_DTYPE,
                               MATCH_RULE_DTYPE, MATCH_SP_DTYPE, VERDICTS)
from kdp.k8s import kubeproxy as kp
from kdp.k8s import kubeproxy_chains as kc
from kdp.k8s.model import Cluster

# rule kinds (RULE_DTYPE.kind)
K_INT, K_EXT, K_FW, K_NP = 0, 1, 2, 3                  # nat: -> internal / EXT / FW chain
F_FWDROP, F_SVC, F_EXT, F_EXTNP, F_HC = 4, 5, 6, 7, 8  # filter rules
# key spaces of the dispatch hash
S_SVC, S_NP, S_FILTER, S_FILTER_NP, S_HC = 0, 1, 2, 3, 4
# masquerade rule of a SVC/SVL chain
M_NONE, M_NOT_CLUSTER, M_ALL = 0, 1, 2
FV_REJECT, FV_DROP = 2, 3                               # = contract V_REJECT / V_DROP
EMPTY_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)
ALWAYS = 0xFFFFFFFF                                     # "probability" of the last rule

RULE_DTYPE, SP_DTYPE = MATCH_RULE_DTYPE, MATCH_SP_DTYPE
EP_DTYPE, CIDR_DTYPE = MATCH_EP_DTYPE, MATCH_CIDR_DTYPE


def key_of(space: int, ip: int, proto: int, port: int) -> int:
    return (ip << 32) | (port << 16) | (proto << 8) | space


@dataclass
class MatcherProgram:
    """Everything a decision reads, as flat arrays (shared by both kernels)."""

    seed: int
    ns_name: str
    cluster_net: int
    cluster_mask: int
    localnet_drop: bool                # KUBE-FIREWALL drops ! -s 127/8 -d 127/8 (not DNATed)
    localhost_nodeports: bool          # the final KUBE-SERVICES rule also takes 127/8
    n_ks: int                          # rules in nat KUBE-SERVICES
    n_np: int                          # rules in nat KUBE-NODEPORTS
    local_ips: np.ndarray              # uint32, sorted: the node's own addresses (not 127/8)
    bcast_ips: np.ndarray              # uint32, sorted: broadcast addresses
    keys: np.ndarray                   # uint64 open-addressing table (EMPTY_KEY = free)
    vals: np.ndarray                   # int32: first rule of the key
    rules: np.ndarray                  # RULE_DTYPE, chained by `next`, in chain order
    sps: np.ndarray                    # SP_DTYPE, one per service port
    eps: np.ndarray                    # EP_DTYPE, the SVC/SVL chains' endpoints
    cidrs: np.ndarray                  # CIDR_DTYPE, KUBE-FW source rules
    names: list[str] = field(default_factory=list)          # service port names
    recent_names: list[str] = field(default_factory=list)   # KUBE-SEP-... recent tables
    options: kp.Options | None = None

    @property
    def hash_bits(self) -> int:
        return int(self.keys.shape[0]).bit_length() - 1


class Decision(NamedTuple):
    """The first packet's fate under kube-proxy's rules on this node."""

    verdict: str                       # none | dnat | reject | drop | slow
    endpoint_ip: IPv4Address | None
    endpoint_port: int | None
    masquerade: bool                   # mark 0x4000 set by the nat walk
    rules_evaluated_equivalent: int    # nat rules the iptables walk evaluates
    service: str | None                # "ns/svc:port" whose rule decided


# --- which generate_rules() options wrote this text ------------------------------

def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#")) + "\n"


def matching_options(cluster: Cluster, node_name: str, text: str) -> kp.Options | None:
    """The generate_rules() options whose output is `text` (comments and blank
    lines aside), the node's configured ones tried first; None if none is."""
    want = _normal(text)
    first = kp.node_options(cluster)
    tried = [first] + [kp.Options(rf, nf, lib, kl) for rf in (True, False) for nf in (True, False)
                       for lib in (False, True) for kl in (True, False)]
    seen = set()
    for o in tried:
        if o in seen:
            continue
        seen.add(o)
        if _normal(kp._Gen(cluster, node_name, o).run()) == want:
            return o
    return None


def node_addresses(cluster: Cluster, node_name: str) -> list[IPv4Interface]:
    """The addresses kdp's CNI gives the node's namespace (k8s.cni._node)."""
    return kp.node_local_addresses(cluster, node_name)


# --- compile -----------------------------------------------------------------------

def compile_matcher(cluster: Cluster, node_name: str, ruleset_text: str, seed: int = 0,
                    ns_name: str | None = None, *,
                    addresses: list[IPv4Interface] | None = None) -> "Matcher | None":
    """The compiled matcher of node `node_name`, or None when its ruleset is not
    exactly kube-proxy's generated one (or uses what the matcher does not model:
    a protocol other than TCP/UDP)."""
    opts = matching_options(cluster, node_name, ruleset_text)
    if opts is None:
        return None
    prog = compile_program(cluster, node_name, opts, seed, ns_name or f"node/{node_name}",
                           addresses if addresses is not None else node_addresses(cluster, node_name))
    return None if prog is None else Matcher(prog)


class _Builder:
    def __init__(self, cluster: Cluster, node_name: str, opts: kp.Options, ns: str):
        self.gen = kp._Gen(cluster, node_name, opts)
        self.ns, self.opts = ns, opts
        self.detect, self.detect_arg = _local_detector(self.gen)
        self.rules: list[tuple] = []          # (space key, pos, sp, kind, flag)
        self.sps: list[tuple] = []
        self.eps: list[tuple] = []
        self.ep_protos: list[int] = []
        self.cidrs: list[tuple[int, int]] = []
        self.names: list[str] = []
        self.recent: dict[str, int] = {}
        self.pos = {"nat:KUBE-SERVICES": 0, "nat:KUBE-NODEPORTS": 0, "filter:KUBE-SERVICES": 0,
                    "filter:KUBE-EXTERNAL-SERVICES": 0, "filter:KUBE-PROXY-FIREWALL": 0,
                    "filter:KUBE-NODEPORTS": 0}

    def rule(self, chain: str, space: int, ip: int, proto: int, port: int, sp: int, kind: int,
             flag: int = 0) -> None:
        self.pos[chain] += 1
        self.rules.append((key_of(space, ip, proto, port), self.pos[chain], sp, kind, flag))

    def chain_eps(self, p, chain: str, eps, masq: int) -> tuple[int, int]:
        off = len(self.eps)
        base = (1 if masq != M_NONE else 0) + (len(eps) if p.affinity else 0)
        for i, ep in enumerate(eps):
            sep = kc.sep_chain_name(p.name, p.proto, kp.ep_str(ep))
            table = self.recent.setdefault(sep, len(self.recent))
            if i < len(eps) - 1:
                prob = int(math.floor(0x80000000 * float(kc.saved_probability(len(eps) - i)) + 0.5))
            else:
                prob = ALWAYS
            point = decision_point("statistic", self.ns, "nat", chain, base + i + 1)
            self.eps.append((point, int(ep.ip), prob, table, ep.port, 0))
            self.ep_protos.append(6 if p.proto == "tcp" else 17)
        return off, len(eps)

    def port(self, p) -> None:
        g = self.gen
        plan = kp._plan(p, g.node_name)
        sp = len(self.sps)
        self.names.append(p.name)
        proto = 6 if p.proto == "tcp" else 17
        cip, port = int(p.svc.cluster_ip), p.port.port
        int_v = FV_REJECT if plan.int_target == "REJECT" else FV_DROP
        ext_v = FV_REJECT if plan.ext_target == "REJECT" else FV_DROP
        # capture(): the order kube-proxy writes the rules in
        if plan.has_internal:
            self.rule("nat:KUBE-SERVICES", S_SVC, cip, proto, port, sp, K_INT)
        else:
            self.rule("filter:KUBE-SERVICES", S_FILTER, cip, proto, port, sp, F_SVC, int_v)
        for eip in map(int, p.svc.external_ips):
            if plan.has_eps:
                self.rule("nat:KUBE-SERVICES", S_SVC, eip, proto, port, sp, K_EXT)
            if not plan.has_external:
                self.rule("filter:KUBE-EXTERNAL-SERVICES", S_FILTER, eip, proto, port, sp, F_EXT,
                          ext_v)
        for vip in map(int, p.lb_vips):
            if plan.has_eps:
                self.rule("nat:KUBE-SERVICES", S_SVC, vip, proto, port, sp,
                          K_FW if plan.uses_fw else K_EXT)
            if plan.uses_fw:
                self.rule("filter:KUBE-PROXY-FIREWALL", S_FILTER, vip, proto, port, sp, F_FWDROP,
                          FV_DROP)
        if not plan.has_external:
            for vip in map(int, p.lb_vips):
                self.rule("filter:KUBE-EXTERNAL-SERVICES", S_FILTER, vip, proto, port, sp, F_EXT,
                          ext_v)
        np_ = p.port.node_port
        if np_:
            if plan.has_eps and g.localhost_nodeports and self.opts.nfacct:
                self.rule("nat:KUBE-NODEPORTS", S_NP, 0, proto, np_, sp, K_NP, 1)
            if plan.has_eps:
                self.rule("nat:KUBE-NODEPORTS", S_NP, 0, proto, np_, sp, K_NP, 0)
            if not plan.has_external:
                self.rule("filter:KUBE-EXTERNAL-SERVICES", S_FILTER_NP, 0, proto, np_, sp, F_EXTNP,
                          ext_v)
        hc = p.health_check_node_port
        if hc:
            self.rule("filter:KUBE-NODEPORTS", S_HC, 0, 6, hc, sp, F_HC)
        # the chains
        masq = M_ALL if g.kp.masquerade_all else (M_NOT_CLUSTER if self.detect == "ClusterCIDR"
                                                  else M_NONE)
        svc_masq = masq if plan.has_internal and plan.internal_chain == plan.svc_chain else M_NONE
        svl_masq = masq if plan.has_internal and plan.internal_chain == plan.svl_chain else M_NONE
        svc_off = svc_n = svl_off = svl_n = 0
        if plan.cluster_eps and p.uses_cluster:
            svc_off, svc_n = self.chain_eps(p, plan.svc_chain, plan.cluster_eps, svc_masq)
        if plan.local_eps and p.uses_local:
            svl_off, svl_n = self.chain_eps(p, plan.svl_chain, plan.local_eps, svl_masq)
        fw_off = len(self.cidrs)
        if plan.uses_fw:
            allow_from_node = False
            for cidr in p.source_ranges:
                self.cidrs.append((int(cidr.network_address), int(cidr.netmask)))
                allow_from_node = allow_from_node or g.node.ip in cidr
            if allow_from_node:
                self.cidrs.extend((int(v), 0xFFFFFFFF) for v in p.lb_vips)
        self.sps.append((cip, port, proto, int(p.internal_local), int(p.external_local),
                         int(plan.has_external), int(p.affinity), svc_masq, svl_masq,
                         int(self.detect != "None"), (0, 0),
                         float(p.svc.affinity_timeout), svc_off, svc_n, svl_off, svl_n, fw_off,
                         len(self.cidrs) - fw_off))


def _local_detector(gen) -> tuple[str, str | None]:
    """kube-proxy's local-traffic detector as the generator applied it."""
    mode = getattr(gen, "detect_mode", None)
    if mode is None:                    # a generator without detector modes: ClusterCIDR
        return "ClusterCIDR", str(gen.cluster_cidr)
    return mode, gen.detect_arg


def compile_program(cluster: Cluster, node_name: str, opts: kp.Options, seed: int, ns_name: str,
                    addresses: list[IPv4Interface]) -> MatcherProgram | None:
    """The MatcherProgram of the rules generate_rules(opts) writes for the node."""
    b = _Builder(cluster, node_name, opts, ns_name)
    g = b.gen
    if any(p.proto not in ("tcp", "udp") for p in g.ports):
        return None
    if b.detect not in ("ClusterCIDR", "None"):
        return None                     # InterfaceNamePrefix: -i matches the matcher cannot see
    if g.nodeport_ips() is not None:
        return None                     # --nodeport-addresses: per-address NODEPORTS jumps
    for p in g.ports:
        b.port(p)
    n_ks = b.pos["nat:KUBE-SERVICES"] + 1               # + the final NODEPORTS rule
    net = IPv4Network(b.detect_arg if b.detect == "ClusterCIDR" else "0.0.0.0/32")
    local, bcast = set(), {0xFFFFFFFF}
    for a in addresses:
        if not a.ip.is_loopback:
            local.add(int(a.ip))
        if a.network.prefixlen < 31:
            bcast.add(int(a.network.broadcast_address))
    keys, vals, rules = _hash(b.rules)
    eps = np.array(b.eps, dtype=EP_DTYPE) if b.eps else np.zeros(0, EP_DTYPE)
    prog = MatcherProgram(
        seed=seed, ns_name=ns_name, cluster_net=int(net.network_address),
        cluster_mask=int(net.netmask), localnet_drop=opts.kubelet or g.localhost_nodeports,
        localhost_nodeports=bool(g.localhost_nodeports),
        n_ks=n_ks, n_np=b.pos["nat:KUBE-NODEPORTS"],
        local_ips=np.array(sorted(local), dtype=np.uint32),
        bcast_ips=np.array(sorted(bcast), dtype=np.uint32),
        keys=keys, vals=vals, rules=rules,
        sps=np.array(b.sps, dtype=SP_DTYPE) if b.sps else np.zeros(0, SP_DTYPE),
        eps=eps, cidrs=np.array(b.cidrs, dtype=CIDR_DTYPE) if b.cidrs else np.zeros(0, CIDR_DTYPE),
        names=b.names, recent_names=list(b.recent), options=opts)
    _mark_filtered_endpoints(prog, b.ep_protos)
    return prog


def _hash(rules: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open addressing (linear probing, Fibonacci hashing) from key to the first
    of its rules; the rules of one key chained in rule order."""
    by_key: dict[int, list[tuple]] = {}
    for r in rules:
        by_key.setdefault(r[0], []).append(r)
    bits = 4
    while (1 << bits) < 2 * max(1, len(by_key)):
        bits += 1
    keys = np.full(1 << bits, EMPTY_KEY, dtype=np.uint64)
    vals = np.full(1 << bits, -1, dtype=np.int32)
    out = []
    mask = (1 << bits) - 1
    for k, group in by_key.items():
        first = len(out)
        for i, (_k, pos, sp, kind, flag) in enumerate(group):
            out.append((first + i + 1 if i + 1 < len(group) else -1, pos, sp, kind, flag))
        h = hash_slot(k, bits)
        while keys[h] != EMPTY_KEY:
            h = (h + 1) & mask
        keys[h], vals[h] = k, first
    arr = np.array(out, dtype=RULE_DTYPE) if out else np.zeros(0, RULE_DTYPE)
    return keys, vals, arr


def hash_slot(key: int, bits: int) -> int:
    return ((key * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> (64 - bits)


def _mark_filtered_endpoints(prog: MatcherProgram, ep_protos: list[int]) -> None:
    """eps.filter = 1 where a filter rule could match the DNATed packet: its
    address:port is a key of the filter rules, or the endpoint is on the node
    (INPUT: node port and health check rules). The kernels skip the filter
    lookups for the other endpoints (an optimisation: same verdict)."""
    fkeys = {int(k) for k in prog.keys.tolist() if int(k) != int(EMPTY_KEY)
             and (int(k) & 0xFF) == S_FILTER}
    local = set(prog.local_ips.tolist())
    for i, proto in enumerate(ep_protos):
        ip, port = int(prog.eps[i]["ip"]), int(prog.eps[i]["port"])
        if key_of(S_FILTER, ip, proto, port) in fkeys or ip in local or (ip >> 24) == 127:
            prog.eps[i]["filter"] = 1


# --- the matcher ---------------------------------------------------------------------

class Matcher:
    """A compiled program plus its kernel (C or pure, per kdp.fast) and the
    kernel's `recent` (session affinity) state."""

    def __init__(self, program: MatcherProgram):
        from kdp import fast
        self.program = program
        self.kernel = fast.matcher_kernel(program)
        self.implementation = fast.matcher_implementation()

    def decide(self, proto: int, src, dst, sport: int, dport: int, now: float,
               in_local: bool = False) -> Decision:
        v, ip, port, masq, sp, rules = self.kernel.decide(proto, int(src), int(dst), sport, dport,
                                                          now, in_local)
        return Decision(VERDICTS[v], IPv4Address(ip) if v == 1 else None, port if v == 1 else None,
                        bool(masq), rules, self.program.names[sp] if sp >= 0 else None)

    def decide_batch(self, flows: np.ndarray) -> np.ndarray:
        """decide() of every FLOW_DTYPE record (in order: affinity state carries
        over), as DECISION_DTYPE records."""
        flows = np.ascontiguousarray(flows)
        if flows.dtype != FLOW_DTYPE:
            raise TypeError(f"flows must have dtype kdp.fast.contract.FLOW_DTYPE, not {flows.dtype}")
        return self.kernel.decide_batch(flows)

    def recent(self) -> dict[str, list[tuple[str, list[float]]]]:
        """The affinity lists: {KUBE-SEP-...: [(client address, stamps)]} in LRU order."""
        names = self.program.recent_names
        return {names[t]: [(str(IPv4Address(a)), s) for a, s in entries]
                for t, entries in self.kernel.recent().items()}


def decide(matcher: Matcher, proto: int, src, dst, sport: int, dport: int, now: float,
           in_local: bool = False) -> Decision:
    """The first packet's Decision (see the module comment)."""
    return matcher.decide(proto, src, dst, sport, dport, now, in_local)


def decide_batch(matcher: Matcher, flows: np.ndarray) -> np.ndarray:
    return matcher.decide_batch(flows)


__all__ = ["compile_matcher", "decide", "decide_batch", "Decision", "Matcher", "MatcherProgram",
           "matching_options", "node_addresses", "DECISION_DTYPE", "FLOW_DTYPE"]
