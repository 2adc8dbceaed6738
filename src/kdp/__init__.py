# kdp: a packet-level emulator of the Kubernetes data plane.
# The public entry points; everything else is reachable from them.
from .emulator import Emulator
from .errors import ClusterInputError, KdpError, UsageError

__version__ = "0.1.0"


def load_cluster(paths):
    """Load YAML files/directories into a resolved Cluster (raises ClusterInputError)."""
    from .k8s import load_cluster as _load
    return _load(paths)


def demo_cluster():
    from .k8s import demo_cluster as _demo
    return _demo()


__all__ = ["Emulator", "ClusterInputError", "KdpError", "UsageError", "load_cluster", "demo_cluster",
           "__version__"]
