# The text topology shows what --json has, and the routes --help promises: a
# LoadBalancer's address, traffic policy, health check port, session affinity
# and source ranges, an ExternalName's target, each node's routes, and the
# Ingresses (with whether anything serves them).
import json

from .kdp_cli import kdp

CLUSTER = """\
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: topo}
spec: {nodes: [{name: n1}, {name: n2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: web, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80}]
  externalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  loadBalancerSourceRanges: [198.51.100.0/24]
status: {loadBalancer: {ingress: [{ip: 20.1.2.3}]}}
---
apiVersion: v1
kind: Service
metadata: {name: search}
spec: {type: ExternalName, externalName: search.example.com}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, annotations: {kubernetes.io/ingress.class: nginx}}
spec:
  rules: [{host: web.example.com, http: {paths: [{path: /, pathType: Prefix,
           backend: {service: {name: web, port: {number: 80}}}}]}}]
"""


def test_text_topology_shows_service_details_routes_and_ingresses(tmp_path):
    (tmp_path / "c.yaml").write_text(CLUSTER)
    r = kdp("topology", tmp_path)
    assert r.returncode == 0, r.stderr
    text = r.stdout.splitlines()
    web = text.index(next(l for l in text if l.startswith("svc default/web LoadBalancer")))
    detail = text[web + 1]
    assert detail.startswith("    load balancer 20.1.2.3; externalTrafficPolicy Local (health check node port 3")
    assert "sessionAffinity ClientIP (600s)" in detail and "loadBalancerSourceRanges 198.51.100.0/24" in detail
    assert any(l.startswith("svc default/search ExternalName -> search.example.com") for l in text)
    assert "  route default via 10.240.0.1 dev eth0" in text
    assert any(l.startswith("  route 10.244.1.0/24 via 10.240.0.") for l in text)   # to n2's pods
    assert "ingress default/web (class nginx): NOT SERVED: no ingress-nginx controller pod" in text
    assert "    web.example.com/ (Prefix) -> service default/web:80" in text


def test_json_topology_has_the_same_details(tmp_path):
    (tmp_path / "c.yaml").write_text(CLUSTER)
    doc = json.loads(kdp("topology", tmp_path, "--json").stdout)
    web = next(s for s in doc["services"] if s["name"] == "web")
    assert web["load_balancer_ips"] == ["20.1.2.3"] and web["external_traffic_policy"] == "Local"
    assert web["session_affinity"] == "ClientIP" and web["session_affinity_timeout"] == 600
    assert web["load_balancer_source_ranges"] == ["198.51.100.0/24"]
    assert next(s for s in doc["services"] if s["name"] == "search")["external_name"] == "search.example.com"
    ing = doc["ingresses"][0]
    assert (ing["namespace"], ing["name"], ing["served"]) == ("default", "web", False)
    assert ing["rules"][0]["paths"][0]["backend"]["service"] == "web"
