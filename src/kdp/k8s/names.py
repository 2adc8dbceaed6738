# k8s.names: Kubernetes name rules (DNS-1123/DNS-1035 labels and subdomains,
# IANA service names) and the deterministic generated names kdp gives to nodes,
# Deployment pods and UIDs. Pure functions of their inputs; no I/O, no model.
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# The alphabet Kubernetes uses for generated names (rand.SafeEncodeString): no
# vowels, no 0/1/3 so generated names never spell words or look ambiguous.
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_LABEL_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_LABEL_KEY_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def dns1123_label(value: str) -> str | None:
    """None if value is a valid RFC 1123 label, else what is wrong with it."""
    if len(value) > 63:
        return f"{value!r} is longer than 63 characters"
    if not _LABEL_1123.match(value):
        return (f"{value!r} is not a valid RFC 1123 label: lowercase letters, digits and '-', "
                "starting and ending with a letter or digit")
    return None


def dns1123_subdomain(value: str) -> str | None:
    """None if value is a valid RFC 1123 subdomain (dot-separated labels, <= 253 chars)."""
    if len(value) > 253:
        return f"{value!r} is longer than 253 characters"
    if not value or not all(_LABEL_1123.match(part) for part in value.split(".")):
        return (f"{value!r} is not a valid RFC 1123 subdomain: lowercase letters, digits, '-' and "
                "'.', each part starting and ending with a letter or digit")
    return None


def dns1035_label(value: str) -> str | None:
    """None if value is a valid RFC 1035 label (what Service names must be)."""
    if len(value) > 63:
        return f"{value!r} is longer than 63 characters"
    if not _LABEL_1035.match(value):
        return (f"{value!r} is not a valid RFC 1035 label: lowercase letters, digits and '-', "
                "starting with a letter and ending with a letter or digit")
    return None


def iana_svc_name(value: str) -> str | None:
    """None if value is a valid IANA_SVC_NAME (container port names, named targetPorts)."""
    if len(value) > 15:
        return f"{value!r} is longer than 15 characters"
    if not _IANA_SVC.match(value) or "--" in value or not re.search(r"[a-z]", value):
        return (f"{value!r} is not a valid port name: at most 15 lowercase letters, digits and "
                "'-', with at least one letter, no '--', not starting or ending with '-'")
    return None


def label_key(value: str) -> str | None:
    """None if value is a valid label key ([prefix/]name)."""
    prefix, _, name = value.rpartition("/")
    if prefix and dns1123_subdomain(prefix):
        return f"label key {value!r} has an invalid prefix {prefix!r}"
    if len(name) > 63 or not _LABEL_KEY_NAME.match(name):
        return (f"label key {value!r} is invalid: at most 63 letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit")
    return None


def label_value(value: str) -> str | None:
    """None if value is a valid label value (may be empty)."""
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return (f"label value {value!r} is invalid: at most 63 letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit")
    return None


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest(), "big")


def _encode(number: int, length: int) -> str:
    out = []
    for _ in range(length):
        number, digit = divmod(number, len(ALPHABET))
        out.append(ALPHABET[digit])
    return "".join(out)


def canonical(value: Any) -> str:
    """A stable text form of a YAML value (sorted keys), for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def pod_template_hash(template: Any) -> str:
    """10 characters identifying a pod template, like the pod-template-hash label."""
    return _encode(_digest("pod-template", canonical(template)), 10)


def pod_suffix(namespace: str, owner: str, index: int, attempt: int = 0) -> str:
    """The 5-character random-looking suffix of the index-th pod of an owner."""
    return _encode(_digest("pod", namespace, owner, str(index), str(attempt)), 5)


def generated_pod_name(owner: str, template_hash: str, suffix: str) -> str:
    """`<deploy>-<pod-template-hash>-<suffix>`, the base cut to 58 chars as kube does."""
    base = f"{owner}-{template_hash}-"[:58]
    return base + suffix


def node_pool_id(cluster_name: str) -> str:
    """The 8-digit number AKS puts in node pool names, derived from the cluster name."""
    return f"{_digest('nodepool', cluster_name) % 10**8:08d}"


def _base36(number: int, width: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, d = divmod(number, 36)
        out = digits[d] + out
    return out.rjust(width, "0")


def node_name(cluster_name: str, index: int, pool: str = "nodepool1") -> str:
    """`aks-nodepool1-12345678-vmss000000`: the index-th VM scale set instance."""
    return f"aks-{pool}-{node_pool_id(cluster_name)}-vmss{_base36(index, 6)}"


def stable_uid(*parts: str) -> str:
    """A UUID-shaped identifier derived from the parts."""
    h = hashlib.sha256("\x00".join(("uid",) + parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"
