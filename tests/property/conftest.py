# Property tests of the Kubernetes network model with kdp's public testing kit
# (kdp.testing: strategies, invariants, the pytest plugin). The plugin comes
# from kdp's installed pytest11 entry point; every test collected here is a
# kdp test (marked `kdp`), so Hypothesis runs it under the plugin's profile:
# kdp-ci by default (25 derandomized examples), kdp-thorough (500) with
# --kdp-profile=kdp-thorough or HYPOTHESIS_PROFILE=kdp-thorough.
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_configure(config):
    if not config.pluginmanager.has_plugin("kdp.testing.plugin"):
        raise pytest.UsageError("tests/property needs kdp's pytest plugin: install kdp "
                                "(pip install -e '.[test]') so its pytest11 entry point loads it")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kdp)
