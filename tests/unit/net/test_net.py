# net: routing lookups, neighbour cache, bridge FDB, namespace address types.
from ipaddress import IPv4Address as A, IPv4Interface as I, IPv4Network as N

from kdp.net import Bridge, Device, Namespace, NeighTable, Route, RouteTable


def test_longest_prefix_then_metric_wins():
    t = RouteTable()
    t.add(Route(N("0.0.0.0/0"), "eth0", via=A("10.0.0.1")))
    t.add(Route(N("10.244.0.0/16"), "eth0", via=A("10.0.0.2"), metric=10))
    t.add(Route(N("10.244.1.0/24"), "eth1", via=A("10.0.0.3"), metric=10))
    t.add(Route(N("10.244.1.0/24"), "eth2", via=A("10.0.0.4"), metric=5))
    assert t.lookup(A("10.244.1.9")).dev == "eth2"
    assert t.lookup(A("10.244.2.9")).via == A("10.0.0.2")
    assert t.lookup(A("8.8.8.8")).dev == "eth0"


def test_linkdown_routes_still_match_and_empty_table_has_no_route():
    t = RouteTable()
    assert t.lookup(A("1.1.1.1")) is None
    t.add(Route(N("172.17.0.0/16"), "docker0", src=A("172.17.0.1"), scope="link", linkdown=True))
    assert t.lookup(A("172.17.0.5")).dev == "docker0"      # the kernel's ignore_routes_with_linkdown=0
    assert t.dump() == ["172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown"]


def test_route_text_looks_like_iproute2():
    assert str(Route(N("0.0.0.0/0"), "eth0", via=A("10.240.0.1"))) == "default via 10.240.0.1 dev eth0"
    assert str(Route(N("10.244.0.0/24"), "cbr0", src=A("10.244.0.1"), scope="link")) == \
        "10.244.0.0/24 dev cbr0 proto kernel scope link src 10.244.0.1"


def test_neighbour_queue_is_released_on_update():
    t = NeighTable()
    e = t.incomplete("eth0", A("10.0.0.2"), 0.0)
    e.queue.append("pkt")
    assert t.lookup_mac("eth0", A("10.0.0.2")) is None and t.pending() == [e]
    assert t.update("eth0", A("10.0.0.2"), "02:00:00:00:00:02", 1.0) == ["pkt"]
    assert t.lookup_mac("eth0", A("10.0.0.2")) == "02:00:00:00:00:02" and t.pending() == []


def test_neighbour_update_without_create_ignores_unknown():
    t = NeighTable()
    t.update("eth0", A("10.0.0.3"), "02:00:00:00:00:03", 0.0, create=False)
    assert t.get("eth0", A("10.0.0.3")) is None


def test_bridge_learns_and_ages():
    br = Bridge("cbr0", "bridge", "02:00:00:00:00:aa")
    p1, p2 = Device("veth1", "veth", "02:00:00:00:00:01"), Device("veth2", "veth", "02:00:00:00:00:02")
    br.add_port(p1)
    br.add_port(p2)
    br.learn("02:00:00:00:00:99", p2, now=10.0)
    assert br.lookup("02:00:00:00:00:99", now=11.0) is p2
    assert br.lookup("02:00:00:00:00:99", now=10.0 + 301) is None        # ageing 300 s
    assert br.lookup("02:00:00:00:00:01", now=1e9) is p1                 # port MACs are local
    assert any("permanent" in line for line in br.dump_fdb())


def test_namespace_address_types():
    ns = Namespace("node/n", "node", "n")
    eth0 = ns.add_device(Device("eth0", "ether", "02:00:00:00:00:01"))
    ns.add_address(eth0, I("10.240.0.4/16"))
    assert ns.addr_type(A("10.240.0.4")) == "LOCAL"
    assert ns.addr_type(A("10.240.255.255")) == "BROADCAST"
    assert ns.addr_type(A("10.240.0.5")) == "UNICAST"
    assert ns.addr_type(A("224.0.0.1")) == "MULTICAST"
    assert ns.addr_type(A("10.240.0.4"), dev="eth1") == "UNICAST"
    assert ns.source_address("eth0", A("8.8.8.8")) == A("10.240.0.4")
    assert ns.routes.lookup(A("10.240.3.3")).dev == "eth0"            # connected route added


def test_a_namespace_hands_one_change_log_to_every_table_that_reports():
    """Routes, neighbours, listeners and rules bump the log they were handed
    (a datapath's, kdp.watch); sockets appearing are tokens while a cache
    listens. A table of another namespace keeps its own log."""
    from kdp.net.sockets import SocketTable
    from kdp.netfilter import Netfilter, Ruleset
    from kdp.watch import Watch
    ns = Namespace("node/n", "node", "n")
    ns.sockets, ns.netfilter = SocketTable(ns.name), Netfilter()
    log, elsewhere = Watch(), RouteTable()
    ns.report_changes_to(log)
    ns.routes.add(Route(N("10.0.0.0/8"), "eth0"))
    ns.neigh.add_permanent("eth0", A("10.0.0.2"), "02:00:00:00:00:02")
    e = ns.neigh.incomplete("eth0", A("10.0.0.3"), 0.0)
    ns.neigh.cache_header(e)
    ns.neigh.cache_header(e)                               # once only
    ns.neigh.fail(e)
    ns.sockets.listen(80, "TCP", "web")
    ns.netfilter.load(Ruleset.empty())
    elsewhere.add(Route(N("0.0.0.0/0"), "eth0"))
    assert log.generation == 7 and elsewhere.watch is not log and elsewhere.watch.generation == 1
    ns.sockets.add_client("tcp", A("10.0.0.1"), 40000, A("10.0.0.2"), 80)  # nobody listening: not kept
    log.tokens = []
    ns.sockets.add_client("tcp", A("10.0.0.1"), 40001, A("10.0.0.2"), 80)
    assert log.tokens == [("sock", id(ns.sockets), (A("10.0.0.1"), 40001, A("10.0.0.2"), 80))]
