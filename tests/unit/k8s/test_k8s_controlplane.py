# Tests of k8s.controlplane: defaults, nodes, Deployment expansion, scheduling, IPAM,
# ClusterIP/NodePort allocation and endpoints (selectors, readiness, slices).
from __future__ import annotations

import re
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

import pytest
from k8s_helpers import CONFIG, load, pod, svc, user_pods, user_services

from kdp.errors import ClusterInputError
from kdp.k8s import names


def deployment(name="web", replicas=3, labels="{app: web}", spec="containers: [{name: c, "
               "image: x, ports: [{name: http, containerPort: 8080}]}]", ns="default") -> str:
    return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {labels}}}\n"
            f"  template:\n    metadata: {{labels: {labels}}}\n    spec: {{{spec}}}\n")


def node_obj(name, extra=""):
    return f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n{extra}"


# --- defaults and nodes -------------------------------------------------------------------

def test_defaults_without_cluster_config():
    c = load(pod())
    cfg = c.config
    assert (cfg.name, cfg.network_plugin, cfg.pod_cidr, cfg.service_cidr, cfg.dns_service_ip) == (
        "kdp", "kubenet", N("10.244.0.0/16"), N("10.0.0.0/16"), A("10.0.0.10"))
    assert [n.name for n in c.nodes] == [names.node_name("kdp", 0), names.node_name("kdp", 1)]
    assert [(n.ip, n.pod_cidr) for n in c.nodes] == [
        (A("10.240.0.4"), N("10.244.0.0/24")), (A("10.240.0.5"), N("10.244.1.0/24"))]
    assert c.namespaces == ["default", "kube-system"]


def test_generated_node_names():
    c = load(CONFIG.replace("nodes: [{name: n1}, {name: n2}, {name: n3}]", "nodes: 3"))
    assert all(re.fullmatch(r"aks-nodepool1-\d{8}-vmss00000[012]", n.name) for n in c.nodes)
    assert len({n.name.split("-")[2] for n in c.nodes}) == 1
    assert c.nodes[0].labels["kubernetes.io/hostname"] == c.nodes[0].name


def test_dns_service_ip_defaults_to_tenth_address_of_service_cidr():
    c = load(CONFIG.replace("  dnsServiceIP: 10.2.0.10\n", ""))
    assert c.config.dns_service_ip == A("10.2.0.10")


def test_node_objects_replace_the_default_two_nodes():
    c = load(node_obj("solo"))
    assert [(n.name, n.ip, n.pod_cidr) for n in c.nodes] == [
        ("solo", A("10.240.0.4"), N("10.244.0.0/24"))]


def test_node_count_with_node_objects_fills_up_with_generated_nodes():
    c = load(CONFIG.replace("[{name: n1}, {name: n2}, {name: n3}]", "3"),
             node_obj("big", "spec: {podCIDR: 10.244.0.0/24}\n"))
    assert c.nodes[0].name == "big" and len(c.nodes) == 3
    assert [n.pod_cidr for n in c.nodes] == [N("10.244.0.0/24"), N("10.244.1.0/24"),
                                             N("10.244.2.0/24")]


def test_node_list_merges_with_node_objects_and_skips_taken_addresses():
    c = load(CONFIG.replace("{name: n2}", "{name: n2, ip: 10.240.0.4, labels: {disk: ssd}}"),
             "apiVersion: v1\nkind: Node\nmetadata: {name: n3, labels: {zone: '1'}}\n"
             "spec: {podCIDR: 10.244.0.0/24}\n")
    assert [(n.name, str(n.ip), str(n.pod_cidr)) for n in c.nodes] == [
        ("n1", "10.240.0.5", "10.244.1.0/24"), ("n2", "10.240.0.4", "10.244.2.0/24"),
        ("n3", "10.240.0.6", "10.244.0.0/24")]
    assert c.node("n2").labels["disk"] == "ssd" and c.node("n3").labels["zone"] == "1"


def test_node_pod_prefix():
    c = load(CONFIG.replace("  nodes:", "  nodePodPrefix: 26\n  nodes:"))
    assert [str(n.pod_cidr) for n in c.nodes] == ["10.244.0.0/26", "10.244.0.64/26",
                                                  "10.244.0.128/26"]


def test_config_options_are_decoded():
    c = load(CONFIG + """\
  clusterDomain: corp.local
  nodePortRange: 31000-31999
  hairpinMode: promiscuous-bridge
  kubeProxy: {masqueradeAll: true, clusterCIDR: 10.244.0.0/16, conntrackMax: 1000,
              conntrackTCPEstablished: 1h30m, conntrackTCPCloseWait: 60}
  externalHosts: [{address: 93.184.216.34, tcpPorts: [8443]}]
""")
    cfg = c.config
    assert cfg.cluster_domain == "corp.local" and cfg.node_port_range == (31000, 31999)
    assert cfg.hairpin_mode == "promiscuous-bridge"
    kp = cfg.kube_proxy
    assert (kp.masquerade_all, kp.cluster_cidr, kp.conntrack_max) == (
        True, N("10.244.0.0/16"), 1000)
    assert (kp.conntrack_tcp_established, kp.conntrack_tcp_close_wait) == (5400, 60)
    assert cfg.external_hosts[0].tcp_ports == (8443,) and cfg.external_hosts[0].udp_ports == (53,)


# --- deployments ----------------------------------------------------------------------------

def test_deployment_pod_names_labels_and_owner():
    c = load(CONFIG, deployment())
    assert len(user_pods(c)) == 3
    hashes = {p.labels["pod-template-hash"] for p in user_pods(c)}
    assert len(hashes) == 1
    h = hashes.pop()
    assert re.fullmatch(f"[{names.ALPHABET}]{{10}}", h)
    for p in user_pods(c):
        assert re.fullmatch(rf"web-{h}-[{names.ALPHABET}]{{5}}", p.name), p.name
        assert p.labels["app"] == "web" and p.owner == "Deployment/web" and p.ready
        assert re.fullmatch(r"[0-9a-f-]{36}", p.uid)
    assert len({p.name for p in user_pods(c)}) == 3


def test_deployment_expansion_is_deterministic_and_follows_the_template():
    a, b = load(CONFIG, deployment()), load(CONFIG, deployment())
    assert [(p.name, p.node, p.ip) for p in a.pods] == [(p.name, p.node, p.ip) for p in b.pods]
    changed = load(CONFIG, deployment(spec="containers: [{name: c, image: y}]"))
    assert {p.labels["pod-template-hash"] for p in a.pods} != {
        p.labels["pod-template-hash"] for p in changed.pods}


def test_zero_replicas_and_default_one():
    assert user_pods(load(deployment(replicas=0))) == []
    assert len(user_pods(load(deployment().replace("  replicas: 3\n", "")))) == 1


def test_dumped_pods_of_a_deployment_are_not_expanded_again():
    dumped = pod("web-5d8f7c9b6d-abcde", extra="", labels="{app: web}").replace(
        "namespace: default,", "namespace: default, ownerReferences: [{kind: ReplicaSet, "
        "name: web-5d8f7c9b6d, controller: true}],")
    c = load(deployment(), dumped)
    assert [(p.name, p.owner) for p in user_pods(c)] == [("web-5d8f7c9b6d-abcde", "Deployment/web")]


# --- scheduling and IPAM ---------------------------------------------------------------------

def test_scheduling_spreads_and_counts_pinned_pods():
    c = load(CONFIG, pod("a", extra="  nodeName: n1\n"), pod("b", extra="  nodeName: n1\n"),
             deployment(replicas=4))
    per_node = {n.name: sorted(p.name for p in user_pods(c) if p.node == n.name) for n in c.nodes}
    assert [len(per_node[n]) for n in ("n1", "n2", "n3")] == [2, 2, 2]


def test_scheduling_honours_node_selector():
    c = load(CONFIG.replace("{name: n3}", "{name: n3, labels: {gpu: 'yes'}}"),
             deployment(replicas=3, spec="nodeSelector: {gpu: 'yes'}, containers: [{name: c}]"))
    assert {p.node for p in user_pods(c)} == {"n3"}


def test_max_pods_limits_scheduling():
    c = load(CONFIG.replace("  nodes:", "  maxPods: 1\n  nodes:"), deployment(replicas=3))
    assert sorted(p.node for p in c.pods) == ["n1", "n2", "n3"]


def test_ipam_lowest_free_from_dot_two_skipping_given_ips():
    c = load(CONFIG, pod("a", extra="  nodeName: n1\nstatus: {podIP: 10.244.0.2}\n"),
             pod("b", extra="  nodeName: n1\n"), pod("c", extra="  nodeName: n1\n"))
    assert [(p.name, str(p.ip)) for p in user_pods(c)] == [
        ("a", "10.244.0.2"), ("b", "10.244.0.3"), ("c", "10.244.0.4")]


def test_host_network_pod_gets_the_node_ip():
    c = load(CONFIG, pod(extra="  nodeName: n2\n  hostNetwork: true\n"))
    assert c.pods[0].ip == A("10.240.0.5") and c.pods[0].host_network


def test_azure_cni_pod_ips_come_from_per_node_blocks_after_the_node_ips():
    c = load(CONFIG.replace("  nodes:", "  networkPlugin: azure\n  maxPods: 30\n  nodes:"),
             pod("a", extra="  nodeName: n1\n"), pod("b", extra="  nodeName: n2\n"),
             pod("c", extra="  nodeName: n2\n"), pod("d", extra="  nodeName: n3\n"))
    assert all(n.pod_cidr is None for n in c.nodes)
    assert [str(n.ip) for n in c.nodes] == ["10.240.0.4", "10.240.0.5", "10.240.0.6"]
    assert [str(p.ip) for p in user_pods(c)] == ["10.240.0.7", "10.240.0.37", "10.240.0.38",
                                           "10.240.0.67"]


def test_pod_readiness_and_terminating():
    c = load(pod("fresh"),
             pod("ready", extra="status: {conditions: [{type: Ready, status: 'True'}]}\n"),
             pod("unready", extra="status: {conditions: [{type: Ready, status: 'False'}]}\n"),
             pod("pending", extra="status: {phase: Pending}\n"),
             pod("going").replace("metadata: {", "metadata: {deletionTimestamp: "
                                  "'2024-01-01T00:00:00Z', "))
    state = {p.name: (p.ready, p.terminating) for p in user_pods(c)}
    assert state == {"fresh": (True, False), "ready": (True, False), "unready": (False, False),
                     "pending": (False, False), "going": (False, True)}


# --- services -------------------------------------------------------------------------------

def test_cluster_ip_allocation_skips_network_dns_and_taken_in_sorted_order():
    ports = "  ports: [{port: 80}]\n"
    c = load(CONFIG, svc("zeta", spec=ports), svc("alpha", "b-ns", ports),
             svc("taken", spec="  clusterIP: 10.2.0.2\n" + ports),
             svc("kube-dns", "kube-system", "  ports: [{port: 53, protocol: UDP}]\n"),
             svc("headless", spec="  clusterIP: None\n" + ports), svc("a", "a-ns", ports),
             *[svc(f"s{i}", "c-ns", ports) for i in range(8)])
    ips = {s.key: str(s.cluster_ip) if s.cluster_ip else None for s in c.services}
    assert ips["a-ns/a"] == "10.2.0.1" and ips["b-ns/alpha"] == "10.2.0.3"
    assert ips["default/taken"] == "10.2.0.2" and ips["kube-system/kube-dns"] == "10.2.0.10"
    assert ips["default/headless"] is None
    assert [ips[f"c-ns/s{i}"] for i in range(8)] == [
        "10.2.0.4", "10.2.0.5", "10.2.0.6", "10.2.0.7", "10.2.0.8", "10.2.0.9", "10.2.0.11",
        "10.2.0.12"]
    assert ips["default/zeta"] == "10.2.0.13"
    assert [s.key for s in c.services] == sorted(s.key for s in c.services)


def test_node_port_allocation_lowest_free_in_sorted_order():
    np = "  type: NodePort\n  selector: {app: web}\n"
    c = load(svc("b", spec=np + "  ports: [{port: 80, nodePort: 30000}]\n"),
             svc("a", spec=np + "  ports: [{name: h, port: 80}, {name: d, port: 53, "
                                "protocol: UDP}]\n"),
             svc("c", spec=np + "  ports: [{port: 80}]\n"))
    ports = {s.name: [(p.node_port, p.protocol) for p in s.ports] for s in user_services(c)}
    assert ports == {"a": [(30001, "TCP"), (30000, "UDP")], "b": [(30000, "TCP")],
                     "c": [(30002, "TCP")]}


def test_load_balancer_fields():
    c = load(svc(spec="""\
  type: LoadBalancer
  externalTrafficPolicy: Local
  loadBalancerSourceRanges: [203.0.113.0/24]
  externalIPs: [198.51.100.7]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  selector: {app: web}
  ports: [{port: 443, nodePort: 31443}]
status:
  loadBalancer: {ingress: [{ip: 20.50.60.70}, {hostname: lb.example}]}
"""))
    s = c.services[0]
    assert s.type == "LoadBalancer" and s.ports[0].node_port == 31443
    assert s.load_balancer_ips == [A("20.50.60.70")]
    assert s.load_balancer_source_ranges == [N("203.0.113.0/24")]
    assert s.external_ips == [A("198.51.100.7")] and s.external_traffic_policy == "Local"
    assert (s.session_affinity, s.affinity_timeout) == ("ClientIP", 60)
    assert s.health_check_node_port == 30000


def test_load_balancer_without_node_ports_and_explicit_health_check_port():
    c = load(svc(spec="  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n"
                      "  externalTrafficPolicy: Local\n  healthCheckNodePort: 32000\n"
                      "  ports: [{port: 80}]\n"))
    s = c.services[0]
    assert s.ports[0].node_port is None and s.health_check_node_port == 32000


def test_external_name_service():
    c = load(svc(spec="  type: ExternalName\n  externalName: db.example.com\n"))
    s = c.services[0]
    assert (s.cluster_ip, s.external_name, s.endpoints) == (None, "db.example.com", [])


# --- endpoints ------------------------------------------------------------------------------

def test_endpoints_from_selector_with_named_target_port_per_pod():
    c = load(CONFIG,
             pod("a", extra="  nodeName: n1\n", ports="[{name: http, containerPort: 8080}]"),
             pod("b", extra="  nodeName: n2\n", ports="[{name: http, containerPort: 9000}]"),
             pod("c", extra="  nodeName: n3\n", ports="[{name: other, containerPort: 80}]"),
             pod("d", ns="other", extra="  nodeName: n3\n"),
             svc(spec="  selector: {app: web}\n  ports: [{name: web, port: 80, "
                      "targetPort: http}, {name: raw, port: 81}]\n"))
    eps = [(e.port_name, str(e.ip), e.port, e.node, e.pod)
           for e in c.service("default", "web").endpoints]
    assert eps == [("raw", "10.244.0.2", 81, "n1", "default/a"),
                   ("raw", "10.244.1.2", 81, "n2", "default/b"),
                   ("raw", "10.244.2.2", 81, "n3", "default/c"),
                   ("web", "10.244.0.2", 8080, "n1", "default/a"),
                   ("web", "10.244.1.2", 9000, "n2", "default/b")]


def test_endpoint_conditions_follow_pod_readiness():
    c = load(pod("ok"),
             pod("unready", extra="status: {conditions: [{type: Ready, status: 'False'}]}\n"),
             pod("going", extra="status: {conditions: [{type: Ready, status: 'True'}]}\n")
             .replace("metadata: {", "metadata: {deletionTimestamp: '2024-01-01T00:00:00Z', "),
             pod("going-unready", extra="status: {conditions: [{type: Ready, status: 'False'}]}\n")
             .replace("metadata: {", "metadata: {deletionTimestamp: '2024-01-01T00:00:00Z', "),
             svc())
    cond = {e.pod.split("/")[1]: (e.ready, e.serving, e.terminating)
            for e in c.services[0].endpoints}
    assert cond == {"ok": (True, True, False), "unready": (False, False, False),
                    "going": (False, True, True), "going-unready": (False, False, True)}


def test_publish_not_ready_addresses():
    c = load(pod(extra="status: {conditions: [{type: Ready, status: 'False'}]}\n"),
             svc(spec="  publishNotReadyAddresses: true\n  selector: {app: web}\n"
                      "  ports: [{port: 80}]\n"))
    assert c.services[0].endpoints[0].ready


def test_host_network_endpoints_use_the_node_ip():
    c = load(CONFIG, pod(extra="  nodeName: n3\n  hostNetwork: true\n"), svc())
    e = c.services[0].endpoints[0]
    assert (str(e.ip), e.port, e.node) == ("10.240.0.6", 8080, "n3")


def test_headless_service_endpoints_and_hostnames():
    c = load(pod(extra="  hostname: web-0\n  subdomain: web\n"),
             svc(spec="  clusterIP: None\n  selector: {app: web}\n  ports: [{port: 80}]\n"))
    s = c.services[0]
    assert s.cluster_ip is None and s.endpoints[0].hostname == "web-0"
    assert c.pods[0].hostname == "web-0" and c.pods[0].subdomain == "web"


def test_service_without_selector_has_no_endpoints():
    c = load(pod(), svc(spec="  ports: [{port: 80}]\n"))
    assert c.services[0].endpoints == [] and c.warnings == []


def test_selector_matching_nothing_warns():
    c = load(svc())
    assert c.services[0].endpoints == []
    assert "selector app=web matches no pods" in c.warnings[0]


def test_endpoint_slice_is_honoured_instead_of_the_selector():
    c = load(CONFIG, pod("a", extra="  nodeName: n2\nstatus: {podIP: 10.244.1.9}\n"),
             svc(spec="  selector: {app: web}\n  ports: [{name: http, port: 80}]\n"), """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8443, protocol: TCP}, {name: nope, port: 1}]
endpoints:
- addresses: [10.244.1.9]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.240.0.77]
  nodeName: n3
  targetRef: {kind: Pod, name: ext}
""")
    eps = c.services[0].endpoints
    assert [(str(e.ip), e.port, e.port_name, e.node, e.pod, e.ready, e.serving, e.terminating)
            for e in eps] == [
        ("10.240.0.77", 8443, "http", "n3", "default/ext", True, True, False),
        ("10.244.1.9", 8443, "http", "n2", "default/a", False, True, True)]
    assert any("port nope 1/TCP matches no port of service default/web" in w
               for w in c.warnings)


def test_v1_endpoints_object_with_not_ready_addresses():
    c = load(svc(spec="  ports: [{name: pg, port: 5432}]\n"), """\
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets:
- addresses: [{ip: 10.240.0.50}]
  notReadyAddresses: [{ip: 10.240.0.51}]
  ports: [{name: pg, port: 5432}]
""")
    assert [(str(e.ip), e.ready) for e in c.services[0].endpoints] == [
        ("10.240.0.50", True), ("10.240.0.51", False)]


def test_endpoints_for_a_missing_service_are_a_warning():
    c = load("apiVersion: v1\nkind: Endpoints\nmetadata: {name: kube-scheduler, namespace: "
             "kube-system}\nsubsets: []\n")
    assert c.warnings == []     # no subsets, nothing to ignore
    c = load("apiVersion: v1\nkind: Endpoints\nmetadata: {name: ghost}\n"
             "subsets: [{addresses: [{ip: 10.0.0.1}]}]\n")
    assert "missing service" in c.warnings[0]



def test_node_objects_with_overlapping_pod_cidrs():
    nodes = [node_obj(f"n{i}", "spec: {podCIDR: 10.244.%d.0/24}\n" % i) for i in range(3)]
    with pytest.raises(ClusterInputError) as info:
        load(*nodes, node_obj("extra", "spec: {podCIDR: 10.244.0.0/24}\n"))
    p = info.value.problems[0]
    assert (p.file, p.kind, p.name, p.field) == ("t.yaml", "Node", "extra", "spec.podCIDR")
    assert "overlaps the pod CIDR of node n0" in p.message


def test_default_config_too_small_for_the_node_objects():
    with pytest.raises(ClusterInputError) as info:
        load(*[node_obj(f"n{i}") for i in range(257)])
    p = info.value.problems[0]
    assert (p.file, p.kind, p.field) == ("<defaults>", "ClusterConfig", "spec.podCIDR")
    assert "room for 256 node pod ranges of /24, but the cluster has 257 nodes" in p.message
