# dns.server: DNS servers as socket apps (net.sockets' datagram/stream
# interface): CoreDNS behind the CoreDNS pods' port 53 and the VNet's resolver
# behind the outside world's port 53. Turns query bytes into response bytes the
# way CoreDNS (miekg/dns) does: header checks before parsing, FORMERR, NOTIMP,
# BADVERS, REFUSED for other classes, EDNS echo, truncation to the UDP size with
# TC, and TCP's 2-byte length framing with queries split over segments.
from __future__ import annotations

import struct

from . import wire
from .wire import (BADVERS, CLASS_IN, FORMERR, NOTIMP, OP_QUERY, REFUSED, DnsFormatError, Edns,
                   Message)
from .zone import Answer, CoreDNS, Upstream


class DnsServer:
    """A DNS server app. `lookup(qname, qtype) -> Answer` decides the answers."""

    name = "dns"

    def __init__(self, lookup, label: str = "dns"):
        self.lookup = lookup
        self.name = label

    # --- socket app interface -------------------------------------------------
    def datagram(self, payload: bytes, src, dst, now: float):
        out, detail = self.respond(payload, tcp=False)
        return out, detail

    def stream(self, conn: dict, data: bytes, now: float):
        buf = conn.get("dns_buf", b"") + data
        out, details, close = b"", [], False
        while len(buf) >= 2:
            n = struct.unpack_from("!H", buf)[0]
            if len(buf) < 2 + n:
                break
            msg, buf = buf[2:2 + n], buf[2 + n:]
            resp, detail = self.respond(msg, tcp=True)
            details.append(detail)
            if resp is None:            # miekg/dns closes a TCP connection it cannot read
                close, buf = True, b""
                break
            out += struct.pack("!H", len(resp)) + resp
        conn["dns_buf"] = buf
        if not details:
            details.append(f"buffered {len(buf)} bytes of a TCP DNS message")
        return out, close, "; ".join(details)

    # --- one message ----------------------------------------------------------
    def respond(self, data: bytes, tcp: bool) -> tuple[bytes | None, str]:
        """The response to one query message (None: no response), and what happened."""
        try:
            h = wire.decode_header(data)
        except DnsFormatError as e:
            return None, f"DNS: not answered: {e}"
        if h.qr:
            return None, "DNS: a response, not a query: ignored"
        reply = Message(h.id, qr=True, opcode=h.opcode, rd=bool(h.flags & 0x100),
                        cd=bool(h.flags & 0x10))
        if h.opcode != OP_QUERY:            # miekg/dns: MsgRejectNotImplemented
            reply.rcode = NOTIMP
            return self._finish(reply, None, tcp, f"opcode {wire.OPCODE_NAMES.get(h.opcode, h.opcode)}")
        if h.qdcount != 1 or h.ancount > 1 or h.nscount > 1 or h.arcount > 2:
            reply.opcode, reply.rcode = OP_QUERY, FORMERR
            return self._finish(reply, None, tcp, f"{h.qdcount} questions, {h.ancount} answers, "
                                f"{h.nscount} authority, {h.arcount} additional")
        try:
            q = wire.decode(data)
        except DnsFormatError as e:
            reply.rcode = FORMERR
            return self._finish(reply, None, tcp, str(e))
        question = q.questions[0]
        reply.questions = [question]
        edns = None
        if q.edns is not None:
            edns = Edns(q.edns.udp_size, do=q.edns.do)     # CoreDNS echoes the client's size
            if q.edns.version != 0:
                reply.edns, reply.rcode = Edns(q.edns.udp_size), BADVERS
                return self._finish(reply, q, tcp, f"EDNS version {q.edns.version}")
        reply.edns = edns
        if question.qclass != CLASS_IN:
            reply.rcode = REFUSED
            return self._finish(reply, q, tcp, f"class {question.qclass}")
        ans: Answer = self.lookup(question.name, question.qtype)
        reply.rcode, reply.aa, reply.ra = ans.rcode, ans.aa, ans.ra
        reply.answers, reply.authority, reply.additional = ans.answers, ans.authority, ans.additional
        return self._finish(reply, q, tcp, ans.note, ans.source)

    def _finish(self, reply: Message, q: Message | None, tcp: bool, why: str = "",
                source: str = "") -> tuple[bytes, str]:
        limit = wire.MAX_MSG if tcp else max(wire.MIN_UDP, q.edns.udp_size if q and q.edns else 0)
        reply, raw = wire.truncate(reply, limit)
        qtext = (f"{q.questions[0].name} {wire.type_name(q.questions[0].qtype)}"
                 if q is not None and q.questions else "(no question)")
        n = len(reply.answers)
        result = wire.rcode_name(reply.rcode) + (f", {n} answer{'s' * (n != 1)}" if n else "")
        if reply.tc:
            result += f", truncated to {limit} bytes (TC)"
        via = " (forwarded upstream)" if source == "upstream" and self.name == "coredns" else ""
        note = f": {why}" if why and not reply.answers else ""
        return raw, f"DNS {qtext} -> {result}{via}{note}"


class CoreDnsApp(DnsServer):
    """CoreDNS in a CoreDNS pod (the kube-dns endpoints)."""

    def __init__(self, coredns: CoreDNS):
        super().__init__(coredns.answer, "coredns")
        self.coredns = coredns


class ResolverApp(DnsServer):
    """The VNet's DNS (Azure's 168.63.129.16): nodes' nameserver. It knows the
    upstream static zone only: cluster names are NXDOMAIN there, as on a real node."""

    def __init__(self, upstream: Upstream):
        super().__init__(upstream.lookup, "vnet-dns")
        self.upstream = upstream
