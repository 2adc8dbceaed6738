# errors: the exception tree and the named reasons a packet is dropped.
# Owns only names and messages; no packet logic, no I/O.
from __future__ import annotations

from dataclasses import dataclass


class KdpError(Exception):
    """Base of every error kdp raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the cluster input, located as precisely as we can."""

    file: str
    line: int | None
    kind: str
    namespace: str | None
    name: str | None
    field: str
    message: str
    column: int | None = None       # for YAML syntax errors: where on the line

    def __str__(self) -> str:
        """FILE[:LINE[:COLUMN]]: [KIND [NAMESPACE/]NAME: ][field.path: ]what is wrong --
        the parts that are not known are left out, never printed as placeholders."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        parts = [where]
        if self.kind or self.name:
            obj = (f"{self.namespace}/" if self.namespace else "") + (self.name or "(no name)")
            parts.append(f"{self.kind} {obj}" if self.kind else obj)
        if self.field:
            parts.append(self.field)
        return ": ".join(parts + [self.message])


class ClusterInputError(KdpError):
    """The cluster input is invalid; carries every problem found (exit status 2)."""

    def __init__(self, problems: list[Problem], warnings: list[str] = ()):
        self.problems = list(problems)
        self.warnings = list(warnings)      # found on the way; they often explain a problem
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(KdpError):
    """A command-line argument names something that does not exist or makes no sense."""


# Drop reasons. A dropped frame always carries one of these (or a reference to
# where netfilter dropped it: "rule:filter/KUBE-SERVICES#3", "policy:filter/FORWARD",
# "hook:INPUT", or the note a NAT target left). Code names them from here, never
# as string literals.
NO_ROUTE = "no-route"
TTL_EXCEEDED = "ttl-exceeded"
INVALID_CHECKSUM = "invalid-checksum"
MALFORMED = "malformed-frame"
NOT_FOR_US = "not-for-this-host"          # unicast MAC of another host on a shared segment
NEIGH_FAILED = "neighbour-unreachable"    # ARP got no answer
NO_LISTENER = "port-closed"               # answered with RST / ICMP port unreachable
UNSUPPORTED_PROTO = "unsupported-protocol"
MARTIAN = "martian-source"
BRIDGE_NO_PORT = "bridge-no-port"
CONNTRACK_FULL = "conntrack-table-full"
HOP_LIMIT = "emulator-hop-limit"          # a loop: the frame was handed on too many times
LINK_DOWN = "no-carrier"
FRAGMENT = "fragment-not-supported"
LOST = "lost"                             # the leg never ended anywhere (no drop, no delivery recorded)
NO_SUCH_HOST = "no-such-host"             # the underlay has no host with the destination MAC
BRIDGE_NO_HAIRPIN = "bridge-no-hairpin"   # the FDB points back out of the ingress port
FORWARDING_OFF = "forwarding-disabled"    # not local and net.ipv4.ip_forward=0
LINK_BROADCAST = "link-broadcast-not-forwarded"   # ip_forward() takes PACKET_HOST frames only
NEIGH_QUEUE_FULL = "neighbour-queue-full"  # the unresolved neighbour's queue is full
ARP_NOT_LOCAL = "arp-target-not-local"    # an ARP request for an address that is not ours
NAT_ICMP_TRANSLATION = "nat-icmp-translation"  # an ICMP error's quoted packet cannot be un-NATed
CONNTRACK_CLASH = "conntrack-clash"       # confirm found the tuple taken meanwhile
JUMP_DEPTH = "netfilter-jump-depth"       # more nested chain jumps than the kernel allows
LB_NO_RULE = "lb-no-rule"                 # the cloud load balancer has no rule for the frame
LB_NO_BACKEND = "lb-no-healthy-backend"   # ... a rule, but no node passes its health probe
