"""docs/reference/cli.md documents every `obskit` sub-command and every option argparse knows.

The help blocks of the page are the commands' own `--help`; regenerate them with

    .venv/bin/python tests/docs/test_cli_reference.py > /tmp/cli-help.md

and paste the sections that changed (the prose around them is written by hand).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI_MD = ROOT / "docs" / "reference" / "cli.md"


def _parser() -> argparse.ArgumentParser:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width
    from obskit.cli import build_parser

    return build_parser()


def commands(parser: argparse.ArgumentParser | None = None,
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(`obskit dlq replay`, its parser) for the top level and every sub-command, depth first."""
    parser = parser or _parser()
    yield parser.prog, parser
    for action in parser._actions:  # argparse has no public way to walk sub-commands
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from commands(sub)


def options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]


def render() -> str:
    out = []
    for prog, parser in commands():
        level = "#" * max(2, prog.count(" ") + 1)
        out.append(f"{level} `{prog}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(out)


@pytest.fixture(scope="module")
def page() -> str:
    return CLI_MD.read_text(encoding="utf-8")


def test_every_command_has_a_section(page: str) -> None:
    headings = set(re.findall(r"^#+ `(obskit[^`]*)`", page, re.M))
    missing = [prog for prog, _ in commands() if prog not in headings]
    assert missing == [], f"cli.md has no section for {missing}: regenerate with {__file__}"


def test_every_option_is_documented_in_its_commands_section(page: str) -> None:
    sections = dict(re.findall(r"^#+ `(obskit[^`]*)`\n(.*?)(?=^#+ `obskit|\Z)", page, re.M | re.S))
    missing = [(prog, opt) for prog, parser in commands() for opt in options(parser)
               if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", sections.get(prog, ""))]
    assert missing == [], f"options missing from cli.md: {missing}"


def test_every_positional_argument_is_documented(page: str) -> None:
    sections = dict(re.findall(r"^#+ `(obskit[^`]*)`\n(.*?)(?=^#+ `obskit|\Z)", page, re.M | re.S))
    missing = [(prog, a.dest) for prog, parser in commands() for a in parser._actions
               if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
               and a.dest not in sections.get(prog, "")]
    assert missing == []


if __name__ == "__main__":
    print(render())
