# Tests of dns.zone: the cluster zone as CoreDNS's kubernetes plugin serves it
# (services, headless services, endpoint names, SRV with CoreDNS's weights, PTR,
# pod names, ExternalName, dns-version, NS/SOA), NXDOMAIN with the SOA vs NODATA,
# case-insensitivity, TTLs, and the upstream: a static zone, or SERVFAIL.
from __future__ import annotations

from ipaddress import IPv4Address as A

import pytest
from dns_helpers import cluster, coredns, data

from kdp.dns import wire
from kdp.dns.wire import MX, SOA, SRV
from kdp.dns.zone import CoreDNS, Upstream, reverse_address, reverse_name

Z = "cluster.local."


@pytest.fixture(scope="module")
def dns():
    return coredns()


def pod_ip(dns, ns, name):
    return dns.cluster.pod(ns, name).ip


def svc_ip(dns, ns, name):
    return dns.cluster.service(ns, name).cluster_ip


def test_clusterip_service_a_record(dns):
    ans = dns.answer("web.default.svc.cluster.local.", wire.A)
    assert ans.rcode == wire.NOERROR and ans.aa and ans.ra
    assert [(r.name, r.rtype, r.ttl) for r in ans.answers] == [("web.default.svc.cluster.local.", wire.A, 5)]
    assert data(ans.answers) == [svc_ip(dns, "default", "web")]
    assert ans.authority == [] and ans.additional == []


def test_names_are_case_insensitive_and_answers_echo_the_question(dns):
    ans = dns.answer("WEB.Default.SVC.Cluster.Local.", wire.A)
    assert ans.rcode == wire.NOERROR and ans.answers[0].name == "WEB.Default.SVC.Cluster.Local."
    assert data(ans.answers) == [svc_ip(dns, "default", "web")]


def test_unknown_names_are_nxdomain_with_the_coredns_soa(dns):
    for name in ("nope.default.svc.cluster.local.", "web.nons.svc.cluster.local.",
                 "nons.svc.cluster.local.", "x.y.z.web.default.svc.cluster.local.",
                 "something.cluster.local.", "web.default.cluster.local.",
                 "10-244-0-9.nons.pod.cluster.local.", "not-an-ip.default.pod.cluster.local."):
        ans = dns.answer(name, wire.A)
        assert ans.rcode == wire.NXDOMAIN, name
        assert ans.answers == [] and ans.aa and not ans.ra
        soa = ans.authority[0]
        assert (soa.name, soa.rtype, soa.ttl) == (Z, wire.SOA_T, 5)
        assert soa.data == SOA("ns.dns.cluster.local.", "hostmaster.cluster.local.", 1, 7200, 1800,
                               86400, 5)


@pytest.mark.parametrize("name, qtype", [
    ("web.default.svc.cluster.local.", "AAAA"), ("web.default.svc.cluster.local.", "TXT"),
    ("web.default.svc.cluster.local.", "MX"), ("web.default.svc.cluster.local.", "CNAME"),
    ("web.default.svc.cluster.local.", "PTR"), ("default.svc.cluster.local.", "A"),
    ("svc.cluster.local.", "A"), ("pod.cluster.local.", "A"), ("cluster.local.", "A"),
    ("dns-version.cluster.local.", "A"), ("web.default.svc.cluster.local.", "SOA"),
    ("portless.data.svc.cluster.local.", "SRV"), ("search.default.svc.cluster.local.", "SRV"),
])
def test_existing_names_without_the_type_are_nodata(dns, name, qtype):
    ans = dns.answer(name, wire.type_code(qtype))
    assert (ans.rcode, ans.answers) == (wire.NOERROR, [])
    assert ans.authority[0].rtype == wire.SOA_T and ans.aa and not ans.ra


def test_headless_service_one_a_per_ready_endpoint(dns):
    ans = dns.answer("db.data.svc.cluster.local.", wire.A)
    want = sorted(pod_ip(dns, "data", n) for n in ("db-0", "db-1", "db-2"))
    assert data(ans.answers) == want                               # not the unready "sick"
    assert pod_ip(dns, "data", "sick") not in data(ans.answers)


def test_headless_service_without_ready_endpoints_is_nxdomain(dns):
    assert dns.answer("empty.data.svc.cluster.local.", wire.A).rcode == wire.NXDOMAIN


def test_headless_service_without_ports_answers_its_pods(dns):
    ans = dns.answer("portless.data.svc.cluster.local.", wire.A)
    assert len(ans.answers) == 3


def test_endpoint_hostnames_and_dashed_ips(dns):
    ip0, ip2 = pod_ip(dns, "data", "db-0"), pod_ip(dns, "data", "db-2")
    assert data(dns.answer("db-0.db.data.svc.cluster.local.", wire.A).answers) == [ip0]
    dashed = str(ip2).replace(".", "-")
    assert data(dns.answer(f"{dashed}.db.data.svc.cluster.local.", wire.A).answers) == [ip2]
    assert dns.answer("db-9.db.data.svc.cluster.local.", wire.A).rcode == wire.NXDOMAIN
    # an endpoint name works for a ClusterIP service too (CoreDNS)
    web = next(p for p in dns.cluster.pods if p.labels.get("app") == "web")
    name = f"{str(web.ip).replace('.', '-')}.web.default.svc.cluster.local."
    assert data(dns.answer(name, wire.A).answers) == [web.ip]


def test_srv_for_a_named_port_of_a_clusterip_service(dns):
    ans = dns.answer("_http._tcp.web.default.svc.cluster.local.", wire.SRV_T)
    assert data(ans.answers) == [SRV(0, 100, 80, "web.default.svc.cluster.local.")]
    assert [(r.name, r.data) for r in ans.additional] == [
        ("web.default.svc.cluster.local.", svc_ip(dns, "default", "web"))]
    assert data(dns.answer("_dns._udp.web.default.svc.cluster.local.", wire.SRV_T).answers) == [
        SRV(0, 100, 53, "web.default.svc.cluster.local.")]
    assert dns.answer("_dns._tcp.web.default.svc.cluster.local.", wire.SRV_T).rcode == wire.NXDOMAIN
    assert dns.answer("_nope._tcp.web.default.svc.cluster.local.", wire.SRV_T).rcode == wire.NXDOMAIN


def test_srv_weights_split_100_between_targets_as_coredns(dns):
    two = dns.answer("web.default.svc.cluster.local.", wire.SRV_T)      # both ports
    assert [r.data.weight for r in two.answers] == [50, 50]
    three = dns.answer("_pg._tcp.db.data.svc.cluster.local.", wire.SRV_T)
    assert [r.data.weight for r in three.answers] == [33, 33, 33]
    assert [r.data.priority for r in three.answers] == [0, 0, 0]


def test_headless_srv_targets_the_endpoint_names_with_their_addresses(dns):
    ans = dns.answer("_pg._tcp.db.data.svc.cluster.local.", wire.SRV_T)
    ip2 = str(pod_ip(dns, "data", "db-2")).replace(".", "-")
    assert sorted(r.data.target for r in ans.answers) == sorted([
        "db-0.db.data.svc.cluster.local.", "db-1.db.data.svc.cluster.local.",
        f"{ip2}.db.data.svc.cluster.local."])
    assert {r.data.port for r in ans.answers} == {5432}
    assert {r.name: r.data for r in ans.additional}["db-0.db.data.svc.cluster.local."] == \
        pod_ip(dns, "data", "db-0")


def test_srv_shaped_name_also_answers_a(dns):
    ans = dns.answer("_http._tcp.web.default.svc.cluster.local.", wire.A)
    assert data(ans.answers) == [svc_ip(dns, "default", "web")]


def test_ptr_for_service_and_endpoint_ips(dns):
    web = svc_ip(dns, "default", "web")
    ans = dns.answer(reverse_name(web), wire.PTR)
    assert data(ans.answers) == ["web.default.svc.cluster.local."] and ans.aa
    db0 = pod_ip(dns, "data", "db-0")
    ptrs = data(dns.answer(reverse_name(db0), wire.PTR).answers)
    assert "db-0.db.data.svc.cluster.local." in ptrs                    # hostname
    assert f"{str(db0).replace('.', '-')}.portless.data.svc.cluster.local." in ptrs
    kube_dns = data(dns.answer("10.0.2.10.in-addr.arpa.", wire.PTR).answers)
    assert kube_dns == ["kube-dns.kube-system.svc.cluster.local."]


def test_unknown_reverse_names_fall_through_to_the_upstream(dns):
    ans = dns.answer("34.216.184.93.in-addr.arpa.", wire.PTR)
    assert (ans.rcode, data(ans.answers), ans.source, ans.aa) == (
        wire.NOERROR, ["example.com."], "upstream", False)
    gone = dns.answer("9.9.9.10.in-addr.arpa.", wire.PTR)
    assert (gone.rcode, gone.source) == (wire.NXDOMAIN, "upstream")
    assert dns.answer(reverse_name(svc_ip(dns, "default", "web")), wire.A).source == "upstream"


def test_reverse_address_parsing():
    assert reverse_address("4.3.2.1.in-addr.arpa.") == A("1.2.3.4")
    assert reverse_address("4.3.2.1.IN-ADDR.ARPA.".lower()) == A("1.2.3.4")
    for bad in ("3.2.1.in-addr.arpa.", "256.3.2.1.in-addr.arpa.", "04.3.2.1.in-addr.arpa.",
                "a.3.2.1.in-addr.arpa.", "4.3.2.1.ip6.arpa."):
        assert reverse_address(bad) is None


def test_pod_a_records_pods_insecure(dns):
    assert data(dns.answer("10-244-1-5.default.pod.cluster.local.", wire.A).answers) == [A("10.244.1.5")]
    assert data(dns.answer("1-2-3-4.data.pod.cluster.local.", wire.A).answers) == [A("1.2.3.4")]
    assert dns.answer("1-2-3-4.data.pod.cluster.local.", wire.AAAA).answers == []


def test_hostname_and_subdomain_pod_record(dns):
    ans = dns.answer("db-1.db.data.svc.cluster.local.", wire.A)
    assert data(ans.answers) == [pod_ip(dns, "data", "db-1")]


def test_external_name_cname_and_upstream_chase(dns):
    cname = dns.answer("search.default.svc.cluster.local.", wire.CNAME)
    assert data(cname.answers) == ["www.example.com."]
    a = dns.answer("search.default.svc.cluster.local.", wire.A)
    assert [(r.name, wire.type_name(r.rtype), r.ttl) for r in a.answers] == [
        ("search.default.svc.cluster.local.", "CNAME", 5), ("www.example.com.", "CNAME", 300),
        ("example.com.", "A", 300)]
    assert a.answers[-1].data == A("93.184.216.34")


def test_external_name_inside_the_zone_is_followed(dns):
    a = dns.answer("alias.default.svc.cluster.local.", wire.A)
    assert [wire.type_name(r.rtype) for r in a.answers] == ["CNAME", "A"]
    assert a.answers[1].name == "web.default.svc.cluster.local."


def test_external_name_to_an_unknown_outside_name_keeps_the_cname(dns):
    a = dns.answer("nowhere.default.svc.cluster.local.", wire.A)
    assert (a.rcode, data(a.answers)) == (wire.NOERROR, ["nothing.example.org."])


def test_external_name_without_upstream_is_nodata():
    a = coredns(upstream=False).answer("search.default.svc.cluster.local.", wire.A)
    assert (a.rcode, a.answers) == (wire.NOERROR, [])


def test_dns_version_ns_and_soa(dns):
    v = dns.answer("dns-version.cluster.local.", wire.TXT)
    assert (data(v.answers), v.answers[0].ttl) == ([(b"1.1.0",)], 28800)
    ns = dns.answer("cluster.local.", wire.NS)
    assert data(ns.answers) == ["ns.dns.cluster.local."]
    assert data(ns.additional) == [A("10.2.0.10")]
    assert data(dns.answer("ns.dns.cluster.local.", wire.A).answers) == [A("10.2.0.10")]
    soa = dns.answer("cluster.local.", wire.SOA_T)
    assert soa.answers[0].data.mname == "ns.dns.cluster.local." and soa.aa and soa.ra


def test_every_answer_in_the_zone_has_ttl_5(dns):
    for name, t in (("web.default.svc.cluster.local.", wire.A), ("db.data.svc.cluster.local.", wire.SRV_T),
                    ("search.default.svc.cluster.local.", wire.CNAME)):
        ans = dns.answer(name, t)
        assert {r.ttl for r in ans.answers + ans.additional} == {5}


def test_upstream_static_zone(dns):
    up = dns.upstream
    a = up.lookup("EXAMPLE.com.", wire.A)
    assert (a.rcode, data(a.answers), a.aa, a.ra) == (wire.NOERROR, [A("93.184.216.34")], False, True)
    assert a.answers[0].name == "EXAMPLE.com."
    txt = up.lookup("example.com.", wire.TXT)
    assert (data(txt.answers), txt.answers[0].ttl) == ([(b"v=spf1 -all",)], 60)
    assert data(up.lookup("mail.example.com.", wire.MX_T).answers) == [MX(10, "mx.example.com.")]
    assert data(up.lookup("_sip._udp.example.com.", wire.SRV_T).answers) == [SRV(0, 5, 5060, "sip.example.com.")]
    assert up.lookup("nx.example.com.", wire.A).rcode == wire.NXDOMAIN
    assert (up.lookup("example.com.", wire.AAAA).rcode, up.lookup("example.com.", wire.AAAA).answers) == (
        wire.NOERROR, [])
    assert up.lookup("_udp.example.com.", wire.A).rcode == wire.NOERROR         # empty non-terminal
    assert up.lookup("udp.example.com.", wire.A).rcode == wire.NXDOMAIN
    assert dns.answer("example.com.", wire.A).source == "upstream"


def test_no_upstream_is_servfail():
    d = coredns(upstream=False)
    ans = d.answer("example.com.", wire.A)
    assert (ans.rcode, ans.aa, ans.ra, ans.source) == (wire.SERVFAIL, False, False, "upstream")
    assert d.answer("web.default.svc.cluster.local.", wire.A).rcode == wire.NOERROR
    assert Upstream(None).lookup("x.", wire.A).rcode == wire.SERVFAIL
    assert Upstream([]).lookup("x.", wire.A).rcode == wire.NXDOMAIN


def test_other_cluster_domain():
    c = cluster(extra="")
    c.config.cluster_domain = "corp.internal"
    d = CoreDNS(c)
    assert d.answer("web.default.svc.corp.internal.", wire.A).rcode == wire.NOERROR
    assert d.answer("web.default.svc.cluster.local.", wire.A).source == "upstream"
    assert d.soa().data.rname == "hostmaster.corp.internal."
