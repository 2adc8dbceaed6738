# The command line (spec/cli.md) end to end: demo, validate, topology, inspect,
# trace and run, with their JSON contracts and exit statuses.
import json
import os

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from kdp.cli import main
from kdp.emulator import Emulator


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo():
    return Emulator.demo()


def test_validate_demo(capsys):
    code, out, _ = run(capsys, "validate", "demo")
    assert code == 0 and out.startswith("ok: 3 nodes")


def test_validate_bad_file_exits_2_with_located_problem(capsys, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: []}\n")
    code, out, err = run(capsys, "validate", str(f))
    assert code == 2 and out == ""
    assert str(f) in err and "Pod" in err and "metadata.name" in err
    assert "Traceback" not in err


def test_missing_cluster_path_is_a_clear_error(capsys):
    code, _, err = run(capsys, "validate", "/nonexistent/cluster.yaml")
    assert code == 2 and "no such file" in err


def test_topology_json_contract(capsys, demo):
    code, out, _ = run(capsys, "topology", "demo", "--json")
    doc = json.loads(out)
    assert code == 0
    assert set(doc) == {"cluster", "nodes", "pods", "services", "ingresses"}
    assert doc["cluster"]["service_cidr"] == "10.2.0.0/24" and doc["cluster"]["dns_service_ip"] == "10.2.0.10"
    n = doc["nodes"][0]
    assert set(n) >= {"name", "ip", "mac", "pod_cidr", "bridge", "routes"}
    assert n["bridge"]["name"] == "cbr0" and n["bridge"]["ip"] == "10.244.0.1"
    assert n["bridge"]["hairpin_mode"] == "hairpin-veth"
    assert {"dst": "default", "via": "10.240.0.1", "dev": "eth0"} in n["routes"]
    p = next(p for p in doc["pods"] if p["name"] == "client")
    assert p["gateway"] == "10.244.0.1" and p["host_veth"]["name"].startswith("veth")
    assert p["host_network"] is False
    s = next(s for s in doc["services"] if s["name"] == "kube-dns")
    assert s["cluster_ip"] == "10.2.0.10" and {pt["protocol"] for pt in s["ports"]} == {"UDP", "TCP"}
    # deterministic: same file, same names and MACs
    code, again, _ = run(capsys, "topology", "demo", "--json")
    assert again == out


def test_topology_svg(capsys, tmp_path):
    svg = tmp_path / "t.svg"
    code, _, _ = run(capsys, "topology", "demo", "--svg", str(svg))
    text = svg.read_text()
    assert code == 0 and text.startswith("<svg") and "cbr0" in text and "client" in text


def test_inspect_pod_shows_pause_container_and_shared_namespace(capsys, demo):
    pod = next(p for p in demo.cluster.pods if p.labels.get("app") == "service-a")
    code, out, _ = run(capsys, "inspect", "demo", f"pod/backend/{pod.name}", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["pod"]["pause_container"]["name"].startswith(f"k8s_POD_{pod.name}_backend_")
    assert info["pod"]["pause_container"]["network_settings"]["IPAddress"] == str(pod.ip)
    assert {c["name"].split("_")[1] for c in info["pod"]["containers"]} == {"service-a", "metrics"}
    assert {(l["port"], l["owner"]) for l in info["listening"]} == {(8080, "service-a"), (9090, "metrics")}
    assert any(r.startswith("default via 10.244.") for r in info["routes"])
    code, text, _ = run(capsys, "inspect", "demo", f"pod/backend/{pod.name}")
    assert "pause container" in text and "veth pair" in text


def test_trace_json_contract(capsys, demo):
    target = next(p for p in demo.cluster.pods if p.labels.get("app") == "nginx" and p.node != "x")
    code, out, _ = run(capsys, "trace", "demo", "--from", "pod/default/client", "--to",
                       f"pod/default/{target.name}", "--dport", "80", "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["disposition"] == "delivered" and doc["delivered_to"] == f"pod/default/{target.name}"
    assert set(doc["packet"]) >= {"src", "dst", "proto", "sport", "dport", "ttl", "src_mac", "dst_mac"}
    assert doc["packet"]["dst"] == str(target.ip) and doc["packet"]["proto"] == "tcp"
    assert doc["reply"]["disposition"] == "delivered" and doc["reply"]["delivered_to"] == "pod/default/client"
    comps = {h["component"] for h in doc["hops"]}
    assert comps <= {"veth", "bridge", "arp", "route", "netfilter", "conntrack", "app", "underlay", "link"}
    assert {"veth", "bridge", "route", "app"} <= comps


def test_trace_same_seed_same_json(capsys):
    args = ("trace", "demo", "--from", "pod/default/client", "--to", "ext/1.1.1.1", "--json", "--seed", "3")
    assert run(capsys, *args)[1] == run(capsys, *args)[1]


def test_trace_usage_errors_exit_2(capsys):
    code, _, err = run(capsys, "trace", "demo", "--from", "pod/default/nope", "--to", "ext/1.1.1.1")
    assert code == 2 and "no such pod" in err


def _pcap(tmp_path, demo):
    client = demo.cluster.pod("default", "client")
    target = next(p for p in demo.cluster.pods if p.labels.get("app") == "nginx" and p.node != client.node)
    cns = demo.topology.pod_ns[client.key]
    gw_mac = demo.topology.node_ns[client.node].devices["cbr0"].mac
    src_mac = cns.devices["eth0"].mac
    frames = []
    for i in range(5):
        f = Ether(src=src_mac, dst=gw_mac) / IP(src=str(client.ip), dst=str(target.ip), id=i) / \
            TCP(sport=40000 + i, dport=80, flags="S")
        f.time = 100.0 + i
        frames.append(f)
    bad = Ether(src=src_mac, dst=gw_mac) / IP(src=str(client.ip), dst=str(target.ip), chksum=1) / UDP(sport=1, dport=2)
    bad.time = 106.0
    frames.append(bad)
    path = tmp_path / "in.pcap"
    wrpcap(str(path), frames)
    return path, target


def test_run_pcap_json_lines_and_device_pcaps(capsys, tmp_path, demo):
    path, target = _pcap(tmp_path, demo)
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, "run", "demo", "--pcap", str(path), "--at", "pod/default/client",
                       "--out", str(out_dir), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 7
    assert [r["index"] for r in lines[:6]] == list(range(6))
    assert all(r["disposition"] == "delivered" and r["delivered_to"] == f"pod/default/{target.name}"
               for r in lines[:5])
    assert lines[5]["disposition"] == "dropped" and lines[5]["reason"] == "invalid-checksum"
    s = lines[6]["summary"]
    assert s["frames"] == 6 and s["delivered"] == 5 and s["dropped"] == 1
    assert set(s) >= {"frames", "delivered", "dropped", "rejected", "seconds", "frames_per_second", "fastpath_hits"}
    files = sorted(os.listdir(out_dir))
    assert f"default__client__eth0.pcap" in files
    assert f"default__{target.name}__eth0.pcap" in files
    assert f"{target.node}__cbr0.pcap" in files
    got = rdpcap(str(out_dir / f"default__{target.name}__eth0.pcap"))
    syns = [p for p in got if TCP in p and p[TCP].flags == "S"]
    assert len(syns) == 5 and syns[0][IP].ttl == 62
    assert float(syns[0].time) == pytest.approx(100.0)


def test_run_is_identical_with_and_without_no_fastpath(capsys, tmp_path, demo):
    path, _ = _pcap(tmp_path, demo)
    a = run(capsys, "run", "demo", "--pcap", str(path), "--at", "pod/default/client", "--json")[1]
    b = run(capsys, "run", "demo", "--pcap", str(path), "--at", "pod/default/client", "--json",
            "--no-fastpath")[1]
    strip = lambda s: [l for l in s.splitlines() if '"summary"' not in l]
    assert strip(a) == strip(b)


def test_run_rejects_non_pcap(capsys, tmp_path):
    f = tmp_path / "x.pcap"
    f.write_text("not a pcap")
    code, _, err = run(capsys, "run", "demo", "--pcap", str(f), "--at", "pod/default/client")
    assert code == 2 and "x.pcap" in err


def test_demo_tour_runs_and_writes_captures(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "--out", str(tmp_path))
    assert code == 0
    for stop in ("same-node pod-to-pod", "cross-node pod-to-pod", "node-to-pod", "pod-to-node", "intra-pod"):
        assert stop in out
    assert "DROPPED" not in out.split("== 1.")[1].split("== 7.")[0]
    assert os.path.exists(tmp_path / "traces.json") and os.listdir(tmp_path / "pcap")


def test_rules_unknown_node_is_a_usage_error(capsys):
    code, _, err = run(capsys, "rules", "demo", "--node", "nope")
    assert code == 2 and "no such node" in err


def test_trace_with_a_real_nodes_dump_instead_of_generated_rules(capsys, tmp_path, demo):
    from kdp.k8s.kubeproxy import generate_rules
    node = demo.cluster.pod("default", "client").node
    text = generate_rules(demo.cluster, node)
    svc = demo.cluster.service("backend", "service-a")
    # the operator added a rule of their own in front of kube-proxy's
    first_forward = next(l for l in text.splitlines() if l.startswith("-A FORWARD"))
    text = text.replace(first_forward, f"-A FORWARD -p tcp -m conntrack --ctorigdst {svc.cluster_ip}/32 -j DROP\n"
                        + first_forward, 1)
    dump = tmp_path / "node.rules"
    dump.write_text(text)
    code, out, _ = run(capsys, "trace", "demo", "--from", "pod/default/client", "--to", "svc/backend/service-a",
                       "--rules", f"{node}={dump}", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["disposition"] == "dropped" and doc["reason"] == "rule:filter/FORWARD#1"


def test_rules_dump_with_unsupported_match_names_the_line(capsys, tmp_path):
    dump = tmp_path / "bad.rules"
    dump.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                    "-A INPUT -m frobnicate --frob 1 -j ACCEPT\nCOMMIT\n")
    code, _, err = run(capsys, "trace", "demo", "--from", "pod/default/client", "--to", "ext/1.1.1.1",
                       "--rules", str(dump))
    assert code == 2 and f"{dump}:5" in err and "frobnicate" in err and "Traceback" not in err


def test_conntrack_and_counters_after_a_trace(capsys):
    code, out, _ = run(capsys, "trace", "demo", "--from", "pod/default/client", "--to", "svc/backend/service-a",
                       "--conntrack", "--counters", "--json")
    doc = json.loads(out)
    home = next(n for n, t in doc["conntrack"].items() if t)
    assert "dst=10.2.0.1 sport=" in doc["conntrack"][home] and "dport=80" in doc["conntrack"][home]
    assert any(line.startswith("[1:") and "KUBE-SVC-" in line for line in doc["counters"][home].splitlines())


def test_cluster_config_rules_file_per_node(capsys, tmp_path):
    (tmp_path / "n1.rules").write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                                       "COMMIT\n")
    (tmp_path / "cluster.yaml").write_text(
        "apiVersion: kdp.dev/v1alpha1\nkind: ClusterConfig\nmetadata: {name: r}\n"
        "spec: {nodes: [{name: n1, rulesFile: n1.rules}, {name: n2}]}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {nodeName: n1, containers: [{name: c}]}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {nodeName: n2, containers: [{name: c}]}\n")
    code, out, _ = run(capsys, "trace", str(tmp_path), "--from", "pod/default/a", "--to", "pod/default/b", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["disposition"] == "dropped" and doc["reason"] == "policy:filter/FORWARD"
    (tmp_path / "cluster.yaml").write_text(
        (tmp_path / "cluster.yaml").read_text().replace("n1.rules", "missing.rules"))
    code, _, err = run(capsys, "validate", str(tmp_path))
    assert code == 2 and "spec.nodes[0].rulesFile" in err and "missing.rules" in err


def test_trace_to_a_dns_name_resolves_first(capsys):
    code, out, _ = run(capsys, "trace", "demo", "--from", "pod/default/client", "--to", "service-a.backend",
                       "--json")
    doc = json.loads(out)
    assert code == 0 and doc["disposition"] == "delivered" and doc["delivered_to"].startswith("pod/backend/service-a-")
    names = [q["name"] for q in doc["resolution"]["queries"]]
    assert names[0].startswith("service-a.backend.default.svc.") and len(names) == 2


def test_trace_to_an_unknown_name_exits_1(capsys):
    code, _, err = run(capsys, "trace", "demo", "--from", "pod/default/client", "--to", "nope.nowhere")
    assert code == 1 and "did not resolve" in err


def test_resolve_command_prints_like_dig(capsys):
    code, out, _ = run(capsys, "resolve", "demo", "--from", "pod/default/client", "kube-dns.kube-system")
    assert code == 0 and "ANSWER" in out and "10.2.0.10" in out
