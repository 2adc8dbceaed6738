# Targets: MARK/CONNMARK arithmetic, LOG lines, REJECT answers (ICMP errors
# and TCP RSTs built like the kernel's nf_send_unreach / nf_send_reset), NOTRACK.
import pytest

from kdp import wire
from kdp.netfilter import SkbMeta
from nf_helpers import checksums_ok, deliver, forward, hook, icmp, make_nf, send, tcp, udp

CLIENT, VIP = "10.244.0.5", "10.0.141.7"


@pytest.mark.parametrize("target,before,after", [
    ("--set-mark 0x4000", 0x1, 0x4000),
    ("--set-mark 0x4000/0x4000", 0x1, 0x4001),
    ("--set-xmark 0x4000/0x4000", 0x4001, 0x4001),
    ("--set-xmark 0x4000/0x0", 0x4001, 0x0001),       # kube-proxy's --xor-mark 0x4000
    ("--or-mark 0x4000", 0x1, 0x4001),
    ("--and-mark 0xff", 0x4011, 0x11),
    ("--xor-mark 0x3", 0x1, 0x2),
])
def test_mark_arithmetic(target, before, after):
    nf = make_nf(mangle=[f"-A PREROUTING -j MARK {target}"])
    meta = SkbMeta(mark=before)
    r, _ = hook(nf, "PREROUTING", tcp(CLIENT, VIP), meta)
    assert meta.mark == after and r.verdict == "ACCEPT"


def test_mark_continues_to_the_next_rule():
    nf = make_nf(filter=["-A INPUT -j MARK --set-mark 0x2", "-A INPUT -m mark --mark 0x2 -j DROP"])
    assert hook(nf, "INPUT", tcp(CLIENT, VIP))[0].reason == "rule:filter/INPUT#2"


def test_connmark_save_and_restore_across_packets():
    nf = make_nf(mangle=["-A PREROUTING -j CONNMARK --restore-mark",
                         "-A PREROUTING -m mark --mark 0x0 -j MARK --set-mark 0x7",
                         "-A PREROUTING -j CONNMARK --save-mark --mask 0xf"])
    syn = tcp(CLIENT, "10.244.1.6", 41000, 80)
    _, meta = forward(nf, syn)
    assert meta.mark == 7 and meta.ct.mark == 7
    # the next packet of the connection starts with mark 0 and gets it back
    m2 = SkbMeta()
    forward(nf, tcp(CLIENT, "10.244.1.6", 41000, 80, "A"), meta=m2)
    assert m2.mark == 7
    assert "mark=7" in nf.conntrack.to_conntrack_l(2.0)


def test_connmark_set_and_masks():
    nf = make_nf(mangle=["-A PREROUTING -j CONNMARK --set-xmark 0x30/0xf0",
                         "-A PREROUTING -j CONNMARK --restore-mark --nfmask 0xf --ctmask 0xf0"])
    _, meta = forward(nf, tcp(CLIENT, "10.244.1.6"), meta=SkbMeta(mark=0x105))
    assert meta.ct.mark == 0x30
    assert meta.mark == (0x105 & ~0xf) ^ 0x30


def test_connmark_without_entry_is_a_no_op():
    nf = make_nf(raw=["-A PREROUTING -j NOTRACK"], mangle=["-A PREROUTING -j CONNMARK --set-mark 1"])
    _, meta = forward(nf, tcp(CLIENT, "10.244.1.6"))
    assert meta.ct is None and meta.state == "UNTRACKED"


def test_log_line_kernel_format():
    nf = make_nf(filter=['-A FORWARD -j LOG --log-prefix "KUBE-DROP: " --log-tcp-sequence'])
    p = tcp(CLIENT, "10.244.1.6", 40000, 80, "S", ttl=63, id=321)
    res, meta = forward(nf, p, meta=SkbMeta(mark=0x4000))
    line = res[1].log[0]
    assert line == ("KUBE-DROP: IN=cbr0 OUT=eth0 MAC=0a:58:0a:f4:00:01:0a:58:0a:f4:00:05:08:00 "
                    "SRC=10.244.0.5 DST=10.244.1.6 LEN=40 TOS=0x00 PREC=0x00 TTL=63 ID=321 "
                    "PROTO=TCP SPT=40000 DPT=80 SEQ=1000 ACK=0 WINDOW=8192 RES=0x00 SYN URGP=0 "
                    "MARK=0x4000")
    assert res[-1].verdict == "ACCEPT"            # LOG does not end the walk
    assert any(t.kind == "log" for t in res[1].trace)


def test_log_udp_icmp_and_output_hook():
    nf = make_nf(filter=["-A OUTPUT -j LOG", "-A INPUT -j LOG --log-prefix IN-"])
    r = send(nf, udp("10.224.0.4", "10.0.0.10", 5353, 53, b"abcd"))[0][0]
    assert r.log == ["IN= OUT=eth0 SRC=10.224.0.4 DST=10.0.0.10 LEN=32 TOS=0x00 PREC=0x00 TTL=64 "
                     "ID=1 PROTO=UDP SPT=5353 DPT=53 LEN=12"]
    res, _ = deliver(nf, icmp(CLIENT, "10.244.0.1", id=9, seq=4))
    assert res[1].log[0].startswith("IN-IN=cbr0 OUT= MAC=")
    assert "PROTO=ICMP TYPE=8 CODE=0 ID=9 SEQ=4" in res[1].log[0]


def test_reject_icmp_port_unreachable_from_a_forwarding_node():
    nf = make_nf(filter=["-A FORWARD -d 10.0.141.7 -p tcp -m tcp --dport 80 -j REJECT"])
    syn = tcp(CLIENT, VIP, 40000, 80, "S", tos=0x10)
    res, meta = forward(nf, syn)
    r = res[-1]
    assert (r.verdict, r.rejected, r.reason) == ("DROP", True, "rule:filter/FORWARD#1")
    (err,) = r.generated
    assert checksums_ok(err)
    assert (err.ip.src, err.ip.dst) == (wire.IPv4Address("10.244.0.1"), syn.ip.src)   # cbr0's address
    assert (err.ip.ttl, err.ip.flags, err.ip.tos, err.ip.proto) == (64, 0, 0xD0, 1)
    assert (err.l4.type, err.l4.code) == (3, 3)
    quoted = wire.emit(syn)[14:]
    assert err.l4.payload == quoted          # whole offending packet (under 548 bytes)
    assert len(nf.conntrack) == 0            # dropped before confirm: no entry
    (gm,) = r.generated_meta
    assert gm.ct is meta.ct and gm.ctinfo == "RELATED_REPLY"


def test_reject_icmp_from_local_destination_uses_that_address():
    nf = make_nf(filter=["-A INPUT -p udp -j REJECT --reject-with icmp-host-prohibited"])
    res, _ = deliver(nf, udp(CLIENT, "10.224.0.4", 5000, 9))
    err = res[-1].generated[0]
    assert str(err.ip.src) == "10.224.0.4" and err.l4.code == 10


def test_reject_quotes_at_most_548_bytes():
    nf = make_nf(filter=["-A INPUT -j REJECT --reject-with icmp-net-unreachable"])
    res, _ = deliver(nf, udp(CLIENT, "10.244.0.1", 5000, 9, b"x" * 1000))
    err = res[-1].generated[0]
    assert len(err.l4.payload) == 548 and err.l4.code == 0 and checksums_ok(err)


def test_reject_never_answers_an_icmp_error_or_bad_checksum():
    nf = make_nf(filter=["-A INPUT -j REJECT"])
    res, _ = deliver(nf, icmp(CLIENT, "10.244.0.1", type=3, code=1, payload=b"\x45" + b"\x00" * 27))
    assert res[-1].rejected and res[-1].generated == []
    bad = tcp(CLIENT, "10.244.0.1")
    bad = wire.Packet(bad.eth, ip=bad.ip, l4=wire.TCP(40000, 22, checksum=1))
    nf2 = make_nf(filter=["-A INPUT -j REJECT"])
    r, _ = hook(nf2, "INPUT", bad)
    assert r.verdict == "DROP" and r.generated == []


def test_reject_tcp_reset_to_a_syn():
    nf = make_nf(filter=["-A INPUT -p tcp -j REJECT --reject-with tcp-reset"])
    syn = tcp(CLIENT, "10.244.0.1", 40000, 22, "S")
    rst = deliver(nf, syn)[0][-1].generated[0]
    assert checksums_ok(rst)
    assert (rst.ip.src, rst.ip.dst, rst.ip.ttl, rst.ip.flags, rst.ip.ident) == \
        (syn.ip.dst, syn.ip.src, 64, 2, 0)
    t = rst.l4
    assert (t.sport, t.dport, t.flags, t.seq, t.ack, t.window) == (22, 40000, wire.RST | wire.ACK,
                                                                   0, 1001, 0)


def test_reject_tcp_reset_to_an_ack_with_data():
    nf = make_nf(filter=["-A INPUT -p tcp -j REJECT --reject-with tcp-reset"])
    seg = tcp(CLIENT, "10.244.0.1", 40000, 22, "PA", b"hello")
    rst = deliver(nf, seg)[0][-1].generated[0]
    assert (rst.l4.flags, rst.l4.seq, rst.l4.ack) == (wire.RST, 5000, 0)


def test_reject_no_reset_for_a_reset():
    nf = make_nf(filter=["-A INPUT -p tcp -j REJECT --reject-with tcp-reset"])
    assert deliver(nf, tcp(CLIENT, "10.244.0.1", flags="R"))[0][-1].generated == []


def test_notrack_in_raw_leaves_no_entry():
    nf = make_nf(raw=["-A PREROUTING -p udp -j CT --notrack"])
    _, meta = forward(nf, udp(CLIENT, "10.244.1.6"))
    assert meta.notrack and meta.ct is None and len(nf.conntrack) == 0
    _, meta = forward(nf, tcp(CLIENT, "10.244.1.6"))
    assert meta.ct is not None and len(nf.conntrack) == 1
