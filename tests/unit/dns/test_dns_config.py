# Tests of the DNS inputs: ClusterConfig spec.dns.upstream decoding (strict keys,
# precise errors), the control plane's default kube-dns + CoreDNS, the CNI putting
# CoreDNS behind the CoreDNS pods' port 53, and the stub resolver's resolv.conf
# and glibc search order.
from __future__ import annotations

from ipaddress import IPv4Address as A

import pytest
from dns_helpers import CONFIG, UPSTREAM

from kdp.dns.resolver import ResolvConf, is_dns_name, search_names
from kdp.dns.server import CoreDnsApp, ResolverApp
from kdp.emulator import Emulator
from kdp.errors import ClusterInputError
from kdp.k8s import load_cluster_text
from kdp.k8s.model import UpstreamRecord

POD = """\
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default}
spec: {containers: [{name: c, image: x}]}
"""


def load(text: str):
    return load_cluster_text(text, "c.yaml")


def problems(text: str):
    with pytest.raises(ClusterInputError) as info:
        load(text)
    return info.value.problems


def with_records(records: str) -> str:
    return CONFIG + "  dns:\n    upstream:\n      records:\n" + records


def test_upstream_records_are_decoded_and_normalised():
    c = load(CONFIG + UPSTREAM + POD)
    recs = c.config.dns_upstream
    assert recs[0] == UpstreamRecord("example.com.", "A", "93.184.216.34", 300)
    assert recs[1] == UpstreamRecord("example.com.", "TXT", "v=spf1 -all", 60)
    assert recs[2] == UpstreamRecord("www.example.com.", "CNAME", "example.com.", 300)
    assert recs[3].value == "10 mx.example.com." and recs[4].value == "0 5 5060 sip.example.com."


def test_no_dns_section_means_no_upstream_and_empty_records_an_empty_zone():
    assert load(CONFIG + POD).config.dns_upstream is None
    assert load(CONFIG + "  dns: {upstream: {records: []}}\n" + POD).config.dns_upstream == []


@pytest.mark.parametrize("spec, field, message", [
    ("  dns: {upstream: {recods: []}}\n", "spec.dns.upstream.recods", "did you mean 'records'"),
    ("  dns: {upstrem: {}}\n", "spec.dns.upstrem", "did you mean 'upstream'"),
    ("  dns: [1]\n", "spec.dns", "must be a mapping"),
])
def test_strict_keys(spec, field, message):
    p = next(p for p in problems(CONFIG + spec + POD) if p.field == field)
    assert message in p.message and p.file == "c.yaml" and p.line == 8


@pytest.mark.parametrize("record, field, message", [
    ("{name: a.com, type: A, value: 1.2.3}", "value", "'1.2.3' is not an IPv4 address"),
    ("{name: a.com, type: AAAA, value: 1.2.3.4}", "value", "not an IPv6 address"),
    ("{name: a.com, type: NAPTR, value: x}", "type", "unknown record type 'NAPTR'"),
    ("{name: a.com, type: A}", "value", "required field is missing"),
    ("{name: a.com, type: A, value: 1.2.3.4, ttl: -1}", "ttl", "out of range 0-2147483647"),
    ("{name: a.com, type: A, value: 1.2.3.4, tll: 5}", "tll", "did you mean 'ttl'"),
    ("{name: 'a..com', type: A, value: 1.2.3.4}", "name", "not a DNS name"),
    ("{name: 'a com', type: A, value: 1.2.3.4}", "name", "not a DNS name"),
    ("{name: x.svc.cluster.local, type: A, value: 1.2.3.4}", "name", "inside the cluster domain"),
    ("{name: s.a.com, type: SRV, value: '0 5 target'}", "value", "PRIORITY WEIGHT PORT TARGET"),
    ("{name: a.com, type: MX, value: '99999 mx.a.com'}", "value", "PREFERENCE EXCHANGE"),
    ("{name: a.com, type: A, value: 1}", "value", "must be a string"),
])
def test_record_errors_point_at_the_field(record, field, message):
    found = problems(with_records(f"      - {record}\n") + POD)
    p = next((p for p in found if p.field == f"spec.dns.upstream.records[0].{field}"), None)
    assert p is not None, found
    assert message in p.message and p.line == 11


def test_cname_must_stand_alone_and_duplicates_are_errors():
    found = problems(with_records("      - {name: a.com, type: A, value: 1.2.3.4}\n"
                                  "      - {name: a.com, type: CNAME, value: b.com}\n"
                                  "      - {name: a.com, type: A, value: 1.2.3.4}\n") + POD)
    assert any(p.field == "spec.dns.upstream.records[1].type" and "CNAME" in p.message for p in found)
    assert any(p.field == "spec.dns.upstream.records[2]" and "duplicate" in p.message for p in found)


# --- the default cluster DNS --------------------------------------------------------------

def test_every_cluster_gets_kube_dns_and_two_coredns_pods_on_different_nodes():
    c = load(CONFIG + POD)
    svc = c.service("kube-system", "kube-dns")
    assert svc.cluster_ip == A("10.2.0.10") and svc.selector == {"k8s-app": "kube-dns"}
    assert [(p.name, p.port, p.protocol) for p in svc.ports] == [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    dns = [p for p in c.pods if p.labels.get("k8s-app") == "kube-dns"]
    assert len(dns) == 2 and all(p.namespace == "kube-system" and p.owner == "Deployment/coredns" for p in dns)
    assert len({p.node for p in dns}) == 2
    assert [(cp.port, cp.protocol, cp.name) for cp in dns[0].ports()] == [
        (53, "UDP", "dns"), (53, "TCP", "dns-tcp"), (9153, "TCP", "metrics")]
    assert {(e.ip, e.port, e.protocol) for e in svc.endpoints} == {
        (p.ip, 53, proto) for p in dns for proto in ("UDP", "TCP")}
    assert c.pod("default", "a").ip == A("10.244.0.2")          # the input's pods are placed first


def test_coredns_goes_to_the_least_loaded_nodes():
    pinned = "".join(POD.replace("name: a,", f"name: p{i},").replace(
        "spec: {", "spec: {nodeName: n1, ") for i in range(3))
    c = load(CONFIG + pinned)
    assert sorted(p.node for p in c.pods if p.namespace == "kube-system") == ["n2", "n3"]


def test_the_inputs_own_kube_dns_is_kept():
    own = """\
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  selector: {app: my-dns}
  ports: [{name: dns, port: 53, protocol: UDP}]
"""
    c = load(CONFIG + POD + own)
    assert [s.key for s in c.services] == ["kube-system/kube-dns"]
    assert c.service("kube-system", "kube-dns").ports[0].name == "dns"
    assert [p.key for p in c.pods] == ["default/a"]


def test_coredns_pods_without_the_service_get_the_service_only():
    pods = POD.replace("name: a, namespace: default}", "name: my-coredns, namespace: kube-system, "
                       "labels: {k8s-app: kube-dns}}").replace(
        "image: x}", "image: x, ports: [{name: dns, containerPort: 53, protocol: UDP}]}")
    c = load(CONFIG + pods)
    assert [p.key for p in c.pods] == ["kube-system/my-coredns"]
    assert [e.pod for e in c.service("kube-system", "kube-dns").endpoints] == ["kube-system/my-coredns"]


def test_cni_installs_coredns_and_the_vnet_resolver():
    emu = Emulator(load(CONFIG + POD), seed=1)
    for p in emu.cluster.pods:
        if p.namespace == "kube-system":
            socks = emu.topology.pod_ns[p.key].sockets
            assert isinstance(socks.listeners["UDP", 53].app, CoreDnsApp)
            assert isinstance(socks.listeners["TCP", 53].app, CoreDnsApp)
            assert socks.listeners["UDP", 53].owner == "coredns"
            assert not isinstance(socks.listeners["TCP", 9153].app, CoreDnsApp)
    assert isinstance(emu.topology.namespaces["ext"].sockets.listeners["UDP", 53].app, ResolverApp)


# --- resolv.conf and the search order ------------------------------------------------------

POD_CONF = ResolvConf((A("10.2.0.10"),), ("ns.svc.cluster.local", "svc.cluster.local", "cluster.local"),
                      5, "ClusterFirst")


def test_resolv_conf_text():
    assert POD_CONF.text() == ("nameserver 10.2.0.10\n"
                               "search ns.svc.cluster.local svc.cluster.local cluster.local\n"
                               "options ndots:5\n")


@pytest.mark.parametrize("name, order", [
    ("web", ["web.ns.svc.cluster.local.", "web.svc.cluster.local.", "web.cluster.local.", "web."]),
    ("example.com", ["example.com.ns.svc.cluster.local.", "example.com.svc.cluster.local.",
                     "example.com.cluster.local.", "example.com."]),
    ("web.default.svc.cluster.local", ["web.default.svc.cluster.local.ns.svc.cluster.local.",
                                       "web.default.svc.cluster.local.svc.cluster.local.",
                                       "web.default.svc.cluster.local.cluster.local.",
                                       "web.default.svc.cluster.local."]),
    ("a.b.c.d.e.f", ["a.b.c.d.e.f.", "a.b.c.d.e.f.ns.svc.cluster.local.", "a.b.c.d.e.f.svc.cluster.local.",
                     "a.b.c.d.e.f.cluster.local."]),
    ("web.default.svc.cluster.local.", ["web.default.svc.cluster.local."]),
])
def test_glibc_search_order_with_ndots_5(name, order):
    assert search_names(name, POD_CONF) == order


def test_node_resolv_conf_has_no_search_list():
    conf = ResolvConf((A("168.63.129.16"),), (), 1, "Default")
    assert search_names("web", conf) == ["web."]
    assert conf.text() == "nameserver 168.63.129.16\n"


@pytest.mark.parametrize("spec, yes", [
    ("service-a.backend", True), ("web", True), ("example.com.", True), ("10.2.0.10", False),
    ("pod/default/client", False), ("ext/1.2.3.4", False), ("", False), ("a..b", False),
])
def test_is_dns_name(spec, yes):
    assert is_dns_name(spec) is yes
