# The kernel oracle on the node options of issue 13: kube-proxy's rules for
# nodePortAddresses (a NodePort on cbr0's address is not captured; on the node IP
# it is) and for conntrackTCPBeLiberal (no INVALID drop rule, the sysctl set in the
# real node: a stray SYN-ACK, INVALID to conntrack, is forwarded and answered).
import pytest

from kdp import wire
from kdp.oracle.report import report_dict
from kdp.oracle.runner import run_oracle
from kdp.oracle.scenarios import Scenario, first_frame

from ..scenarios.test_node_options import cluster
from .conftest import needs_kernel

pytestmark = [pytest.mark.root, pytest.mark.oracle, needs_kernel]


def _agree(c, scenarios):
    results, info = run_oracle(c, scenarios, seed=1)
    rep = report_dict(results, info)
    for sc in rep["scenarios"]:
        assert sc["agree"] and sc["frames"]["kernel"] == sc["frames"]["kdp"] > 2, sc
    return {r.scenario.name: r for r in results}


def test_nodeport_addresses_agree_with_the_kernel():
    c = cluster("nodePortAddresses: [10.240.0.0/16]")
    steps = {"np-on-cbr0": first_frame(c, 1, "pod/default/client", "10.244.0.1", proto="tcp", dport=30080),
             "np-on-node-ip": first_frame(c, 1, "pod/default/client", "10.240.0.5", proto="tcp",
                                          dport=30080)}
    _agree(c, [Scenario(name, f"TCP SYN to a NodePort ({name})", [st], needs_rules=True)
               for name, st in steps.items()])


def test_be_liberal_agrees_with_the_kernel():
    c = cluster("conntrackTCPBeLiberal: true")
    web2 = c.pod("default", "web-2")
    st = first_frame(c, 1, "pod/default/client", str(web2.ip), proto="tcp", sport=8080, dport=41000,
                     flags=wire.SYN | wire.ACK)
    liberal = {f"node/{n}": {"net.netfilter.nf_conntrack_tcp_be_liberal": 1} for n in ("n1", "n2")}
    results = _agree(c, [Scenario("stray-synack-liberal", "a SYN-ACK no connection knows, forwarded",
                                  [st], needs_rules=True, kernel_sysctls=liberal)])
    r = results["stray-synack-liberal"]
    got = [p.kernel.pkt for dr in r.devices for p in dr.pairs if p.kernel and p.kernel.pkt
           and p.kernel.pkt.ip and isinstance(p.kernel.pkt.l4, wire.TCP)]
    assert any(p.l4.flags & wire.RST for p in got)               # web-2's RST came back


def test_masquerade_without_random_fully_keeps_the_port_in_the_kernel_too():
    """iptablesRandomFully: false — plain MASQUERADE keeps a free source port: the
    kernel's conntrack shows the client's port in the reply tuple, as kdp does."""
    from ipaddress import IPv4Address as A

    from kdp.emulator import Emulator
    c = cluster("iptablesRandomFully: false")
    st = first_frame(c, 1, "ext/198.18.0.9", "10.240.0.4", proto="tcp", sport=5000, dport=30080)
    results = _agree(c, [Scenario("nodeport-plain-masquerade", "NodePort from outside, MASQUERADE "
                                  "without --random-fully", [st], needs_rules=True)])
    lines = results["nodeport-plain-masquerade"].kernel_conntrack["node/n1"]
    # whichever endpoint the kernel drew (web-1 on n1: SNAT to cbr0's address; else the node IP)
    assert any("src=198.18.0.9" in ln and "sport=8080 dport=5000 " in ln for ln in lines), lines
    out = Emulator(c, seed=1).trace("ext/198.18.0.9", "10.240.0.4", dport=30080, sport=5000)
    assert out.packet.ip.src != A("198.18.0.9") and out.packet.l4.sport == 5000
