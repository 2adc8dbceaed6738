# Tests of k8s.names: the Kubernetes name rules and kdp's deterministic generated names.
from __future__ import annotations

import re

import pytest

from kdp.k8s import names


@pytest.mark.parametrize("value,ok", [("web", True), ("web-1", True), ("1web", True),
                                      ("Web", False), ("-web", False), ("web-", False),
                                      ("a.b", False), ("a" * 63, True), ("a" * 64, False)])
def test_dns1123_label(value, ok):
    assert (names.dns1123_label(value) is None) == ok


@pytest.mark.parametrize("value,ok", [("web.shop", True), ("web", True), ("web..shop", False),
                                      ("web_1", False), ("", False), ("a." * 127, False)])
def test_dns1123_subdomain(value, ok):
    assert (names.dns1123_subdomain(value) is None) == ok


@pytest.mark.parametrize("value,ok", [("web", True), ("1web", False), ("web-1", True),
                                      ("web.a", False)])
def test_dns1035_label(value, ok):
    assert (names.dns1035_label(value) is None) == ok


@pytest.mark.parametrize("value,ok", [("http", True), ("dns-tcp", True), ("8080", False),
                                      ("a--b", False), ("metrics-port-long", False)])
def test_iana_svc_name(value, ok):
    assert (names.iana_svc_name(value) is None) == ok


@pytest.mark.parametrize("key,ok", [("app", True), ("kubernetes.io/os", True),
                                    ("Bad_Prefix/app", False), ("-app", False)])
def test_label_key(key, ok):
    assert (names.label_key(key) is None) == ok


def test_generated_names_are_deterministic_and_shaped_like_kubes():
    h = names.pod_template_hash({"spec": {"containers": [{"name": "nginx"}]}})
    assert h == names.pod_template_hash({"spec": {"containers": [{"name": "nginx"}]}})
    assert re.fullmatch(f"[{names.ALPHABET}]{{10}}", h)
    assert h != names.pod_template_hash({"spec": {"containers": [{"name": "other"}]}})
    s = names.pod_suffix("default", "nginx", 0)
    assert re.fullmatch(f"[{names.ALPHABET}]{{5}}", s)
    assert s != names.pod_suffix("default", "nginx", 1)
    assert names.generated_pod_name("nginx", h, s) == f"nginx-{h}-{s}"
    long = names.generated_pod_name("x" * 80, h, s)
    assert len(long) == 63 and long.endswith(s)


def test_node_names():
    assert re.fullmatch(r"aks-nodepool1-\d{8}-vmss000000", names.node_name("demo", 0))
    assert names.node_name("demo", 11).endswith("vmss00000b")
    assert names.node_pool_id("demo") != names.node_pool_id("other")


def test_stable_uid_shape():
    uid = names.stable_uid("default", "web")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uid)
