# NAT through the hooks: bindings made by the first packet's nat walk, later
# packets (both directions) rewritten from the conntrack entry, MASQUERADE
# port choice, clashes, ICMP errors translated back, REDIRECT, local traffic.
from kdp import wire
from nf_helpers import (checksums_ok, deliver, forward, hook, icmp, icmp_error, make_nf, reply_to,
                        rules_hit, send, tcp, udp)

CLIENT, VIP, EP, NODE = "10.244.0.5", "10.0.12.34", "10.244.1.6", "10.224.0.4"
DNAT = [f"-A PREROUTING -d {VIP} -p tcp -m tcp --dport 80 -j DNAT --to-destination {EP}:8080",
        f"-A OUTPUT -d {VIP} -p tcp -m tcp --dport 80 -j DNAT --to-destination {EP}:8080"]
KUBE_POSTROUTING = ["-A POSTROUTING -j KUBE-POSTROUTING",
                    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
                    "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
                    "-A KUBE-POSTROUTING -j MASQUERADE --random-fully"]


def nat_rules(result):
    return [t for t in result.trace if t.table == "nat" and t.kind in ("rule", "policy")]


def test_dnat_binds_on_the_first_packet_and_later_packets_skip_the_nat_table():
    nf = make_nf(nat=DNAT)
    res, meta = forward(nf, tcp(CLIENT, VIP, 40000, 80, "S"))
    out = res[-1].packet
    assert (str(out.ip.dst), out.l4.dport) == (EP, 8080) and checksums_ok(out)
    assert nat_rules(res[0]) and meta.ct.status & 0x20           # DST_NAT
    assert any(t.outcome == f"nat dnat {VIP}:80 -> {EP}:8080" for t in res[0].trace)
    # reply: un-DNAT (source restored) at POSTROUTING, no nat rules walked
    res, _ = forward(nf, tcp(EP, CLIENT, 8080, 40000, "SA"), 1.1, "eth0", "cbr0")
    back = res[-1].packet
    assert (str(back.ip.src), back.l4.sport) == (VIP, 80) and checksums_ok(back)
    assert not any(nat_rules(r) for r in res)
    assert any(t.outcome == f"nat un-dnat {EP}:8080 -> {VIP}:80" for t in res[-1].trace)
    # packet 2 of the original direction: rewritten from the entry, no nat walk
    res, _ = forward(nf, tcp(CLIENT, VIP, 40000, 80, "A"), 1.2)
    assert not any(nat_rules(r) for r in res)
    assert str(res[-1].packet.ip.dst) == EP and checksums_ok(res[-1].packet)
    line = nf.conntrack.to_conntrack_l(4.2)
    assert line == (f"tcp      6 86397 ESTABLISHED src={CLIENT} dst={VIP} sport=40000 dport=80 "
                    f"src={EP} dst={CLIENT} sport=8080 dport=40000 [ASSURED] mark=0 use=1\n")


def test_mangle_prerouting_sees_the_packet_before_dnat():
    nf = make_nf(nat=DNAT, mangle=[f"-A PREROUTING -d {VIP} -j MARK --set-mark 0x1",
                                   f"-A FORWARD -d {EP} -j MARK --set-mark 0x2/0x2"])
    forward(nf, tcp(CLIENT, VIP, 40000, 80, "S"))
    forward(nf, tcp(EP, CLIENT, 8080, 40000, "SA"), 1.1, "eth0", "cbr0")
    _, meta = forward(nf, tcp(CLIENT, VIP, 40000, 80, "A"), 1.2)
    assert meta.mark == 0x3 and meta.ctinfo == "ESTABLISHED"


def test_invalid_packets_of_a_dnat_flow_are_not_translated():
    """An ACK conntrack finds invalid (no SYN-ACK seen yet) carries no entry,
    so the DNAT binding is not applied — the classic kube-proxy INVALID case."""
    nf = make_nf(nat=DNAT)
    forward(nf, tcp(CLIENT, VIP, 40000, 80, "S"))
    res, meta = forward(nf, tcp(CLIENT, VIP, 40000, 80, "A"), 1.2)
    assert meta.ct is None and meta.state == "INVALID" and "SYN_SENT" in meta.invalid
    assert str(res[-1].packet.ip.dst) == VIP


def test_kube_proxy_hairpin_is_masqueraded_with_random_fully():
    nf = make_nf(seed=5, nat=[
        f"-A PREROUTING -d {VIP} -p tcp -j KUBE-SEP-A",
        f"-A KUBE-SEP-A -s {CLIENT} -j KUBE-MARK-MASQ",
        f"-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination {CLIENT}:8080",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000", *KUBE_POSTROUTING])
    res, meta = forward(nf, tcp(CLIENT, VIP, 40000, 80), out_dev="cbr0")
    out = res[-1].packet
    assert str(out.ip.src) == "10.244.0.1" and str(out.ip.dst) == CLIENT     # cbr0's address
    assert out.l4.dport == 8080 and 1024 <= out.l4.sport <= 65535
    assert checksums_ok(out) and meta.mark == 0 and meta.ct.status & 0x30 == 0x30
    # the reply is un-SNATed at PREROUTING and un-DNATed at POSTROUTING
    res, _ = forward(nf, reply_to(out), 1.1, "cbr0", "cbr0")
    back = res[-1].packet
    assert (str(back.ip.src), back.l4.sport, str(back.ip.dst), back.l4.dport) == \
        (VIP, 80, CLIENT, 40000)
    assert checksums_ok(back)


def random_fully_port(seed: int, sport=40000) -> int:
    nf = make_nf(seed=seed, nat=["-A POSTROUTING -o eth0 -j MASQUERADE --random-fully"])
    res, _ = forward(nf, tcp(CLIENT, "8.8.8.8", sport, 443))
    assert str(res[-1].packet.ip.src) == NODE
    return res[-1].packet.l4.sport


def test_random_fully_port_is_deterministic_per_seed():
    assert random_fully_port(1) == random_fully_port(1)
    assert len({random_fully_port(s) for s in range(5)}) >= 4
    assert random_fully_port(1, 40001) != random_fully_port(1, 40000)


def test_masquerade_keeps_the_port_when_free_and_repicks_on_clash():
    nf = make_nf(nat=["-A POSTROUTING -o eth0 -j MASQUERADE"])
    res, _ = forward(nf, tcp(CLIENT, "8.8.8.8", 40000, 443))
    assert (str(res[-1].packet.ip.src), res[-1].packet.l4.sport) == (NODE, 40000)
    # another pod, same source port, same destination: the reply tuple is taken
    res, _ = forward(nf, tcp("10.244.0.9", "8.8.8.8", 40000, 443))
    p2 = res[-1].packet
    assert str(p2.ip.src) == NODE and p2.l4.sport != 40000 and 1024 <= p2.l4.sport <= 65535
    assert checksums_ok(p2) and len(nf.conntrack) == 2
    # deterministic: a fresh namespace with the same seed picks the same port
    nf2 = make_nf(nat=["-A POSTROUTING -o eth0 -j MASQUERADE"])
    forward(nf2, tcp(CLIENT, "8.8.8.8", 40000, 443))
    assert forward(nf2, tcp("10.244.0.9", "8.8.8.8", 40000, 443))[0][-1].packet.l4.sport == p2.l4.sport


def test_masquerade_low_ports_stay_low():
    nf = make_nf(nat=["-A POSTROUTING -o eth0 -j MASQUERADE"])
    forward(nf, tcp(CLIENT, "8.8.8.8", 700, 443))
    p = forward(nf, tcp("10.244.0.9", "8.8.8.8", 700, 443))[0][-1].packet
    assert 600 <= p.l4.sport <= 1023 and p.l4.sport != 700
    forward(nf, tcp(CLIENT, "8.8.8.8", 100, 443))
    p = forward(nf, tcp("10.244.0.9", "8.8.8.8", 100, 443))[0][-1].packet
    assert 1 <= p.l4.sport <= 511 and p.l4.sport != 100


def test_masquerade_reuses_the_mapping_of_the_same_source():
    nf = make_nf(nat=["-A POSTROUTING -o eth0 -j MASQUERADE"])
    forward(nf, tcp(CLIENT, "8.8.8.8", 40000, 443))
    first = forward(nf, tcp("10.244.0.9", "8.8.8.8", 40000, 443))[0][-1].packet.l4.sport
    # the same pod socket to another destination keeps its external port
    again = forward(nf, tcp("10.244.0.9", "1.1.1.1", 40000, 443))[0][-1].packet.l4.sport
    assert again == first


def test_masquerade_to_ports_and_no_address():
    nf = make_nf(nat=["-A POSTROUTING -o eth0 -p udp -j MASQUERADE --to-ports 20000-20009",
                      "-A POSTROUTING -o eth9 -j MASQUERADE"])
    p = forward(nf, udp(CLIENT, "8.8.8.8", 5000, 53))[0][-1].packet
    assert 20000 <= p.l4.sport <= 20009
    res, _ = forward(nf, udp(CLIENT, "8.8.8.8", 5001, 53), out_dev="eth9")
    assert res[-1].verdict == "DROP" and "eth9" in res[-1].reason


def test_snat_single_port_clash_drops_at_confirm():
    nf = make_nf(nat=[f"-A POSTROUTING -p tcp -j SNAT --to-source {NODE}:1000"])
    assert forward(nf, tcp(CLIENT, "8.8.8.8", 5000, 80))[0][-1].packet.l4.sport == 1000
    res, _ = forward(nf, tcp("10.244.0.9", "8.8.8.8", 6000, 80))
    assert (res[-1].verdict, res[-1].reason) == ("DROP", "conntrack-clash")
    assert len(nf.conntrack) == 1


def test_snat_address_range_is_stable_per_source():
    nf = make_nf(nat=["-A POSTROUTING -j SNAT --to-source 192.0.2.10-192.0.2.13"])
    a = {str(forward(nf, udp(CLIENT, "8.8.8.8", 5000 + i, 53))[0][-1].packet.ip.src) for i in range(5)}
    assert len(a) == 1 and a.pop().startswith("192.0.2.1")


def test_null_binding_moves_the_source_port_on_a_reply_tuple_clash():
    """C:p -> VIP:80 is DNATed to EP:8080; then C:p -> EP:8080 directly would
    have the same reply tuple, so NAT picks another source port."""
    nf = make_nf(nat=DNAT)
    forward(nf, tcp(CLIENT, VIP, 40000, 80))
    res, meta = forward(nf, tcp(CLIENT, EP, 40000, 8080))
    p = res[-1].packet
    assert res[-1].verdict == "ACCEPT" and p.l4.sport != 40000 and checksums_ok(p)
    assert str(p.ip.src) == CLIENT and meta.ct.status & 0x10      # SRC_NAT
    assert any("null binding" in t.outcome for t in res[-1].trace)


def test_icmp_error_from_the_backend_is_translated_back():
    nf = make_nf(nat=DNAT)
    syn = tcp(CLIENT, VIP, 40000, 80, "S")
    res, _ = forward(nf, syn)
    seen_by_backend = res[-1].packet
    err = icmp_error(EP, CLIENT, seen_by_backend)
    res, meta = forward(nf, err, 1.1, "eth0", "cbr0")
    assert meta.ctinfo == "RELATED_REPLY" and res[-1].verdict == "ACCEPT"
    out = res[-1].packet
    assert str(out.ip.src) == VIP and str(out.ip.dst) == CLIENT
    assert checksums_ok(out)
    inner = out.l4.payload
    q_ip = inner[:20]
    from kdp.checksum import inet_checksum
    assert inet_checksum(q_ip) == 0
    assert q_ip[12:16] == wire.IPv4Address(CLIENT).packed and q_ip[16:20] == wire.IPv4Address(VIP).packed
    assert int.from_bytes(inner[20:22], "big") == 40000 and int.from_bytes(inner[22:24], "big") == 80


def test_icmp_error_from_a_router_after_snat_reaches_the_pod():
    nf = make_nf(nat=["-A POSTROUTING -o eth0 -j MASQUERADE"])
    p = udp(CLIENT, "8.8.8.8", 5000, 53)
    out = forward(nf, p)[0][-1].packet
    err = icmp_error("172.16.0.1", NODE, out, type=11, code=0)      # TTL exceeded on the way
    res, meta = forward(nf, err, 1.1, "eth0", "cbr0")
    back = res[-1].packet
    assert meta.ctinfo == "RELATED_REPLY" and str(back.ip.dst) == CLIENT
    assert str(back.ip.src) == "172.16.0.1" and checksums_ok(back)
    q = back.l4.payload
    assert q[12:16] == wire.IPv4Address(CLIENT).packed
    from kdp.checksum import inet_checksum
    assert inet_checksum(q[:20]) == 0                    # inner IP header checksum fixed
    # inner UDP checksum fixed too (full 8-byte header quoted): recompute over the original
    assert q[20:28] == wire.emit(p)[34:42]


def test_icmp_error_about_unknown_connection_is_invalid():
    nf = make_nf(filter=["-A FORWARD -m conntrack --ctstate INVALID -j DROP"])
    err = icmp_error("8.8.8.8", CLIENT, udp(CLIENT, "8.8.8.8", 5000, 53))
    res, meta = forward(nf, err, in_dev="eth0", out_dev="cbr0")
    assert res[-1].verdict == "DROP" and meta.ct is None


def test_reject_answer_after_dnat_is_translated_with_the_attached_entry():
    nf = make_nf(nat=DNAT, filter=[f"-A FORWARD -d {EP} -j REJECT"])
    res, meta = forward(nf, tcp(CLIENT, VIP, 40000, 80))
    err, gm = res[-1].generated[0], res[-1].generated_meta[0]
    out = send(nf, err, 1.0, "cbr0", meta=gm)[0][-1].packet
    assert str(out.ip.src) == VIP and checksums_ok(out)       # outer source un-DNATed
    assert out.l4.payload[16:20] == wire.IPv4Address(VIP).packed
    assert int.from_bytes(out.l4.payload[22:24], "big") == 80
    assert len(nf.conntrack) == 0


def test_redirect_prerouting_and_output():
    nf = make_nf(nat=["-A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 15001",
                      "-A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001"])
    res, _ = deliver(nf, tcp(CLIENT, "1.2.3.4", 40000, 80))
    p = res[-1].packet
    assert (str(p.ip.dst), p.l4.dport) == ("10.244.0.1", 15001) and checksums_ok(p)
    r, _ = hook(nf, "OUTPUT", tcp(NODE, "1.2.3.4", 40001, 80))
    assert (str(r.packet.ip.dst), r.packet.l4.dport) == ("127.0.0.1", 15001)


def test_node_to_service_locally_generated_and_its_reply_delivered():
    nf = make_nf(nat=DNAT)
    out = send(nf, tcp(NODE, VIP, 45000, 80))[0][-1].packet
    assert (str(out.ip.dst), out.l4.dport) == (EP, 8080)
    res, meta = deliver(nf, reply_to(out), 1.1, "eth0")
    back = res[-1].packet
    assert (str(back.ip.src), back.l4.sport) == (VIP, 80) and checksums_ok(back)
    assert meta.ctinfo == "ESTABLISHED_REPLY"
    assert any(t.outcome.startswith("nat un-dnat") and t.chain == "INPUT" for t in res[-1].trace)


def test_icmp_echo_through_dnat_and_masquerade():
    nf = make_nf(nat=[f"-A PREROUTING -d {VIP} -p icmp -j DNAT --to-destination {EP}",
                      "-A POSTROUTING -o eth0 -j MASQUERADE"])
    out = forward(nf, icmp(CLIENT, VIP, id=77))[0][-1].packet
    assert str(out.ip.dst) == EP and str(out.ip.src) == NODE and checksums_ok(out)
    back = forward(nf, reply_to(out), 1.1, "eth0", "cbr0")[0][-1].packet
    assert (str(back.ip.src), str(back.ip.dst), back.l4.ident) == (VIP, CLIENT, 77)
    assert back.l4.type == 0 and checksums_ok(back)


def test_dropped_first_packet_leaves_no_entry_and_no_binding():
    nf = make_nf(nat=DNAT, filter=["-A FORWARD -m conntrack --ctstate NEW -j DROP"])
    assert forward(nf, tcp(CLIENT, VIP, 40000, 80))[0][-1].verdict == "DROP"
    assert len(nf.conntrack) == 0


def test_established_flows_skip_nat_rules_even_after_reload():
    nf = make_nf(nat=DNAT)
    forward(nf, tcp(CLIENT, VIP, 40000, 80))
    nf.load(make_nf(nat=[f"-A PREROUTING -d {VIP} -p tcp -j DNAT --to-destination 10.9.9.9"]).ruleset)
    p = forward(nf, tcp(CLIENT, VIP, 40000, 80, "S"), 2.0)[0][-1].packet
    assert str(p.ip.dst) == EP                 # retransmitted SYN keeps its binding
    p = forward(nf, tcp(CLIENT, VIP, 40001, 80, "S"), 2.0)[0][-1].packet
    assert str(p.ip.dst) == "10.9.9.9"


def test_nat_rules_hit_counts_first_packets_only():
    nf = make_nf(nat=DNAT)
    for i in range(3):
        forward(nf, tcp(CLIENT, VIP, 40000, 80, "S" if i == 0 else "A"), 1.0 + i)
    assert nf.ruleset.chain("nat", "PREROUTING").rules[0].packets == 1
    assert rules_hit(forward(nf, tcp(CLIENT, VIP, 40002, 80))[0][0], "nat") == [("nat", "PREROUTING", 1)]
