# inspection: the `docker inspect`-like picture of one pod or node: the pause
# container owning the network namespace and the app containers sharing it,
# addresses, veth peer, routes, neighbours and listening sockets.
from __future__ import annotations

from .addr import stable_hex
from .errors import UsageError


def inspect_endpoint(emu, spec: str) -> dict:
    ep = emu.resolve(spec)
    if ep.ns is None:
        raise UsageError(f"{spec}: inspect takes pod/NS/NAME or node/NAME")
    ns = ep.ns
    devices = [{"name": d.name, "kind": d.kind, "mac": d.mac,
                "addresses": [str(a) for a in d.addresses],
                "peer": d.peer.label if d.peer is not None else None,
                "master": d.master.name if d.master is not None else None,
                "hairpin": d.hairpin if d.master is not None else None}
               for d in ns.devices.values()]
    out = {"namespace": ns.name, "kind": ns.kind, "node": ns.node, "ip_forward": ns.ip_forward,
           "devices": devices, "routes": ns.routes.dump(), "neighbours": ns.neigh.dump(),
           "listening": [{"port": l.port, "protocol": l.protocol, "owner": l.owner}
                         for l in (ns.sockets.listening() if ns.sockets else [])]}
    if ep.kind == "pod":
        pod = emu.cluster.pod(*spec.split("/", 2)[1:])
        uid = pod.uid or stable_hex(emu.cluster.config.name, pod.namespace, pod.name, length=32)
        sandbox = stable_hex("sandbox", pod.namespace, pod.name, length=64)
        hv = emu.topology.host_veth.get(pod.key)
        out["pod"] = {
            "namespace": pod.namespace, "name": pod.name, "ip": str(pod.ip), "ready": pod.ready,
            "host_network": pod.host_network,
            "pause_container": {"name": f"k8s_POD_{pod.name}_{pod.namespace}_{uid}_0",
                                "image": "mcr.microsoft.com/oss/kubernetes/pause:3.6",
                                "sandbox_id": sandbox,
                                "network_settings": {"SandboxKey": f"/var/run/netns/cni-{sandbox[:8]}",
                                                     "IPAddress": str(pod.ip),
                                                     "MacAddress": ns.devices["eth0"].mac}},
            "containers": [{"name": f"k8s_{c.name}_{pod.name}_{pod.namespace}_{uid}_0", "image": c.image,
                            "network_mode": f"container:{sandbox[:12]} (the pause container's namespace)",
                            "ports": [{"port": p.port, "protocol": p.protocol, "name": p.name}
                                      for p in c.ports]} for c in pod.containers],
            "host_veth": {"name": hv.name, "mac": hv.mac, "bridge": hv.master.name if hv.master else None}
            if hv is not None else None,
        }
    return out


def inspect_text(info: dict) -> str:
    lines = [f"network namespace {info['namespace']} on node {info['node']} "
             f"(ip_forward={int(info['ip_forward'])})"]
    pod = info.get("pod")
    if pod:
        pc = pod["pause_container"]
        lines.append(f"pause container {pc['name']} ({pc['image']}) owns the namespace "
                     f"{pc['network_settings']['SandboxKey']}")
        for c in pod["containers"]:
            ports = ", ".join(f"{p['port']}/{p['protocol']}" for p in c["ports"]) or "no ports"
            lines.append(f"  container {c['name']} ({c['image'] or '-'}): {c['network_mode']}; {ports}")
        if pod["host_veth"]:
            hv = pod["host_veth"]
            lines.append(f"veth pair: eth0 <-> {hv['name']} ({hv['mac']}) on bridge {hv['bridge']}")
    lines.append("devices:")
    for d in info["devices"]:
        extra = f" peer {d['peer']}" if d["peer"] else ""
        extra += f" master {d['master']}" if d["master"] else ""
        lines.append(f"  {d['name']:<14} {d['kind']:<8} {d['mac']} {' '.join(d['addresses'])}{extra}")
    lines.append("routes:")
    lines += [f"  {r}" for r in info["routes"]]
    if info["neighbours"]:
        lines.append("neighbours:")
        lines += [f"  {n}" for n in info["neighbours"]]
    lines.append("listening:")
    lines += [f"  {s['port']}/{s['protocol']} ({s['owner']})" for s in info["listening"]] or ["  none"]
    return "\n".join(lines)
