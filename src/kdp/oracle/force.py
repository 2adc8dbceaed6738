# oracle.force: make kdp take the random decisions the kernel took. Two
# kernel choices are random:
#  - the endpoint: `-m statistic --mode random` picks a KUBE-SEP chain with
#    prandom_u32(); statistic_forcer() builds a Netfilter.force_statistic
#    callback that makes kdp's statistic rules match exactly when their
#    KUBE-SEP chain DNATs to the endpoint the kernel chose for that connection;
#  - the source port MASQUERADE --random-fully (kube-proxy's KUBE-POSTROUTING)
#    draws with get_random_u16(). kdp has no hook for its NAT port search (it
#    draws from a keyed hash), so nat_forcing() wraps the setup_nat() the
#    netfilter engine calls: after kdp bound the connection, a random
#    (--random/--random-fully) source binding of a connection the kernel
#    SNATed to the same address is moved to the kernel's port (a different
#    address is never forced: that is a finding). Only namespaces whose
#    conntrack table carries a forced-NAT table are affected (per emulator);
#    the wrapper is installed once and is a no-op everywhere else.
# Where the kernel chose shows in its conntrack table (the reply tuple: source
# = endpoint, destination = SNAT address and port), read with `conntrack -L`;
# for connections the table does not keep (a TCP connection answered only by
# a RST is deleted at once; a packet dropped after PREROUTING never has its
# entry confirmed) in its captures: the same packet (IP ID, TCP sequence or
# UDP payload) seen on a node with another destination or source.
# forcing_misses() checks afterwards that every forced choice took effect.
# Pure: nothing here touches a namespace.
from __future__ import annotations

import re
from dataclasses import replace
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


def _ports(half: dict) -> tuple[int, int] | None:
    """(sport, dport) of a tuple half; ICMP: (id, 0)."""
    if "sport" in half and "dport" in half:
        return int(half["sport"]), int(half["dport"])
    if "id" in half:
        return int(half["id"]), 0
    return None


def conn_key(ns: str, proto: int, src, dst, sport: int, dport: int) -> tuple:
    return (ns, proto, IPv4Address(src), IPv4Address(dst), int(sport), int(dport))


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
                key = conn_key(ns, e["proto"], o["src"], o["dst"], o["sport"], o["dport"])
                out[key] = (IPv4Address(r["src"]), int(r["sport"]))
    return out


def _same_packet(p, q) -> bool:
    """q is p after NAT: same protocol, IP ID and (TCP) sequence number,
    (SCTP) chunks or (UDP) payload; addresses and ports may differ."""
    if q is None or q.ip is None or q.ip.proto != p.ip.proto or q.ip.ident != p.ip.ident:
        return False
    if q.ports[0] is None:
        return False
    if hasattr(p.l4, "seq"):
        return q.l4.seq == p.l4.seq and q.l4.flags == p.l4.flags
    if hasattr(p.l4, "chunks"):                 # SCTP: the chunks (the INIT's tag and TSN)
        return q.l4.chunks == p.l4.chunks
    return q.l4.payload == p.l4.payload


def choices_from_frames(sent, kern_caps: dict) -> tuple[dict, dict]:
    """The kernel's NAT choices for the injected packets `sent` (kdp Packets)
    as its captures show them: on a node's device, the same packet (protocol,
    IP ID, TCP sequence or UDP payload) with another destination was DNATed
    there (the endpoint), with another source SNATed (address and port).
    (endpoint choices, SNAT choices), keyed as endpoint_choices/nat_choices.
    For connections the conntrack table no longer (or never) shows: a TCP
    connection whose only answer is a RST is deleted at once
    (nf_conntrack_proto_tcp: RST before SEEN_REPLY), and a packet dropped after
    PREROUTING (a hairpin the bridge refuses) never gets its entry confirmed."""
    eps: dict[tuple, tuple] = {}
    nats: dict[tuple, tuple] = {}
    for p in sent:
        if p is None or p.ip is None or p.ports[0] is None:
            continue
        sport, dport = p.ports
        for (ns, _dev), frames in kern_caps.items():
            if not ns.startswith("node/"):
                continue
            key = conn_key(ns, p.ip.proto, p.ip.src, p.ip.dst, sport, dport)
            for f in frames:
                q = f.pkt
                if not _same_packet(p, q):
                    continue
                if (q.ip.dst, q.ports[1]) != (p.ip.dst, dport):
                    eps.setdefault(key, (q.ip.dst, q.ports[1]))
                if f.direction == "out" and (q.ip.src, q.ports[0]) != (p.ip.src, sport):
                    nats.setdefault(key, (q.ip.src, q.ports[0]))
    return eps, nats


def nat_choices(dumps: dict[str, list[str]]) -> dict[tuple, tuple]:
    """{(node ns, proto, src, dst, sport, dport): (snat ip, snat port)} for
    every connection the kernel SNATed (MASQUERADE): the reply tuple's
    destination differs from the original source. ICMP: the echo id."""
    out = {}
    for ns, lines in dumps.items():
        for e in parse_conntrack(lines):
            o, r = e["orig"], e["reply"]
            op, rp = _ports(o), _ports(r)
            if op is None or rp is None or "src" not in o or "dst" not in r:
                continue
            if r["dst"] != o["src"] or (e["proto"] != PROTOS["icmp"] and rp[1] != op[0]) or \
                    (e["proto"] == PROTOS["icmp"] and rp[0] != op[0]):
                sport, dport = op
                if e["proto"] == PROTOS["icmp"]:
                    dport = 8 << 8            # kdp's ICMP tuple: dport = type << 8 | code (echo)
                    snat_port = rp[0]
                else:
                    snat_port = rp[1]
                key = conn_key(ns, e["proto"], o["src"], o["dst"], sport, dport)
                out[key] = (IPv4Address(r["dst"]), snat_port)
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


def numgen_forcer(engine, ns_name: str, choices: dict[tuple, tuple]):
    """An NftEngine.force_choice callback for namespace `ns_name` (nftables mode: kube-proxy's
    `numgen random mod N vmap` picks the endpoint chain)."""
    def force(label, chain, t):
        if t is None:
            return None
        ep = choices.get((ns_name, t.proto, t.src, t.dst, t.sport, t.dport))
        if ep is None:
            return None
        dnat = engine.dnat_of(label, chain)
        if dnat is None:
            return None
        return dnat[0] == ep[0] and (dnat[1] is None or dnat[1] == ep[1])
    return force


# --- the MASQUERADE / SNAT port ------------------------------------------------------

_FORCED_NAT = "_oracle_forced_nat"      # attribute on a kdp Netfilter: {key: (ip, port)}
_installed = False


def _install_nat_wrapper() -> None:
    """Wrap kdp.netfilter.engine.setup_nat once (idempotent). The wrapper asks
    the NatContext's namespace Netfilter (found through the context's conntrack
    table) whether the kernel SNATed this connection elsewhere."""
    global _installed
    if _installed:
        return
    from ..conntrack import nat as natmod
    from ..netfilter import engine

    original = engine.setup_nat

    def setup_nat(cx, e, manip, rng):
        forced = getattr(cx.table, _FORCED_NAT, None)
        if not forced or manip != natmod.SRC or not rng.random_all:
            return original(cx, e, manip, rng)
        cur = e.reply.invert()
        changed = original(cx, e, manip, rng)
        o = e.orig
        want = forced.get((cx.namespace, o.proto, o.src, o.dst, o.sport, o.dport))
        if want is None or cur is None:
            return changed
        ip, port = want
        now = e.reply.invert()
        if now.src != ip:
            return changed           # another address: a real difference, left for the comparison
        target = replace(now, sport=port)
        if target == now:
            return changed
        e.reply = target.invert()
        if target != cur:
            e.status |= natmod.SRC_NAT
            return True
        e.status &= ~natmod.SRC_NAT
        return False

    setup_nat.__wrapped__ = original
    setup_nat._kdp_oracle = True
    engine.setup_nat = setup_nat
    _installed = True


def nat_forcing(emu, choices: dict[tuple, tuple]) -> int:
    """Force kdp's SNAT (MASQUERADE) bindings in `emu` to the kernel's; returns
    how many namespaces got a table."""
    n = 0
    by_ns: dict[str, dict] = {}
    for key, val in choices.items():
        by_ns.setdefault(key[0], {})[key] = val
    for ns in emu.topology.namespaces.values():
        nf = ns.netfilter
        if nf is None or ns.name not in by_ns:
            continue
        _install_nat_wrapper()
        setattr(nf.conntrack, _FORCED_NAT, by_ns[ns.name])
        n += 1
    return n


def force_emulator(emu, dumps: dict[str, list[str]], keep=None, seen: tuple | None = None) -> dict[str, int]:
    """Install forcers on every kdp namespace with a netfilter. keep: None, or
    a predicate on (proto, src, dst, sport, dport) of an original tuple: only
    those connections are forced (session affinity forces the first flow and
    leaves the rest to kdp's own `recent` match). seen: (endpoint, SNAT)
    choices read from the kernel's captures (choices_from_frames), used for
    connections the conntrack table does not show. Returns the number of
    forced endpoint choices and SNAT bindings (connections)."""
    eps, nats = endpoint_choices(dumps), nat_choices(dumps)
    for mine, extra in zip((eps, nats), seen or ({}, {})):
        known = {k[1:] for k in mine}
        for k, v in extra.items():
            if k[1:] not in known:
                mine.setdefault(k, v)
    if keep is not None:
        eps = {k: v for k, v in eps.items() if keep(k[1:])}
        nats = {k: v for k, v in nats.items() if keep(k[1:])}
    if eps:
        for ns in emu.topology.namespaces.values():
            if ns.netfilter is not None:
                ns.netfilter.force_statistic = statistic_forcer(ns.netfilter, ns.name, eps)
                if getattr(ns.netfilter, "nft", None) is not None:
                    ns.netfilter.nft.force_choice = numgen_forcer(ns.netfilter.nft, ns.name, eps)
    if nats:
        nat_forcing(emu, nats)
    return {"endpoints": len({k[1:] for k in eps}), "snat": len({k[1:] for k in nats})}


def kdp_dumps(emu, now: float) -> dict[str, list[str]]:
    """kdp's conntrack tables in `conntrack -L` form, per namespace with a netfilter."""
    out = {}
    for ns in emu.topology.namespaces.values():
        if ns.netfilter is not None:
            lines = [l for l in ns.netfilter.conntrack.to_conntrack_l(now).splitlines() if l.strip()]
            if lines:
                out[ns.name] = lines
    return out


def forcing_misses(kernel: dict[str, list[str]], kdp: dict[str, list[str]], keep=None) -> list[str]:
    """Connections the kernel NATed whose kdp entry ended up elsewhere although
    kdp was forced (a forcing that did not take effect; not a comparison)."""
    out = []
    for what, fn in (("endpoint", endpoint_choices), ("SNAT", nat_choices)):
        mine = fn(kdp)
        for key, want in fn(kernel).items():
            if keep is not None and not keep(key[1:]):
                continue
            got = mine.get(key)
            if got is not None and got != want:
                out.append(f"{what} of {key[0]} {key[2]}:{key[4]} -> {key[3]}:{key[5]}: kernel "
                           f"{want[0]}:{want[1]}, kdp {got[0]}:{got[1]} although forced")
    return out
