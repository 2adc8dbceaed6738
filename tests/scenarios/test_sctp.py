# SCTP Services end to end (issue 13 item 1): kube-proxy's `-p sctp -m sctp` rules
# load and match, conntrack follows nf_conntrack_proto_sctp's states and timeouts,
# NAT rewrites SCTP ports with a fresh CRC32c, the pod's SCTP stack answers.
import struct
from dataclasses import replace

import pytest

from kdp import wire
from kdp.conntrack import ConntrackTable
from kdp.conntrack.track import conntrack_in
from kdp.emulator import Emulator
from kdp.k8s import load_cluster_text
from kdp.k8s.kubeproxy import node_rules

YAML = """
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: sc}
spec:
  vnetSubnet: 10.240.0.0/16
  nodes: [{name: n1}, {name: n2}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: s1, namespace: default, labels: {app: s}}
spec: {nodeName: n2, containers: [{name: s, ports: [{containerPort: 9999, protocol: SCTP}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: default}
spec: {type: NodePort, selector: {app: s},
       ports: [{port: 80, targetPort: 9999, protocol: SCTP, nodePort: 30099}]}
"""


@pytest.fixture
def emu():
    return Emulator(load_cluster_text(YAML, file="sctp.yaml"), seed=3)


def sent(out):
    """The first SCTP frame of a trace, as the client sent it."""
    return next(p for _d, _dir, p in out.frames if isinstance(p.l4, wire.SCTP))


def frames_ok(out):
    return all(wire.l4_checksum_ok(p) and wire.ip_checksum_ok(p)
               for _d, _dir, p in out.frames if p.ip is not None)


def test_rules_have_the_sctp_match():
    text = node_rules(load_cluster_text(YAML, file="sctp.yaml"), "n1")
    assert ('-A KUBE-SERVICES -d 10.0.0.1/32 -p sctp -m comment --comment "default/s cluster IP" '
            '-m sctp --dport 80 -j KUBE-SVC-') in text
    assert '-A KUBE-NODEPORTS -p sctp -m comment --comment "default/s" -m sctp --dport 30099' in text


def test_clusterip_init_is_dnated_and_answered(emu):
    out = emu.trace("pod/default/client", "svc/default/s")
    assert out.delivered_to == "pod/default/s1"
    assert (out.packet.ip.dst, out.packet.l4.dport) == (emu.cluster.pod("default", "s1").ip, 9999)
    r = out.reply.packet
    assert out.reply.delivered_to == "pod/default/client" and (str(r.ip.src), r.l4.sport) == ("10.0.0.1", 80)
    assert [c.name for c in wire.sctp_chunks(r.l4)] == ["INIT_ACK"]
    assert r.l4.vtag == int.from_bytes(wire.sctp_chunks(sent(out).l4)[0].value[:4], "big")
    assert frames_ok(out) and frames_ok(out.reply)          # CRC32c right after every rewrite
    line = emu.namespace("node/n1").netfilter.conntrack.to_conntrack_l(0.0)
    assert line.startswith("sctp     132 3 COOKIE_WAIT src=10.244.0.2 dst=10.0.0.1 sport=")
    assert "[ASSURED]" not in line


def test_nodeport_snat_port_gets_a_fresh_crc(emu):
    out = emu.trace("ext/8.8.8.8", "10.240.0.4", proto="sctp", dport=30099, sport=5000)
    assert out.delivered_to == "pod/default/s1" and out.packet.ip.src != wire.IPv4Address("8.8.8.8")
    assert out.packet.l4.sport != 5000                      # MASQUERADE --random-fully
    assert wire.l4_checksum_ok(out.packet) and frames_ok(out)
    r = out.reply.packet
    assert out.reply.delivered_to == "ext/8.8.8.8" and (r.l4.sport, r.l4.dport) == (30099, 5000)
    assert wire.l4_checksum_ok(r)


def test_init_to_a_closed_port_gets_abort(emu):
    s1 = emu.cluster.pod("default", "s1")
    out = emu.trace("pod/default/client", str(s1.ip), proto="sctp", dport=7)
    r = out.reply.packet
    assert [c.name for c in wire.sctp_chunks(r.l4)] == ["ABORT"]
    assert not wire.sctp_chunks(r.l4)[0].flags & wire.SCTP_FLAG_T      # vtag = the INIT's tag
    assert out.reply.delivered_to == "pod/default/client"


def _send(emu, ns, pkt, t):
    return emu.datapath.originate(emu.namespace(ns), wire.finalize(pkt), t)


def test_handshake_reaches_established_with_the_kernel_timeouts(emu):
    first = emu.trace("pod/default/client", "svc/default/s", sport=40000, time=0.0)
    peer = int.from_bytes(wire.sctp_chunks(first.reply.packet.l4)[0].value[:4], "big")
    pkt = emu.build(sent(first).ip.src, sent(first).ip.dst, "sctp", 40000, 80)
    echo = replace(pkt, l4=wire.SCTP(40000, 80, peer, 0, wire.sctp_chunk(10, b"cookie")))
    out = _send(emu, "pod/default/client", echo, 1.0)
    assert [c.name for c in wire.sctp_chunks(out.reply.packet.l4)] == ["COOKIE_ACK"]
    ct = emu.namespace("node/n1").netfilter.conntrack.to_conntrack_l(1.0)
    assert ct.startswith("sctp     132 210 ESTABLISHED ") and "[ASSURED]" in ct
    # DATA with the right tag is echoed back; with a wrong tag it is INVALID on the node
    data = wire.sctp_chunk(0, struct.pack("!IHHI", 7, 0, 0, 0) + b"hello", flags=3)
    out = _send(emu, "pod/default/client", replace(echo, l4=wire.SCTP(40000, 80, peer, 0, data)), 2.0)
    chunks = wire.sctp_chunks(out.reply.packet.l4)
    assert [c.name for c in chunks] == ["SACK", "DATA"] and chunks[1].value.endswith(b"hello")
    bad = _send(emu, "pod/default/client", replace(echo, l4=wire.SCTP(40000, 80, peer ^ 1, 0, data)), 3.0)
    assert bad.disposition == "dropped" and bad.reason.startswith("rule:filter/KUBE-FORWARD#1")


def _pkt(chunks: bytes, vtag: int = 0, sport: int = 1000, dport: int = 80, swap: bool = False):
    src, dst = wire.IPv4Address("10.0.0.1"), wire.IPv4Address("10.0.0.2")
    if swap:
        src, dst, sport, dport = dst, src, dport, sport
    return wire.finalize(wire.Packet(wire.Ether("0:0:0:0:0:1", "0:0:0:0:0:2", wire.ETH_P_IP),
                                     ip=wire.IPv4(src, dst, wire.PROTO_SCTP),
                                     l4=wire.SCTP(sport, dport, vtag, 0, chunks)))


def test_conntrack_state_machine():
    t = ConntrackTable()
    init = wire.sctp_init(0x11111111, 1)
    data = wire.sctp_chunk(0, struct.pack("!IHHI", 1, 0, 0, 0) + b"x")
    assert conntrack_in(t, _pkt(data, 5), 0, prerouting=True).invalid == "sctp DATA cannot open a connection"
    assert conntrack_in(t, _pkt(init, 9), 0, prerouting=True).invalid.startswith("sctp INIT with a nonzero")
    assert conntrack_in(t, _pkt(init + data), 0, prerouting=True).invalid.startswith("sctp DATA chunk not")
    bad_crc = replace(_pkt(init), l4=replace(_pkt(init).l4, checksum=1))
    assert conntrack_in(t, bad_crc, 0, prerouting=True).invalid == "bad sctp checksum"
    res = conntrack_in(t, _pkt(init), 0, prerouting=True)
    assert res.new and res.entry.sctp.state == "CLOSED" and res.entry.timeout_at == 10
    t.confirm(res.entry, 0)
    e = res.entry
    ack = conntrack_in(t, _pkt(wire.sctp_init(0x22222222, 5, ack=True), 0x11111111, swap=True), 1,
                       prerouting=True)
    assert ack.entry is e and e.sctp.state == "COOKIE_WAIT" and e.timeout_at == 4
    assert conntrack_in(t, _pkt(wire.sctp_chunk(10, b"c"), 0x11111111), 2,
                        prerouting=True).invalid.startswith("sctp COOKIE ECHO verification tag")
    conntrack_in(t, _pkt(wire.sctp_chunk(10, b"c"), 0x22222222), 2, prerouting=True)
    assert e.sctp.state == "COOKIE_ECHOED" and not e.assured
    conntrack_in(t, _pkt(wire.sctp_chunk(11), 0x11111111, swap=True), 3, prerouting=True)
    assert e.sctp.state == "ESTABLISHED" and e.assured and e.timeout_at == 213
    conntrack_in(t, _pkt(wire.sctp_chunk(7, b"\0\0\0\1"), 0x22222222), 4, prerouting=True)
    assert e.sctp.state == "SHUTDOWN_SENT" and e.timeout_at == 7
    conntrack_in(t, _pkt(wire.sctp_chunk(8), 0x11111111, swap=True), 5, prerouting=True)
    conntrack_in(t, _pkt(wire.sctp_chunk(14), 0x22222222), 6, prerouting=True)
    assert e.sctp.state == "CLOSED" and e.timeout_at == 16


def test_sctp_match_options_and_chunk_walk():
    from kdp.netfilter import parse_rule
    from kdp.netfilter.engine import PacketCtx
    rule = parse_rule("filter", "INPUT", "-p sctp -m sctp --dport 80 --chunk-types only INIT,DATA:Be "
                      "-j DROP".split())
    assert str(rule) == "<Rule -A INPUT -p sctp -m sctp --dport 80 --chunk-types only DATA:Be,INIT -j DROP>"
    m = [x for x in rule.matches if x.name == "sctp"][0]
    data = wire.sctp_chunk(0, struct.pack("!IHHI", 1, 0, 0, 0), flags=0x02)       # B set, E clear
    for chunks, want in ((wire.sctp_init(1, 1), True), (data, True), (data + data, True),
                         (wire.sctp_chunk(0, b"\0" * 12, flags=0x03), False),
                         (wire.sctp_chunk(3, b"\0" * 12), False), (b"", False)):
        pc = type("PC", (), {"l4": _pkt(chunks).l4})()
        assert m.matches(pc) == want, chunks
    anyrule = parse_rule("filter", "INPUT", "-p sctp -m sctp ! --chunk-types any ABORT -j DROP".split())
    assert "! --chunk-types any ABORT" in str(anyrule)
    with pytest.raises(Exception, match="unknown SCTP chunk type"):
        parse_rule("filter", "INPUT", "-p sctp -m sctp --chunk-types any BOGUS".split())


def test_without_the_sctp_module_the_related_icmp_quotes_a_fixed_crc(emu):
    """A pod whose kernel has no sctp module answers ICMP protocol unreachable; on
    the way back the node un-NATs the quoted INIT and recomputes its CRC32c over
    the quoted bytes (sctp_manip_pkt), as the kernel oracle shows."""
    emu.namespace("pod/default/s1").sockets.sctp_stack = False
    out = emu.trace("pod/default/client", "svc/default/s")
    r = out.reply.packet
    assert out.reply.delivered_to == "pod/default/client" and (r.l4.type, r.l4.code) == (3, 2)
    inner = r.l4.payload
    assert inner[16:20] == bytes([10, 0, 0, 1]) and struct.unpack("!H", inner[22:24])[0] == 80
    from kdp.checksum import crc32c
    body = inner[20:28] + b"\0\0\0\0" + inner[32:]
    assert struct.unpack("<I", inner[28:32])[0] == crc32c(body)


def test_kdp_testing_invariants_hold_for_sctp_flows(emu):
    from kdp.testing.invariants import check_flow
    from kdp.testing.strategies import Flow
    for flow in (Flow("pod/default/client", "svc/default/s", "sctp", 40000, 80),
                 Flow("ext/8.8.8.8", "10.240.0.4", "sctp", 40001, 30099)):
        assert check_flow(emu, flow).delivered_to == "pod/default/s1"


def test_multiport_matches_sctp_ports():
    from kdp.netfilter import parse_rule
    m = parse_rule("filter", "INPUT", "-p sctp -m multiport --dports 80,90:99 -j DROP".split()).matches[0]
    assert m.matches(type("PC", (), {"l4": _pkt(b"", dport=95).l4})())
    assert not m.matches(type("PC", (), {"l4": _pkt(b"", dport=100).l4})())


def test_sctp_rules_print_back_as_the_real_iptables_save_printed_them():
    """Lines the real iptables-save printed for these rules (1.8, in a netns; the gated
    tests/unit/netfilter/test_nf_oracle_save.py checks them live)."""
    from kdp.netfilter import parse_iptables_save
    lines = ["-A INPUT -p sctp -m sctp ! --sport 1000:2000 --dport 80 -j ACCEPT",
             "-A INPUT -p sctp -m sctp --chunk-types only DATA:Be,INIT -j DROP",
             "-A INPUT -p sctp -m sctp ! --chunk-types all ABORT:T,SHUTDOWN_COMPLETE:t -j DROP",
             "-A INPUT -p sctp -m sctp --chunk-types any ALL -j DROP",
             "-A INPUT -p sctp -m sctp --chunk-types only NONE -j DROP"]
    text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + \
        "\n".join(lines) + "\nCOMMIT\n"
    saved = parse_iptables_save(text, "t").to_iptables_save()
    assert [ln for ln in saved.splitlines() if ln.startswith("-A")] == lines
