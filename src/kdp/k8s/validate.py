# k8s.validate: decodes RawObjects into the typed inputs of the control plane
# (cluster config, nodes, pod specs, Deployments, Services, EndpointSlices) and
# checks every field and each rule that needs no allocation. Allocates nothing.
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from ..suggest import close_matches
from . import names
from .clusterconfig import NodeIn, decode_config
from .ingressapi import decode_ingress, decode_ingress_class
from .load import Fields, Path, RawObject, Report, format_path, plain
from .model import ClusterConfig, Container, ContainerPort, Service, ServicePort

API_VERSIONS = {
    "Namespace": {"v1"}, "Node": {"v1"}, "Pod": {"v1"}, "Service": {"v1"}, "Endpoints": {"v1"},
    "Deployment": {"apps/v1"},
    "EndpointSlice": {"discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"},
    "Ingress": {"networking.k8s.io/v1"}, "IngressClass": {"networking.k8s.io/v1"},
    "ClusterConfig": {"kdp.dev/v1alpha1"},
}
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
# Every field of these Kubernetes 1.33 types, so a misspelt one (which the API
# server's strict field validation rejects, and which would silently change the
# data path here) is named with what it probably meant.
SERVICE_SPEC_FIELDS = (
    "allocateLoadBalancerNodePorts", "clusterIP", "clusterIPs", "externalIPs", "externalName",
    "externalTrafficPolicy", "healthCheckNodePort", "internalTrafficPolicy", "ipFamilies",
    "ipFamilyPolicy", "loadBalancerClass", "loadBalancerIP", "loadBalancerSourceRanges", "ports",
    "publishNotReadyAddresses", "selector", "sessionAffinity", "sessionAffinityConfig",
    "trafficDistribution", "type")
SERVICE_PORT_FIELDS = ("appProtocol", "name", "nodePort", "port", "protocol", "targetPort")
CONTAINER_PORT_FIELDS = ("containerPort", "hostIP", "hostPort", "name", "protocol")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


# --- typed inputs ------------------------------------------------------------------

@dataclass
class PodSpecIn:
    containers: list[Container]
    node_name: str | None
    node_selector: dict[str, str]
    host_network: bool
    hostname: str | None
    subdomain: str | None
    f: Fields                     # view on the pod spec (spec, or spec.template.spec)


@dataclass
class PodIn:
    namespace: str
    name: str
    labels: dict[str, str]
    spec: PodSpecIn
    f: Fields                     # view on the object (Pod, or the Deployment it came from)
    pod_ip: IPv4Address | None = None
    ready: bool = True
    serving: bool = True          # ready before it began terminating
    terminating: bool = False
    owner: str | None = None
    owner_rs: str | None = None   # ReplicaSet named in ownerReferences
    uid: str = ""
    node: str | None = None       # filled in by the control plane
    ip: IPv4Address | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class DeploymentIn:
    namespace: str
    name: str
    replicas: int
    labels: dict[str, str]        # template labels
    spec: PodSpecIn
    template: Any
    f: Fields


@dataclass
class ServiceIn:
    svc: Service                  # cluster_ip set only when given explicitly
    f: Fields
    cluster_ip_mode: str = "auto"  # auto | explicit | none
    publish_not_ready: bool = False
    allocate_node_ports: bool = False
    explicit_node_ports: dict[int, int] = field(default_factory=dict)  # port index -> nodePort
    port_index: list[int] = field(default_factory=list)   # spec.ports index of each svc port
    cluster_ip_path: Path = ("spec", "clusterIP")


@dataclass
class EndpointIn:
    ip: IPv4Address
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node: str | None = None
    pod: str | None = None
    hostname: str | None = None


@dataclass
class SliceIn:
    """An EndpointSlice, or one subset of a v1 Endpoints object (legacy=True)."""

    namespace: str
    service: str
    endpoints: list[EndpointIn]
    ports: list[tuple[str | None, int, str]]   # (name, port, protocol)
    f: Fields
    legacy: bool = False


@dataclass
class Inputs:
    config: ClusterConfig = field(default_factory=ClusterConfig)
    config_f: Fields | None = None
    config_ok: bool = True
    config_unsure: frozenset[str] = frozenset()   # ClusterConfig spec fields in doubt
    node_count: int | None = None
    config_nodes: list[NodeIn] = field(default_factory=list)
    node_objects: list[NodeIn] = field(default_factory=list)
    pods: list[PodIn] = field(default_factory=list)
    deployments: list[DeploymentIn] = field(default_factory=list)
    services: list[ServiceIn] = field(default_factory=list)
    slices: list[SliceIn] = field(default_factory=list)
    namespaces: set[str] = field(default_factory=lambda: {"default", "kube-system"})
    ingresses: list[dict] = field(default_factory=list)
    ingress_classes: list[dict] = field(default_factory=list)


# --- decoders -----------------------------------------------------------------------

def unknown_fields(f: Fields, allowed: tuple[str, ...]) -> None:
    """A warning for each key of the mapping at f that the Kubernetes type does not
    have, with the closest field it has: kdp ignores it, as the API server's
    strict validation would refuse it."""
    raw = f.raw()
    if not isinstance(raw, dict):
        return
    for key in raw:
        if key not in allowed:
            close = close_matches(str(key), allowed, 1)
            f.warn((str(key),), f"unknown field {str(key)!r}, ignored (the API server would reject "
                   "it)" + (f"; did you mean {close[0]!r}?" if close else ""))


def decode_pod_spec(f: Fields) -> PodSpecIn:
    if isinstance(f.raw(), dict) and not f.list("containers", required=True) \
            and isinstance(f.raw("containers"), list):
        f.error(("containers",), "a pod needs at least one container")
    containers: list[Container] = []
    used: dict[tuple[int, str], str] = {}
    for i, cf in enumerate(f.items("containers")):
        if not isinstance(cf.raw(), dict):
            cf.error((), "must be a mapping (a container)")
            continue
        cname = cf.str("name", required=True) or f"container-{i}"
        cf.check(("name",), cname, names.dns1123_label)
        if any(c.name == cname for c in containers):
            cf.error(("name",), f"duplicate container name {cname!r}")
        ports: list[ContainerPort] = []
        port_names: dict[str, int] = {}       # unique per container, as Kubernetes checks
        for j, pf in enumerate(cf.items("ports")):
            unknown_fields(pf, CONTAINER_PORT_FIELDS)
            port = pf.int("containerPort", required=True, lo=1, hi=65535)
            proto = pf.protocol("protocol")
            pname = pf.str("name")
            pf.check(("name",), pname, names.iana_svc_name)
            if pname and pname in port_names:
                pf.error(("name",), f"duplicate port name {pname!r} (also ports"
                         f"[{port_names[pname]}])")
            if port is None:
                continue
            where = f"container {cname!r} ({format_path(cf.base + ('ports', j))})"
            if (port, proto) in used:
                pf.error(("containerPort",), f"containerPort {port}/{proto} is already used by "
                         f"{used[port, proto]}; the containers of a pod share one network "
                         "namespace, so two of them cannot use the same port")
                continue
            used[port, proto] = where
            if pname:
                port_names[pname] = j
            ports.append(ContainerPort(port, proto, pname))
        containers.append(Container(cname, cf.str("image", default="") or "", ports))
    hostname, subdomain = f.str("hostname"), f.str("subdomain")
    f.check(("hostname",), hostname, names.dns1123_label)
    f.check(("subdomain",), subdomain, names.dns1123_label)
    return PodSpecIn(containers, f.str("nodeName") or None, f.strmap("nodeSelector"),
                     f.bool("hostNetwork"), hostname, subdomain, f)


def _readiness(f: Fields) -> tuple[bool, bool]:
    """(ready, terminating) of a Pod from its status and deletionTimestamp."""
    status = f.map("status")
    conditions = f.list("status", "conditions")
    if "conditions" in status:
        ready = any(isinstance(c, dict) and c.get("type") == "Ready"
                    and c.get("status") in ("True", True) for c in conditions)
    else:
        ready = f.str("status", "phase", default="Running") == "Running"
    return ready, f.has("metadata", "deletionTimestamp")


def decode_pod(obj: RawObject, report: Report) -> PodIn:
    f = Fields(obj, report)
    f.map("spec", required=True)
    spec = decode_pod_spec(f.at("spec"))
    pod_ip = f.ip("status", "podIP", legacy=True)
    if pod_ip is None and f.has("status", "podIPs", 0, "ip") and not f.has("status", "podIP"):
        pod_ip = f.ip("status", "podIPs", 0, "ip", legacy=True)
    ready, terminating = _readiness(f)
    owner = owner_rs = None
    for ref in f.items("metadata", "ownerReferences"):
        kind, name = ref.str("kind"), ref.str("name")
        if kind and name and (owner is None or ref.bool("controller")):
            owner = f"{kind}/{name}"
            owner_rs = name if kind == "ReplicaSet" else None
    uid = f.str("metadata", "uid") or names.stable_uid(obj.namespace or "", obj.name)
    return PodIn(obj.namespace or "default", obj.name, f.labels("metadata", "labels"), spec, f,
                 pod_ip, ready and not terminating, ready, terminating, owner, owner_rs, uid)


def decode_deployment(obj: RawObject, report: Report) -> DeploymentIn:
    f = Fields(obj, report)
    f.map("spec", required=True)
    replicas = f.int("spec", "replicas", default=1, lo=0)
    f.map("spec", "selector")
    match = f.strmap("spec", "selector", "matchLabels")
    if not f.has("spec", "selector"):
        f.error(("spec", "selector"), "required field is missing (apps/v1 needs a selector)")
    f.map("spec", "template", required=True)
    tlabels = f.labels("spec", "template", "metadata", "labels")
    if any(tlabels.get(k) != v for k, v in match.items()):
        f.error(("spec", "selector"), f"selector {fmt_labels(match)} does not match the "
                f"template labels {fmt_labels(tlabels)}")
    f.map("spec", "template", "spec", required=True)
    spec = decode_pod_spec(f.at("spec", "template", "spec"))
    template = f.raw("spec", "template")
    return DeploymentIn(obj.namespace or "default", obj.name, replicas, tlabels, spec,
                        template if isinstance(template, dict) else {}, f)


def fmt_labels(sel: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sel.items()) or "{}"


def _service_port(pf: Fields, svc_type: str) -> tuple[ServicePort, int | None] | None:
    if not isinstance(pf.raw(), dict):
        pf.error((), "must be a mapping (a service port)")
        return None
    unknown_fields(pf, SERVICE_PORT_FIELDS)
    pname = pf.str("name") or None       # an explicit name: "" is no name (one-port Services)
    pf.check(("name",), pname, names.dns1123_label)
    port = pf.int("port", required=True, lo=1, hi=65535)
    proto = pf.protocol("protocol")
    target: int | str | None = port
    raw = pf.raw("targetPort")
    if isinstance(raw, str):
        if msg := names.iana_svc_name(raw):
            pf.error(("targetPort",), f"must be a port number or a port name: {msg}")
        target = raw
    elif pf.has("targetPort"):
        target = pf.int("targetPort", lo=1, hi=65535, default=port)
    node_port = pf.int("nodePort")         # the cluster's range is checked when it is allocated
    if node_port is not None and svc_type not in ("NodePort", "LoadBalancer"):
        pf.error(("nodePort",), f"nodePort is only allowed for NodePort and LoadBalancer "
                 f"services, not {svc_type}")
        node_port = None
    if port is None:
        return None
    return ServicePort(port, proto, pname or None, target or port, None), node_port


def _service_ports(f: Fields, sin: ServiceIn) -> None:
    items = f.items("spec", "ports")
    seen_names: dict[str, int] = {}
    seen_ports: dict[tuple[int, str], int] = {}
    for i, pf in enumerate(items):
        got = _service_port(pf, sin.svc.type)
        if got is None:
            continue
        sp, node_port = got
        if sp.name is None and len(items) > 1:
            pf.error(("name",), "a Service with more than one port must name every port")
        if sp.name is not None and sp.name in seen_names:
            pf.error(("name",), f"duplicate port name {sp.name!r} (also spec.ports"
                     f"[{seen_names[sp.name]}])")
            continue
        if (sp.port, sp.protocol) in seen_ports:
            pf.error(("port",), f"duplicate port {sp.port}/{sp.protocol} (also spec.ports"
                     f"[{seen_ports[sp.port, sp.protocol]}])")
            continue
        if sp.name is not None:
            seen_names[sp.name] = i
        seen_ports[sp.port, sp.protocol] = i
        if node_port is not None:
            sin.explicit_node_ports[len(sin.svc.ports)] = node_port
        sin.svc.ports.append(sp)
        sin.port_index.append(i)


def _service_cluster_ip(f: Fields, sin: ServiceIn) -> None:
    path: Path = ("spec", "clusterIP")
    text = f.str(*path)
    if text is None and f.has("spec", "clusterIPs", 0):
        path = ("spec", "clusterIPs", 0)
        text = f.str(*path)
    if sin.svc.type == "ExternalName":
        sin.cluster_ip_mode = "none"
    elif text == "None":
        sin.cluster_ip_mode = "none"
        if sin.svc.type in ("NodePort", "LoadBalancer"):
            f.error(path, f"clusterIP None (headless) is not allowed for {sin.svc.type} services")
    elif text:
        sin.svc.cluster_ip = f.ip(*path, legacy=True)
        sin.cluster_ip_path = path
        sin.cluster_ip_mode = "explicit" if sin.svc.cluster_ip else "auto"


def decode_service(obj: RawObject, report: Report) -> ServiceIn:
    f = Fields(obj, report)
    f.check(("metadata", "name"), obj.name, names.dns1035_label)
    f.map("spec", required=True)
    unknown_fields(f.at("spec"), SERVICE_SPEC_FIELDS)
    svc_type = f.str("spec", "type", default="ClusterIP")
    if svc_type not in SERVICE_TYPES:
        f.error(("spec", "type"), f"must be one of {', '.join(SERVICE_TYPES)}, got {svc_type!r}")
        svc_type = "ClusterIP"
    svc = Service(obj.namespace or "default", obj.name, svc_type, source=obj.source)
    sin = ServiceIn(svc, f)
    svc.selector = f.strmap("spec", "selector") or None
    _service_cluster_ip(f, sin)
    _service_ports(f, sin)
    if not svc.ports and svc_type != "ExternalName" and sin.cluster_ip_mode != "none":
        f.error(("spec", "ports"), "a Service needs at least one port")
    if svc_type == "ExternalName":
        svc.external_name = f.str("spec", "externalName", required=True)
    for pf in f.items("spec", "externalIPs"):
        if (ip := pf.ip(legacy=True)) is not None:
            svc.external_ips.append(ip)
    policies = ("Cluster", "Local")
    for key, attr, allowed in (("externalTrafficPolicy", "external_traffic_policy", policies),
                               ("internalTrafficPolicy", "internal_traffic_policy", policies),
                               ("sessionAffinity", "session_affinity", ("None", "ClientIP"))):
        value = f.str("spec", key, default=getattr(svc, attr))
        if value not in allowed:
            f.error(("spec", key), f"must be {' or '.join(allowed)}, got {value!r}")
        else:
            setattr(svc, attr, value)
    svc.affinity_timeout = f.int("spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds",
                                 default=10800, lo=1, hi=86400)
    for pf in f.items("spec", "loadBalancerSourceRanges"):
        if (net := pf.net(legacy=True)) is not None:
            svc.load_balancer_source_ranges.append(net)
    if svc_type == "LoadBalancer":
        for pf in f.items("status", "loadBalancer", "ingress"):
            if pf.has("ip") and (ip := pf.ip("ip", legacy=True)) is not None:
                svc.load_balancer_ips.append(ip)
        if not svc.load_balancer_ips and f.has("spec", "loadBalancerIP"):
            if (ip := f.ip("spec", "loadBalancerIP", legacy=True)) is not None:
                svc.load_balancer_ips.append(ip)
    svc.health_check_node_port = f.int("spec", "healthCheckNodePort")   # range: allocation
    sin.publish_not_ready = f.bool("spec", "publishNotReadyAddresses")
    sin.allocate_node_ports = svc_type == "NodePort" or (svc_type == "LoadBalancer" and f.bool(
        "spec", "allocateLoadBalancerNodePorts", default=True))
    return sin


def _endpoint_in(f: Fields, ip_path: Path, ready: bool | None = None) -> EndpointIn | None:
    ip = f.ip(*ip_path, required=True, legacy=True)
    if ip is None:
        return None
    ref = f.at("targetRef")
    pod = None
    if ref.str("kind") == "Pod" and ref.str("name"):
        pod = f"{ref.str('namespace') or f.obj.namespace}/{ref.str('name')}"
    if ready is None:                   # EndpointSlice conditions (nil ready means ready)
        cond = f.at("conditions")
        ready = cond.bool("ready", default=True)
        serving = cond.bool("serving", default=ready)
        terminating = cond.bool("terminating", default=False)
    else:
        serving, terminating = ready, False
    node = f.str("nodeName") or f.str("topology", "kubernetes.io/hostname")
    return EndpointIn(ip, ready, serving, terminating, node, pod, f.str("hostname"))


def _slice_ports(items: list[Fields]) -> list[tuple[str | None, int, str]]:
    out = []
    for pf in items:
        port = pf.int("port", lo=1, hi=65535)
        if port is not None:
            out.append((pf.str("name") or None, port, pf.protocol("protocol")))
    return out


def decode_slice(obj: RawObject, report: Report) -> SliceIn | None:
    f = Fields(obj, report)
    service = f.strmap("metadata", "labels").get(SERVICE_NAME_LABEL)
    if not service:
        f.warn(("metadata", "labels"), f"EndpointSlice has no {SERVICE_NAME_LABEL} label; ignored")
        return None
    kind = f.str("addressType", default="IPv4")
    if kind != "IPv4":
        f.warn(("addressType",), f"addressType {kind} is not supported; slice ignored")
        return None
    eps: list[EndpointIn] = []
    for ef in f.items("endpoints"):
        if not isinstance(ef.raw(), dict):
            ef.error((), "must be a mapping (an endpoint)")
            continue
        for i in range(len(ef.list("addresses", required=True))):
            if (ep := _endpoint_in(ef, ("addresses", i))) is not None:
                eps.append(ep)
    return SliceIn(obj.namespace or "default", service, eps, _slice_ports(f.items("ports")), f)


def decode_endpoints(obj: RawObject, report: Report) -> list[SliceIn]:
    f = Fields(obj, report)
    out = []
    for sf in f.items("subsets"):
        eps = [ep for af in sf.items("addresses") if (ep := _endpoint_in(af, ("ip",), True))]
        eps += [ep for af in sf.items("notReadyAddresses")
                if (ep := _endpoint_in(af, ("ip",), False))]
        out.append(SliceIn(obj.namespace or "default", obj.name, eps,
                           _slice_ports(sf.items("ports")), f, legacy=True))
    return out


def decode_node(obj: RawObject, report: Report) -> NodeIn:
    f = Fields(obj, report)
    f.check(("metadata", "name"), obj.name, names.dns1123_subdomain)
    cidr_path: Path = ("spec", "podCIDR")
    if not f.has(*cidr_path) and f.has("spec", "podCIDRs", 0):
        cidr_path = ("spec", "podCIDRs", 0)
    cidr = f.net(*cidr_path)
    ip, ip_path = None, ("status", "addresses")
    for i, af in enumerate(f.items("status", "addresses")):
        if af.str("type") == "InternalIP":
            ip, ip_path = af.ip("address", legacy=True), ("status", "addresses", i, "address")
            break
    return NodeIn(obj.name, ip, cidr, f.labels("metadata", "labels"), f, ip_path, cidr_path)


# --- the whole input -----------------------------------------------------------------

def _check_common(obj: RawObject, report: Report) -> bool:
    """apiVersion and namespace checks shared by every supported kind."""
    f = Fields(obj, report)
    if obj.api_version and obj.api_version not in API_VERSIONS[obj.kind]:
        f.error(("apiVersion",), f"{obj.kind} must have apiVersion "
                f"{' or '.join(sorted(API_VERSIONS[obj.kind]))}, got {obj.api_version!r}")
        return False
    if obj.namespace is not None and (msg := names.dns1123_label(obj.namespace)):
        f.error(("metadata", "namespace"), msg)
    if obj.kind in ("Pod", "Deployment", "Namespace"):
        rule = names.dns1123_label if obj.kind == "Namespace" else names.dns1123_subdomain
        f.check(("metadata", "name"), obj.name, rule)
    return True


def decode(objects: list[RawObject], report: Report) -> Inputs:
    inp = Inputs()
    seen: dict[tuple[str, str | None, str], RawObject] = {}
    unique: list[RawObject] = []
    for obj in objects:
        key = (obj.kind, obj.namespace, obj.name)
        if key in seen:
            first = seen[key]
            report.error(obj, ("metadata", "name"), f"duplicate {obj.kind} {obj.key} "
                         f"(first defined at {first.file}:{first.line})")
            continue
        seen[key] = obj
        unique.append(obj)
    configs = [o for o in unique if o.kind == "ClusterConfig"]
    for extra in configs[1:]:
        report.error(extra, ("kind",), f"only one ClusterConfig is allowed (the first is "
                     f"{configs[0].name} at {configs[0].file}:{configs[0].line})")
    if configs and _check_common(configs[0], report):
        before = len(report.problems)
        inp.config_f = Fields(configs[0], report)
        inp.config, inp.node_count, inp.config_nodes, inp.config_unsure = decode_config(
            inp.config_f)
        inp.config_ok = len(report.problems) == before
    for obj in unique:
        if obj.namespace:
            inp.namespaces.add(obj.namespace)
        if obj.kind not in API_VERSIONS:
            where = f"{obj.namespace}/{obj.name}" if obj.namespace else obj.name
            report.warnings.append(f"{obj.file}:{obj.line}: skipped unsupported kind "
                                   f"{obj.kind} {where}")
        elif obj.kind != "ClusterConfig" and _check_common(obj, report):
            _decode_one(obj, report, inp)
    known = {(s.svc.namespace, s.svc.name) for s in inp.services}
    for sl in list(inp.slices):
        if (sl.namespace, sl.service) in known:
            continue
        inp.slices.remove(sl)
        msg = f"service {sl.namespace}/{sl.service} does not exist"
        if sl.legacy:
            sl.f.warn((), f"Endpoints for a missing service: {msg}; ignored")
        else:
            sl.f.error(("metadata", "labels", SERVICE_NAME_LABEL), msg)
    return inp


def _decode_one(obj: RawObject, report: Report, inp: Inputs) -> None:
    kind = obj.kind
    if kind == "Namespace":
        inp.namespaces.add(obj.name)
    elif kind == "Node":
        inp.node_objects.append(decode_node(obj, report))
    elif kind == "Pod":
        inp.pods.append(decode_pod(obj, report))
    elif kind == "Deployment":
        inp.deployments.append(decode_deployment(obj, report))
    elif kind == "Service":
        inp.services.append(decode_service(obj, report))
    elif kind == "EndpointSlice":
        if (sl := decode_slice(obj, report)) is not None:
            inp.slices.append(sl)
    elif kind == "Endpoints":
        inp.slices.extend(decode_endpoints(obj, report))
    elif kind in ("Ingress", "IngressClass"):
        check = decode_ingress if kind == "Ingress" else decode_ingress_class
        check(obj, report)                  # checked here, used later (ingress.rules)
        body = plain(obj.body)
        if obj.namespace:
            body.setdefault("metadata", {})["namespace"] = obj.namespace
        (inp.ingresses if kind == "Ingress" else inp.ingress_classes).append(body)
