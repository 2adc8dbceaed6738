# dns.wire: the DNS message codec (RFC 1035 with RFC 6891 EDNS0): header,
# question, resource records, name compression on output and decompression with
# loop protection on input, and dig-like text. Names are presentation-format
# strings, absolute with a trailing dot ("a.b.svc.cluster.local."), with dig's
# escapes (\. and \DDD) so any label bytes survive a round trip; their parsing
# is kdp.dnsname's (fqdn, canonical, name_labels are reached through here too).
# Malformed input raises DnsFormatError and nothing else.
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address, ip_address

from ..dnsname import MAX_NAME, DnsFormatError, fqdn, labels_to_name, name_labels
from ..dnsname import canonical  # noqa: F401  (reached as wire.canonical)

# --- numbers --------------------------------------------------------------------------

A, NS, CNAME, SOA_T, PTR, MX_T, TXT, AAAA, SRV_T = 1, 2, 5, 6, 12, 15, 16, 28, 33
OPT, AXFR, ANY = 41, 252, 255
TYPES = {"A": A, "NS": NS, "CNAME": CNAME, "SOA": SOA_T, "PTR": PTR, "MX": MX_T, "TXT": TXT,
         "AAAA": AAAA, "SRV": SRV_T, "OPT": OPT, "AXFR": AXFR, "ANY": ANY}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
CLASS_IN, CLASS_CH, CLASS_ANY = 1, 3, 255
CLASS_NAMES = {CLASS_IN: "IN", CLASS_CH: "CH", 4: "HS", CLASS_ANY: "ANY"}

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
RCODE_NAMES = {NOERROR: "NOERROR", FORMERR: "FORMERR", SERVFAIL: "SERVFAIL", NXDOMAIN: "NXDOMAIN",
               NOTIMP: "NOTIMP", REFUSED: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET",
               9: "NOTAUTH", 10: "NOTZONE", BADVERS: "BADVERS"}
OP_QUERY, OP_IQUERY, OP_STATUS, OP_NOTIFY, OP_UPDATE = 0, 1, 2, 4, 5
OPCODE_NAMES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE"}

HEADER_LEN = 12
MAX_POINTERS = 128
MIN_UDP = 512             # RFC 1035 UDP limit without EDNS
MAX_MSG = 65535


def type_code(text: str | int) -> int:
    if isinstance(text, int):
        return text
    t = text.upper()
    if t in TYPES:
        return TYPES[t]
    if t.startswith("TYPE") and t[4:].isdigit() and int(t[4:]) < 65536:
        return int(t[4:])
    raise DnsFormatError(f"unknown record type {text!r}")


def type_name(code: int) -> str:
    return TYPE_NAMES.get(code, f"TYPE{code}")


def rcode_name(code: int) -> str:
    return RCODE_NAMES.get(code, f"RCODE{code}")


# --- record data ----------------------------------------------------------------------

@dataclass(frozen=True)
class SOA:
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


@dataclass(frozen=True)
class SRV:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class MX:
    preference: int
    exchange: str


@dataclass(frozen=True)
class Question:
    name: str
    qtype: int
    qclass: int = CLASS_IN


@dataclass(frozen=True)
class RR:
    """One resource record. data: IPv4Address (A), IPv6Address (AAAA), a name
    (NS, CNAME, PTR), SOA, SRV, MX, a tuple of byte strings (TXT), raw bytes (others)."""

    name: str
    rtype: int
    ttl: int
    data: object
    rclass: int = CLASS_IN


@dataclass(frozen=True)
class Edns:
    """The OPT pseudo-record (RFC 6891)."""

    udp_size: int = 1232
    ext_rcode: int = 0           # upper 8 bits of the rcode
    version: int = 0
    do: bool = False
    z: int = 0                   # the 15 other flag bits
    options: tuple = ()          # ((code, bytes), ...)


@dataclass
class Message:
    id: int = 0
    qr: bool = False
    opcode: int = OP_QUERY
    aa: bool = False
    tc: bool = False
    rd: bool = False
    ra: bool = False
    z: bool = False
    ad: bool = False
    cd: bool = False
    rcode: int = NOERROR         # the full 12-bit rcode: the header's 4 bits + OPT's 8
    questions: list[Question] = field(default_factory=list)
    answers: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)    # without the OPT record
    edns: Edns | None = None

    @property
    def question(self) -> Question | None:
        return self.questions[0] if self.questions else None

    def flag_names(self) -> list[str]:
        return [n for n, on in (("qr", self.qr), ("aa", self.aa), ("tc", self.tc), ("rd", self.rd),
                                ("ra", self.ra), ("ad", self.ad), ("cd", self.cd)) if on]

    def to_text(self) -> str:
        return message_text(self)

    def encode(self) -> bytes:
        return encode(self)


# --- encoding -------------------------------------------------------------------------

def _lower(label: bytes) -> bytes:
    return label.lower()            # bytes.lower() only folds ASCII A-Z


class _Writer:
    def __init__(self):
        self.buf = bytearray()
        self.ptrs: dict[tuple[bytes, ...], int] = {}

    def name(self, name: str, compress: bool = True) -> None:
        labels = name_labels(name)
        for i in range(len(labels)):
            key = tuple(_lower(lb) for lb in labels[i:])
            at = self.ptrs.get(key)
            if compress and at is not None:
                self.buf += struct.pack("!H", 0xC000 | at)
                return
            if at is None and len(self.buf) < 0x4000:
                self.ptrs[key] = len(self.buf)
            self.buf.append(len(labels[i]))
            self.buf += labels[i]
        self.buf.append(0)

    def rr(self, rr: RR) -> None:
        self.name(rr.name)
        self.buf += struct.pack("!HHI", rr.rtype, rr.rclass, rr.ttl & 0xFFFFFFFF)
        at = len(self.buf)
        self.buf += b"\0\0"
        self.rdata(rr.rtype, rr.data)
        n = len(self.buf) - at - 2
        if n > 0xFFFF:
            raise DnsFormatError("record data longer than 65535 octets")
        self.buf[at:at + 2] = struct.pack("!H", n)

    def rdata(self, rtype: int, data) -> None:
        if isinstance(data, (bytes, bytearray)) and rtype not in (TXT,):
            self.buf += data
        elif rtype == A:
            self.buf += IPv4Address(data).packed
        elif rtype == AAAA:
            self.buf += IPv6Address(data).packed
        elif rtype in (NS, CNAME, PTR):
            self.name(data)
        elif rtype == SOA_T:
            self.name(data.mname)
            self.name(data.rname)
            self.buf += struct.pack("!IIIII", data.serial & 0xFFFFFFFF, data.refresh, data.retry,
                                    data.expire, data.minimum)
        elif rtype == MX_T:
            self.buf += struct.pack("!H", data.preference)
            self.name(data.exchange)
        elif rtype == SRV_T:                  # RFC 2782: the target is not compressed
            self.buf += struct.pack("!HHH", data.priority, data.weight, data.port)
            self.name(data.target, compress=False)
        elif rtype == TXT:
            chunks = (data,) if isinstance(data, (bytes, str)) else data
            for s in chunks:
                s = s.encode() if isinstance(s, str) else bytes(s)
                if len(s) > 255:
                    raise DnsFormatError("TXT string longer than 255 octets")
                self.buf.append(len(s))
                self.buf += s
        else:
            raise DnsFormatError(f"cannot encode {type_name(rtype)} data {data!r}")

    def opt(self, e: Edns, ext_rcode: int) -> None:
        body = b"".join(struct.pack("!HH", c, len(v)) + bytes(v) for c, v in e.options)
        ttl = (ext_rcode << 24) | (e.version << 16) | (0x8000 if e.do else 0) | (e.z & 0x7FFF)
        self.buf += b"\0" + struct.pack("!HHIH", OPT, e.udp_size, ttl, len(body)) + body


def encode(msg: Message) -> bytes:
    if msg.rcode > 0xF and msg.edns is None:
        raise DnsFormatError(f"rcode {rcode_name(msg.rcode)} needs an OPT record")
    w = _Writer()
    flags = ((msg.qr << 15) | ((msg.opcode & 0xF) << 11) | (msg.aa << 10) | (msg.tc << 9)
             | (msg.rd << 8) | (msg.ra << 7) | (msg.z << 6) | (msg.ad << 5) | (msg.cd << 4)
             | (msg.rcode & 0xF))
    w.buf += struct.pack("!HHHHHH", msg.id & 0xFFFF, flags, len(msg.questions), len(msg.answers),
                         len(msg.authority), len(msg.additional) + (msg.edns is not None))
    for q in msg.questions:
        w.name(q.name)
        w.buf += struct.pack("!HH", q.qtype, q.qclass)
    for rr in msg.answers + msg.authority + msg.additional:
        w.rr(rr)
    if msg.edns is not None:
        w.opt(msg.edns, msg.rcode >> 4)
    return bytes(w.buf)


def truncate(msg: Message, size: int) -> tuple[Message, bytes]:
    """The message cut to fit `size` octets, as miekg/dns's Msg.Truncate does for
    CoreDNS: the question stays, then as many answer, authority and additional
    records as fit, in order; the OPT record is kept; TC is set when any record
    had to be left out."""
    raw = encode(msg)
    if len(raw) <= size:
        return msg, raw
    out = replace(msg, answers=[], authority=[], additional=[], tc=True)
    for section in ("answers", "authority", "additional"):
        for rr in getattr(msg, section):
            trial = replace(out, **{section: getattr(out, section) + [rr]})
            if len(encode(trial)) > size:
                return out, encode(out)
            out = trial
    return out, encode(out)


# --- decoding -------------------------------------------------------------------------

def read_name(data: bytes, pos: int, limit: int | None = None) -> tuple[str, int]:
    """The name at pos and the position after it. Pointers must point strictly
    before the previous jump (so they cannot loop); at most 255 octets."""
    end = len(data) if limit is None else limit
    labels: list[bytes] = []
    total, after, floor, hops = 1, None, pos, 0
    cur = pos
    while True:
        stop = end if after is None else len(data)
        if cur >= stop:
            raise DnsFormatError(f"name at offset {pos} runs past the end")
        n = data[cur]
        kind = n & 0xC0
        if kind == 0xC0:
            if cur + 1 >= stop:
                raise DnsFormatError(f"truncated compression pointer at offset {cur}")
            target = ((n & 0x3F) << 8) | data[cur + 1]
            if target >= floor:
                raise DnsFormatError(f"compression pointer at offset {cur} to {target} does not "
                                     "point backwards (a loop)")
            hops += 1
            if hops > MAX_POINTERS:
                raise DnsFormatError("too many compression pointers")
            if after is None:
                after = cur + 2
            floor = cur = target
            continue
        if kind:
            raise DnsFormatError(f"unsupported label type 0x{kind:02x} at offset {cur}")
        if n == 0:
            return labels_to_name(labels), (cur + 1 if after is None else after)
        if cur + 1 + n > stop:
            raise DnsFormatError(f"label at offset {cur} runs past the end")
        total += n + 1
        if total > MAX_NAME:
            raise DnsFormatError(f"name at offset {pos} is longer than {MAX_NAME} octets")
        labels.append(bytes(data[cur + 1:cur + 1 + n]))
        cur += 1 + n


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(data):
        raise DnsFormatError(f"{what} at offset {pos} runs past the end of the message")


def _rdata(data: bytes, rtype: int, pos: int, rdlen: int):
    end = pos + rdlen
    if rtype == A:
        if rdlen != 4:
            raise DnsFormatError(f"A record data is {rdlen} octets, not 4")
        return IPv4Address(data[pos:end])
    if rtype == AAAA:
        if rdlen != 16:
            raise DnsFormatError(f"AAAA record data is {rdlen} octets, not 16")
        return IPv6Address(data[pos:end])
    if rtype in (NS, CNAME, PTR, SOA_T, MX_T, SRV_T):
        cur, fixed = pos, None
        if rtype == MX_T:
            _need(data, pos, 2, "MX preference")
            fixed, cur = struct.unpack_from("!H", data, pos), pos + 2
        elif rtype == SRV_T:
            if rdlen < 7:
                raise DnsFormatError("SRV record data too short")
            fixed, cur = struct.unpack_from("!HHH", data, pos), pos + 6
        name, cur = read_name(data, cur, end)
        if rtype == SOA_T:
            rname, cur = read_name(data, cur, end)
            if cur + 20 > end:
                raise DnsFormatError("SOA record data too short")
            value = SOA(name, rname, *struct.unpack_from("!IIIII", data, cur))
            cur += 20
        elif rtype == MX_T:
            value = MX(fixed[0], name)
        elif rtype == SRV_T:
            value = SRV(*fixed, name)
        else:
            value = name
        if cur != end:
            raise DnsFormatError(f"{type_name(rtype)} record data has {end - cur} extra octets")
        return value
    if rtype == TXT:
        out, cur = [], pos
        while cur < end:
            n = data[cur]
            if cur + 1 + n > end:
                raise DnsFormatError("TXT string runs past the record data")
            out.append(bytes(data[cur + 1:cur + 1 + n]))
            cur += 1 + n
        return tuple(out)
    return bytes(data[pos:end])


def _opt(rr_name: str, rclass: int, ttl: int, data: bytes, pos: int, rdlen: int) -> Edns:
    if rr_name != ".":
        raise DnsFormatError("OPT record with a name other than the root")
    opts, cur, end = [], pos, pos + rdlen
    while cur < end:
        if cur + 4 > end:
            raise DnsFormatError("truncated EDNS option")
        code, n = struct.unpack_from("!HH", data, cur)
        if cur + 4 + n > end:
            raise DnsFormatError("EDNS option runs past the OPT record")
        opts.append((code, bytes(data[cur + 4:cur + 4 + n])))
        cur += 4 + n
    return Edns(rclass, ttl >> 24, (ttl >> 16) & 0xFF, bool(ttl & 0x8000), ttl & 0x7FFF, tuple(opts))


@dataclass(frozen=True)
class Header:
    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    @property
    def qr(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def decode_header(data: bytes) -> Header:
    if len(data) < HEADER_LEN:
        raise DnsFormatError(f"{len(data)} octets is shorter than a DNS header ({HEADER_LEN})")
    return Header(*struct.unpack_from("!HHHHHH", data, 0))


def decode(data: bytes) -> Message:
    """Parse a whole DNS message. Raises DnsFormatError, and only that, on malformed input."""
    try:
        return _decode(bytes(data))
    except DnsFormatError:
        raise
    except (ValueError, IndexError, struct.error) as e:     # defence in depth
        raise DnsFormatError(f"malformed message: {e}") from None


def _decode(data: bytes) -> Message:
    h = decode_header(data)
    f = h.flags
    msg = Message(h.id, bool(f & 0x8000), (f >> 11) & 0xF, bool(f & 0x400), bool(f & 0x200),
                  bool(f & 0x100), bool(f & 0x80), bool(f & 0x40), bool(f & 0x20), bool(f & 0x10),
                  f & 0xF)
    pos = HEADER_LEN
    for _ in range(h.qdcount):
        name, pos = read_name(data, pos)
        _need(data, pos, 4, "question")
        qtype, qclass = struct.unpack_from("!HH", data, pos)
        pos += 4
        msg.questions.append(Question(name, qtype, qclass))
    sections = (msg.answers, msg.authority, msg.additional)
    for section, count in zip(sections, (h.ancount, h.nscount, h.arcount)):
        for _ in range(count):
            name, pos = read_name(data, pos)
            _need(data, pos, 10, "record header")
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
            pos += 10
            _need(data, pos, rdlen, "record data")
            if rtype == OPT:
                if section is not msg.additional:
                    raise DnsFormatError("OPT record outside the additional section")
                if msg.edns is not None:
                    raise DnsFormatError("more than one OPT record")
                msg.edns = _opt(name, rclass, ttl, data, pos, rdlen)
                msg.rcode |= msg.edns.ext_rcode << 4
            else:
                section.append(RR(name, rtype, ttl, _rdata(data, rtype, pos, rdlen), rclass))
            pos += rdlen
    if pos != len(data):
        raise DnsFormatError(f"{len(data) - pos} octets of trailing garbage after the message")
    return msg


# --- text, as dig prints it -----------------------------------------------------------

def _txt_string(s: bytes) -> str:
    out = []
    for b in s:
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'


def rdata_text(rtype: int, data) -> str:
    if rtype == TXT:
        return " ".join(_txt_string(s) for s in data)
    if isinstance(data, SOA):
        return (f"{data.mname} {data.rname} {data.serial} {data.refresh} {data.retry} "
                f"{data.expire} {data.minimum}")
    if isinstance(data, SRV):
        return f"{data.priority} {data.weight} {data.port} {data.target}"
    if isinstance(data, MX):
        return f"{data.preference} {data.exchange}"
    if isinstance(data, (bytes, bytearray)):
        return f"\\# {len(data)} {bytes(data).hex()}".rstrip()
    return str(data)


def rr_text(rr: RR) -> str:
    cls = CLASS_NAMES.get(rr.rclass, f"CLASS{rr.rclass}")
    return f"{rr.name}\t{rr.ttl}\t{cls}\t{type_name(rr.rtype)}\t{rdata_text(rr.rtype, rr.data)}"


def rr_dict(rr: RR) -> dict:
    return {"name": rr.name, "type": type_name(rr.rtype), "class": CLASS_NAMES.get(rr.rclass, rr.rclass),
            "ttl": rr.ttl, "data": rdata_text(rr.rtype, rr.data)}


def message_dict(m: Message) -> dict:
    return {"id": m.id, "opcode": OPCODE_NAMES.get(m.opcode, str(m.opcode)), "rcode": rcode_name(m.rcode),
            "flags": m.flag_names(),
            "question": [{"name": q.name, "type": type_name(q.qtype),
                          "class": CLASS_NAMES.get(q.qclass, q.qclass)} for q in m.questions],
            "answer": [rr_dict(r) for r in m.answers], "authority": [rr_dict(r) for r in m.authority],
            "additional": [rr_dict(r) for r in m.additional],
            "edns": None if m.edns is None else {"version": m.edns.version, "udp": m.edns.udp_size,
                                                  "do": m.edns.do}}


def message_text(m: Message) -> str:
    lines = [f";; ->>HEADER<<- opcode: {OPCODE_NAMES.get(m.opcode, m.opcode)}, "
             f"status: {rcode_name(m.rcode)}, id: {m.id}",
             f";; flags: {' '.join(m.flag_names())}; QUERY: {len(m.questions)}, ANSWER: {len(m.answers)}, "
             f"AUTHORITY: {len(m.authority)}, ADDITIONAL: {len(m.additional) + (m.edns is not None)}"]
    if m.rd and m.qr and not m.ra:
        lines.append(";; WARNING: recursion requested but not available")
    if m.edns is not None:
        lines += ["", ";; OPT PSEUDOSECTION:",
                  f"; EDNS: version: {m.edns.version}, flags:{' do' if m.edns.do else ''}; "
                  f"udp: {m.edns.udp_size}"]
    lines += ["", ";; QUESTION SECTION:"]
    lines += [f";{q.name}\t\t{CLASS_NAMES.get(q.qclass, q.qclass)}\t{type_name(q.qtype)}"
              for q in m.questions]
    for title, rrs in (("ANSWER", m.answers), ("AUTHORITY", m.authority), ("ADDITIONAL", m.additional)):
        if rrs:
            lines += ["", f";; {title} SECTION:"] + [rr_text(r) for r in rrs]
    return "\n".join(lines)


def query(name: str, qtype: int | str = A, ident: int = 0, rd: bool = True,
          edns: Edns | None = None) -> Message:
    """A stub resolver's query for name."""
    return Message(ident, rd=rd, questions=[Question(fqdn(name), type_code(qtype))], edns=edns)


def is_ip_literal(text: str) -> bool:
    """Whether text is an IPv4/IPv6 address rather than a name."""
    try:
        ip_address(text)
    except ValueError:
        return False
    return True
