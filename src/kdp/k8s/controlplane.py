# k8s.controlplane: what the Kubernetes control plane fills in that the input left
# out: nodes (names, IPs, pod CIDRs), Deployment pods, scheduling, the cluster DNS
# (kube-dns + CoreDNS), pod IPAM, ClusterIP and NodePort allocation, endpoints.
# Deterministic: the same Inputs, the same Cluster.
from __future__ import annotations

import dataclasses
from collections import defaultdict
from ipaddress import IPv4Address, IPv4Network

from ..errors import Problem
from ..suggest import did_you_mean
from . import names
from .clusterconfig import NodeIn
from .load import Path, Report, format_path, parse_text
from .model import Cluster, ClusterConfig, Endpoint, Node, Pod
from .validate import (DeploymentIn, Inputs, PodIn, ServiceIn, SliceIn, decode_deployment,
                       decode_service, fmt_labels)

DEFAULT_NODE_COUNT = 2
AZURE_RESERVED = 4          # Azure keeps .0-.3 of every subnet (.1 is the gateway)
# the ClusterConfig fields a pod or node pod range rests on
POD_RANGE = ("networkPlugin", "podCIDR", "nodePodPrefix")
POD_IP = POD_RANGE + ("vnetSubnet", "maxPods", "nodes")


def build(inp: Inputs, report: Report) -> Cluster:
    """The cluster the inputs describe. With ClusterConfig fields in doubt
    (inp.config_unsure: reported wrong, their defaults standing in), it is still
    built so that every independent problem is found, but the checks that rest
    on those fields stay silent: their complaints would be knock-on errors."""
    cfg, unsure = inp.config, inp.config_unsure
    nodes = place_nodes(inp, report)
    pods = expand_deployments(inp)
    schedule(pods, nodes, cfg, unsure)
    add_cluster_dns(inp, pods, nodes, report)
    assign_pod_ips(pods, nodes, cfg, unsure)
    services = sorted(inp.services, key=lambda s: (s.svc.namespace, s.svc.name))
    allocate_cluster_ips(services, cfg, report, unsure)
    allocate_node_ports(services, cfg, unsure)
    placed = sorted((p for p in pods if p.ip is not None), key=lambda p: (p.namespace, p.name))
    build_endpoints(services, placed, nodes, inp.slices)
    return Cluster(
        config=cfg, nodes=nodes, pods=[_model_pod(p) for p in placed],
        services=[s.svc for s in services],
        namespaces=sorted(inp.namespaces | {p.namespace for p in placed}),
        ingresses=inp.ingresses, ingress_classes=inp.ingress_classes)


def sure(unsure: frozenset[str], *keys: str) -> bool:
    """False when a check rests on a ClusterConfig field in doubt (see build)."""
    return not unsure.intersection(keys)


def _config_error(inp: Inputs, report: Report, path: Path, message: str, *,
                  rests_on: tuple[str, ...] = ()) -> None:
    if not sure(inp.config_unsure, *rests_on):
        return
    if inp.config_f is not None:
        inp.config_f.error(("spec",) + path, message)
    else:                   # no ClusterConfig: the defaults do not fit the objects
        report.problems.append(Problem("<defaults>", None, "ClusterConfig", None,
                                       inp.config.name, format_path(("spec",) + path), message))


# --- nodes ----------------------------------------------------------------------------

def _declared_nodes(inp: Inputs, report: Report) -> list[NodeIn]:
    """ClusterConfig's node list, Node objects (merged by name) and generated names."""
    decl = list(inp.config_nodes)
    index = {n.name: i for i, n in enumerate(decl)}
    for obj in inp.node_objects:
        if obj.name not in index:
            index[obj.name] = len(decl)
            decl.append(obj)
            continue
        entry = decl[index[obj.name]]
        if obj.ip and entry.ip and obj.ip != entry.ip:
            obj.f.error(obj.ip_path, f"InternalIP {obj.ip} differs from the ClusterConfig "
                        f"spec.nodes entry's ip {entry.ip}")
        if obj.pod_cidr and entry.pod_cidr and obj.pod_cidr != entry.pod_cidr:
            obj.f.error(obj.cidr_path, f"podCIDR {obj.pod_cidr} differs from the ClusterConfig "
                        f"spec.nodes entry's podCIDR {entry.pod_cidr}")
        decl[index[obj.name]] = dataclasses.replace(
            obj, ip=obj.ip or entry.ip, pod_cidr=obj.pod_cidr or entry.pod_cidr,
            labels={**entry.labels, **obj.labels}, rules_file=obj.rules_file or entry.rules_file)
    total = inp.node_count if inp.node_count is not None else len(decl) or DEFAULT_NODE_COUNT
    if len(decl) > total:
        _config_error(inp, report, ("nodes",), f"spec.nodes is {total} but {len(decl)} "
                      "nodes are declared", rests_on=("nodes",))
    i = 0
    while len(decl) < total:
        name = names.node_name(inp.config.name, i)
        i += 1
        if name not in index:
            index[name] = len(decl)
            decl.append(NodeIn(name, None, None, {}, None))  # type: ignore[arg-type]
    return decl


def _node_error(inp: Inputs, report: Report, n: NodeIn, path: Path, message: str,
                rests_on: tuple[str, ...]) -> None:
    if not sure(inp.config_unsure, *rests_on):
        return
    if n.f is not None:
        n.f.error(path, message)
    else:
        _config_error(inp, report, ("nodes",), message)


def place_nodes(inp: Inputs, report: Report) -> list[Node]:
    cfg = inp.config
    decl = _declared_nodes(inp, report)
    vnet, gw = cfg.vnet_subnet, cfg.gateway_ip
    taken: dict[IPv4Address, str] = {}
    for n in decl:
        if n.ip is None:
            continue
        msg = None
        if n.ip not in vnet:
            msg = f"node IP {n.ip} is outside vnetSubnet {vnet}"
        elif n.ip in (vnet.network_address, vnet.broadcast_address):
            msg = f"node IP {n.ip} is the network or broadcast address of vnetSubnet {vnet}"
        elif n.ip == gw:
            msg = f"node IP {n.ip} is the vnet gateway address"
        elif n.ip in taken:
            msg = f"node IP {n.ip} is already used by node {taken[n.ip]}"
        if msg:
            _node_error(inp, report, n, n.ip_path, msg, ("vnetSubnet",))
            n.ip = None
        else:
            taken[n.ip] = n.name
    cursor = int(vnet.network_address) + AZURE_RESERVED
    for n in decl:
        while n.ip is None:
            if cursor >= int(vnet.broadcast_address):
                _config_error(inp, report, ("vnetSubnet",), f"vnetSubnet {vnet} has no free "
                              f"address for node {n.name}", rests_on=("vnetSubnet", "nodes"))
                return []
            addr = IPv4Address(cursor)
            cursor += 1
            if addr not in taken:
                n.ip, taken[addr] = addr, n.name
    if cfg.network_plugin == "kubenet":
        if not _pod_cidrs(inp, report, decl):
            return []
    else:
        for n in decl:
            if n.pod_cidr is not None:
                if sure(inp.config_unsure, "networkPlugin"):
                    n.f.warn(n.cidr_path, "podCIDR is ignored with networkPlugin azure")
                n.pod_cidr = None
        needed = max(int(ip) for ip in taken) + 1 + len(decl) * cfg.max_pods_per_node
        if needed > int(vnet.broadcast_address):
            _config_error(inp, report, ("vnetSubnet",), f"vnetSubnet {vnet} is too small for "
                          f"{len(decl)} nodes with maxPods {cfg.max_pods_per_node} each",
                          rests_on=("vnetSubnet", "maxPods", "nodes", "networkPlugin"))
            return []
    base = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    return [Node(n.name, n.ip, n.pod_cidr,
                 {**base, "kubernetes.io/hostname": n.name, **n.labels},
                 n.f.obj.source if n.f is not None else cfg.source, rules_file=n.rules_file)
            for n in decl]


def _pod_cidrs(inp: Inputs, report: Report, decl: list[NodeIn]) -> bool:
    cfg = inp.config
    room = 2 ** (cfg.node_pod_prefix - cfg.pod_cidr.prefixlen)
    if room < len(decl):
        _config_error(inp, report, ("podCIDR",), f"podCIDR {cfg.pod_cidr} has room for {room} "
                      f"node pod ranges of /{cfg.node_pod_prefix}, but the cluster has "
                      f"{len(decl)} nodes", rests_on=POD_RANGE + ("nodes",))
        return False
    taken: list[tuple[IPv4Network, str]] = []
    for n in decl:
        if n.pod_cidr is None:
            continue
        msg = None
        other = next((name for net, name in taken if net.overlaps(n.pod_cidr)), None)
        if not n.pod_cidr.subnet_of(cfg.pod_cidr):
            msg = f"node pod CIDR {n.pod_cidr} is outside podCIDR {cfg.pod_cidr}"
        elif n.pod_cidr.prefixlen > 30:
            msg = f"node pod CIDR {n.pod_cidr} is too small (at most /30)"
        elif other:
            msg = f"node pod CIDR {n.pod_cidr} overlaps the pod CIDR of node {other}"
        if msg:
            _node_error(inp, report, n, n.cidr_path, msg, POD_RANGE)
            n.pod_cidr = None
        else:
            taken.append((n.pod_cidr, n.name))
    candidates = cfg.pod_cidr.subnets(new_prefix=cfg.node_pod_prefix)
    for n in decl:
        while n.pod_cidr is None:
            sub = next(candidates, None)
            if sub is None:
                _config_error(inp, report, ("podCIDR",), f"podCIDR {cfg.pod_cidr} has no free "
                              f"/{cfg.node_pod_prefix} for node {n.name}",
                              rests_on=POD_RANGE + ("nodes",))
                return False
            if not any(net.overlaps(sub) for net, _ in taken):
                n.pod_cidr = sub
                taken.append((sub, n.name))
    return True


# --- cluster DNS ----------------------------------------------------------------------

CLUSTER_DNS_FILE = "<kdp:cluster-dns>"
CLUSTER_DNS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      containers:
      - name: coredns
        image: mcr.microsoft.com/oss/kubernetes/coredns:v1.11.1
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        - {{name: metrics, containerPort: 9153, protocol: TCP}}
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {dns_ip}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, targetPort: dns, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: dns-tcp, protocol: TCP}}
"""


def add_cluster_dns(inp: Inputs, pods: list[PodIn], nodes: list[Node], report: Report) -> None:
    """Every cluster has kube-system/kube-dns (at dnsServiceIP) and CoreDNS: when the
    input has no kube-dns service, add it, and a 2-replica `coredns` Deployment
    (k8s-app=kube-dns, 53/UDP dns, 53/TCP dns-tcp, 9153/TCP metrics) unless CoreDNS
    pods are there already. The CoreDNS pods go on different nodes (CoreDNS's
    anti-affinity), fewest pods first; they are placed after the input's pods."""
    if any((s.svc.namespace, s.svc.name) == ("kube-system", "kube-dns") for s in inp.services):
        return
    has_pods = any(p.namespace == "kube-system" and p.labels.get("k8s-app") == "kube-dns"
                   for p in pods) or any((d.namespace, d.name) == ("kube-system", "coredns")
                                         for d in inp.deployments)
    text = CLUSTER_DNS.format(dns_ip=inp.config.dns_service_ip)
    for obj in parse_text(CLUSTER_DNS_FILE, text, report):
        if obj.kind == "Service":
            inp.services.append(decode_service(obj, report))
        elif not has_pods:
            d = decode_deployment(obj, report)
            new = expand_deployments(Inputs(pods=list(pods), deployments=[d]))[len(pods):]
            load = {n.name: 0 for n in nodes}
            for p in pods:
                if p.node in load:
                    load[p.node] += 1
            used: set[str] = set()
            for p in new:
                room = [n.name for n in nodes if load[n.name] < inp.config.max_pods_per_node]
                apart = [n for n in room if n not in used] or room
                if not apart:
                    p.f.warn((), f"no node has room for pod {p.key}: it stays Pending")
                    continue
                p.node = min(apart, key=lambda n: (load[n], n))
                load[p.node] += 1
                used.add(p.node)
            pods.extend(new)


# --- pods -----------------------------------------------------------------------------

def _already_expanded(d: DeploymentIn, pods: list[PodIn]) -> list[PodIn]:
    """Pods of a `kubectl get` dump that belong to d (through their ReplicaSet)."""
    return [p for p in pods if p.namespace == d.namespace and p.owner_rs
            and p.owner_rs.rsplit("-", 1)[0] == d.name]


def expand_deployments(inp: Inputs) -> list[PodIn]:
    pods = list(inp.pods)
    existing = {p.key for p in pods}
    for d in inp.deployments:
        if dumped := _already_expanded(d, inp.pods):
            for p in dumped:
                p.owner = f"Deployment/{d.name}"
            continue
        template_hash = names.pod_template_hash(d.template)
        for i in range(d.replicas):
            attempt, name = 0, ""
            while not name or f"{d.namespace}/{name}" in existing:
                suffix = names.pod_suffix(d.namespace, d.name, i, attempt)
                name, attempt = names.generated_pod_name(d.name, template_hash, suffix), attempt + 1
            existing.add(f"{d.namespace}/{name}")
            pods.append(PodIn(d.namespace, name, {**d.labels, "pod-template-hash": template_hash},
                              d.spec, d.f, owner=f"Deployment/{d.name}",
                              uid=names.stable_uid(d.namespace, name)))
    return pods


def schedule(pods: list[PodIn], nodes: list[Node], cfg: ClusterConfig,
             unsure: frozenset[str] = frozenset()) -> None:
    """Pinned pods stay; the rest go to the matching node with fewest pods (ties: name)."""
    load = {n.name: 0 for n in nodes}
    order = sorted(pods, key=lambda p: (p.namespace, p.name))
    for p in order:
        if p.spec.node_name is None:
            continue
        if p.spec.node_name in load:
            p.node = p.spec.node_name
            load[p.node] += 1
        elif nodes and sure(unsure, "nodes"):
            p.spec.f.error(("nodeName",), f"node {p.spec.node_name!r} does not exist"
                           + did_you_mean(p.spec.node_name, [n.name for n in nodes]))
    by_name = sorted(nodes, key=lambda n: n.name)
    for p in order:
        if p.node is not None or p.spec.node_name is not None or not nodes:
            continue
        sel = p.spec.node_selector
        fits = [n for n in by_name if all(n.labels.get(k) == v for k, v in sel.items())]
        room = [n for n in fits if load[n.name] < cfg.max_pods_per_node]
        if not fits:
            if sure(unsure, "nodes"):
                p.spec.f.error(("nodeSelector",), f"no node has the labels {fmt_labels(sel)}")
        elif not room:
            if sure(unsure, "nodes", "maxPods"):
                p.spec.f.error((), f"no node has room for pod {p.key} (maxPods "
                               f"{cfg.max_pods_per_node})")
        else:
            best = min(room, key=lambda n: load[n.name])
            p.node = best.name
            load[best.name] += 1


def _check_pod_ip(ip: IPv4Address, node: Node, cfg: ClusterConfig,
                  node_ips: dict[IPv4Address, str]) -> str | None:
    if ip in node_ips:
        return f"pod IP {ip} conflicts with the IP of node {node_ips[ip]}"
    if node.pod_cidr is not None:
        net = node.pod_cidr
        if ip not in net:
            return f"pod IP {ip} is outside node {node.name}'s pod CIDR {net}"
        if ip == net.network_address + 1:
            return f"pod IP {ip} is the cbr0 gateway address of node {node.name}"
        if ip in (net.network_address, net.broadcast_address):
            return f"pod IP {ip} is the network or broadcast address of {net}"
        return None
    vnet = cfg.vnet_subnet
    if ip not in vnet:
        return f"pod IP {ip} is outside vnetSubnet {vnet}"
    if ip == cfg.gateway_ip:
        return f"pod IP {ip} is the vnet gateway address"
    if int(ip) - int(vnet.network_address) < AZURE_RESERVED or ip == vnet.broadcast_address:
        return f"pod IP {ip} is reserved in vnetSubnet {vnet}"
    return None


def _free_addresses(node: Node, index: int, first_pod_ip: int, cfg: ClusterConfig):
    if node.pod_cidr is not None:
        net = node.pod_cidr
        return range(int(net.network_address) + 2, int(net.broadcast_address))
    start = first_pod_ip + index * cfg.max_pods_per_node
    return range(start, start + cfg.max_pods_per_node)


def assign_pod_ips(pods: list[PodIn], nodes: list[Node], cfg: ClusterConfig,
                   unsure: frozenset[str] = frozenset()) -> None:
    """Explicit status.podIP first (checked), then the lowest free address per node."""
    by_name = {n.name: n for n in nodes}
    node_ips = {n.ip: n.name for n in nodes}
    used: dict[IPv4Address, str] = {}
    order = sorted((p for p in pods if p.node is not None), key=lambda p: (p.namespace, p.name))
    for p in order:
        node = by_name[p.node]
        if p.spec.host_network:
            if p.pod_ip is not None and p.pod_ip != node.ip and sure(unsure, "vnetSubnet", "nodes"):
                p.f.error(("status", "podIP"), f"a hostNetwork pod has its node's IP {node.ip}, "
                          f"not {p.pod_ip}")
            p.ip = node.ip
            continue
        if p.pod_ip is None:
            continue
        msg = _check_pod_ip(p.pod_ip, node, cfg, node_ips)
        if msg is None and p.pod_ip in used:
            msg = f"pod IP {p.pod_ip} is already used by pod {used[p.pod_ip]}"
        if msg:
            if sure(unsure, *POD_IP):
                p.f.error(("status", "podIP"), msg)
        else:
            p.ip, used[p.pod_ip] = p.pod_ip, p.key
    first_pod_ip = max(int(n.ip) for n in nodes) + 1 if nodes else 0
    free = {n.name: iter(_free_addresses(n, i, first_pod_ip, cfg)) for i, n in enumerate(nodes)}
    for p in order:
        if p.ip is not None or p.pod_ip is not None:
            continue
        node = by_name[p.node]
        for value in free[node.name]:
            if IPv4Address(value) not in used:
                p.ip = IPv4Address(value)
                used[p.ip] = p.key
                break
        else:
            where = node.pod_cidr or f"its block of {cfg.max_pods_per_node} addresses"
            if sure(unsure, *POD_IP):
                p.f.error((), f"node {node.name} has no free pod IP for pod {p.key} in {where}")


def _model_pod(p: PodIn) -> Pod:
    return Pod(p.namespace, p.name, p.node or "", p.ip, p.labels, p.spec.containers, p.ready,
               p.terminating, p.spec.host_network, p.owner, p.uid, p.spec.hostname,
               p.spec.subdomain, source=p.f.obj.source)


# --- services -------------------------------------------------------------------------

def allocate_cluster_ips(services: list[ServiceIn], cfg: ClusterConfig, report: Report,
                         unsure: frozenset[str] = frozenset()) -> None:
    net, dns = cfg.service_cidr, cfg.dns_service_ip
    used: dict[IPv4Address, str] = {}
    for s in services:
        ip, is_dns = s.svc.cluster_ip, (s.svc.namespace, s.svc.name) == ("kube-system", "kube-dns")
        if s.cluster_ip_mode != "explicit" or ip is None:
            continue
        msg = None
        if ip not in net:
            msg = f"clusterIP {ip} is outside serviceCIDR {net}"
        elif ip in (net.network_address, net.broadcast_address):
            msg = f"clusterIP {ip} is the network or broadcast address of serviceCIDR {net}"
        elif is_dns and ip != dns:
            msg = f"kube-system/kube-dns must have clusterIP dnsServiceIP {dns}, not {ip}"
        elif ip == dns and not is_dns:
            msg = f"clusterIP {ip} is dnsServiceIP, reserved for kube-system/kube-dns"
        elif ip in used:
            msg = f"clusterIP {ip} is already used by service {used[ip]}"
        if msg:
            if sure(unsure, "serviceCIDR", "dnsServiceIP"):
                s.f.error(s.cluster_ip_path, msg)
            s.svc.cluster_ip, s.cluster_ip_mode = None, "auto"
        else:
            used[ip] = s.svc.key
    cursor = int(net.network_address) + 1
    for s in services:
        if s.cluster_ip_mode != "auto":
            continue
        if (s.svc.namespace, s.svc.name) == ("kube-system", "kube-dns") and dns not in used:
            s.svc.cluster_ip, used[dns] = dns, s.svc.key
            continue
        while cursor < int(net.broadcast_address) and (
                IPv4Address(cursor) in used or IPv4Address(cursor) == dns):
            cursor += 1
        if cursor >= int(net.broadcast_address):
            if sure(unsure, "serviceCIDR", "dnsServiceIP"):
                s.f.error(s.cluster_ip_path, f"serviceCIDR {net} has no free address left")
            continue
        s.svc.cluster_ip = IPv4Address(cursor)
        used[s.svc.cluster_ip] = s.svc.key


def allocate_node_ports(services: list[ServiceIn], cfg: ClusterConfig,
                        unsure: frozenset[str] = frozenset()) -> None:
    lo, hi = cfg.node_port_range
    used: dict[tuple[int, str], str] = {}
    given = cfg.node_port_range != (30000, 32767)
    origin = ("the ClusterConfig's spec.nodePortRange" if given else
              "the default; a ClusterConfig's spec.nodePortRange changes it")

    def reserve(s: ServiceIn, path: Path, port: int, proto: str) -> bool:
        if not lo <= port <= hi:
            if sure(unsure, "nodePortRange"):
                s.f.error(path, f"{path[-1]} {port} is outside the cluster's node port range "
                          f"{lo}-{hi} ({origin})")
        elif (port, proto) in used:
            s.f.error(path, f"nodePort {port}/{proto} is already used by service "
                      f"{used[port, proto]}")
        else:
            used[port, proto] = s.svc.key
            return True
        return False

    for s in services:
        for idx, port in list(s.explicit_node_ports.items()):
            path = ("spec", "ports", s.port_index[idx], "nodePort")
            if not reserve(s, path, port, s.svc.ports[idx].protocol):
                del s.explicit_node_ports[idx]
        hc = s.svc.health_check_node_port
        wants_hc = s.svc.type == "LoadBalancer" and s.svc.external_traffic_policy == "Local"
        if hc is not None and not wants_hc:
            s.f.error(("spec", "healthCheckNodePort"), "healthCheckNodePort is only allowed for "
                      "LoadBalancer services with externalTrafficPolicy Local")
            s.svc.health_check_node_port = None
        elif hc is not None and not reserve(s, ("spec", "healthCheckNodePort"), hc, "TCP"):
            s.svc.health_check_node_port = None
    cursors: dict[str, int] = defaultdict(lambda: lo)

    def allocate(s: ServiceIn, path: Path, proto: str) -> int | None:
        while cursors[proto] <= hi and (cursors[proto], proto) in used:
            cursors[proto] += 1
        if cursors[proto] > hi:
            if sure(unsure, "nodePortRange"):
                s.f.error(path, f"the node port range {lo}-{hi} has no free {proto} port left")
            return None
        used[cursors[proto], proto] = s.svc.key
        return cursors[proto]

    for s in services:
        if s.allocate_node_ports or s.explicit_node_ports:
            for idx, sp in enumerate(s.svc.ports):
                port = s.explicit_node_ports.get(idx) or (
                    allocate(s, ("spec", "ports", s.port_index[idx], "nodePort"), sp.protocol)
                    if s.allocate_node_ports else None)
                s.svc.ports[idx] = dataclasses.replace(sp, node_port=port)
        if (s.svc.type == "LoadBalancer" and s.svc.external_traffic_policy == "Local"
                and s.svc.health_check_node_port is None):
            s.svc.health_check_node_port = allocate(s, ("spec", "healthCheckNodePort"), "TCP")


# --- endpoints ------------------------------------------------------------------------

def build_endpoints(services: list[ServiceIn], pods: list[PodIn], nodes: list[Node],
                    slices: list[SliceIn]) -> None:
    by_service: dict[tuple[str, str], list[SliceIn]] = defaultdict(list)
    for sl in slices:
        by_service[sl.namespace, sl.service].append(sl)
    for s in services:
        svc = s.svc
        given = by_service.get((svc.namespace, svc.name), [])
        modern = [sl for sl in given if not sl.legacy]
        if given:
            eps = _from_slices(s, modern or given, pods, nodes)
        elif svc.selector and svc.type != "ExternalName":
            eps = _from_selector(s, pods)
        else:
            eps = []
        unique = list(dict.fromkeys(eps))
        svc.endpoints = sorted(unique, key=lambda e: (e.port_name or "", e.protocol,
                                                      f"{e.ip}:{e.port}"))


def _from_slices(s: ServiceIn, slices: list[SliceIn], pods: list[PodIn],
                 nodes: list[Node]) -> list[Endpoint]:
    pod_by_key = {p.key: p for p in pods}
    pod_by_ip = {p.ip: p for p in pods if not p.spec.host_network}
    node_by_ip = {n.ip: n.name for n in nodes}
    out = []
    for sl in slices:
        for i, (pname, port, proto) in enumerate(sl.ports):
            sp = next((sp for sp in s.svc.ports if sp.name == pname and sp.protocol == proto),
                      None)
            if sp is None:
                sl.f.warn(("ports", i), f"port {pname or '(unnamed)'} {port}/{proto} matches no "
                          f"port of service {s.svc.key}; ignored")
                continue
            for ep in sl.endpoints:
                pod = pod_by_key.get(ep.pod) if ep.pod else pod_by_ip.get(ep.ip)
                node = ep.node or (pod.node if pod else node_by_ip.get(ep.ip))
                out.append(Endpoint(ep.ip, port, sp.name, proto, node, ep.ready, ep.serving,
                                    ep.terminating, ep.pod or (pod.key if pod else None),
                                    ep.hostname))
    return out


def _from_selector(s: ServiceIn, pods: list[PodIn]) -> list[Endpoint]:
    svc = s.svc
    sel = svc.selector or {}
    chosen = [p for p in pods if p.namespace == svc.namespace
              and all(p.labels.get(k) == v for k, v in sel.items())]
    if not chosen:
        s.f.warn(("spec", "selector"), f"selector {fmt_labels(sel)} matches no pods in "
                 f"namespace {svc.namespace}; the service has no endpoints")
    out = []
    for idx, sp in enumerate(svc.ports):
        found = False
        for p in chosen:
            if isinstance(sp.target_port, str):
                cp = next((cp for c in p.spec.containers for cp in c.ports
                           if cp.name == sp.target_port and cp.protocol == sp.protocol), None)
                if cp is None:
                    continue
                port = cp.port
            else:
                port = sp.target_port
            found = True
            if s.publish_not_ready:
                ready = serving = True
            else:
                ready, serving = p.ready, p.ready or (p.terminating and p.serving)
            hostname = p.spec.hostname if p.spec.subdomain == svc.name else None
            out.append(Endpoint(p.ip, port, sp.name, sp.protocol, p.node, ready, serving,
                                p.terminating, p.key, hostname))
        if chosen and not found:
            s.f.warn(("spec", "ports", s.port_index[idx], "targetPort"),
                     f"no pod selected by {fmt_labels(sel)} has a {sp.protocol} container port "
                     f"named {sp.target_port!r}; this port has no endpoints")
    return out
