# `add element` commands one by one (kube-proxy's sync adds each Service's elements in its
# own command): duplicates dropped across and within commands, deleted elements may come
# back, and a set's keys are not rebuilt for every command (it was quadratic: 100,000
# Services took hours to parse).
import time

from kdp.netfilter.nft import parse_ruleset

HEAD = ("add table ip t\n"
        "add set ip t s { type ipv4_addr . inet_proto . inet_service ; }\n")


def _keys(text):
    return [e.key for e in parse_ruleset(text, "t").tables[0].sets["s"].elements]


def test_elements_added_one_command_at_a_time():
    text = HEAD + "".join(f"add element ip t s {{ 10.96.0.{i} . tcp . 80 }}\n" for i in range(5))
    text += "add element ip t s { 10.96.0.1 . tcp . 80, 10.96.0.9 . tcp . 80, 10.96.0.9 . tcp . 80 }\n"
    text += "delete element ip t s { 10.96.0.2 . tcp . 80 }\n"
    text += "add element ip t s { 10.96.0.2 . tcp . 80 }\n"
    assert _keys(text) == [(f"10.96.0.{i}", "tcp", "80") for i in (0, 1, 3, 4, 9, 2)]


def test_many_add_element_commands_parse_in_linear_time():
    n = 30000
    text = HEAD + "".join(f"add element ip t s {{ 10.{i >> 16}.{(i >> 8) & 255}.{i & 255} . "
                          f"tcp . 80 }}\n" for i in range(n))
    t0 = time.perf_counter()
    assert len(_keys(text)) == n
    assert time.perf_counter() - t0 < 25       # quadratic: n^2/2 = 4.5e8 key insertions
