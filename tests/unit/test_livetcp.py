# kdp.livetcp's translation on its own: ack, SACK edges and TSecr shifted into
# the live peer's space, fields at odd offsets too, the TCP checksum right
# after the incremental updates (and a wrong one left wrong); the recorded
# ISN learnt from the first ACK; an acknowledgement beyond what the live peer
# sent reported.
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from kdp import wire
from kdp.livetcp import LiveTcp

REC_ISN, LIVE_ISN, REC_TS, LIVE_TS = 5000, 0xFFFFFF00, 7000, 90


def _c(flags, seq, ack, options, load=b"", chksum=None):
    f = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags=flags, seq=seq, ack=ack,
                                                             options=options) / load
    if chksum is not None:
        f[TCP].chksum = chksum
    return bytes(f)


def _flow():
    lt = LiveTcp(None)
    syn = _c("S", 100, 0, [("Timestamp", (1, 0))])
    assert lt.outbound(syn, wire.parse(syn))[0] == "live"
    (flow,) = lt.flows.values()
    sa = wire.parse(bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(
        sport=80, dport=1234, flags="SA", seq=LIVE_ISN, ack=101, options=[("Timestamp", (LIVE_TS, 1))])))
    flow.segment(sa.ip, sa.l4, 0.0)
    data = wire.parse(bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(
        sport=80, dport=1234, flags="PA", seq=LIVE_ISN + 1, ack=101) / (b"x" * 300)))
    flow.segment(data.ip, data.l4, 0.0)
    return lt


def test_odd_offsets_and_checksum():
    lt = _flow()
    first = _c("A", 101, REC_ISN + 1, [("NOP", None), ("Timestamp", (2, REC_TS))])     # TS at an odd offset
    _, info = lt.outbound(first, wire.parse(first))
    got = Ether(info["frame"])
    assert got[TCP].ack == (LIVE_ISN + 1) & 0xFFFFFFFF and dict(got[TCP].options)["Timestamp"] == (2, LIVE_TS)
    want = Ether(info["frame"])
    del want[TCP].chksum
    assert Ether(bytes(want))[TCP].chksum == got[TCP].chksum                      # equal to a full recompute
    sack = _c("A", 101, REC_ISN + 1, [("NOP", None), ("SAck", (REC_ISN + 101, REC_ISN + 201))])
    _, info = lt.outbound(sack, wire.parse(sack))
    got = Ether(info["frame"])
    assert dict(got[TCP].options)["SAck"] == ((LIVE_ISN + 101) & 0xFFFFFFFF, (LIVE_ISN + 201) & 0xFFFFFFFF)
    assert info["translated"]["sack"] == 1 and info["unacceptable"] is None
    want = Ether(info["frame"])
    del want[TCP].chksum
    assert Ether(bytes(want))[TCP].chksum == got[TCP].chksum


def test_wrong_checksum_stays_wrong_and_unsent_bytes_are_reported():
    lt = _flow()
    bad = _c("A", 101, REC_ISN + 1, [], chksum=0x1234)
    lt.outbound(bad, wire.parse(bad))
    over = _c("A", 101, REC_ISN + 1 + 400, [], chksum=0x1234)
    _, info = lt.outbound(over, wire.parse(over))
    got = Ether(info["frame"])
    want = Ether(info["frame"])
    del want[TCP].chksum
    assert Ether(bytes(want))[TCP].chksum != got[TCP].chksum
    assert info["unacceptable"].startswith("acknowledges 100 bytes the live peer has not sent")


def test_too_old_and_wrong_handshake_acks_are_reported():
    """What the live peer's tcp_check_req/tcp_ack would refuse: a handshake ACK
    other than ISN + 1, and an ACK further back than snd_una less the bytes
    acknowledged (the peer had sent 300)."""
    lt = _flow()
    rec = bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=1234, flags="SA",
                                                                   seq=REC_ISN, ack=101))
    assert lt.outbound(rec, wire.parse(rec)) == ("skip", "live-peer-answers")     # the recorded ISN
    low = _c("A", 101, REC_ISN, [])                                  # one before the SYN-ACK's
    _, info = lt.outbound(low, wire.parse(low))
    assert info["unacceptable"].startswith("is not the ACK of the live peer's SYN-ACK")
    for ack, bad in ((REC_ISN + 1, None), (REC_ISN + 201, None), (REC_ISN + 101, None),    # 100 back of 200: taken
                     (REC_ISN + 301, None), (REC_ISN + 1, None), (REC_ISN, "acknowledges 301 bytes less")):
        f = _c("A", 101, ack, [])
        _, info = lt.outbound(f, wire.parse(f))
        assert (info["unacceptable"] or "").startswith(bad or ""), (ack, info)
        assert (info["unacceptable"] is None) == (bad is None), (ack, info)
