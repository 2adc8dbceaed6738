# netfilter.nft.values: how nft spells values — chain priorities by name (`dstnat - 10`),
# time spans (`3h`, `1d2h`), marks (`0x00004000`), ct states, protocol names, address
# intervals as an anonymous set holds them after nft merged them, and the order `nft list`
# sorts set elements in (the key's bytes read as one host-endian number). No objects here.
from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, summarize_address_range

# Standard priorities of the ip/ip6/inet families and the hooks nft prints their names for.
STD_PRIORITIES = (("raw", -300, None), ("mangle", -150, None), ("dstnat", -100, ("prerouting",)),
                  ("filter", 0, None), ("security", 50, None), ("srcnat", 100, ("postrouting",)))
# ... of the other families (the bridge family's follow ebtables': NF_BR_PRI_*)
FAMILY_PRIORITIES = {
    "bridge": (("dstnat", -300, ("prerouting",)), ("filter", -200, None), ("out", 100, ("output",)),
               ("srcnat", 300, ("postrouting",))),
    "netdev": (("filter", 0, None),),
    "arp": (("filter", 0, None),),
}
CT_STATES = ("invalid", "established", "related", "new", "untracked")   # nft prints bit order
PROTO_NUMBER = {"icmp": 1, "igmp": 2, "ggp": 3, "ipencap": 4, "st": 5, "egp": 8, "igp": 9,
                "pup": 12, "hmp": 20, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
                "sctp": 132, "udplite": 136, "dccp": 33}
PROTO_NAME = {v: k for k, v in PROTO_NUMBER.items()}
_TIME_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


class ValueProblem(ValueError):
    """A value nft would not accept; the parser adds source and line."""


def _priorities(family: str):
    return FAMILY_PRIORITIES.get(family, STD_PRIORITIES)


def parse_priority(text: str, hook: str | None, family: str = "ip") -> int:
    """``-110``, ``filter``, ``dstnat - 10``, ``dstnat-10`` → a number (names as the
    family spells them: the bridge family's filter is -200)."""
    m = re.fullmatch(r"\s*([a-z]+)?\s*(([+-])\s*(\d+))?\s*", text)
    if text.strip().lstrip("-").isdigit():
        return int(text)
    if not m or not m.group(1):
        raise ValueProblem(f"bad chain priority {text!r}")
    base = {n: v for n, v, _ in _priorities(family)}.get(m.group(1))
    if base is None:
        raise ValueProblem(f"unknown chain priority name {m.group(1)!r}")
    if m.group(2):
        base += int(m.group(4)) * (-1 if m.group(3) == "-" else 1)
    return base


def format_priority(value: int, hook: str | None, family: str = "ip") -> str:
    """What nft prints: the standard name (within 10 of it) where valid for the hook."""
    for name, base, hooks in _priorities(family):
        if hooks is not None and hook not in hooks:
            continue
        off = value - base
        if abs(off) <= 10:
            return name if off == 0 else f"{name} {'+' if off > 0 else '-'} {abs(off)}"
    return str(value)


def parse_time(text: str) -> int:
    """``10800``, ``10800s``, ``3h``, ``1d2h30m`` → seconds."""
    if text.isdigit():
        return int(text)
    parts = re.findall(r"(\d+)(d|h|m|s)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueProblem(f"bad time {text!r}")
    return sum(int(a) * dict(_TIME_UNITS)[b] for a, b in parts)


def format_time(seconds: int) -> str:
    out = ""
    for unit, size in _TIME_UNITS:
        n, seconds = divmod(seconds, size)
        if n:
            out += f"{n}{unit}"
    return out or "0s"


def format_mark(text: str) -> str:
    try:
        return f"0x{int(text, 0):08x}"
    except ValueError:
        raise ValueProblem(f"bad mark {text!r}") from None


def format_ct_state(text: str) -> str:
    states = text.split(",")
    bad = [s for s in states if s not in CT_STATES]
    if bad:
        raise ValueProblem(f"unknown ct state {bad[0]!r}")
    return ",".join(s for s in CT_STATES if s in states)


def format_proto(text: str) -> str:
    if text.isdigit() and int(text) in PROTO_NAME:
        return PROTO_NAME[int(text)]
    return text


def ipv4_bounds(text: str) -> tuple[int, int]:
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return int(IPv4Address(lo)), int(IPv4Address(hi))
        net = IPv4Network(text, strict=False)
        return int(net.network_address), int(net.broadcast_address)
    except ValueError:
        raise ValueProblem(f"bad IPv4 address {text!r}") from None


def merge_ipv4(texts: list[str]) -> list[str]:
    """The elements of an anonymous IPv4 interval set after nft merged overlapping and
    adjacent ones, sorted: a prefix prints as CIDR (a host without /32), else as a range."""
    spans = sorted(ipv4_bounds(t) for t in texts)
    merged: list[list[int]] = []
    for lo, hi in spans:
        # overlapping intervals merge; adjacent ones only when neither is a single address
        adjacent = merged and lo == merged[-1][1] + 1 and lo != hi and merged[-1][0] != merged[-1][1]
        if merged and (lo <= merged[-1][1] or adjacent):
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    out = []
    for lo, hi in merged:
        nets = list(summarize_address_range(IPv4Address(lo), IPv4Address(hi)))
        if len(nets) == 1:
            n = nets[0]
            out.append(str(n.network_address) if n.prefixlen == 32 else str(n))
        else:
            out.append(f"{IPv4Address(lo)}-{IPv4Address(hi)}")
    return out


def _field_bytes(text: str, dtype: str) -> bytes:
    try:
        if dtype == "ipv4_addr":
            return ipv4_bounds(text)[0].to_bytes(4, "big")
        if dtype == "inet_proto":
            return (int(text) if text.isdigit() else PROTO_NUMBER.get(text, 0)).to_bytes(1, "big")
        if dtype == "inet_service":
            return int(text.split("-")[0]).to_bytes(2, "big")
        if dtype in ("mark", "integer"):
            return int(text, 0).to_bytes(4, "little")
    except (ValueError, OverflowError):
        pass
    return b""


def element_sort_key(key: tuple[str, ...], types: tuple[str, ...]) -> int:
    """The order `nft list` prints elements in: for a single value its number; for a
    concatenation the fields' bytes joined and read as one little-endian number (so the
    last field weighs most)."""
    if len(types) == 1:
        data = _field_bytes(key[0], types[0])
        return int.from_bytes(data, "little" if types[0] in ("mark", "integer") else "big")
    data = b"".join(_field_bytes(k, t) for k, t in zip(key, types))
    return int.from_bytes(data, "little")


def per_line(types: tuple[str, ...]) -> int:
    """How many elements nft prints on one line of a named set's `elements = {`."""
    if len(types) != 1:
        return 1
    t = types[0]
    if t in ("ipv4_addr", "ct_state", "ct_status", "pkttype"):
        return 2
    if t in ("inet_proto", "inet_service", "mark", "integer", "nf_proto", "ifindex", "uid",
             "gid", "ct_dir", "classid", "tcp_flag", "arp_op", "dccp_pkttype"):
        return 5
    return 1


def quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'
