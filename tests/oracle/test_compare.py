# oracle.compare without a kernel: pairing per device, learning and mapping
# the kernel's random values (ISN, TCP timestamps, IP IDs), derived checksums,
# and frames only one side saw.
import struct
from dataclasses import replace
from ipaddress import IPv4Address as A

import pytest

from kdp import wire
from kdp.oracle.compare import Frame, Mapper, compare_captures, normalise, pair_frames
from kdp.oracle.report import report_text, scenario_dict
from kdp.oracle.runner import ScenarioResult
from kdp.oracle.scenarios import Scenario, Step

pytestmark = pytest.mark.oracle

ETH = wire.Ether("02:00:00:00:00:02", "02:00:00:00:00:01", wire.ETH_P_IP)
CLIENT, SERVER = A("10.244.0.2"), A("10.244.1.2")


def synack(isn: int, tsval: int, window_scale: int = 7, ident: int = 0) -> wire.Packet:
    opts = bytes.fromhex("020405b40402080a") + struct.pack("!II", tsval, 1000) + bytes([1, 3, 3, window_scale])
    tcp = wire.TCP(80, 40000, isn, 5001, wire.SYN | wire.ACK, 65160, 0, 0, opts)
    return wire.finalize(wire.Packet(ETH, ip=wire.IPv4(SERVER, CLIENT, wire.PROTO_TCP, 64, ident, 2), l4=tcp))


def frame(pkt: wire.Packet, direction: str = "in") -> Frame:
    return Frame(0.0, direction, wire.emit(pkt), pkt)


def result_for(kdp, kern, dev=("pod/default/a", "eth0")) -> ScenarioResult:
    m = Mapper()
    devs = compare_captures({dev: kdp}, {dev: kern}, m, [dev])
    return ScenarioResult(Scenario("t", "test", [Step(dev[0], dev[1], b"")]), devs, m,
                          len(kdp), len(kern), 0.0)


def test_isn_and_timestamp_are_mapped_not_reported():
    r = result_for([frame(synack(1000, 555))], [frame(synack(987654, 42))])
    d = scenario_dict(r)
    assert d["agree"], report_text({"summary": {"agreeing": 0, "scenarios": 1, "frames_paired": 1,
                                                "unpaired_frames": 0, "fields_compared": 0, "fields_equal": 0,
                                                "fields_mapped": 0, "fields_derived": 0, "fields_differ": 0},
                                    "scenarios": [d]})
    assert d["fields"]["by_field"]["tcp.seq"]["mapped"] == 1
    assert d["fields"]["by_field"]["tcp.options"]["mapped"] == 1
    assert d["fields"]["by_field"]["tcp.checksum"]["mapped"] == 1


def test_real_difference_next_to_mapped_values_is_reported_and_checksum_is_derived():
    r = result_for([frame(synack(1000, 555, window_scale=7))], [frame(synack(987654, 42, window_scale=10))])
    d = scenario_dict(r)
    assert not d["agree"]
    [dis] = d["disagreements"]
    assert [f["field"] for f in dis["fields"]] == ["tcp.options"]
    assert dis["fields"][0]["kdp"].endswith("01030307") and dis["fields"][0]["kernel"].endswith("0103030a")
    assert d["fields"]["by_field"]["tcp.checksum"]["derived"] == 1


def test_seq_mapping_carries_to_later_segments_and_acks():
    m = Mapper()
    k, r = synack(1000, 5), synack(5000, 9)
    from kdp.oracle.compare import learn
    learn(m, k, r)
    data = wire.TCP(80, 40000, 5001, 5001, wire.PSH | wire.ACK, 502, 0, 0, b"", b"hi")
    kern = wire.finalize(wire.Packet(ETH, ip=wire.IPv4(SERVER, CLIENT, wire.PROTO_TCP), l4=data))
    norm, mapped = normalise(m, kern)
    assert norm.l4.seq == 1001 and "tcp.seq" in mapped and wire.l4_checksum_ok(norm)
    ack = wire.TCP(40000, 80, 5001, 5003, wire.ACK, 502)
    back = wire.finalize(wire.Packet(ETH, ip=wire.IPv4(CLIENT, SERVER, wire.PROTO_TCP), l4=ack))
    norm, mapped = normalise(m, back)
    assert norm.l4.ack == 1003 and "tcp.ack" in mapped


def test_hashed_ip_id_is_mapped_but_zero_versus_hashed_is_a_difference():
    icmp = wire.ICMP(wire.ICMP_ECHOREPLY, 0, 0, 0x10001, b"x" * 8)
    k = wire.finalize(wire.Packet(ETH, ip=wire.IPv4(SERVER, CLIENT, wire.PROTO_ICMP, 64, 777, 0), l4=icmp))
    r = replace(k, ip=replace(k.ip, ident=4242))
    r = wire.finalize(r)
    d = scenario_dict(result_for([frame(k)], [frame(r)]))
    assert d["agree"] and d["fields"]["by_field"]["ip.id"]["mapped"] == 1
    k0 = wire.finalize(replace(k, ip=replace(k.ip, ident=0, flags=2)))
    r0 = wire.finalize(replace(k, ip=replace(k.ip, ident=4242, flags=2)))
    d = scenario_dict(result_for([frame(k0)], [frame(r0)]))
    assert not d["agree"] and d["disagreements"][0]["fields"][0]["field"] == "ip.id"


def test_ip_id_map_is_one_to_one():
    """Two packets the kernel numbered apart but kdp gave one ID (a repeated
    IP ID) cannot both map: the second is a difference. Distinct IDs on both
    sides map."""
    def echo(ident, seq):
        icmp = wire.ICMP(wire.ICMP_ECHOREPLY, 0, 0, 0x10000 | seq, b"x" * 8)
        return wire.finalize(wire.Packet(ETH, ip=wire.IPv4(SERVER, CLIENT, wire.PROTO_ICMP, 64, ident, 0),
                                         l4=icmp))
    same = scenario_dict(result_for([frame(echo(777, 1)), frame(echo(777, 2))],
                                    [frame(echo(4242, 1)), frame(echo(4243, 2))]))
    assert not same["agree"]
    assert [f["field"] for d in same["disagreements"] for f in d["fields"]][:1] == ["ip.id"]
    apart = scenario_dict(result_for([frame(echo(777, 1)), frame(echo(778, 2))],
                                     [frame(echo(4242, 1)), frame(echo(4243, 2))]))
    assert apart["agree"] and apart["fields"]["by_field"]["ip.id"]["mapped"] == 2


def test_pairing_tolerates_reordering_and_reports_unpaired_frames():
    arp = wire.Packet(wire.Ether("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:01", wire.ETH_P_ARP),
                      arp=wire.ARP(1, "02:00:00:00:00:01", CLIENT, "00:00:00:00:00:00", A("10.244.0.1")))
    sa = synack(1, 2)
    pairs = pair_frames(("x", "eth0"), [frame(arp, "out"), frame(sa)], [frame(sa), frame(arp, "out"),
                                                                         frame(arp, "in")])
    kinds = sorted(p.kind for p in pairs)
    assert kinds.count("extra-in-kernel") == 1
    assert [p.kernel_index for p in pairs if p.kdp is not None] == [1, 0]
    from kdp.oracle.compare import order_problems
    assert order_problems(pairs)


def test_unparseable_kernel_frame_is_compared_as_bytes():
    f = Frame.of(0.0, b"\x01" * 10, "in")
    assert f.pkt is None and "unparsed" in f.summary()


def _server_segment(flags: int, payload: bytes = b"") -> wire.Packet:
    tcp = wire.TCP(80, 40000, 1001, 5014, flags, 502, 0, 0, b"", payload)
    return wire.finalize(wire.Packet(ETH, ip=wire.IPv4(SERVER, CLIENT, wire.PROTO_TCP, 64, 0, 2), l4=tcp))


def test_order_of_a_pure_ack_and_data_sent_together_is_timing_not_cause():
    """The flake of cross-node-tcp-session under load: the server's pure ACK (softirq)
    and its echoed data (the application's write) reached the capture swapped. Sent
    within CONCURRENT_SLACK they are not ordered; sent further apart they are, and two
    segments that both take sequence space, or frames of different senders, always are."""
    from kdp.oracle.compare import CONCURRENT_SLACK, order_problems
    ack, data = _server_segment(wire.ACK), _server_segment(wire.PSH | wire.ACK, b"hello\n")
    kdp = [frame(ack, "out"), frame(data, "out")]

    def kern(gap, first=data, second=ack):
        return [Frame(10.0, "out", wire.emit(first), first),
                Frame(10.0 + gap, "out", wire.emit(second), second)]
    assert order_problems(pair_frames(("x", "eth0"), kdp, kern(0.0003))) == []
    late = order_problems(pair_frames(("x", "eth0"), kdp, kern(CONCURRENT_SLACK * 5)))
    assert late == ["kdp frame #1 comes after #0, the kernel's #0 before #1"]
    # data and a FIN of one sender both take sequence space: stream order, a real
    # reordering however close
    fin = _server_segment(wire.FIN | wire.ACK)
    fin = replace(fin, l4=replace(fin.l4, seq=1007))
    assert order_problems(pair_frames(("x", "eth0"), [frame(data, "out"), frame(fin, "out")],
                                      kern(0.0003, fin, data)))
    # a pure ACK against another sender's frame (the client's request): ordered
    req = wire.finalize(wire.Packet(ETH, ip=wire.IPv4(CLIENT, SERVER, wire.PROTO_TCP, 64, 0, 2),
                                    l4=wire.TCP(40000, 80, 5001, 1001, wire.PSH | wire.ACK, 502, 0, 0,
                                                b"", b"x" * 13)))
    assert order_problems(pair_frames(("x", "eth0"), [frame(req, "out"), frame(ack, "out")],
                                      kern(0.0003, ack, req)))
