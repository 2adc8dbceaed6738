# netfilter.ctmatches: match extensions that read or keep state — conntrack
# and state (xt_conntrack.c / xt_state.c over the entry attached to the
# packet), statistic (keyed-hash random and per-rule nth counters) and recent
# (per-namespace address lists, xt_recent.c).
from __future__ import annotations

import math
from ipaddress import IPv4Address

from kdp.conntrack import (ASSURED, CONFIRMED, DST_NAT, EXPECTED, ORIGINAL, SEEN_REPLY, SRC_NAT,
                           ctinfo_dir, ctinfo_state, packet_tuple)
from kdp.conntrack.keyed import decision_point, fast_flow_hash, random31

from .ext import Match, register_match
from .syntax import (SyntaxProblem, fmt_cidr, fmt_port_range, parse_cidr, parse_ip,
                     parse_port_range, parse_proto, parse_uint)
from .boundary import StatisticQuery

CT_STATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
CT_STATUS = {"EXPECTED": EXPECTED, "SEEN_REPLY": SEEN_REPLY, "ASSURED": ASSURED,
             "CONFIRMED": CONFIRMED}


def _parse_states(text: str, allowed: tuple[str, ...]) -> frozenset[str]:
    out = set()
    for s in text.split(","):
        if s.upper() not in allowed:
            raise SyntaxProblem(f"bad state '{s}'")
        out.add(s.upper())
    return frozenset(out)


def packet_states(pc) -> set[str]:
    """The state bits xt_conntrack tests for this packet."""
    meta = pc.meta
    ct = meta.ct
    if ct is None:
        return {"UNTRACKED" if meta.notrack else "INVALID"}
    states = {meta.state}
    if ct.status & SRC_NAT:
        states.add("SNAT")
    if ct.status & DST_NAT:
        states.add("DNAT")
    return states


def state_hit(want: frozenset[str], meta) -> bool:
    """bool(want & packet_states(pc)), without building the set (the state
    match of nearly every kube-proxy chain runs this for every packet)."""
    ct = meta.ct
    if ct is None:
        return ("UNTRACKED" if meta.notrack else "INVALID") in want
    if ctinfo_state(meta.ctinfo) in want:
        return True
    status = ct.status
    return bool((status & SRC_NAT and "SNAT" in want) or (status & DST_NAT and "DNAT" in want))


@register_match
class ConntrackMatch(Match):
    name = "conntrack"

    @property
    def volatile(self) -> bool:          # --ctexpire reads the clock
        return "expire" in self.opts

    OPTIONS = {"--ctstate": "state", "--ctproto": "proto", "--ctorigsrc": "origsrc",
               "--ctorigdst": "origdst", "--ctreplsrc": "replsrc", "--ctrepldst": "repldst",
               "--ctorigsrcport": "origsrcport", "--ctorigdstport": "origdstport",
               "--ctreplsrcport": "replsrcport", "--ctrepldstport": "repldstport",
               "--ctstatus": "status", "--ctexpire": "expire", "--ctdir": "dir"}
    INVERTIBLE = frozenset(set(OPTIONS.values()) - {"dir"})
    _ORDER = ("state", "proto", "origsrc", "origdst", "replsrc", "repldst", "origsrcport",
              "origdstport", "replsrcport", "repldstport", "status", "expire", "dir")

    def __init__(self) -> None:
        super().__init__()
        self.opts: dict[str, tuple[object, bool]] = {}

    def set(self, key, args, invert, spec):
        a = args[0]
        if key == "state":
            v = _parse_states(a, CT_STATES)
        elif key == "proto":
            v = parse_proto(a)
        elif key.endswith("port"):
            v = parse_port_range(a)
        elif key in ("origsrc", "origdst", "replsrc", "repldst"):
            v = parse_cidr(a)
        elif key == "status":
            names = [s.upper() for s in a.split(",")]
            if any(n not in CT_STATUS and n != "NONE" for n in names):
                raise SyntaxProblem(f"bad ctstatus '{a}'")
            v = sum(CT_STATUS.get(n, 0) for n in set(names))
        elif key == "expire":
            lo, _, hi = a.partition(":")
            v = (parse_uint(lo, what="expire time"), parse_uint(hi or lo, what="expire time"))
        else:  # dir
            if a.upper() not in ("ORIGINAL", "REPLY"):
                raise SyntaxProblem(f"bad ctdir '{a}'")
            v = a.upper()
        self.opts[key] = (v, invert)

    def finish(self, spec):
        if not self.opts:
            raise SyntaxProblem("conntrack match needs an option")

    def save(self) -> str:
        out = ""
        for key in self._ORDER:
            if key not in self.opts:
                continue
            v, inv = self.opts[key]
            out += " !" if inv else ""
            if key == "state":
                out += " --ctstate " + ",".join(s for s in CT_STATES if s in v)
            elif key == "proto":
                out += f" --ctproto {v}"
            elif key.endswith("port"):
                out += f" --ct{key} {fmt_port_range(*v)}"
            elif key == "status":
                names = [n for n, b in CT_STATUS.items() if v & b]
                out += " --ctstatus " + (",".join(names) or "NONE")
            elif key == "expire":
                out += f" --ctexpire {v[0]}" + (f":{v[1]}" if v[1] != v[0] else "")
            elif key == "dir":
                out += f" --ctdir {v}"
            else:
                out += f" --ct{key} {fmt_cidr(v, host_suffix=False)}"
        return out

    def matches(self, pc) -> bool:
        """xt_conntrack.c conntrack_mt()."""
        o = self.opts
        if "state" in o:
            want, inv = o["state"]
            if state_hit(want, pc.meta) == inv:
                return False
            if len(o) == 1:
                return True
        ct = pc.meta.ct
        if ct is None:
            return "state" in o
        if "dir" in o:
            is_orig = ctinfo_dir(pc.meta.ctinfo) == ORIGINAL
            if is_orig != (o["dir"][0] == "ORIGINAL"):
                return False
        for key, tup, field in (("origsrc", ct.orig, "src"), ("origdst", ct.orig, "dst"),
                                ("replsrc", ct.reply, "src"), ("repldst", ct.reply, "dst")):
            if key in o:
                net, inv = o[key]
                if (getattr(tup, field) in net) == inv:
                    return False
        if "proto" in o and (ct.orig.proto == o["proto"][0]) == o["proto"][1]:
            return False
        for key, tup, field in (("origsrcport", ct.orig, "sport"), ("origdstport", ct.orig, "dport"),
                                ("replsrcport", ct.reply, "sport"),
                                ("repldstport", ct.reply, "dport")):
            if key in o:
                (lo, hi), inv = o[key]
                if (lo <= getattr(tup, field) <= hi) == inv:
                    return False
        if "status" in o and bool(o["status"][0] & ct.status) == o["status"][1]:
            return False
        if "expire" in o:
            (lo, hi), inv = o["expire"]
            if (lo <= int(ct.remaining(pc.now)) <= hi) == inv:
                return False
        return True


@register_match
class StateMatch(Match):
    name = "state"
    OPTIONS = {"--state": "state"}
    INVERTIBLE = frozenset({"state"})
    STATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED")

    def __init__(self) -> None:
        super().__init__()
        self.states, self.inv = None, False

    def set(self, key, args, invert, spec):
        self.states, self.inv = _parse_states(args[0], self.STATES), invert

    def finish(self, spec):
        if self.states is None:
            raise SyntaxProblem("state match needs --state")

    def save(self) -> str:
        return (" !" if self.inv else "") + " --state " + \
            ",".join(s for s in self.STATES if s in self.states)

    def matches(self, pc) -> bool:
        return state_hit(self.states, pc.meta) != self.inv


@register_match
class StatisticMatch(Match):
    """random: the decision is a pure function — flow_hash(seed, point,
    the connection's original tuple, the entry's generation: a reopened tuple
    draws anew, as each new kernel entry does) where the decision point is the rule
    (decision_point("statistic", namespace, table, chain, rule number)); its
    top 31 bits are compared with the probability as the kernel does
    ((prandom_u32() & 0x7FFFFFFF) < probability). The compiled service
    matcher makes the same comparison. Netfilter.force_statistic may force
    it. nth: one counter per rule, as the kernel keeps."""

    name = "statistic"
    volatile = True
    OPTIONS = {"--mode": "mode", "--probability": "probability", "--every": "every",
               "--packet": "packet"}
    INVERTIBLE = frozenset({"probability", "every"})

    def __init__(self) -> None:
        super().__init__()
        self.mode = None
        self.prob = None            # u32 as the kernel stores it (0..0x80000000)
        self.every = self.packet = None
        self.inv = False
        self.count = 0

    def set(self, key, args, invert, spec):
        a = args[0]
        if key == "mode":
            if a not in ("random", "nth"):
                raise SyntaxProblem(f"bad mode '{a}'")
            self.mode = a
        elif key == "probability":
            try:
                p = float(a)
            except ValueError:
                raise SyntaxProblem(f"bad probability '{a}'") from None
            if not 0.0 <= p <= 1.0:
                raise SyntaxProblem("--probability must be between 0 and 1")
            self.prob, self.inv = int(math.floor(0x80000000 * p + 0.5)), invert
        elif key == "every":
            n = parse_uint(a, what="--every")
            if n == 0:
                raise SyntaxProblem("--every must be at least 1")
            self.every, self.inv = n, invert
        else:
            self.packet = parse_uint(a, what="--packet")

    def finish(self, spec):
        if self.mode == "random":
            if self.prob is None or self.every is not None or self.packet is not None:
                raise SyntaxProblem("--mode random needs --probability (and no --every/--packet)")
        elif self.mode == "nth":
            if self.every is None or self.prob is not None:
                raise SyntaxProblem("--mode nth needs --every")
            self.packet = self.packet or 0
            if self.packet > self.every - 1:
                raise SyntaxProblem("the --packet p must be 0 <= p <= n-1")
            self.count = self.every - 1        # --packet P matches packets P+1, P+1+N, ...
        else:
            raise SyntaxProblem("statistic needs --mode")

    @property
    def probability(self) -> float:
        return self.prob / 0x80000000

    def save(self) -> str:
        inv = " !" if self.inv else ""
        if self.mode == "random":
            return f" --mode random{inv} --probability {self.probability:.11f}"
        return f" --mode nth{inv} --every {self.every} --packet {self.packet}"

    def guarded(self, pc) -> bool:
        nf = pc.nf
        return self.mode == "random" and nf.guards is not None and nf.force_statistic is None \
            and pc.meta.ct is not None

    def matches(self, pc) -> bool:
        if self.mode == "nth":
            self.count = 0 if self.count == self.every - 1 else self.count + 1
            return (self.count == self.packet) != self.inv
        nf = pc.nf
        ct = pc.meta.ct
        tup = ct.orig if ct is not None else packet_tuple(pc.pkt)
        forced = None
        if nf.force_statistic is not None:
            forced = nf.force_statistic(StatisticQuery(
                nf.info.name, pc.table, pc.chain, pc.rule_number, self.probability, tup, pc.pkt))
        if forced is None:
            point = decision_point("statistic", nf.info.name, pc.table, pc.chain, pc.rule_number)
            if tup is not None:
                h = fast_flow_hash(nf.seed, point, tup.proto, tup.src._ip, tup.dst._ip, tup.sport,
                                   tup.dport, ct.gen if ct is not None else 0)
            else:       # no tuple (a fragment): the addresses alone
                h = fast_flow_hash(nf.seed, point, pc.proto, pc.src_int, pc.dst_int, 0, 0)
            forced = random31(h) < self.prob
            if nf.guards is not None and ct is not None:
                nf.guards.append((nf.seed, point, ct, ("below", self.prob, forced)))
        return bool(forced) != self.inv


@register_match
class RecentMatch(Match):
    name = "recent"
    volatile = True
    OPTIONS = {"--set": "set", "--rcheck": "rcheck", "--update": "update", "--remove": "remove",
               "--seconds": "seconds", "--reap": "reap", "--hitcount": "hitcount",
               "--rttl": "rttl", "--name": "name", "--mask": "mask", "--rsource": "rsource",
               "--rdest": "rdest"}
    NARGS = {"set": 0, "rcheck": 0, "update": 0, "remove": 0, "reap": 0, "rttl": 0,
             "rsource": 0, "rdest": 0}
    INVERTIBLE = frozenset({"set", "rcheck", "update", "remove"})
    MODES = ("set", "rcheck", "update", "remove")

    def __init__(self) -> None:
        super().__init__()
        self.mode, self.inv = None, False
        self.seconds = self.hitcount = 0
        self.reap = self.rttl = False
        self.table = "DEFAULT"
        self.mask = IPv4Address("255.255.255.255")
        self.side = "rsource"

    def set(self, key, args, invert, spec):
        if key in self.MODES:
            if self.mode is not None:
                raise SyntaxProblem("recent: only one of --set, --rcheck, --update, --remove")
            self.mode, self.inv = key, invert
        elif key in ("seconds", "hitcount"):
            setattr(self, key, parse_uint(args[0], 0x7FFFFFFF, key))
        elif key in ("reap", "rttl"):
            setattr(self, key, True)
        elif key == "name":
            if not args[0] or len(args[0]) > 199:
                raise SyntaxProblem("recent: bad --name")
            self.table = args[0]
        elif key == "mask":
            self.mask = parse_ip(args[0])
        else:
            self.side = key

    def finish(self, spec):
        if self.mode is None:
            raise SyntaxProblem("recent needs one of --set, --rcheck, --update, --remove")
        if self.mode in ("set", "remove") and (self.seconds or self.hitcount or self.reap or self.rttl):
            raise SyntaxProblem("recent: --seconds/--hitcount/--reap/--rttl need --rcheck or --update")
        if self.reap and not self.seconds:
            raise SyntaxProblem("recent: --reap needs --seconds")
        if self.hitcount > 20:
            raise SyntaxProblem("recent: --hitcount larger than ip_pkt_list_tot (20)")

    def save(self) -> str:
        out = (" !" if self.inv else "") + f" --{self.mode}"
        if self.seconds:
            out += f" --seconds {self.seconds}"
        if self.reap:
            out += " --reap"
        if self.hitcount:
            out += f" --hitcount {self.hitcount}"
        if self.rttl:
            out += " --rttl"
        return out + f" --name {self.table} --mask {self.mask} --{self.side}"

    def matches(self, pc) -> bool:
        return pc.nf.recent.match(self, pc)
