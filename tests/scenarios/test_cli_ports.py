# Which port a trace goes to when --dport is not given: a Service's first port of
# the protocol asked for (or an error naming its ports), and for the name of a
# headless Service, the port its endpoint serves, not 80.
#
#   n1: client --cbr0-- db-0 (5432/TCP, headless db)   n2: mixed-0 (80/TCP, 5353/UDP)
import json

import pytest

from .kdp_cli import clean_error, kdp

CLUSTER = """\
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: ports}
spec: {nodes: [{name: n1}, {name: n2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec:
  nodeName: n1
  hostname: db-0
  subdomain: db
  containers: [{name: pg, ports: [{name: pg, containerPort: 5432}]}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: pg}]
---
apiVersion: v1
kind: Pod
metadata: {name: mixed-0, labels: {app: mixed}}
spec:
  nodeName: n2
  containers: [{name: m, ports: [{containerPort: 80}, {containerPort: 5353, protocol: UDP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: mixed}
spec:
  selector: {app: mixed}
  ports:
  - {name: http, port: 80}
  - {name: mdns, port: 5353, protocol: UDP}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    path = tmp_path_factory.mktemp("ports") / "cluster.yaml"
    path.write_text(CLUSTER)
    return path


def trace_json(*args):
    r = kdp("trace", *args, "--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_udp_to_a_service_takes_its_first_udp_port(cluster):
    doc = trace_json(cluster, "--from", "pod/default/client", "--to", "svc/default/mixed", "--proto", "udp")
    assert doc["packet"]["proto"] == "udp" and doc["packet"]["dport"] == 5353
    assert doc["disposition"] == "delivered" and doc["delivered_to"] == "pod/default/mixed-0"


def test_no_proto_takes_the_first_port_and_its_protocol(cluster):
    doc = trace_json(cluster, "--from", "pod/default/client", "--to", "svc/default/mixed")
    assert (doc["packet"]["proto"], doc["packet"]["dport"]) == ("tcp", 80)
    dns = trace_json("demo", "--from", "pod/default/client", "--to", "svc/kube-system/kube-dns")
    assert (dns["packet"]["proto"], dns["packet"]["dport"]) == ("udp", 53)      # kube-dns: 53/UDP first
    tcp = trace_json("demo", "--from", "pod/default/client", "--to", "svc/kube-system/kube-dns", "--proto", "tcp")
    assert (tcp["packet"]["proto"], tcp["packet"]["dport"]) == ("tcp", 53)


def test_a_protocol_the_service_does_not_have_is_an_error_naming_its_ports():
    r = kdp("trace", "demo", "--from", "pod/default/client", "--to", "svc/backend/service-a", "--proto", "udp")
    err = clean_error(r)
    assert r.returncode == 2 and r.stdout == ""
    assert "Service backend/service-a has no UDP port" in err and "80/TCP (http)" in err and "--dport" in err
    # an explicit --dport is still taken as given
    doc = trace_json("demo", "--from", "pod/default/client", "--to", "svc/backend/service-a", "--proto", "udp",
                     "--dport", "80")
    assert (doc["packet"]["proto"], doc["packet"]["dport"]) == ("udp", 80)


def test_a_headless_service_name_is_traced_to_its_port(cluster):
    r = kdp("trace", cluster, "--from", "pod/default/client", "--to", "db.shop", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert doc["delivered_to"] == "pod/shop/db-0"
    assert doc["packet"]["dport"] == 5432 and doc["packet"]["proto"] == "tcp"
    # a pod's own name under the headless service too
    doc = trace_json(cluster, "--from", "pod/default/client", "--to", "db-0.db.shop")
    assert doc["delivered_to"] == "pod/shop/db-0" and doc["packet"]["dport"] == 5432


def test_headless_name_with_a_protocol_it_does_not_serve_names_its_ports(cluster):
    r = kdp("trace", cluster, "--from", "pod/default/client", "--to", "db.shop", "--proto", "udp")
    err = clean_error(r)
    assert r.returncode == 2 and "headless Service shop/db has no UDP port" in err and "5432/TCP" in err
