# k8s.clusterconfig: the kdp ClusterConfig object (network plugin, address ranges,
# node list, kube-proxy options, external hosts): decoding with strict field names
# (typo protection) and the checks between its ranges. Node placement is controlplane's.
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from ..dnsname import DnsFormatError, canonical
from . import names
from .load import Fields, Path
from .model import ClusterConfig, ExternalHost, KubeProxyConfig, UpstreamRecord

PLUGINS = ("kubenet", "azure")
HAIRPIN_MODES = ("hairpin-veth", "promiscuous-bridge", "none")
PROXY_MODES = ("iptables", "nftables")
PROXY_MODES_LATER = ("ipvs",)
SPEC_KEYS = ("networkPlugin", "podCIDR", "nodePodPrefix", "serviceCIDR", "dnsServiceIP",
             "dockerBridgeAddress", "vnetSubnet", "clusterDomain", "nodePortRange",
             "hairpinMode", "maxPods", "nodes", "kubeProxy", "externalHosts", "nonMasqueradeCIDRs",
             "dns")
PROXY_KEYS = ("mode", "masqueradeAll", "clusterCIDR", "detectLocalMode", "interfaceNamePrefix",
              "localhostNodePorts", "conntrackMax",
              "conntrackTCPEstablished", "conntrackTCPCloseWait", "nfacct", "nodePortAddresses",
              "iptablesRandomFully", "conntrackTCPBeLiberal")
NODE_KEYS = ("name", "ip", "podCIDR", "labels", "rulesFile")
HOST_KEYS = ("address", "tcpPorts", "udpPorts")
DNS_KEYS = ("upstream",)
UPSTREAM_KEYS = ("records",)
RECORD_KEYS = ("name", "type", "value", "ttl")
RECORD_TYPES = ("A", "AAAA", "CNAME", "PTR", "TXT", "SRV", "MX")


@dataclass
class NodeIn:
    """A node as declared (Node object or ClusterConfig spec.nodes entry), before placement."""

    name: str
    ip: IPv4Address | None
    pod_cidr: IPv4Network | None
    labels: dict[str, str]
    f: Fields                     # where to report: the Node, or ClusterConfig spec.nodes[i]
    ip_path: Path = ("ip",)
    cidr_path: Path = ("podCIDR",)
    rules_file: str | None = None  # a real node's iptables-save dump to load instead


def strict_keys(f: Fields, allowed: tuple[str, ...]) -> set[str]:
    """Unknown keys in the mapping at f are problems (they are usually typos).
    Returns the known keys suggested for them (what the user probably meant)."""
    meant = set()
    for key in f.map():
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else \
                f"; known fields: {', '.join(allowed)}"
            f.error((str(key),), f"unknown field {key!r}{hint}")
            meant.update(close)
    return meant


def _choice(f: Fields, key: str, allowed: tuple[str, ...], default: str) -> str:
    value = f.str(key, default=default)
    if value not in allowed:
        f.error((key,), f"unknown {key} {value!r}: must be one of {', '.join(allowed)}")
        return default
    return value


def _seconds(f: Fields, key: str, default: int) -> int:
    """An int number of seconds or a Go duration string like "24h0m0s"."""
    raw = f.raw(key)
    if isinstance(raw, str):
        parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", raw)
        if raw and parts:
            h, m, s = (int(x or 0) for x in parts.groups())
            return h * 3600 + m * 60 + s
        f.error((key,), f"{raw!r} is not a duration: use seconds or a string like '24h0m0s'")
        return default
    return f.int(key, default=default, lo=0)


def _node_port_range(f: Fields) -> tuple[int, int] | None:
    raw = f.raw("nodePortRange")
    if not f.has("nodePortRange"):
        return None
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", raw) if isinstance(raw, str) else None
    if not m or not 1 <= int(m[1]) <= int(m[2]) <= 65535:
        f.error(("nodePortRange",), f"{raw!r} is not a port range like '30000-32767'")
        return None
    return int(m[1]), int(m[2])


def _kube_proxy(f: Fields) -> KubeProxyConfig:
    kp = KubeProxyConfig()
    strict_keys(f, PROXY_KEYS)
    mode = f.str("mode", default="iptables")
    if mode in PROXY_MODES_LATER:
        f.error(("mode",), f"kube-proxy mode {mode!r} is not supported yet "
                "(iptables or nftables)")
    elif mode not in PROXY_MODES:
        f.error(("mode",), f"unknown kube-proxy mode {mode!r}: must be iptables or nftables")
    else:
        kp.mode = mode
    kp.masquerade_all = f.bool("masqueradeAll", default=kp.masquerade_all)
    kp.cluster_cidr = f.net("clusterCIDR")
    mode = f.str("detectLocalMode")
    if mode is not None and mode not in ("ClusterCIDR", "InterfaceNamePrefix", "None"):
        f.error(("detectLocalMode",), f"unknown detectLocalMode {mode!r}: must be ClusterCIDR, "
                "InterfaceNamePrefix or None")
    else:
        kp.detect_local_mode = mode
    kp.interface_name_prefix = f.str("interfaceNamePrefix", default=kp.interface_name_prefix)
    kp.localhost_node_ports = f.bool("localhostNodePorts", default=kp.localhost_node_ports)
    kp.conntrack_max = f.int("conntrackMax", default=kp.conntrack_max, lo=0)
    kp.conntrack_tcp_established = _seconds(f, "conntrackTCPEstablished",
                                            kp.conntrack_tcp_established)
    kp.conntrack_tcp_close_wait = _seconds(f, "conntrackTCPCloseWait", kp.conntrack_tcp_close_wait)
    kp.nfacct = f.bool("nfacct", default=kp.nfacct)
    kp.node_port_addresses = _node_port_addresses(f)
    kp.iptables_random_fully = f.bool("iptablesRandomFully", default=kp.iptables_random_fully)
    kp.conntrack_tcp_be_liberal = f.bool("conntrackTCPBeLiberal",
                                         default=kp.conntrack_tcp_be_liberal)
    return kp


def _node_port_addresses(f: Fields) -> tuple | None:
    """kube-proxy's --nodeport-addresses: the keyword "primary" alone, or CIDRs
    (parsed as kube-proxy's ParseCIDRSloppy does: host bits allowed). Absent or
    empty: None, every local address takes NodePorts."""
    if not f.has("nodePortAddresses"):
        return None
    out: list = []
    for i, af in enumerate(f.items("nodePortAddresses")):
        text = af.str(required=True)
        if text is None:
            continue
        if text == "primary":
            out.append("primary")
            continue
        try:
            net = IPv4Network(text.strip(), strict=False) if "/" in text else None
        except ValueError:
            net = None
        if net is None:
            af.error((), f"{text!r} is not a CIDR (like 10.240.0.0/16) or the keyword 'primary'")
            continue
        out.append(net)
    if "primary" in out and len(out) > 1:
        f.error(("nodePortAddresses",), "'primary' must be the only entry (kube-proxy refuses it "
                "mixed with CIDRs)")
        return None
    return tuple(out) or None


def _ports(f: Fields, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    if not f.has(key):
        return default
    return tuple(p for pf in f.items(key) if (p := pf.int(lo=1, hi=65535)) is not None)


def _external_hosts(f: Fields) -> list[ExternalHost]:
    out = []
    for hf in f.items("externalHosts"):
        strict_keys(hf, HOST_KEYS)
        addr = hf.ip("address", required=True)
        if addr is not None:
            out.append(ExternalHost(addr, _ports(hf, "tcpPorts", (80, 443)),
                                    _ports(hf, "udpPorts", (53,))))
    return out


def _dns_name(rf: Fields, key: str, text: str) -> str | None:
    """text as an absolute lowercase DNS name, or None (reported)."""
    if not text or any(not 0x21 <= ord(c) <= 0x7E for c in text) or "\\" in text:
        rf.error((key,), f"{text!r} is not a DNS name (printable ASCII labels separated by dots)")
        return None
    try:
        return canonical(text)
    except DnsFormatError as e:
        rf.error((key,), f"{text!r} is not a DNS name: {e}")
        return None


def _record_value(rf: Fields, rtype: str, value: str) -> str | None:
    """The record's value in normal form, or None (reported)."""
    try:
        if rtype == "A":
            return str(IPv4Address(value))
        if rtype == "AAAA":
            return str(IPv6Address(value))
    except ValueError:
        rf.error(("value",), f"{value!r} is not an {'IPv4' if rtype == 'A' else 'IPv6'} address "
                 f"(type {rtype})")
        return None
    if rtype in ("CNAME", "PTR"):
        return _dns_name(rf, "value", value)
    if rtype == "TXT":
        return value
    parts = value.split()
    want = ("PRIORITY WEIGHT PORT TARGET" if rtype == "SRV" else "PREFERENCE EXCHANGE").split()
    if len(parts) != len(want) or not all(p.isdigit() and int(p) <= 65535 for p in parts[:-1]):
        rf.error(("value",), f"{value!r} is not a {rtype} value: write it like "
                 f"'{' '.join(want)}' with numbers 0-65535, e.g. "
                 f"'{'0 100 443 host.example.com' if rtype == 'SRV' else '10 mail.example.com'}'")
        return None
    target = _dns_name(rf, "value", parts[-1])
    return None if target is None else " ".join([str(int(p)) for p in parts[:-1]] + [target])


def _dns_upstream(s: Fields, domain: str) -> list[UpstreamRecord] | None:
    """spec.dns.upstream.records: the static zone standing for the DNS outside the
    cluster (CoreDNS's forward target, the VNet's DNS). Absent: no upstream."""
    if not s.has("dns"):
        return None
    s.map("dns")
    d = s.at("dns")
    strict_keys(d, DNS_KEYS)
    if not d.has("upstream"):
        return None
    d.map("upstream")
    u = d.at("upstream")
    strict_keys(u, UPSTREAM_KEYS)
    zone = canonical(domain) if domain else "."
    out: list[UpstreamRecord] = []
    for rf in u.items("records"):
        if not isinstance(rf.raw(), dict):
            rf.error((), "must be a mapping like {name: example.com, type: A, value: 93.184.216.34}")
            continue
        strict_keys(rf, RECORD_KEYS)
        text, rtype = rf.str("name", required=True), rf.str("type", required=True)
        value, ttl = rf.str("value", required=True), rf.int("ttl", default=300, lo=0, hi=2147483647)
        name = _dns_name(rf, "name", text) if text is not None else None
        if rtype is not None and rtype.upper() not in RECORD_TYPES:
            rf.error(("type",), f"unknown record type {rtype!r}: must be one of "
                     f"{', '.join(RECORD_TYPES)}")
            continue
        if name is None or rtype is None or value is None or ttl is None:
            continue
        rtype = rtype.upper()
        if name == zone or name.endswith("." + zone):
            rf.error(("name",), f"{name} is inside the cluster domain {domain}: CoreDNS's kubernetes "
                     "plugin answers there, not the upstream")
            continue
        norm = _record_value(rf, rtype, value)
        if norm is None:
            continue
        rec = UpstreamRecord(name, rtype, norm, ttl)
        same = [r for r in out if r.name == name]
        if any((r.type, r.value) == (rtype, norm) for r in same):
            rf.error((), f"duplicate record {name} {rtype} {norm}")
        elif same and (rtype == "CNAME" or any(r.type == "CNAME" for r in same)):
            rf.error(("type",), f"{name} has a CNAME and other records: a CNAME must be the only "
                     "record of its name (RFC 1034)")
        else:
            out.append(rec)
    return out


def _nodes(f: Fields) -> tuple[int | None, list[NodeIn]]:
    raw = f.raw("nodes")
    if not f.has("nodes"):
        return None, []
    if isinstance(raw, int) and not isinstance(raw, bool):
        return f.int("nodes", lo=1, hi=5000), []
    if not isinstance(raw, list):
        f.error(("nodes",), "must be a node count or a list of {name, ip, podCIDR, labels}")
        return None, []
    out: list[NodeIn] = []
    for i, nf in enumerate(f.items("nodes")):
        if not isinstance(nf.raw(), dict):
            nf.error((), "must be a mapping like {name: node1, ip: 10.240.0.4}")
            continue
        strict_keys(nf, NODE_KEYS)
        name = nf.str("name", required=True)
        if name is None:
            continue
        nf.check(("name",), name, names.dns1123_subdomain)
        if any(n.name == name for n in out):
            nf.error(("name",), f"duplicate node name {name!r}")
            continue
        out.append(NodeIn(name, nf.ip("ip"), nf.net("podCIDR"), nf.labels("labels"), nf,
                          rules_file=_rules_file(nf)))
    return None, out


def _rules_file(nf: Fields) -> str | None:
    """spec.nodes[i].rulesFile, relative to the ClusterConfig's own file."""
    text = nf.str("rulesFile")
    if text is None:
        return None
    base = os.path.dirname(nf.obj.source.file) if nf.obj.source.file != "<string>" else "."
    path = os.path.normpath(os.path.join(base, text))
    if not os.path.isfile(path):
        nf.error(("rulesFile",), f"no such file {path!r} (paths are relative to this file)")
        return None
    return path


def decode_config(f: Fields) -> tuple[ClusterConfig, int | None, list[NodeIn], frozenset[str]]:
    """The ClusterConfig at f, its node count (spec.nodes: N), node list (spec.nodes:
    [...]) and the spec fields whose value is unsure: those reported as wrong
    (their default stands in) and those a misspelt field probably meant. A check
    that rests on an unsure field is skipped: its complaint would be a knock-on
    error of the one already reported."""
    cfg = ClusterConfig(name=f.obj.name, source=f.obj.source)
    f.check(("metadata", "name"), f.obj.name, names.dns1123_subdomain)
    s = f.at("spec")
    before = len(f.report.problems)
    spec_ok = isinstance(s.raw(), dict) or not s.has()
    s.map()
    unsure = set(strict_keys(s, SPEC_KEYS))
    cfg.network_plugin = _choice(s, "networkPlugin", PLUGINS, cfg.network_plugin)
    cfg.hairpin_mode = _choice(s, "hairpinMode", HAIRPIN_MODES, cfg.hairpin_mode)
    for key, attr in (("podCIDR", "pod_cidr"), ("serviceCIDR", "service_cidr"),
                      ("vnetSubnet", "vnet_subnet")):
        if (net := s.net(key)) is not None:
            setattr(cfg, attr, net)
    if s.has("dnsServiceIP"):
        cfg.dns_service_ip = s.ip("dnsServiceIP") or cfg.dns_service_ip
    elif s.has("serviceCIDR"):      # as AKS: the 10th address of the service CIDR
        cfg.dns_service_ip = cfg.service_cidr.network_address + min(
            10, cfg.service_cidr.num_addresses - 2)
    cfg.docker_bridge = s.iface("dockerBridgeAddress") or cfg.docker_bridge
    cfg.node_pod_prefix = s.int("nodePodPrefix", default=cfg.node_pod_prefix, lo=8, hi=30)
    cfg.cluster_domain = s.str("clusterDomain", default=cfg.cluster_domain)
    s.check(("clusterDomain",), cfg.cluster_domain, names.dns1123_subdomain)
    cfg.node_port_range = _node_port_range(s) or cfg.node_port_range
    cfg.max_pods_per_node = s.int("maxPods", default=cfg.max_pods_per_node, lo=1, hi=250)
    s.map("kubeProxy")
    cfg.kube_proxy = _kube_proxy(s.at("kubeProxy"))
    cfg.external_hosts = _external_hosts(s)
    cfg.dns_upstream = _dns_upstream(s, cfg.cluster_domain)
    if "nonMasqueradeCIDRs" in s.map():
        nets = [s.net("nonMasqueradeCIDRs", i) for i in range(len(s.list("nonMasqueradeCIDRs")))]
        cfg.non_masquerade_cidrs = [n for n in nets if n is not None]
    count, nodes = _nodes(s)
    for p in f.report.problems[before:]:
        if p.field.startswith("spec."):
            unsure.add(re.split(r"[.\[]", p.field[len("spec."):], maxsplit=1)[0])
    if not spec_ok:
        unsure.update(SPEC_KEYS)
    if "serviceCIDR" in unsure and not s.has("dnsServiceIP"):
        unsure.add("dnsServiceIP")          # derived from the serviceCIDR
    check_ranges(cfg, s, frozenset(unsure))
    return cfg, count, nodes, frozenset(unsure)


def check_ranges(cfg: ClusterConfig, s: Fields, unsure: frozenset[str] = frozenset()) -> None:
    """The address ranges must fit together: no overlaps, dnsServiceIP inside serviceCIDR.
    A check involving an unsure field (see decode_config) is skipped."""
    def sure(*keys: str) -> bool:
        return not unsure.intersection(keys)

    kubenet = cfg.network_plugin == "kubenet"
    if kubenet and cfg.node_pod_prefix < cfg.pod_cidr.prefixlen and sure(
            "networkPlugin", "nodePodPrefix", "podCIDR"):
        s.error(("nodePodPrefix",), f"nodePodPrefix /{cfg.node_pod_prefix} is larger than "
                f"podCIDR {cfg.pod_cidr}")
    if not sure("dnsServiceIP", "serviceCIDR"):
        pass
    elif cfg.dns_service_ip not in cfg.service_cidr:
        s.error(("dnsServiceIP",), f"dnsServiceIP {cfg.dns_service_ip} is outside serviceCIDR "
                f"{cfg.service_cidr}")
    elif cfg.dns_service_ip == cfg.service_cidr.network_address:
        s.error(("dnsServiceIP",), f"dnsServiceIP {cfg.dns_service_ip} is the network address "
                f"(first address) of serviceCIDR {cfg.service_cidr}")
    ranges = [("serviceCIDR", cfg.service_cidr), ("vnetSubnet", cfg.vnet_subnet),
              ("dockerBridgeAddress", cfg.docker_bridge.network)]
    if kubenet:
        ranges.insert(0, ("podCIDR", cfg.pod_cidr))
    for i, (name_b, net_b) in enumerate(ranges):
        for name_a, net_a in ranges[:i]:
            if net_a.overlaps(net_b) and sure(name_a, name_b, "networkPlugin"):
                s.error((name_b,), f"{name_b} {net_b} overlaps {name_a} {net_a}")
    for i, host in enumerate(cfg.external_hosts):
        for name, net in ranges[:-1]:
            if host.address in net and sure(name, "networkPlugin"):
                s.error(("externalHosts", i, "address"), f"external host {host.address} is "
                        f"inside {name} {net}; off-cluster hosts need an address outside it")
