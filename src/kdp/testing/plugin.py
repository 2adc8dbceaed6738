# testing.plugin: the pytest plugin of kdp's property-testing kit. Registers
# the Hypothesis profiles `kdp-ci` (bounded, derandomized) and `kdp-thorough`
# (many random examples) and applies one of them to kdp tests only: tests that
# use its fixtures (kdp_emulator, kdp_demo) or carry @pytest.mark.kdp, and that
# have no @settings of their own. Every other Hypothesis test keeps the
# settings its suite chose: the plugin never loads a profile for the session.
# Provides the fixtures, the `kdp` marker, the --kdp-profile option (ini:
# kdp_profile) and load_profile() for suites that ask for a kdp profile
# everywhere. Active when kdp is installed (entry point pytest11
# "kdp.testing.plugin") or with `pytest_plugins = ["kdp.testing.plugin"]` in a
# top-level conftest.py. Owns no invariants or strategies.
from __future__ import annotations

import os

import pytest

try:                                    # kdp installed without its [test] extra: fixtures only
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.errors import InvalidArgument
except ImportError:                     # pragma: no cover
    settings = None

CI, THOROUGH = "kdp-ci", "kdp-thorough"
DEFAULT_PROFILE = CI
ENV = "HYPOTHESIS_PROFILE"
OPTION, INI = "--kdp-profile", "kdp_profile"
MARKER = "kdp"
FIXTURES = ("kdp_emulator", "kdp_demo")
PREFIX = "kdp-"


def _profiles() -> dict:
    """kdp's profiles. Phases are chosen for an emulator, where one example
    costs milliseconds to seconds: no `explain` phase anywhere (after
    shrinking it re-runs the failing example once per part of its input, which
    made a failing run ~10x longer than finding and shrinking the failure), no
    `target` phase in kdp-ci (kdp's strategies call no target()). Shrinking
    stays: the minimal cluster is the useful output of a failure."""
    slow = [HealthCheck.too_slow]
    return {
        # every CI run: the same 25 examples each time (derandomized, no example database)
        CI: settings(max_examples=25, deadline=None, derandomize=True, database=None,
                     print_blob=True, suppress_health_check=slow,
                     phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)),
        # hunting, before a release: 500 random examples, failures kept in .hypothesis/
        THOROUGH: settings(max_examples=500, deadline=None, print_blob=True,
                           suppress_health_check=slow,
                           phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target,
                                   Phase.shrink)),
    }


def register_profiles() -> None:
    """Register kdp-ci and kdp-thorough (names nobody else uses; no other
    profile is touched)."""
    if settings is None:
        return
    for name, prof in _profiles().items():
        settings.register_profile(name, prof)


def _registered(name: str) -> bool:
    try:
        settings.get_profile(name)
    except InvalidArgument:
        return False
    return True


def _current_profile() -> str | None:
    try:
        return settings.get_current_profile_name()
    except (AttributeError, AssertionError):      # hypothesis without it, or nothing loaded
        return getattr(settings, "_current_profile", None)


def choose_profile(config=None) -> tuple[str, str]:
    """(profile for kdp tests, where that choice came from): --kdp-profile,
    else $HYPOTHESIS_PROFILE when it names a kdp- profile, else the ini
    option kdp_profile, else the session's profile when it is a kdp- one
    (--hypothesis-profile=kdp-thorough, load_profile()), else kdp-ci."""
    if config is not None:
        opt = config.getoption(OPTION, default=None)
        if opt:
            return opt, OPTION
    env = os.environ.get(ENV, "")
    if env.startswith(PREFIX):
        return env, f"${ENV}"
    if config is not None:
        ini = config.getini(INI)
        if ini:
            return ini, f"ini option {INI}"
    current = _current_profile() if settings is not None else None
    if current and current.startswith(PREFIX):
        return current, "the session's Hypothesis profile"
    return DEFAULT_PROFILE, "default"


def _check(name: str, source: str) -> None:
    if not _registered(name):
        raise pytest.UsageError(f"kdp: {source} names Hypothesis profile {name!r}, which is not "
                                f"registered: kdp's are {CI} and {THOROUGH} (or register your own "
                                f"with hypothesis.settings.register_profile in a conftest.py)")


def load_profile(name: str | None = None) -> str | None:
    """Load a Hypothesis profile for the whole session, so every test without
    its own @settings uses it (what a suite of only kdp tests may want; the
    plugin already applies kdp's profile to kdp tests). `name`: a registered
    profile; without it, the one the plugin would choose for kdp tests
    ($HYPOTHESIS_PROFILE when it names a kdp- profile, else kdp-ci). Returns
    the name loaded."""
    if settings is None:
        return None
    register_profiles()
    source = "load_profile()"
    if name is None:
        name, source = choose_profile()
    if not _registered(name):
        raise ValueError(f"load_profile: Hypothesis profile {name!r} ({source}) is not registered; "
                         f"kdp's are {CI} and {THOROUGH}")
    settings.load_profile(name)
    return name


register_profiles()


# --- pytest hooks ----------------------------------------------------------------

def pytest_addoption(parser) -> None:
    group = parser.getgroup("kdp", "kdp property tests")
    group.addoption(OPTION, metavar="PROFILE", default=None,
                    help=f"Hypothesis profile for kdp tests (those using kdp's fixtures or marked "
                         f"@pytest.mark.kdp): {CI} (default) or {THOROUGH}, or any registered "
                         f"profile. Other tests are not affected.")
    parser.addini(INI, default="", help=f"default for {OPTION}")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a kdp property test: Hypothesis runs it "
                                       f"under kdp's profile ({OPTION}, default {CI})")


def pytest_report_header(config) -> str | None:
    if settings is None:
        return None
    name, source = choose_profile(config)
    return (f"kdp: Hypothesis profile {name!r} ({source}) for kdp tests (using "
            f"{' or '.join(FIXTURES)}, or marked {MARKER}); other tests unchanged")


def is_kdp_test(item) -> bool:
    """Whether pytest item is a kdp test: marked kdp, or using a kdp fixture."""
    if item.get_closest_marker(MARKER) is not None:
        return True
    return any(f in getattr(item, "fixturenames", ()) for f in FIXTURES)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items) -> None:
    if settings is None:
        return
    chosen = None
    for item in items:
        fn = getattr(item, "obj", None)
        fn = getattr(fn, "__func__", fn)                # a test method: its function
        if not getattr(fn, "is_hypothesis_test", False) or not is_kdp_test(item):
            continue
        if getattr(fn, "_kdp_profile", None) is not None:
            continue                                    # applied already (parametrized test)
        if chosen is None:
            chosen, source = choose_profile(config)
            _check(chosen, source)
        try:
            settings(settings.get_profile(chosen))(fn)
        except InvalidArgument:                         # the test has its own @settings: kept
            fn._kdp_profile = "own @settings"
        else:
            fn._kdp_profile = chosen


# --- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def kdp_emulator():
    """A factory: kdp_emulator(cluster="demo", seed=0, **Emulator kwargs) -> a new
    Emulator. `cluster` is a Cluster, YAML text, a path to a manifest file or
    directory, or "demo". Session scoped and stateless, so @given tests may use
    it (every call builds a fresh emulator); tests that use it run under kdp's
    Hypothesis profile."""
    from .replay import emulator

    return emulator


@pytest.fixture
def kdp_demo(kdp_emulator):
    """A fresh emulator of the built-in demo cluster (three kubenet nodes, nginx,
    service-a, CoreDNS), seed 0. Function scoped: not for @given tests (their
    examples would share its conntrack, ARP and captures); use kdp_emulator."""
    return kdp_emulator("demo")
