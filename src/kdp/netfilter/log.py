# netfilter.log: the text of a LOG target line, as nf_log_syslog.c formats
# it for IPv4 ("PREFIX IN=.. OUT=.. MAC=.. SRC=.. DST=.. LEN=.. ..."),
# without the syslog level prefix. Formatting only.
from __future__ import annotations

import struct

from kdp.addr import mac_to_bytes
from kdp.wire import ICMP, TCP, UDP, emit_l4

LOG_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "error": 3, "err": 3, "warning": 4, "warn": 4,
              "notice": 5, "info": 6, "debug": 7, "panic": 0}


def _tcp(l4: TCP, seq: bool) -> str:
    out = f"PROTO=TCP SPT={l4.sport} DPT={l4.dport} "
    if seq:
        out += f"SEQ={l4.seq} ACK={l4.ack} "
    out += f"WINDOW={l4.window} RES=0x00 "
    for bit, name in ((0x80, "CWR"), (0x40, "ECE"), (0x20, "URG"), (0x10, "ACK"), (0x08, "PSH"),
                      (0x04, "RST"), (0x02, "SYN"), (0x01, "FIN")):
        if l4.flags & bit:
            out += name + " "
    return out + f"URGP={l4.urg} "


def _ip(ip, l4, payload_len: int, seq: bool, inner: bytes | None = None) -> str:
    out = f"SRC={ip.src} DST={ip.dst} LEN={ip.header_len + payload_len} " \
          f"TOS=0x{ip.tos & 0x1E:02X} PREC=0x{ip.tos & 0xE0:02X} TTL={ip.ttl} ID={ip.ident} "
    if ip.flags & 4:
        out += "CE "
    if ip.flags & 2:
        out += "DF "
    if ip.flags & 1:
        out += "MF "
    if ip.frag:
        out += f"FRAG:{ip.frag} "
    if isinstance(l4, TCP):
        return out + _tcp(l4, seq)
    if isinstance(l4, UDP):
        return out + f"PROTO=UDP SPT={l4.sport} DPT={l4.dport} LEN={8 + len(l4.payload)} "
    if isinstance(l4, ICMP):
        out += f"PROTO=ICMP TYPE={l4.type} CODE={l4.code} "
        if l4.type in (0, 8):
            out += f"ID={l4.ident} SEQ={l4.seq} "
        elif l4.type in (3, 4, 11):
            out += "[" + _quoted(l4.payload) + "] "
            if l4.type == 3 and l4.code == 4:
                out += f"MTU={l4.rest & 0xFFFF} "
        return out
    return out + f"PROTO={ip.proto} "


def _quoted(b: bytes) -> str:
    """The packet quoted in an ICMP error, logged once more (truncated L4)."""
    if len(b) < 20:
        return "INCOMPLETE [%u bytes]" % len(b)
    ihl = (b[0] & 0x0F) * 4
    total, ident, ff = struct.unpack("!HHH", b[2:8])
    tos, ttl, proto = b[1], b[8], b[9]
    out = (f"SRC={'.'.join(map(str, b[12:16]))} DST={'.'.join(map(str, b[16:20]))} LEN={total} "
           f"TOS=0x{tos & 0x1E:02X} PREC=0x{tos & 0xE0:02X} TTL={ttl} ID={ident} ")
    if ff & 0x4000:
        out += "DF "
    l4 = b[ihl:]
    name = {6: "TCP", 17: "UDP", 1: "ICMP"}.get(proto)
    if name is None:
        return out + f"PROTO={proto} "
    out += f"PROTO={name} "
    need = {6: 20, 17: 8, 1: 8}[proto]
    if len(l4) < need:
        return out + f"INCOMPLETE [{len(l4)} bytes] "
    if proto == 1:
        return out + f"TYPE={l4[0]} CODE={l4[1]} "
    sport, dport = struct.unpack("!HH", l4[:4])
    if proto == 17:
        return out + f"SPT={sport} DPT={dport} LEN={struct.unpack('!H', l4[4:6])[0]} "
    return out + f"SPT={sport} DPT={dport} "


def log_line(target, pc) -> str:
    pkt, hs = pc.pkt, pc.hs
    out = f"{target.prefix}IN={hs.in_dev or ''} OUT={hs.out_dev or ''} "
    if hs.physin and hs.physin != hs.in_dev:
        out += f"PHYSIN={hs.physin} "
    if hs.physout and hs.physout != hs.out_dev:
        out += f"PHYSOUT={hs.physout} "
    if hs.in_dev:
        eth = pkt.eth
        if "macdecode" in target.flags:
            out += f"MACSRC={eth.src} MACDST={eth.dst} MACPROTO={eth.type:04x} "
        else:
            raw = mac_to_bytes(eth.dst) + mac_to_bytes(eth.src) + struct.pack("!H", eth.type)
            out += "MAC=" + ":".join(f"{x:02x}" for x in raw) + " "
    ip = pkt.ip
    if ip is None:
        return out.rstrip()
    l4 = pkt.l4
    plen = len(emit_l4(l4)) if l4 is not None else len(pkt.payload)
    out += _ip(ip, l4, plen, "tcp_sequence" in target.flags)
    if pc.meta.mark:
        out += f"MARK=0x{pc.meta.mark:x} "
    return out.rstrip()
