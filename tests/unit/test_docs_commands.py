"""Every ``bem`` command line in the runbooks, docs/operations.md and the README names a real
command, and every ``--option`` on it is one that command takes: an operator following a
runbook in an incident never meets "No such command"."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from bem.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("docs/runbooks/*.md"), ROOT / "docs/operations.md", ROOT / "README.md"])
# `bem` as a program: at a line's start, after a path, a backtick, `$(` or a pipe; not
# kubectl's `-n bem` namespace.
LINE = re.compile(r"(?:^|[`/(|]|(?<=[^n] ))bem ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)([^`\n]*)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


def command_lines() -> list[tuple[str, str, str]]:
    found = []
    for path in DOCS:
        for line in path.read_text().splitlines():
            for words, rest in LINE.findall(line):
                found.append((path.name, words, rest))
    return found


def resolve(words: str) -> tuple[Any, str]:
    """The command ``words`` names (typer's own click: groups are told by their commands)."""
    group: Any = typer.main.get_command(cli)
    first, _, second = words.partition(" ")
    command = group.commands.get(first)
    assert command is not None, f"bem {first}: no such command"
    if hasattr(command, "commands"):
        sub = command.commands.get(second)
        assert sub is not None, f"bem {words}: no such command"
        return sub, f"{first} {second}"
    return command, first


def test_the_documents_name_commands() -> None:
    assert len(command_lines()) > 30


@pytest.mark.parametrize(("doc", "words", "rest"), command_lines())
def test_a_documented_command_line_exists(doc: str, words: str, rest: str) -> None:
    command, name = resolve(words)
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    options |= {"--help"}
    for option in OPTION.findall(rest):
        assert option in options, f"{doc}: bem {name} has no {option}"
