# render: turns outcomes and hops into what people and scripts read: the
# JSON packet summary of the CLI contract and the human trace text.
from __future__ import annotations

from .wire import ICMP, Packet, TCP, UDP


def packet_fields(pkt: Packet) -> dict:
    sport, dport = pkt.ports
    d = {"src": None, "dst": None, "proto": pkt.proto_name, "sport": sport, "dport": dport,
         "ttl": None, "src_mac": pkt.eth.src, "dst_mac": pkt.eth.dst}
    if pkt.ip is not None:
        d.update(src=str(pkt.ip.src), dst=str(pkt.ip.dst), ttl=pkt.ip.ttl)
    elif pkt.arp is not None:
        d.update(src=str(pkt.arp.spa), dst=str(pkt.arp.tpa))
    if isinstance(pkt.l4, TCP):
        from .wire import tcp_flag_str
        d["flags"] = tcp_flag_str(pkt.l4.flags)
    if isinstance(pkt.l4, ICMP):
        d["icmp_type"], d["icmp_code"] = pkt.l4.type, pkt.l4.code
    if isinstance(pkt.l4, UDP):
        d["length"] = len(pkt.l4.payload)
    return d


def trace_text(outcome, detail: str = "full") -> str:
    lines = []
    legs = {"request": "->", "reply": "<-", "arp": "  "}
    if detail != "minimal":
        for h in outcome.hops:
            if detail == "summary" and h.leg == "arp":
                continue
            if detail == "summary" and h.component == "netfilter" and h.detail.endswith("=> no match"):
                continue
            where = h.namespace + (f":{h.device}" if h.device else "")
            lines.append(f"{legs.get(h.leg, '  ')} {where:<44} {h.component:<9} "
                         f"{h.action:<9} {h.detail}")
    lines.append(_result_line("request", outcome))
    if outcome.reply is not None:
        lines.append(_result_line("reply", outcome.reply))
    return "\n".join(lines)


def _result_line(what: str, o) -> str:
    where = f" to {o.delivered_to}" if o.delivered_to else ""
    why = f" ({o.reason})" if o.reason else ""
    pkt = f": {o.packet.summary()}" if o.packet is not None else ""
    return f"{what}: {o.disposition.upper()}{where}{why}{pkt}"
