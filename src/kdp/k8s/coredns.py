# k8s.coredns: puts real DNS servers behind the sockets cni wired: CoreDNS (the
# cluster zone, see dns.zone) on the DNS ports of the pods behind kube-system/kube-dns,
# and the VNet's resolver (the upstream static zone) on the outside world's port 53,
# where nodes and hostNetwork pods send their queries (Azure's 168.63.129.16).
from __future__ import annotations

from ipaddress import IPv4Address

from .model import Cluster, Pod

VNET_DNS = IPv4Address("168.63.129.16")     # Azure's resolver: the nodes' resolv.conf nameserver
DNS_SERVICE = ("kube-system", "kube-dns")


def dns_pods(cluster: Cluster) -> list[tuple[Pod, set[tuple[int, str]]]]:
    """The CoreDNS pods (kube-dns's endpoints, or kube-system pods labelled
    k8s-app=kube-dns) with the (port, protocol) pairs CoreDNS listens on."""
    wanted: dict[str, set[tuple[int, str]]] = {}
    try:
        svc = cluster.service(*DNS_SERVICE)
    except KeyError:
        svc = None
    for e in svc.endpoints if svc else []:
        if e.pod and e.protocol in ("UDP", "TCP"):
            wanted.setdefault(e.pod, set()).add((e.port, e.protocol))
    for p in cluster.pods:
        if p.namespace == "kube-system" and p.labels.get("k8s-app") == "kube-dns":
            wanted.setdefault(p.key, set())
    out = []
    for p in cluster.pods:
        if p.key in wanted:
            out.append((p, wanted[p.key] | {(53, "UDP"), (53, "TCP")}))
    return out


def install(topo) -> None:
    """Replace the echo apps on CoreDNS's ports with CoreDNS, and the outside
    world's UDP/TCP 53 with the VNet resolver (where those ports are listened on)."""
    from ..dns.server import CoreDnsApp, ResolverApp
    from ..dns.zone import CoreDNS, Upstream
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
