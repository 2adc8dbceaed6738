# Property tests of the Kubernetes network model with kdp's public testing kit
# (kdp.testing: strategies, invariants, the pytest plugin). The plugin's
# fixtures and Hypothesis profiles are taken here explicitly, because
# `pytest_plugins` is only honoured in a top-level conftest; HYPOTHESIS_PROFILE
# picks the profile (ci by default: 25 derandomized examples; thorough: 500).
from kdp.testing.plugin import kdp_demo, kdp_emulator, load_profile  # noqa: F401

PROFILE = load_profile()
