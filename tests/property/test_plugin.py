# kdp's pytest plugin in someone else's project: installing kdp must not change
# Hypothesis tests that do not use it. A throwaway project (its own pytest.ini,
# so none of kdp's options apply) with an unrelated Hypothesis test, a `ci`
# profile of its own and a few kdp tests runs in a subprocess with the plugin
# (kdp's installed pytest11 entry point); each test counts its examples into a
# file. kdp tests get kdp-ci (25 derandomized
# examples) or kdp-thorough on request; a failing kdp property skips
# Hypothesis's explain phase and prints its generated cluster as YAML.
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from hypothesis import Phase, settings

PLUGIN = "kdp.testing.plugin"

CONFTEST = """
import os
from hypothesis import settings

settings.register_profile("ci", max_examples=50)        # the project's own `ci` profile
if "HYPOTHESIS_PROFILE" in os.environ:                   # the usual way to pick one
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


def record(name):
    with open(os.environ["COUNTS"], "a") as f:
        f.write(name + "\\n")
"""

UNRELATED = """
from hypothesis import given, strategies as st
from conftest import record


@given(st.integers())
def test_unrelated(x):
    record("unrelated")
"""

KDP_TESTS = """
import pytest
from hypothesis import given, settings, strategies as st
from conftest import record


@given(st.integers())
def test_uses_a_kdp_fixture(kdp_emulator, x):
    record("fixture")


@pytest.mark.kdp
@given(st.integers())
def test_marked(x):
    record("marked")


@settings(max_examples=7)
@given(st.integers())
def test_with_its_own_settings(kdp_emulator, x):
    record("own")


@pytest.mark.parametrize("p", [1, 2])
@given(st.integers())
def test_parametrized(kdp_emulator, p, x):
    record(f"param{p}")
"""

FAILING = """
import pytest
from hypothesis import given, strategies as st


@pytest.mark.kdp
@given(n=st.integers(0, 1000), m=st.integers(0, 10))
def test_fails(n, m):
    assert n < 500
"""

FAILING_CLUSTER = """
import pytest
from hypothesis import given
from kdp.testing import clusters


@pytest.mark.kdp
@given(cluster=clusters(max_nodes=2, max_pods=2, max_services=1))
def test_fails_on_a_cluster(cluster):
    assert not cluster.nodes
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("user-project")
    for name, text in {"pytest.ini": "[pytest]\n", "conftest.py": CONFTEST, "test_unrelated.py": UNRELATED,
                       "test_kdp.py": KDP_TESTS, "test_failing.py": FAILING,
                       "test_failing_cluster.py": FAILING_CLUSTER}.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def run(project, *args, env=None, plugin=True, files=("test_unrelated.py", "test_kdp.py")):
    counts = project / "counts.txt"
    counts.write_text("")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("HYPOTHESIS_PROFILE", "CI", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    clean.update(env or {}, COUNTS=str(counts))
    off = [] if plugin else ["-p", f"no:{PLUGIN}"]
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *off, *args, *files]
    out = subprocess.run(cmd, cwd=project, env=clean, capture_output=True, text=True, timeout=300)
    return out, Counter(counts.read_text().split())


@pytest.mark.parametrize("env, unrelated", [({"HYPOTHESIS_PROFILE": "ci"}, 50), ({"CI": "1"}, 50)],
                         ids=["own-ci-profile", "CI=1"])
def test_unrelated_hypothesis_tests_keep_their_settings(project, env, unrelated):
    # CI=1: Hypothesis loads its `ci` profile, which this project redefined (50 examples), as
    # HYPOTHESIS_PROFILE=ci does through its conftest; kdp tests still get kdp-ci
    out, counts = run(project, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert counts["unrelated"] == unrelated                                 # what the project chose
    assert counts["fixture"] == counts["marked"] == 25 and counts["own"] == 7


def test_only_kdp_tests_run_under_kdp_ci_and_failures_skip_the_explain_phase(project):
    # Hypothesis's own default runs the explain phase after shrinking; kdp's profiles do not
    # (over an emulator it made failing runs ~10x longer)
    control, _ = run(project, "--hypothesis-show-statistics", plugin=False, files=("test_failing.py",))
    assert control.returncode == 1 and "during explain phase" in control.stdout, control.stdout
    out, counts = run(project, "--hypothesis-show-statistics",
                      files=("test_unrelated.py", "test_kdp.py", "test_failing.py", "test_failing_cluster.py"))
    assert out.returncode == 1 and "2 failed" in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("during shrink phase") == 2 and "explain phase" not in out.stdout
    assert counts["unrelated"] == 100                                       # Hypothesis's default
    assert counts["fixture"] == counts["marked"] == counts["param1"] == counts["param2"] == 25   # kdp-ci
    assert counts["own"] == 7                                               # its own @settings kept
    assert "kdp: Hypothesis profile 'kdp-ci' (default) for kdp tests" in out.stdout
    for name in ("kdp-ci", "kdp-thorough"):
        phases = settings.get_profile(name).phases
        assert Phase.explain not in phases and Phase.shrink in phases
    shown = 'cluster=cluster_from_yaml("""\nE       apiVersion: kdp.dev/v1alpha1\nE       kind: ClusterConfig\n'
    assert shown in out.stdout                                              # readable YAML, not one line
    assert "@reproduce_failure(" in out.stdout                              # print_blob


def test_kdp_thorough_on_request(project, monkeypatch):
    from kdp.testing.plugin import choose_profile
    out, counts = run(project, "--kdp-profile=kdp-thorough", "-k", "unrelated or fixture or own")
    assert out.returncode == 0, out.stdout + out.stderr
    assert counts["fixture"] == 500 and counts["own"] == 7 and counts["unrelated"] == 100
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "kdp-thorough")               # the other way to ask
    assert choose_profile() == ("kdp-thorough", "$HYPOTHESIS_PROFILE")
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "ci")                         # not a kdp profile: ignored
    assert choose_profile()[0] == "kdp-ci"


def test_an_unknown_profile_is_a_clear_usage_error(project):
    out, _ = run(project, "--kdp-profile=kdp-fast")
    assert out.returncode == 4, out.stdout + out.stderr
    assert "--kdp-profile names Hypothesis profile 'kdp-fast', which is not registered" in out.stderr
    assert "kdp-ci and kdp-thorough" in out.stderr
