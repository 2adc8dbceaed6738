# oracle: the kernel as judge. Builds the cluster kdp emulates in real Linux
# network namespaces (build), injects the same frames on both sides (inject,
# scenarios), captures every device (capture), runs the apps behind kdp's
# sockets (listeners), compares per device and per field with kernel-random
# values mapped (compare) and reports (report, cli). Needs root; everything
# it creates is named `kdpo<pid>-...` and removed on exit (netns).
from .netns import NetnsError, available, cleanup_stale
from .runner import Oracle, ScenarioResult, run_oracle
from .scenarios import Scenario, Step, catalogue

__all__ = ["Oracle", "ScenarioResult", "run_oracle", "Scenario", "Step", "catalogue", "available",
           "cleanup_stale", "NetnsError"]
