# netfilter.sctpmatch: the `sctp` match extension (xt_sctp.c, libxt_sctp.c):
# --sport/--dport ranges and --chunk-types {any|all|only} CHUNK[:FLAGS],...,
# each invertible; option parsing, the kernel's chunk walk and iptables-save's
# printing. A packet whose chunk walk meets a zero-length or cut chunk does not
# match (the kernel also hot-drops it; kdp's SCTP conntrack calls it INVALID).
from __future__ import annotations

from kdp.wire import SCTP, SCTP_CHUNK_NAMES, sctp_chunks

from .ext import RuleSpec, need_proto, register_match
from .matches import _Ports
from .syntax import SyntaxProblem

# libxt_sctp's flag letters per chunk type, most significant bit first ("-" = none)
_VALID_FLAGS = {0: "----IUBE", 6: "-------T", 14: "-------T", 64: "----IUBE"}
_BY_NAME = {name: typ for typ, name in SCTP_CHUNK_NAMES.items()}
MATCH_TYPES = ("any", "all", "only")


def _parse_chunk(text: str) -> tuple[int, int, int]:
    """CHUNK[:FLAGS] -> (type, flag value, flag mask): an upper-case letter wants the
    flag set, a lower-case one wants it clear."""
    name, _, flags = text.partition(":")
    typ = _BY_NAME.get(name.upper())
    if typ is None:
        raise SyntaxProblem(f"unknown SCTP chunk type '{name}'")
    value = mask = 0
    valid = _VALID_FLAGS.get(typ, "--------")
    for ch in flags:
        pos = valid.find(ch.upper())
        if pos < 0 or ch == "-":
            raise SyntaxProblem(f"invalid flag '{ch}' for SCTP chunk {name.upper()}")
        bit = 1 << (7 - pos)
        mask |= bit
        if ch.isupper():
            value |= bit
    return typ, value, mask


@register_match
class SctpMatch(_Ports):
    name = "sctp"
    PROTO = 132
    OPTIONS = _Ports.OPTIONS | {"--chunk-types": "chunks"}
    NARGS = {"chunks": 2}
    INVERTIBLE = frozenset({"sport", "dport", "chunks"})

    def __init__(self) -> None:
        super().__init__()
        self.match_type: str | None = None
        self.chunkmap: frozenset[int] = frozenset()
        self.flag_info: dict[int, tuple[int, int]] = {}     # type -> (value, mask)
        self.chunks_inv = False

    def set(self, key, args, invert, spec):
        if key != "chunks":
            return super().set(key, args, invert, spec)
        kind = args[0].lower()
        if kind not in MATCH_TYPES:
            raise SyntaxProblem(f"--chunk-types: match type must be any, all or only, not "
                                f"'{args[0]}'")
        types, info = set(), {}
        for part in args[1].split(","):
            if part.upper() == "ALL":
                types.update(SCTP_CHUNK_NAMES)
            elif part.upper() != "NONE":
                typ, value, mask = _parse_chunk(part)
                types.add(typ)
                if mask:
                    if kind == "any":
                        raise SyntaxProblem("--chunk-types: flags are not allowed with 'any'")
                    info[typ] = (value, mask)
        self.match_type, self.chunkmap, self.flag_info = kind, frozenset(types), info
        self.chunks_inv = invert

    def finish(self, spec: RuleSpec) -> None:
        need_proto(spec, "sctp match", (self.PROTO,))

    def save(self) -> str:
        out = super().save()
        if self.match_type is not None:
            out += (" !" if self.chunks_inv else "") + f" --chunk-types {self.match_type} "
            if not self.chunkmap:
                out += "NONE"
            elif self.chunkmap >= set(SCTP_CHUNK_NAMES):
                out += "ALL"
            else:
                parts = []
                for typ in sorted(self.chunkmap):
                    text = SCTP_CHUNK_NAMES[typ]
                    if typ in self.flag_info:
                        value, mask = self.flag_info[typ]
                        valid = _VALID_FLAGS.get(typ, "--------")
                        text += ":" + "".join(
                            valid[7 - i] if value & (1 << i) else valid[7 - i].lower()
                            for i in range(7, -1, -1) if mask & (1 << i))
                    parts.append(text)
                out += ",".join(parts)
        return out

    def _flags_ok(self, typ: int, flags: int) -> bool:
        info = self.flag_info.get(typ)
        return info is None or flags & info[1] == info[0]

    def _chunks_ok(self, l4: SCTP) -> bool:
        """match_packet(): the chunk walk for any / all / only."""
        chunks = sctp_chunks(l4)
        if not chunks or any(c.length == 0 for c in chunks):
            return False
        left = set(self.chunkmap)
        for c in chunks:
            if c.type in self.chunkmap:
                ok = self._flags_ok(c.type, c.flags)
                if self.match_type == "any" and ok:
                    return True
                if self.match_type == "all" and ok:
                    left.discard(c.type)
                if self.match_type == "only" and not ok:
                    return False
            elif self.match_type == "only":
                return False
        return not left if self.match_type == "all" else self.match_type == "only"

    def matches(self, pc) -> bool:
        l4 = pc.l4
        if not isinstance(l4, SCTP) or not self._ports_ok(l4):
            return False
        if self.match_type is not None:
            return self._chunks_ok(l4) != self.chunks_inv
        return True
