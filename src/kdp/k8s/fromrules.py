# k8s.fromrules: a model of a node read back from its iptables-save dump, for
# when the user has the node's rules but not its manifests (`kdp bench rules
# --rules FILE`). Reads kube-proxy's ClusterIP shape only: a nat KUBE-SERVICES
# rule `-d IP/32 -p tcp|udp --comment "NS/NAME[:PORT] cluster IP" --dport N -j
# KUBE-SVC-...`, its chain's masquerade rule (`! -s CLUSTER_CIDR` or none: the
# cluster CIDR and masqueradeAll) and jumps to KUBE-SEP chains whose DNAT gives
# the endpoints. Everything else (node ports, external and load-balancer IPs,
# affinity, other chains) is not modelled: kdp.fast.svcsplit then finds those
# rules differing and leaves them to the reference walk. Never reads files.
from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network

from .model import Cluster, ClusterConfig, Endpoint, Node, Service, ServicePort

_KS = re.compile(r'^-A KUBE-SERVICES -d (\S+)/32 -p (tcp|udp) -m comment --comment '
                 r'"?([^/" ]+)/([^:" ]+)(?::(\S*))? cluster IP"? -m \2 --dport (\d+) '
                 r'-j (KUBE-SVC-\S+)$')
_MASQ = re.compile(r"^-A (\S+) (?:! -s (\S+) )?-d \S+ .*-j KUBE-MARK-MASQ$")
_JUMP = re.compile(r"^-A (\S+) .*-j (KUBE-SEP-\S+)$")
_DNAT = re.compile(r"^-A (\S+) .*-j DNAT --to-destination (\d+\.\d+\.\d+\.\d+):(\d+)$")

NODE = "node"


def model_from_rules(text: str) -> tuple[Cluster, str, list[str]]:
    """(cluster, node name, notes): the ClusterIP services the dump's nat table
    describes, on one node named `node`."""
    lines = [" ".join(x.split()) for x in text.splitlines()]
    dnat = {m.group(1): (IPv4Address(m.group(2)), int(m.group(3)))
            for m in map(_DNAT.match, lines) if m}
    jumps: dict[str, list[str]] = {}
    masq: dict[str, str | None] = {}
    for ln in lines:
        m = _JUMP.match(ln)
        if m and m.group(1).startswith("KUBE-SVC-"):
            jumps.setdefault(m.group(1), []).append(m.group(2))
        m = _MASQ.match(ln)
        if m and m.group(1).startswith("KUBE-SVC-"):
            masq[m.group(1)] = m.group(2)
    cidrs = {v for v in masq.values() if v}
    cfg = ClusterConfig(service_cidr=IPv4Network("0.0.0.0/0"))
    notes = []
    if len(cidrs) == 1:
        cfg.pod_cidr = IPv4Network(cidrs.pop())
    elif masq and not any(masq.values()):
        cfg.kube_proxy.masquerade_all = True
    node = Node(NODE, IPv4Address("10.240.0.4"), IPv4Network(f"{cfg.pod_cidr.network_address}/24"))
    services: dict[tuple[str, str], Service] = {}
    skipped = 0
    for ln in lines:
        m = _KS.match(ln)
        if not m:
            skipped += ln.startswith("-A KUBE-SERVICES ") and "-j KUBE-NODEPORTS" not in ln
            continue
        ip, proto, ns, name, pname, port, chain = m.groups()
        svc = services.setdefault((ns, name), Service(ns, name, "ClusterIP", IPv4Address(ip)))
        if svc.cluster_ip != IPv4Address(ip):
            continue
        eps = [dnat[s] for s in jumps.get(chain, []) if s in dnat]
        svc.ports.append(ServicePort(int(port), proto.upper(), pname or None,
                                     eps[0][1] if eps else int(port)))
        for eip, eport in eps:
            svc.endpoints.append(Endpoint(eip, eport, pname or None, proto.upper(), "elsewhere"))
    if skipped:
        notes.append(f"{skipped} nat KUBE-SERVICES rule(s) not of the ClusterIP shape: "
                     "not modelled (give --cluster to model them)")
    return Cluster(cfg, [node], services=list(services.values())), NODE, notes
