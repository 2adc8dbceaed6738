# k8s.coredns: where the cluster's DNS servers are: the CoreDNS pods (behind
# kube-system/kube-dns) with the ports CoreDNS listens on, and the VNet's resolver
# (Azure's 168.63.129.16) that nodes and hostNetwork pods query. assembly puts
# the servers (dns.server) behind those sockets.
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
