"""Every `melanoma` command line the README, the model card and the docs show parses with the CLI's own
parser, so a documented subcommand or flag cannot drift from the code.

Two kinds are read: shell lines in fenced code blocks, which must parse as they are, and inline code
(`melanoma predict PATH… [--model FILE]`, or a mention such as `melanoma evaluate --shifts`), whose
subcommand must exist and every flag it names must belong to that subcommand.
"""

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from melanoma.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "MODEL_CARD.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
             "tools/gpu/README.md"]
COMMAND = re.compile(r"^(?:\S+=\S+\s+)*(?:nohup\s+)?(?:\S*/)?melanoma\s")  # env settings, nohup, a path to the script


def _shell_lines(text: str):
    """(line number, command) of each melanoma command in the fenced code blocks."""
    fenced, joined, start = False, "", 0
    for n, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        line = line.strip().removeprefix("$ ")
        if not joined:
            start = n
        if line.endswith("\\"):
            joined += line[:-1] + " "
            continue
        joined += line
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", re.sub(r"\s#.*$", "", joined)):
            if COMMAND.match(part):
                yield start, part
        joined = ""


def _inline(text: str):
    """(line number, code) of each inline-code span that starts with a melanoma command."""
    for n, line in enumerate(text.splitlines(), start=1):
        for span in re.findall(r"`([^`]+)`", line):
            if COMMAND.match(span.strip()) and len(span.split()) >= 2:
                yield n, span.strip()


def _commands():
    for doc in DOCUMENTS:
        text = (ROOT / doc).read_text()
        for n, command in sorted(set(_shell_lines(text))):
            yield pytest.param(command, True, id=f"{doc}:{n}")
        for n, command in sorted(set(_inline(text))):
            yield pytest.param(command, False, id=f"{doc}:{n}:inline")


COMMANDS = list(_commands())


def test_the_documents_show_commands():
    assert len(COMMANDS) >= 30  # the reader (this file) still finds them


def _subcommands() -> dict:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command, whole", COMMANDS)
def test_documented_command_parses(command, whole):
    check(command, whole)


@pytest.mark.parametrize("command, whole", [("melanoma evaluate --out x --no-such-flag", True), ("melanoma evaluate", True),
                                            ("melanoma evaluate [--no-such-flag]", False), ("melanoma evalute --out x", False)])
def test_a_drifted_command_is_caught(command, whole):
    with pytest.raises(AssertionError):
        check(command, whole)


def check(command: str, whole: bool) -> None:
    words = shlex.split(command.replace("\\|", "|"), posix=whole)
    words = words[next(i for i, w in enumerate(words) if w.endswith("melanoma")) + 1:]
    if not whole:  # a synopsis or a mention: the subcommand and every flag it names exist
        if words[0].startswith("--"):
            words = [w for w in words if w.startswith("--")]
            unknown = [w for w in words if w not in ("--version", "--help")]
        else:
            sub = _subcommands()
            assert words[0] in sub, f"`{command}`: no subcommand {words[0]!r}"
            flags = [w.strip("[]|.…").split("=")[0] for w in words[1:] if w.lstrip("[").startswith("--")]
            unknown = [f for f in flags if f not in sub[words[0]]._option_string_actions]
        assert not unknown, f"`{command}`: melanoma {words[0]} has no {', '.join(unknown)}"
        return
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(words)
        except SystemExit as exc:
            assert exc.code == 0, f"`{command}`: {err.getvalue().strip().splitlines()[-1]}"

