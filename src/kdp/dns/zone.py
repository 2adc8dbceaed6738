# dns.zone: what the cluster's DNS answers, built from a resolved Cluster: the
# cluster zone as CoreDNS's `kubernetes` plugin serves it (Kubernetes DNS-based
# service discovery, schema 1.1.0, `pods insecure`), its reverse zone with
# fallthrough, and the upstream outside the cluster domain (a static zone from
# the ClusterConfig, or nothing: SERVFAIL). Pure data: no packets here.
#
# As CoreDNS (plugin/kubernetes, plugin/backend_lookup.go):
# - TTL 5 on every answer; the SOA is `<zone> 5 IN SOA ns.dns.<zone>. hostmaster.<zone>.
#   SERIAL 7200 1800 86400 5` (CoreDNS's serial is the Unix time of the last API change; kdp
#   has no wall clock and uses 1). `dns-version.<zone>` TXT "1.1.0" has TTL 28800.
# - NXDOMAIN and NODATA carry the SOA in the authority section, with aa set and ra clear
#   (CoreDNS's BackendError); positive answers have aa and ra.
# - SRV weight: the SRV targets of one name share 100 at priority 0: floor(100 / n), at least 1
#   (a single target gets 100, two get 50 each, three 33). Each SRV target's address goes in the
#   additional section.
# - Headless services: one A per ready endpoint (NXDOMAIN when there is none); each endpoint is
#   named by its hostname, else by its dashed IP (`10-244-1-5.<svc>.<ns>.svc.<zone>`, as CoreDNS
#   does, beyond the spec); SRV per ready endpoint x matching port. Endpoint names
#   (`<hostname>.<svc>...`) resolve for ClusterIP services too, as in CoreDNS.
# - `_<port>._<proto>.<svc>.<ns>.svc.<zone>` (the underscores are optional, as in CoreDNS)
#   answers SRV, and A with the service's address.
# - PTR: a service's cluster IP -> the service name; else every service endpoint (ready) with
#   that IP -> `<hostname or dashed IP>.<svc>.<ns>.svc.<zone>`; else the reverse name falls
#   through to the upstream (`fallthrough in-addr.arpa ip6.arpa`), as do non-PTR reverse queries.
# - ExternalName: CNAME to the external name; A/AAAA follow it: inside the zone by recursion
#   (at most 8 CNAMEs), outside through the upstream (when the upstream fails, NODATA).
# - Pod names `a-b-c-d.<ns>.pod.<zone>` answer any well-formed address in an existing namespace.
# - A namespace that does not exist makes its names NXDOMAIN; `<ns>.svc.<zone>`, `svc.<zone>`,
#   `pod.<zone>` and the apex exist without records (NODATA).
# Deliberate differences, following the spec's NXDOMAIN/NODATA rule where CoreDNS has quirks:
# a TXT query for a name other than dns-version is NXDOMAIN when the name does not exist
# (CoreDNS says NODATA for every TXT name); `dns-version.<zone>` A is NODATA (CoreDNS:
# NXDOMAIN); SOA is answered at the apex only (CoreDNS answers the zone's SOA for any name).
# No cache plugin (TTLs never count down) and no loadbalance shuffling (answers are ordered).
from __future__ import annotations

import math
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from ..k8s.model import Cluster, Service, UpstreamRecord
from . import wire
from .wire import (A, AAAA, ANY, CNAME, MX, MX_T, NOERROR, NS, NXDOMAIN, PTR, RR, SERVFAIL, SOA,
                   SOA_T, SRV, SRV_T, TXT, DnsFormatError, canonical)

TTL = 5                      # the kubernetes plugin's default ttl
VERSION_TTL = 28800          # dns-version TXT
SCHEMA_VERSION = "1.1.0"
SOA_SERIAL = 1
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
MAX_CNAMES = 8
REVERSE_ZONE = "in-addr.arpa."


@dataclass
class Answer:
    """What a DNS server decided for one question, before it becomes a message."""

    rcode: int
    answers: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    aa: bool = False
    ra: bool = True
    source: str = "kubernetes"       # kubernetes | upstream
    note: str = ""


def in_zone(name: str, zone: str) -> bool:
    """name and zone canonical (lowercase, absolute)."""
    return zone == "." or name == zone or name.endswith("." + zone)


def _labels(name: str) -> list[str]:
    return [lb.decode("latin-1") for lb in wire.name_labels(name)]


def reverse_address(name: str) -> IPv4Address | None:
    """The address of `d.c.b.a.in-addr.arpa.`, or None when the name is not one."""
    labels = _labels(name)
    if len(labels) != 6 or labels[4:] != ["in-addr", "arpa"]:
        return None
    if not all(lb.isdigit() and lb == str(int(lb)) and int(lb) <= 255 for lb in labels[:4]):
        return None
    return IPv4Address(".".join(reversed(labels[:4])))


def reverse_name(ip: IPv4Address) -> str:
    return ".".join(reversed(str(ip).split("."))) + ".in-addr.arpa."


def dashed(ip) -> str:
    return str(ip).replace(".", "-").replace(":", "-")


# --- the upstream -----------------------------------------------------------------------

class Upstream:
    """The DNS outside the cluster domain: a static zone (ClusterConfig
    spec.dns.upstream.records) answering like a recursive resolver (ra, not aa);
    unknown names are NXDOMAIN. Without a configured upstream every query fails
    with SERVFAIL, as CoreDNS's forward does when no upstream answers."""

    def __init__(self, records: list[UpstreamRecord] | None):
        self.configured = records is not None
        self.by_name: dict[str, list[UpstreamRecord]] = {}
        for r in records or []:
            self.by_name.setdefault(canonical(r.name), []).append(r)

    def _exists(self, name: str) -> bool:
        return name in self.by_name or any(in_zone(n, name) for n in self.by_name)

    def lookup(self, qname: str, qtype: int) -> Answer:
        if not self.configured:
            return Answer(SERVFAIL, ra=False, source="upstream",
                          note="no upstream DNS (the ClusterConfig has no spec.dns.upstream)")
        owner, key, answers = qname, canonical(qname), []
        for _ in range(MAX_CNAMES + 1):
            recs = self.by_name.get(key, [])
            hit = [r for r in recs if qtype in (ANY, wire.type_code(r.type))]
            if hit:
                return Answer(NOERROR, answers + [upstream_rr(owner, r) for r in hit],
                              source="upstream")
            cname = next((r for r in recs if r.type == "CNAME"), None)
            if cname is None:
                if self._exists(key):
                    return Answer(NOERROR, answers, source="upstream", note="no data")
                return Answer(NXDOMAIN, answers, source="upstream", note=f"{key} does not exist")
            answers.append(upstream_rr(owner, cname))
            owner = key = cname.value
        return Answer(SERVFAIL, answers, ra=False, source="upstream", note="CNAME chain too long")


def upstream_rr(owner: str, r: UpstreamRecord) -> RR:
    t = wire.type_code(r.type)
    if t == A:
        data: object = IPv4Address(r.value)
    elif t == AAAA:
        data = IPv6Address(r.value)
    elif t == TXT:
        raw = r.value.encode()
        data = tuple(raw[i:i + 255] for i in range(0, len(raw), 255)) or (b"",)
    elif t == SRV_T:
        p, w, port, target = r.value.split()
        data = SRV(int(p), int(w), int(port), target)
    elif t == MX_T:
        pref, exch = r.value.split()
        data = MX(int(pref), exch)
    else:
        data = r.value
    return RR(owner, t, r.ttl, data)


# --- the cluster zone -------------------------------------------------------------------

class _NoItems(Exception):
    """The name does not exist (CoreDNS's errNoItems / errInvalidRequest)."""


@dataclass(frozen=True)
class Target:
    """One backend record (CoreDNS's msg.Service): an address or an external name,
    a port (-1: none) and the name the record lives at (an SRV target)."""

    host: str
    port: int
    name: str
    cname: bool = False


@dataclass
class _Address:
    ip: IPv4Address
    hostname: str
    ports: list[tuple[str, str, int]]        # (port name, protocol, port)


def _match(want: str, have: str) -> bool:
    return want == "" or want == have.lower()


class CoreDNS:
    """The answers of a CoreDNS with the default Kubernetes Corefile:
    `kubernetes <zone> in-addr.arpa ip6.arpa { pods insecure; fallthrough in-addr.arpa ip6.arpa;
    ttl 5 }` then `forward . /etc/resolv.conf` (the Upstream)."""

    def __init__(self, cluster: Cluster, upstream: Upstream | None = None):
        cfg = cluster.config
        self.cluster = cluster
        self.zone = canonical(cfg.cluster_domain)
        self.upstream = upstream if upstream is not None else Upstream(cfg.dns_upstream)
        self.namespaces = {n.lower() for n in cluster.namespaces}
        self.namespaces |= {s.namespace for s in cluster.services} | {p.namespace for p in cluster.pods}
        self.services = {(s.namespace, s.name): s for s in cluster.services}
        kube_dns = self.services.get(("kube-system", "kube-dns"))
        self.dns_ip = kube_dns.cluster_ip if kube_dns and kube_dns.cluster_ip else cfg.dns_service_ip
        self._addrs: dict[tuple[str, str], list[_Address]] = {}
        self.ptr: dict[IPv4Address, list[str]] = {}
        for s in sorted(cluster.services, key=lambda s: (s.namespace, s.name)):
            if s.cluster_ip is not None and s.cluster_ip not in self.ptr:
                self.ptr[s.cluster_ip] = [self.service_name(s)]
        ep_names: dict[IPv4Address, list[str]] = {}
        for s in sorted(cluster.services, key=lambda s: (s.namespace, s.name)):
            if s.type == "ExternalName":
                continue
            for a in self.addresses(s):
                names = ep_names.setdefault(a.ip, [])
                name = f"{a.hostname}.{self.service_name(s)}"
                if name not in names:
                    names.append(name)
        for ip, names in ep_names.items():
            self.ptr.setdefault(ip, names)

    # --- names ------------------------------------------------------------------------
    def service_name(self, s: Service) -> str:
        return f"{s.name}.{s.namespace}.svc.{self.zone}"

    def soa(self) -> RR:
        return RR(self.zone, SOA_T, min(TTL, 300),
                  SOA(f"ns.dns.{self.zone}", f"hostmaster.{self.zone}", SOA_SERIAL, SOA_REFRESH,
                      SOA_RETRY, SOA_EXPIRE, TTL))

    def addresses(self, s: Service) -> list[_Address]:
        """The ready endpoint addresses of s, in address order, with their ports."""
        key = (s.namespace, s.name)
        if key in self._addrs:
            return self._addrs[key]
        by_ip: dict[IPv4Address, _Address] = {}
        for e in s.endpoints:
            if not e.ready:
                continue
            a = by_ip.setdefault(e.ip, _Address(e.ip, e.hostname or dashed(e.ip), []))
            port = (e.port_name or "", e.protocol, e.port)
            if port not in a.ports:
                a.ports.append(port)
        if not s.ports and s.selector and s.cluster_ip is None and s.type != "ExternalName":
            # a headless service without ports has no EndpointSlice ports in kdp's model;
            # its addresses are its ready pods (CoreDNS sees them with port -1)
            for p in self.cluster.pods:
                if (p.namespace == s.namespace and p.ready and p.ip is not None
                        and all(p.labels.get(k) == v for k, v in s.selector.items())):
                    host = p.hostname if p.hostname and p.subdomain == s.name else dashed(p.ip)
                    by_ip.setdefault(p.ip, _Address(p.ip, host, [("", "", -1)]))
        out = [by_ip[ip] for ip in sorted(by_ip)]
        self._addrs[key] = out
        return out

    # --- the Corefile -----------------------------------------------------------------
    def answer(self, qname: str, qtype: int) -> Answer:
        key = canonical(qname)
        if in_zone(key, self.zone):
            return self._kubernetes(qname, key, qtype)
        if in_zone(key, REVERSE_ZONE):
            got = self._reverse(qname, key, qtype)
            if got is not None:
                return got
            # fallthrough in-addr.arpa: on to forward
        return self.upstream.lookup(qname, qtype)

    def _reverse(self, qname: str, key: str, qtype: int) -> Answer | None:
        ip = reverse_address(key)
        if qtype != PTR or ip is None or ip not in self.ptr:
            return None
        return Answer(NOERROR, [RR(qname, PTR, TTL, n) for n in self.ptr[ip]], aa=True)

    def _kubernetes(self, qname: str, key: str, qtype: int) -> Answer:
        extra: list[RR] = []
        try:
            if qtype == A or qtype == AAAA:
                records = self._address(qname, key, qtype, [])
            elif qtype == SRV_T:
                records, extra = self._srv(qname, key)
            elif qtype == TXT and key == f"dns-version.{self.zone}":
                records = [RR(qname, TXT, VERSION_TTL, (SCHEMA_VERSION.encode(),))]
            elif qtype == CNAME:
                targets = self.targets(key)
                records = []
                if targets and targets[0].cname:
                    records = [RR(qname, CNAME, TTL, canonical(targets[0].host))]
            elif qtype == SOA_T and key == self.zone:
                records = [self.soa()]
            elif qtype == NS and key == self.zone:
                ns = f"ns.dns.{self.zone}"
                records, extra = [RR(qname, NS, TTL, ns)], [RR(ns, A, TTL, self.dns_ip)]
            else:                     # does the name exist? (CoreDNS's "fake A lookup")
                self.targets(key)
                records = []
        except _NoItems:
            return Answer(NXDOMAIN, authority=[self.soa()], aa=True, ra=False,
                          note=f"{key} does not exist")
        if not records:
            return Answer(NOERROR, authority=[self.soa()], aa=True, ra=False, note="no data")
        return Answer(NOERROR, records, additional=extra, aa=True)

    def targets(self, key: str) -> list[Target]:
        """The backend records at key (inside the zone); [] for a name without
        records; _NoItems for a name that does not exist."""
        labels = _labels(key)[:-len(_labels(self.zone))] if self.zone != "." else _labels(key)
        labels = [lb.lower() for lb in labels]
        if labels in ([], ["svc"], ["pod"], ["dns"], ["dns-version"]):
            return []
        if labels == ["ns", "dns"]:
            return [Target(str(self.dns_ip), -1, key)]
        kind = labels[-1]
        if kind not in ("svc", "pod"):
            raise _NoItems
        namespace = labels[-2]
        if namespace not in self.namespaces:
            raise _NoItems
        if len(labels) == 2:
            return []
        name, rest = labels[-3], labels[:-3]
        endpoint = port = protocol = ""
        if len(rest) == 1:
            endpoint = rest[0]
        elif len(rest) == 2:
            port, protocol = rest[0].removeprefix("_"), rest[1].removeprefix("_")
        elif len(rest) > 2:
            raise _NoItems
        if kind == "pod":
            return self._pod(name, namespace)
        return self._service(namespace, name, endpoint, port, protocol)

    def _pod(self, name: str, namespace: str) -> list[Target]:
        text = name.replace("-", ".") if name.count("-") == 3 and "--" not in name \
            else name.replace("-", ":")
        try:
            ip = ip_address(text)
        except ValueError:
            raise _NoItems from None
        return [Target(str(ip), -1, f"{name}.{namespace}.pod.{self.zone}")]

    def _service(self, namespace: str, name: str, endpoint: str, port: str,
                 protocol: str) -> list[Target]:
        s = self.services.get((namespace, name))
        if s is None:
            raise _NoItems
        sname = self.service_name(s)
        out: list[Target] = []
        if s.type == "ExternalName":
            host = s.external_name or ""
            if not endpoint and host and not wire.is_ip_literal(host):
                out.append(Target(host, -1, sname, cname=True))
        elif s.cluster_ip is None or endpoint:
            for a in self.addresses(s):
                if endpoint and endpoint != a.hostname.lower():
                    continue
                for pname, proto, number in a.ports:
                    if _match(port, pname) and _match(protocol, proto):
                        out.append(Target(str(a.ip), number, f"{a.hostname}.{sname}"))
        else:
            for p in s.ports:
                if _match(port, p.name or "") and _match(protocol, p.protocol):
                    out.append(Target(str(s.cluster_ip), p.port, sname))
        if not out:
            raise _NoItems
        return out

    def _address(self, qname: str, key: str, qtype: int, previous: list[RR]) -> list[RR]:
        """A or AAAA records at key, following CNAMEs (plugin.A / plugin.AAAA)."""
        records: list[RR] = []
        seen: set[str] = set()
        for t in self.targets(key):
            if t.cname:
                try:
                    target = canonical(t.host)
                except DnsFormatError:
                    continue
                if target == key or len(previous) > MAX_CNAMES - 1:
                    continue
                rr = RR(qname, CNAME, TTL, target)
                if any(p.rtype == CNAME and canonical(p.name) == canonical(qname) and p.data == target
                       for p in previous):
                    continue
                if in_zone(target, self.zone):
                    try:
                        nxt = self._address(target, target, qtype, previous + [rr])
                    except _NoItems:
                        nxt = []
                    if nxt:
                        records += [rr] + nxt
                    continue
                up = self.upstream.lookup(target, qtype)
                if up.rcode in (NOERROR, NXDOMAIN):
                    records += [rr] + up.answers
                continue
            ip = ip_address(t.host)
            if ip.version == (4 if qtype == A else 6) and t.host not in seen:
                seen.add(t.host)
                records.append(RR(qname, qtype, TTL, ip))
        return records

    def _srv(self, qname: str, key: str) -> tuple[list[RR], list[RR]]:
        targets = [t for t in self.targets(key) if not t.cname]
        if not targets:
            return [], []
        weight = int(math.floor((100.0 / float(100 * len(targets))) * 100)) or 1
        records, extra, dup = [], [], set()
        for t in targets:
            if t.port == -1:
                continue
            if (t.name, t.port) not in dup:
                dup.add((t.name, t.port))
                records.append(RR(qname, SRV_T, TTL, SRV(0, weight, t.port, t.name)))
            if (t.name, t.host) not in dup:
                dup.add((t.name, t.host))
                ip = ip_address(t.host)
                extra.append(RR(t.name, A if ip.version == 4 else AAAA, TTL, ip))
        return records, extra

