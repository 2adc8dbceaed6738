# Optional: compare kdp's iptables-save output with the real iptables-save.
# Runs only with KDP_ORACLE=1 as root: loads the fixtures into a throwaway
# network namespace (never the host's rules) and deletes it afterwards.
import os
import shutil
import subprocess
import uuid

import pytest

from kdp.netfilter import parse_iptables_save
from nf_helpers import FIXTURES

pytestmark = [
    pytest.mark.root, pytest.mark.oracle,
    pytest.mark.skipif(os.environ.get("KDP_ORACLE") != "1" or os.geteuid() != 0
                       or not shutil.which("iptables-restore"),
                       reason="needs KDP_ORACLE=1, root and iptables-restore"),
]


def real_save(text: str) -> str:
    ns = f"kdpnf-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "iptables-restore", "-c"], input=text,
                       text=True, check=True)
        out = subprocess.run(["ip", "netns", "exec", ns, "iptables-save", "-c"],
                             capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    return "".join(ln + "\n" for ln in out.splitlines() if not ln.startswith("#"))


@pytest.mark.parametrize("name", ["kube-proxy.restore", "kube-proxy.save"])
def test_fixture_prints_like_the_real_iptables_save(name):
    text = (FIXTURES / name).read_text()
    mine = parse_iptables_save(text, name).to_iptables_save(counters=True)
    mine = "".join(ln + "\n" for ln in mine.splitlines() if not ln.startswith("#"))
    assert mine == real_save(text)


# SCTP matches (issue 13): verified against the real iptables-save (1.8, nft) in a netns
SCTP_RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
[0:0] -A INPUT -p sctp -m sctp --dport 80 -j ACCEPT
[0:0] -A INPUT -p sctp -m sctp ! --sport 1000:2000 --dport 80 -j ACCEPT
[0:0] -A INPUT -p sctp -m sctp --chunk-types only DATA:Be,INIT -j DROP
[0:0] -A INPUT -p sctp -m sctp ! --chunk-types all ABORT:T,SHUTDOWN_COMPLETE:t -j DROP
[0:0] -A INPUT -p sctp -m sctp --chunk-types any INIT,INIT_ACK,COOKIE_ECHO -j DROP
[0:0] -A INPUT -p sctp -m sctp --chunk-types any ALL -j DROP
[0:0] -A INPUT -p sctp -m sctp --chunk-types only NONE -j DROP
[0:0] -A INPUT -p sctp -m multiport --dports 80,90:99 -j DROP
COMMIT
"""


def test_sctp_matches_print_like_the_real_iptables_save():
    mine = parse_iptables_save(SCTP_RULES, "sctp").to_iptables_save(counters=True)
    mine = "".join(ln + "\n" for ln in mine.splitlines() if not ln.startswith("#"))
    assert mine == real_save(SCTP_RULES)
