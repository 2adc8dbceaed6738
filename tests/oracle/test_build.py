# oracle.build/netns against the real kernel: the twin mirrors kdp's
# topology, is quiet when idle, and leaves nothing behind however it ends
# (normal exit, exception, SIGTERM, stale runs of dead processes).
import os
import signal
import subprocess
import sys
import time

import pytest

from kdp.emulator import Emulator
from kdp.oracle import netns as N
from kdp.oracle.build import RealCluster
from kdp.oracle.runner import Oracle

from .conftest import needs_kernel, small_cluster

pytestmark = [pytest.mark.root, pytest.mark.oracle, needs_kernel]


def mine(prefix: str) -> list[str]:
    return [n for n in N.list_netns() if n.startswith(prefix)]


@pytest.fixture(scope="module")
def azure_twin():
    prefix = f"kdpo{os.getpid()}-tb-"
    with Oracle(small_cluster("azure"), prefix=prefix) as o:
        yield o
    assert mine(prefix) == []


def test_twin_mirrors_kdp_devices_addresses_routes(azure_twin):
    assert azure_twin.real.verify() == []
    assert len(azure_twin.real.all_netns()) == 8          # 2 nodes, 3 pods, edge, ext, underlay


def test_twin_sysctls(azure_twin):
    real = azure_twin.real
    node = real.netns["node/n0"]
    hv = real.emu.topology.host_veth["default/a"].name
    assert N.read_sysctl(node, "net.ipv6.conf.all.disable_ipv6") == "1"
    assert N.read_sysctl(node, f"net.ipv4.neigh.{hv}.mcast_solicit") == "1"
    assert N.read_sysctl(node, f"net.ipv4.conf.{hv}.proxy_arp") == "1"
    assert N.read_sysctl(node, "net.ipv4.ip_forward") == "1"
    assert N.read_sysctl(real.netns["pod/default/a"], "net.ipv4.ip_forward") == "0"
    assert N.read_sysctl(node, "net.ipv4.icmp_ratelimit") == "0"


def test_idle_twin_sends_nothing(azure_twin):
    azure_twin.sniffer.clear()
    time.sleep(0.6)
    assert azure_twin.sniffer.take() == {}


def test_kubenet_bridge_ports_hairpin_and_promisc():
    prefix = f"kdpo{os.getpid()}-tk-"
    emu = Emulator(small_cluster("kubenet", hairpin="promiscuous-bridge"))
    with RealCluster(emu, prefix=prefix) as real:
        links = {l["ifname"]: l for l in N.ip_json(real.netns["node/n0"], "-d", "link", "show")}
        assert "PROMISC" in links["cbr0"]["flags"]
        assert links["cbr0"]["address"] == emu.namespace("node/n0").devices["cbr0"].mac
        hv = emu.topology.host_veth["default/a"].name
        assert links[hv]["master"] == "cbr0"
        assert links[hv]["linkinfo"]["info_slave_data"]["hairpin"] is False
        assert real.verify() == []
    assert mine(prefix) == []


def test_failed_build_removes_everything(monkeypatch):
    prefix = f"kdpo{os.getpid()}-tf-"

    def boom(self):
        raise N.NetnsError("injected failure")
    monkeypatch.setattr(RealCluster, "_routes", boom)
    with pytest.raises(N.NetnsError, match="injected"):
        RealCluster(Emulator(small_cluster()), prefix=prefix).build()
    assert mine(prefix) == []


def test_cleanup_stale_removes_dead_runs_only():
    dead = 4194000
    while True:
        try:
            os.kill(dead, 0)
            dead -= 1
        except ProcessLookupError:
            break
    stale, live = f"kdpo{dead}-stale", f"kdpo{os.getpid()}-live"
    N.create_netns([stale, live])
    try:
        removed = N.cleanup_stale()
        assert stale in removed and live not in removed
        assert stale not in N.list_netns() and live in N.list_netns()
    finally:
        N.delete_netns([stale, live])
    assert live not in N.list_netns()


SIGTERM_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from kdp.emulator import Emulator
from kdp.oracle.build import RealCluster
from oracle.conftest import small_cluster
real = RealCluster(Emulator(small_cluster()))
real.build()
print(real.prefix, flush=True)
time.sleep(30)
"""


def test_sigterm_removes_everything():
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT.format(tests=tests)], stdout=subprocess.PIPE,
                         text=True, env=env)
    try:
        prefix = p.stdout.readline().strip()
        assert prefix.startswith("kdpo") and mine(prefix)
        p.send_signal(signal.SIGTERM)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert mine(prefix) == []
