# Tests of k8s.load and the entry points: files, directories, multi-document YAML,
# kubectl Lists, every supported kind, skipped kinds, and YAML-level problems.
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_helpers import CONFIG, find, load, pod, problems, svc, user_pods, user_services

from kdp.errors import ClusterInputError
from kdp.k8s import load_cluster


def write(path, text: str):
    path.write_text(text)
    return path


def test_file_and_multi_document(tmp_path):
    f = write(tmp_path / "c.yaml", CONFIG + "---\n" + pod() + "---\n" + svc())
    c = load_cluster(str(f))
    assert [p.key for p in user_pods(c)] == ["default/web"]
    assert [s.key for s in user_services(c)] == ["default/web"]
    assert user_pods(c)[0].source.file == str(f) and user_pods(c)[0].source.line == 11


def test_directory_loads_yaml_and_yml_sorted_and_ignores_others(tmp_path):
    write(tmp_path / "b.yml", svc())
    write(tmp_path / "a.yaml", CONFIG)
    write(tmp_path / "c.yaml", pod())
    write(tmp_path / "notes.txt", "not: [yaml")
    c = load_cluster(tmp_path)
    assert c.config.name == "test" and len(user_pods(c)) == 1 and len(user_services(c)) == 1


def test_list_of_paths(tmp_path):
    a = write(tmp_path / "a.yaml", CONFIG)
    b = write(tmp_path / "b.yaml", pod())
    assert len(user_pods(load_cluster([str(a), b]))) == 1


def test_empty_directory_is_a_problem(tmp_path):
    with pytest.raises(ClusterInputError) as info:
        load_cluster(tmp_path)
    assert info.value.problems[0].file == str(tmp_path)
    assert "no *.yaml" in info.value.problems[0].message


def test_missing_file_is_a_problem(tmp_path):
    with pytest.raises(ClusterInputError) as info:
        load_cluster(str(tmp_path / "nope.yaml"))
    p = info.value.problems[0]
    assert p.file.endswith("nope.yaml") and "no such file" in p.message
    assert str(p) == f"{tmp_path / 'nope.yaml'}: no such file or directory"     # no "- -: -:" placeholders


def test_non_utf8_file_is_a_problem(tmp_path):
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"\xff\xfe\x00kind")
    with pytest.raises(ClusterInputError) as info:
        load_cluster(f)
    assert "UTF-8" in info.value.problems[0].message


def test_kubectl_list_is_unpacked_with_item_lines():
    c = load("""
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Pod
          metadata: {name: a}
          spec: {containers: [{name: c}]}
        - apiVersion: v1
          kind: Pod
          metadata: {name: b}
          spec: {containers: [{name: c}]}
        metadata: {resourceVersion: ""}
        """)
    assert [(p.name, p.source.line) for p in user_pods(c)] == [("a", 4), ("b", 8)]


def test_typed_list_kind_is_unpacked():
    c = load("apiVersion: v1\nkind: PodList\nitems:\n- " + pod("a").replace("\n", "\n  "))
    assert [p.name for p in user_pods(c)] == ["a"]


def test_empty_documents_are_ignored():
    c = load("# only a comment", pod())
    assert len(user_pods(c)) == 1


def test_every_supported_kind():
    c = load(CONFIG, """
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop}
        """, """
        apiVersion: v1
        kind: Node
        metadata: {name: n4, labels: {disk: ssd}}
        spec: {podCIDR: 10.244.9.0/24}
        status:
          addresses: [{type: Hostname, address: n4}, {type: InternalIP, address: 10.240.0.99}]
        """, pod(ns="shop"), """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: api, namespace: shop}
        spec:
          replicas: 2
          selector: {matchLabels: {app: api}}
          template:
            metadata: {labels: {app: api}}
            spec: {containers: [{name: api, image: x}]}
        """, svc(ns="shop"), svc("ext", "shop", "  ports: [{port: 5432}]\n"), """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: ext-1, namespace: shop, labels: {kubernetes.io/service-name: ext}}
        addressType: IPv4
        ports: [{port: 5432}]
        endpoints: [{addresses: [10.240.0.200]}]
        """, svc("old", "shop", "  ports: [{port: 25}]\n"), """
        apiVersion: v1
        kind: Endpoints
        metadata: {name: old, namespace: shop}
        subsets: [{addresses: [{ip: 10.240.0.201}], ports: [{port: 25}]}]
        """, """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: web, namespace: shop}
        spec: {rules: [{host: shop.example}]}
        """, """
        apiVersion: networking.k8s.io/v1
        kind: IngressClass
        metadata: {name: nginx}
        spec: {controller: k8s.io/ingress-nginx}
        """)
    assert "shop" in c.namespaces
    n4 = c.node("n4")
    assert n4.ip == IPv4Address("10.240.0.99") and n4.pod_cidr == IPv4Network("10.244.9.0/24")
    assert n4.labels["disk"] == "ssd"
    assert len([p for p in c.pods if p.owner == "Deployment/api"]) == 2
    assert [(e.ip, e.port) for e in c.service("shop", "ext").endpoints] == [
        (IPv4Address("10.240.0.200"), 5432)]
    assert [e.ip for e in c.service("shop", "old").endpoints] == [IPv4Address("10.240.0.201")]
    assert c.ingresses[0]["metadata"] == {"name": "web", "namespace": "shop"}
    assert type(c.ingresses[0]) is dict and c.ingress_classes[0]["spec"]["controller"]
    assert c.warnings == []


def test_unsupported_kind_is_skipped_with_a_warning():
    c = load(pod(), """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, namespace: shop}
        data: {a: b}
        """)
    assert c.warnings == ["t.yaml:10: skipped unsupported kind ConfigMap shop/settings"]
    assert "shop" in c.namespaces


def test_invalid_yaml_reports_the_line():
    found = problems(pod(), "apiVersion: v1\nkind: Pod\nmetadata: {name: [a\n")
    p = found[0]
    assert p.file == "t.yaml" and p.line == 12 and "invalid YAML" in p.message


def test_tab_indentation_is_invalid_yaml():
    p = problems("kind: Pod\nmetadata:\n\tname: a\n")[0]
    assert p.line == 3 and "invalid YAML" in p.message


def test_non_mapping_document():
    p = problems(pod(), "- just\n- a list\n")[0]
    assert (p.line, p.field) == (10, "") and "must be a mapping" in p.message
    assert "got a list" in p.message


def test_missing_kind():
    p = find(problems("apiVersion: v1\nmetadata: {name: a}\n"), "kind")
    assert p.file == "t.yaml" and p.line == 1 and "required" in p.message


def test_missing_api_version():
    p = find(problems("kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n"),
             "apiVersion")
    assert p.kind == "Pod" and "required" in p.message


def test_missing_metadata_name():
    p = find(problems("apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n"), "metadata.name")
    assert p.line == 3 and "required" in p.message


def test_duplicate_yaml_key():
    p = problems("apiVersion: v1\nkind: Pod\nkind: Pod\nmetadata: {name: a}\n"
                 "spec: {containers: [{name: c}]}\n")[0]
    assert p.line == 3 and "duplicate key 'kind'" in p.message


def test_timestamps_stay_strings():
    c = load("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: w, creationTimestamp: 2024-01-01T00:00:00Z}
        spec: {defaultBackend: {service: {name: web, port: {number: 80}}}}
        """)
    assert c.ingresses[0]["metadata"]["creationTimestamp"] == "2024-01-01T00:00:00Z"


def test_problem_string_format():
    p = find(problems(pod(extra="  nodeName: nowhere\n")), "spec.nodeName")
    assert str(p) == "t.yaml:9: Pod default/web: spec.nodeName: node 'nowhere' does not exist"


def test_all_problems_are_listed_in_file_order():
    found = problems(pod("a", ports="[{containerPort: 0}]"), svc("1bad"),
                     pod("b", extra="  nodeName: nowhere\n"))
    assert [p.field for p in found] == ["spec.containers[0].ports[0].containerPort",
                                        "metadata.name", "spec.nodeName"]
    assert [p.line for p in found] == sorted(p.line for p in found)


WEIRD = [
    "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: 5\n",
    "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [1, {ports: [1]}]}\n",
    "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: [1]}\nspec: {containers: x}\n"
    "status: {conditions: 4, podIP: 10}\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, "
    "targetPort: 3.5, nodePort: x}], type: 5, clusterIP: 7}\n",
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n"
    "spec: {replicas: -1, selector: 4, template: 5}\n",
    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a, labels: "
    "{kubernetes.io/service-name: x}}\nendpoints: [{addresses: 5}, 3]\nports: 9\n",
    "apiVersion: kdp.dev/v1alpha1\nkind: ClusterConfig\nmetadata: {name: a}\n"
    "spec: {nodes: [3, {name: x, bogus: 1}], kubeProxy: 5, externalHosts: [5]}\n",
    "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {podCIDR: 5}\n"
    "status: {addresses: [5]}\n",
    "kind: List\nitems: [5, {kind: Pod}]\n",
    "{a: b}: c\n",
    "&a [*a]\n",
    "kind: 5\nmetadata: {name: [x]}\n",
]


@pytest.mark.parametrize("text", WEIRD)
def test_malformed_input_gives_problems_not_exceptions(text):
    assert problems(text)


def test_documents_before_a_syntax_error_still_count():
    found = problems(svc("web", spec="  ports: [{port: 80}]\n"), "a: [", """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
        endpoints: []
        """)
    assert len(found) == 1 and "invalid YAML" in found[0].message


_junk = st.recursive(st.none() | st.booleans() | st.integers(-2, 70000) | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
_SLOTS = [("spec",), ("spec", "containers"), ("spec", "containers", 0, "ports"),
          ("spec", "containers", 0, "ports", 0, "containerPort"), ("status",),
          ("status", "podIP"), ("metadata", "labels"), ("spec", "ports"), ("spec", "ports", 0),
          ("spec", "ports", 0, "targetPort"), ("spec", "clusterIP"), ("spec", "type"),
          ("spec", "selector"), ("spec", "nodeName"), ("metadata", "namespace")]


def _put(doc, path, value):
    cur = doc
    for seg in path[:-1]:
        cur = cur[seg]
    cur[path[-1]] = value


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["Pod", "Service"]), slot=st.sampled_from(_SLOTS), value=_junk)
def test_junk_in_any_field_is_a_problem_never_a_crash(kind, slot, value):
    doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "a", "labels": {"app": "a"}},
           "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}],
                    "ports": [{"port": 80, "targetPort": 80}], "selector": {"app": "a"}},
           "status": {"podIP": "10.244.0.9"}}
    try:
        _put(doc, slot, value)
    except (KeyError, IndexError, TypeError):
        return
    try:
        load(yaml.safe_dump(doc))
    except ClusterInputError as exc:
        assert exc.problems
        assert not any("internal error" in p.message for p in exc.problems), exc.problems


def test_bad_ingress_is_reported_with_file_line_and_field():
    text = """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: w}
        spec:
          rules:
          - host: shop.example.com
            http:
              paths:
              - {path: /api, pathType: Sideways, backend: {service: {name: web, port: {number: 80}}}}
        """
    import pytest
    from kdp.errors import ClusterInputError
    with pytest.raises(ClusterInputError) as e:
        load(text)
    msg = str(e.value)
    assert "Ingress default/w" in msg and "pathType" in msg and "t.yaml:" in msg
