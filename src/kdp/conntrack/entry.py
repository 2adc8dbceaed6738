# conntrack.entry: one conntrack entry (struct nf_conn): original and reply
# tuples, status bits, protocol state, timeout, mark, and the names of the
# values rules see (ctinfo, direction). No table logic, no packet rewriting.
from __future__ import annotations

from dataclasses import dataclass, field

from .tuples import Tuple

# Status bits, numbered as the kernel's IPS_* (include/uapi/linux/netfilter/nf_conntrack_common.h).
EXPECTED = 1 << 0
SEEN_REPLY = 1 << 1
ASSURED = 1 << 2
CONFIRMED = 1 << 3
SRC_NAT = 1 << 4
DST_NAT = 1 << 5
NAT_MASK = SRC_NAT | DST_NAT
SRC_NAT_DONE = 1 << 7
DST_NAT_DONE = 1 << 8
DYING = 1 << 9
STATUS_NAMES = {EXPECTED: "EXPECTED", SEEN_REPLY: "SEEN_REPLY", ASSURED: "ASSURED",
                CONFIRMED: "CONFIRMED", SRC_NAT: "SRC_NAT", DST_NAT: "DST_NAT",
                SRC_NAT_DONE: "SRC_NAT_DONE", DST_NAT_DONE: "DST_NAT_DONE", DYING: "DYING"}

ORIGINAL, REPLY = "original", "reply"

# ctinfo (enum ip_conntrack_info) as strings.
NEW = "NEW"
ESTABLISHED = "ESTABLISHED"
RELATED = "RELATED"
ESTABLISHED_REPLY = "ESTABLISHED_REPLY"
RELATED_REPLY = "RELATED_REPLY"
UNTRACKED = "UNTRACKED"
INVALID = "INVALID"


def ctinfo_state(ctinfo: str | None) -> str:
    """The state a rule sees (-m conntrack --ctstate / -m state) for a ctinfo;
    None (no entry attached) is INVALID."""
    state = _CTINFO_STATE.get(ctinfo)
    if state is not None:
        return state
    if ctinfo.endswith("_REPLY"):
        return ctinfo[: -len("_REPLY")]
    return ctinfo


# ctinfo_state() of the ctinfos there are, looked up (every state match asks)
_CTINFO_STATE = {None: INVALID, NEW: NEW, ESTABLISHED: ESTABLISHED, RELATED: RELATED,
                 ESTABLISHED_REPLY: ESTABLISHED, RELATED_REPLY: RELATED, UNTRACKED: UNTRACKED}


def ctinfo_dir(ctinfo: str) -> str:
    return REPLY if ctinfo.endswith("_REPLY") else ORIGINAL


@dataclass(eq=False)
class TcpInfo:
    """The part of struct ip_ct_tcp kdp tracks (no window tracking)."""

    state: str = "NONE"
    last_index: str = "NONE"
    last_dir: str = ORIGINAL
    close_init: list[bool] = field(default_factory=lambda: [False, False])   # per direction


@dataclass(eq=False)
class SctpInfo:
    """struct ip_ct_sctp: the state, the verification tags and INIT flags per direction."""

    state: str = "NONE"
    vtag: list[int] = field(default_factory=lambda: [0, 0])
    init: list[bool] = field(default_factory=lambda: [False, False])
    flags: int = 0
    last_dir: str = ORIGINAL


@dataclass(eq=False)
class ConntrackEntry:
    """One connection. `reply` is the tuple reply packets carry *before*
    un-NAT; it differs from orig.invert() exactly when the entry has a NAT
    binding (the kernel's representation of NAT)."""

    orig: Tuple
    reply: Tuple
    created: float
    id: int = 0
    status: int = 0
    timeout_at: float = 0.0
    mark: int = 0
    tcp: TcpInfo | None = None
    sctp: SctpInfo | None = None
    udp_stream_at: float = 0.0
    masq_dev: str | None = None
    # how many entries of this original tuple the table confirmed before this
    # one (0: the tuple's first); statistic draws mix it in (keyed.entry_base).
    # Not exported: it matters only while the entry's rules draw (the table's
    # own count seeds the next entry's)
    gen: int = field(default=0, repr=False)
    # the timeout the last packet set (timeout_at = now + refresh), None when
    # it left the timeout alone; read by the flow cache's recorder, not exported
    refresh: float | None = field(default=None, repr=False)

    def tuple(self, direction: str) -> Tuple:
        return self.orig if direction == ORIGINAL else self.reply

    @property
    def confirmed(self) -> bool:
        return bool(self.status & CONFIRMED)

    @property
    def assured(self) -> bool:
        return bool(self.status & ASSURED)

    @property
    def seen_reply(self) -> bool:
        return bool(self.status & SEEN_REPLY)

    @property
    def proto_state(self) -> str | None:
        if self.sctp is not None:
            return self.sctp.state
        return self.tcp.state if self.tcp is not None else None

    def status_names(self) -> list[str]:
        return [n for bit, n in STATUS_NAMES.items() if self.status & bit]

    def remaining(self, now: float) -> float:
        return max(0.0, self.timeout_at - now)

    def __repr__(self) -> str:
        st = f" {self.proto_state}" if self.proto_state is not None else ""
        return (f"<ConntrackEntry #{self.id}{st} {self.orig} | {self.reply.endpoints()} "
                f"{'|'.join(self.status_names())}>")

    # --- plain-dict form (for the compiled twin and for snapshots) ---------
    def to_dict(self) -> dict:
        d = {"id": self.id, "orig": self.orig.to_dict(), "reply": self.reply.to_dict(),
             "status": self.status, "created": self.created, "timeout_at": self.timeout_at,
             "mark": self.mark, "udp_stream_at": self.udp_stream_at, "masq_dev": self.masq_dev}
        if self.tcp is not None:
            d["tcp"] = {"state": self.tcp.state, "last_index": self.tcp.last_index,
                        "last_dir": self.tcp.last_dir, "close_init": list(self.tcp.close_init)}
        if self.sctp is not None:
            s = self.sctp
            d["sctp"] = {"state": s.state, "vtag": list(s.vtag), "init": list(s.init),
                         "flags": s.flags, "last_dir": s.last_dir}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ConntrackEntry":
        e = cls(Tuple.from_dict(d["orig"]), Tuple.from_dict(d["reply"]), float(d["created"]),
                int(d["id"]), int(d["status"]), float(d["timeout_at"]), int(d.get("mark", 0)),
                udp_stream_at=float(d.get("udp_stream_at", 0.0)), masq_dev=d.get("masq_dev"))
        if "tcp" in d:
            t = d["tcp"]
            e.tcp = TcpInfo(t["state"], t["last_index"], t["last_dir"], list(t["close_init"]))
        if "sctp" in d:
            s = d["sctp"]
            e.sctp = SctpInfo(s["state"], list(s["vtag"]), list(s["init"]), s["flags"], s["last_dir"])
        return e
