# The nftables families other than ip/inet against the kernel (issue 15): a two-node
# nftables-mode cluster whose node n1 also has a `bridge` table (counters at prerouting,
# forward, output and input of cbr0, a drop at prerouting), a `netdev` table (an ingress
# drop on eth0) and an `arp` table (input and output counters), loaded into its real twin
# with `nft -f` in throwaway namespaces (kdp.oracle; always deleted). One scenario sends
# a frame of each kind; kdp and the kernel must put the same frames on every device
# (so drop and deliver the same) and their counters must print the same.
import re
import shutil

import pytest

from kdp.emulator import Emulator
from kdp.k8s import load_cluster_text
from kdp.k8s.kubeproxy_nft import node_ruleset
from kdp.oracle import netns as N
from kdp.oracle.report import report_dict
from kdp.oracle.runner import Oracle
from kdp.oracle.scenarios import Scenario, first_frame
from kdp import wire

from .conftest import needs_kernel, oracle_unavailable

pytestmark = [pytest.mark.root, pytest.mark.oracle, needs_kernel]

CLUSTER = """
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: families}
spec:
  networkPlugin: kubenet
  podCIDR: 10.244.0.0/16
  serviceCIDR: 10.96.0.0/16
  dnsServiceIP: 10.96.0.10
  vnetSubnet: 10.240.0.0/16
  nodes: [{name: n1}, {name: n2}]
  kubeProxy: {mode: nftables}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 9090, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default}
spec: {nodeName: n1, containers: [{name: web, ports: [{containerPort: 8080, protocol: UDP},
                                                     {containerPort: 7777, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default}
spec: {nodeName: n2, containers: [{name: web, ports: [{containerPort: 8080, protocol: UDP}]}]}
"""

EXTRA = """table bridge kdpbr {
	chain bpre {
		type filter hook prerouting priority filter; policy accept;
		ether type ip counter packets 0 bytes 0
		udp dport 7777 counter packets 0 bytes 0 drop
	}

	chain bfwd {
		type filter hook forward priority filter; policy accept;
		ether type arp counter packets 0 bytes 0
		ip protocol udp counter packets 0 bytes 0
	}

	chain bout {
		type filter hook output priority out; policy accept;
		udp dport 9090 counter packets 0 bytes 0
	}

	chain binp {
		type filter hook input priority filter; policy accept;
		ip protocol udp counter packets 0 bytes 0
	}
}
table netdev kdpnd {
	chain ing {
		type filter hook ingress device "eth0" priority filter; policy accept;
		udp dport 6666 counter packets 0 bytes 0 drop
	}
}
table arp kdparp {
	chain ain {
		type filter hook input priority filter; policy accept;
		arp operation request counter packets 0 bytes 0
	}

	chain aout {
		type filter hook output priority filter; policy accept;
		counter packets 0 bytes 0
	}
}
"""
TABLES = ("bridge kdpbr", "netdev kdpnd", "arp kdparp")
COUNTER = re.compile(r"counter packets (\d+) bytes (\d+)")


def _tables(listing: str) -> str:
    """The three extra tables of an `nft list ruleset` text."""
    blocks = re.findall(r"^table .*?^}\n", listing, re.S | re.M)
    return "".join(b for b in blocks if b.split(" {")[0][len("table "):] in TABLES)


def _minus(after: str, before: str) -> str:
    """after's counters less before's, rule by rule (the kernel's counted since before)."""
    was = iter(COUNTER.findall(before))

    def sub(m):
        p, b = next(was)
        return f"counter packets {int(m.group(1)) - int(p)} bytes {int(m.group(2)) - int(b)}"
    return COUNTER.sub(sub, after)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    if oracle_unavailable():
        pytest.skip(oracle_unavailable())
    if shutil.which("nft") is None:
        pytest.skip("nft (package nftables) is not installed")
    cluster = load_cluster_text(CLUSTER)
    rules = tmp_path_factory.mktemp("families") / "n1.nft"
    rules.write_text(node_ruleset(cluster, "n1") + EXTRA)
    cluster.node("n1").rules_file = str(rules)

    def udp(src, dst, dport):
        return first_frame(cluster, 0, src, dst, proto="udp", dport=dport)
    steps = [udp("pod/default/client", "pod/default/web-1", 8080),    # bridged, delivered
             udp("pod/default/client", "pod/default/web-1", 7777),    # bridge prerouting drop
             udp("pod/default/web-2", "pod/default/client", 6666),    # netdev ingress drop
             udp("pod/default/web-2", "pod/default/client", 9090)]    # routed out cbr0: bridge output
    sc = Scenario("nft-families", "bridge, netdev and arp tables on n1", steps)
    N.cleanup_stale()
    with Oracle(cluster, seed=0, prefix=f"{N.default_prefix()}f-") as o:
        me = o.real.netns["node/n1"]
        before = N.netns_exec(me, ["nft", "list", "ruleset"]).stdout
        result = o.run(sc)
        after = N.netns_exec(me, ["nft", "list", "ruleset"]).stdout
    # kdp: the same steps in one emulator, as the oracle's kdp side sends them
    emu = Emulator(cluster, seed=0)
    outcomes = []
    for i, st in enumerate(steps):
        dev = emu.namespace(st.ns).devices[st.dev]
        outcomes.append(emu.datapath.inject(dev, wire.parse(st.frame), i * 0.001))
    ours = emu.topology.node_ns["n1"].netfilter.nft.listing(emu.datapath.now).render()
    return {"result": result, "kernel": _minus(_tables(after), _tables(before)),
            "kdp": _tables(ours), "outcomes": outcomes}


def test_kdp_and_the_kernel_drop_and_deliver_the_same_frames(families):
    sc = report_dict([families["result"]])["scenarios"][0]
    assert sc["frames"]["kernel"] > 0
    problems = [f"{d['device']} {d['kdp_summary']}: {d['fields']}" for d in sc["disagreements"]]
    problems += [f"{u['device']} {u['direction']} {u['kind']}: {u['summary']}" for u in sc["unpaired"]]
    problems += [f"{o['device']}: {o['problem']}" for o in sc["order"]]
    assert not problems, "\n".join(problems)
    got = [(o.disposition, o.reason) for o in families["outcomes"]]
    assert got == [("delivered", None), ("dropped", "rule:bridge kdpbr/bpre#2"),
                   ("dropped", "rule:netdev kdpnd/ing#1"), ("delivered", None)]


def test_kdp_prints_the_kernels_counters(families):
    assert families["kernel"] == families["kdp"]
    counts = [int(p) for p, _b in COUNTER.findall(families["kdp"])]
    assert all(counts), families["kdp"]          # every counter moved: each hook was crossed
