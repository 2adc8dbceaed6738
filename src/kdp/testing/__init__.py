# testing: public helpers for property tests of the Kubernetes network model
# with kdp: Hypothesis strategies (kdp.testing.strategies), invariants an
# emulated cluster must keep (kdp.testing.invariants) and a pytest plugin with
# fixtures and Hypothesis profiles (kdp.testing.plugin). Needs hypothesis.
