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
