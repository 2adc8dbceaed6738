# testing: kdp's kit for property tests of the Kubernetes network model with
# Hypothesis, and its public names: strategies (kdp.testing.strategies),
# invariants of one shape, invariant(emu, flow, outcome=None)
# (kdp.testing.invariants), kube-proxy's known exceptions as named predicates
# (kdp.testing.upstream), clusters that print as YAML and replay with
# `kdp trace` (kdp.testing.replay) and the pytest plugin with its fixtures and
# the kdp-ci / kdp-thorough Hypothesis profiles (kdp.testing.plugin, loaded by
# pytest itself). Needs hypothesis (pip install 'kdp[test]'). Names load on
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
    "INVARIANTS", "InvariantViolation", "Where", "acceptable_endpoints", "check_flow",
    "conntrack_symmetric_and_expiring", "delivered_to_ready_endpoint", "endpoint_reachable",
    "from_pods", "masquerade_where_kube_proxy_says", "no_frame_lost_or_duplicated",
    "node_to_pod_without_nat", "original_request", "pod_sees_own_address",
    "pod_to_pod_without_nat", "request_frames", "same_seed_same_output", "service_covered",
    "service_reply_from_service_address", "ttl_and_checksums_right",
), "invariants"))
_WHERE.update(dict.fromkeys((
    "KNOWN_EXCEPTIONS", "KnownException", "asymmetric_local_node_port", "hairpin_off",
    "known_exceptions", "translating_node",
), "upstream"))
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
    # invariants
    "InvariantViolation", "Where", "INVARIANTS", "check_flow", "pod_to_pod_without_nat",
    "node_to_pod_without_nat", "pod_sees_own_address", "service_reply_from_service_address",
    "delivered_to_ready_endpoint", "endpoint_reachable", "service_covered",
    "masquerade_where_kube_proxy_says", "conntrack_symmetric_and_expiring",
    "no_frame_lost_or_duplicated", "ttl_and_checksums_right", "same_seed_same_output",
    "acceptable_endpoints", "request_frames", "original_request", "from_pods",
    # known exceptions
    "KnownException", "KNOWN_EXCEPTIONS", "known_exceptions", "asymmetric_local_node_port",
    "hairpin_off", "translating_node",
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
