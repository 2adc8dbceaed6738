# kdp against the kernel on random clusters: Hypothesis draws a small cluster
# (kdp.testing.strategies: 1-2 nodes, kubenet or azure, 1-4 pods, maybe one
# ClusterIP service) and a few flows (pod -> pod, node -> pod, pod -> service,
# pod -> outside), each flow's first frame (what kdp's own stack sends) is
# injected on both sides (kdp.oracle), and every frame on every device must
# agree field by field, kernel-random values mapped and kernel random choices
# forced. The only differences tolerated are the known kdp gaps of
# test_services_oracle.KNOWN_GAPS, recognised precisely.
# Bounded: HYPOTHESIS_PROFILE=ci (default) runs ORACLE_EXAMPLES["ci"] clusters,
# `thorough` more (each example builds a real twin, ~1.5 s, plus ~0.4 s a flow).
import itertools
import os

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from kdp.errors import KdpError
from kdp.k8s import load_cluster_text
from kdp.oracle import netns as N
from kdp.oracle.runner import Oracle
from kdp.oracle.scenarios import Scenario, first_frame
from kdp.testing import strategies as S

from .conftest import needs_kernel
from .test_services_oracle import KNOWN_GAPS, classify

pytestmark = [pytest.mark.root, pytest.mark.oracle, needs_kernel]

ORACLE_EXAMPLES = {"ci": 5, "thorough": 60}
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")


def _profile(name: str) -> settings:
    """The named profile; `ci` and `thorough` are registered here only when
    nobody (kdp.testing.plugin, a conftest) registered them already."""
    defaults = {"ci": settings(deadline=None, derandomize=True, database=None, print_blob=True),
                "thorough": settings(deadline=None, print_blob=True)}
    try:
        return settings.get_profile(name)
    except InvalidArgument:
        if name not in defaults:
            raise
        settings.register_profile(name, defaults[name])
        return settings.get_profile(name)


ORACLE_SETTINGS = settings(
    _profile(PROFILE if PROFILE in ORACLE_EXAMPLES else "ci"),
    max_examples=ORACLE_EXAMPLES.get(PROFILE, ORACLE_EXAMPLES["ci"]),
    deadline=None,
    # shrinking would rebuild the twin for every candidate: ci reports the example as drawn
    phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if PROFILE == "thorough" else []),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])

_seq = itertools.count()

cluster_texts = S.cluster_texts(max_nodes=2, max_pods=4, service_types=("ClusterIP",), max_services=1,
                                external_ips=False)


def oracle_flows(cluster):
    """pod -> pod / service / outside, node -> pod."""
    parts = [S.flows(cluster, sources=("pod",), targets=("pod", "service", "ext"))]
    if S.pod_endpoints(cluster):
        parts.append(S.flows(cluster, sources=("node",), targets=("pod",)))
    return st.one_of(parts)


def scenario_of(cluster, i: int, flow) -> Scenario | None:
    kw = {"proto": flow.proto, "sport": flow.sport}
    if flow.proto != "icmp":
        kw["dport"] = flow.dport
    try:
        step = first_frame(cluster, 0, flow.src, flow.dst, **kw)
    except (LookupError, KdpError):
        return None                  # kdp's stack sends nothing on a device (e.g. to itself via lo)
    return Scenario(f"flow-{i}", f"{flow.proto} {flow.src} -> {flow.dst}:{flow.dport} (sport {flow.sport})",
                    [step], needs_rules=flow.dst.startswith("svc/"))


@ORACLE_SETTINGS
@given(text=cluster_texts, data=st.data())
def test_random_clusters_and_flows_agree_with_the_kernel(text, data):
    cluster = load_cluster_text(text, file="hypothesis.yaml")
    note(text)
    drawn = data.draw(st.lists(oracle_flows(cluster), min_size=1, max_size=3), label="flows")
    scenarios = [sc for sc in (scenario_of(cluster, i, f) for i, f in enumerate(drawn)) if sc is not None]
    if not scenarios:
        return
    from kdp.emulator import Emulator
    emu = Emulator(cluster)
    problems, gaps = [], {}
    with Oracle(cluster, seed=0, prefix=f"{N.default_prefix()}q{next(_seq)}-") as o:
        for sc in scenarios:
            if sc.needs_rules and not o.rules:
                continue
            r = o.run(sc)
            if r.kernel_frames == 0:
                problems.append(f"{sc.description}: the kernel saw nothing")
            g, other = classify(emu, r)
            problems += [f"{sc.description}: {x}" for x in other]
            if g:
                gaps[sc.description] = dict(g)
    for desc, g in gaps.items():
        note(f"known gap(s) in {desc}: {g} ({'; '.join(KNOWN_GAPS[k][:60] + '...' for k in g)})")
    assert not problems, "\n".join(problems)
