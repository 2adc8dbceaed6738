# --proxy-mode on `kdp http` and `kdp resolve`: the cluster is built in kube-proxy's
# nftables mode (the hops walk the `ip kube-proxy` table, not KUBE-SERVICES), the default
# stays the ClusterConfig's (iptables for the demo); a bad mode is argparse's one-line error.
import json

import pytest

from kdp.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


HTTP = ("http", "demo", "--from", "pod/default/client", "--url", "http://10.2.0.2/", "--hops")
RESOLVE = ("resolve", "demo", "--from", "pod/default/client", "kube-dns.kube-system", "--hops",
           "--json")


def test_http_proxy_mode_nftables(capsys):
    code, out, _ = run(capsys, *HTTP, "--proxy-mode", "nftables")
    assert code == 0 and "ip kube-proxy/services#1 -> goto service-" in out
    assert "[@service-ips 10.2.0.2 . tcp . 80]" in out and "KUBE-SERVICES" not in out
    code, out, _ = run(capsys, *HTTP)
    assert code == 0 and "KUBE-SERVICES" in out and "ip kube-proxy" not in out


def test_resolve_proxy_mode_nftables(capsys):
    code, out, _ = run(capsys, *RESOLVE, "--proxy-mode", "nftables")
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "NOERROR" and "10.2.0.10" in out
    assert "ip kube-proxy/services" in out and "KUBE-SVC-" not in out
    code, out, _ = run(capsys, *RESOLVE, "--proxy-mode", "iptables")
    assert code == 0 and "KUBE-SVC-" in out and "ip kube-proxy" not in out


@pytest.mark.parametrize("cmd", [HTTP, RESOLVE])
def test_bad_proxy_mode_is_a_usage_error(capsys, cmd):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--proxy-mode", "ipvs"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--proxy-mode: invalid choice: 'ipvs'" in err
