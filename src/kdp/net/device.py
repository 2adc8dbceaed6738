# net.device: network devices as the kernel has them: loopback, one end of a
# veth pair, a bridge (with its ports and forwarding database), and an
# Ethernet device attached to a shared L2 segment (the underlay). State and
# small lookups only; moving frames is kdp.datapath's job.
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .namespace import Namespace

# Bumped by every change to any device's address list: a namespace's cached
# view of its local and broadcast addresses (Namespace.is_local) is rebuilt
# when the epoch it was built at is stale.
ADDRESS_EPOCH = [0]


class AddressList(list):
    """A device's addresses (IPv4Interface): a list that bumps ADDRESS_EPOCH
    whenever it changes."""

    def _changed(self) -> None:
        ADDRESS_EPOCH[0] += 1

    def append(self, x) -> None:
        super().append(x)
        self._changed()

    def extend(self, xs) -> None:
        super().extend(xs)
        self._changed()

    def insert(self, i, x) -> None:
        super().insert(i, x)
        self._changed()

    def remove(self, x) -> None:
        super().remove(x)
        self._changed()

    def pop(self, i=-1):
        x = super().pop(i)
        self._changed()
        return x

    def clear(self) -> None:
        super().clear()
        self._changed()

    def __setitem__(self, i, x) -> None:
        super().__setitem__(i, x)
        self._changed()

    def __delitem__(self, i) -> None:
        super().__delitem__(i)
        self._changed()

    def __iadd__(self, xs):
        self.extend(xs)
        return self


@dataclass(eq=False)
class Device:
    name: str
    kind: str                                   # loopback | veth | bridge | ether
    mac: str
    addresses: list[IPv4Interface] = field(default_factory=AddressList)
    mtu: int = 1500
    up: bool = True
    namespace: Namespace | None = None
    peer: Device | None = None                  # veth: the other end
    master: Bridge | None = None                # bridge port: the bridge it is enslaved to
    hairpin: bool = False                       # bridge port hairpin mode (reflective relay)
    segment: Segment | None = None              # ether: the L2 segment it is plugged into
    proxy_arp: bool = False
    promisc: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.addresses, AddressList):
            self.addresses = AddressList(self.addresses)
        ADDRESS_EPOCH[0] += 1

    @property
    def carrier(self) -> bool:
        """A bridge without ports has no carrier (its routes show linkdown)."""
        return not isinstance(self, Bridge) or bool(self.ports)

    @property
    def label(self) -> str:
        ns = self.namespace.name if self.namespace is not None else "?"
        return f"{ns}:{self.name}"

    def has_address(self, ip: IPv4Address) -> bool:
        n = int(ip)                         # int() of an interface is its address
        for a in self.addresses:
            if int(a) == n:
                return True
        return False

    def primary_address(self, toward: IPv4Address | None = None) -> IPv4Address | None:
        """inet_select_addr(): an address of this device, preferring one whose
        subnet holds `toward`."""
        if toward is not None:
            for a in self.addresses:
                if toward in a.network:
                    return a.ip
        return self.addresses[0].ip if self.addresses else None


@dataclass(eq=False)
class FdbEntry:
    mac: str
    port: Device
    updated: float
    local: bool = False


@dataclass(eq=False)
class Bridge(Device):
    ports: list[Device] = field(default_factory=list)
    fdb: dict[str, FdbEntry] = field(default_factory=dict)
    ageing: float = 300.0
    nf_call_iptables: bool = True               # net.bridge.bridge-nf-call-iptables

    def add_port(self, dev: Device) -> None:
        dev.master = self
        self.ports.append(dev)
        self.fdb[dev.mac] = FdbEntry(dev.mac, dev, 0.0, local=True)

    def learn(self, mac: str, port: Device, now: float) -> None:
        e = self.fdb.get(mac)
        if e is not None and e.local:
            return
        self.fdb[mac] = FdbEntry(mac, port, now)

    def lookup(self, mac: str, now: float) -> Device | None:
        e = self.fdb.get(mac)
        if e is None or (not e.local and now - e.updated > self.ageing):
            return None
        return e.port

    def dump_fdb(self) -> list[str]:
        """`bridge fdb show br NAME` style lines."""
        return [f"{e.mac} dev {e.port.name} master {self.name}{' permanent' if e.local else ''}"
                for e in sorted(self.fdb.values(), key=lambda e: (e.port.name, e.mac))]


@dataclass(eq=False)
class Segment:
    """A shared L2 segment (a learning switch without netfilter): the VNet
    underlay joining the nodes' eth0 and the edge router."""

    name: str
    devices: list[Device] = field(default_factory=list)

    def attach(self, dev: Device) -> None:
        dev.segment = self
        self.devices.append(dev)
