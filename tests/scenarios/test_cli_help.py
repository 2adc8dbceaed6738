# Help a user can work from: `kdp --version`, help text on every option of
# every command, and two or three examples in each command's --help that parse
# as written.
import argparse
import re
import shlex

import pytest

from kdp import __version__
from kdp.cli import build_parser

from .kdp_cli import kdp

COMMANDS = ["demo", "validate", "topology", "rules", "inspect", "trace", "run", "resolve", "http",
            "bench", "bench rules", "oracle"]


def test_version():
    r = kdp("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"kdp {__version__}"


def _parsers():
    """(command words, parser) for kdp and every (sub)command."""
    out, todo = [], [((), build_parser())]
    while todo:
        words, p = todo.pop()
        out.append((words, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += [(words + (name,), sub) for name, sub in a.choices.items()]
    return out


def test_every_option_and_argument_has_help_text():
    missing = [f"kdp {' '.join(words)} {a.option_strings or a.dest}"
               for words, p in _parsers() for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()]
    assert missing == []
    assert {" ".join(w) for w, _ in _parsers()} >= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_shows_examples_that_parse(command):
    r = kdp(*command.split(), "--help")
    assert r.returncode == 0
    examples = r.stdout.split("\nexamples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    cmds = [re.sub(r"\s+#.*$", "", l).strip() for l in examples]
    cmds = [c.replace('sudo "$(command -v kdp)"', "kdp") for c in cmds]
    assert 2 <= len(cmds) <= 3 and all(c.startswith("kdp " + command.split()[0]) for c in cmds), cmds
    for c in cmds:
        argv = shlex.split(c.split(" | ")[0].split(" > ")[0])[1:]
        ns = build_parser().parse_args(argv)           # parses exactly as written
        assert ns.command == command.split()[0]
