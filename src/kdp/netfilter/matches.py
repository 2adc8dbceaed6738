# netfilter.matches: the stateless match extensions — tcp, udp, icmp,
# multiport, comment, mark, mac, physdev, addrtype: option parsing, kernel
# match semantics (xt_tcpudp.c, ip_tables.c icmp_match, xt_multiport.c,
# xt_mark.c, xt_mac.c, xt_physdev.c, xt_addrtype.c) and canonical printing.
from __future__ import annotations

from kdp.wire import ICMP, SCTP, TCP, UDP

from .ext import Match, RuleSpec, need_proto, register_match
from .syntax import (SyntaxProblem, fmt_port_range, iface_match, parse_iface, parse_mark,
                     parse_port_range, parse_uint, save_string)

TCP_FLAGS = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10),
             ("URG", 0x20))
_FLAG_NAMES = dict(TCP_FLAGS) | {"ALL": 0x3F, "NONE": 0}


def _parse_flags(text: str) -> int:
    v = 0
    for name in text.split(","):
        bit = _FLAG_NAMES.get(name.upper())
        if bit is None:
            raise SyntaxProblem(f"unknown TCP flag '{name}'")
        v |= bit
    return v


def _fmt_flags(v: int) -> str:
    return ",".join(n for n, b in TCP_FLAGS if v & b) or "NONE"


class _Ports(Match):
    """--sport/--dport shared by tcp and udp."""

    PROTO = 0
    OPTIONS = {"--sport": "sport", "--source-port": "sport",
               "--dport": "dport", "--destination-port": "dport"}
    INVERTIBLE = frozenset({"sport", "dport"})

    def __init__(self) -> None:
        super().__init__()
        self.sport = self.dport = None          # (lo, hi) or None
        self.sport_inv = self.dport_inv = False

    def set(self, key, args, invert, spec):
        setattr(self, key, parse_port_range(args[0]))
        setattr(self, key + "_inv", invert)

    def finish(self, spec: RuleSpec) -> None:
        need_proto(spec, f"{self.name} match", (self.PROTO,))

    def save(self) -> str:
        out = ""
        for key in ("sport", "dport"):
            rng = getattr(self, key)
            if rng is not None:
                out += (" !" if getattr(self, key + "_inv") else "") + \
                    f" --{key} {fmt_port_range(*rng)}"
        return out

    def _ports_ok(self, l4) -> bool:
        for key, port in (("sport", l4.sport), ("dport", l4.dport)):
            rng = getattr(self, key)
            if rng is not None and (rng[0] <= port <= rng[1]) == getattr(self, key + "_inv"):
                return False
        return True


@register_match
class TcpMatch(_Ports):
    name = "tcp"
    PROTO = 6
    OPTIONS = _Ports.OPTIONS | {"--tcp-flags": "flags", "--syn": "syn"}
    NARGS = {"flags": 2, "syn": 0}
    INVERTIBLE = frozenset({"sport", "dport", "flags", "syn"})

    def __init__(self) -> None:
        super().__init__()
        self.flags = None                       # (mask, comp)
        self.flags_inv = False

    def set(self, key, args, invert, spec):
        if key in ("flags", "syn"):
            if self.flags is not None:
                raise SyntaxProblem("only one of '--syn' or '--tcp-flags' allowed")
            self.flags = (0x17, 0x02) if key == "syn" else \
                (_parse_flags(args[0]), _parse_flags(args[1]))
            self.flags_inv = invert
            return
        super().set(key, args, invert, spec)

    def save(self) -> str:
        out = super().save()
        if self.flags is not None:
            out += (" !" if self.flags_inv else "") + \
                f" --tcp-flags {_fmt_flags(self.flags[0])} {_fmt_flags(self.flags[1])}"
        return out

    def matches(self, pc) -> bool:
        l4 = pc.l4
        if not isinstance(l4, TCP) or not self._ports_ok(l4):
            return False
        if self.flags is not None:
            mask, comp = self.flags
            if ((l4.flags & mask) == comp) == self.flags_inv:
                return False
        return True


@register_match
class UdpMatch(_Ports):
    name = "udp"
    PROTO = 17

    def matches(self, pc) -> bool:
        return isinstance(pc.l4, UDP) and self._ports_ok(pc.l4)


# libxt_icmp's names: (type, code_min, code_max)
ICMP_TYPES = {
    "any": (0xFF, 0, 0xFF), "echo-reply": (0, 0, 0xFF), "pong": (0, 0, 0xFF),
    "destination-unreachable": (3, 0, 0xFF), "network-unreachable": (3, 0, 0),
    "host-unreachable": (3, 1, 1), "protocol-unreachable": (3, 2, 2),
    "port-unreachable": (3, 3, 3), "fragmentation-needed": (3, 4, 4),
    "source-route-failed": (3, 5, 5), "network-unknown": (3, 6, 6), "host-unknown": (3, 7, 7),
    "network-prohibited": (3, 9, 9), "host-prohibited": (3, 10, 10),
    "TOS-network-unreachable": (3, 11, 11), "TOS-host-unreachable": (3, 12, 12),
    "communication-prohibited": (3, 13, 13), "host-precedence-violation": (3, 14, 14),
    "precedence-cutoff": (3, 15, 15), "source-quench": (4, 0, 0xFF), "redirect": (5, 0, 0xFF),
    "network-redirect": (5, 0, 0), "host-redirect": (5, 1, 1), "TOS-network-redirect": (5, 2, 2),
    "TOS-host-redirect": (5, 3, 3), "echo-request": (8, 0, 0xFF), "ping": (8, 0, 0xFF),
    "router-advertisement": (9, 0, 0xFF), "router-solicitation": (10, 0, 0xFF),
    "time-exceeded": (11, 0, 0xFF), "ttl-exceeded": (11, 0, 0xFF),
    "ttl-zero-during-transit": (11, 0, 0), "ttl-zero-during-reassembly": (11, 1, 1),
    "parameter-problem": (12, 0, 0xFF), "ip-header-bad": (12, 0, 0),
    "required-option-missing": (12, 1, 1), "timestamp-request": (13, 0, 0xFF),
    "timestamp-reply": (14, 0, 0xFF), "address-mask-request": (17, 0, 0xFF),
    "address-mask-reply": (18, 0, 0xFF),
}
_ICMP_LOWER = {k.lower(): v for k, v in ICMP_TYPES.items()}


@register_match
class IcmpMatch(Match):
    name = "icmp"
    OPTIONS = {"--icmp-type": "type"}
    INVERTIBLE = frozenset({"type"})

    def __init__(self) -> None:
        super().__init__()
        self.type, self.code = 0xFF, (0, 0xFF)
        self.inv = False

    def set(self, key, args, invert, spec):
        text = args[0]
        if text.lower() in _ICMP_LOWER:
            t, lo, hi = _ICMP_LOWER[text.lower()]
        else:
            typ, _, code = text.partition("/")
            t = parse_uint(typ, 255, "ICMP type")
            lo, hi = (parse_uint(code, 255, "ICMP code"),) * 2 if code else (0, 0xFF)
        self.type, self.code, self.inv = t, (lo, hi), invert

    def finish(self, spec):
        need_proto(spec, "icmp match", (1,))

    def save(self) -> str:
        out = " !" if self.inv else ""
        if self.type == 0xFF:
            return out + " --icmp-type any"
        out += f" --icmp-type {self.type}"
        if self.code != (0, 0xFF):
            out += f"/{self.code[0]}"
        return out

    def matches(self, pc) -> bool:
        l4 = pc.l4
        if not isinstance(l4, ICMP):
            return False
        hit = self.type == 0xFF or (l4.type == self.type and self.code[0] <= l4.code <= self.code[1])
        return hit != self.inv


@register_match
class MultiportMatch(Match):
    name = "multiport"
    OPTIONS = {"--sports": "sports", "--source-ports": "sports", "--dports": "dports",
               "--destination-ports": "dports", "--ports": "ports"}
    INVERTIBLE = frozenset({"sports", "dports", "ports"})

    def __init__(self) -> None:
        super().__init__()
        self.kind, self.ranges, self.inv = "", [], False

    def set(self, key, args, invert, spec):
        if self.kind:
            raise SyntaxProblem("multiport can only have one option")
        ranges, slots = [], 0
        for part in args[0].split(","):
            lo, hi = parse_port_range(part)
            ranges.append((lo, hi))
            slots += 1 if lo == hi else 2
        if slots > 15:
            raise SyntaxProblem("too many ports specified (at most 15)")
        self.kind, self.ranges, self.inv = key, ranges, invert

    def finish(self, spec):
        if not self.kind:
            raise SyntaxProblem("multiport needs one of --sports, --dports, --ports")
        need_proto(spec, "multiport", (6, 17, 132, 33, 136))

    def save(self) -> str:
        ports = ",".join(fmt_port_range(lo, hi) for lo, hi in self.ranges)
        return (" !" if self.inv else "") + f" --{self.kind} {ports}"

    def matches(self, pc) -> bool:
        l4 = pc.l4
        if not isinstance(l4, (TCP, UDP, SCTP)):
            return False
        if self.kind == "sports":
            cand = (l4.sport,)
        elif self.kind == "dports":
            cand = (l4.dport,)
        else:
            cand = (l4.sport, l4.dport)
        hit = any(lo <= p <= hi for lo, hi in self.ranges for p in cand)
        return hit != self.inv


@register_match
class CommentMatch(Match):
    name = "comment"
    always = True
    OPTIONS = {"--comment": "comment"}

    def __init__(self) -> None:
        super().__init__()
        self.comment = None

    def set(self, key, args, invert, spec):
        if len(args[0]) > 255:
            raise SyntaxProblem("comment is longer than 255 characters")
        self.comment = args[0]

    def finish(self, spec):
        if self.comment is None:
            raise SyntaxProblem("comment match needs --comment")

    def save(self) -> str:
        return f" --comment {save_string(self.comment)}"

    def matches(self, pc) -> bool:
        return True


def fmt_mark(value: int, mask: int) -> str:
    return f"0x{value:x}" if mask == 0xFFFFFFFF else f"0x{value:x}/0x{mask:x}"


@register_match
class MarkMatch(Match):
    name = "mark"
    OPTIONS = {"--mark": "mark"}
    INVERTIBLE = frozenset({"mark"})

    def __init__(self) -> None:
        super().__init__()
        self.value, self.mask, self.inv = None, 0xFFFFFFFF, False

    def set(self, key, args, invert, spec):
        v, m = parse_mark(args[0])
        self.value, self.mask, self.inv = v, 0xFFFFFFFF if m is None else m, invert

    def finish(self, spec):
        if self.value is None:
            raise SyntaxProblem("mark match needs --mark")

    def save(self) -> str:
        return (" !" if self.inv else "") + " --mark " + fmt_mark(self.value, self.mask)

    def matches(self, pc) -> bool:
        return ((pc.meta.mark & self.mask) == self.value) != self.inv


@register_match
class MacMatch(Match):
    name = "mac"
    OPTIONS = {"--mac-source": "mac"}
    INVERTIBLE = frozenset({"mac"})
    HOOKS = frozenset({"PREROUTING", "INPUT", "FORWARD"})

    def __init__(self) -> None:
        super().__init__()
        self.mac, self.inv = None, False

    def set(self, key, args, invert, spec):
        parts = args[0].split(":")
        if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
            raise SyntaxProblem(f"bad mac address '{args[0]}'")
        try:
            self.mac = ":".join(f"{int(p, 16):02x}" for p in parts)
        except ValueError:
            raise SyntaxProblem(f"bad mac address '{args[0]}'") from None
        self.inv = invert

    def finish(self, spec):
        if self.mac is None:
            raise SyntaxProblem("mac match needs --mac-source")

    def save(self) -> str:
        return (" !" if self.inv else "") + f" --mac-source {self.mac}"

    def matches(self, pc) -> bool:
        return (pc.pkt.eth.src == self.mac) != self.inv


@register_match
class PhysdevMatch(Match):
    name = "physdev"
    OPTIONS = {"--physdev-in": "in", "--physdev-out": "out", "--physdev-is-in": "is_in",
               "--physdev-is-out": "is_out", "--physdev-is-bridged": "bridged"}
    NARGS = {"is_in": 0, "is_out": 0, "bridged": 0}
    INVERTIBLE = frozenset(OPTIONS.values())
    _ORDER = ("is_in", "in", "is_out", "out", "bridged")
    _SPELL = {v: k for k, v in OPTIONS.items()}

    def __init__(self) -> None:
        super().__init__()
        self.opts: dict[str, tuple[str | None, bool]] = {}

    def set(self, key, args, invert, spec):
        self.opts[key] = (parse_iface(args[0]) if args else None, invert)

    def finish(self, spec):
        if not self.opts:
            raise SyntaxProblem("physdev needs at least one option")

    def hooks_for(self):
        out = self.opts.get("out") or self.opts.get("is_out")
        bridged = self.opts.get("bridged")
        if out and (bridged is None or bridged[1]):
            return frozenset({"PREROUTING", "INPUT", "FORWARD", "POSTROUTING"})
        return None

    def save(self) -> str:
        out = ""
        for key in self._ORDER:
            if key in self.opts:
                arg, inv = self.opts[key]
                out += (" !" if inv else "") + f" {self._SPELL[key]}" + (f" {arg}" if arg else "")
        return out

    def matches(self, pc) -> bool:
        """xt_physdev.c physdev_mt()."""
        o = self.opts
        hs = pc.hs
        if hs.physin is None and hs.physout is None:
            # not a bridged packet: only inverted options can match
            return all(inv for _arg, inv in o.values())
        indev, outdev = hs.physin, hs.physout
        if "bridged" in o and (outdev is not None) == o["bridged"][1]:
            return False
        if "is_in" in o and (indev is not None) == o["is_in"][1]:
            return False
        if "is_out" in o and (outdev is not None) == o["is_out"][1]:
            return False
        if "in" in o and indev is not None:
            name, inv = o["in"]
            if iface_match(name, indev) == inv:
                return False
        if "out" not in o:
            return True
        if outdev is None:
            return False
        name, inv = o["out"]
        return iface_match(name, outdev) != inv


ADDR_TYPES = ("UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
              "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE")


@register_match
class AddrtypeMatch(Match):
    name = "addrtype"
    OPTIONS = {"--src-type": "src", "--dst-type": "dst", "--limit-iface-in": "iface_in",
               "--limit-iface-out": "iface_out"}
    NARGS = {"iface_in": 0, "iface_out": 0}
    INVERTIBLE = frozenset({"src", "dst"})

    def __init__(self) -> None:
        super().__init__()
        self.src = self.dst = frozenset()
        self.src_inv = self.dst_inv = False
        self.iface_in = self.iface_out = False

    def set(self, key, args, invert, spec):
        if key.startswith("iface"):
            setattr(self, key, True)
            return
        types = set()
        for t in args[0].split(","):
            if t.upper() not in ADDR_TYPES:
                raise SyntaxProblem(f"unknown address type '{t}'")
            types.add(t.upper())
        setattr(self, key, frozenset(types))
        setattr(self, key + "_inv", invert)

    def finish(self, spec):
        if not self.src and not self.dst:
            raise SyntaxProblem("addrtype needs --src-type or --dst-type")
        if self.iface_in and self.iface_out:
            raise SyntaxProblem("addrtype: --limit-iface-in and --limit-iface-out exclude each other")

    def hooks_for(self):
        if self.iface_in:
            return frozenset({"PREROUTING", "INPUT", "FORWARD"})
        if self.iface_out:
            return frozenset({"POSTROUTING", "OUTPUT", "FORWARD"})
        return None

    def save(self) -> str:
        out = ""
        for key in ("src", "dst"):
            types = getattr(self, key)
            if types:
                out += (" !" if getattr(self, key + "_inv") else "") + f" --{key}-type " + \
                    ",".join(t for t in ADDR_TYPES if t in types)
        if self.iface_in:
            out += " --limit-iface-in"
        if self.iface_out:
            out += " --limit-iface-out"
        return out

    def matches(self, pc) -> bool:
        dev = pc.in_dev if self.iface_in else pc.out_dev if self.iface_out else None
        info = pc.nf.info
        if self.src and (info.addr_type(pc.src, dev) in self.src) == self.src_inv:
            return False
        if self.dst and (info.addr_type(pc.dst, dev) in self.dst) == self.dst_inv:
            return False
        return True


@register_match
class NfacctMatch(Match):
    """-m nfacct: count the packet in a named accounting object; matches
    (objects without a quota never stop matching)."""

    name = "nfacct"
    volatile = True
    OPTIONS = {"--nfacct-name": "name"}

    def __init__(self) -> None:
        super().__init__()
        self.acct = None

    def set(self, key, args, invert, spec):
        if not args[0] or len(args[0]) > 31:
            raise SyntaxProblem("nfacct: bad --nfacct-name")
        self.acct = args[0]

    def finish(self, spec):
        if self.acct is None:
            raise SyntaxProblem("nfacct needs --nfacct-name")

    def save(self) -> str:
        return f" --nfacct-name  {save_string(self.acct)}"     # libxt_nfacct's double space

    def matches(self, pc) -> bool:
        c = pc.nf.nfacct.setdefault(self.acct, [0, 0])
        c[0] += 1
        c[1] += pc.ip_len
        return True
