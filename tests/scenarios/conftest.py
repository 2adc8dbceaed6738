# Small clusters built straight from the model (no YAML), for scenario tests.
#
#            underlay 10.240.0.0/16 ---- edge 10.240.0.1 ---- ext (off-cluster)
#              |                         |
#   n0 10.240.0.4 cbr0 10.244.0.1    n1 10.240.0.5 cbr0 10.244.1.1
#     |-- a 10.244.0.2 (80/TCP)        |-- c 10.244.1.2 (80/TCP, 9090/TCP sidecar)
#     |-- b 10.244.0.3 (80/TCP,53/UDP)
from ipaddress import IPv4Address as A, IPv4Network as N

import pytest

from kdp.emulator import Emulator
from kdp.k8s.model import Cluster, ClusterConfig, Container, ContainerPort, Node, Pod


def small_cluster(plugin: str = "kubenet", hairpin: str = "hairpin-veth") -> Cluster:
    cfg = ClusterConfig(name="t", network_plugin=plugin, hairpin_mode=hairpin)
    azure = plugin == "azure"
    nodes = [Node("n0", A("10.240.0.4"), None if azure else N("10.244.0.0/24")),
             Node("n1", A("10.240.0.5"), None if azure else N("10.244.1.0/24"))]
    ips = (["10.240.0.10", "10.240.0.11", "10.240.0.120"] if azure
           else ["10.244.0.2", "10.244.0.3", "10.244.1.2"])
    pods = [
        Pod("default", "a", "n0", A(ips[0]), containers=[Container("web", ports=[ContainerPort(80)])]),
        Pod("default", "b", "n0", A(ips[1]), containers=[
            Container("web", ports=[ContainerPort(80), ContainerPort(53, "UDP")])]),
        Pod("default", "c", "n1", A(ips[2]), containers=[
            Container("web", ports=[ContainerPort(80)]),
            Container("metrics", ports=[ContainerPort(9090)])]),
    ]
    return Cluster(cfg, nodes, pods, namespaces=["default", "kube-system"])


@pytest.fixture
def emu():
    return Emulator(small_cluster(), seed=1)


@pytest.fixture
def azure_emu():
    return Emulator(small_cluster("azure"), seed=1)


def devices_seen(outcome, leg_pkt_filter=None):
    """(namespace, device) pairs that saw an IP (non-ARP) frame, in order."""
    seen = []
    for dev, _direction, pkt in outcome.frames:
        if pkt.ip is None:
            continue
        key = (dev.namespace.name, dev.name)
        if key not in seen:
            seen.append(key)
    return seen
