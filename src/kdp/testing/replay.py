# testing.replay: the way back from a property test to the command line.
# Clusters that remember the YAML manifests or the path they were loaded from
# and print as those manifests (so Hypothesis's falsifying examples show
# readable YAML, not an escaped one-line string), the emulator factory behind
# the kdp_emulator fixture, and the one-line `kdp trace` command that replays
# a flow (writing a generated cluster's YAML to a file for it). Owns no
# invariant and no strategy.
from __future__ import annotations

import hashlib
import os
import shlex
import tempfile
import weakref
from pathlib import Path

from ..emulator import Emulator
from ..k8s import demo_cluster, demo_text, load_cluster, load_cluster_text
from ..k8s.model import Cluster

__all__ = ["ManifestCluster", "ClusterText", "cluster_from_yaml", "cluster_from_path", "emulator",
           "replay_command", "cluster_argument", "save_cluster", "REPLAY_DIR_ENV"]

REPLAY_DIR_ENV = "KDP_REPLAY_DIR"       # where generated clusters are written for `kdp trace`
DEMO = "demo"
_TEXT_SOURCES = ("<string>", "<builtin>", "hypothesis.yaml", "demo.yaml")


def _yaml_literal(text: str, call: str) -> str:
    """`call("""<text>""")`, the YAML kept as is (lines at column 0), or the
    plain repr when the text cannot sit in a triple-quoted literal."""
    if '"""' in text or "\\" in text:
        return f"{call}({text!r})"
    body = text if text.endswith("\n") else text + "\n"
    return f'{call}("""\n{body}""")'


class ClusterText(str):
    """YAML manifests of a cluster (a str) that print as the YAML itself, over
    several lines, in Hypothesis's falsifying examples and in repr()."""

    def __repr__(self) -> str:
        return _yaml_literal(str(self), "ClusterText")

    def _repr_pretty_(self, p, cycle) -> None:          # Hypothesis's (and IPython's) printer
        p.text(repr(self))

    def save(self, path) -> str:
        """Write the manifests to `path` (for `kdp trace PATH ...`); returns the path."""
        return save_cluster(self, path)


class ManifestCluster(Cluster):
    """A resolved Cluster that remembers where it came from: its YAML text
    (`yaml`), the file or directory it was loaded from (`path`, or "demo"),
    and whether kdp.testing generated it (`generated`). Prints as
    cluster_from_yaml(\"\"\"...manifests...\"\"\") or cluster_from_path('...')."""

    yaml: str | None = None         # class defaults: dataclasses.replace() builds one without them
    path: str | None = None
    generated: bool = False

    @classmethod
    def adopt(cls, cluster: Cluster, yaml: str | None = None, path: str | None = None,
              generated: bool = False) -> "ManifestCluster":
        obj = object.__new__(cls)
        obj.__dict__.update(vars(cluster))
        obj.yaml, obj.path, obj.generated = yaml, path, generated
        return obj

    def __repr__(self) -> str:
        if self.path is not None:
            return f"cluster_from_path({self.path!r})"
        if self.yaml:
            return _yaml_literal(self.yaml, "cluster_from_yaml")
        return Cluster.__repr__(self)           # a copy that lost its source

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))

    def save(self, path) -> str:
        """Write the cluster's YAML manifests to `path`; returns the path."""
        if self.yaml is None:
            raise ValueError(f"{self!r} keeps no YAML text (loaded from a directory): "
                             f"replay it from {self.path!r}")
        return save_cluster(self.yaml, path)


def cluster_from_yaml(text: str, file: str = "<string>") -> ManifestCluster:
    """The cluster described by YAML manifests (what `kubectl get -o yaml`
    prints, plus a kdp ClusterConfig), remembering the text."""
    if not isinstance(text, str):
        raise TypeError(f"cluster_from_yaml: expected YAML text, got {type(text).__name__}")
    return ManifestCluster.adopt(load_cluster_text(text, file=file), yaml=str(text))


def cluster_from_path(path) -> ManifestCluster:
    """The cluster described by a YAML file or a directory of them (or "demo"),
    remembering the path (a file's text too)."""
    if str(path) == DEMO:
        return ManifestCluster.adopt(demo_cluster(), yaml=demo_text(), path=DEMO)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"cluster_from_path: no such file or directory: {str(path)!r}")
    text = p.read_text(encoding="utf-8") if p.is_file() else None
    return ManifestCluster.adopt(load_cluster(str(p)), yaml=text, path=str(p))


def save_cluster(cluster, path) -> str:
    """Write a cluster's YAML manifests (a ManifestCluster, ClusterText or str)
    to `path`, creating its directory; returns the path as a str."""
    text = cluster.yaml if isinstance(cluster, ManifestCluster) else cluster
    if not isinstance(text, str) or not text:
        raise ValueError(f"save_cluster: {type(cluster).__name__} has no YAML text to write")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return str(p)


# --- the kdp_emulator fixture's factory -------------------------------------------

_RULES: "weakref.WeakKeyDictionary[Emulator, dict]" = weakref.WeakKeyDictionary()


def _as_cluster(cluster) -> Cluster:
    if isinstance(cluster, Cluster):
        return cluster
    if isinstance(cluster, os.PathLike):
        return cluster_from_path(cluster)
    if isinstance(cluster, str):
        if cluster == DEMO:
            return cluster_from_path(DEMO)
        if "\n" not in cluster:
            if os.path.exists(cluster):
                return cluster_from_path(cluster)
            raise ValueError(f"kdp_emulator({cluster!r}): no such file or directory, and not YAML "
                             f"manifests (pass \"demo\", a path, YAML text or a Cluster)")
        return cluster_from_yaml(cluster)
    raise TypeError(f"kdp_emulator: cluster must be \"demo\", a path, YAML text or a Cluster, "
                    f"not {type(cluster).__name__}")


def emulator(cluster="demo", seed: int = 0, **kw) -> Emulator:
    """A new Emulator of `cluster` ("demo", a path to a manifest file or
    directory, YAML text, or a Cluster), with `seed` and Emulator's keywords
    (rules={NODE or "*": iptables-save file}, capture, trace). What the
    kdp_emulator fixture returns; the emulator remembers its rules for
    replay_command."""
    emu = Emulator(_as_cluster(cluster), seed=seed, **kw)
    if kw.get("rules"):
        _RULES[emu] = dict(kw["rules"])
    return emu


# --- `kdp trace` -------------------------------------------------------------------

def replay_dir() -> Path:
    return Path(os.environ.get(REPLAY_DIR_ENV) or Path(tempfile.gettempdir()) / "kdp-replay")


def _source_files(cluster: Cluster) -> list[str]:
    objs = [cluster.config] + list(cluster.nodes) + list(cluster.pods) + list(cluster.services)
    return sorted({o.source.file for o in objs if getattr(o, "source", None) is not None})


def cluster_argument(cluster: Cluster, write: bool = True) -> str:
    """What to pass as `kdp trace CLUSTER` for this cluster: "demo", the file
    or directory it was loaded from, or a file holding its YAML under
    $KDP_REPLAY_DIR (default: TMPDIR/kdp-replay/; written when write=True).
    "CLUSTER.yaml" when none is known (a Cluster built by hand)."""
    if isinstance(cluster, ManifestCluster):
        if cluster.path is not None:
            return cluster.path
        if cluster.yaml:
            digest = hashlib.sha256(cluster.yaml.encode()).hexdigest()[:12]
            path = replay_dir() / f"cluster-{digest}.yaml"
            if write and not path.exists():
                save_cluster(cluster.yaml, path)
            return str(path)
    files = _source_files(cluster)
    real = [f for f in files if f not in _TEXT_SOURCES and os.path.isfile(f)]
    if files == ["demo.yaml"] and not os.path.exists("demo.yaml"):
        return DEMO
    if real and len(real) == len(files):
        if len(real) == 1:
            return real[0]
        dirs = {os.path.dirname(f) or "." for f in real}
        if len(dirs) == 1:
            return dirs.pop()
    return "CLUSTER.yaml"


def replay_command(emu: Emulator, flow, write: bool = True) -> str:
    """The one-line `kdp trace` command that traces `flow` (a Flow: src, dst,
    proto, sport, dport) alone on a fresh emulator of emu's cluster, seed and
    rules. A flow traced after others may have met their conntrack entries;
    the command replays it by itself."""
    src, dst, proto, sport, dport = flow
    parts = ["kdp", "trace", cluster_argument(emu.cluster, write=write), "--from", src, "--to", dst,
             "--proto", proto]
    if sport is not None:
        parts += ["--sport", str(sport)]
    if dport is not None and proto != "icmp":
        parts += ["--dport", str(dport)]
    parts += ["--seed", str(emu.seed)]
    rules = dict(_RULES.get(emu, {}))
    for node, path in sorted(rules.items()):
        parts += ["--rules", f"{node}={os.path.abspath(path)}" if node != "*" else os.path.abspath(path)]
    return " ".join(shlex.quote(str(p)) for p in parts)
