# oracle.build: mirror an Emulator's topology in real network namespaces. Every
# kdp Namespace becomes a netns `<prefix><short name>` holding devices with the
# same names, MACs, MTUs and addresses (veth pairs for kdp veth peers, real
# bridges for kdp bridges with the same ports, hairpin and promisc flags), the
# same routes, proxy_arp and ip_forward; the kdp underlay Segment becomes a
# bridge in `<prefix>ul` (one veth per attached device, static FDB entries and
# no unknown-unicast flooding: kdp's segment is a perfect switch). The catch-all
# `ext` namespace answers for every non-cluster address (`local 0.0.0.0/0 dev
# lo` in a rule-selected table, `throw` routes for the cluster ranges). With
# rules=True each kdp namespace's netfilter ruleset (kube-proxy's, kubelet's,
# ip-masq-agent's rules as kdp runs them) is loaded with iptables-restore, and in
# kube-proxy's nftables mode its `ip kube-proxy` table with `nft -f`.
# Sysctls that make the kernel comparable (documented in OracleSettings) are
# set before any device exists. Reads kdp's model; never changes it.
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from ..net.device import Bridge, Device
from ..net.tcpstate import TCP_RMEM
from . import netns as N

UL_BRIDGE = "ul"
CATCH_ALL_TABLE = 100


@dataclass
class OracleSettings:
    """Kernel knobs set in every oracle namespace, and why."""

    neigh_mcast_solicit: int = 1      # kdp sends exactly one ARP request (kernel default 3)
    neigh_retrans_ms: int = 100       # ...and gives up at once (kernel default 1000 ms per probe)
    proxy_delay: int = 0              # kernel delays proxy ARP replies up to 0.8 s by default
    icmp_unlimited: bool = True       # kdp does not rate-limit ICMP errors
    offloads_off: bool = True         # full checksums in captures; receivers verify them
    br_nf_call_iptables: int = 1      # kube-proxy requires it on nodes
    # net.ipv4.tcp_rmem: kdp models the kernel default (window scale 7); this machine may be tuned
    tcp_rmem: str | None = " ".join(str(v) for v in TCP_RMEM)

    def base_sysctls(self) -> dict[str, object]:
        s: dict[str, object] = {
            "net.ipv6.conf.all.disable_ipv6": 1,       # no RS/MLD/DAD frames
            "net.ipv6.conf.default.disable_ipv6": 1,
            # kernel defaults, written explicitly: a new netns inherits the host's IPv4 conf
            "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
            "net.ipv4.conf.all.arp_ignore": 0, "net.ipv4.conf.default.arp_ignore": 0,
            "net.ipv4.conf.all.arp_announce": 0, "net.ipv4.conf.default.arp_announce": 0,
            "net.ipv4.conf.all.arp_filter": 0, "net.ipv4.conf.default.arp_filter": 0,
            "net.ipv4.conf.all.proxy_arp": 0, "net.ipv4.conf.default.proxy_arp": 0,
            "net.ipv4.conf.all.accept_local": 0, "net.ipv4.conf.default.accept_local": 0,
            "net.ipv4.conf.all.send_redirects": 1, "net.ipv4.conf.default.send_redirects": 1,
            "net.ipv4.conf.all.arp_notify": 0, "net.ipv4.conf.default.arp_notify": 0,
            "net.ipv4.ip_forward": 0,
            # no IGMP reports for 224.0.0.x: a bridge with multicast snooping joins the
            # all-snoopers group 224.0.0.106 when it comes up and reports it (start-up noise)
            "net.ipv4.igmp_link_local_mcast_reports": 0,
            # no SYN-ACK retransmission (first after 1 s, when a scenario is long over): a
            # half-open connection whose RST never comes (a reply dropped as INVALID on an
            # asymmetric path) would otherwise leak its retransmits into later scenarios
            "net.ipv4.tcp_synack_retries": 0,
        }
        if self.tcp_rmem:
            s["net.ipv4.tcp_rmem"] = self.tcp_rmem
        if self.icmp_unlimited:
            s.update({"net.ipv4.icmp_ratelimit": 0, "net.ipv4.icmp_msgs_per_sec": 1000000,
                      "net.ipv4.icmp_msgs_burst": 1000000})
        return s

    def device_sysctls(self, dev: str) -> dict[str, object]:
        return {f"net.ipv4.neigh.{dev}.mcast_solicit": self.neigh_mcast_solicit,
                f"net.ipv4.neigh.{dev}.app_solicit": 0,
                f"net.ipv4.neigh.{dev}.retrans_time_ms": self.neigh_retrans_ms,
                f"net.ipv4.neigh.{dev}.proxy_delay": self.proxy_delay}

    def describe(self) -> list[str]:
        return [f"net.ipv4.neigh.DEV.mcast_solicit={self.neigh_mcast_solicit} "
                "(kernel default 3: kdp sends one ARP request)",
                f"net.ipv4.neigh.DEV.retrans_time_ms={self.neigh_retrans_ms} (kernel default 1000: fail fast)",
                f"net.ipv4.neigh.DEV.proxy_delay={self.proxy_delay} "
                "(kernel default: proxy ARP replies delayed by up to 80 jiffies at random)",
                "net.ipv4.icmp_ratelimit=0, icmp_msgs_per_sec/burst=1000000 (no ICMP rate limiting)",
                "IPv6 disabled in every namespace before any link exists",
                "offloads off on every device (tx/rx checksum, sg, tso, gso, gro): complete checksums",
                "rp_filter/arp_ignore/arp_announce/arp_filter/accept_local=0, send_redirects=1 (kernel defaults, "
                "set explicitly because a new netns inherits the host's IPv4 conf)",
                "net.ipv4.igmp_link_local_mcast_reports=0 (bridges report 224.0.0.106 when they come up)",
                "net.ipv4.tcp_synack_retries=0 (no SYN-ACK retransmits 1 s later, in another scenario's capture)",
                "underlay: a bridge with static FDB entries, learning and unknown-unicast flooding off",
                f"ext (catch-all): rule pref {CATCH_ALL_TABLE} -> table {CATCH_ALL_TABLE}: "
                "local 0.0.0.0/0 dev lo, throw for the cluster ranges; the outside addresses scenarios use are also /32 on lo "
                "(so the kernel can answer from them: RST, ICMP errors)"]


def short_name(kdp_name: str) -> str:
    kind, _, rest = kdp_name.partition("/")
    head = {"node": "n", "pod": "p"}.get(kind, kind)
    return head + ("_" + rest.replace("/", "_") if rest else "")


@dataclass
class RealCluster:
    """The real-namespace twin of one Emulator's topology."""

    emu: object
    prefix: str = field(default_factory=N.default_prefix)
    rules: bool = False
    settings: OracleSettings = field(default_factory=OracleSettings)
    registry: N.Registry = field(default_factory=lambda: N.REGISTRY)
    netns: dict[str, str] = field(default_factory=dict)       # kdp ns name -> netns name
    ul: str = ""
    ul_ports: dict[tuple[str, str], str] = field(default_factory=dict)   # (kdp ns, dev) -> ul port
    warnings: list[str] = field(default_factory=list)
    outside: set = field(default_factory=set)     # addresses added to the catch-all lo
    loaded_rules: dict = field(default_factory=dict)   # kdp ns -> iptables-save text loaded
    built: bool = False

    # --- lifecycle ------------------------------------------------------------
    def __enter__(self) -> "RealCluster":
        self.build()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def all_netns(self) -> list[str]:
        return list(self.netns.values()) + ([self.ul] if self.ul else [])

    def close(self) -> list[str]:
        left = self.registry.cleanup(self.all_netns())
        self.built = False
        return left

    @property
    def namespaces(self) -> dict:
        return self.emu.topology.namespaces

    def devices(self, include_lo: bool = False) -> list[tuple[str, str]]:
        """(kdp namespace, device) of every mirrored device."""
        return [(ns.name, d.name) for ns in self.namespaces.values() for d in ns.devices.values()
                if include_lo or d.kind != "loopback"]

    # --- build ------------------------------------------------------------------
    def build(self) -> None:
        self.registry.install()
        self.netns = {name: self.prefix + short_name(name) for name in self.namespaces}
        self.ul = self.prefix + UL_BRIDGE
        names = self.all_netns()
        self.registry.add(names)
        try:
            N.create_netns(names)
            base = self.settings.base_sysctls()
            for n in names:
                N.write_sysctls(n, base)
            self._create_devices()
            self._configure_devices()
            self._device_sysctls()
            self._routes()
            if self.rules:
                self._load_rules()
            self.wait_ready()
            problems = self.verify()
            if problems:
                raise N.NetnsError("the real topology does not mirror kdp's:\n  " + "\n  ".join(problems))
            self.built = True
        except BaseException:
            self.close()
            raise

    def _create_devices(self) -> None:
        batches: dict[str, list[str]] = {n: [] for n in self.all_netns()}
        batches[self.ul].append(f"link add {UL_BRIDGE} type bridge stp_state 0")
        created: set[int] = set()
        port_no = 0
        for ns in self.namespaces.values():
            me = self.netns[ns.name]
            for d in ns.devices.values():
                if d.kind == "loopback" or id(d) in created:
                    continue
                created.add(id(d))
                if isinstance(d, Bridge) or d.kind == "bridge":
                    batches[me].append(f"link add {d.name} address {d.mac} mtu {d.mtu} type bridge stp_state 0")
                elif d.peer is not None:
                    p = d.peer
                    created.add(id(p))
                    batches[me].append(
                        f"link add {d.name} address {d.mac} mtu {d.mtu} type veth peer name {p.name} "
                        f"address {p.mac} mtu {p.mtu} netns {self.netns[p.namespace.name]}")
                elif d.segment is not None:
                    port = f"u{port_no}"
                    port_no += 1
                    self.ul_ports[(ns.name, d.name)] = port
                    batches[me].append(f"link add {d.name} address {d.mac} mtu {d.mtu} type veth "
                                       f"peer name {port} mtu {d.mtu} netns {self.ul}")
                else:
                    self.warnings.append(f"{d.label}: device kind {d.kind} has no peer/segment; "
                                         "created as a dummy device")
                    batches[me].append(f"link add {d.name} address {d.mac} type dummy")
        self._run_batches(batches, "create devices")

    def _configure_devices(self) -> None:
        batches: dict[str, list[str]] = {n: [] for n in self.all_netns()}
        for ns in self.namespaces.values():
            me = batches[self.netns[ns.name]]
            for d in ns.devices.values():
                if d.master is not None:
                    me.append(f"link set {d.name} master {d.master.name}")
                    me.append(f"link set {d.name} type bridge_slave hairpin {'on' if d.hairpin else 'off'}")
            for d in ns.devices.values():
                if d.promisc:
                    me.append(f"link set {d.name} promisc on")
                if d.up:
                    me.append(f"link set {d.name} up")
                for a in d.addresses:
                    if d.kind == "loopback" and str(a) == "127.0.0.1/8":
                        continue
                    brd = " broadcast +" if a.network.prefixlen < 31 else ""
                    me.append(f"addr add {a}{brd} dev {d.name}")
        ul = batches[self.ul]
        for port in self.ul_ports.values():
            ul.append(f"link set {port} master {UL_BRIDGE}")
            ul.append(f"link set {port} type bridge_slave learning off flood off")
            ul.append(f"link set {port} up")
        ul.append(f"link set {UL_BRIDGE} up")
        self._run_batches(batches, "configure devices")
        fdb = [f"fdb add {self._dev(k).mac} dev {port} master static" for k, port in self.ul_ports.items()]
        r = subprocess.run(["bridge", "-n", self.ul, "-batch", "-"], input="\n".join(fdb) + "\n",
                           capture_output=True, text=True, timeout=N.IP_TIMEOUT)
        if r.returncode != 0:
            raise N.NetnsError(f"underlay FDB: {r.stderr.strip()}")

    def _dev(self, key: tuple[str, str]) -> Device:
        return self.namespaces[key[0]].devices[key[1]]

    def _device_sysctls(self) -> None:
        s = self.settings
        for ns in self.namespaces.values():
            me = self.netns[ns.name]
            vals: dict[str, object] = {}
            devs = [d for d in ns.devices.values() if d.kind != "loopback"]
            for d in devs:
                vals.update(s.device_sysctls(d.name))
                vals[f"net.ipv4.conf.{d.name}.proxy_arp"] = 1 if d.proxy_arp else 0
            vals["net.ipv4.ip_forward"] = 1 if ns.ip_forward else 0
            if any(isinstance(d, Bridge) for d in devs):
                nf = any(getattr(d, "nf_call_iptables", False) for d in devs if isinstance(d, Bridge))
                vals["net.bridge.bridge-nf-call-iptables"] = s.br_nf_call_iptables if nf else 0
            N.write_sysctls(me, vals)
            if s.offloads_off:
                self.warnings += N.offloads_off(me, [d.name for d in devs])
        ulvals = {"net.bridge.bridge-nf-call-iptables": 0, "net.bridge.bridge-nf-call-arptables": 0}
        for port in self.ul_ports.values():
            ulvals.update(s.device_sysctls(port))
        N.write_sysctls(self.ul, ulvals)
        if s.offloads_off:
            self.warnings += N.offloads_off(self.ul, list(self.ul_ports.values()) + [UL_BRIDGE])

    # --- routes -------------------------------------------------------------------
    @staticmethod
    def _is_connected(ns, r) -> bool:
        d = ns.devices.get(r.dev)
        return (d is not None and r.via is None and r.kind == "unicast" and r.metric == 0
                and any(a.network == r.dst and r.src == a.ip for a in d.addresses))

    def _routes(self) -> None:
        batches: dict[str, list[str]] = {n: [] for n in self.all_netns()}
        for ns in self.namespaces.values():
            me = batches[self.netns[ns.name]]
            for r in ns.routes:
                if self._is_connected(ns, r):
                    continue
                me.append("route add " + route_spec(r))
            if ns.catch_all:
                # every address is local (TPROXY style) except the cluster's ranges, which
                # `throw` back to the main table; a separate table, since throw routes in the
                # local table do not work while local and main are merged (no custom rules)
                me.append(f"rule add pref {CATCH_ALL_TABLE} lookup {CATCH_ALL_TABLE}")
                me.append(f"route add local 0.0.0.0/0 dev lo table {CATCH_ALL_TABLE}")
                for net in ns.local_exclude:
                    me.append(f"route add throw {net} table {CATCH_ALL_TABLE}")
        self._run_batches(batches, "routes")

    def _load_rules(self) -> None:
        """Each kdp namespace's netfilter ruleset, as iptables-save text, loaded
        into its twin with iptables-restore (the very rules kdp runs)."""
        for ns in self.namespaces.values():
            nf = getattr(ns, "netfilter", None)
            if nf is None:
                continue
            text = nf.ruleset.to_iptables_save()
            r = N.netns_exec(self.netns[ns.name], ["iptables-restore", "-w"], input=text)
            if r.returncode != 0:
                raise N.NetnsError(f"iptables-restore in {self.netns[ns.name]} ({ns.name}): {r.stderr.strip()}")
            nft = getattr(nf, "nft", None)
            if nft is not None:             # nftables mode: kube-proxy's table, with nft -f
                ruleset = nft.ruleset.render()
                r = N.netns_exec(self.netns[ns.name], ["nft", "-f", "-"], input=ruleset)
                if r.returncode != 0:
                    raise N.NetnsError(f"nft -f in {self.netns[ns.name]} ({ns.name}): {r.stderr.strip()}")
                text += ruleset
            self.loaded_rules[ns.name] = text

    def _run_batches(self, batches: dict[str, list[str]], what: str) -> None:
        procs = []
        for ns, lines in batches.items():
            if lines:
                procs.append((ns, subprocess.Popen(["ip", "-n", ns, "-batch", "-"], stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                   text=True)))
                procs[-1][1].stdin.write("\n".join(lines) + "\n")
                procs[-1][1].stdin.close()
        errors = []
        for ns, p in procs:
            try:
                p.wait(N.IP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                errors.append(f"{ns}: timed out")
                continue
            if p.returncode != 0:
                errors.append(f"{ns}: {p.stderr.read().strip()}")
        if errors:
            raise N.NetnsError(f"{what}: " + "; ".join(errors))

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Wait until every link with a peer has carrier (operstate UP) and every
        bridge port forwards: carrier changes reach bridges and qdiscs through
        the kernel's linkwatch, up to a second after `link set up`, and frames
        sent before are silently dropped."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            waiting = []
            for me in self.all_netns():
                for l in N.ip_json(me, "-d", "link", "show"):
                    if l["ifname"] == "lo" or "UP" not in l.get("flags", []):
                        continue
                    kind = l.get("linkinfo", {}).get("info_kind")
                    if kind == "bridge" and "NO-CARRIER" in l.get("flags", []):
                        continue                    # a bridge without ports (docker0)
                    state = l.get("linkinfo", {}).get("info_slave_data", {}).get("state")
                    if l.get("operstate") != "UP" or (state is not None and state != "forwarding"):
                        waiting.append(f"{me}:{l['ifname']} {l.get('operstate')} {state or ''}")
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise N.NetnsError("links not ready: " + ", ".join(waiting[:8]))
            time.sleep(0.05)

    def add_outside_addresses(self, ips) -> None:
        """Make outside addresses real local addresses of the catch-all namespace
        (a /32 on its lo), so its kernel answers from them with RSTs and ICMP
        errors too (a TPROXY-style local route alone only serves transparent sockets)."""
        for ns in self.namespaces.values():
            if not ns.catch_all:
                continue
            todo = sorted({ip for ip in ips if not any(ip in n for n in ns.local_exclude)} - self.outside)
            N.ip_batch(self.netns[ns.name], [f"addr add {ip}/32 dev lo" for ip in todo], "outside addresses")
            self.outside.update(todo)

    # --- state between scenarios -----------------------------------------------------
    def reset(self) -> None:
        """Forget what earlier scenarios taught the kernel: neighbour caches,
        learned FDB entries (static/permanent ones stay), conntrack, the
        `-m recent` lists (session affinity)."""
        batches: dict[str, list[str]] = {}
        for ns in self.namespaces.values():
            lines = ["neigh flush all"]
            lines += [f"link set {d.name} type bridge fdb_flush" for d in ns.devices.values()
                      if isinstance(d, Bridge)]
            batches[self.netns[ns.name]] = lines
        self._run_batches(batches, "reset")
        for name in self.loaded_rules:
            N.netns_exec(self.netns[name], ["conntrack", "-F"])
            N.flush_xt_recent(self.netns[name])

    # --- self check -------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Differences between the real namespaces and kdp's model (devices,
        MACs, masters, flags, addresses, routes); empty when they mirror."""
        problems = []
        for ns in self.namespaces.values():
            me = self.netns[ns.name]
            links = {l["ifname"]: l for l in N.ip_json(me, "-d", "link", "show")}
            addrs = {a["ifname"]: a for a in N.ip_json(me, "addr", "show")}
            for d in ns.devices.values():
                l = links.get(d.name)
                if l is None:
                    problems.append(f"{ns.name}: no device {d.name}")
                    continue
                if d.kind != "loopback" and l.get("address") != d.mac:
                    problems.append(f"{ns.name}:{d.name}: MAC {l.get('address')} != {d.mac}")
                if (l.get("master") or None) != (d.master.name if d.master else None):
                    problems.append(f"{ns.name}:{d.name}: master {l.get('master')} != "
                                    f"{d.master.name if d.master else None}")
                if l.get("mtu") != d.mtu:
                    problems.append(f"{ns.name}:{d.name}: mtu {l.get('mtu')} != {d.mtu}")
                if d.master is not None:
                    hp = l.get("linkinfo", {}).get("info_slave_data", {}).get("hairpin")
                    if hp is not None and bool(hp) != d.hairpin:
                        problems.append(f"{ns.name}:{d.name}: hairpin {hp} != {d.hairpin}")
                if d.promisc != ("PROMISC" in l.get("flags", [])):
                    problems.append(f"{ns.name}:{d.name}: promisc differs")
                have = sorted(f"{i['local']}/{i['prefixlen']}" for i in addrs.get(d.name, {}).get("addr_info", [])
                              if i.get("family") == "inet")
                want = sorted(str(a) for a in d.addresses)
                if ns.catch_all and d.kind == "loopback":
                    want = sorted(want + [f"{ip}/32" for ip in self.outside])
                if have != want:
                    problems.append(f"{ns.name}:{d.name}: addresses {have} != {want}")
            extra = set(links) - set(ns.devices)
            if extra:
                problems.append(f"{ns.name}: extra devices {sorted(extra)}")
            problems += self._verify_routes(ns, me)
        return problems

    def _verify_routes(self, ns, me: str) -> list[str]:
        have = set()
        for r in N.ip_json(me, "route", "show", "table", "main"):
            dst = "0.0.0.0/0" if r["dst"] == "default" else (r["dst"] if "/" in r["dst"] else r["dst"] + "/32")
            have.add((dst, r.get("gateway"), r.get("dev"), r.get("prefsrc"), r.get("metric", 0),
                      "linkdown" in r.get("flags", [])))
        want = set()
        for r in ns.routes:
            want.add((str(r.dst), str(r.via) if r.via else None, r.dev, str(r.src) if r.src else None,
                      r.metric, r.linkdown))
        out = []
        for x in sorted(want - have, key=str):
            out.append(f"{ns.name}: route missing in the kernel: {x}")
        for x in sorted(have - want, key=str):
            out.append(f"{ns.name}: extra kernel route: {x}")
        return out


def route_spec(r) -> str:
    head = "default" if r.dst.prefixlen == 0 else str(r.dst)
    if r.kind in ("blackhole", "unreachable", "prohibit"):
        return f"{r.kind} {head}"
    parts = [("local " if r.kind == "local" else "") + head]
    if r.via is not None:
        parts.append(f"via {r.via}")
    parts.append(f"dev {r.dev}")
    if r.src is not None:
        parts.append(f"src {r.src}")
    if r.scope != "universe" or r.kind == "local":
        parts.append(f"scope {r.scope}")
    if r.metric:
        parts.append(f"metric {r.metric}")
    if r.kind == "local":
        parts.append("table local")
    return " ".join(parts)
