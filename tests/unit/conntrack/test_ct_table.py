# The conntrack table: UDP and ICMP tracking, expiry on packet time,
# capacity with early drop / table-full drop, confirm clashes,
# `conntrack -L` text, and the plain-dict export/import.
from kdp.conntrack import (ASSURED, ConntrackTable, Timeouts, Tuple, conntrack_in, packet_tuple,
                           quoted_packet)
from kdp.wire import IPv4Address
from ct_helpers import A, B, icmp, table, tcp, tcp_session, track, udp


def test_tuples_and_inversion():
    t = packet_tuple(tcp())
    assert t == Tuple(6, IPv4Address(A), IPv4Address(B), 40000, 80)
    assert t.invert() == Tuple(6, IPv4Address(B), IPv4Address(A), 80, 40000)
    e = packet_tuple(icmp(type=8, id=99))
    assert (e.sport, e.icmp_type, e.icmp_code) == (99, 8, 0)
    assert e.invert().icmp_type == 0 and e.invert().sport == 99
    assert packet_tuple(icmp(type=9)).invert() is None           # router advert: no inverse
    assert str(t) == f"tcp {A}:40000->{B}:80"


def test_quoted_packet_of_an_icmp_error():
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether
    from kdp import wire
    inner = bytes(IP(src=A, dst=B) / UDP(sport=5000, dport=53) / b"payload")
    err = wire.parse(bytes(Ether() / IP(src=B, dst=A) / ICMP(type=3, code=3) / inner[:28]))
    q = quoted_packet(err.l4)
    assert q.tuple == Tuple(17, IPv4Address(A), IPv4Address(B), 5000, 53) and q.ihl == 20


def test_udp_unreplied_then_replied_then_stream_assured():
    """Linux 6.x: 30 s until a reply; a flow older than 2 s that has seen a
    reply becomes a stream: ASSURED with 120 s (checked on kernel 6.18)."""
    t = table()
    r = track(t, udp(), 0)
    e = r.entry
    assert r.new and e.remaining(0) == 30 and not e.seen_reply
    assert track(t, udp(B, A, 53, 5000), 0.1).ctinfo == "ESTABLISHED_REPLY"
    assert e.seen_reply and e.remaining(0.1) == 30 and not e.assured
    track(t, udp(), 1.0)                        # within 2 s of the first packet
    assert not e.assured and e.remaining(1.0) == 30
    track(t, udp(), 2.5)
    assert e.assured and e.remaining(2.5) == 120
    assert track(t, udp(), 3.0).ctinfo == "ESTABLISHED"


def test_udp_without_reply_expires_after_30s():
    t = table()
    track(t, udp(), 0)
    assert t.lookup(packet_tuple(udp()), 29.9) is not None
    assert t.lookup(packet_tuple(udp()), 30.0) is None


def test_icmp_echo_request_and_reply():
    t = table()
    r = track(t, icmp(type=8, id=5), 0)
    assert r.new and r.entry.remaining(0) == 30
    rep = track(t, icmp(B, A, type=0, id=5), 0.1)
    assert rep.entry is r.entry and rep.ctinfo == "ESTABLISHED_REPLY"
    assert track(t, icmp(type=8, id=5, seq=2), 1).ctinfo == "ESTABLISHED"
    assert track(t, icmp(type=8, id=6), 1).new                   # another id, another entry


def test_echo_reply_without_request_is_invalid():
    t = table()
    r = track(t, icmp(B, A, type=0, id=5))
    assert r.entry is None and r.invalid and len(t) == 0


def test_generic_protocol_timeout():
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether
    from kdp import wire
    ospf = wire.parse(bytes(Ether() / IP(src=A, dst=B, proto=89) / (b"\x00" * 8)))
    t = table()
    r = track(t, ospf, 0)
    assert r.new and r.entry.remaining(0) == 600
    assert "unknown  89 599 src=10.244.0.5 dst=10.244.1.6 [UNREPLIED]" in t.to_conntrack_l(1)


def test_bad_checksum_is_invalid_at_prerouting_only():
    from kdp import wire
    p = tcp()
    bad = wire.Packet(p.eth, ip=p.ip, l4=wire.TCP(40000, 80, seq=1000, checksum=0x1234))
    t = table()
    assert conntrack_in(t, bad, 0, prerouting=True).invalid
    assert conntrack_in(t, bad, 0, prerouting=False).entry is not None
    assert conntrack_in(table(checksum=False), bad, 0, prerouting=True).entry is not None


def test_unconfirmed_entries_are_not_in_the_table():
    t = table()
    r = track(t, tcp(), 0, confirm=False)
    assert r.entry is not None and len(t) == 0
    assert track(t, tcp(), 0, confirm=False).new          # still unknown: new again


def test_confirm_refuses_a_clash():
    t = table()
    track(t, tcp(), 0)
    r = conntrack_in(table(), tcp(), 0, prerouting=True)
    assert not t.confirm(r.entry, 0) and len(t) == 1


def test_sweep_on_insert_removes_expired_entries():
    t = table()
    track(t, udp(sport=1), 0)
    track(t, udp(sport=2), 10)
    track(t, udp(sport=3), 35)                 # the insert at 35 sweeps sport=1 (expired at 30)
    assert [e.orig.sport for e in t] == [2, 3]


def test_table_full_early_drops_non_assured_entries_of_a_bucket():
    """early_drop_list() evicts every non-ASSURED entry of the first bucket
    (of up to 8 from the new tuple's) that has any; one bucket here."""
    t = table(max_entries=4, buckets=1)
    for sport in range(3):
        track(t, udp(sport=1000 + sport), 0)
    tcp_session(t, now=0)                       # assured: survives
    r = track(t, udp(sport=2000), 1)
    assert r.entry is not None and sorted(e.orig.sport for e in r.evicted) == [1000, 1001, 1002]
    assert sorted(e.orig.sport for e in t) == [2000, 40000]
    assert any("early-drop" in ev for ev in r.events)


def test_table_full_with_only_assured_entries_drops_new_packets():
    t = table(max_entries=3, buckets=1)
    for sport in range(3):
        tcp_session(t, now=0, sport=41000 + sport)
    assert all(e.status & ASSURED for e in t)
    r = track(t, tcp(sport=50000), 1)
    assert r.drop == "conntrack-table-full" and r.entry is None and len(t) == 3
    assert "nf_conntrack: table full, dropping packet" in r.events
    # established flows keep working
    ok = track(t, tcp(A, B, 41000, 80, "A"), 1)
    assert ok.entry is not None and ok.ctinfo == "ESTABLISHED"


def test_early_drop_only_looks_near_the_new_tuples_bucket():
    t = ConntrackTable(64, Timeouts(), buckets=64, seed=3)
    for sport in range(64):
        tcp_session(t, now=0, sport=30000 + sport)
    victim = track(t, udp(sport=9), 0)            # table full of assured entries: dropped
    assert victim.drop == "conntrack-table-full"
    # make one entry non-assured; only a new tuple hashing near it can evict it
    target = t.entries()[10]
    target.status &= ~ASSURED
    near, far = [], []
    for sport in range(2000, 2400):
        tup = packet_tuple(udp(sport=sport))
        dist = (t._bucket(target.orig) - t._bucket(tup)) % 64
        dist2 = (t._bucket(target.reply) - t._bucket(tup)) % 64
        (near if min(dist, dist2) < 8 else far).append(sport)
    assert track(t, udp(sport=far[0]), 1).drop == "conntrack-table-full"
    r = track(t, udp(sport=near[0]), 1)
    assert r.evicted == [target] and r.entry is not None


def test_conntrack_l_format():
    t = table(timeouts=Timeouts.kube_proxy())
    tcp_session(t, now=0)
    track(t, udp(), 0)
    track(t, icmp(type=8, id=1234), 0)
    track(t, icmp(B, A, type=0, id=1234), 0)
    lines = t.to_conntrack_l(3.0).splitlines()
    assert lines == [
        f"tcp      6 86397 ESTABLISHED src={A} dst={B} sport=40000 dport=80 src={B} dst={A} "
        "sport=80 dport=40000 [ASSURED] mark=0 use=1",
        f"udp      17 27 src={A} dst={B} sport=5000 dport=53 [UNREPLIED] src={B} dst={A} "
        "sport=53 dport=5000 mark=0 use=1",
        f"icmp     1 27 src={A} dst={B} type=8 code=0 id=1234 src={B} dst={A} type=0 code=0 "
        "id=1234 mark=0 use=1"]


def test_export_and_import_round_trip():
    t = table()
    tcp_session(t, now=0)
    track(t, udp(), 0)
    dump = t.export()
    assert isinstance(dump, list) and all(isinstance(d, dict) for d in dump)
    import json
    dump = json.loads(json.dumps(dump))            # plain data only
    t2 = table()
    t2.import_(dump)
    assert t2.to_conntrack_l(1.0) == t.to_conntrack_l(1.0)
    assert track(t2, tcp(A, B, 40000, 80, "A"), 1.0).ctinfo == "ESTABLISHED"
    assert track(t2, tcp(sport=40001), 1.0).entry.id > max(d["id"] for d in dump)


def test_entry_generations_are_remembered_for_a_bounded_number_of_tuples():
    """A reopened tuple's next entry draws anew (gen counts its earlier
    entries), and the table's memory of generations stays bounded however
    many flows it sees: the oldest tuples are forgotten first."""
    from ipaddress import IPv4Address

    from kdp.conntrack.table import GENERATION_MEMORY
    from kdp.conntrack.tuples import Tuple

    table = ConntrackTable(max_entries=4 * GENERATION_MEMORY)
    src, dst = IPv4Address("10.244.0.2"), IPv4Address("10.2.0.2")

    def open_close(sport: int) -> int:
        t = Tuple(17, src, dst, sport, 53)
        e = table.new_entry(t, t.invert(), 1.0)
        assert table.confirm(e, 1.0)
        table.remove(e)
        return e.gen

    assert [open_close(1000) for _ in range(3)] == [0, 1, 2]
    for sport in range(2000, 2000 + 2 * GENERATION_MEMORY):
        open_close(sport)
    assert len(table._generation) <= GENERATION_MEMORY + GENERATION_MEMORY // 4
    assert open_close(2000 + 2 * GENERATION_MEMORY - 1) == 1      # recent: remembered
    assert open_close(1000) == 0                                   # long ago: forgotten
