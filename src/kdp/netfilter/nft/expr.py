# netfilter.nft.expr: what an nftables rule reads, made executable — each expression of
# netfilter.nft.model (payload, meta, ct, fib, numgen, concatenations, bitwise operations)
# becomes a function of the packet context (netfilter.engine.PacketCtx) returning a plain
# value (an int, a string, a tuple for a concatenation) or None where the kernel's
# expression would break the rule (no transport header, no conntrack entry); constants as
# nft prints them become matchers of such values (exact, interval, prefix, wildcard,
# ct state bits). Compiled once per ruleset; an expression kdp cannot evaluate is a
# Problem the loader turns into an error naming the line.
from __future__ import annotations

from ipaddress import IPv4Address

from kdp.conntrack.keyed import decision_point, fast_flow_hash as flow_hash

from .model import BinOp, Concat, Ct, Fib, Meta, Numgen, Payload
from .values import PROTO_NUMBER, ValueProblem, ipv4_bounds

_PORT_PROTOS = {"th": None, "tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "dccp": 33}
_PORTED = frozenset({6, 17, 132, 136, 33})
# set key types -> the kind of value a lookup compares
KEY_KINDS = {"ipv4_addr": "addr", "inet_proto": "proto", "inet_service": "port", "mark": "int",
             "integer": "int", "ifname": "ifname", "ct_state": "ctstate", "verdict": "verdict"}
CT_STATUS_BITS = {"expected": 0, "seen-reply": 1, "assured": 2, "confirmed": 3, "snat": 4,
                  "dnat": 5, "dying": 9}


class Problem(ValueError):
    """Something of a rule kdp cannot evaluate; the loader adds source and line."""


# -- expressions ----------------------------------------------------------------------------

def kind_of(e) -> str | tuple:
    """The kind of value an expression yields (how constants compared with it are read)."""
    if isinstance(e, Payload):
        if e.proto == "ip":
            return {"saddr": "addr", "daddr": "addr", "protocol": "proto"}.get(e.field, "int")
        if e.proto == "ether":
            return "ethertype" if e.field == "type" else "mac"
        if e.proto == "arp":
            return "arpop" if e.field == "operation" else "int"
        return "port" if e.field in ("sport", "dport") else "int"
    if isinstance(e, Meta):
        return {"l4proto": "proto", "iifname": "ifname", "oifname": "ifname",
                "nfproto": "nfproto", "protocol": "ethertype"}.get(e.key, "int")
    if isinstance(e, Ct):
        if e.key in ("state", "status"):
            return "ct" + e.key
        if e.key.endswith(("saddr", "daddr")) or e.key.endswith(("ip saddr", "ip daddr")):
            return "addr"
        return "int"
    if isinstance(e, Fib):
        return "fibtype"
    if isinstance(e, Concat):
        return tuple(kind_of(p) for p in e.parts)
    return "int"


def compile_expr(e):
    """A function pc -> value (None: the expression breaks the rule)."""
    if isinstance(e, Payload):
        return _payload(e)
    if isinstance(e, Meta):
        return _meta(e)
    if isinstance(e, Ct):
        return _ct(e)
    if isinstance(e, Fib):
        return _fib(e)
    if isinstance(e, Concat):
        parts = tuple(compile_expr(p) for p in e.parts)

        def concat(pc):
            out = tuple(f(pc) for f in parts)
            return None if None in out else out
        return concat
    if isinstance(e, BinOp):
        left = compile_expr(e.left)
        try:
            right = int(e.right, 0)
        except ValueError:
            raise Problem(f"bad operand {e.right!r} of {e.op}") from None
        op = {"&": int.__and__, "|": int.__or__, "^": int.__xor__}[e.op]

        def binop(pc):
            v = left(pc)
            return None if v is None else op(v, right)
        return binop
    if isinstance(e, Numgen):
        raise Problem("numgen is evaluated by the rule (it needs the decision point)")
    raise Problem(f"unsupported expression {e!r}")


def _payload(e: Payload):
    proto, fld = e.proto, e.field
    if proto == "ip":
        # (a frame that is not IPv4 -- ARP at a bridge or netdev hook -- has no ip header:
        # src_int, dst_int and proto are None there, and the expression breaks the rule)
        getter = {"saddr": lambda pc: pc.src_int, "daddr": lambda pc: pc.dst_int,
                  "protocol": lambda pc: pc.proto,
                  "ttl": lambda pc: pc.ip.ttl if pc.ip is not None else None,
                  "length": lambda pc: pc.ip_len if pc.ip is not None else None,
                  "id": lambda pc: pc.ip.ident if pc.ip is not None else None}.get(fld)
        if getter is None:
            raise Problem(f"unsupported expression `ip {fld}`")
        return getter
    if proto == "ether":
        getter = {"saddr": lambda pc: pc.pkt.eth.src, "daddr": lambda pc: pc.pkt.eth.dst,
                  "type": lambda pc: pc.pkt.eth.type}.get(fld)
        if getter is None:
            raise Problem(f"unsupported expression `ether {fld}`")
        return getter
    if proto == "arp":
        if fld != "operation":
            raise Problem(f"unsupported expression `arp {fld}`")
        return lambda pc: pc.pkt.arp.op if pc.pkt.arp is not None else None
    if proto in _PORT_PROTOS and fld in ("sport", "dport"):
        want = _PORT_PROTOS[proto]

        def port(pc):
            l4 = pc.l4
            if l4 is None or (want is not None and pc.proto != want) or \
                    pc.proto not in _PORTED:
                return None
            return getattr(l4, fld)
        return port
    raise Problem(f"unsupported expression `{proto} {fld}`")


def _meta(e: Meta):
    k = e.key
    if k == "l4proto":
        return lambda pc: pc.proto
    if k == "mark":
        return lambda pc: pc.meta.mark
    if k == "iifname":
        return lambda pc: pc.in_dev or ""
    if k == "oifname":
        return lambda pc: pc.out_dev or ""
    if k == "length":
        return lambda pc: pc.ip_len
    if k == "protocol":
        return lambda pc: pc.pkt.eth.type
    if k == "nfproto":
        return lambda pc: 2
    raise Problem(f"unsupported expression `meta {k}`")


def _ct(e: Ct):
    k = e.key
    if k == "state":
        return lambda pc: pc.meta.state.lower()
    if k == "status":
        return lambda pc: pc.meta.ct.status if pc.meta.ct is not None else None
    if k == "mark":
        return lambda pc: getattr(pc.meta.ct, "mark", 0) if pc.meta.ct is not None else None
    parts = k.split()
    if len(parts) in (2, 3) and parts[0] in ("original", "reply") and parts[-1] in (
            "saddr", "daddr", "proto-src", "proto-dst"):
        direction, fld = parts[0], parts[-1]

        def tuple_field(pc):
            ct = pc.meta.ct
            if ct is None:
                return None
            t = ct.orig if direction == "original" else ct.reply
            v = {"saddr": t.src, "daddr": t.dst, "proto-src": t.sport, "proto-dst": t.dport}[fld]
            return int(v)
        return tuple_field
    raise Problem(f"unsupported expression `ct {k}`")


def _fib(e: Fib):
    flags, result = e.flags, e.result
    if result != "type" or not flags or flags[0] not in ("saddr", "daddr") or \
            any(f not in ("iif", "oif") for f in flags[1:]):
        raise Problem(f"unsupported expression `fib {' . '.join(flags)} {result}`")
    src = flags[0] == "saddr"
    dev = "iif" if "iif" in flags else "oif" if "oif" in flags else None

    def fib(pc):
        ip = pc.src if src else pc.dst
        d = pc.in_dev if dev == "iif" else pc.out_dev if dev == "oif" else None
        return pc.nf.info.addr_type(ip, d).lower()
    return fib


def numgen(e: Numgen, ns_name: str, table: str, chain: str, number: int, seed: int):
    """``numgen random mod N``: the kernel draws reciprocal_scale(get_random_u32(), N) +
    offset; kdp draws the 32 random bits from flow_hash (the connection's original tuple,
    the entry's generation) at this rule's decision point, as the statistic match does."""
    if e.mode != "random" or e.mod < 1:
        raise Problem(f"unsupported expression `numgen {e.mode} mod {e.mod}`")
    point = decision_point("numgen", ns_name, table, chain, number)
    mod, offset = e.mod, e.offset

    def draw(pc):
        ct = pc.meta.ct
        if ct is not None:
            t = ct.orig
            h = flow_hash(seed, point, t.proto, t.src, t.dst, t.sport, t.dport, ct.gen)
            n = ((h >> 32) * mod) >> 32
            guards = pc.nf.guards
            if guards is not None:          # the flow cache redraws it for a megaflow
                guards.append((seed, point, ct, ("numgen", mod, n)))
            return n + offset
        h = flow_hash(seed, point, pc.proto, pc.src_int, pc.dst_int, 0, 0)
        return (((h >> 32) * mod) >> 32) + offset
    return draw


# -- constants ------------------------------------------------------------------------------

def parse_const(text: str, kind) -> tuple:
    """One constant (or one element key part) read for a value of `kind`:
    ("eq", v), ("range", lo, hi), ("prefix", str) for an ifname wildcard,
    ("bits", frozenset) for ct state names / ct status bits."""
    try:
        if kind == "addr":
            lo, hi = ipv4_bounds(text)
            return ("eq", lo) if lo == hi else ("range", lo, hi)
        if kind in ("port", "int"):
            if "-" in text and not text.startswith("-"):
                a, b = text.split("-", 1)
                return ("range", int(a, 0), int(b, 0))
            return ("eq", int(text, 0))
        if kind == "proto":
            return ("eq", int(text) if text.isdigit() else PROTO_NUMBER[text])
        if kind == "ifname":
            t = text.strip('"')
            return ("prefix", t[:-1]) if t.endswith("*") else ("eq", t)
        if kind == "ctstate":
            return ("bits", frozenset(text.split(",")))
        if kind == "ctstatus":
            return ("mask", sum(1 << CT_STATUS_BITS[s] for s in text.split(",")))
        if kind == "fibtype":
            return ("eq", text)
        if kind == "nfproto":
            return ("eq", {"ipv4": 2, "ipv6": 10}[text] if not text.isdigit() else int(text))
        if kind == "ethertype":
            return ("eq", {"ip": 0x0800, "ip6": 0x86DD, "arp": 0x0806}[text]
                    if text in ("ip", "ip6", "arp") else int(text, 0))
        if kind == "mac":
            if len(text.split(":")) != 6:
                raise ValueError(text)
            return ("eq", ":".join(f"{int(x, 16):02x}" for x in text.split(":")))
        if kind == "arpop":
            return ("eq", {"request": 1, "reply": 2}[text] if not text.isdigit() else int(text))
    except (ValueError, KeyError, ValueProblem):
        pass
    raise Problem(f"cannot read {text!r} as a value of {_KIND_NAMES.get(kind, kind)}")


_KIND_NAMES = {"addr": "an IPv4 address", "port": "a port", "proto": "a protocol",
               "int": "a number", "ifname": "an interface name", "ctstate": "ct state",
               "ctstatus": "ct status", "fibtype": "an address type", "mac": "an Ethernet address",
               "arpop": "an ARP operation", "ethertype": "an Ethernet type"}


def const_matches(c: tuple, v) -> bool:
    k = c[0]
    if k == "eq":
        return v == c[1]
    if k == "range":
        return c[1] <= v <= c[2]
    if k == "prefix":
        return v.startswith(c[1])
    if k == "bits":
        return v in c[1]
    if k == "mask":
        return bool(v & c[1])
    return False


def describe_value(v, kind) -> str:
    """A looked-up key as nft would print it (traces)."""
    if isinstance(v, tuple):
        return " . ".join(describe_value(x, k) for x, k in zip(v, kind))
    if kind == "addr":
        return str(IPv4Address(v))
    if kind == "proto":
        from .values import PROTO_NAME
        return PROTO_NAME.get(v, str(v))
    return str(v)
