# Namespace.is_local / is_broadcast answer from a cached set of the
# namespace's addresses; every way the addresses change must be seen.
from ipaddress import IPv4Address, IPv4Interface

from kdp.net.device import Device
from kdp.net.namespace import Namespace

A = IPv4Address("10.0.0.5")


def _ns(name: str) -> Namespace:
    return Namespace(name, "pod", "n1")


def test_an_address_added_or_removed_is_seen():
    ns = _ns("a")
    dev = ns.add_device(Device("eth0", "veth", "02:00:00:00:00:01"))
    assert not ns.is_local(A)
    ns.add_address(dev, IPv4Interface("10.0.0.5/24"))
    assert ns.is_local(A) and ns.is_broadcast(IPv4Address("10.0.0.255"))
    dev.addresses.remove(IPv4Interface("10.0.0.5/24"))
    assert not ns.is_local(A) and not ns.is_broadcast(IPv4Address("10.0.0.255"))
    dev.addresses[:] = [IPv4Interface("10.0.0.5/32")]       # slice assignment counts too
    assert ns.is_local(A) and not ns.is_broadcast(IPv4Address("10.0.0.255"))


def test_a_device_moved_to_another_namespace_takes_its_addresses():
    a, b = _ns("a"), _ns("b")
    a.add_device(Device("lo", "loopback", "00:00:00:00:00:00"))
    b.add_device(Device("lo", "loopback", "00:00:00:00:00:00"))
    dev = a.add_device(Device("eth0", "veth", "02:00:00:00:00:01", [IPv4Interface("10.0.0.5/24")]))
    assert a.is_local(A) and not b.is_local(A)
    del a.devices["eth0"]
    b.devices.pop("lo")
    b.add_device(dev)                      # both namespaces keep their device count
    assert not a.is_local(A) and b.is_local(A)


def test_loopback_is_always_local():
    assert _ns("a").is_local(IPv4Address("127.3.4.5"))
