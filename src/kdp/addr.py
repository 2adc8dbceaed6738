# addr: address value helpers (IPv4 via the standard ipaddress module, MACs as
# lower-case "aa:bb:cc:dd:ee:ff" strings) and deterministic names/MACs derived
# from object identities. No packets, no Scapy.
from __future__ import annotations

import hashlib
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from socket import inet_ntoa

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"

__all__ = [
    "IPv4Address", "IPv4Interface", "IPv4Network", "BROADCAST_MAC", "ZERO_MAC",
    "mac_to_bytes", "mac_from_bytes", "stable_mac", "stable_hex", "is_multicast_mac", "ip_text",
]


def ip_text(ip: IPv4Address) -> str:
    """str(ip), dotted quad, formatted in C (every output line prints two)."""
    return inet_ntoa(ip._ip.to_bytes(4, "big"))


def mac_to_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_from_bytes(raw: bytes) -> str:
    return bytes(raw).hex(":")


def is_multicast_mac(mac: str) -> bool:
    """The group bit (the low bit of the first octet, i.e. of its second hex digit)."""
    return mac[1] in "13579bdfBDF"


def stable_hex(*parts: str, length: int = 8) -> str:
    """A short hex digest of the parts: the same input always gives the same name."""
    h = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return h[:length]


def stable_mac(*parts: str, oui: str | None = None) -> str:
    """A locally administered unicast MAC derived from the parts.

    With `oui` (e.g. "02:42") the first octets are fixed, like Docker's 02:42:...;
    otherwise the first octet has the local bit set and multicast bit clear, as the
    kernel's eth_random_addr() does.
    """
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    if oui:
        head = mac_to_bytes(oui)
        raw = head + digest[: 6 - len(head)]
    else:
        raw = bytes([(digest[0] & 0xFE) | 0x02]) + digest[1:6]
    return mac_from_bytes(raw)
