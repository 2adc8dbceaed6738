# net: the kernel objects kdp models: network namespaces, devices (loopback,
# veth, bridge, ethernet on a segment), routing tables, neighbour caches and
# the sockets of the apps living in a namespace. State only; the packet walk
# that moves frames between them lives in kdp.datapath.
from .device import Bridge, Device, Segment
from .namespace import Namespace
from .neigh import NeighTable
from .route import Route, RouteTable

__all__ = ["Bridge", "Device", "Segment", "Namespace", "NeighTable", "Route", "RouteTable"]
