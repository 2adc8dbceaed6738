# net.namespace: a network namespace: its devices, addresses, routing table,
# neighbour cache, sysctls, netfilter instance and sockets. Who owns it (a
# node's root namespace, a pod's pause container, the edge router) is recorded
# so traces can say where a frame was.
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from .device import ADDRESS_EPOCH, Device
from .neigh import NeighTable
from .route import Route, RouteTable


LIMITED_BROADCAST = IPv4Address("255.255.255.255")


@dataclass(eq=False)
class Namespace:
    name: str                                   # "node/N", "pod/NS/NAME", "edge", "ext"
    kind: str                                   # node | pod | router | external
    node: str                                   # the machine it lives on (for traces)
    devices: dict[str, Device] = field(default_factory=dict)
    routes: RouteTable = field(default_factory=RouteTable)
    neigh: NeighTable = field(default_factory=NeighTable)
    ip_forward: bool = False
    netfilter: Any = None                       # kdp.netfilter.Netfilter, when the ns has rules
    sockets: Any = None                         # kdp.net.sockets.SocketTable
    catch_all: bool = False                     # "ext": every non-cluster address is local
    local_exclude: tuple = ()                   # networks never local to a catch-all namespace
    owner: Any = None                           # the Pod / Node object, when there is one
    lb: Any = None                              # the edge's cloud load balancer (k8s.cloudlb)
    # (address epoch, device count, local address ints, broadcast address ints): _address_view()'s cache
    _view: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def report_changes_to(self, watch) -> None:
        """Hand watch (kdp.watch.Watch, the owning datapath's change log) to
        the tables of this namespace that report changes."""
        self.routes.watch = self.neigh.watch = watch
        for reporter in (self.sockets, self.netfilter):
            if reporter is not None:
                reporter.watch = watch

    def add_device(self, dev: Device) -> Device:
        dev.namespace = self
        self.devices[dev.name] = dev
        ADDRESS_EPOCH[0] += 1                     # its addresses are this namespace's now
        return dev

    def add_address(self, dev: Device, iface, connected_route: bool = True, **route_kw) -> None:
        dev.addresses.append(iface)
        if connected_route and iface.network.prefixlen < 32:
            self.routes.add(Route(iface.network, dev.name, src=iface.ip, scope="link", **route_kw))

    # --- addressing -------------------------------------------------------
    def _address_view(self) -> tuple[frozenset, frozenset]:
        """(local address ints, broadcast address ints) of this namespace's
        devices, rebuilt when an address list or the device set changed."""
        view = self._view
        if view is None or view[0] != ADDRESS_EPOCH[0] or view[1] != len(self.devices):
            local = frozenset(int(a) for d in self.devices.values() for a in d.addresses)
            bcast = frozenset(int(a.network.broadcast_address) for d in self.devices.values()
                              for a in d.addresses if a.network.prefixlen < 31)
            view = self._view = (ADDRESS_EPOCH[0], len(self.devices), local, bcast)
        return view[2], view[3]

    def is_local(self, ip: IPv4Address) -> bool:
        n = ip._ip                                # int(ip), without the call
        if n >> 24 == 127:                        # 127.0.0.0/8: ip.is_loopback
            return True
        if n in self._address_view()[0]:
            return True
        if self.catch_all:
            return not any(ip in net for net in self.local_exclude)
        return False

    def local_device_for(self, ip: IPv4Address) -> Device | None:
        for dev in self.devices.values():
            if dev.has_address(ip):
                return dev
        return None

    def is_broadcast(self, ip: IPv4Address) -> bool:
        n = ip._ip                                # int(ip), without the call
        return n == 0xFFFFFFFF or n in self._address_view()[1]

    def addr_type(self, ip: IPv4Address, dev: str | None = None) -> str:
        """The kernel's inet_addr_type(), optionally limited to one device."""
        n = ip._ip                                # int(ip), without the call
        if n >> 28 == 14:                         # 224.0.0.0/4: ip.is_multicast
            return "MULTICAST"
        if n == 0:
            return "UNSPEC"
        if self.is_broadcast(ip):
            return "BROADCAST"
        if dev is not None:
            d = self.devices.get(dev)
            if d is not None and (d.has_address(ip) or (d.kind == "loopback" and ip.is_loopback)):
                return "LOCAL"
            return "UNICAST"
        return "LOCAL" if self.is_local(ip) else "UNICAST"

    def source_address(self, out_dev: str, dst: IPv4Address) -> IPv4Address | None:
        dev = self.devices.get(out_dev)
        if dev is None:
            return None
        addr = dev.primary_address(dst)
        if addr is not None:
            return addr
        for d in self.devices.values():           # the kernel falls back to any global address
            if d.kind != "loopback" and d.addresses:
                return d.addresses[0].ip
        return None

    def all_addresses(self) -> list[IPv4Address]:
        return [a.ip for d in self.devices.values() for a in d.addresses]
