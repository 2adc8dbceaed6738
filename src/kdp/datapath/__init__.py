# datapath: the packet walk. Frames move hop by hop between devices and
# namespaces the way the kernel moves them (link layer, bridge, ARP, IPv4
# input/forward/output, netfilter hooks, sockets), driven by one event queue.
from .engine import Datapath, Outcome

__all__ = ["Datapath", "Outcome"]
