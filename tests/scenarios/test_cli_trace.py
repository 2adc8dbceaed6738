# `kdp trace` as people read it and scripts use it: the default shows the hops
# and the rules that decided (ARP, rules that did not match and jumps that
# changed nothing stay behind --detail full), columns stay aligned whatever the
# node names, and the exit status says whether the packet was delivered.
#
#   client (node 0) --cbr0--> node 0 [kube-proxy DNAT] --underlay--> node 2 --cbr0--> service-a pod
import re
import shlex

from .kdp_cli import clean_error, kdp

CLIENT = "pod/default/client"
SVC = "svc/backend/service-a"


def hop_lines(text: str) -> list[str]:
    return [l for l in text.splitlines() if l[:3] in ("-> ", "<- ", "   ")]


def test_default_detail_shows_hops_and_deciding_rules_only():
    r = kdp("trace", "demo", "--from", CLIENT, "--to", SVC)
    assert r.returncode == 0, r.stderr
    hops = hop_lines(r.stdout)
    comps = [l.split()[2] for l in hops]
    assert "arp" not in comps                                   # no ARP exchange
    assert not any("=> no match" in l for l in hops)            # no rule that did not match
    assert not any("KUBE-PROXY-FIREWALL" in l for l in hops)    # a jump that changed nothing
    # the chain of rules that chose the endpoint, each once, in order
    nat = [l for l in hops if " netfilter " in l and "nat/" in l]
    chains = [re.sub(r"[A-Z0-9]{16}$", "", re.search(r"nat/(\S+?)#", l)[1]) for l in nat]
    assert chains == ["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-", "KUBE-SEP-"]
    assert "DNAT --to-destination" in nat[-1] and '"backend/service-a:http cluster IP"' in nat[1]
    assert any("nat dnat 10.2.0.1:80 ->" in l for l in hops)    # conntrack's rewrite stays
    assert len(hops) < 40


def test_summary_hides_arp_as_documented_and_full_shows_every_rule():
    summary = kdp("trace", "demo", "--from", CLIENT, "--to", SVC, "--detail", "summary")
    full = kdp("trace", "demo", "--from", CLIENT, "--to", SVC, "--detail", "full")
    assert summary.stdout == kdp("trace", "demo", "--from", CLIENT, "--to", SVC).stdout
    assert not [l for l in hop_lines(summary.stdout) if l.split()[2] == "arp"]
    assert [l for l in hop_lines(full.stdout) if l.split()[2] == "arp"]
    assert any("=> no match" in l for l in full.stdout.splitlines())
    assert any("KUBE-PROXY-FIREWALL" in l for l in full.stdout.splitlines())
    # the result lines are the same in every detail
    tail = lambda t: t.splitlines()[-2:]
    assert tail(summary.stdout) == tail(full.stdout)
    minimal = kdp("trace", "demo", "--from", CLIENT, "--to", SVC, "--detail", "minimal")
    assert minimal.stdout.splitlines() == tail(full.stdout)


def test_a_drop_by_policy_is_shown_in_the_summary(tmp_path):
    (tmp_path / "n1.rules").write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n"
                                       ":OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    (tmp_path / "cluster.yaml").write_text(
        "apiVersion: kdp.dev/v1alpha1\nkind: ClusterConfig\nmetadata: {name: r}\n"
        "spec: {nodes: [{name: n1, rulesFile: n1.rules}, {name: n2}]}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {nodeName: n1, containers: [{name: c}]}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {nodeName: n2, containers: [{name: c}]}\n")
    r = kdp("trace", tmp_path, "--from", "pod/default/a", "--to", "pod/default/b")
    assert any("filter/FORWARD: -P FORWARD DROP => policy DROP" in l for l in hop_lines(r.stdout)), r.stdout


LONG = ["aks-systempool-38127642-vmss000000", "aks-userpool0123456-38127642-vmss00000a"]


def test_columns_stay_aligned_with_aks_length_node_names(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "apiVersion: kdp.dev/v1alpha1\nkind: ClusterConfig\nmetadata: {name: long}\n"
        f"spec: {{nodes: [{{name: {LONG[0]}}}, {{name: {LONG[1]}}}]}}\n---\n"
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nspec: {{nodeName: {LONG[0]}, containers: [{{name: c}}]}}\n---\n"
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: b}}\nspec: {{nodeName: {LONG[1]}, containers: "
        "[{name: c, ports: [{containerPort: 80}]}]}\n")
    for detail in ("summary", "full"):
        r = kdp("trace", tmp_path, "--from", "pod/default/a", "--to", f"node/{LONG[1]}", "--detail", detail)
        lines = hop_lines(r.stdout)
        assert any(LONG[1] in l.split()[1] for l in lines)
        # the component, action and detail columns start at the same offset on every line
        for col in (2, 3):
            offsets = {len(re.match(r"(?:\S+\s+){%d}" % col, l[3:])[0]) for l in lines}
            assert len(offsets) == 1, (detail, col, sorted(offsets))


def test_exit_status_0_delivered_1_dropped_2_bad_input():
    ok = kdp("trace", "demo", "--from", CLIENT, "--to", "ext/93.184.216.34", "--dport", "443")
    assert ok.returncode == 0 and "request: DELIVERED" in ok.stdout
    dropped = kdp("trace", "demo", "--from", CLIENT, "--to", "ext/93.184.216.34", "--dport", "443", "--ttl", "1")
    assert dropped.returncode == 1 and "request: DROPPED" in dropped.stdout and "ttl-exceeded" in dropped.stdout
    as_json = kdp("trace", "demo", "--from", CLIENT, "--to", "ext/93.184.216.34", "--ttl", "1", "--json")
    assert as_json.returncode == 1 and '"disposition": "dropped"' in as_json.stdout
    bad = kdp("trace", "demo", "--from", CLIENT, "--to", "pod/default/nope")
    assert bad.returncode == 2 and clean_error(bad).startswith("kdp: error:")


def test_the_demo_next_steps_are_runnable_short_traces():
    out = kdp("demo").stdout
    steps = out.split("\nnext steps:\n", 1)[1].splitlines()
    traces = [l.split("#")[0].strip() for l in steps if l.strip().startswith("kdp trace")]
    assert traces and not any("--detail" in t or "<" in t for t in traces)
    r = kdp(*shlex.split(traces[0])[1:])
    assert r.returncode == 0 and "request: DELIVERED" in r.stdout
