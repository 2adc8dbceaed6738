# The built-in demo cluster and the examples/cluster directory load cleanly and
# resolve to the addresses the docs and the other tests rely on.
from __future__ import annotations

import os
from collections import Counter
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

from kdp.k8s import demo_cluster, demo_text, load_cluster, names

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def test_demo_cluster_shape():
    c = demo_cluster()
    cfg = c.config
    assert (cfg.name, cfg.network_plugin, cfg.pod_cidr, cfg.service_cidr, cfg.dns_service_ip,
            str(cfg.docker_bridge), cfg.vnet_subnet) == (
        "demo", "kubenet", N("10.244.0.0/16"), N("10.2.0.0/24"), A("10.2.0.10"),
        "172.17.0.1/16", N("10.240.0.0/16"))
    assert [n.name for n in c.nodes] == [names.node_name("demo", i) for i in range(3)]
    assert [(str(n.ip), str(n.pod_cidr)) for n in c.nodes] == [
        ("10.240.0.4", "10.244.0.0/24"), ("10.240.0.5", "10.244.1.0/24"),
        ("10.240.0.6", "10.244.2.0/24")]
    assert c.namespaces == ["backend", "default", "ingress-nginx", "kube-system"]
    owners = Counter(p.owner for p in c.pods)
    assert owners == {"Deployment/nginx": 3, "Deployment/service-a": 2,
                      "Deployment/coredns": 2, "Deployment/ingress-nginx-controller": 1, None: 1}
    assert len({p.node for p in c.pods if p.owner == "Deployment/nginx"}) == 3
    client = c.pod("default", "client")
    assert client.node == c.nodes[0].name and client.ip == A("10.244.0.2")
    assert all(p.ip in c.node(p.node).pod_cidr for p in c.pods)
    sidecar = next(p for p in c.pods if p.owner == "Deployment/service-a")
    assert [(ct.name, [cp.port for cp in ct.ports]) for ct in sidecar.containers] == [
        ("service-a", [8080]), ("metrics", [9090])]
    assert c.warnings == []


def test_demo_services():
    c = demo_cluster()
    s = {x.key: x for x in c.services}
    assert set(s) == {"default/nginx", "default/web-nodeport", "default/web-lb",
                      "backend/service-a", "kube-system/kube-dns",
                      "ingress-nginx/ingress-nginx-controller"}
    assert s["kube-system/kube-dns"].cluster_ip == A("10.2.0.10")
    assert all(x.cluster_ip in c.config.service_cidr for x in s.values())
    assert s["default/web-nodeport"].ports[0].node_port == 30080
    lb = s["default/web-lb"]
    assert lb.load_balancer_ips == [A("20.50.60.70")] and lb.external_traffic_policy == "Local"
    assert lb.ports[0].node_port and lb.health_check_node_port
    assert [len(s[k].endpoints) for k in ("default/nginx", "backend/service-a",
                                          "kube-system/kube-dns")] == [3, 2, 4]
    assert {(e.port_name, e.protocol, e.port) for e in s["kube-system/kube-dns"].endpoints} == {
        ("dns", "UDP", 53), ("dns-tcp", "TCP", 53)}
    assert {e.port for e in s["backend/service-a"].endpoints} == {8080}
    ing = s["ingress-nginx/ingress-nginx-controller"]
    assert ing.type == "LoadBalancer" and ing.load_balancer_ips == [A("20.50.60.80")]
    assert ing.external_traffic_policy == "Local" and len(ing.endpoints) == 1
    assert [i["metadata"]["name"] for i in c.ingresses] == ["shop", "shop-api"]
    assert [k["spec"]["controller"] for k in c.ingress_classes] == ["k8s.io/ingress-nginx"]


def test_demo_is_deterministic():
    a, b = demo_cluster(), demo_cluster()
    assert [(p.name, p.node, p.ip) for p in a.pods] == [(p.name, p.node, p.ip) for p in b.pods]
    assert "kind: ClusterConfig" in demo_text()


def test_examples_cluster_directory_loads_cleanly():
    c = load_cluster(os.path.join(ROOT, "examples", "cluster"))
    assert c.config.name == "shop" and [n.name for n in c.nodes] == ["node-a", "node-b", "node-c"]
    assert c.pod("shop", "batch-1").node == "node-c"
    web = c.service("shop", "web")
    assert [(str(e.ip), e.port, e.ready) for e in web.endpoints] == [
        ("10.244.0.21", 8080, True), ("10.244.7.5", 8080, False)]
    assert [str(e.ip) for e in c.service("shop", "legacy-db").endpoints] == ["10.240.0.200"]
    assert c.warnings == []
