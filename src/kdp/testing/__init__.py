# testing: kdp's kit for property tests of the Kubernetes network model with
# Hypothesis, and its public names: strategies (kdp.testing.strategies),
# invariants (kdp.testing.invariants), clusters that print as YAML and replay
# with `kdp trace` (kdp.testing.replay) and the pytest plugin with its
# fixtures and Hypothesis profiles (kdp.testing.plugin, loaded by pytest
# itself). Needs hypothesis (pip install 'kdp[test]'). Names load on
# first use, so the plugin (which pytest loads in every run once kdp is
# installed) imports neither hypothesis nor the emulator until a test asks.
import importlib

_WHERE: dict[str, str] = {}            # public name -> the module that defines it
_WHERE.update(dict.fromkeys((
    "Flow", "PROTOCOLS", "SERVICE_KINDS", "SERVICE_TYPES", "ServiceFlow", "ServiceTarget",
    "TRAFFIC_POLICIES", "cluster_networks", "cluster_specs", "cluster_texts", "clusters",
    "every_flow", "ext_addresses", "flow_service", "flows", "frames", "node_endpoints",
    "pcap_streams", "pod_endpoints", "render_cluster", "service_flows", "service_port",
    "service_targets",
), "strategies"))
_WHERE.update(dict.fromkeys((
    "ClusterText", "ManifestCluster", "cluster_from_path", "cluster_from_yaml", "emulator",
    "replay_command", "save_cluster",
), "replay"))

__all__ = [
    # strategies and helpers
    "Flow", "ServiceFlow", "ServiceTarget", "SERVICE_TYPES", "SERVICE_KINDS", "PROTOCOLS",
    "TRAFFIC_POLICIES", "clusters", "cluster_texts", "cluster_specs", "render_cluster", "flows",
    "service_flows", "flow_service", "every_flow", "frames", "pcap_streams", "ext_addresses",
    "pod_endpoints", "node_endpoints", "service_targets", "service_port", "cluster_networks",
    # clusters, emulators, replay
    "ManifestCluster", "ClusterText", "cluster_from_yaml", "cluster_from_path", "save_cluster",
    "emulator", "replay_command",
]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'kdp.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
