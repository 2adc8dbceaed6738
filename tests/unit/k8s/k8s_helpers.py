# k8s_helpers: shared helpers of the k8s input-layer tests: load YAML texts (dedented,
# joined as one multi-document file "t.yaml") as a cluster, or collect the problems
# they raise; small document builders. Imported by the test_k8s_*.py modules.
from __future__ import annotations

import textwrap

import pytest

from kdp.errors import ClusterInputError, Problem
from kdp.k8s import load_cluster_text

CONFIG = """\
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: test}
spec:
  podCIDR: 10.244.0.0/16
  serviceCIDR: 10.2.0.0/24
  dnsServiceIP: 10.2.0.10
  vnetSubnet: 10.240.0.0/16
  nodes: [{name: n1}, {name: n2}, {name: n3}]
"""


def _text(*docs: str) -> str:
    return "---\n".join(textwrap.dedent(d).strip("\n") + "\n" for d in docs)


def load(*docs: str):
    """The Cluster of the docs, joined as one multi-document file t.yaml."""
    return load_cluster_text(_text(*docs), "t.yaml")


def problems(*docs: str) -> list[Problem]:
    """The Problems the docs raise (fails if they load)."""
    with pytest.raises(ClusterInputError) as info:
        load_cluster_text(_text(*docs), "t.yaml")
    found = info.value.problems
    assert all(not p.message.startswith("internal error") for p in found), found
    return found


def pod(name: str = "web", ns: str = "default", labels: str = "{app: web}", extra: str = "",
        ports: str = "[{name: http, containerPort: 8080}]") -> str:
    """A Pod document; extra is appended (already indented YAML at top level)."""
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, "
            f"labels: {labels}}}\nspec:\n  containers:\n  - name: app\n    image: x\n"
            f"    ports: {ports}\n{extra}")


def svc(name: str = "web", ns: str = "default", spec: str = "") -> str:
    """A Service document; spec is YAML indented by two spaces."""
    spec = spec or "  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n"
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n{spec}")


def find(found: list[Problem], field: str) -> Problem:
    """The one problem about field (fails, listing all, if there is none)."""
    hits = [p for p in found if p.field == field]
    assert hits, f"no problem on {field}: " + "\n".join(map(str, found))
    return hits[0]


DEFAULT_DNS_FILE = "<kdp:cluster-dns>"   # where the control plane's default kube-dns/CoreDNS come from


def user_pods(c) -> list:
    """The cluster's pods without the CoreDNS pods every cluster gets by default."""
    return [p for p in c.pods if p.source.file != DEFAULT_DNS_FILE]


def user_services(c) -> list:
    """The cluster's services without the default kube-system/kube-dns."""
    return [s for s in c.services if s.source.file != DEFAULT_DNS_FILE]
