# Ingresses nothing serves: without an ingress-nginx controller pod, `kdp http`
# says so (and how kdp recognises a controller) instead of sending the user to
# an address where the connection is refused; with a controller whose Service
# has no load balancer address, it says where to send the request instead.
# `kdp validate` warns about both, and about Ingresses of a class kdp does not model.
#
#   ext --edge-- n1, n2;  shop/web-0 (8080) behind shop/web; Ingress shop/shop: shop.example.com -> web:80
#   (with_controller: ingress-nginx/ingress-nginx-controller-0 behind a NodePort Service)
import pytest

from .kdp_cli import clean_error, kdp

BASE = """\
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: ing}
spec: {nodes: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {containers: [{name: web, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  ingressClassName: nginx
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other, namespace: shop}
spec:
  ingressClassName: traefik
  rules: [{host: other.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"""
CONTROLLER = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: ingress-nginx-controller-0
  namespace: ingress-nginx
  labels: {app.kubernetes.io/name: ingress-nginx, app.kubernetes.io/component: controller}
spec: {containers: [{name: controller, ports: [{name: http, containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: ingress-nginx-controller, namespace: ingress-nginx}
spec:
  type: NodePort
  selector: {app.kubernetes.io/name: ingress-nginx, app.kubernetes.io/component: controller}
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]
"""
LABEL = "app.kubernetes.io/name=ingress-nginx"


@pytest.fixture
def no_controller(tmp_path):
    (tmp_path / "cluster.yaml").write_text(BASE)
    return tmp_path


@pytest.fixture
def with_controller(tmp_path):
    (tmp_path / "cluster.yaml").write_text(BASE + CONTROLLER)
    return tmp_path


def test_http_to_an_ingress_host_without_a_controller_says_there_is_none(no_controller):
    r = kdp("http", no_controller, "--from", "ext/198.51.100.20", "--url", "http://shop.example.com/")
    err = clean_error(r)
    assert r.returncode == 2
    assert "no ingress-nginx controller pod, so Ingress shop/shop is not served" in err
    assert LABEL in err                                   # how kdp recognises one
    assert "load balancer" not in err and "give an address" not in err


def test_validate_warns_about_ingresses_no_controller_serves(no_controller):
    r = kdp("validate", no_controller)
    assert r.returncode == 0
    assert "warning: Ingress shop/shop: not served: the cluster has no ingress-nginx controller pod" in r.stderr
    assert "warning: Ingress shop/other: not served by ingress-nginx, the controller kdp models: " \
           "ingressClassName 'traefik'" in r.stderr


def test_controller_service_without_a_load_balancer_address(with_controller):
    r = kdp("validate", with_controller)
    assert r.returncode == 0
    assert ("warning: the ingress-nginx controller's Service ingress-nginx/ingress-nginx-controller (type "
            "NodePort, ports 80 (nodePort 30080)) has no load balancer address") in r.stderr
    assert "Ingress shop/shop: not served" not in r.stderr
    r = kdp("http", with_controller, "--from", "ext/198.51.100.20", "--url", "http://shop.example.com/")
    err = clean_error(r)
    assert r.returncode == 2 and "has no load balancer address" in err
    hint = err.split("--url ", 1)[1].split(" ")[0]
    assert hint.startswith("http://10.240.0.") and hint.endswith(":30080/")
    # and following the hint works: the controller answers through the NodePort
    ok = kdp("http", with_controller, "--from", "ext/198.51.100.20", "--url", hint,
             "--header", "Host: shop.example.com")
    assert ok.returncode == 0 and "< HTTP/1.1 200 OK" in ok.stdout, ok.stdout + ok.stderr


def test_the_demo_has_no_ingress_warnings():
    r = kdp("validate", "demo")
    assert r.returncode == 0 and "Ingress" not in r.stderr and "load balancer" not in r.stderr
