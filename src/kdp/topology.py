# topology: the cluster as built in kernel objects, described for people and
# scripts: the `kdp topology --json` document of the CLI contract and an SVG
# picture of nodes, bridges, veths and pods.
from __future__ import annotations

from html import escape

from .k8s.cni import Topology, gateway_of


def topology_json(topo: Topology) -> dict:
    c = topo.cluster
    cfg = c.config
    nodes = []
    for node in c.nodes:
        ns = topo.node_ns[node.name]
        br = ns.devices.get("cbr0")
        nodes.append({
            "name": node.name, "ip": str(node.ip), "mac": ns.devices["eth0"].mac,
            "pod_cidr": str(node.pod_cidr) if node.pod_cidr else None,
            "bridge": None if br is None else {
                "name": br.name, "ip": str(br.addresses[0].ip), "mac": br.mac,
                "hairpin_mode": cfg.hairpin_mode},
            "routes": [{"dst": "default" if r.dst.prefixlen == 0 else str(r.dst),
                        "via": str(r.via) if r.via else None, "dev": r.dev} for r in ns.routes],
        })
    pods = []
    for pod in c.pods:
        ns = topo.node_ns[pod.node] if pod.host_network else topo.pod_ns[pod.key]
        hv = topo.host_veth.get(pod.key)
        pods.append({
            "namespace": pod.namespace, "name": pod.name, "node": pod.node, "ip": str(pod.ip),
            "mac": ns.devices["eth0"].mac, "gateway": None if pod.host_network else str(gateway_of(topo, pod)),
            "host_network": pod.host_network,
            "host_veth": {"name": hv.name, "mac": hv.mac} if hv is not None else None,
            "containers": [{"name": ct.name, "ports": [{"port": p.port, "protocol": p.protocol}
                                                       for p in ct.ports]} for ct in pod.containers],
        })
    services = []
    for s in c.services:
        services.append({
            "namespace": s.namespace, "name": s.name, "type": s.type,
            "cluster_ip": str(s.cluster_ip) if s.cluster_ip else None,
            "external_ips": [str(i) for i in s.external_ips],
            "load_balancer_ips": [str(i) for i in s.load_balancer_ips],
            "ports": [{"name": p.name, "port": p.port, "target_port": p.target_port,
                       "node_port": p.node_port, "protocol": p.protocol} for p in s.ports],
            "endpoints": [{"ip": str(e.ip), "port": e.port, "node": e.node, "ready": e.ready}
                          for e in s.endpoints],
            "external_traffic_policy": s.external_traffic_policy,
            "internal_traffic_policy": s.internal_traffic_policy,
            "session_affinity": s.session_affinity,
            "session_affinity_timeout": s.affinity_timeout if s.session_affinity == "ClientIP" else None,
            "load_balancer_source_ranges": [str(n) for n in s.load_balancer_source_ranges],
            "health_check_node_port": s.health_check_node_port,
            "external_name": s.external_name,
        })
    return {"cluster": {"name": cfg.name, "network_plugin": cfg.network_plugin,
                        "pod_cidr": str(cfg.pod_cidr), "service_cidr": str(cfg.service_cidr),
                        "dns_service_ip": str(cfg.dns_service_ip), "cluster_domain": cfg.cluster_domain},
            "nodes": nodes, "pods": pods, "services": services, "ingresses": ingresses_json(topo)}


def _ingresses(topo: Topology) -> list[tuple]:
    """(Ingress, why it is not served or None) for every Ingress of the cluster."""
    dep = getattr(topo, "ingress", None)
    if dep is None:
        return []
    ignored = dict(dep.iset.ignored)
    ours = {i.key for i in dep.iset.ingresses}
    out = []
    for ing in dep.iset.every:
        if ing.key in ours:
            out.append((ing, None if dep.controllers else "no ingress-nginx controller pod"))
        else:
            out.append((ing, ignored.get(ing.key, "not a class of ingress-nginx")))
    return out


def ingresses_json(topo: Topology) -> list[dict]:
    out = []
    for ing, why in _ingresses(topo):
        out.append({
            "namespace": ing.namespace, "name": ing.name,
            "class": ing.class_name or ing.annotation_class, "served": why is None, "not_served_why": why,
            "default_backend": ing.default_backend.as_dict() if ing.default_backend else None,
            "rules": [{"host": r.host, "paths": [{"path": p.path or "/", "path_type": p.path_type,
                                                   "backend": p.backend.as_dict()} for p in r.paths]}
                      for r in ing.rules]})
    return out


def _service_text(s) -> list[str]:
    """A Service: its addresses and ports, then what else decides its traffic."""
    ports = ",".join(f"{p.port}/{p.protocol}" + (f"(node {p.node_port})" if p.node_port else "")
                     for p in s.ports)
    if s.type == "ExternalName":
        return [f"svc {s.namespace}/{s.name} ExternalName -> {s.external_name} (a DNS CNAME; no "
                "cluster IP, no proxying)" + (f" {ports}" if ports else "")]
    eps = ", ".join(f"{e.ip}:{e.port}/{e.protocol}" + ("" if e.ready else " (not ready)")
                    for e in s.endpoints) or "no endpoints"
    out = [f"svc {s.namespace}/{s.name} {s.type} {s.cluster_ip or 'None (headless)'} {ports} -> {eps}"]
    extra = []
    if s.load_balancer_ips:
        extra.append("load balancer " + ", ".join(str(i) for i in s.load_balancer_ips))
    elif s.type == "LoadBalancer":
        extra.append("load balancer: no address")
    if s.external_ips:
        extra.append("externalIPs " + ", ".join(str(i) for i in s.external_ips))
    if s.type in ("NodePort", "LoadBalancer"):
        extra.append(f"externalTrafficPolicy {s.external_traffic_policy}"
                     + (f" (health check node port {s.health_check_node_port})"
                        if s.health_check_node_port else ""))
    if s.internal_traffic_policy != "Cluster":
        extra.append(f"internalTrafficPolicy {s.internal_traffic_policy}")
    if s.session_affinity == "ClientIP":
        extra.append(f"sessionAffinity ClientIP ({s.affinity_timeout}s)")
    if s.load_balancer_source_ranges:
        extra.append("loadBalancerSourceRanges " + ", ".join(str(n) for n in s.load_balancer_source_ranges))
    if extra:
        out.append("    " + "; ".join(extra))
    return out


def _ingress_text(topo: Topology) -> list[str]:
    out = []
    for ing, why in _ingresses(topo):
        cls = ing.class_name or ing.annotation_class or "default class"
        out.append(f"ingress {ing.key} (class {cls})" + (f": NOT SERVED: {why}" if why else ""))
        if ing.default_backend is not None:
            out.append(f"    default -> {ing.default_backend.describe()}")
        for r in ing.rules:
            for p in r.paths:
                out.append(f"    {r.host or '*'}{p.path or '/'} ({p.path_type}) -> {p.backend.describe()}")
    return out


def topology_text(topo: Topology) -> str:
    c = topo.cluster
    cfg = c.config
    out = [f"cluster {cfg.name}: {cfg.network_plugin}, pods {cfg.pod_cidr}, services {cfg.service_cidr}, "
           f"DNS {cfg.dns_service_ip}, vnet {cfg.vnet_subnet}, docker0 {cfg.docker_bridge}",
           f"edge router {cfg.gateway_ip} (underlay gateway) -- ext (off-cluster hosts)"]
    for node in c.nodes:
        ns = topo.node_ns[node.name]
        br = ns.devices.get("cbr0")
        out.append(f"node {node.name}  eth0 {node.ip} {ns.devices['eth0'].mac}"
                   + (f"  cbr0 {br.addresses[0]} {br.mac}" if br else ""))
        out += [f"  route {r}" for r in ns.routes if r.kind == "unicast"]
        for pod in c.pods:
            if pod.node != node.name:
                continue
            if pod.host_network:
                out.append(f"  {pod.namespace}/{pod.name}  hostNetwork {pod.ip}")
                continue
            hv = topo.host_veth[pod.key]
            pns = topo.pod_ns[pod.key]
            ports = ",".join(f"{p.port}/{p.protocol}" for p in pod.ports()) or "-"
            out.append(f"  {hv.name} <-> {pod.namespace}/{pod.name} eth0 {pod.ip} {pns.devices['eth0'].mac}"
                       f"  ports {ports}")
    for s in c.services:
        out += _service_text(s)
    out += _ingress_text(topo)
    return "\n".join(out)


def topology_svg(topo: Topology) -> str:
    """Nodes side by side on the underlay; in each, cbr0 with its veths and pods."""
    c = topo.cluster
    col_w, pod_h, top = 300, 64, 110
    per_node = {n.name: [p for p in c.pods if p.node == n.name] for n in c.nodes}
    tallest = max([len(v) for v in per_node.values()] + [1])
    width = max(1, len(c.nodes)) * (col_w + 20) + 20
    height = top + 120 + tallest * pod_h + 80
    e = []
    e.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="monospace" font-size="11">')
    e.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    e.append(f'<text x="20" y="22" font-size="14" font-weight="bold">{escape(c.config.name)} '
             f'({escape(c.config.network_plugin)}) pods {c.config.pod_cidr} services {c.config.service_cidr}</text>')
    uy = 60
    e.append(f'<line x1="20" y1="{uy}" x2="{width - 20}" y2="{uy}" stroke="#555" stroke-width="4"/>')
    e.append(f'<text x="24" y="{uy - 8}">underlay {c.config.vnet_subnet} — edge router '
             f'{c.config.gateway_ip} to the outside</text>')
    for i, node in enumerate(c.nodes):
        x = 20 + i * (col_w + 20)
        ns = topo.node_ns[node.name]
        e.append(f'<line x1="{x + col_w // 2}" y1="{uy}" x2="{x + col_w // 2}" y2="{top - 20}" stroke="#555" stroke-width="2"/>')
        e.append(f'<rect x="{x}" y="{top - 20}" width="{col_w}" height="{height - top - 10}" '
                 f'fill="#eef3fb" stroke="#35a" rx="6"/>')
        e.append(f'<text x="{x + 8}" y="{top - 4}" font-weight="bold">node {escape(node.name)}</text>')
        e.append(f'<text x="{x + 8}" y="{top + 12}">eth0 {node.ip} {ns.devices["eth0"].mac}</text>')
        br = ns.devices.get("cbr0")
        by = top + 34
        if br is not None:
            e.append(f'<rect x="{x + 10}" y="{by}" width="{col_w - 20}" height="26" fill="#fde9c9" stroke="#b70" rx="4"/>')
            e.append(f'<text x="{x + 16}" y="{by + 17}">cbr0 {br.addresses[0]} hairpin {c.config.hairpin_mode}</text>')
        for j, pod in enumerate(per_node[node.name]):
            py = by + 50 + j * pod_h
            if pod.host_network:
                label, sub = f"{pod.namespace}/{pod.name}", f"hostNetwork {pod.ip}"
            else:
                hv = topo.host_veth[pod.key]
                label, sub = f"{pod.namespace}/{pod.name}", f"eth0 {pod.ip}  <-> {hv.name}"
                e.append(f'<line x1="{x + 30}" y1="{by + 26}" x2="{x + 30}" y2="{py}" stroke="#b70"/>')
            e.append(f'<rect x="{x + 20}" y="{py}" width="{col_w - 40}" height="{pod_h - 14}" fill="#e3f4e1" stroke="#393" rx="4"/>')
            e.append(f'<text x="{x + 26}" y="{py + 16}">{escape(label[:40])}</text>')
            e.append(f'<text x="{x + 26}" y="{py + 32}">{escape(sub)}</text>')
            ports = ", ".join(f"{p.port}/{p.protocol}" for p in pod.ports())
            e.append(f'<text x="{x + 26}" y="{py + 46}" fill="#555">{escape(ports[:44])}</text>')
    e.append("</svg>")
    return "\n".join(e)
