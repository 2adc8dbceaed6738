# net.sctpsock: the SCTP half of a namespace's socket table, as the Linux SCTP
# stack answers (net/sctp/sm_statefuns.c): a listener answers INIT with INIT ACK
# (its own verification tag, a state cookie), COOKIE ECHO with COOKIE ACK, DATA
# with SACK (the echo app sends the data back); an INIT to a port nobody listens
# on gets ABORT (verification tag = the INIT's initiate tag, T bit clear), other
# out-of-the-blue packets ABORT with the T bit (their own tag reflected) except
# ABORT, SHUTDOWN COMPLETE and COOKIE ACK, which are discarded (RFC 9260 8.4).
# One association per 4-tuple; no multi-homing, no retransmission.
from __future__ import annotations

import struct

from .. import wire
from ..conntrack.keyed import keyed_hash
from ..wire import SCTP, IPv4, Packet, sctp_chunk, sctp_chunks
from .replies import BLANK_ETH, Delivery


def _packet(table, ip: IPv4, l4: SCTP, vtag: int, chunks: bytes) -> Packet:
    ident = table.idents.select(ip.dst, ip.src, wire.PROTO_SCTP, table._now)   # net.ipident
    return wire.finalize(Packet(BLANK_ETH, ip=IPv4(ip.dst, ip.src, wire.PROTO_SCTP, 64, ident, 2),
                                l4=SCTP(l4.dport, l4.sport, vtag, 0, chunks)))


def sctp_deliver(table, ip: IPv4, l4: SCTP) -> Delivery:
    chunks = sctp_chunks(l4)
    if not chunks:
        return Delivery("consumed", "SCTP packet without chunks discarded")
    first = chunks[0]
    key = (ip.dst, l4.dport, ip.src, l4.sport)
    lst = table.listeners.get(("SCTP", l4.dport))
    assoc = table.sctp.get(key)
    if first.type == wire.SCTP_INIT and len(first.value) >= 16:
        peer_tag, peer_tsn = struct.unpack("!I8xI", first.value[:16])
        if lst is None:
            return Delivery("closed", f"SCTP port {l4.dport} closed: ABORT",
                            [_packet(table, ip, l4, peer_tag, sctp_chunk(wire.SCTP_ABORT))])
        mine = keyed_hash(table.seed, "sctp-tag", table.ns_name, *map(str, key),
                          seed_as_key=False) & 0xFFFFFFFF or 1
        table.sctp[key] = (peer_tag, mine, "COOKIE_WAIT")
        table.watch.touch(("sock", id(table), key))
        ack = wire.sctp_init(mine, mine ^ peer_tsn, ack=True)
        return Delivery("answered", f"SCTP :{l4.dport} ({lst.owner}) INIT -> INIT ACK",
                        [_packet(table, ip, l4, peer_tag, ack)], lst.owner)
    if assoc is not None and l4.vtag == assoc[1]:
        peer_tag, mine, _state = assoc
        if first.type == wire.SCTP_INIT_ACK and len(first.value) >= 4:
            table.sctp[key] = (struct.unpack("!I", first.value[:4])[0], mine, "COOKIE_ECHOED")
            return Delivery("consumed", f"SCTP INIT ACK received by client socket :{l4.dport}")
        if first.type == wire.SCTP_ABORT:
            del table.sctp[key]
            return Delivery("consumed", "SCTP association aborted by the peer")
        if first.type == 10:                                   # COOKIE ECHO
            table.sctp[key] = (peer_tag, mine, "ESTABLISHED")
            return Delivery("answered", f"SCTP :{l4.dport} COOKIE ECHO -> COOKIE ACK",
                            [_packet(table, ip, l4, peer_tag, sctp_chunk(11))],
                            lst.owner if lst else None)
        data = [c for c in chunks if c.type == wire.SCTP_DATA and len(c.value) >= 12]
        if data:
            tsn = struct.unpack("!I", data[-1].value[:4])[0]
            sack = sctp_chunk(3, struct.pack("!IIHH", tsn, 106496, 0, 0))
            out = sack
            if lst is not None:
                payload = b"".join(c.value[12:] for c in data)
                back, detail = lst.app.datagram(payload, (ip.src, l4.sport), (ip.dst, l4.dport), 0.0)
                if back is not None:
                    out += sctp_chunk(wire.SCTP_DATA, struct.pack("!IHHI", tsn, 0, 0, 0) + back,
                                      flags=0x03)
            return Delivery("answered", f"SCTP :{l4.dport} DATA -> SACK",
                            [_packet(table, ip, l4, peer_tag, out)], lst.owner if lst else None)
        return Delivery("consumed", f"SCTP {first.name} received")
    if first.type in (wire.SCTP_ABORT, 14, 11):
        return Delivery("consumed", f"out-of-the-blue SCTP {first.name} discarded")
    return Delivery("closed", f"out-of-the-blue SCTP {first.name}: ABORT",
                    [_packet(table, ip, l4, l4.vtag, sctp_chunk(wire.SCTP_ABORT, flags=1))])
