# outcomes: what a `kdp run` did, counted: frames by disposition and by drop
# reason, the TCP resets kdp's stacks and rules sent and who sent them, and
# the capture's flows (opened, completed, reset; frames, bytes, the Service
# they went to and the endpoint that got them), per Service the new flows and
# their spread over endpoints. Fed one record per frame by the runner: the
# reference path's outcomes directly, the flow cache's replays as (the record
# of the frame the entry was built from) x (hits), which is the same record
# since a cache entry replays only frames whose outcome it reproduces exactly.
from __future__ import annotations

import csv
import json
from socket import inet_ntoa

from .errors import KdpError

_PROTO = {6: "tcp", 17: "udp", 1: "icmp"}
SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10


def frame_flow(frame: bytes) -> tuple | None:
    """(proto, src, sport, dst, dport, tcp flags) of an IPv4 frame as sent; None
    for anything else (ARP, IPv6, too short)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4:
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    src, dst = inet_ntoa(frame[26:30]), inet_ntoa(frame[30:34])     # str(IPv4Address(...)), in C
    l4 = 14 + ihl
    sport = dport = None
    flags = 0
    if proto in (6, 17) and len(frame) >= l4 + 4:
        sport, dport = int.from_bytes(frame[l4:l4 + 2], "big"), int.from_bytes(frame[l4 + 2:l4 + 4], "big")
        if proto == 6 and len(frame) >= l4 + 14:
            flags = frame[l4 + 13]
    elif proto == 1 and len(frame) >= l4 + 6:
        sport = int.from_bytes(frame[l4 + 4:l4 + 6], "big")           # the echo identifier
    return (_PROTO.get(proto, str(proto)), src, sport, dst, dport, flags)


class Outcomes:
    """The run's counters; `record()` makes a frame's record, `add()` counts it n times."""

    def __init__(self, cluster) -> None:
        self.frontends: dict[tuple, str] = {}
        for svc in cluster.services:
            ips = ([svc.cluster_ip] if svc.cluster_ip is not None else []) + list(svc.external_ips) \
                + list(svc.load_balancer_ips)
            for p in svc.ports:
                for ip in ips:
                    self.frontends[(p.protocol.lower(), str(ip), p.port)] = svc.key
                if p.node_port:
                    for n in cluster.nodes:
                        self.frontends[(p.protocol.lower(), str(n.ip), p.node_port)] = svc.key
        self.dispositions: dict[str, int] = {}
        self.reasons: dict[str, int] = {}
        self.resets: dict[str, int] = {}
        self.flows: dict[tuple, dict] = {}

    @staticmethod
    def record(r: dict, resets, frame: bytes) -> tuple:
        """One frame's record: its run line's disposition, reason and
        destination, who reset it, and its flow as the capture sent it."""
        return (r["disposition"], r["reason"], r["delivered_to"], tuple(resets), frame_flow(frame))

    def add(self, rec: tuple, n: int, ip_bytes: int, now: float) -> None:
        disposition, reason, delivered_to, resets, flow = rec
        self.dispositions[disposition] = self.dispositions.get(disposition, 0) + n
        if disposition != "delivered":
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        for who in resets:
            self.resets[who] = self.resets.get(who, 0) + n
        if flow is None:
            return
        proto, src, sport, dst, dport, flags = flow
        key = (proto, src, sport, dst, dport)
        f = self.flows.get(key)
        if f is None:
            f = self.flows[key] = {"proto": proto, "src": src, "sport": sport, "dst": dst, "dport": dport,
                                   "service": self.frontends.get((proto, dst, dport)),
                                   "endpoint": None, "frames": 0, "ip_bytes": 0, "first_seen": now,
                                   "last_seen": now, "opened": proto != "tcp", "fin": False,
                                   "reset": False, "resets_by": [], "dropped": 0}
        f["frames"] += n
        f["ip_bytes"] += ip_bytes
        f["last_seen"] = max(f["last_seen"], now)
        if disposition != "delivered":
            f["dropped"] += n
        if f["endpoint"] is None and delivered_to is not None:
            f["endpoint"] = delivered_to
        if proto == "tcp":
            if flags & SYN and not flags & ACK:
                f["opened"] = True
            if flags & FIN:
                f["fin"] = True
            if flags & RST:
                f["reset"] = True
        if resets:
            f["reset"] = True
            for who in resets:
                if who not in f["resets_by"]:
                    f["resets_by"].append(who)

    # --- reports -------------------------------------------------------------------
    @staticmethod
    def state(f: dict) -> str:
        if f["reset"]:
            return "reset"
        if not f["opened"]:
            return "mid-flow"                   # its start is not in the capture (or it is a reply direction)
        return "completed" if f["fin"] else "open"

    def summary(self) -> dict:
        """The JSON summary's "outcomes" object (docs/cli.md)."""
        flows = list(self.flows.values())
        services: dict[str, dict] = {}
        for f in flows:
            if f["service"] is None or not f["opened"]:
                continue
            s = services.setdefault(f["service"], {"new_flows": 0, "endpoints": {}})
            s["new_flows"] += 1
            ep = f["endpoint"] or "-"
            s["endpoints"][ep] = s["endpoints"].get(ep, 0) + 1
        states = [self.state(f) for f in flows]
        return {
            "dispositions": dict(sorted(self.dispositions.items())),
            "drop_reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "resets": {"total": sum(self.resets.values()),
                       "by": dict(sorted(self.resets.items(), key=lambda kv: (-kv[1], kv[0])))},
            "flows": {"total": len(flows), "opened": sum(f["opened"] for f in flows),
                      "completed": states.count("completed"), "reset": states.count("reset")},
            "services": {k: {"new_flows": v["new_flows"], "endpoints": dict(sorted(v["endpoints"].items()))}
                         for k, v in sorted(services.items())},
        }

    FLOW_FIELDS = ("proto", "src", "sport", "dst", "dport", "service", "endpoint", "state", "frames",
                   "ip_bytes", "dropped", "first_seen", "last_seen", "resets_by")

    def flow_rows(self) -> list[dict]:
        rows = []
        for f in self.flows.values():
            row = {k: f.get(k) for k in self.FLOW_FIELDS}
            row["state"] = self.state(f)
            row["resets_by"] = list(f["resets_by"])
            rows.append(row)
        return rows

    def write_flows(self, path: str) -> None:
        """--flows FILE: CSV when FILE ends in .csv, else a JSON array."""
        rows = self.flow_rows()
        try:
            with open(path, "w", newline="") as fh:
                if path.endswith(".csv"):
                    w = csv.DictWriter(fh, fieldnames=self.FLOW_FIELDS)
                    w.writeheader()
                    for row in rows:
                        w.writerow(dict(row, resets_by=" ".join(row["resets_by"])))
                else:
                    json.dump(rows, fh, indent=1)
                    fh.write("\n")
        except OSError as e:
            raise KdpError(f"--flows {path}: {e.strerror}") from None
