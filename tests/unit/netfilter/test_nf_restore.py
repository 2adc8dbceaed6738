# iptables-save parsing and canonical printing: real dumps round-trip, input
# spellings normalise to what iptables-save 1.8.9 prints (checked against the
# real binary), and every error names its line and option.
import pytest

from kdp.netfilter import Ruleset, RulesetError, parse_iptables_save, restore_into
from nf_helpers import FIXTURES, ruleset_text


def canon(table: str, *lines: str) -> list[str]:
    text = ruleset_text(**{table: list(lines)})
    out = parse_iptables_save(text).to_iptables_save().splitlines()
    return [ln for ln in out if ln.startswith("-A")]


def test_kube_proxy_save_fixture_round_trips_with_counters():
    text = (FIXTURES / "kube-proxy.save").read_text()
    rs = parse_iptables_save(text, "kube-proxy.save")
    body = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert [ln for ln in rs.to_iptables_save(counters=True).splitlines()
            if not ln.startswith("#")] == body


def test_kube_proxy_restore_input_prints_as_the_real_iptables_save():
    """kube.proxy.save is what the real iptables-save printed after loading
    kube-proxy.restore (counters then edited in)."""
    rs = parse_iptables_save((FIXTURES / "kube-proxy.restore").read_text(), "kube-proxy.restore")
    saved = parse_iptables_save((FIXTURES / "kube-proxy.save").read_text())
    assert rs.to_iptables_save() == saved.to_iptables_save()
    assert rs.to_iptables_save() != saved.to_iptables_save(counters=True)


def test_emit_parse_emit_is_stable():
    text = (FIXTURES / "kube-proxy.restore").read_text()
    once = parse_iptables_save(text).to_iptables_save(counters=True)
    twice = parse_iptables_save(once).to_iptables_save(counters=True)
    assert once == twice


def test_counters_are_kept_per_rule_and_policy():
    rs = parse_iptables_save((FIXTURES / "kube-proxy.save").read_text())
    fwd = rs.chain("filter", "FORWARD")
    assert fwd.policy == "DROP" and (fwd.packets, fwd.bytes) != (0, 0)
    assert all(r.packets > 0 for r in fwd.rules)
    assert "[0:0] -A" not in rs.to_iptables_save(counters=True)
    assert "] -A" not in rs.to_iptables_save(counters=False)


@pytest.mark.parametrize("table,given,printed", [
    ("filter", "-A INPUT -s 10.1.2.3 -j ACCEPT", "-A INPUT -s 10.1.2.3/32 -j ACCEPT"),
    ("filter", "-A FORWARD ! -s 10.0.0.0/8 -d 10.1.2.3/8 -i veth+ ! -o eth0 -p 47 -j ACCEPT",
     "-A FORWARD ! -s 10.0.0.0/8 -d 10.0.0.0/8 -i veth+ ! -o eth0 -p gre -j ACCEPT"),
    ("filter", "-A INPUT --source 10.0.0.0/255.255.0.0 --protocol TCP --jump ACCEPT",
     "-A INPUT -s 10.0.0.0/16 -p tcp -j ACCEPT"),
    ("filter", "-A INPUT -p all -j ACCEPT", "-A INPUT -j ACCEPT"),
    ("filter", "-A INPUT -p tcp --dport 80 -m comment --comment x -j ACCEPT",
     "-A INPUT -p tcp -m tcp --dport 80 -m comment --comment x -j ACCEPT"),
    ("filter", "-A INPUT -m comment --comment 'it\\'s' -j ACCEPT",
     "-A INPUT -m comment --comment \"\\'it\\\\\\'s\\'\" -j ACCEPT"),
    ("filter", '-A INPUT -m comment --comment "a \\"b\\" c" -m comment --comment "" -j ACCEPT',
     '-A INPUT -m comment --comment "a \\"b\\" c" -m comment --comment "" -j ACCEPT'),
    ("filter", "-A INPUT -p tcp --syn -j ACCEPT",
     "-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"),
    ("filter", "-A INPUT -p tcp --tcp-flags ALL NONE -j DROP",
     "-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j DROP"),
    ("filter", "-A INPUT -p tcp --sport 1000:2000 ! --dport 80 -j ACCEPT",
     "-A INPUT -p tcp -m tcp --sport 1000:2000 ! --dport 80 -j ACCEPT"),
    ("filter", "-A INPUT -p icmp --icmp-type echo-request -j ACCEPT",
     "-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT"),
    ("filter", "-A INPUT -p icmp ! --icmp-type port-unreachable -j ACCEPT",
     "-A INPUT -p icmp -m icmp ! --icmp-type 3/3 -j ACCEPT"),
    ("filter", "-A INPUT -p udp -m multiport ! --sports 53,1000:2000 -j ACCEPT",
     "-A INPUT -p udp -m multiport ! --sports 53,1000:2000 -j ACCEPT"),
    ("filter", "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT",
     "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT"),
    ("filter", "-A INPUT -m conntrack --ctorigdst 10.0.0.1 --ctorigdstport 80 --ctstatus "
     "ASSURED,SEEN_REPLY --ctproto tcp --ctdir REPLY -j ACCEPT",
     "-A INPUT -m conntrack --ctproto 6 --ctorigdst 10.0.0.1 --ctorigdstport 80 "
     "--ctstatus SEEN_REPLY,ASSURED --ctdir REPLY -j ACCEPT"),
    ("filter", "-A INPUT -m conntrack ! --ctstate DNAT,NEW,INVALID ! --ctreplsrc 1.2.3.4/32 -j ACCEPT",
     "-A INPUT -m conntrack ! --ctstate INVALID,NEW,DNAT ! --ctreplsrc 1.2.3.4 -j ACCEPT"),
    ("filter", "-A INPUT -m mark ! --mark 1 -j ACCEPT", "-A INPUT -m mark ! --mark 0x1 -j ACCEPT"),
    ("filter", "-A INPUT -j REJECT", "-A INPUT -j REJECT --reject-with icmp-port-unreachable"),
    ("filter", "-A INPUT -j REJECT --reject-with admin-prohib",
     "-A INPUT -j REJECT --reject-with icmp-admin-prohibited"),
    ("filter", "-A INPUT -j LOG --log-prefix FOO --log-level warning", "-A INPUT -j LOG --log-prefix FOO"),
    ("filter", '-A INPUT -j LOG --log-prefix "hello world: " --log-level info --log-uid',
     '-A INPUT -j LOG --log-prefix "hello world: " --log-level 6 --log-uid'),
    ("mangle", "-A PREROUTING -m mac --mac-source 02:42:AC:11:00:02 -j MARK --set-mark 0x1",
     "-A PREROUTING -m mac --mac-source 02:42:ac:11:00:02 -j MARK --set-xmark 0x1/0xffffffff"),
    ("mangle", "-A PREROUTING -j MARK --and-mark 0xff",
     "-A PREROUTING -j MARK --set-xmark 0x0/0xffffff00"),
    ("mangle", "-A PREROUTING -j CONNMARK --save-mark --mask 0xff",
     "-A PREROUTING -j CONNMARK --save-mark --nfmask 0xff --ctmask 0xff"),
    ("mangle", "-A PREROUTING -j CONNMARK --set-mark 0x5/0xf",
     "-A PREROUTING -j CONNMARK --set-xmark 0x5/0xf"),
    ("mangle", "-A PREROUTING -m statistic --mode random ! --probability 0.0001 -j ACCEPT",
     "-A PREROUTING -m statistic --mode random ! --probability 0.00009999983 -j ACCEPT"),
    ("mangle", "-A PREROUTING -m statistic --mode nth --every 3 --packet 1 -j ACCEPT",
     "-A PREROUTING -m statistic --mode nth --every 3 --packet 1 -j ACCEPT"),
    ("mangle", "-A PREROUTING -m addrtype --src-type LOCAL,UNICAST --limit-iface-in -j ACCEPT",
     "-A PREROUTING -m addrtype --src-type UNICAST,LOCAL --limit-iface-in -j ACCEPT"),
    ("mangle", "-A PREROUTING -m physdev ! --physdev-in veth+ --physdev-is-in -j ACCEPT",
     "-A PREROUTING -m physdev --physdev-is-in ! --physdev-in veth+ -j ACCEPT"),
    ("nat", "-A PREROUTING -m recent --set", "-A PREROUTING -m recent --set --name DEFAULT "
     "--mask 255.255.255.255 --rsource"),
    ("nat", "-A PREROUTING -m recent --name foo --update --seconds 60 --hitcount 3 --rdest "
     "--mask 255.255.0.0", "-A PREROUTING -m recent --update --seconds 60 --hitcount 3 "
     "--name foo --mask 255.255.0.0 --rdest"),
    ("nat", "-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.3:8080-8090 --random "
     "--persistent", "-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.3:8080-8090 "
     "--random --persistent"),
    ("nat", "-A POSTROUTING -p udp -j SNAT --to-source 1.1.1.1-1.1.1.5:1000-2000 --random-fully",
     "-A POSTROUTING -p udp -j SNAT --to-source 1.1.1.1-1.1.1.5:1000-2000 --random-fully"),
    ("nat", "-A POSTROUTING -p tcp -j MASQUERADE --to-ports 1000-2000 --random",
     "-A POSTROUTING -p tcp -j MASQUERADE --to-ports 1000-2000 --random"),
    ("nat", "-A OUTPUT -p tcp -j REDIRECT --to-ports 8080",
     "-A OUTPUT -p tcp -j REDIRECT --to-ports 8080"),
    ("raw", "-A PREROUTING -p udp --dport 53 -j CT --notrack",
     "-A PREROUTING -p udp -m udp --dport 53 -j CT --notrack"),
    ("nat", "-A KUBE-SVC-X -m nfacct --nfacct-name ct_invalid -j RETURN",
     "-A KUBE-SVC-X -m nfacct --nfacct-name  ct_invalid -j RETURN"),
])
def test_canonical_form(table, given, printed):
    assert canon(table, given) == [printed]


def test_kube_proxy_probability_prints_with_eleven_decimals():
    out = canon("nat", "-A KUBE-SVC-X -m statistic --mode random --probability 0.3333333333 -j RETURN")
    assert out == ["-A KUBE-SVC-X -m statistic --mode random --probability 0.33333333349 -j RETURN"]


def test_user_chains_sorted_after_builtins_and_tables_in_iptables_nft_order():
    text = ruleset_text(nat=["-A ZZZ -j RETURN", "-A AAA -j ZZZ", "-A PREROUTING -g AAA"],
                        filter=["-A INPUT -j ACCEPT"], raw=["-A OUTPUT -j NOTRACK"])
    out = parse_iptables_save(text).to_iptables_save()
    assert [ln for ln in out.splitlines() if ln.startswith("*")] == ["*raw", "*filter", "*nat"]
    nat = out[out.index("*nat"):]
    assert nat.index(":AAA") < nat.index(":ZZZ")
    assert nat.index("-A PREROUTING -g AAA") < nat.index("-A AAA -j ZZZ") < nat.index("-A ZZZ")


def test_empty_ruleset_prints_every_builtin_chain():
    out = Ruleset.empty().to_iptables_save()
    assert ":FORWARD ACCEPT [0:0]" in out and out.count("COMMIT") == 4


def err(text: str) -> RulesetError:
    with pytest.raises(RulesetError) as e:
        parse_iptables_save(text, "dump.txt")
    return e.value


def test_unsupported_option_names_line_and_option():
    e = err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --tcp-option 2 -j ACCEPT\nCOMMIT\n")
    assert (e.line, e.option) == (3, "--tcp-option")
    assert str(e).startswith("dump.txt:3:") and "--tcp-option" in str(e)


def test_unsupported_match_module_names_line():
    e = err("# c\n*filter\n:INPUT ACCEPT [0:0]\n\n-A INPUT -m hashlimit --hashlimit 1 -j ACCEPT\nCOMMIT\n")
    assert e.line == 5 and e.option == "hashlimit"


def test_unsupported_target():
    e = err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j NFQUEUE --queue-num 1\nCOMMIT\n")
    assert e.line == 3 and "NFQUEUE" in str(e)


def test_append_to_undeclared_chain_names_line():
    e = err("*nat\n:PREROUTING ACCEPT [0:0]\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n")
    assert e.line == 3 and "KUBE-SERVICES" in str(e)


def test_jump_to_missing_chain_names_rule_line():
    e = err("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n")
    assert e.line == 3 and "KUBE-SERVICES" in str(e)


def test_missing_commit():
    e = err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n")
    assert "COMMIT" in str(e) and e.line == 1
    e = err("*filter\n-A INPUT -j ACCEPT\n*nat\nCOMMIT\n")
    assert "COMMIT" in str(e) and e.line == 3


@pytest.mark.parametrize("text,line,fragment", [
    ("*filter\n-A INPUT -o eth0 -j ACCEPT\nCOMMIT\n", 2, "-o with INPUT"),
    ("*filter\n-A INPUT --dport 80 -j ACCEPT\nCOMMIT\n", 2, "--dport"),
    ("*filter\n-A INPUT -m tcp --dport 80 -j ACCEPT\nCOMMIT\n", 2, "-p tcp"),
    ("*filter\n-A INPUT ! -p tcp --dport 80 -j ACCEPT\nCOMMIT\n", 2, "--dport"),
    ("*filter\n-A INPUT -j DNAT --to-destination 1.2.3.4\nCOMMIT\n", 2, "nat table"),
    ("*nat\n-A POSTROUTING -j DNAT --to-destination 1.2.3.4\nCOMMIT\n", 2, "POSTROUTING"),
    ("*nat\n:X - [0:0]\n-A POSTROUTING -j X\n-A X -j DNAT --to-destination 1.2.3.4\nCOMMIT\n", 4,
     "POSTROUTING"),
    ("*nat\n-A PREROUTING -j DROP\nCOMMIT\n", 2, "nat"),
    ("*filter\n-A INPUT -j REJECT --reject-with tcp-reset\nCOMMIT\n", 2, "tcp-reset"),
    ("*filter\n-A INPUT -j REJECT --reject-with bogus\nCOMMIT\n", 2, "bogus"),
    ("*filter\n-A OUTPUT -m mac --mac-source 00:11:22:33:44:55\nCOMMIT\n", 2, "OUTPUT"),
    ("*filter\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -j A\nCOMMIT\n", 5, "loop"),
    ("*filter\n-A INPUT -s 10.0.0.0/33\nCOMMIT\n", 2, "mask"),
    ("*filter\n-A INPUT -p tcp --dport 99999\nCOMMIT\n", 2, "99999"),
    ("*filter\n-A INPUT -m comment --comment \"open\nCOMMIT\n", 2, "quoted"),
    ("*filter\n-A INPUT -m statistic --mode random -j ACCEPT\nCOMMIT\n", 2, "probability"),
    ("*filter\n-A INPUT -m recent --set --seconds 5\nCOMMIT\n", 2, "--rcheck"),
    ("*filter\n:INPUT BOGUS [0:0]\nCOMMIT\n", 2, "BOGUS"),
    ("*security\nCOMMIT\n", 1, "security"),
    ("*raw\n-A PREROUTING -s 1.2.3.4 -s 1.2.3.5\nCOMMIT\n", 2, "multiple"),
    ("*mangle\n-A FORWARD -j NOTRACK\nCOMMIT\n", 2, "raw"),
    ("*filter\n-A INPUT -j ACCEPT -j DROP\nCOMMIT\n", 2, "multiple"),
])
def test_errors_name_the_line(text, line, fragment):
    e = err(text)
    assert e.line == line, str(e)
    assert fragment in str(e)


def test_failed_restore_leaves_ruleset_unchanged():
    rs = parse_iptables_save(ruleset_text(filter=["-A INPUT -j ACCEPT"]))
    before = rs.to_iptables_save()
    with pytest.raises(RulesetError):
        restore_into(rs, "*filter\n-A INPUT -j DROP\n-A INPUT -m nope\nCOMMIT\n")
    assert rs.to_iptables_save() == before


def test_restore_noflush_flushes_declared_user_chains_only():
    rs = parse_iptables_save(ruleset_text(nat=["-A PREROUTING -j KUBE-SERVICES",
                                               "-A KUBE-SERVICES -d 10.0.0.1 -j RETURN"],
                                          filter=["-A INPUT -j ACCEPT"]))
    restore_into(rs, "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d 10.0.0.2 -j RETURN\nCOMMIT\n",
                 noflush=True)
    out = rs.to_iptables_save()
    assert "-A KUBE-SERVICES -d 10.0.0.2/32 -j RETURN" in out
    assert "10.0.0.1/32" not in out
    assert "-A PREROUTING -j KUBE-SERVICES" in out and "-A INPUT -j ACCEPT" in out


def test_restore_without_noflush_replaces_named_tables_only():
    rs = parse_iptables_save(ruleset_text(nat=["-A PREROUTING -j RETURN"],
                                          filter=["-A INPUT -j ACCEPT"]))
    restore_into(rs, "*nat\n:POSTROUTING DROP [0:0]\nCOMMIT\n")
    out = rs.to_iptables_save()
    assert "-A PREROUTING -j RETURN" not in out and ":POSTROUTING DROP" in out
    assert "-A INPUT -j ACCEPT" in out


def test_insert_delete_and_policy_commands():
    rs = parse_iptables_save(ruleset_text(filter=["-A INPUT -j ACCEPT"]))
    restore_into(rs, "*filter\n-N EXTRA\n-I INPUT 1 -j EXTRA\n-I INPUT -s 1.1.1.1 -j DROP\n"
                 "-P FORWARD DROP\nCOMMIT\n", noflush=True)
    rules = [r.text for r in rs.chain("filter", "INPUT").rules]
    assert rules == ["-A INPUT -s 1.1.1.1/32 -j DROP", "-A INPUT -j EXTRA", "-A INPUT -j ACCEPT"]
    assert rs.chain("filter", "FORWARD").policy == "DROP"
    with pytest.raises(RulesetError):
        restore_into(rs, "*filter\n-X EXTRA\nCOMMIT\n", noflush=True)   # still referenced


def test_rule_line_numbers_kept():
    rs = parse_iptables_save((FIXTURES / "kube-proxy.save").read_text())
    fwd = rs.chain("filter", "KUBE-FORWARD").rules[0]
    assert "--ctstate INVALID" in fwd.text
    lines = (FIXTURES / "kube-proxy.save").read_text().splitlines()
    assert fwd.text in lines[fwd.line - 1]
