# testing.plugin: the pytest plugin for property tests with kdp. Registers
# the Hypothesis profiles `ci` (small, derandomized: the same examples on every
# run) and `thorough` (500 examples), loads the one HYPOTHESIS_PROFILE names
# (default `ci`) unless the test suite already loaded its own, and provides
# fixtures that build emulators. Active when kdp is installed (entry point
# pytest11 "kdp.testing.plugin") or with `pytest_plugins = ["kdp.testing.plugin"]`
# in a top-level conftest.py. Owns no invariants or strategies.
from __future__ import annotations

import os

import pytest

try:                                    # kdp installed without its [test] extra: fixtures only
    from hypothesis import HealthCheck, settings
except ImportError:                     # pragma: no cover
    settings = None

DEFAULT_PROFILE = "ci"
ENV = "HYPOTHESIS_PROFILE"


def _profiles() -> dict:
    slow = [HealthCheck.too_slow]
    return {
        # CI: small and the same examples on every run (derandomized, no database)
        "ci": settings(max_examples=25, deadline=None, derandomize=True, database=None,
                       print_blob=True, suppress_health_check=slow),
        # before a release, or hunting: many random examples, failures kept in .hypothesis/
        "thorough": settings(max_examples=500, deadline=None, print_blob=True,
                             suppress_health_check=slow),
    }


def register_profiles() -> None:
    """Register kdp's profiles, each also as kdp-NAME (which nobody else overwrites)."""
    if settings is None:
        return
    for name, prof in _profiles().items():
        settings.register_profile(name, prof)
        settings.register_profile(f"kdp-{name}", prof)


def load_profile(name: str | None = None) -> str | None:
    """Load `name`, else $HYPOTHESIS_PROFILE, else `ci`; return the profile loaded.
    Without an explicit name, a profile the test suite already loaded is kept."""
    if settings is None:
        return None
    register_profiles()
    current = getattr(settings, "_current_profile", "default")
    if name is None:
        name = os.environ.get(ENV)
        if name is None:
            if current not in (None, "default"):
                return current
            name = DEFAULT_PROFILE
    settings.load_profile(name)
    return name


register_profiles()


def pytest_configure(config) -> None:
    if getattr(config.option, "hypothesis_profile", None):
        return                                  # --hypothesis-profile wins (hypothesis loads it)
    config._kdp_profile = load_profile()


def pytest_report_header(config) -> str:
    name = getattr(config, "_kdp_profile", None) or getattr(settings, "_current_profile", None)
    return f"kdp: hypothesis profile {name!r} (set {ENV}=ci|thorough)"


# --- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def kdp_emulator():
    """A factory: kdp_emulator(cluster="demo", seed=0, **Emulator kwargs) -> a new
    Emulator. `cluster` is a resolved Cluster, YAML text or "demo". Session
    scoped and stateless, so @given tests may use it (every call builds a fresh
    emulator)."""
    from ..emulator import Emulator
    from ..k8s import load_cluster_text

    def make(cluster="demo", seed: int = 0, **kw) -> Emulator:
        if isinstance(cluster, str):
            if cluster == "demo":
                return Emulator.demo(seed=seed, **kw)
            cluster = load_cluster_text(cluster)
        return Emulator(cluster, seed=seed, **kw)
    return make


@pytest.fixture
def kdp_demo(kdp_emulator):
    """A fresh emulator of the built-in demo cluster (three kubenet nodes, nginx,
    service-a, CoreDNS), seed 0. Function scoped: not for @given tests (their
    examples would share its conntrack, ARP and captures); use kdp_emulator."""
    return kdp_emulator("demo")
