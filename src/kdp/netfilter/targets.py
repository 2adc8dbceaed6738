# netfilter.targets: the non-NAT targets — standard verdicts (ACCEPT, DROP,
# RETURN), jumps and gotos to user chains, REJECT, MARK, CONNMARK, LOG,
# NOTRACK and CT --notrack: options, load-time checks, canonical printing and
# what each does to the packet and its metadata. NAT targets: nattargets.py.
from __future__ import annotations

from .ext import ACCEPT, CONTINUE, DROP, RETURN, Target, register_target
from .log import LOG_LEVELS, log_line
from .reject import REJECT_NAMES, build_reject
from .syntax import SyntaxProblem, parse_mark, parse_uint, save_string


JUMP, VERDICT = "jump", "verdict"         # Target.KIND of the two standard targets


class Verdict(Target):
    """ACCEPT, DROP, RETURN: the standard target with a verdict."""

    terminal = True
    KIND = VERDICT

    def __init__(self, verdict: str) -> None:
        super().__init__()
        self.verdict = verdict

    @property
    def name(self) -> str:      # type: ignore[override]
        return self.verdict

    def run(self, pc) -> str:
        return self.verdict


class ChainJump(Target):
    """-j CHAIN / -g CHAIN: the standard target with a chain offset."""

    terminal = True
    KIND = JUMP

    def __init__(self, chain: str, goto: bool = False) -> None:
        super().__init__()
        self.chain, self.goto = chain, goto

    @property
    def name(self) -> str:      # type: ignore[override]
        return self.chain

    def describe(self) -> str:
        return ("goto " if self.goto else "") + self.chain


TARGET_VERDICTS = (ACCEPT, DROP, RETURN)


@register_target
class RejectTarget(Target):
    name = "REJECT"
    volatile = True
    terminal = True
    OPTIONS = {"--reject-with": "with"}
    HOOKS = frozenset({"INPUT", "FORWARD", "OUTPUT"})

    def __init__(self) -> None:
        super().__init__()
        self.with_ = "icmp-port-unreachable"

    def set(self, key, args, invert, spec):
        name = REJECT_NAMES.get(args[0])
        if name is None:
            raise SyntaxProblem(f"unknown reject type '{args[0]}'")
        self.with_ = name

    def finish(self, spec):
        if self.with_ == "tcp-reset" and (spec.proto != 6 or spec.proto_inv):
            raise SyntaxProblem("--reject-with tcp-reset is valid only with -p tcp")

    def save(self) -> str:
        return f" --reject-with {self.with_}"

    def run(self, pc) -> str:
        reply = build_reject(pc.pkt, self.with_, pc)
        if reply is not None:
            pc.add_generated(reply)
        pc.rejected = True
        return DROP


@register_target
class MarkTarget(Target):
    """MARK: every form becomes --set-xmark V/M (skb->mark = (mark & ~M) ^ V)."""

    name = "MARK"
    OPTIONS = {"--set-mark": "set", "--set-xmark": "xset", "--and-mark": "and",
               "--or-mark": "or", "--xor-mark": "xor"}

    def __init__(self) -> None:
        super().__init__()
        self.value = self.mask = None

    def set(self, key, args, invert, spec):
        if self.value is not None:
            raise SyntaxProblem(f"{self.name}: only one mark operation allowed")
        self.value, self.mask = xmark(key, args[0])

    def finish(self, spec):
        if self.value is None:
            raise SyntaxProblem(f"{self.name} target needs a mark operation")

    def save(self) -> str:
        return f" --set-xmark 0x{self.value:x}/0x{self.mask:x}"

    def run(self, pc) -> str:
        pc.meta.mark = (pc.meta.mark & ~self.mask & 0xFFFFFFFF) ^ self.value
        return CONTINUE


def xmark(op: str, text: str) -> tuple[int, int]:
    """(value, mask) for --set-xmark semantics, as libxt_MARK/CONNMARK fill them."""
    v, m = parse_mark(text)
    if op in ("and", "or", "xor") and m is not None:
        raise SyntaxProblem(f"--{op}-mark takes no mask")
    if op == "xset":
        return v, 0xFFFFFFFF if m is None else m
    if op == "set":
        return v, v | (0xFFFFFFFF if m is None else m)
    if op == "and":
        return 0, ~v & 0xFFFFFFFF
    if op == "or":
        return v, v
    return v, 0      # xor


@register_target
class ConnmarkTarget(Target):
    name = "CONNMARK"
    volatile = True
    OPTIONS = {"--set-mark": "set", "--set-xmark": "xset", "--and-mark": "and",
               "--or-mark": "or", "--xor-mark": "xor", "--save-mark": "save",
               "--restore-mark": "restore", "--mask": "mask", "--nfmask": "nfmask",
               "--ctmask": "ctmask"}
    NARGS = {"save": 0, "restore": 0}

    def __init__(self) -> None:
        super().__init__()
        self.mode = None
        self.ctmark = 0
        self.ctmask = self.nfmask = 0xFFFFFFFF

    def set(self, key, args, invert, spec):
        if key in ("set", "xset", "and", "or", "xor", "save", "restore"):
            if self.mode is not None:
                raise SyntaxProblem("CONNMARK: only one of the mark operations allowed")
            if key in ("save", "restore"):
                self.mode = key
            else:
                self.mode = "set"
                self.ctmark, self.ctmask = xmark(key, args[0])
        else:
            v = parse_uint(args[0], what=key)
            if key in ("mask", "nfmask"):
                self.nfmask = v
            if key in ("mask", "ctmask"):
                self.ctmask = v

    def finish(self, spec):
        if self.mode is None:
            raise SyntaxProblem("CONNMARK target needs an operation")
        bad = {"mask", "nfmask", "ctmask"} & set(self.given)
        if self.mode == "set" and bad:
            raise SyntaxProblem("CONNMARK: masks go with --save-mark/--restore-mark")

    def save(self) -> str:
        if self.mode == "set":
            return f" --set-xmark 0x{self.ctmark:x}/0x{self.ctmask:x}"
        return f" --{self.mode}-mark --nfmask 0x{self.nfmask:x} --ctmask 0x{self.ctmask:x}"

    def run(self, pc) -> str:
        ct = pc.meta.ct
        if ct is None:
            return CONTINUE
        if self.mode == "set":
            ct.mark = (ct.mark & ~self.ctmask & 0xFFFFFFFF) ^ self.ctmark
        elif self.mode == "save":
            ct.mark = (ct.mark & ~self.ctmask & 0xFFFFFFFF) ^ (pc.meta.mark & self.nfmask)
        else:
            pc.meta.mark = (pc.meta.mark & ~self.nfmask & 0xFFFFFFFF) ^ (ct.mark & self.ctmask)
        return CONTINUE


@register_target
class LogTarget(Target):
    name = "LOG"
    volatile = True
    OPTIONS = {"--log-prefix": "prefix", "--log-level": "level",
               "--log-tcp-sequence": "tcp_sequence", "--log-tcp-options": "tcp_options",
               "--log-ip-options": "ip_options", "--log-uid": "uid",
               "--log-macdecode": "macdecode"}
    FLAGS = ("tcp_sequence", "tcp_options", "ip_options", "uid", "macdecode")
    NARGS = {f: 0 for f in FLAGS}

    def __init__(self) -> None:
        super().__init__()
        self.prefix, self.level = "", 4
        self.flags: set[str] = set()

    def set(self, key, args, invert, spec):
        if key == "prefix":
            if len(args[0]) > 29:
                raise SyntaxProblem("--log-prefix is longer than 29 characters")
            self.prefix = args[0]
        elif key == "level":
            lv = args[0].lower()
            self.level = LOG_LEVELS[lv] if lv in LOG_LEVELS else parse_uint(lv, 7, "log level")
        else:
            self.flags.add(key)

    def save(self) -> str:
        out = f" --log-prefix {save_string(self.prefix)}" if self.prefix else ""
        if self.level != 4:
            out += f" --log-level {self.level}"
        for f in self.FLAGS:
            if f in self.flags:
                out += " --log-" + f.replace("_", "-")
        return out

    def run(self, pc) -> str:
        pc.add_log(log_line(self, pc))
        return CONTINUE


@register_target
class NotrackTarget(Target):
    name = "NOTRACK"
    volatile = True
    TABLES = frozenset({"raw"})

    def run(self, pc) -> str:
        if pc.meta.ct is None:
            pc.meta.notrack = True
        return CONTINUE


@register_target
class CtTarget(Target):
    name = "CT"
    volatile = True
    OPTIONS = {"--notrack": "notrack"}
    NARGS = {"notrack": 0}
    TABLES = frozenset({"raw"})

    def __init__(self) -> None:
        super().__init__()
        self.notrack = False

    def set(self, key, args, invert, spec):
        self.notrack = True

    def save(self) -> str:
        return " --notrack" if self.notrack else ""

    def run(self, pc) -> str:
        if self.notrack and pc.meta.ct is None:
            pc.meta.notrack = True
        return CONTINUE

