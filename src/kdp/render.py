# render: turns outcomes and hops into what people and scripts read: the
# JSON packet summary of the CLI contract and the human trace text.
from __future__ import annotations

import re

from .addr import ip_text
from .wire import ICMP, SCTP, Packet, TCP, UDP


def packet_fields(pkt: Packet) -> dict:
    sport, dport = pkt.ports
    d = {"src": None, "dst": None, "proto": pkt.proto_name, "sport": sport, "dport": dport,
         "ttl": None, "src_mac": pkt.eth.src, "dst_mac": pkt.eth.dst}
    if pkt.ip is not None:
        d.update(src=ip_text(pkt.ip.src), dst=ip_text(pkt.ip.dst), ttl=pkt.ip.ttl)
    elif pkt.arp is not None:
        d.update(src=str(pkt.arp.spa), dst=str(pkt.arp.tpa))
    if isinstance(pkt.l4, TCP):
        from .wire import tcp_flag_str
        d["flags"] = tcp_flag_str(pkt.l4.flags)
    if isinstance(pkt.l4, ICMP):
        d["icmp_type"], d["icmp_code"] = pkt.l4.type, pkt.l4.code
    if isinstance(pkt.l4, UDP):
        d["length"] = len(pkt.l4.payload)
    if isinstance(pkt.l4, SCTP):
        from .wire import sctp_chunk_str
        d["chunks"], d["vtag"] = sctp_chunk_str(pkt.l4), pkt.l4.vtag
    return d


DETAILS = ("summary", "full", "minimal")
DEFAULT_DETAIL = "summary"
LEG_MARK = {"request": "->", "reply": "<-", "arp": "  "}

# the conntrack bookkeeping a summary leaves out (the rewrites and the trouble stay)
_CT_ROUTINE = ("conntrack new ", "conntrack confirm ", "conntrack tcp ", "conntrack sctp ",
               "conntrack udp stream",
               "conntrack established ", "conntrack related ", "nat bind ")
# an iptables table (`nat`) or an nftables one with its family (`ip kube-proxy`)
_NF_HOP = re.compile(r"(?P<table>(?:ip|ip6|inet|arp|bridge|netdev) [\w.-]+|[a-z]+)/(?P<chain>[^\s:#]+)"
                     r"(?:#\d+)?: (?P<rest>.*)\Z", re.S)


def trace_text(outcome, detail: str = DEFAULT_DETAIL) -> str:
    """The human trace: one aligned line per hop, then where each leg ended.
    detail "full": every hop (every ARP exchange, every rule walked and
    conntrack's bookkeeping); "summary": the hops the packet took and the rules
    that decided its fate (ARP, rules that did not match and jumps into chains
    that changed nothing are left out, as `ovn-trace --summary` does);
    "minimal": only the result lines."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, not {detail!r}")
    hops = []
    if detail == "full":
        hops = list(outcome.hops)
    elif detail == "summary":
        hops = summary_hops(outcome.hops)
    short = _short_rule if detail == "summary" else (lambda text: text)
    rows = [(LEG_MARK.get(h.leg, "  "), h.namespace + (f":{h.device}" if h.device else ""),
             h.component, h.action, short(h.detail) if h.component == "netfilter" else h.detail)
            for h in hops]
    lines = []
    if rows:
        w = [max(len(r[i]) for r in rows) for i in range(1, 4)]
        lines = [f"{mark} {where:<{w[0]}}  {comp:<{w[1]}}  {action:<{w[2]}}  {text}".rstrip()
                 for mark, where, comp, action, text in rows]
    lines.append(_result_line("request", outcome))
    if outcome.reply is not None:
        lines.append(_result_line("reply", outcome.reply))
    return "\n".join(lines)


def summary_hops(hops) -> list:
    """The hops a summary shows (see trace_text)."""
    hops = list(hops)
    keep_nf = _deciding_rules(hops)
    out = []
    for i, h in enumerate(hops):
        if h.action == "drop":
            out.append(h)
        elif h.leg == "arp" or h.component == "arp":
            continue
        elif h.component == "netfilter":
            if i in keep_nf:
                out.append(h)
        elif h.component == "conntrack":
            text = h.detail.split("] ", 1)[-1]
            if not text.startswith(_CT_ROUTINE):
                out.append(h)
        else:
            out.append(h)
    return out


_COMMENT = re.compile(r'-m comment --comment ("(?:[^"\\]|\\.)*"|\S+) ?')
_JUMP = re.compile(r" -[jg] \S+.*\Z", re.S)


def _short_rule(text: str) -> str:
    """A matched rule as a summary shows it: where it is, its comment (else its
    matches) and what it did -- `nat/KUBE-SERVICES#1 "backend/service-a:http
    cluster IP" -> KUBE-SVC-...`. Other netfilter hops are left as they are."""
    m = _NF_HOP.match(text)
    if m is None or " => match -> " not in m["rest"]:
        return text
    rule, target = m["rest"].rsplit(" => match -> ", 1)
    where = text[:m.start("rest") - 2]
    comment = _COMMENT.search(rule)
    if comment:
        return f"{where} {comment[1]} -> {target}"
    matches = _JUMP.sub("", rule.split(" ", 2)[2] if rule.startswith("-A ") and rule.count(" ") >= 2 else "")
    return f"{where} [{matches.strip()}] -> {target}" if matches.strip() else f"{where} -> {target}"


def _deciding_rules(hops) -> set[int]:
    """Indices of the netfilter hops that decided something: a rule that matched
    with a target other than a jump or RETURN (DNAT, MASQUERADE, MARK, ACCEPT,
    DROP, ...), a chain policy other than ACCEPT, anything that is not a rule
    walk (LOG lines, REJECT's answer) -- and every jump that led to one of them,
    so the chain of rules stays readable. A jump is told from a target by the
    hop after it: a jump's next hop is in the chain it named."""
    keep: set[int] = set()
    stack: list[tuple[int, str]] = []          # (jump hop index, chain it entered)
    walk = None                                # (namespace, hook, table) of the open walk
    pending: tuple[int, str] | None = None     # a match whose target is not yet known

    def settle(next_chain: str | None) -> None:
        nonlocal pending
        if pending is None:
            return
        i, target = pending
        pending = None
        if next_chain is not None and next_chain == target:
            stack.append((i, target))          # a jump: kept if something inside decides
        elif target != "RETURN":
            keep.add(i)
            keep.update(j for j, _ in stack)

    for i, h in enumerate(hops):
        if h.component != "netfilter":
            continue
        m = _NF_HOP.match(h.detail)
        if m is None:                          # LOG lines, REJECT's answer, drops
            settle(None)
            keep.add(i)
            keep.update(j for j, _ in stack)
            continue
        key = (h.namespace, h.action, m["table"])
        if key != walk:
            settle(None)
            walk, stack = key, []
        settle(m["chain"])
        while stack and stack[-1][1] != m["chain"] and m["chain"] in {c for _, c in stack}:
            stack.pop()                        # back in an outer chain
        rest = m["rest"]
        if rest == "return":
            if stack and stack[-1][1] == m["chain"]:
                stack.pop()
        elif " => policy " in rest or rest.startswith("policy "):
            if not rest.lower().endswith("policy accept"):
                keep.add(i)
            stack = []
        elif " => match -> " in rest:
            target = rest.rsplit(" => match -> ", 1)[1].split(" ", 2)
            # nftables: "jump CHAIN", "goto CHAIN", "return", "accept", "drop"
            target = target[1] if target[0] in ("jump", "goto") and len(target) > 1 else \
                "RETURN" if target[0] == "return" else target[0]
            if target == "RETURN":
                if stack and stack[-1][1] == m["chain"]:
                    stack.pop()
            else:
                pending = (i, target)
    settle(None)
    return keep


def _result_line(what: str, o) -> str:
    where = f" to {o.delivered_to}" if o.delivered_to else ""
    why = f" ({o.reason})" if o.reason else ""
    pkt = f": {o.packet.summary()}" if o.packet is not None else ""
    return f"{what}: {o.disposition.upper()}{where}{why}{pkt}"


# --- kdp run's outcome summary (kdp.outcomes' "outcomes" object) ---------------------

def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def outcome_lines(o: dict) -> list[str]:
    """The outcome summary as plain lines (a pipe)."""
    f, r = o["flows"], o["resets"]
    lines = [f"drop reasons: {_counts(o['drop_reasons'])}",
             f"resets sent by kdp: {r['total']}" + (f" ({_counts(r['by'])})" if r["by"] else ""),
             f"flows: {f['total']} ({f['opened']} opened, {f['completed']} completed, {f['reset']} reset)"]
    for name, s in o["services"].items():
        lines.append(f"service {name}: {s['new_flows']} new flows -> {_counts(s['endpoints'])}")
    return lines


def outcome_tables(o: dict) -> None:
    """The outcome summary as rich tables on stdout (a terminal)."""
    from rich.console import Console
    from rich.table import Table
    con = Console()
    t = Table(title="outcomes", show_header=True)
    t.add_column("what")
    t.add_column("count", justify="right")
    for k, v in o["dispositions"].items():
        t.add_row(k, f"{v:,}")
    for k, v in o["drop_reasons"].items():
        t.add_row(f"  {k}", f"{v:,}")
    t.add_row("resets sent by kdp", f"{o['resets']['total']:,}")
    for k, v in o["resets"]["by"].items():
        t.add_row(f"  by {k}", f"{v:,}")
    for k in ("total", "opened", "completed", "reset"):
        t.add_row(f"flows {k}", f"{o['flows'][k]:,}")
    con.print(t)
    if o["services"]:
        s = Table(title="new flows per service", show_header=True)
        s.add_column("service")
        s.add_column("new flows", justify="right")
        s.add_column("endpoints (new flows)")
        for name, v in o["services"].items():
            s.add_row(name, f"{v['new_flows']:,}", "\n".join(f"{k} {n}" for k, n in v["endpoints"].items()))
        con.print(s)
