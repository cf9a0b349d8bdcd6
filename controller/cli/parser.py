"""The argparse machinery of `domctl`: one parser for every command, and what argparse lacks.

argparse, not click: the standard library's parser loads in about 1.5 ms where click took
20-25 ms of a 60 ms `domctl get` (issue 12: a CLI command within 3x `python3 -c pass`).
What this module adds to it:

- Global options before or after the command (`domctl --socket S get`, `domctl get web-1
  --socket S`): `Commands.add` gives every command's parser the global options' parser as a
  parent, and those options have no default (argparse.SUPPRESS), so a value given after the
  command wins and one given before it is not overwritten; the caller fills the defaults in.
- Lazy commands: `Commands.add_lazy` lists a command with its one-line help and imports the
  module that adds its arguments ("module:function", given the command's parser) only when the
  command is parsed, its --help included. So `run` (controller/service/command.py, the daemon's
  side, which the CLI must not import) loads only for `domctl run`.
- An unknown command says so with the closest name (difflib) and exits 2.
- Option types with bounds (`bounded`) and paths checked as click checked them.
- The exit codes: 2 for a usage error (argparse's own, or `UsageError` from a command), 1 for
  a command's failure (`Failed`, printed `error: MESSAGE` by cli/main.py).

Public surface:
    Parser, Commands, Handler, UsageError, Failed, bounded, existing_path, directory,
    not_a_directory
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

Handler = Callable[[argparse.Namespace], "int | None"]


class UsageError(Exception):
    """A command's arguments do not go together: its usage and the message, exit 2."""


class Failed(Exception):
    """A command failed: `error: MESSAGE` on stderr, exit 1."""


class Parser(argparse.ArgumentParser):
    """argparse's parser, with a did-you-mean for an unknown command."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's own check of a value against `choices` (3.14's suggest_on_error hooks
        # in here too): for the command, the message names the closest one
        if isinstance(action, Commands) and value not in action.choices:
            import difflib  # only on this error

            close = difflib.get_close_matches(value, list(action.choices), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (see {self.prog} --help)"
            raise argparse.ArgumentError(None, f"unknown command {value!r}{hint}")
        super()._check_value(action, value)


if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[Parser]
else:  # not subscriptable at run time
    _SubParsers = argparse._SubParsersAction


class Commands(_SubParsers):
    """The commands of a Parser (`parser.add_subparsers(action=Commands, ...)`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parents: list[Parser] = []  # the global options every command accepts too
        self._lazy: dict[str, str] = {}

    def add(self, name: str, handler: Handler | None, doc: str | None = None) -> Parser:
        """A command's parser; its --help's description is `doc` (default: the handler's
        docstring), its line in `domctl --help` the first paragraph of it."""
        if doc is None:
            doc = handler.__doc__ if handler is not None else None
        text = _dedent(doc or "")
        parser = self.add_parser(
            name, help=" ".join(text.split("\n\n")[0].split()), description=text,
            parents=self.parents, formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False)
        if handler is not None:
            parser.set_defaults(handler=handler)
        parser.set_defaults(command_parser=parser)
        return parser

    def add_lazy(self, name: str, doc: str, target: str) -> None:
        """A command whose arguments `target` ("module:function") adds to its parser, imported
        when the command is parsed; the function sets the handler (`set_defaults(handler=)`)."""
        self.add(name, None, doc)
        self._lazy[name] = target

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        name = values[0]
        target = self._lazy.pop(name, None)
        if target is not None:
            module, _, function = target.partition(":")
            getattr(importlib.import_module(module), function)(self.choices[name])
        super().__call__(parser, namespace, values, option_string)


def _dedent(doc: str) -> str:
    """A docstring's text with each line's indentation gone (the paragraphs stay)."""
    return "\n".join(line.strip() for line in doc.strip().splitlines())


def bounded(kind: Callable[[str], float], low: float | None = None,
            high: float | None = None) -> Callable[[str], float]:
    """An option type: `kind` (int or float) of the text, within [low, high]."""
    what = "an integer" if kind is int else "a number"

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (low is not None and not value >= low) or (high is not None and not value <= high):
            span = (f"between {low} and {high}" if low is not None and high is not None
                    else f"at least {low}" if low is not None else f"at most {high}")
            raise argparse.ArgumentTypeError(f"{text} is not {span}")
        return value

    return convert


def existing_path(text: str) -> str:
    """An option type: a path that exists."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"path {text!r} does not exist")
    return text


def directory(text: str) -> Path:
    """An option type: a directory, or a path where there is nothing yet."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a directory")
    return Path(text)


def not_a_directory(text: str) -> str:
    """An option type: a file's path (`-` is standard input), not a directory's."""
    if text != "-" and os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    return text
