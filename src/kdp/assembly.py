# assembly: a resolved Cluster put together into the running data plane, the one
# place that joins k8s, dns and ingress (above all three): the CNI's wiring
# (k8s.cni: namespaces, devices, routes, rules, echo sockets), then CoreDNS behind
# the kube-dns pods' DNS ports and the VNet's resolver behind the outside world's
# port 53 (dns), then ingress-nginx and its HTTP backends (ingress.controller).
from __future__ import annotations

from .dns.server import CoreDnsApp, ResolverApp
from .dns.zone import CoreDNS, Upstream
from .ingress.controller import install as install_ingress
from .k8s import cni
from .k8s.coredns import dns_pods
from .k8s.model import Cluster


def build(cluster: Cluster, seed: int = 0, rules: dict[str, tuple[str, str]] | None = None) -> cni.Topology:
    """The cluster wired as the CNI does, with CoreDNS and the ingress controller
    in place. rules: node name -> (iptables-save text, source name) replacing the
    generated rules."""
    topo = cni.build(cluster, seed, rules)
    install_coredns(topo)               # CoreDNS on its pods' DNS ports, the VNet DNS outside
    install_ingress(topo, seed)         # ingress-nginx, HTTP backends
    return topo


def install_coredns(topo: cni.Topology) -> None:
    """Replace the echo apps on CoreDNS's ports with CoreDNS, and the outside
    world's UDP/TCP 53 with the VNet resolver (where those ports are listened on)."""
    cluster = topo.cluster
    upstream = Upstream(cluster.config.dns_upstream)
    coredns = CoreDnsApp(CoreDNS(cluster, upstream))
    for pod, ports in dns_pods(cluster):
        ns = topo.node_ns.get(pod.node) if pod.host_network else topo.pod_ns.get(pod.key)
        if ns is None or ns.sockets is None:
            continue
        for port, proto in sorted(ports):
            lst = ns.sockets.listeners.get((proto, port))
            if lst is not None:
                ns.sockets.listen(port, proto, lst.owner, coredns)
    ext = topo.namespaces.get("ext")
    if ext is not None and ext.sockets is not None:
        resolver = ResolverApp(upstream)
        for proto in ("UDP", "TCP"):
            lst = ext.sockets.listeners.get((proto, 53))
            if lst is not None:
                ext.sockets.listen(53, proto, lst.owner, resolver)
