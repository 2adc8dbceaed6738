# emulator: the public Python API. Load a cluster (or the demo), send frames
# at pods, nodes or the edge, trace a flow between named endpoints, feed pcap
# files, and read back outcomes, hops, per-device captures and tables.
from __future__ import annotations

import struct
from ipaddress import IPv4Address, ip_address

from . import assembly, wire
from .conntrack.keyed import keyed_hash
from .datapath import Datapath, Outcome
from .errors import UsageError
from .suggest import close_matches, did_you_mean
from .k8s.model import Cluster
from .wire import ICMP, SCTP, IPv4, Packet, TCP, UDP

PROTOS = {"tcp": wire.PROTO_TCP, "udp": wire.PROTO_UDP, "icmp": wire.PROTO_ICMP,
          "sctp": wire.PROTO_SCTP}
LINUX_SYN_OPTIONS = bytes.fromhex("020405b4" "0402080a") + b"\x00" * 8 + bytes.fromhex("01030307")


class Endpoint:
    """A resolved SRC/DST/ATTACH argument."""

    def __init__(self, spec: str, kind: str, ip: IPv4Address, ns=None, port=None, protocol=None,
                 service=None):
        self.spec, self.kind, self.ip, self.ns = spec, kind, ip, ns
        self.port, self.protocol = port, protocol
        self.service = service          # the Service of a svc/NS/NAME


class Emulator:
    def __init__(self, cluster: Cluster, seed: int = 0, capture: bool = True,
                 rules: dict[str, str] | None = None, trace: bool = True):
        """rules: node name (or "*" for every node) -> path of a real node's
        iptables-save dump, loaded instead of the rules kdp generates (as do the
        nodes' `rulesFile` in the ClusterConfig)."""
        self.cluster = cluster
        self.seed = seed
        self.topology = assembly.build(cluster, seed, rules=self._dumps(cluster, rules or {}))
        self.datapath = Datapath(self.topology.namespaces, seed=seed, capture=capture)
        self.datapath.set_tracing(trace)
        self._flows = 0

    @staticmethod
    def _dumps(cluster: Cluster, rules: dict[str, str]) -> dict[str, tuple[str, str]]:
        names = [n.name for n in cluster.nodes]
        wanted = {n.name: n.rules_file for n in cluster.nodes if n.rules_file}
        for node, path in rules.items():
            if node == "*":
                wanted.update({n: path for n in names})
            elif node not in names:
                raise UsageError(f"--rules {node}={path}: no such node"
                                 + (did_you_mean(node, names) or f" (nodes: {', '.join(names)})"))
            else:
                wanted[node] = path
        out = {}
        for node, path in wanted.items():
            try:
                with open(path) as f:
                    out[node] = (f.read(), path)
            except OSError as e:
                raise UsageError(f"{path}: cannot read rules for node {node}: {e.strerror}") from None
        return out

    @classmethod
    def demo(cls, seed: int = 0, **kw) -> "Emulator":
        from .k8s import demo_cluster
        return cls(demo_cluster(), seed=seed, **kw)

    @classmethod
    def load(cls, paths, seed: int = 0, **kw) -> "Emulator":
        from .k8s import load_cluster
        return cls(load_cluster(paths), seed=seed, **kw)

    # --- naming -----------------------------------------------------------
    def namespace(self, name: str):
        try:
            return self.topology.namespaces[name]
        except KeyError:
            raise UsageError(f"no network namespace {name!r}") from None

    def resolve(self, spec: str) -> Endpoint:
        c = self.cluster
        kind, _, rest = spec.partition("/")
        try:
            if kind == "pod":
                ns, _, name = rest.partition("/")
                pod = c.pod(ns, name)
                where = self.topology.node_ns[pod.node] if pod.host_network else self.topology.pod_ns[pod.key]
                return Endpoint(spec, "pod", pod.ip, where)
            if kind == "node":
                node = c.node(rest)
                return Endpoint(spec, "node", node.ip, self.topology.node_ns[node.name])
            if kind == "svc":
                ns, _, name = rest.partition("/")
                svc = c.service(ns, name)
                if svc.cluster_ip is None:
                    raise UsageError(f"{spec}: service has no cluster IP (headless or ExternalName)")
                first = next((p for p in svc.ports if p.protocol.lower() in PROTOS), None)
                return Endpoint(spec, "svc", svc.cluster_ip, None, first.port if first else None,
                                first.protocol.lower() if first else None, service=svc)
        except KeyError:
            raise UsageError(self._no_such(spec, kind, rest)) from None
        if kind == "ext":
            ip = self._ip(rest, spec)
            if any(ip in n for n in self.topology.namespaces["ext"].local_exclude):
                raise UsageError(f"{spec}: {ip} is inside the cluster's ranges, not an outside host")
            return Endpoint(spec, "ext", ip, self.topology.namespaces["ext"])
        if "/" in spec:
            raise UsageError(f"{spec}: expected pod/NS/NAME, node/NAME, svc/NS/NAME, ext/ADDR or an IPv4 address")
        return Endpoint(spec, "ip", self._ip(spec, spec))

    def _no_such(self, spec: str, kind: str, rest: str) -> str:
        """'no such pod' with what the cluster has that spec most likely meant:
        a close name in the same namespace, else the same name in another one,
        else what there is."""
        c = self.cluster
        if kind == "node":
            names = [n.name for n in c.nodes]
            found = close_matches(rest, names)
            hint = (did_you_mean(spec, [f"node/{n}" for n in found]) if found
                    else f" (nodes: {', '.join(names)})")
            return f"{spec}: no such node{hint}"
        ns, _, name = rest.partition("/")
        if not name:
            return f"{spec}: expected {kind}/NAMESPACE/NAME"
        objs = c.pods if kind == "pod" else c.services
        here = [o.name for o in objs if o.namespace == ns]
        found = [f"{kind}/{ns}/{n}" for n in close_matches(name, here)]
        if not found:
            found = [f"{kind}/{o.namespace}/{o.name}" for o in objs if o.name == name]
            found += [f"{kind}/{o.namespace}/{o.name}" for o in objs
                      if o.name in close_matches(name, [o.name for o in objs])][:3 - len(found)]
        hint = did_you_mean("", list(dict.fromkeys(found))) if found else ""
        if not hint:
            if ns not in c.namespaces:
                hint = f" (there is no namespace {ns!r}; namespaces: {', '.join(c.namespaces)})"
            elif here and len(here) <= 12:
                hint = f" (in namespace {ns}: {', '.join(here)})"
        what = {"pod": "pod", "svc": "Service"}[kind]
        return f"{spec}: no such {what} in the cluster{hint}"

    @staticmethod
    def _ip(text: str, spec: str) -> IPv4Address:
        try:
            ip = ip_address(text)
        except ValueError:
            raise UsageError(f"{spec}: {text!r} is not an IPv4 address") from None
        if ip.version != 4:
            raise UsageError(f"{spec}: only IPv4 is modelled")
        return ip

    def attach_device(self, spec: str):
        """The device a raw frame is transmitted on for --at SPEC."""
        ep = self.resolve(spec)
        if ep.ns is None:
            raise UsageError(f"{spec}: frames are attached at pod/, node/ or ext/ endpoints")
        return ep.ns.devices["eth0"]

    def link_macs(self, dev):
        """For frames captured without an Ethernet header (Linux cooked,
        `tcpdump -i any`) transmitted on dev: dst IPv4 (4 bytes) -> (next hop's
        MAC, dev's MAC), what dev's stack would put on the wire after its route
        lookup and ARP. The next hop is the device holding the route's gateway
        (or the destination) on dev's machine if one does, else anywhere; none:
        the broadcast address (the frame is flooded, as an unanswered guess)."""
        from .addr import mac_to_bytes
        ns = dev.namespace
        own = mac_to_bytes(dev.mac)
        spaces = sorted(self.topology.namespaces.values(), key=lambda n: (n.node != ns.node, n.name))

        def macs(dst: bytes) -> tuple[bytes, bytes]:
            ip = IPv4Address(dst)
            route = ns.routes.lookup(ip)
            hop = route.via if route is not None and route.via is not None else ip
            for other in spaces:
                if other is ns:
                    continue
                d = other.local_device_for(hop)
                if d is not None and d.kind != "loopback":
                    return mac_to_bytes(d.mac), own
            return b"\xff" * 6, own
        return macs

    # --- sending ----------------------------------------------------------
    def send(self, frame, at: str, time: float | None = None) -> Outcome:
        """Transmit a frame (Scapy packet, bytes or wire.Packet) on the `at`
        endpoint's eth0 exactly as it is. No socket stands behind a raw frame:
        answers reaching the sender get what the kernel gives them (a SYN-ACK
        is answered with RST, a UDP reply with ICMP port unreachable)."""
        dev = self.attach_device(at)
        pkt = frame if isinstance(frame, Packet) else wire.parse(bytes(frame))
        return self.datapath.inject(dev, pkt, self._now(time))

    def send_many(self, frames, at: str):
        dev = self.attach_device(at)
        for t, raw in frames:
            try:
                pkt = wire.parse(raw)
            except wire.MalformedFrame as e:
                yield None, str(e)
                continue
            yield self.datapath.inject(dev, pkt, self._now(t)), None

    def trace(self, src: str, dst: str, proto: str | None = None, sport: int | None = None,
              dport: int | None = None, time: float | None = None, ttl: int = 64,
              payload: bytes | None = None, flags: int | None = None) -> Outcome:
        """Send one packet from SRC's own stack to DST, as an app on SRC would.
        proto None: the protocol of a Service's first port (svc/NS/NAME), else tcp.
        dport None: to a Service, its first port of that protocol (an error
        naming its ports when it has none); otherwise 80."""
        s, d = self.resolve(src), self.resolve(dst)
        if s.ns is None:
            raise UsageError(f"{src}: a source must be pod/, node/ or ext/")
        if proto is None:
            proto = d.protocol if d.kind == "svc" and d.protocol else "tcp"
        if proto not in PROTOS:
            raise UsageError(f"--proto {proto}: expected tcp, udp, sctp or icmp")
        if dport is None and d.kind == "svc" and proto != "icmp":
            dport = self._service_port(d, proto)
        if dport is None:
            dport = 80
        self._flows += 1
        if sport is None:
            sport = 32768 + keyed_hash(self.seed, "sport", src, dst, self._flows, seed_as_key=False) % 28232
        ident = keyed_hash(self.seed, "ipid", src, dst, self._flows, seed_as_key=False) & 0xFFFF
        srcip = s.ip if s.kind == "ext" else self.datapath.route_source(s.ns, d.ip)
        if srcip is None:
            raise UsageError(f"{src} has no route to {d.ip}")
        pkt = self.build(srcip, d.ip, proto, sport, dport, ttl, ident, payload, flags, time)
        self._register_client(s.ns, pkt)
        return self.datapath.originate(s.ns, pkt, self._now(time))

    @staticmethod
    def _service_port(d: Endpoint, proto: str) -> int:
        """The first port of the Service d names with protocol proto."""
        svc = d.service
        port = next((p.port for p in svc.ports if p.protocol.lower() == proto), None)
        if port is None:
            have = ", ".join(f"{p.port}/{p.protocol}" + (f" ({p.name})" if p.name else "")
                             for p in svc.ports) or "none"
            raise UsageError(f"{d.spec}: Service {svc.namespace}/{svc.name} has no {proto.upper()} "
                             f"port (its ports: {have}); give --dport, or --proto of one of them")
        return port

    def build(self, src, dst, proto, sport, dport, ttl=64, ident=0, payload=None, flags=None,
              time=None) -> Packet:
        eth = wire.Ether("00:00:00:00:00:00", "00:00:00:00:00:00", wire.ETH_P_IP)
        if proto == "tcp":
            tsval = (keyed_hash(self.seed, "ts", str(src), seed_as_key=False)
                     + int(self._now(time) * 1000)) & 0xFFFFFFFF
            opts = LINUX_SYN_OPTIONS[:8] + struct.pack("!II", tsval, 0) + LINUX_SYN_OPTIONS[16:]
            seq = keyed_hash(self.seed, "isn", str(src), sport, str(dst), dport,
                             seed_as_key=False) & 0xFFFFFFFF
            l4 = TCP(sport, dport, seq, 0, flags if flags is not None else wire.SYN, 64240, 0, 0,
                     opts if flags in (None, wire.SYN) else b"", payload or b"")
            ip = IPv4(src, dst, wire.PROTO_TCP, ttl, ident, 2)
        elif proto == "udp":
            l4 = UDP(sport, dport, 0, payload if payload is not None else b"kdp probe\n")
            ip = IPv4(src, dst, wire.PROTO_UDP, ttl, ident, 2)
        elif proto == "sctp":           # an INIT, as connect() on an SCTP socket sends first
            tag = keyed_hash(self.seed, "sctp-tag", str(src), sport, str(dst), dport,
                             seed_as_key=False) & 0xFFFFFFFF or 1
            l4 = SCTP(sport, dport, 0, 0, wire.sctp_init(tag, tag ^ 0x5A5A5A5A))
            ip = IPv4(src, dst, wire.PROTO_SCTP, ttl, ident, 2)
        else:
            body = payload if payload is not None else bytes(range(0x10, 0x10 + 56))
            l4 = ICMP(wire.ICMP_ECHO, 0, 0, (sport << 16) | 1, body)
            ip = IPv4(src, dst, wire.PROTO_ICMP, ttl, ident, 2)
        return wire.finalize(Packet(eth, ip=ip, l4=l4))

    def _register_client(self, ns, pkt: Packet) -> None:
        if ns is None or ns.sockets is None or pkt.ip is None:
            return
        ip, l4 = pkt.ip, pkt.l4
        if isinstance(l4, TCP) and l4.flags & wire.SYN and not l4.flags & wire.ACK:
            ns.sockets.add_client("tcp", ip.src, l4.sport, ip.dst, l4.dport)
        elif isinstance(l4, UDP) and ("UDP", l4.sport) not in ns.sockets.listeners:
            ns.sockets.add_client("udp", ip.src, l4.sport, ip.dst, l4.dport)
        elif isinstance(l4, ICMP) and l4.type == wire.ICMP_ECHO:
            ns.sockets.add_client("icmp", ip.src, l4.ident, ip.dst, 0)
        elif isinstance(l4, SCTP) and l4.vtag == 0:        # the INIT's association, COOKIE_WAIT
            tag = int.from_bytes(l4.chunks[4:8], "big")
            ns.sockets.sctp[(ip.src, l4.sport, ip.dst, l4.dport)] = (0, tag, "COOKIE_WAIT")

    def _now(self, time: float | None) -> float:
        return self.datapath.now if time is None else float(time)

    # --- changing the cluster while it runs ---------------------------------
    def load_rules(self, node: str, text: str | None = None, source: str | None = None) -> None:
        """Replace a node's iptables rules, as iptables-restore would (conntrack,
        recent lists and counters of nothing else are kept): with text, an
        iptables-save dump; without, the rules kube-proxy writes for the cluster
        as it stands now (after changing its Services or endpoints). Cached
        flow decisions are forgotten (kdp.watch)."""
        from .k8s.kubeproxy import node_rules
        from .netfilter import parse_iptables_save
        try:
            ns = self.topology.node_ns[node]
        except KeyError:
            raise UsageError(f"no node {node!r}") from None
        from .k8s.cni import is_nft_dump, nft_engine
        nf = ns.netfilter
        if text is None and self.cluster.config.kube_proxy.mode == "nftables":
            from .k8s.kubeproxy_nft import node_ruleset
            text, source = node_ruleset(self.cluster, node), source or f"kube-proxy nftables rules of {node}"
        if text is None:
            text = node_rules(self.cluster, node)
            source = source or f"kube-proxy rules of {node}"
        if is_nft_dump(text):        # kube-proxy's nftables table; the iptables rules stay
            nf.attach_nft(nft_engine(text, source or f"rules for {node}", ns.name, nf.seed))
            return
        nf.load(parse_iptables_save(text, source=source or f"rules for {node}"))

    def run_pcap(self, path: str, at: str, out, *, json_lines: bool = True,
                 out_dir: str | None = None, fastpath: bool = True, events=None,
                 apps: bool = True, live: bool = False) -> dict:
        """Feed a capture as `kdp run` does, writing its lines to the binary stream
        out. at: an attachment point or "auto" (each frame at its sender's). events:
        {frame index: callable(emulator)} run just before that frame (rule or
        endpoint changes mid-stream). apps False: `--apps off`. live: live TCP
        replay (kdp.livetcp; `kdp run`'s default, raw injection here unless
        asked). Returns the summary counts."""
        from .runner import PcapRun
        run = PcapRun(self, at, out, json_lines=json_lines, out_dir=out_dir, fastpath=fastpath,
                      events=events, apps=apps, live=live)
        return run.run(path)

    # --- looking inside ---------------------------------------------------
    @property
    def captures(self) -> dict:
        return self.datapath.captures or {}

    def capture_file_name(self, ns_name: str, dev: str) -> str:
        kind, _, rest = ns_name.partition("/")
        if kind == "node":
            return f"{rest}__{dev}"
        if kind == "pod":
            pns, _, pname = rest.partition("/")
            return f"{pns}__{pname}__{dev}"
        return f"{ns_name}__{dev}"

    def write_captures(self, out_dir: str) -> list[str]:
        from .io import write_pcaps
        return write_pcaps(self.captures, out_dir, self.capture_file_name)

    def clear_captures(self) -> None:
        if self.datapath.captures is not None:
            self.datapath.captures.clear()

    def inspect(self, spec: str) -> dict:
        from .inspection import inspect_endpoint
        return inspect_endpoint(self, spec)
