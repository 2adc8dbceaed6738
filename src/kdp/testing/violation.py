# testing.violation: how an invariant says what broke. InvariantViolation (an
# AssertionError) carries the invariant's name, what was expected against what
# was seen, where it happened (node, network namespace, device, and the
# netfilter hook and rule or the stack's step) and the flow with the one-line
# `kdp trace` command that replays it. Also the helpers that find that place
# in an Outcome: a captured frame, the hop that dropped a packet, the rule that
# translated it. Reads outcomes only.
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["InvariantViolation", "Where", "frame_where", "hop_where", "end_where", "nat_where"]

_RULE = re.compile(r"^(\w+/[\w-]+#\d+):")
_REASON_RULE = re.compile(r"rule:([\w]+/[\w-]+#\d+)")


@dataclass(frozen=True)
class Where:
    """A place in the emulated cluster: node (or `edge`, `internet`), network
    namespace, device, and the hook and rule (netfilter) or step (routing,
    bridge, socket) involved; `frame` is the capture's number in
    outcome.frames when a captured frame is the evidence."""

    node: str | None
    namespace: str | None
    device: str | None
    hook: str | None = None
    rule: str | None = None
    frame: int | None = None

    def __str__(self) -> str:
        bits = [f"node {self.node}", f"namespace {self.namespace}", f"device {self.device}"]
        if self.hook:
            bits.append(f"hook {self.hook}")
        if self.rule:
            bits.append(f"rule {self.rule}")
        if self.frame is not None:
            bits.append(f"frame #{self.frame}")
        return ", ".join(bits)


class InvariantViolation(AssertionError):
    """An invariant of the Kubernetes network model (or of the kernel's
    behaviour kdp emulates) does not hold. str() is the report: the
    invariant, expected against seen, `at:` the place (Where), `flow:` and
    `replay:` the `kdp trace` command (for a generated cluster, rendering the
    message writes its YAML to the file the command names). Attributes:
    invariant, detail, where, flow, emu."""

    def __init__(self, invariant: str, detail: str, where: Where | None = None, flow=None,
                 emu=None):
        super().__init__(f"{invariant}: {detail}")
        self.invariant, self.detail, self.where, self.flow, self.emu = invariant, detail, where, flow, emu
        self._text: str | None = None

    @property
    def replay(self) -> str | None:
        """The `kdp trace` command for the flow (None without a flow and emulator)."""
        if self.flow is None or self.emu is None:
            return None
        from .replay import replay_command
        try:
            return replay_command(self.emu, self.flow)
        except OSError as e:                     # the cluster file could not be written
            return replay_command(self.emu, self.flow, write=False) + f"  (not written: {e})"

    def __str__(self) -> str:
        if self._text is None:
            lines = [f"{self.invariant}: {self.detail}"]
            if self.where is not None:
                lines.append(f"  at: {self.where}")
            if self.flow is not None:
                lines.append(f"  flow: {tuple(self.flow)}")
            cmd = self.replay
            if cmd is not None:
                lines.append(f"  replay: {cmd}")
            self._text = "\n".join(lines)
        return self._text


# --- finding the place ---------------------------------------------------------------

def _node_of(ns) -> str:
    return getattr(ns, "node", None) or ns.name


def frame_where(seen) -> Where:
    """The place of a captured frame (a Seen: index, dev, direction, pkt). A
    capture on the way out is taken after POSTROUTING, on the way in before
    PREROUTING, as tcpdump sees them."""
    ns = seen.dev.namespace
    hook = "after POSTROUTING (captured out)" if seen.direction == "out" else \
        "before PREROUTING (captured in)"
    return Where(_node_of(ns), ns.name, seen.dev.name, hook, frame=seen.index)


def hop_where(h) -> Where:
    """The place of a trace hop: netfilter and conntrack hops name their hook
    and rule (a drop hop: the hook that dropped, the rule from its reason),
    other hops their component and action (`route forward`, `bridge drop`)."""
    m = _RULE.match(h.detail) or _REASON_RULE.search(h.detail)
    rule = m.group(1) if m else None
    if h.component in ("netfilter", "conntrack"):
        hook = h.action
        if h.action == "drop" and ":" in h.detail:          # "INPUT: dropped [rule:...]"
            hook = h.detail.split(":", 1)[0]
    else:
        hook = f"{h.component} {h.action}"
    return Where(h.node, h.namespace, h.device, hook, rule)


def end_where(outcome, leg: str = "request") -> Where | None:
    """Where a leg (request or reply) ended: its last drop or reject hop (with
    the rule that decided, from the reason), else its last hop."""
    hops = [h for h in outcome.hops if h.leg == leg]
    if not hops:
        return None
    ends = [h for h in hops if h.action == "drop"]
    h = ends[-1] if ends else hops[-1]
    w = hop_where(h)
    reason = getattr(outcome.reply if leg == "reply" and outcome.reply is not None else outcome,
                     "reason", None) or ""
    m = _REASON_RULE.search(reason)
    if m and w.rule is None:
        w = Where(w.node, w.namespace, w.device, w.hook, m.group(1), w.frame)
    return w


def nat_where(outcome, leg: str = "request", kinds=("DNAT", "SNAT", "MASQUERADE"),
              namespace: str | None = None) -> Where | None:
    """The first netfilter rule of a leg that matched with a NAT target of
    `kinds` (in `namespace`, when given)."""
    for h in outcome.hops:
        if h.leg != leg or h.component != "netfilter" or (namespace and h.namespace != namespace):
            continue
        if "=> match" in h.detail and any(f"-j {k}" in h.detail for k in kinds):
            return hop_where(h)
    return None
