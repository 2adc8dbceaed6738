# Input the API server (1.33) or kube-proxy normalises (issue 13 item 3): addresses
# with leading zeros in the legacy-validated Service / endpoint / pod / node fields
# (accepted with a warning, read as decimal), loadBalancerSourceRanges with spaces
# or host bits, an explicit empty port name on a one-port Service.
import pytest

from kdp.errors import ClusterInputError
from kdp.k8s import load_cluster_text
from kdp.k8s.kubeproxy import node_rules

YAML = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {containers: [{name: web, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.0.0.050
  selector: {app: web}
  externalIPs: [198.051.100.7]
  loadBalancerSourceRanges: [" 203.0.113.0/24 ", "198.51.100.7/24"]
  ports: [{name: "", port: 80, targetPort: 8080}]
status: {loadBalancer: {ingress: [{ip: 20.1.1.01}]}}
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual, namespace: default}
subsets: [{addresses: [{ip: 172.30.0.041}], ports: [{port: 80}]}]
"""


def test_normalised_input_loads_with_warnings():
    c = load_cluster_text(YAML, file="n.yaml")
    web = c.service("default", "web")
    assert str(web.cluster_ip) == "10.0.0.50" and [str(i) for i in web.external_ips] == ["198.51.100.7"]
    assert [str(n) for n in web.load_balancer_source_ranges] == ["203.0.113.0/24", "198.51.100.0/24"]
    assert [str(i) for i in web.load_balancer_ips] == ["20.1.1.1"] and web.ports[0].name is None
    manual = c.service("default", "manual")
    assert [str(e.ip) for e in manual.endpoints_for(manual.ports[0])] == ["172.30.0.41"]
    text = "\n".join(c.warnings)
    for field, canon in (("spec.clusterIP", "10.0.0.50"), ("spec.externalIPs[0]", "198.51.100.7"),
                         ("status.loadBalancer.ingress[0].ip", "20.1.1.1"),
                         ("subsets[0].addresses[0].ip", "172.30.0.41")):
        assert f": {field}: " in text and f"kube-proxy reads it as {canon}" in text, field
    assert "spec.loadBalancerSourceRanges[1]: 198.51.100.7/24 has host bits set" in text
    assert "loadBalancerSourceRanges[0]" not in text           # spaces: trimmed silently
    rules = node_rules(c, c.nodes[0].name)
    assert "-A KUBE-SERVICES -d 10.0.0.50/32 -p tcp" in rules
    assert "--to-destination 172.30.0.41:80" in rules and "-s 203.0.113.0/24" in rules


@pytest.mark.parametrize("bad, where", [
    ("clusterIP: 10.0.0.256", "spec.clusterIP: '10.0.0.256' is not a valid IPv4 address"),
    ("clusterIP: 10.0.00", "spec.clusterIP: '10.0.00' is not a valid IPv4 address"),
])
def test_what_a_cluster_cannot_hold_is_refused(bad, where):
    with pytest.raises(ClusterInputError) as e:
        load_cluster_text(YAML.replace("clusterIP: 10.0.0.050", bad), file="n.yaml")
    assert f"n.yaml:12: Service default/web: {where}" in str(e.value)


def test_kdp_own_fields_stay_strict():
    cfg = "apiVersion: kdp.dev/v1alpha1\nkind: ClusterConfig\nmetadata: {name: c}\nspec:\n  dnsServiceIP: 10.0.0.010\n"
    with pytest.raises(ClusterInputError) as e:
        load_cluster_text(cfg, file="c.yaml")
    assert ("ClusterConfig c: spec.dnsServiceIP: '10.0.0.010' is not a valid IPv4 address (leading "
            "zeros are not allowed here; write 10.0.0.10)") in str(e.value)
