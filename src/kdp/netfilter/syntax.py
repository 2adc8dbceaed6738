# netfilter.syntax: the lexical side of iptables-restore/iptables-save — the
# line tokenizer (double quotes, backslash escapes), xtables_save_string
# quoting, and parsing/printing of the value types options take (addresses,
# masks, ports and port ranges, marks, protocols). No rule semantics.
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

PROTO_BY_NAME = {"all": 0, "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50,
                 "ah": 51, "sctp": 132, "udplite": 136, "dccp": 33, "ipip": 4, "ipv6": 41,
                 "icmpv6": 58, "ipv6-icmp": 58, "ospf": 89, "vrrp": 112, "pim": 103}
PROTO_NAME = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah",
              132: "sctp", 136: "udplite", 33: "dccp", 4: "ipencap", 41: "ipv6",
              58: "ipv6-icmp", 89: "ospf", 112: "vrrp", 103: "pim"}
_NO_QUOTE = set("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class SyntaxProblem(ValueError):
    """A value that does not parse; the caller adds line and option."""


def tokenize(line: str) -> list[str]:
    """Split one iptables-restore line into arguments as add_param_to_argv()
    does: whitespace separates, double quotes group, backslash escapes inside
    quotes. Single quotes are ordinary characters."""
    out: list[str] = []
    buf: list[str] = []
    have = False
    quote = escaped = False
    for ch in line:
        if quote:
            if escaped:
                buf.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quote = False
                out.append("".join(buf))
                buf, have = [], False
            else:
                buf.append(ch)
            continue
        if ch == '"':
            quote, have = True, True
        elif ch in " \t\r\n":
            if have:
                out.append("".join(buf))
                buf, have = [], False
        else:
            buf.append(ch)
            have = True
    if quote:
        raise SyntaxProblem("unterminated quoted string")
    if have:
        out.append("".join(buf))
    return out


def save_string(value: str) -> str:
    """xtables_save_string(): bare when only [A-Za-z0-9_-], else quoted with
    \\ before every double quote, backslash and single quote."""
    if value and all(c in _NO_QUOTE for c in value):
        return value
    esc = "".join("\\" + c if c in "\"\\'" else c for c in value)
    return f'"{esc}"'


# --- numbers -------------------------------------------------------------

def parse_uint(text: str, maximum: int = 0xFFFFFFFF, what: str = "number") -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise SyntaxProblem(f"bad {what} '{text}'") from None
    if not 0 <= v <= maximum:
        raise SyntaxProblem(f"{what} '{text}' out of range")
    return v


def parse_mark(text: str) -> tuple[int, int | None]:
    """'V' or 'V/M' (numbers in any base)."""
    if "/" in text:
        v, m = text.split("/", 1)
        return parse_uint(v, what="mark"), parse_uint(m, what="mask")
    return parse_uint(text, what="mark"), None


def parse_port(text: str) -> int:
    if not text.isdigit():
        raise SyntaxProblem(f"invalid port/service '{text}' specified")
    return parse_uint(text, 0xFFFF, "port")


def parse_port_range(text: str, sep: str = ":") -> tuple[int, int]:
    """'P', 'A:B', ':B', 'A:' (the tcp/udp match form)."""
    if sep in text:
        a, b = text.split(sep, 1)
        lo = parse_port(a) if a else 0
        hi = parse_port(b) if b else 0xFFFF
        if lo > hi:
            raise SyntaxProblem(f"invalid port range '{text}'")
        return lo, hi
    p = parse_port(text)
    return p, p


def fmt_port_range(lo: int, hi: int, sep: str = ":") -> str:
    return str(lo) if lo == hi else f"{lo}{sep}{hi}"


# --- addresses -----------------------------------------------------------

def parse_ip(text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise SyntaxProblem(f"host/network '{text}' not found") from None


def parse_cidr(text: str) -> IPv4Network:
    """'A.B.C.D', 'A.B.C.D/N' or 'A.B.C.D/M.M.M.M'; host bits are cleared
    as iptables does."""
    if "," in text:
        raise SyntaxProblem(f"address lists are not supported ('{text}')")
    addr, _, mask = text.partition("/")
    ip = parse_ip(addr)
    if not mask:
        plen = 32
    elif mask.isdigit():
        plen = int(mask)
        if plen > 32:
            raise SyntaxProblem(f"invalid mask '{mask}' specified")
    else:
        m = int(parse_ip(mask))
        plen = bin(m).count("1")
        if m != (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF:
            raise SyntaxProblem(f"non-contiguous mask '{mask}' is not supported")
    return IPv4Network((int(ip) & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF), plen))


def fmt_cidr(net: IPv4Network, *, host_suffix: bool = True) -> str:
    """iptables-save prints '/32' for hosts in -s/-d; the conntrack match
    prints hosts bare (host_suffix=False)."""
    if net.prefixlen == 32 and not host_suffix:
        return str(net.network_address)
    return f"{net.network_address}/{net.prefixlen}"


def parse_proto(text: str) -> int:
    t = text.lower()
    if t in PROTO_BY_NAME:
        return PROTO_BY_NAME[t]
    if t.isdigit() and int(t) <= 255:
        return int(t)
    raise SyntaxProblem(f"unknown protocol '{text}' specified")


def fmt_proto(proto: int) -> str:
    return PROTO_NAME.get(proto, str(proto))


def parse_iface(text: str) -> str:
    if len(text) > 15:
        raise SyntaxProblem(f"interface name '{text}' must be shorter than 16 characters")
    return text


def iface_match(pattern: str, name: str | None) -> bool:
    """-i/-o and physdev name matching: a trailing '+' matches any suffix."""
    name = name or ""
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern
