# cli_common: what every `kdp` subcommand shares, whichever module defines it
# (cli, cli_resolve, cli_http, oracle.cli): the CLUSTER argument loaded into a
# Cluster or an Emulator, --rules arguments, the checks of the files and
# directories a command writes (made before any work, so a bad path costs
# nothing), and running a parsed command with every error kdp raises on purpose
# (and any OSError on a named path) turned into `kdp: error: ...`, exit status 2.
from __future__ import annotations

import errno
import os
import sys

from .errors import ClusterInputError, KdpError, UsageError


PROXY_MODE_HELP = ("kube-proxy's mode on every node, overriding the ClusterConfig's "
                   "kubeProxy.mode: iptables or nftables")


def add_proxy_mode(parser) -> None:
    """--proxy-mode on a command that builds a cluster."""
    parser.add_argument("--proxy-mode", choices=["iptables", "nftables"], default=None,
                        help=PROXY_MODE_HELP)


def load_emulator(spec: str, seed: int = 0, capture: bool = True, rules: list[str] | None = None,
                  trace: bool = True, proxy_mode: str | None = None):
    """An Emulator of the cluster a CLUSTER argument names (see load_cluster)."""
    from .emulator import Emulator
    return Emulator(load_cluster(spec, proxy_mode), seed=seed, capture=capture,
                    rules=rules_arg(rules or []), trace=trace)


def rules_arg(items: list[str]) -> dict[str, str]:
    """--rules FILE (every node) or --rules NODE=FILE, repeatable."""
    out = {}
    for item in items:
        node, sep, path = item.partition("=")
        if sep and not os.path.exists(item):
            out[node] = input_file(path, f"--rules {node}=FILE")
        else:
            out["*"] = input_file(item, "--rules")
    return out


def load_cluster(spec: str, proxy_mode: str | None = None):
    """The cluster a CLUSTER argument names: 'demo', a YAML file or a directory
    (with kube-proxy's mode replaced by --proxy-mode's, if given)."""
    from .k8s import demo_cluster, load_cluster
    if spec == "demo":
        cluster = demo_cluster()
    elif not os.path.exists(spec):
        raise UsageError(f"{spec}: no such file or directory (give a YAML file, a directory, or 'demo')")
    else:
        cluster = load_cluster(spec)
    if proxy_mode is not None:
        cluster.config.kube_proxy.mode = proxy_mode
    return cluster


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def output_dir(path: str | None, option: str) -> str | None:
    """The directory an option (--out, --keep-pcaps) writes into, created now
    (with its parents) so that a path that cannot be a directory is reported
    before any work: `PATH: reason` as a UsageError."""
    if not path:
        return path
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{path}: {option} needs a directory, and this is an existing file")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{path}: {option}: cannot create the directory: {_reason(e)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: {option}: the directory is not writable")
    return path


def output_file(path: str | None, option: str) -> str | None:
    """A file an option (--svg) writes: its directory must exist and be
    writable, and the path must not be a directory. Checked before any work."""
    if not path:
        return path
    parent = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise UsageError(f"{path}: {option} needs a file name, and this is a directory")
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise UsageError(f"{path}: {option}: cannot write the file: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{path}: {option}: cannot write the file: permission denied")
    return path


def input_file(path: str, option: str) -> str:
    """A file an option reads (--pcap, --rules): it must exist and be a readable file."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: {option}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path}: {option} needs a file, and this is a directory")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: {option}: the file is not readable (permission denied)")
    return path


def run_command(args) -> int:
    """Run a parsed command (args.func); kdp's own errors are printed, status 2.
    An OSError that names a path (a file kdp could not read or write after all
    the checks) is reported the same way: `kdp: error: PATH: reason`."""
    try:
        return args.func(args)
    except ClusterInputError as e:
        for prob in e.problems:
            print(str(prob), file=sys.stderr)
        for w in e.warnings:
            print(f"warning: {w}", file=sys.stderr)
        return 2
    except KdpError as e:
        print(f"kdp: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:
        if e.filename is None and e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{e.filename}: " if e.filename is not None else ""
        print(f"kdp: error: {where}{_reason(e)}", file=sys.stderr)
        return 2
