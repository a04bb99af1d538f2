"""MkDocs hook: the command-line reference, generated from the parser `auth-service` uses.

A page holding `<!-- cli-reference -->` gets each subcommand's usage line, its help, and a
table of its options with their defaults and help, straight from `auth_service.cli._parser`.
"""

import argparse
from typing import Any

from auth_service.cli import _parser

MARKER = "<!-- cli-reference -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) for each subcommand, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def _option(action: argparse.Action) -> str:
    names = ", ".join(f"`{name}`" for name in action.option_strings)
    if action.nargs != 0:
        names += f" `{action.metavar or action.dest.upper()}`"
    return names


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.nargs == 0 or action.default in (None, []):
        return ""
    return f"`{action.default}`"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if action.choices:
        text = (
            (text + "; " if text else "")
            + "one of "
            + ", ".join(f"`{choice}`" for choice in action.choices)
        )
    return text


def reference(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or _parser()
    parts = []
    for name, help_text, sub in _subcommands(parser):
        usage = " ".join(sub.format_usage().removeprefix("usage:").split())
        section = [f"## `{name}`", "", help_text[:1].upper() + help_text[1:] + ".", ""]
        section += ["```text", usage, "```"]
        options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
        if options:
            section += ["", "| option | default | meaning |", "|---|---|---|"]
            section += [
                f"| {_option(a)} | {_cell(_default(a))} | {_cell(_help(a))} |" for a in options
            ]
        parts.append("\n".join(section))
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
