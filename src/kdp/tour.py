# tour: `kdp demo`: builds the demo cluster (the AKS kubenet example) and walks
# a newcomer through its data plane, one traced flow at a time, optionally
# writing every device's capture and each trace's JSON to a directory.
from __future__ import annotations

import json
import os

from .emulator import Emulator
from .render import trace_text
from .topology import topology_text


def tour_flows(emu: Emulator) -> list[tuple[str, dict]]:
    """(title, trace kwargs) for the demo's stops, chosen from the live cluster."""
    c = emu.cluster
    client = c.pod("default", "client")
    nginx = [p for p in c.pods if p.labels.get("app") == "nginx"]
    same = next((p for p in nginx if p.node == client.node), None)
    other = next((p for p in nginx if p.node != client.node), None)
    far_node = next(n for n in c.nodes if n.name != client.node)
    svc_a = next(p for p in c.pods if p.labels.get("app") == "service-a")
    home = c.node(client.node)
    flows = []
    if same is not None:
        flows.append((f"same-node pod-to-pod: client -> {same.name} (one bridge, no routing, TTL unchanged)",
                      dict(src="pod/default/client", dst=f"pod/default/{same.name}", proto="tcp", dport=80)))
    if other is not None:
        flows.append((f"cross-node pod-to-pod: client ({client.node}) -> {other.name} ({other.node})",
                      dict(src="pod/default/client", dst=f"pod/default/{other.name}", proto="tcp", dport=80)))
    flows += [
        (f"node-to-pod: node {home.name} -> {svc_a.name} on {svc_a.node} (no NAT)",
         dict(src=f"node/{home.name}", dst=f"pod/backend/{svc_a.name}", proto="tcp", dport=8080)),
        (f"pod-to-node: client -> kubelet on {far_node.name}",
         dict(src="pod/default/client", dst=f"node/{far_node.name}", proto="tcp", dport=10250)),
        (f"intra-pod: {svc_a.name}'s app reaches its metrics sidecar over localhost",
         dict(src=f"pod/backend/{svc_a.name}", dst="127.0.0.1", proto="tcp", dport=9090)),
        ("ping across nodes: client -> service-a pod (ICMP echo)",
         dict(src="pod/default/client", dst=f"pod/backend/{svc_a.name}", proto="icmp")),
        ("closed port: client -> nginx UDP 9999 (ICMP port unreachable comes back)",
         dict(src="pod/default/client", dst=f"pod/default/{(other or same).name}", proto="udp", dport=9999)),
        ("off-cluster: client -> ext/93.184.216.34:443, masqueraded by the node (ip-masq-agent)",
         dict(src="pod/default/client", dst="ext/93.184.216.34", proto="tcp", dport=443)),
        ("ClusterIP: client -> svc/backend/service-a: kube-proxy's DNAT on the client's node, "
         "the reply from the service address",
         dict(src="pod/default/client", dst="svc/backend/service-a", proto="tcp")),
    ]
    np_svc = next((s for s in c.services if s.type == "NodePort"), None)
    if np_svc is not None:
        np_port = np_svc.ports[0].node_port
        flows.append((f"NodePort from outside: ext/198.51.100.20 -> node {far_node.name}:{np_port} "
                      f"({np_svc.name}, externalTrafficPolicy Cluster: masqueraded)",
                      dict(src="ext/198.51.100.20", dst=str(far_node.ip), proto="tcp", dport=np_port)))
    lb = next((s for s in c.services if s.type == "LoadBalancer" and s.load_balancer_ips), None)
    if lb is not None:
        flows.append((f"LoadBalancer {lb.load_balancer_ips[0]} ({lb.name}, externalTrafficPolicy "
                      f"{lb.external_traffic_policy}): the cloud LB picks a healthy node, the client IP is kept",
                      dict(src="ext/198.51.100.20", dst=str(lb.load_balancer_ips[0]), proto="tcp",
                           dport=lb.ports[0].port)))
    return flows


INGRESS_CLIENT = "ext/198.51.100.20"
INGRESS_URL = "http://shop.example.com/api/items"


def _ingress_stop(emu: Emulator, traces: dict, echo) -> None:
    """An HTTP request from outside through the ingress controller, as packets."""
    dep = emu.topology.ingress
    if dep is None or dep.lb_ip is None or not dep.iset.serves_host("shop.example.com"):
        return
    from .ingress.client import http_request
    echo(f"\n== Ingress: an outside client GETs {INGRESS_URL}: its connection reaches ingress-nginx "
         f"through the cloud LB ({dep.lb_ip}) and kube-proxy; the controller routes by host and path "
         "and opens its own connection from its pod to a backend pod IP")
    echo(f"   kdp http demo --from {INGRESS_CLIENT} --url {INGRESS_URL}")
    ex = http_request(emu, INGRESS_CLIENT, INGRESS_URL)
    for rec in ex.records:
        if rec.route is not None:
            echo(f"   ingress: {rec.route.why}")
        if rec.endpoint is not None:
            echo(f"   ingress: -> endpoint {rec.endpoint.ip}:{rec.endpoint.port} ({rec.endpoint.pod})")
    for c in ex.connections:
        first = c.segments[0] if c.segments else None
        path = " > ".join(first.path) if first else ""
        nat = f" [{first.nat}]" if first is not None and first.nat else ""
        echo(f"   {c.name} connection {c.local} -> {c.remote}: {len(c.segments)} segments; SYN path {path}{nat}")
        for i, seg in enumerate(c.segments, 1):
            echo(f"     {i:>2}. {seg.direction} [{seg.flags:<3}] {seg.length:>5} B  {seg.sent}"
                 + (f"  (arrived as {seg.received})" if seg.received else ""))
    if ex.response is not None:
        first_line = ex.response.body.decode("utf-8", errors="replace").splitlines()[:1]
        echo(f"   => {ex.response.status_line}: {first_line[0] if first_line else ''}")
    else:
        echo(f"   => no response: {ex.error}")
    traces["ingress"] = {"title": f"HTTP GET {INGRESS_URL} from {INGRESS_CLIENT} through the ingress "
                                  "controller", "exchange": ex.as_dict(hops=False)}


def run_tour(out_dir: str | None = None, seed: int = 0, echo=print,
             proxy_mode: str | None = None) -> int:
    from .k8s import demo_cluster
    cluster = demo_cluster()
    if proxy_mode is not None:
        cluster.config.kube_proxy.mode = proxy_mode
    emu = Emulator(cluster, seed=seed, capture=True)
    echo("kdp demo: the AKS kubenet example (service CIDR 10.2.0.0/24, DNS 10.2.0.10, "
         "docker bridge 172.17.0.1/16)\n")
    echo(topology_text(emu.topology))
    traces = {}
    for n, (title, kw) in enumerate(tour_flows(emu), 1):
        echo(f"\n== {n}. {title}")
        echo(f"   kdp trace demo --from {kw['src']} --to {kw['dst']} --proto {kw['proto']}"
             + (f" --dport {kw['dport']}" if kw.get("dport") else ""))
        out = emu.trace(**kw)
        echo(trace_text(out, "summary"))
        traces[f"{n:02d}"] = {"title": title, "trace": out.as_dict()}
    _ingress_stop(emu, traces, echo)
    echo("\n== DNS: client resolves service-a.backend like a real pod (search list, ndots:5), "
         "each query a UDP packet to kube-dns, DNATed to a CoreDNS pod")
    echo("   kdp resolve demo --from pod/default/client service-a.backend")
    from .dns.resolver import resolve
    res = resolve(emu, "pod/default/client", "service-a.backend")
    for q in res.queries:
        echo(f"   {q.summary()}")
    echo(f"   => {', '.join(str(x) for x in res.addresses) or res.status}")
    traces["dns"] = {"title": "DNS lookup of service-a.backend", "resolution": res.as_dict(hops=False)}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        files = emu.write_captures(os.path.join(out_dir, "pcap"))
        with open(os.path.join(out_dir, "traces.json"), "w") as f:
            json.dump(traces, f, indent=2)
        echo(f"\nwrote {len(files)} device captures to {out_dir}/pcap and traces to {out_dir}/traces.json")
    svc_a = next(p for p in emu.cluster.pods if p.labels.get("app") == "service-a")
    echo("\nnext steps:")
    echo(f"  kdp trace demo --from pod/default/client --to pod/backend/{svc_a.name} --dport 8080")
    echo("  kdp trace demo --from pod/default/client --to service-a.backend      # resolves the name first")
    echo("  kdp topology demo; kdp inspect demo pod/default/client; kdp rules demo --node "
         f"{emu.cluster.nodes[0].name}")
    echo("  (a trace shows the hops and the rules that decided; --detail full shows every rule walked)")
    return 0
