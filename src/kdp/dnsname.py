# dnsname: DNS names in presentation format ("a.b.svc.cluster.local.", dig's
# escapes \. and \DDD so any label bytes survive a round trip): to and from
# labels with RFC 1035's limits, absolute and canonical (lowercase) text, and
# DnsFormatError, the one error of DNS names and messages. Below both dns (the
# message codec, which takes it all from here) and k8s (ClusterConfig's upstream
# records are checked with it).
from __future__ import annotations

from functools import lru_cache

from .errors import KdpError

MAX_NAME = 255            # octets on the wire, including length bytes and the root
MAX_LABEL = 63


class DnsFormatError(KdpError):
    """Bytes (or a name) that are not a well-formed DNS message (FORMERR)."""


_SPECIAL = set(b'.\\"();@$')


# label_text() and name_labels() are pure and asked again for the same few names
# (every query and answer of a zone's names): their results are kept
@lru_cache(maxsize=8192)
def label_text(label: bytes) -> str:
    out = []
    for b in label:
        if b in _SPECIAL:
            out.append("\\" + chr(b))
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def labels_to_name(labels) -> str:
    return "".join(label_text(lb) + "." for lb in labels) or "."


@lru_cache(maxsize=8192)
def name_labels(name: str) -> tuple[bytes, ...]:
    """The labels of a presentation-format name (relative names are taken as
    absolute). Raises DnsFormatError for empty labels, labels over 63 octets or
    names over 255."""
    if name in (".", ""):
        return ()
    labels, cur, i = [], bytearray(), 0
    while i < len(name):
        c = name[i]
        if c == "\\":
            digits = name[i + 1:i + 4]
            if len(digits) == 3 and all(d in "0123456789" for d in digits):
                v = int(digits)
                if v > 255:
                    raise DnsFormatError(f"bad escape in name {name!r}")
                cur.append(v)
                i += 4
                continue
            if i + 1 >= len(name):
                raise DnsFormatError(f"name {name!r} ends with a backslash")
            cur += name[i + 1].encode("utf-8")
            i += 2
            continue
        if c == ".":
            if not cur:
                raise DnsFormatError(f"empty label in name {name!r}")
            labels.append(bytes(cur))
            cur = bytearray()
        else:
            cur += c.encode("utf-8")
        i += 1
    if cur:
        labels.append(bytes(cur))
    for lb in labels:
        if len(lb) > MAX_LABEL:
            raise DnsFormatError(f"label {label_text(lb)!r} is longer than {MAX_LABEL} octets")
    if sum(len(lb) + 1 for lb in labels) + 1 > MAX_NAME:
        raise DnsFormatError(f"name {name!r} is longer than {MAX_NAME} octets")
    return tuple(labels)


def fqdn(name: str) -> str:
    """The name in canonical text form, absolute (trailing dot), case kept."""
    return labels_to_name(name_labels(name))


def canonical(name: str) -> str:
    """The name for comparisons: absolute and ASCII-lowercased (RFC 4343)."""
    return labels_to_name(tuple(lb.lower() for lb in name_labels(name)))
