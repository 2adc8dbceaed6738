# k8s.kubeproxy_nft: kube-proxy 1.33 nftables-mode rules for one node — the `nft -f`
# transaction its first full sync writes (pkg/proxy/nftables/proxier.go, setupNFTables and
# syncProxyRules), and the `nft list ruleset` text the node shows afterwards (the
# transaction applied by kdp.netfilter.nft and printed as nft prints it). Reads the resolved
# model (k8s.model) and reuses the iptables generator's service/endpoint logic
# (k8s.kubeproxy: ports, traffic policies, CategorizeEndpoints); never touches the host.
#
# Layout written: the latest 1.33 patch releases' base chains (kubernetes#132456, back-ported
# as #133969): filter-prerouting-pre-dnat and filter-output-pre-dnat at priority dstnat-10
# (-110) jumping to firewall-check; filter-input/-forward/-output at priority filter (0)
# jumping to the no-endpoint checks and cluster-ips-check; nat-prerouting/-output at dstnat
# and nat-postrouting at srcnat; no filter-output-post-dnat.
# Determinism: kube-proxy walks services in Go map order; we walk them sorted by service
# port name and protocol, as the iptables generator does. Objects appear in the listing in
# creation order (nft prints sets, then chains), elements sorted the way nft sorts them.
from __future__ import annotations

import base64
import hashlib
from ipaddress import IPv4Address, IPv4Network

from kdp.errors import UsageError
from kdp.k8s.kubeproxy import _Port, _service_ports, categorize, ep_str, node_local_addresses
from kdp.k8s.kubeproxy_chains import MASQ_MARK
from kdp.k8s.model import Cluster, Endpoint, Node

TABLE = "kube-proxy"
FAMILY = "ip"
NAME_LENGTH_MAX = 256 - 16        # knftables.NameLengthMax minus the longest chain prefix
REJECT_CHAIN = "reject-chain"
MARK_MASQ = "mark-for-masquerade"
DYNAMIC_FLAGS = "dynamic,timeout"

# (name, type, hook, priority) in the order kube-proxy creates them
BASE_CHAINS = (
    ("filter-prerouting-pre-dnat", "filter", "prerouting", "-110"),
    ("filter-output-pre-dnat", "filter", "output", "-110"),
    ("filter-input", "filter", "input", "0"),
    ("filter-forward", "filter", "forward", "0"),
    ("filter-output", "filter", "output", "0"),
    ("nat-prerouting", "nat", "prerouting", "-100"),
    ("nat-output", "nat", "output", "-100"),
    ("nat-postrouting", "nat", "postrouting", "100"),
)
# (regular chain, base chain it is jumped to from, match before the jump), in order
JUMP_CHAINS = (
    ("nodeport-endpoints-check", "filter-input", "ct state new"),
    ("service-endpoints-check", "filter-input", "ct state new"),
    ("service-endpoints-check", "filter-forward", "ct state new"),
    ("service-endpoints-check", "filter-output", "ct state new"),
    ("firewall-check", "filter-prerouting-pre-dnat", "ct state new"),
    ("firewall-check", "filter-output-pre-dnat", "ct state new"),
    ("services", "nat-output", ""),
    ("services", "nat-prerouting", ""),
    ("masquerading", "nat-postrouting", ""),
    ("cluster-ips-check", "filter-forward", "ct state new"),
    ("cluster-ips-check", "filter-output", "ct state new"),
)
SERVICE_KEY = "ipv4_addr . inet_proto . inet_service"
NODEPORT_KEY = "inet_proto . inet_service"


def hash_and_truncate(name: str) -> str:
    """kube-proxy's hashAndTruncate: 8 base32 chars of SHA-256(name), "-", the name,
    cut to fit nft's name length with "..."."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    name = f"{digest[:8]}-{name}"
    return name[:NAME_LENGTH_MAX - 3] + "..." if len(name) > NAME_LENGTH_MAX else name


def port_base(p: _Port) -> str:
    """``HASH-namespace/name/protocol/portname`` (servicePortChainNameBase)."""
    return hash_and_truncate(f"{p.svc.namespace}/{p.svc.name}/{p.proto}/{p.port.name or ''}")


def endpoint_base(p: _Port, ep: Endpoint) -> str:
    """``HASH-namespace/name/protocol/portname__IP/port`` (servicePortEndpointChainNameBase)."""
    return hash_and_truncate(f"{p.svc.namespace}/{p.svc.name}/{p.proto}/{p.port.name or ''}"
                             f"__{ep.ip}/{ep.port}")


def _q(text: str) -> str:
    return '"' + text + '"'


class _Tx:
    """A knftables transaction: commands in order, each on its own line."""

    def __init__(self):
        self.lines: list[str] = []
        self.chains: set[str] = set()

    def add(self, what: str, rest: str):
        self.lines.append(f"add {what} {FAMILY} {TABLE} {rest}".rstrip())

    def flush(self, what: str, name: str):
        self.lines.append(f"flush {what} {FAMILY} {TABLE} {name}")

    def delete(self, what: str, name: str):
        self.lines.append(f"delete {what} {FAMILY} {TABLE} {name}")

    def ensure_chain(self, name: str):
        if name not in self.chains:
            self.chains.add(name)
            self.add("chain", name)
            self.flush("chain", name)

    def rule(self, chain: str, text: str, comment: str | None = None):
        self.add("rule", f"{chain} {text}" + (f" comment {_q(comment)}" if comment else ""))

    def element(self, set_name: str, key: str, value: str | None = None,
                comment: str | None = None):
        body = key + (f" comment {_q(comment)}" if comment else "") + (
            f" : {value}" if value else "")
        self.add("element", f"{set_name} {{ {body} }}")


class _NftGen:
    """One full syncProxyRules of kube-proxy's nftables proxier, on a fresh node."""

    def __init__(self, cluster: Cluster, node_name: str):
        try:
            self.node: Node = cluster.node(node_name)
        except KeyError:
            raise UsageError(f"no node named {node_name!r}") from None
        self.cluster, self.node_name = cluster, node_name
        cfg = cluster.config
        self.kp = cfg.kube_proxy
        self.detect_mode, self.detect_arg = cfg.local_detector
        self.mark = f"{MASQ_MARK:#08x}"
        self.tx = _Tx()
        self.node_ips = self.nodeport_ips()

    def nodeport_ips(self) -> list[IPv4Address] | None:
        """The node addresses that take NodePorts: kube-proxy's --nodeport-addresses, whose
        default in nftables mode is "primary" (the node IP); None when a /0 makes every
        local address take them. Loopback never does in nftables mode."""
        wanted = self.kp.node_port_addresses or ("primary",)
        if any(c != "primary" and c.prefixlen == 0 for c in wanted):
            return None
        cidrs = [IPv4Network(f"{self.node.ip}/32") if c == "primary" else c for c in wanted]
        ips = {a.ip for a in node_local_addresses(self.cluster, self.node_name)
               if any(a.ip in c for c in cidrs)}
        return sorted(ip for ip in ips if not ip.is_loopback)

    def if_local(self, negate: bool) -> str | None:
        """The local-traffic detector's nft match (IfLocalNFT / IfNotLocalNFT)."""
        op = "!= " if negate else ""
        if self.detect_mode == "ClusterCIDR":
            return f"ip saddr {op}{self.detect_arg}"
        if self.detect_mode == "InterfaceNamePrefix":
            return f"iifname {op}{_q(self.detect_arg + '*')}"
        return None

    # -- setupNFTables -------------------------------------------------------------------

    def setup(self):
        tx = self.tx
        tx.add("table", '{ comment "rules for kube-proxy" ; }')
        for name, *_ in BASE_CHAINS:          # recreate base chains once (first sync)
            tx.add("chain", name)
            tx.delete("chain", name)
        for name, typ, hook, prio in BASE_CHAINS:
            tx.add("chain", f"{name} {{ type {typ} hook {hook} priority {prio} ; }}")
            tx.flush("chain", name)
        for dst, src, extra in JUMP_CHAINS:
            tx.ensure_chain(dst)
            tx.rule(src, f"{extra} jump {dst}".strip())
        for c in ("services", "cluster-ips-check", "masquerading", MARK_MASQ):
            tx.ensure_chain(c)
        tx.rule(MARK_MASQ, f"mark set mark or {self.mark}")
        tx.rule("masquerading", f"mark and {self.mark} == 0 return")
        tx.rule("masquerading", f"mark set mark xor {self.mark}")
        tx.rule("masquerading", "masquerade fully-random")
        tx.add("set", 'cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }')
        tx.rule("cluster-ips-check", "ip daddr @cluster-ips reject",
                "Reject traffic to invalid ports of ClusterIPs")
        tx.rule("cluster-ips-check", f"ip daddr {{ {self.cluster.config.service_cidr} }} drop",
                "Drop traffic to unallocated ClusterIPs")
        tx.add("set", 'nodeport-ips { type ipv4_addr ; '
               'comment "IPs that accept NodePort traffic" ; }')
        if self.node_ips is None:
            tx.delete("set", "nodeport-ips")
        else:
            tx.flush("set", "nodeport-ips")
            for ip in self.node_ips:
                tx.element("nodeport-ips", str(ip))
        tx.add("map", f'no-endpoint-services {{ type {SERVICE_KEY} : verdict ; comment '
               '"vmap to drop or reject packets to services with no endpoints" ; }')
        tx.add("map", f'no-endpoint-nodeports {{ type {NODEPORT_KEY} : verdict ; comment '
               '"vmap to drop or reject packets to service nodeports with no endpoints" ; }')
        tx.add("chain", f'{REJECT_CHAIN} {{ comment '
               '"helper for @no-endpoint-services / @no-endpoint-nodeports" ; }')
        tx.flush("chain", REJECT_CHAIN)
        tx.rule(REJECT_CHAIN, "reject")
        tx.rule("service-endpoints-check",
                "ip daddr . meta l4proto . th dport vmap @no-endpoint-services")
        if self.node_ips is None:
            tx.rule("nodeport-endpoints-check",
                    "ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports")
        else:
            tx.rule("nodeport-endpoints-check",
                    "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports")
        tx.add("map", f'firewall-ips {{ type {SERVICE_KEY} : verdict ; comment '
               '"destinations that are subject to LoadBalancerSourceRanges" ; }')
        tx.ensure_chain("firewall-check")
        tx.rule("firewall-check", "ip daddr . meta l4proto . th dport vmap @firewall-ips")
        tx.add("map", f'service-ips {{ type {SERVICE_KEY} : verdict ; comment '
               '"ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }')
        tx.add("map", f'service-nodeports {{ type {NODEPORT_KEY} : verdict ; comment '
               '"NodePort traffic" ; }')
        tx.rule("services", "ip daddr . meta l4proto . th dport vmap @service-ips")
        if self.node_ips is None:
            tx.rule("services", "fib daddr type local ip daddr != 127.0.0.0/8 "
                    "meta l4proto . th dport vmap @service-nodeports")
        else:
            tx.rule("services", "ip daddr @nodeport-ips meta l4proto . th dport vmap "
                    "@service-nodeports")
        for m in ("cluster-ips", "service-ips", "firewall-ips", "no-endpoint-services",
                  "no-endpoint-nodeports", "service-nodeports"):
            tx.flush("set" if m == "cluster-ips" else "map", m)

    # -- syncProxyRules, per service port -------------------------------------------------

    def service_port(self, p: _Port):
        tx = self.tx
        base = port_base(p)
        cluster_chain, local_chain = f"service-{base}", f"local-{base}"
        ext_chain, fw_chain = f"external-{base}", f"firewall-{base}"
        cluster_eps, local_eps, reachable, has_eps = categorize(p, self.node_name)
        ep_chain = {ep_str(e): f"endpoint-{endpoint_base(p, e)}" for e in reachable}
        ep_chain.update({ep_str(e): f"endpoint-{endpoint_base(p, e)}"
                         for e in cluster_eps + local_eps})
        affinity = {k: "affinity-" + v[len("endpoint-"):] for k, v in ep_chain.items()}
        for e in reachable:
            tx.ensure_chain(ep_chain[ep_str(e)])
        uses_cluster_chain = bool(cluster_eps) and p.uses_cluster
        if uses_cluster_chain:
            tx.ensure_chain(cluster_chain)
        uses_local_chain = bool(local_eps) and p.uses_local
        if uses_local_chain:
            tx.ensure_chain(local_chain)
        internal_chain, has_internal = cluster_chain, has_eps
        if p.internal_local:
            internal_chain, has_internal = local_chain, bool(local_eps)
        external_policy_chain, has_external = cluster_chain, has_eps
        if p.external_local:
            external_policy_chain, has_external = local_chain, bool(local_eps)
        uses_ext = has_eps and p.external_accessible
        if uses_ext:
            tx.ensure_chain(ext_chain)
        int_verdict = ext_verdict = ""
        if not has_eps:
            int_verdict = ext_verdict = f"goto {REJECT_CHAIN}"
        else:
            if not has_internal:
                int_verdict = "drop"
            if not has_external:
                ext_verdict = "drop"

        proto, port, cip = p.proto, p.port.port, str(p.svc.cluster_ip)

        def key(ip) -> str:
            return f"{ip} . {proto} . {port}"

        tx.element("cluster-ips", cip)
        if has_internal:
            tx.element("service-ips", key(cip), f"goto {internal_chain}")
        else:
            tx.element("no-endpoint-services", key(cip), int_verdict, p.name)
        for eip in p.svc.external_ips:
            if has_eps:
                tx.element("service-ips", key(eip), f"goto {ext_chain}")
            if not has_external:
                tx.element("no-endpoint-services", key(eip), ext_verdict, p.name)
        uses_fw = bool(p.lb_vips) and bool(p.source_ranges)
        if uses_fw:
            tx.ensure_chain(fw_chain)
        for vip in p.lb_vips:
            if has_eps:
                tx.element("service-ips", key(vip), f"goto {ext_chain}")
            if uses_fw:
                tx.element("firewall-ips", key(vip), f"goto {fw_chain}")
        if not has_external:
            for vip in p.lb_vips:
                tx.element("no-endpoint-services", key(vip), ext_verdict, p.name)
        if p.port.node_port:
            np = f"{proto} . {p.port.node_port}"
            if has_eps:
                tx.element("service-nodeports", np, f"goto {ext_chain}")
            if not has_external:
                tx.element("no-endpoint-nodeports", np, ext_verdict, p.name)

        if has_internal:
            match = f"ip daddr {cip} {proto} dport {port}"
            if self.kp.masquerade_all:
                tx.rule(internal_chain, f"{match} jump {MARK_MASQ}")
            elif self.if_local(negate=True):
                tx.rule(internal_chain, f"{match} {self.if_local(negate=True)} jump {MARK_MASQ}")
        if uses_ext:
            if not p.external_local:
                tx.rule(ext_chain, f"jump {MARK_MASQ}")
            else:
                if self.if_local(negate=False):
                    tx.rule(ext_chain, f"{self.if_local(negate=False)} goto {cluster_chain}",
                            "short-circuit pod traffic")
                tx.rule(ext_chain, f"fib saddr type local jump {MARK_MASQ}",
                        "masquerade local traffic")
                tx.rule(ext_chain, f"fib saddr type local goto {cluster_chain}",
                        "short-circuit local traffic")
            if has_external:
                tx.rule(ext_chain, f"goto {external_policy_chain}")
        if uses_fw:
            sources = [str(c) for c in p.source_ranges]
            if any(self.node.ip in c for c in p.source_ranges):
                sources += [str(v) for v in p.lb_vips]
            tx.rule(fw_chain, f"ip saddr != {{ {' , '.join(sources)} }} drop")
        if p.affinity:
            for e in reachable:
                tx.add("set", f"{affinity[ep_str(e)]} {{ type ipv4_addr ; flags {DYNAMIC_FLAGS} ; "
                       f"timeout {p.svc.affinity_timeout}s ; }}")
        if uses_cluster_chain:
            self.dispatch(p, cluster_chain, cluster_eps, ep_chain, affinity)
        if uses_local_chain:
            self.dispatch(p, local_chain, local_eps, ep_chain, affinity)
        for e in reachable:
            chain = ep_chain[ep_str(e)]
            tx.rule(chain, f"ip saddr {e.ip} jump {MARK_MASQ}")
            if p.affinity:
                tx.rule(chain, f"update @{affinity[ep_str(e)]} {{ ip saddr }}")
            tx.rule(chain, f"meta l4proto {proto} dnat to {ep_str(e)}")

    def dispatch(self, p: _Port, chain: str, eps: list[Endpoint], ep_chain: dict[str, str],
                 affinity: dict[str, str]):
        if p.affinity:
            for e in eps:
                self.tx.rule(chain, f"ip saddr @{affinity[ep_str(e)]} goto {ep_chain[ep_str(e)]}")
        elements = " , ".join(f"{i} : goto {ep_chain[ep_str(e)]}" for i, e in enumerate(eps))
        self.tx.rule(chain, f"numgen random mod {len(eps)} vmap {{ {elements} }}")

    def run(self) -> str:
        self.setup()
        for p in _service_ports(self.cluster):
            self.service_port(p)
        return "".join(line + "\n" for line in self.tx.lines)


def node_transaction(cluster: Cluster, node_name: str) -> str:
    """The `nft -f` input kube-proxy's first full sync writes on ``node_name``."""
    return _NftGen(cluster, node_name).run()


def node_ruleset(cluster: Cluster, node_name: str) -> str:
    """The node's kube-proxy table as `nft list ruleset` prints it after that sync."""
    from kdp.netfilter.nft import parse_ruleset
    return parse_ruleset(node_transaction(cluster, node_name),
                         f"<kube-proxy nftables sync on {node_name}>").render()
