# k8s: the Kubernetes side of kdp. This file owns the input entry points:
# YAML files/directories (or the built-in demo) -> a validated, fully resolved
# model.Cluster, or ClusterInputError listing every problem found.
from __future__ import annotations

import os
import traceback
from importlib import resources

from ..errors import ClusterInputError, Problem
from .controlplane import build
from .load import Report, load_texts, read_paths
from .model import Cluster
from .validate import decode

__all__ = ["load_cluster", "load_cluster_text", "demo_cluster", "demo_text", "Cluster",
           "ClusterInputError"]

DEMO_FILE = "demo.yaml"


def load_cluster(paths: str | os.PathLike | list) -> Cluster:
    """The cluster described by YAML files and/or directories of *.yaml/*.yml files."""
    report = Report()
    texts = read_paths(paths, report)
    return _resolve(texts, report)


def load_cluster_text(text: str, file: str = "<string>") -> Cluster:
    """The cluster described by one YAML text (file is only used in messages)."""
    return _resolve([(file, text)], Report())


def demo_text() -> str:
    """The YAML of the built-in demo cluster (an AKS-like kubenet cluster)."""
    return resources.files("kdp.data").joinpath(DEMO_FILE).read_text(encoding="utf-8")


def demo_cluster() -> Cluster:
    """The built-in demo cluster, loaded through the same path as any other input."""
    return _resolve([(DEMO_FILE, demo_text())], Report())


def _resolve(texts: list[tuple[str, str]], report: Report) -> Cluster:
    cluster = None
    inputs = None
    try:
        objects = load_texts(texts, report)
        inputs = decode(objects, report)
        # built even over a broken ClusterConfig, so every independent problem is
        # found in one run; the checks resting on its broken fields stay silent
        cluster = build(inputs, report)
        report.warnings.extend(_defaulted(objects, inputs, cluster, [f for f, _ in texts]))
    except Exception as exc:            # a kdp bug must still not end in a traceback
        if inputs is None or inputs.config_ok:   # over a broken config: a knock-on failure
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            report.error(None, (), f"internal error while loading the cluster: "
                         f"{type(exc).__name__}: {exc} ({os.path.basename(frame.filename)}:"
                         f"{frame.lineno})", file="<kdp>")
    if report.problems or cluster is None:
        raise ClusterInputError(_ordered(report.problems, [f for f, _ in texts]),
                                list(dict.fromkeys(report.warnings)))
    cluster.warnings = list(dict.fromkeys(report.warnings))
    return cluster


WORKLOAD_KINDS = ("Pod", "Deployment", "Service", "EndpointSlice", "Endpoints", "Node", "Ingress")


def _defaulted(objects, inputs, cluster: Cluster, files: list[str]) -> list[str]:
    """For an input with nothing that makes a cluster (no Pods, Deployments,
    Services, Nodes...), warnings that say so and name what kdp filled in: an
    empty file must not pass as if it described something."""
    if any(o.kind in WORKLOAD_KINDS for o in objects):
        return []
    cfg = cluster.config
    where = ", ".join(files)
    found = sorted({o.kind for o in objects if o.kind})
    out = [f"{where}: no Pods, Deployments, Services or Nodes in the input "
           f"({'only ' + ', '.join(found) if found else 'no Kubernetes objects at all'}): "
           + ("this is a default cluster" if inputs.config_f is None else
              "the cluster has no workloads of its own")]
    if inputs.config_f is None:
        out.append(f"{where}: no ClusterConfig: the defaults are used: networkPlugin "
                   f"{cfg.network_plugin}, podCIDR {cfg.pod_cidr}, serviceCIDR {cfg.service_cidr}, "
                   f"dnsServiceIP {cfg.dns_service_ip}, vnetSubnet {cfg.vnet_subnet}, nodePortRange "
                   f"{cfg.node_port_range[0]}-{cfg.node_port_range[1]}")
    if inputs.node_count is None and not inputs.config_nodes and not inputs.node_objects:
        out.append(f"{where}: no nodes declared: {len(cluster.nodes)} generated "
                   f"({', '.join(n.name for n in cluster.nodes)})")
    dns = [p.name for p in cluster.pods if p.namespace == "kube-system"]
    out.append(f"{where}: the only workload is the cluster DNS kdp adds to every cluster "
               f"(Service kube-system/kube-dns at {cfg.dns_service_ip}, pods {', '.join(dns)})")
    return out


def _ordered(problems: list[Problem], files: list[str]) -> list[Problem]:
    """Problems without repeats, by file (input order) then line."""
    rank = {f: i for i, f in enumerate(files)}
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (rank.get(p.file, -1), p.line or 0))
