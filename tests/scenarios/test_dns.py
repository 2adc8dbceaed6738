# DNS end to end in the demo cluster, as packets: a pod's stub resolver walks
# its search list, each query a UDP packet to kube-dns's 10.2.0.10 that
# kube-proxy DNATs to a CoreDNS pod, whose answer comes back from 10.2.0.10:53;
# headless services, SRV, PTR, pod names, ExternalName through the upstream,
# TCP fallback after a truncated answer, nodes using the VNet's DNS, then
# resolve-then-trace and the `resolve` command.
from __future__ import annotations

import argparse
import json
from ipaddress import IPv4Address as A

import pytest

from kdp import cli_resolve as dns_cli
from kdp import wire as pw
from kdp.dns import wire
from kdp.dns.resolver import resolve, resolve_then_trace, resolv_conf
from kdp.emulator import Emulator
from kdp.k8s import demo_text, load_cluster_text

DNS_IP = A("10.2.0.10")

UPSTREAM = """\
  dns:
    upstream:
      records:
      - {name: example.com, type: A, value: 93.184.216.34}
      - {name: www.example.com, type: CNAME, value: example.com}
"""

EXTRA = """\
---
apiVersion: v1
kind: Namespace
metadata: {name: data}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: data, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  containers: [{name: pg, image: postgres, ports: [{name: pg, containerPort: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: data, labels: {app: db}}
spec:
  hostname: db-1
  subdomain: db
  containers: [{name: pg, image: postgres, ports: [{name: pg, containerPort: 5432}]}]
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: default}
spec:
  type: ExternalName
  externalName: www.example.com
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: big, namespace: data}
spec:
  replicas: 40
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec:
      containers: [{name: c, image: x, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: big, namespace: data}
spec:
  clusterIP: None
  selector: {app: big}
  ports: [{name: http, port: 80}]
"""


def dns_demo_cluster():
    text = demo_text().replace("  kubeProxy:\n", UPSTREAM + "  kubeProxy:\n", 1) + EXTRA
    return load_cluster_text(text, "dns-demo.yaml")


@pytest.fixture(scope="module")
def cluster():
    return dns_demo_cluster()


@pytest.fixture
def emu(cluster):
    return Emulator(cluster, seed=3)


def coredns_ips(emu):
    return {p.ip for p in emu.cluster.pods if p.labels.get("k8s-app") == "kube-dns"}


def test_pod_resolves_through_the_search_list_as_packets(emu):
    res = resolve(emu, "pod/default/client", "service-a.backend")
    assert res.ok and res.status == "NOERROR"
    assert res.addresses == [emu.cluster.service("backend", "service-a").cluster_ip]
    assert [(q.name, q.rcode) for q in res.queries] == [
        ("service-a.backend.default.svc.cluster.local.", "NXDOMAIN"),
        ("service-a.backend.svc.cluster.local.", "NOERROR")]
    client = emu.cluster.pod("default", "client")
    for q in res.queries:
        assert (q.server, q.transport, q.source) == (DNS_IP, "udp", client.ip)
        out = q.outcomes[0]
        assert out.disposition == "delivered" and out.delivered_to.startswith("pod/kube-system/coredns-")
        assert q.answered_by == out.delivered_to
        assert out.packet.ip.dst in coredns_ips(emu) and out.packet.l4.dport == 53      # DNATed
        assert q.dnat == f"10.2.0.10:53 -> {out.packet.ip.dst}:53"
        assert any(h.component == "netfilter" and "DNAT" in h.detail and "=> match" in h.detail
                   for h in out.hops)
        rep = out.reply.packet
        assert out.reply.delivered_to == "pod/default/client"
        assert (rep.ip.src, rep.l4.sport, rep.ip.dst, rep.l4.dport) == (DNS_IP, 53, client.ip, q.sport)
        assert pw.l4_checksum_ok(rep) and pw.ip_checksum_ok(rep)
        assert wire.decode(rep.l4.payload) == q.response                # read off the wire
    nx = res.queries[0].response
    assert nx.rcode == wire.NXDOMAIN and nx.authority[0].rtype == wire.SOA_T
    answer = res.response
    assert answer.aa and answer.answers[0].ttl == 5 and answer.id == res.queries[1].query.id


def test_the_coredns_pod_logs_the_question_in_its_app_hop(emu):
    res = resolve(emu, "pod/default/client", "service-a.backend.svc.cluster.local.")
    assert len(res.queries) == 1
    app = [h for h in res.queries[0].outcomes[0].hops if h.component == "app" and h.leg == "request"]
    assert "DNS service-a.backend.svc.cluster.local. A -> NOERROR, 1 answer" in app[0].detail


def test_resolv_conf_of_a_pod(emu):
    conf = resolv_conf(emu, "pod/backend/" + next(p.name for p in emu.cluster.pods
                                                   if p.namespace == "backend"))
    assert conf.text() == ("nameserver 10.2.0.10\nsearch backend.svc.cluster.local svc.cluster.local "
                           "cluster.local\noptions ndots:5\n")


def test_headless_service_answers_the_ready_pods(emu):
    res = resolve(emu, "pod/default/client", "db.data")
    assert sorted(res.addresses) == sorted(emu.cluster.pod("data", n).ip for n in ("db-0", "db-1"))
    res = resolve(emu, "pod/default/client", "db-1.db.data.svc.cluster.local")
    assert res.addresses == [emu.cluster.pod("data", "db-1").ip]
    assert res.queries[-1].name == "db-1.db.data.svc.cluster.local."


def test_srv_for_a_named_port(emu):
    res = resolve(emu, "pod/default/client", "_http._tcp.service-a.backend", "SRV")
    assert res.ok
    srv = res.answers[0].data
    assert (srv.priority, srv.weight, srv.port, srv.target) == (0, 100, 80, "service-a.backend.svc.cluster.local.")
    assert res.response.additional[0].data == emu.cluster.service("backend", "service-a").cluster_ip
    hs = resolve(emu, "pod/default/client", "_pg._tcp.db.data.svc.cluster.local.", "SRV")
    assert sorted((r.data.target, r.data.weight) for r in hs.answers) == [
        ("db-0.db.data.svc.cluster.local.", 50), ("db-1.db.data.svc.cluster.local.", 50)]


def test_ptr_for_a_service_and_a_pod(emu):
    svc = emu.cluster.service("backend", "service-a")
    res = resolve(emu, "pod/default/client", str(svc.cluster_ip), "PTR")
    assert [r.data for r in res.answers] == ["service-a.backend.svc.cluster.local."]
    assert res.queries[0].name == ".".join(reversed(str(svc.cluster_ip).split("."))) + ".in-addr.arpa."
    db0 = emu.cluster.pod("data", "db-0").ip
    res = resolve(emu, "pod/default/client", str(db0), "PTR")
    assert "db-0.db.data.svc.cluster.local." in [r.data for r in res.answers]


def test_pod_a_record(emu):
    pod = next(p for p in emu.cluster.pods if p.namespace == "backend")
    name = f"{str(pod.ip).replace('.', '-')}.backend.pod"
    res = resolve(emu, "pod/default/client", name)
    assert res.addresses == [pod.ip]
    assert res.queries[-1].name == f"{name}.cluster.local."        # found through the search list


def test_external_name_follows_the_cname_upstream(emu):
    res = resolve(emu, "pod/default/client", "search")
    assert res.queries[0].name == "search.default.svc.cluster.local."
    assert [(r.name, wire.type_name(r.rtype)) for r in res.answers] == [
        ("search.default.svc.cluster.local.", "CNAME"), ("www.example.com.", "CNAME"),
        ("example.com.", "A")]
    assert res.addresses == [A("93.184.216.34")]


def test_outside_names_cost_three_nxdomains_then_go_upstream(emu):
    res = resolve(emu, "pod/default/client", "example.com")
    assert [q.rcode for q in res.queries] == ["NXDOMAIN", "NXDOMAIN", "NXDOMAIN", "NOERROR"]
    assert res.queries[-1].name == "example.com." and res.addresses == [A("93.184.216.34")]
    assert not res.response.aa and res.response.ra                 # forwarded, not authoritative
    gone = resolve(emu, "pod/default/client", "nothing.example.org")
    assert gone.status == "NXDOMAIN" and not gone.ok and len(gone.queries) == 4


def test_nodata_ends_as_nodata(emu):
    res = resolve(emu, "pod/default/client", "service-a.backend.svc.cluster.local.", "AAAA")
    assert res.status == "NODATA" and res.answers == []


def test_truncated_answer_is_retried_over_tcp(emu):
    res = resolve(emu, "pod/default/client", "big.data.svc.cluster.local.")
    udp, tcp = res.queries
    assert udp.transport == "udp" and udp.truncated and len(udp.response.answers) < 40
    assert tcp.transport == "tcp" and not tcp.truncated and tcp.error is None
    assert len(res.addresses) == 40 and res.response is tcp.response
    assert tcp.query.id == udp.query.id                            # the same query, resent
    syn, ack, data, fin = tcp.outcomes[:4]
    assert syn.packet.l4.flags == pw.SYN and syn.packet.ip.dst in coredns_ips(emu)
    assert syn.packet.l4.dport == 53 and syn.reply.packet.ip.src == DNS_IP
    assert syn.reply.packet.l4.flags == pw.SYN | pw.ACK
    assert data.packet.l4.payload[:2] == len(tcp.query.encode()).to_bytes(2, "big")
    assert data.reply.packet.l4.sport == 53 and data.reply.packet.ip.src == DNS_IP
    assert fin.packet.l4.flags & pw.FIN and fin.reply.packet.l4.flags & pw.FIN
    assert all(o.disposition == "delivered" for o in tcp.outcomes)


def test_nodes_use_the_vnet_dns_where_cluster_names_do_not_exist(emu):
    node = emu.cluster.nodes[0].name
    res = resolve(emu, f"node/{node}", "service-a.backend.svc.cluster.local")
    assert res.conf.policy == "Default" and res.conf.nameservers == (A("168.63.129.16"),)
    assert [(q.name, q.rcode) for q in res.queries] == [("service-a.backend.svc.cluster.local.", "NXDOMAIN")]
    assert res.queries[0].answered_by == "ext/168.63.129.16" and res.queries[0].dnat is None
    ok = resolve(emu, f"node/{node}", "example.com")
    assert ok.addresses == [A("93.184.216.34")]
    assert ok.queries[0].source == emu.cluster.nodes[0].ip


def test_without_an_upstream_outside_names_servfail():
    emu = Emulator.demo(seed=1)
    res = resolve(emu, "pod/default/client", "example.com")
    assert [q.rcode for q in res.queries] == ["NXDOMAIN", "NXDOMAIN", "NXDOMAIN", "SERVFAIL"]
    assert res.status == "SERVFAIL"


def test_resolution_is_deterministic(cluster):
    a = resolve(Emulator(cluster, seed=3), "pod/default/client", "db.data")
    b = resolve(Emulator(cluster, seed=3), "pod/default/client", "db.data")
    c = resolve(Emulator(cluster, seed=4), "pod/default/client", "db.data")
    key = lambda r: [(q.sport, q.query.id, q.answered_by) for q in r.queries]     # noqa: E731
    assert key(a) == key(b) and key(a) != key(c)


def test_resolve_then_trace_to_a_service_name(emu):
    res, out = resolve_then_trace(emu, "pod/default/client", "service-a.backend")
    assert res.ok and out is not None
    assert out.disposition == "delivered" and out.delivered_to.startswith("pod/backend/service-a-")
    assert out.packet.l4.dport == 8080                             # the service's port 80 -> 8080
    assert out.reply.packet.ip.src == emu.cluster.service("backend", "service-a").cluster_ip
    res, out = resolve_then_trace(emu, "pod/default/client", "db-0.db.data", proto="tcp", dport=5432)
    assert out.delivered_to == "pod/data/db-0"
    res, out = resolve_then_trace(emu, "pod/default/client", "no-such-thing")
    assert out is None and res.status == "NXDOMAIN"


def run_cli(capsys, *args):
    p = argparse.ArgumentParser(prog="kdp")
    dns_cli.add_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["resolve", *args])
    code = a.func(a)
    return code, capsys.readouterr().out


def test_resolve_command_prints_like_dig(capsys):
    code, out = run_cli(capsys, "demo", "--from", "pod/default/client", "service-a.backend")
    assert code == 0
    assert "; resolv.conf (dnsPolicy ClusterFirst): nameserver 10.2.0.10; search default.svc.cluster.local" in out
    assert ";;  1. service-a.backend.default.svc.cluster.local. A udp" in out
    assert "(DNAT 10.2.0.10:53 -> 10.244." in out and "answered by pod/kube-system/coredns-" in out
    assert ": NXDOMAIN" in out and ": NOERROR, 1 answer" in out
    assert ";; ->>HEADER<<- opcode: QUERY, status: NOERROR" in out
    assert ";; flags: qr aa rd ra; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0" in out
    assert ";; QUESTION SECTION:" in out and ";; ANSWER SECTION:" in out
    assert ";; SERVER: 10.2.0.10#53(10.2.0.10) (UDP)" in out


def test_resolve_command_json_and_exit_status(capsys):
    code, out = run_cli(capsys, "demo", "--from", "pod/default/client", "kube-dns.kube-system",
                        "--type", "srv", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "NOERROR" and doc["type"] == "SRV"
    assert doc["answers"][0]["data"] == "0 50 53 kube-dns.kube-system.svc.cluster.local."
    q = doc["queries"][-1]
    assert q["server"] == "10.2.0.10" and q["answered_by"].startswith("pod/kube-system/coredns-")
    assert q["packets"][0]["disposition"] == "delivered" and q["response"]["rcode"] == "NOERROR"
    code, out = run_cli(capsys, "demo", "--from", "pod/default/client", "nope.default")
    assert code == 1 and ";; status: SERVFAIL" in out        # the demo has no upstream DNS
    assert out.count(": NXDOMAIN") == 3 and "nope.default. A udp" in out
