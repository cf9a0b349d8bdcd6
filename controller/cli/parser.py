"""The argparse machinery of `domctl`: one parser for every command, and what argparse lacks.

argparse, not click: the standard library's parser loads in about 1.5 ms of its own (besides
`re`, which it needs) where click took 20-25 ms of a 60 ms `domctl get` (issue 12: a CLI
command within 3x `python3 -c pass`).
What this module adds to it:

- Global options before or after the command (`domctl --socket S get`, `domctl get web-1
  --socket S`): `Commands.common` adds the global options to every command's parser too, and
  those options have no default (argparse.SUPPRESS), so a value given after the command wins and
  one given before it is not overwritten; the caller fills the defaults in.
- Commands built when used: every command is listed with its one-line help, and its parser
  is built (its arguments added) only when it is the command parsed, its --help included.
  `Commands.add_lazy` imports the module that adds them ("module:function") only then too:
  `run` (controller/service/command.py, the daemon's side, which the CLI must not import)
  loads only for `domctl run`.
- An unknown command says so with the closest name (difflib) and exits 2.
- Option types with bounds (`bounded`) and paths checked when parsed.
- The exit codes: 2 for a usage error (argparse's own, or `UsageError` from a command), 1 for
  a command's failure (`Failed`, printed `error: MESSAGE` by cli/main.py).

Public surface:
    Parser, Formatter, Commands, Handler, Configure, UsageError, Failed, bounded, existing_path,
    directory, not_a_directory
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False  # typing's constant without typing's import (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    Handler = Callable[[argparse.Namespace], "int | None"]
    Configure = Callable[["Parser"], None]


class UsageError(Exception):
    """A command's arguments do not go together: its usage and the message, exit 2."""


class Failed(Exception):
    """A command failed: `error: MESSAGE` on stderr, exit 1."""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (paragraphs and lines kept), in the terminal's width found
    without shutil: argparse imports shutil (and with it bz2 and lzma) for the width when the
    first argument is added, milliseconds of every start."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else _columns() - 2)


def _columns() -> int:
    """shutil.get_terminal_size()'s columns: $COLUMNS, else the terminal's, else 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80 \
            if sys.__stdout__ is not None else 80
    except (ValueError, OSError):  # not a terminal, or closed
        return 80


class Parser(argparse.ArgumentParser):
    """argparse's parser, with a did-you-mean for an unknown command, no abbreviated options
    (click took none) and the Formatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's own check of a value against `choices` (3.14's suggest_on_error hooks
        # in here too); a command not built yet is no choice of argparse's yet: Commands knows
        if not isinstance(action, Commands):
            super()._check_value(action, value)
        elif value not in action.names:
            import difflib  # only on this error

            close = difflib.get_close_matches(value, action.names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (see {self.prog} --help)"
            raise argparse.ArgumentError(None, f"unknown command {value!r}{hint}")


if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[Parser]
else:  # not subscriptable at run time
    _SubParsers = argparse._SubParsersAction


class Commands(_SubParsers):
    """The commands of a Parser (`parser.add_subparsers(action=Commands, ...)`).

    Each is listed at once (its line in `domctl --help`) but its parser is built only when it
    is the command parsed: building twenty parsers and their arguments at every start would
    cost more than the whole parse of one command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.common: Configure | None = None  # adds the global options every command takes
        self._unbuilt: dict[str, tuple[str, Configure]] = {}  # name → description, configure
        self.names: list[str] = []

    def add(self, name: str, handler: Handler, arguments: Configure | None = None,
            doc: str | None = None) -> None:
        """A command: `arguments` adds its arguments to its parser when it is parsed; its
        --help's description is `doc` (default: the handler's docstring), its line in
        `domctl --help` the first paragraph of that."""
        def configure(parser: Parser) -> None:
            if arguments is not None:
                arguments(parser)
            parser.set_defaults(handler=handler)

        self._list(name, doc if doc is not None else handler.__doc__ or "", configure)

    def add_lazy(self, name: str, doc: str, target: str) -> None:
        """A command whose module is imported only when it is parsed: `target`
        ("module:function") adds its arguments and sets its handler (`set_defaults(handler=)`)."""
        def configure(parser: Parser) -> None:
            import importlib

            module, _, function = target.partition(":")
            getattr(importlib.import_module(module), function)(parser)

        self._list(name, doc, configure)

    def _list(self, name: str, doc: str, configure: Configure) -> None:
        text = _dedent(doc)
        # what add_parser(name, help=...) lists, without the parser
        self._choices_actions.append(self._ChoicesPseudoAction(
            name, (), " ".join(text.split("\n\n")[0].split())))
        self._unbuilt[name] = (text, configure)
        self.names.append(name)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        name = values[0]
        if name in self._unbuilt:
            text, configure = self._unbuilt.pop(name)
            command = self.add_parser(name, description=text)
            command.set_defaults(command_parser=command)
            if self.common is not None:
                self.common(command)
            configure(command)
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
    """An option type: a directory, or a path where there is nothing yet (a Path: for the
    daemon's `run`, which uses pathlib anyway)."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a directory")
    from pathlib import Path

    return Path(text)


def not_a_directory(text: str) -> str:
    """An option type: a file's path (`-` is standard input), not a directory's."""
    if text != "-" and os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    return text
