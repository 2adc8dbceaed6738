# cli_common: what every `kdp` subcommand shares, whichever module defines it
# (cli, cli_resolve, cli_http, oracle.cli): the CLUSTER argument loaded into a
# Cluster or an Emulator, --rules arguments, and running a parsed command with
# every error kdp raises on purpose turned into a clear message and exit status 2.
from __future__ import annotations

import os
import sys

from .errors import ClusterInputError, KdpError, UsageError


def load_emulator(spec: str, seed: int = 0, capture: bool = True, rules: list[str] | None = None,
                  trace: bool = True):
    """An Emulator of the cluster a CLUSTER argument names (see load_cluster)."""
    from .emulator import Emulator
    return Emulator(load_cluster(spec), seed=seed, capture=capture, rules=rules_arg(rules or []),
                    trace=trace)


def rules_arg(items: list[str]) -> dict[str, str]:
    """--rules FILE (every node) or --rules NODE=FILE, repeatable."""
    out = {}
    for item in items:
        node, sep, path = item.partition("=")
        if sep and not os.path.exists(item):
            out[node] = path
        else:
            out["*"] = item
    return out


def load_cluster(spec: str):
    """The cluster a CLUSTER argument names: 'demo', a YAML file or a directory."""
    from .k8s import demo_cluster, load_cluster
    if spec == "demo":
        return demo_cluster()
    if not os.path.exists(spec):
        raise UsageError(f"{spec}: no such file or directory (give a YAML file, a directory, or 'demo')")
    return load_cluster(spec)


def run_command(args) -> int:
    """Run a parsed command (args.func); kdp's own errors are printed, status 2."""
    try:
        return args.func(args)
    except ClusterInputError as e:
        for prob in e.problems:
            print(str(prob), file=sys.stderr)
        return 2
    except KdpError as e:
        print(f"kdp: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
