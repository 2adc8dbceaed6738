# One test per validation rule of the cluster input: each asserts the file, the
# field path and the message of the problem (and the line where it matters).
from __future__ import annotations

from k8s_helpers import CONFIG, find, load, pod, problems, svc, user_pods
from kdp.k8s import load_cluster_text


def config(**spec: str) -> str:
    """CONFIG with spec fields replaced/added (values are YAML)."""
    lines = CONFIG.splitlines()
    head, body = lines[:4], {}
    for line in lines[4:]:
        key, _, value = line.strip().partition(": ")
        body[key] = value
    body.update(spec)
    return "\n".join(head + [f"  {k}: {v}" for k, v in body.items() if v is not None]) + "\n"


def cfg_problem(field: str, *docs: str, **spec: str):
    p = find(problems(config(**spec), *docs), field)
    assert p.file == "t.yaml" and p.kind == "ClusterConfig" and p.name == "test"
    return p


# --- names ---------------------------------------------------------------------------

def test_pod_name_must_be_dns1123_subdomain():
    p = find(problems(pod("Web_1")), "metadata.name")
    assert p.file == "t.yaml" and p.line == 3 and "RFC 1123 subdomain" in p.message


def test_namespace_name_must_be_dns1123_label():
    p = find(problems(pod(ns="shop.v1")), "metadata.namespace")
    assert p.name == "web" and "RFC 1123 label" in p.message


def test_namespace_object_name_must_be_dns1123_label():
    p = find(problems("apiVersion: v1\nkind: Namespace\nmetadata: {name: Shop}\n"), "metadata.name")
    assert p.kind == "Namespace" and "RFC 1123 label" in p.message


def test_service_name_must_be_dns1035_label():
    p = find(problems(svc("1web")), "metadata.name")
    assert p.kind == "Service" and "RFC 1035 label" in p.message


def test_container_port_name_must_be_iana_svc_name():
    p = find(problems(pod(ports="[{name: web-http-port-too-long, containerPort: 80}]")),
             "spec.containers[0].ports[0].name")
    assert "longer than 15" in p.message


def test_label_values_are_checked():
    p = find(problems(pod(labels="{app: 'not ok'}")), "metadata.labels.app")
    assert "label value" in p.message


# --- ClusterConfig ---------------------------------------------------------------------

def test_cidr_with_too_long_prefix():
    p = cfg_problem("spec.podCIDR", podCIDR="10.0.0.0/33")
    assert p.line == 5 and "not a valid IPv4 CIDR" in p.message


def test_cidr_with_host_bits_set():
    p = cfg_problem("spec.serviceCIDR", serviceCIDR="10.2.0.1/24")
    assert "host bits set" in p.message and "10.2.0.0/24" in p.message


def test_cidr_needs_a_prefix():
    assert "not a CIDR" in cfg_problem("spec.vnetSubnet", vnetSubnet="10.240.0.0").message


def test_invalid_ip_address():
    assert "not a valid IPv4 address" in cfg_problem("spec.dnsServiceIP",
                                                     dnsServiceIP="10.2.0.300").message


def test_overlapping_pod_and_service_cidr_names_both():
    p = cfg_problem("spec.serviceCIDR", serviceCIDR="10.244.128.0/24", dnsServiceIP="10.244.128.10")
    assert p.message == "serviceCIDR 10.244.128.0/24 overlaps podCIDR 10.244.0.0/16"


def test_docker_bridge_overlapping_vnet():
    p = cfg_problem("spec.dockerBridgeAddress", dockerBridgeAddress="10.240.5.1/24")
    assert p.message == "dockerBridgeAddress 10.240.5.0/24 overlaps vnetSubnet 10.240.0.0/16"


def test_docker_bridge_must_be_an_address_with_prefix():
    p = cfg_problem("spec.dockerBridgeAddress", dockerBridgeAddress="172.17.0.0/16")
    assert "host address with a prefix" in p.message


def test_dns_service_ip_outside_service_cidr():
    p = cfg_problem("spec.dnsServiceIP", dnsServiceIP="10.3.0.10")
    assert p.message == "dnsServiceIP 10.3.0.10 is outside serviceCIDR 10.2.0.0/24"


def test_dns_service_ip_is_the_network_address():
    p = cfg_problem("spec.dnsServiceIP", dnsServiceIP="10.2.0.0")
    assert "network address (first address)" in p.message


def test_pod_cidr_too_small_for_the_nodes():
    p = cfg_problem("spec.podCIDR", podCIDR="10.244.0.0/23")
    assert "room for 2 node pod ranges of /24" in p.message and "3 nodes" in p.message


def test_node_pod_prefix_larger_than_pod_cidr():
    p = cfg_problem("spec.nodePodPrefix", podCIDR="10.244.0.0/24", nodePodPrefix="20")
    assert "larger than podCIDR" in p.message


def test_unknown_network_plugin():
    p = cfg_problem("spec.networkPlugin", networkPlugin="calico")
    assert "unknown networkPlugin 'calico'" in p.message and "kubenet, azure" in p.message


def test_unknown_hairpin_mode():
    p = cfg_problem("spec.hairpinMode", hairpinMode="hairpin")
    assert "unknown hairpinMode 'hairpin'" in p.message


def test_unknown_config_field_suggests_the_right_one():
    p = cfg_problem("spec.serviceCidr", serviceCidr="10.2.0.0/24")
    assert "unknown field 'serviceCidr'" in p.message and "'serviceCIDR'" in p.message


def test_unknown_kube_proxy_field():
    p = cfg_problem("spec.kubeProxy.masquerade", kubeProxy="{masquerade: true}")
    assert "did you mean 'masqueradeAll'" in p.message


def test_kube_proxy_ipvs_mode_not_supported_yet():
    p = cfg_problem("spec.kubeProxy.mode", kubeProxy="{mode: ipvs}")
    assert "not supported yet" in p.message


def test_kube_proxy_unknown_mode():
    p = cfg_problem("spec.kubeProxy.mode", kubeProxy="{mode: userspace}")
    assert "must be iptables or nftables" in p.message


def test_node_port_range_format():
    p = cfg_problem("spec.nodePortRange", nodePortRange="'32767-30000'")
    assert "not a port range" in p.message


def test_wrong_type_is_a_problem():
    p = cfg_problem("spec.maxPods", maxPods="'30'")
    assert p.message == "must be an integer, got string '30'"


def test_duplicate_node_names_in_config():
    p = cfg_problem("spec.nodes[1].name", nodes="[{name: n1}, {name: n1}]")
    assert "duplicate node name 'n1'" in p.message


def test_duplicate_node_ips():
    p = cfg_problem("spec.nodes[1].ip",
                    nodes="[{name: n1, ip: 10.240.0.9}, {name: n2, ip: 10.240.0.9}]")
    assert p.message == "node IP 10.240.0.9 is already used by node n1"


def test_node_ip_outside_vnet():
    p = find(problems(CONFIG, """
        apiVersion: v1
        kind: Node
        metadata: {name: n9}
        status: {addresses: [{type: InternalIP, address: 192.168.1.4}]}
        """), "status.addresses[0].address")
    assert p.kind == "Node" and p.line == 14 and "outside vnetSubnet" in p.message


def test_node_pod_cidr_outside_pod_cidr():
    p = cfg_problem("spec.nodes[0].podCIDR", nodes="[{name: n1, podCIDR: 10.9.0.0/24}]")
    assert "outside podCIDR 10.244.0.0/16" in p.message


def test_node_pod_cidrs_overlapping():
    p = cfg_problem("spec.nodes[1].podCIDR", nodes="[{name: n1, podCIDR: 10.244.0.0/23}, "
                    "{name: n2, podCIDR: 10.244.1.0/24}]")
    assert "overlaps the pod CIDR of node n1" in p.message


def test_node_count_less_than_node_objects():
    node = "apiVersion: v1\nkind: Node\nmetadata: {name: %s}\n"
    p = cfg_problem("spec.nodes", node % "a", node % "b", nodes="1")
    assert "spec.nodes is 1 but 2 nodes are declared" in p.message


def test_more_than_one_cluster_config():
    p = find(problems(CONFIG, CONFIG.replace("name: test", "name: other")), "kind")
    assert p.name == "other" and p.line == 12 and "only one ClusterConfig" in p.message


def test_external_host_inside_the_pod_cidr():
    p = cfg_problem("spec.externalHosts[0].address", externalHosts="[{address: 10.244.3.3}]")
    assert "inside podCIDR" in p.message


# --- objects ---------------------------------------------------------------------------

def test_wrong_api_version_for_kind():
    p = find(problems(pod().replace("apiVersion: v1", "apiVersion: apps/v1")), "apiVersion")
    assert "Pod must have apiVersion v1" in p.message


def test_duplicate_objects():
    p = find(problems(pod(), pod()), "metadata.name")
    assert p.line == 12 and "duplicate Pod default/web (first defined at t.yaml:1)" in p.message


def test_same_name_in_other_namespace_or_kind_is_fine():
    c = load(pod(), pod(ns="other"), svc())
    assert len(user_pods(c)) == 2


def test_container_port_out_of_range():
    p = find(problems(pod(ports="[{containerPort: 70000}]")),
             "spec.containers[0].ports[0].containerPort")
    assert p.line == 8 and p.message == "70000 is out of range 1-65535"


def test_service_port_out_of_range():
    p = find(problems(svc(spec="  ports: [{port: 0}]\n")), "spec.ports[0].port")
    assert "out of range 1-65535" in p.message


def test_unknown_protocol():
    p = find(problems(pod(ports="[{containerPort: 80, protocol: tcp}]")),
             "spec.containers[0].ports[0].protocol")
    assert "must be TCP, UDP or SCTP, got 'tcp'" in p.message


def test_two_containers_same_port_share_a_network_namespace():
    found = problems("""
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
          - name: app
            ports: [{containerPort: 8080}]
          - name: sidecar
            ports:
            - containerPort: 9090
            - containerPort: 8080
        """)
    p = find(found, "spec.containers[1].ports[1].containerPort")
    assert p.line == 11 and "8080/TCP is already used by container 'app'" in p.message
    assert "share one network namespace" in p.message


def test_same_port_number_other_protocol_is_fine():
    c = load(pod(ports="[{containerPort: 53, protocol: UDP}, {containerPort: 53}]"))
    assert len(c.pods[0].ports()) == 2


def test_node_name_of_a_missing_node():
    p = find(problems(CONFIG, pod(extra="  nodeName: n9\n")), "spec.nodeName")
    assert p.kind == "Pod" and p.message == "node 'n9' does not exist"


def test_node_selector_matching_no_node():
    p = find(problems(pod(extra="  nodeSelector: {disk: ssd}\n")), "spec.nodeSelector")
    assert p.message == "no node has the labels disk=ssd"


def test_deployment_problems_point_into_the_template():
    found = problems("""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              nodeSelector: {disk: ssd}
              containers: [{name: c}]
        """)
    assert len(found) == 1        # one problem, not one per replica
    p = found[0]
    assert (p.kind, p.field, p.line) == ("Deployment", "spec.template.spec.nodeSelector", 10)


def test_deployment_selector_must_match_template():
    p = find(problems("""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: api}}
            spec: {containers: [{name: c}]}
        """), "spec.selector")
    assert "does not match the template labels app=api" in p.message


def test_pod_needs_containers():
    p = find(problems("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {}\n"),
             "spec.containers")
    assert "required" in p.message


def test_duplicate_pod_ips():
    ip = "status: {podIP: 10.244.0.5}\n"
    p = find(problems(CONFIG, pod("a", extra="  nodeName: n1\n" + ip),
                      pod("b", extra="  nodeName: n1\n" + ip)), "status.podIP")
    assert p.name == "b" and p.message == "pod IP 10.244.0.5 is already used by pod default/a"


def test_pod_ip_outside_its_node_pod_cidr():
    p = find(problems(CONFIG, pod(extra="  nodeName: n1\nstatus: {podIP: 10.244.1.5}\n")),
             "status.podIP")
    assert p.line == 20 and "outside node n1's pod CIDR 10.244.0.0/24" in p.message


def test_pod_ip_on_the_cbr0_gateway():
    p = find(problems(CONFIG, pod(extra="  nodeName: n1\nstatus: {podIP: 10.244.0.1}\n")),
             "status.podIP")
    assert "cbr0 gateway address of node n1" in p.message


def test_pod_ip_conflicting_with_a_node_ip():
    p = find(problems(config(networkPlugin="azure"),
                      pod(extra="  nodeName: n1\nstatus: {podIP: 10.240.0.5}\n")), "status.podIP")
    assert p.message == "pod IP 10.240.0.5 conflicts with the IP of node n2"


def test_host_network_pod_with_another_ip():
    p = find(problems(CONFIG, pod(extra="  nodeName: n1\n  hostNetwork: true\n"
                                        "status: {podIP: 10.240.0.9}\n")), "status.podIP")
    assert "hostNetwork pod has its node's IP 10.240.0.4" in p.message


def test_endpoint_slice_for_a_missing_service():
    p = find(problems("""
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: ghost-1
          labels: {kubernetes.io/service-name: ghost}
        addressType: IPv4
        endpoints: []
        """), "metadata.labels.kubernetes.io/service-name")
    assert p.line == 5 and p.message == "service default/ghost does not exist"


def test_unknown_service_type():
    p = find(problems(svc(spec="  type: Internal\n  ports: [{port: 80}]\n")), "spec.type")
    assert "must be one of ClusterIP" in p.message


def test_duplicate_service_port_names():
    p = find(problems(svc(spec="  ports: [{name: a, port: 80}, {name: a, port: 81}]\n")),
             "spec.ports[1].name")
    assert p.message == "duplicate port name 'a' (also spec.ports[0])"


def test_more_than_one_unnamed_service_port():
    p = find(problems(svc(spec="  ports: [{port: 80}, {port: 81}]\n")), "spec.ports[1].name")
    assert "must name every port" in p.message


def test_duplicate_service_port_number():
    p = find(problems(svc(spec="  ports: [{name: a, port: 80}, {name: b, port: 80}]\n")),
             "spec.ports[1].port")
    assert "duplicate port 80/TCP" in p.message


def test_service_needs_a_port():
    assert "at least one port" in find(problems(svc(spec="  selector: {a: b}\n")),
                                       "spec.ports").message


def test_duplicate_cluster_ips():
    spec = "  clusterIP: 10.2.0.50\n  ports: [{port: 80}]\n"
    p = find(problems(CONFIG, svc("a", spec=spec), svc("b", spec=spec)), "spec.clusterIP")
    assert p.name == "b" and p.message == "clusterIP 10.2.0.50 is already used by service default/a"


def test_cluster_ip_outside_service_cidr():
    p = find(problems(CONFIG, svc(spec="  clusterIP: 10.3.0.1\n  ports: [{port: 80}]\n")),
             "spec.clusterIP")
    assert p.message == "clusterIP 10.3.0.1 is outside serviceCIDR 10.2.0.0/24"


def test_dns_service_ip_is_reserved_for_kube_dns():
    p = find(problems(CONFIG, svc(spec="  clusterIP: 10.2.0.10\n  ports: [{port: 80}]\n")),
             "spec.clusterIP")
    assert "reserved for kube-system/kube-dns" in p.message


def test_kube_dns_must_use_dns_service_ip():
    p = find(problems(CONFIG, svc("kube-dns", "kube-system",
                                  "  clusterIP: 10.2.0.11\n  ports: [{port: 53}]\n")),
             "spec.clusterIP")
    assert "must have clusterIP dnsServiceIP 10.2.0.10" in p.message


def test_headless_node_port_service():
    p = find(problems(svc(spec="  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]\n")),
             "spec.clusterIP")
    assert "not allowed for NodePort" in p.message


def test_node_port_out_of_range():
    p = find(problems(svc(spec="  type: NodePort\n  ports: [{port: 80, nodePort: 8080}]\n")),
             "spec.ports[0].nodePort")
    assert p.message == ("nodePort 8080 is outside the cluster's node port range 30000-32767 (the "
                         "default; a ClusterConfig's spec.nodePortRange changes it)")


def test_node_port_collision():
    spec = "  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n"
    p = find(problems(svc("a", spec=spec), svc("b", spec=spec)), "spec.ports[0].nodePort")
    assert p.name == "b" and p.message == "nodePort 30080/TCP is already used by service default/a"


def test_node_port_on_a_cluster_ip_service():
    p = find(problems(svc(spec="  ports: [{port: 80, nodePort: 30080}]\n")),
             "spec.ports[0].nodePort")
    assert "only allowed for NodePort and LoadBalancer" in p.message


def test_health_check_node_port_needs_local_load_balancer():
    p = find(problems(svc(spec="  type: NodePort\n  healthCheckNodePort: 30500\n"
                               "  ports: [{port: 80}]\n")), "spec.healthCheckNodePort")
    assert "externalTrafficPolicy Local" in p.message


def test_named_target_port_no_pod_defines_is_a_warning():
    c = load(pod(), svc(spec="  selector: {app: web}\n  ports: [{port: 80, targetPort: web}]\n"))
    assert c.service("default", "web").endpoints == []
    assert c.warnings == ["t.yaml:15: Service default/web: spec.ports[0].targetPort: no pod "
                          "selected by app=web has a TCP container port named 'web'; this port "
                          "has no endpoints"]


def test_invalid_named_target_port():
    p = find(problems(svc(spec="  ports: [{port: 80, targetPort: '8080'}]\n")),
             "spec.ports[0].targetPort")
    assert "at least one letter" in p.message


def test_invalid_traffic_policy():
    p = find(problems(svc(spec="  externalTrafficPolicy: Global\n  ports: [{port: 80}]\n")),
             "spec.externalTrafficPolicy")
    assert "must be Cluster or Local" in p.message


def test_load_balancer_source_range_with_host_bits():
    """The API server (legacy CIDR validation) and kube-proxy (ParseCIDRSloppy) take
    it as its network: a warning, not an error."""
    c = load_cluster_text(svc(spec="  type: LoadBalancer\n  loadBalancerSourceRanges: [1.2.3.4/8]\n"
                                   "  ports: [{port: 80}]\n"), "t.yaml")
    assert [str(n) for n in c.service("default", "web").load_balancer_source_ranges] == ["1.0.0.0/8"]
    assert any("spec.loadBalancerSourceRanges[0]: 1.2.3.4/8 has host bits set" in w for w in c.warnings)


def test_ipv6_is_not_supported():
    p = find(problems(svc(spec="  externalIPs: ['2001:db8::1']\n  ports: [{port: 80}]\n")),
             "spec.externalIPs[0]")
    assert "IPv6 is not supported" in p.message
