# netfilter.nattargets: the NAT targets — DNAT, SNAT, MASQUERADE, REDIRECT:
# their options, load-time checks, canonical printing, and the NAT range
# each hands to conntrack.nat when a new connection walks the nat table.
from __future__ import annotations

from kdp.conntrack import DST, SRC, NatRange

from .ext import DROP, Target, need_proto, register_target
from .syntax import SyntaxProblem, parse_ip, parse_port

_PORT_PROTOS = (6, 17, 132, 33)


def _ports(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    a = parse_port(lo)
    b = parse_port(hi) if hi else a
    if b < a:
        raise SyntaxProblem(f"invalid port range '{text}'")
    return a, b


def parse_nat_range(text: str) -> NatRange:
    """'IP[-IP][:PORT[-PORT]]' or ':PORT[-PORT]'."""
    ips, sep, ports = text.partition(":")
    lo_ip = hi_ip = None
    if ips:
        a, _, b = ips.partition("-")
        lo_ip = parse_ip(a)
        hi_ip = parse_ip(b) if b else lo_ip
        if int(hi_ip) < int(lo_ip):
            raise SyntaxProblem(f"bad IP range '{ips}'")
    lo_p = hi_p = None
    if sep:
        lo_p, hi_p = _ports(ports)
    if lo_ip is None and lo_p is None:
        raise SyntaxProblem(f"bad address/port '{text}'")
    return NatRange(lo_ip, hi_ip, lo_p, hi_p)


def fmt_nat_range(r: NatRange) -> str:
    out = ""
    if r.min_ip is not None:
        out = str(r.min_ip) + (f"-{r.max_ip}" if r.max_ip != r.min_ip else "")
    if r.min_port is not None:
        out += f":{r.min_port}" + (f"-{r.max_port}" if r.max_port != r.min_port else "")
    return out


class _NatTarget(Target):
    volatile = True                     # binds the conntrack entry's NAT
    terminal = True
    TABLES = frozenset({"nat"})
    MANIP = SRC
    FLAGS: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.range: NatRange | None = None
        self.flags: set[str] = set()

    def set(self, key, args, invert, spec):
        if key in self.FLAGS:
            self.flags.add(key)
        elif key == "to":
            self.range = parse_nat_range(args[0])
        else:   # ports
            lo, hi = _ports(args[0])
            self.range = NatRange(min_port=lo, max_port=hi)

    def finish(self, spec):
        if self.range is not None and self.range.min_port is not None:
            need_proto(spec, f"{self.name} with a port", _PORT_PROTOS)

    def nat_range(self, ip=None) -> NatRange:
        r = self.range or NatRange()
        return NatRange(ip if ip is not None else r.min_ip, ip if ip is not None else r.max_ip,
                        r.min_port, r.max_port, random="random" in self.flags,
                        random_fully="random-fully" in self.flags,
                        persistent="persistent" in self.flags)

    def guarded(self, pc) -> bool:
        """The binding is a megaflow recipe's (kdp.datapath.megaflow): no flag
        draws, one address, and a port only where it replaces the destination's.
        The new entry's tuples, checked free for each new flow, say the rest."""
        if pc.nf.guards is None or self.flags:
            return False
        r = self.range
        return r is None or (r.min_ip == r.max_ip and
                             (r.min_port is None or (self.MANIP == DST and r.min_port == r.max_port)))

    def save_flags(self) -> str:
        return "".join(f" --{f}" for f in ("random", "random-fully", "persistent") if f in self.flags)


class _ToTarget(_NatTarget):
    """DNAT and SNAT: a mandatory --to-destination/--to-source range, bound to the
    connection on its first packet (MANIP says which side is rewritten)."""

    TO_OPTION = ""

    def finish(self, spec):
        if self.range is None:
            raise SyntaxProblem(f"{self.name} needs {self.TO_OPTION}")
        super().finish(spec)

    def save(self) -> str:
        return f" {self.TO_OPTION} {fmt_nat_range(self.range)}" + self.save_flags()

    def run(self, pc) -> str:
        return pc.nat_setup(self.MANIP, self.nat_range())


@register_target
class DnatTarget(_ToTarget):
    name = "DNAT"
    MANIP = DST
    HOOKS = frozenset({"PREROUTING", "OUTPUT"})
    OPTIONS = {"--to-destination": "to", "--random": "random", "--persistent": "persistent"}
    NARGS = {"random": 0, "persistent": 0}
    FLAGS = ("random", "persistent")
    TO_OPTION = "--to-destination"


@register_target
class SnatTarget(_ToTarget):
    name = "SNAT"
    HOOKS = frozenset({"POSTROUTING", "INPUT"})
    OPTIONS = {"--to-source": "to", "--random": "random", "--random-fully": "random-fully",
               "--persistent": "persistent"}
    NARGS = {"random": 0, "random-fully": 0, "persistent": 0}
    FLAGS = ("random", "random-fully", "persistent")
    TO_OPTION = "--to-source"


class _PortsTarget(_NatTarget):
    """MASQUERADE and REDIRECT: the address comes from a device, only the
    ports (--to-ports) from the rule."""

    def save(self) -> str:
        out = ""
        r = self.range
        if r is not None:
            out = f" --to-ports {r.min_port}" + (f"-{r.max_port}" if r.max_port != r.min_port else "")
        return out + self.save_flags()


@register_target
class MasqueradeTarget(_PortsTarget):
    name = "MASQUERADE"
    HOOKS = frozenset({"POSTROUTING"})
    OPTIONS = {"--to-ports": "ports", "--random": "random", "--random-fully": "random-fully"}
    NARGS = {"random": 0, "random-fully": 0}
    FLAGS = ("random", "random-fully")

    def run(self, pc) -> str:
        """nf_nat_masquerade_ipv4(): the source address the route out of
        out_dev would pick (inet_select_addr)."""
        newsrc = pc.nf.info.source_address(pc.out_dev, pc.dst)
        if newsrc is None or int(newsrc) == 0:
            pc.note(f"MASQUERADE: {pc.out_dev} has no address")
            return DROP
        if pc.meta.ct is not None:
            pc.meta.ct.masq_dev = pc.out_dev
        return pc.nat_setup(SRC, self.nat_range(newsrc))



def redirect_address(pc):
    """nf_nat_redirect_ipv4()'s new destination: 127.0.0.1 from OUTPUT, else the
    first address of the incoming device (None when it has none). REDIRECT and
    nftables' redirect share it."""
    from ipaddress import IPv4Address
    if pc.hook == "OUTPUT":
        return IPv4Address("127.0.0.1")
    info = pc.nf.info
    primary = getattr(info, "primary_address", None)
    return primary(pc.in_dev) if primary else info.source_address(pc.in_dev, pc.src)


@register_target
class RedirectTarget(_PortsTarget):
    name = "REDIRECT"
    MANIP = DST
    HOOKS = frozenset({"PREROUTING", "OUTPUT"})
    OPTIONS = {"--to-ports": "ports", "--random": "random"}
    NARGS = {"random": 0}
    FLAGS = ("random",)

    def run(self, pc) -> str:
        newdst = redirect_address(pc)
        if newdst is None:
            pc.note(f"REDIRECT: {pc.in_dev} has no address")
            return DROP
        return pc.nat_setup(DST, self.nat_range(newdst))



