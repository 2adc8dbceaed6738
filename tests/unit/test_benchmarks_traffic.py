# benchmarks/traffic.py's seeded traffic classes (issue 11, Benchmarks): the
# same seed gives the same frames, every class's frames parse and are what the
# class says, the mix draws every class, the cluster they are written for has
# the Services and MACs they address, and a tcp-session runs to completion.
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "benchmarks")


def _module(name):
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def traffic():
    return _module("traffic")


def frames(traffic, cls, n, seed=1, services=0):
    g = traffic.Generator(seed, services)
    return [g.frame(cls) for _ in range(n)]


def test_each_class_is_deterministic_per_seed(traffic):
    for cls in traffic.CLASSES:
        a, b, c = frames(traffic, cls, 12), frames(traffic, cls, 12), frames(traffic, cls, 12, seed=2)
        assert a == b, cls
        assert a != c, cls                    # the seed matters (IP IDs, ports, ISNs, draws)


def _parsed(raw):
    from kdp import wire
    p = wire.parse(raw)
    assert p.ip is not None
    return p


def test_each_class_parses_and_is_what_it_says(traffic):
    from kdp import wire  # noqa: F401
    ext_mac = bytes.fromhex(traffic.EXT_MAC.replace(":", ""))
    for cls in traffic.CLASSES:
        for raw in frames(traffic, cls, 12):
            p = _parsed(raw)
            from_outside = raw[6:12] == ext_mac
            assert from_outside == (cls in traffic.EDGE_CLASSES) or cls == "mix", cls
    new = [_parsed(f) for f in frames(traffic, "udp-new-clusterip", 200)]
    assert {str(p.ip.dst) for p in new} == {traffic.UDP_ECHO_SVC[0]}
    assert len({p.l4.sport for p in new}) == 200          # every datagram a new flow
    syn = [_parsed(f) for f in frames(traffic, "syn-clusterip", 100)]
    assert all(p.l4.flags == 0x02 for p in syn) and len({p.l4.sport for p in syn}) == 100
    dns = frames(traffic, "dns", 400)
    from scapy.layers.dns import DNS
    from scapy.layers.l2 import Ether
    names = {Ether(f)[DNS].qd[0].qname for f in dns}
    assert 45 <= len(names) <= 50 and len(traffic.NAMES) == 50
    assert len({Ether(f)[DNS].id for f in dns}) > 390                  # random IDs
    assert len({_parsed(f).l4.sport for f in dns}) > 390               # random source ports
    for cls, dst, dport in (("nodeport-syn-cluster", None, traffic.NODEPORT_CLUSTER),
                            ("nodeport-syn-local", None, traffic.NODEPORT_LOCAL),
                            ("lb-syn-cluster", traffic.LB_CLUSTER[0], 80),
                            ("lb-syn-local", traffic.LB_LOCAL[0], 80)):
        ps = [_parsed(f) for f in frames(traffic, cls, 12)]
        assert {str(p.ip.src) for p in ps} == {traffic.EXT_IP}
        assert {p.l4.dport for p in ps} == {dport} and all(p.l4.flags == 0x02 for p in ps)
        assert {str(p.ip.dst) for p in ps} == ({dst} if dst else set(traffic.NODE_IPS))


def test_tcp_session_frames_are_one_conversation_each(traffic):
    ps = [_parsed(f) for f in frames(traffic, "tcp-session", 10)]
    for s in (ps[:5], ps[5:]):
        assert [p.l4.flags for p in s] == [0x02, 0x10, 0x18, 0x11, 0x10]     # S, A, PA, FA, A
        assert len({p.l4.sport for p in s}) == 1
        c0, s0 = s[0].l4.seq, s[1].l4.ack - 1
        get = len(traffic.HTTP_GET)
        assert [p.l4.seq - c0 for p in s] == [0, 1, 1, 1 + get, 2 + get]
        assert s[3].l4.ack - s0 == 1 + traffic.HTTP_OK_LEN and s[4].l4.ack - s0 == 2 + traffic.HTTP_OK_LEN
    assert ps[0].l4.sport != ps[5].l4.sport


def test_the_mix_draws_every_class(traffic):
    g = traffic.Generator(1)
    drawn = []
    inner = g._frame
    g._frame = lambda cls: drawn.append(cls) or inner(cls)
    for _ in range(300):
        g.frame("mix")
    assert set(drawn) == set(traffic.CLASSES) - {"mix"} == set(traffic.MIX_WEIGHTS)
    assert traffic.ATTACH["mix"] == "auto"


def test_the_cluster_has_what_the_classes_address(traffic, tmp_path):
    from kdp.emulator import Emulator
    path = traffic.write_cluster(str(tmp_path / "c"), services=20)
    emu = Emulator.load([path], capture=False)
    c = emu.cluster
    np_local = c.service("default", "web-nodeport-local")
    assert np_local.external_traffic_policy == "Local" and np_local.ports[0].node_port == traffic.NODEPORT_LOCAL
    lb = c.service("default", "web-lb-cluster")
    assert lb.external_traffic_policy == "Cluster" and [str(i) for i in lb.load_balancer_ips] == [traffic.LB_CLUSTER[0]]
    assert c.service("default", "web-lb").external_traffic_policy == "Local"
    assert c.service("default", "web-nodeport").ports[0].node_port == traffic.NODEPORT_CLUSTER
    assert sorted(str(n.ip) for n in c.nodes) == sorted(traffic.NODE_IPS)
    # the senders' MACs and the next hops' as kdp names them
    t = emu.topology
    assert t.namespaces["ext"].devices["eth0"].mac == traffic.EXT_MAC
    assert t.namespaces["edge"].devices["ext0"].mac == traffic.EDGE_EXT0_MAC
    assert emu.namespace(traffic.CLIENT_AT).devices["eth0"].mac == traffic.CLIENT_MAC
    # the extra Services: even ones TCP to nginx, odd ones UDP to udp-echo, 3 endpoints each
    tcp, udp = c.service("default", "bench-svc-0"), c.service("default", "bench-svc-1")
    assert str(tcp.cluster_ip) == traffic.extra_service_ip(0) and tcp.ports[0].protocol == "TCP"
    assert str(udp.cluster_ip) == traffic.extra_service_ip(1) and udp.ports[0].protocol == "UDP"
    assert len([e for e in tcp.endpoints_for(tcp.ports[0]) if e.ready]) == 3
    assert len([e for e in udp.endpoints_for(udp.ports[0]) if e.ready]) == 3
    assert len([s for s in c.services if s.name.startswith("bench-svc-")]) == 20
    dsts = {str(_parsed(f).ip.dst) for f in frames(traffic, "udp-new-clusterip", 200, services=20)}
    assert dsts == {traffic.extra_service_ip(i) for i in range(1, 20, 2)}
    assert traffic.extra_services_yaml(20) == traffic.extra_services_yaml(20)


def test_tcp_sessions_complete_in_kdp_run(traffic, tmp_path):
    path = traffic.write_cluster(str(tmp_path / "c"))
    pcap = str(tmp_path / "s.pcap")
    traffic.write_pcap(pcap, "tcp-session", 15)
    out = subprocess.run([sys.executable, "-m", "kdp.cli", "run", path, "--pcap", pcap, "--at",
                          traffic.ATTACH["tcp-session"], "--json"], capture_output=True, text=True,
                         timeout=120, env=os.environ | {"PYTHONPATH": os.path.join(ROOT, "src")})
    assert out.returncode == 0, out.stderr[-2000:]
    s = json.loads(out.stdout.splitlines()[-1])["summary"]
    assert s["delivered"] == 15 and s["translated"] == 12
    assert s["outcomes"]["flows"] == {"total": 3, "opened": 3, "completed": 3, "reset": 0}


def test_every_class_is_measured_by_the_kernel_or_says_why():
    k = _module("bench_kernel_classes")
    t = k.traffic
    assert set(k.ENDS) | set(k.NOT_DRIVEN) == set(t.CLASSES)
    ext, client = frames(t, "lb-syn-local", 1)[0], frames(t, "dns", 1)[0]
    assert k.SENDERS[k.sender_of(ext)] == "ext" and k.SENDERS[k.sender_of(client)] == t.CLIENT_AT


def test_replot_draws_each_class_and_series(tmp_path):
    pytest.importorskip("matplotlib")
    row = {"fast_median": 1000.0, "reference_median": 500.0,
           "kernel": {"iptables": {"median": 20000.0}, "nftables": {"median": 30000.0}}}
    doc = {"frames": 10, "repeat": 1, "services": 0, "classes": {"syn-clusterip": row, "lb-syn-local": row}}
    res = tmp_path / "r.json"
    res.write_text(json.dumps(doc))
    out = subprocess.run([sys.executable, os.path.join(BENCH, "bench_classes.py"), "--replot", str(res),
                          "--plot", str(tmp_path / "p.svg")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    svg = (tmp_path / "p.svg").read_text()
    for text in ("syn-clusterip", "lb-syn-local", "kernel, nftables", "no-fastpath"):
        assert text in svg
