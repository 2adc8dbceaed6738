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
        inputs = decode(load_texts(texts, report), report)
        # built even over a broken ClusterConfig, so every independent problem is
        # found in one run; the checks resting on its broken fields stay silent
        cluster = build(inputs, report)
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


def _ordered(problems: list[Problem], files: list[str]) -> list[Problem]:
    """Problems without repeats, by file (input order) then line."""
    rank = {f: i for i, f in enumerate(files)}
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (rank.get(p.file, -1), p.line or 0))
