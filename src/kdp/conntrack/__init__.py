# conntrack: per-namespace connection tracking (layer 3 of kdp) — tuples,
# entries, the table with capacity and expiry, TCP/UDP/ICMP tracking, and NAT
# bindings with their packet rewrites. Knows nothing of rules or chains.
from .entry import (ASSURED, CONFIRMED, DST_NAT, DST_NAT_DONE, ESTABLISHED, ESTABLISHED_REPLY,
                    EXPECTED, INVALID, NEW, ORIGINAL, RELATED, RELATED_REPLY, REPLY, SEEN_REPLY,
                    SRC_NAT, SRC_NAT_DONE, UNTRACKED, ConntrackEntry, TcpInfo, ctinfo_dir,
                    ctinfo_state)
from .keyed import decision_point, flow_hash, jhash2, keyed_hash, unit_interval
from .nat import (DST, SRC, NatContext, NatRange, icmp_reply_translation, manip_packet,
                  nat_initialized, null_binding, setup_nat)
from .table import ConntrackTable, conntrack_line
from .timeouts import Timeouts
from .track import CtResult, conntrack_in
from .tuples import Tuple, packet_tuple, quoted_packet

__all__ = [
    "ASSURED", "CONFIRMED", "DST_NAT", "DST_NAT_DONE", "ESTABLISHED", "ESTABLISHED_REPLY",
    "EXPECTED", "INVALID", "NEW", "ORIGINAL", "RELATED", "RELATED_REPLY", "REPLY", "SEEN_REPLY",
    "SRC_NAT", "SRC_NAT_DONE", "UNTRACKED", "ConntrackEntry", "TcpInfo", "ctinfo_dir",
    "ctinfo_state", "decision_point", "flow_hash", "jhash2", "keyed_hash", "unit_interval", "DST", "SRC", "NatContext",
    "NatRange", "icmp_reply_translation", "manip_packet", "nat_initialized", "null_binding",
    "setup_nat", "ConntrackTable", "conntrack_line", "Timeouts", "CtResult", "conntrack_in",
    "Tuple", "packet_tuple", "quoted_packet",
]
