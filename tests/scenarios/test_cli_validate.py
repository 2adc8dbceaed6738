# `kdp validate` reports every independent problem in one run (a broken
# ClusterConfig no longer hides the objects' problems), leaves out the knock-on
# errors of a broken field, and cites the node port range a nodePort is checked
# against.
import pytest

from .kdp_cli import clean_error, kdp

CONFIG = """\
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {{name: typo}}
spec:
  {service_key}: 10.2.0.0/24
  dnsServiceIP: 10.2.0.10
  nodes: [{{name: n1, podCIDR: 10.244.0.0/24}}, {{name: n2, podCIDR: 10.244.1.0/24}}]
{extra}---
apiVersion: v1
kind: Pod
metadata: {{name: a}}
spec: {{nodeName: n1, containers: [{{name: c}}]}}
status: {{podIP: 10.244.1.7}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, nodePort: {node_port}}}]
"""


def validate(tmp_path, **kw):
    f = tmp_path / "cluster.yaml"
    f.write_text(CONFIG.format(**{"service_key": "servceCIDR", "extra": "", "node_port": 40000, **kw}))
    r = kdp("validate", f)
    return r.returncode, clean_error(r).splitlines(), f


def test_every_independent_problem_in_one_run(tmp_path):
    code, lines, f = validate(tmp_path)
    assert code == 2
    assert [l for l in lines if not l.startswith("warning: ")] == [
        f"{f}:5: ClusterConfig typo: spec.servceCIDR: unknown field 'servceCIDR'; did you mean 'serviceCIDR'?",
        f"{f}:13: Pod default/a: status.podIP: pod IP 10.244.1.7 is outside node n1's pod CIDR 10.244.0.0/24",
        f"{f}:21: Service default/web: spec.ports[0].nodePort: nodePort 40000 is outside the cluster's node "
        "port range 30000-32767 (the default; a ClusterConfig's spec.nodePortRange changes it)",
    ]
    # no knock-on complaint about dnsServiceIP against the defaulted serviceCIDR
    assert not any("dnsServiceIP" in l for l in lines)


def test_the_same_check_still_speaks_when_its_fields_are_sound(tmp_path):
    # serviceCIDR spelt right: a dnsServiceIP outside it is a real problem, and reported
    f = tmp_path / "cluster.yaml"
    f.write_text(CONFIG.format(service_key="serviceCIDR", extra="", node_port=30080)
                 .replace("10.2.0.10", "10.9.0.10"))
    lines = clean_error(kdp("validate", f)).splitlines()
    assert f"{f}:6: ClusterConfig typo: spec.dnsServiceIP: dnsServiceIP 10.9.0.10 is outside serviceCIDR " \
           "10.2.0.0/24" in lines
    assert any("pod IP 10.244.1.7 is outside" in l for l in lines)


def test_a_broken_node_port_range_silences_only_the_range_checks(tmp_path):
    code, lines, f = validate(tmp_path, service_key="serviceCIDR",
                              extra="  nodePortRange: 40000-30000\n")
    assert code == 2
    assert any("spec.nodePortRange: '40000-30000' is not a port range" in l for l in lines)
    assert not any("nodePort 40000" in l for l in lines)          # judged against a range in doubt
    assert any("pod IP 10.244.1.7 is outside" in l for l in lines)


@pytest.mark.parametrize("port", [70000, 80])
def test_a_node_port_out_of_range_cites_the_clusters_range(tmp_path, port):
    code, lines, _ = validate(tmp_path, service_key="serviceCIDR", extra="  nodePortRange: 30000-31000\n",
                              node_port=port)
    assert code == 2
    assert any(f"nodePort {port} is outside the cluster's node port range 30000-31000 (the ClusterConfig's "
               "spec.nodePortRange)" in l for l in lines), lines


def test_misspelt_service_and_port_fields_are_named_with_what_they_meant(tmp_path):
    f = tmp_path / "typo.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: a}}\n"
                 "spec: {containers: [{name: c, ports: [{containerport: 80}]}]}\n---\n"
                 "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
                 "spec:\n  slector: {app: a}\n  ports: [{port: 80, targetport: 8080}]\n")
    r = kdp("validate", f)
    lines = clean_error(r).splitlines()
    assert r.returncode == 2
    # the error, and below it the warning that explains it
    assert lines[0] == f"{f}:4: Pod default/a: spec.containers[0].ports[0].containerPort: required field is missing"
    assert (f"warning: {f}:4: Pod default/a: spec.containers[0].ports[0].containerport: unknown field "
            "'containerport', ignored (the API server would reject it); did you mean 'containerPort'?") in lines
    assert any("spec.slector: unknown field 'slector'" in l and "did you mean 'selector'?" in l for l in lines)
    assert any("spec.ports[0].targetport" in l and "did you mean 'targetPort'?" in l for l in lines)


@pytest.mark.parametrize("text, found", [("", "no Kubernetes objects at all"),
                                         ("---\n# nothing yet\n", "no Kubernetes objects at all"),
                                         ("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
                                          "only Namespace")])
def test_an_empty_input_says_it_is_a_default_cluster_and_what_was_defaulted(tmp_path, text, found):
    f = tmp_path / "empty.yaml"
    f.write_text(text)
    r = kdp("validate", f)
    assert r.returncode == 0 and r.stdout.startswith("ok: 2 nodes")
    warnings = clean_error(r).splitlines()
    assert warnings[0] == (f"warning: {f}: no Pods, Deployments, Services or Nodes in the input ({found}): "
                           "this is a default cluster")
    assert any("no ClusterConfig: the defaults are used: networkPlugin kubenet, podCIDR 10.244.0.0/16, "
               "serviceCIDR 10.0.0.0/16, dnsServiceIP 10.0.0.10" in w for w in warnings)
    assert any("no nodes declared: 2 generated (aks-nodepool1-" in w for w in warnings)
    assert any("cluster DNS kdp adds to every cluster" in w for w in warnings)


def test_a_real_cluster_gets_no_such_warning():
    r = kdp("validate", "demo")
    assert r.returncode == 0 and "default cluster" not in r.stderr and "no ClusterConfig" not in r.stderr
