# The shop cluster as these tests see it: the manifests in cluster/ (`kubectl get -o yaml`
# output plus kdp's ClusterConfig). To see the tests catch real breakage, pick a deliberate
# break with the environment variable KDP_BREAK:
#   KDP_BREAK=missing-dnat     node vmss000001 runs breaks/vmss000001-missing-dnat.rules, its
#                              iptables-save with one backend endpoint's DNAT rule missing
#   KDP_BREAK=orphan-service   breaks/orphan-service.yaml is applied too: a Service whose
#                              selector matches no pod
import os
from pathlib import Path

from kdp.testing import cluster_from_path, cluster_from_yaml

HERE = Path(__file__).resolve().parent.parent
BREAKS = ("missing-dnat", "orphan-service")
BREAK = os.environ.get("KDP_BREAK", "")
if BREAK not in ("",) + BREAKS:
    raise ValueError(f"KDP_BREAK={BREAK!r}: expected one of {', '.join(BREAKS)} (or unset)")

if BREAK == "orphan-service":
    manifests = sorted((HERE / "cluster").glob("*.yaml")) + [HERE / "breaks" / "orphan-service.yaml"]
    CLUSTER = cluster_from_yaml("\n---\n".join(p.read_text() for p in manifests))
else:
    CLUSTER = cluster_from_path(HERE / "cluster")

# node name -> iptables-save file loaded instead of the rules kdp generates (kdp_emulator(rules=...))
RULES = {}
if BREAK == "missing-dnat":
    RULES["aks-nodepool1-12345678-vmss000001"] = str(HERE / "breaks" / "vmss000001-missing-dnat.rules")
