# netfilter.nft.sets: the sets and maps of an nftables table as the packet path sees them —
# lookups by a plain key or a concatenation (exact elements hashed, interval elements
# scanned), verdict maps' verdicts, and the dynamic elements `update @set { ... }` adds
# with their timeouts (expired ones are gone for lookups and for the listing). Anonymous
# sets written in a rule are the same object without a name.
from __future__ import annotations

import re

from .expr import KEY_KINDS, Problem, const_matches, parse_const
from .model import Element, NftSet
from .values import format_time

VERDICT_KINDS = ("accept", "drop", "return", "continue", "jump", "goto")


def parse_verdict(text: str) -> tuple[str, str | None]:
    words = text.split()
    if not words or words[0] not in VERDICT_KINDS or \
            len(words) != (2 if words[0] in ("jump", "goto") else 1):
        raise Problem(f"not a verdict: {text!r}")
    return words[0], (words[1] if len(words) == 2 else None)


def _seconds(text: str) -> float:
    """nft's time spans as listed: ``2h59m58s``, ``956ms``."""
    total = 0.0
    for n, unit in re.findall(r"(\d+)(ms|d|h|m|s)", text):
        total += int(n) * {"ms": 0.001, "d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total


class RuntimeSet:
    """One set or map with its elements ready for lookups."""

    def __init__(self, name: str | None, kinds: tuple, elements, *, is_map: bool = False,
                 timeout: int | None = None, dynamic: bool = False, decl: NftSet | None = None):
        self.name, self.kinds, self.is_map = name, kinds, is_map
        self.single = len(kinds) == 1
        self.timeout, self.dynamic, self.decl = timeout, dynamic, decl
        self.exact: dict = {}            # key -> (value, element)
        self.ranges: list[tuple] = []    # (consts per part, value, element)
        self.expires: dict = {}          # key -> absolute time (dynamic elements with a timeout)
        self.added: dict = {}            # key -> element text (dynamic elements added at run time)
        for el in elements:
            self._add_static(el)

    @classmethod
    def from_decl(cls, s: NftSet) -> "RuntimeSet":
        kinds = []
        for t in s.key_types:
            if t not in KEY_KINDS:
                raise Problem(f"set {s.name}: kdp cannot look up keys of type {t}")
            kinds.append(KEY_KINDS[t])
        if s.is_map and s.data_type != "verdict":
            raise Problem(f"map {s.name}: kdp evaluates verdict maps only (not {s.data_type})")
        return cls(s.name, tuple(kinds), s.elements, is_map=s.is_map, timeout=s.timeout,
                   dynamic="dynamic" in s.flags or "timeout" in s.flags, decl=s)

    def _add_static(self, el: Element) -> None:
        if len(el.key) != len(self.kinds):
            raise Problem(f"element {' . '.join(el.key)} does not fit the key "
                          f"({len(self.kinds)} fields)")
        consts = tuple(parse_const(k, kind) for k, kind in zip(el.key, self.kinds))
        value = parse_verdict(el.value) if self.is_map else None
        if all(c[0] == "eq" for c in consts):
            key = consts[0][1] if self.single else tuple(c[1] for c in consts)
            self.exact[key] = (value, el)
            if el.extra and "expires" in el.extra:
                self.expires[key] = _seconds(el.extra.split("expires", 1)[1])
        else:
            self.ranges.append((consts, value, el))

    def lookup(self, key, now: float):
        """(value, element) of the element key finds, or None."""
        hit = self.exact.get(key)
        if hit is not None:
            if self.expires and key in self.expires and self.expires[key] <= now:
                return None
            return hit
        for consts, value, el in self.ranges:
            if self.single:
                if const_matches(consts[0], key):
                    return value, el
            elif all(const_matches(c, v) for c, v in zip(consts, key)):
                return value, el
        return None

    def update(self, key, now: float, add_only: bool = False) -> None:
        """`update @set { KEY }` (add, or refresh the timeout) / `add @set { KEY }`."""
        live = key in self.exact and not (key in self.expires and self.expires[key] <= now)
        if live and add_only:
            return
        if key not in self.exact:
            el = Element(tuple(_text(key, self.kinds)))
            self.exact[key] = (None, el)
            self.added[key] = el
        if self.timeout is not None:
            self.expires[key] = now + self.timeout

    def listed_elements(self, now: float) -> list[Element]:
        """The elements `nft list` shows at `now` (dynamic ones with timeout/expires)."""
        if self.decl is None:
            return []
        out = []
        for key, (_v, el) in self.exact.items():
            exp = self.expires.get(key)
            if exp is not None:
                if exp <= now:
                    continue
                left = exp - now
                ms = int(round((left - int(left)) * 1000))
                text = f"timeout {format_time(self.timeout)} expires {format_time(int(left))}"
                if ms:
                    text = text if int(left) else text[:text.rindex(" ") + 1]
                    text += f"{ms}ms"
                el = Element(el.key, el.value, el.comment, text)
            out.append(el)
        return out + [el for _c, _v, el in self.ranges]


def _text(key, kinds) -> list[str]:
    from .expr import describe_value
    if len(kinds) == 1:
        return [describe_value(key, kinds[0])]
    return [describe_value(k, kind) for k, kind in zip(key, kinds)]
