"""Entry point of the ``bicorseg`` command: discovers the sub-command modules and dispatches.

Every module ``bicorseg.cli.<name>`` (other than this one and ``common``) defines
``register(subparsers) -> None``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit status.

Modules and ``register`` import nothing heavy (torch, Lightning, rasterio, matplotlib): the
commands import those when they run, so ``--help`` and argument errors answer at once.

Every error is one line on stderr with exit status 2: argument errors name the nearest valid
option or choice; :class:`BicorsegError` is printed with the parameter it names (``key``, and names
in backquotes) written as this command's option (``tile`` -> ``--tile``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bicorseg.cli.common import Terminated
from bicorseg.defaults import VERSION
from bicorseg.errors import BicorsegError
from bicorseg.raster_access import remote_access
from bicorseg.typedconfig import nearest

_NOT_COMMANDS = {"main", "common"}
_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, with the nearest valid choice when there is one.
    Options are written in full: an abbreviation (``--over``) is refused, never taken for the one
    option it starts (``--overwrite``); every command's parser is one of these."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> None:  # type: ignore[override]
        match = _CHOICE.search(message)
        if match:
            choices = [c.strip().strip("'") for c in match.group(2).split(",")]
            guess = nearest(match.group(1), choices)
            if guess:
                message = f"{message}; did you mean {guess!r}?"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def unknown_option(self, extra: list[str]) -> None:
        """Refuse arguments this parser does not take, naming the nearest option to the first one."""
        first = next((a for a in extra if a.startswith("-")), extra[0])
        name = first.partition("=")[0]
        options = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        guess = nearest(name, options) if name.startswith("-") else None
        what = "option" if name.startswith("-") else "argument"
        self.error(f"unrecognized {what} {name}" + (f"; did you mean {guess}?" if guess else ""))


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Parameter name -> how the command line writes it (``batch_size`` -> ``--batch-size``).

    A command whose option stands for a core parameter of another name declares it with
    ``parser.set_defaults(parameter_options={"assets": "--stac-assets"})``.
    """
    names: dict[str, str] = dict(parser.get_default("parameter_options") or {})
    for action in parser._actions:
        if action.dest in (argparse.SUPPRESS, "help"):
            continue
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs:
            names.setdefault(action.dest, longs[0])
        elif not action.option_strings:
            names.setdefault(action.dest, str(action.metavar or action.dest.upper()))
    return names


def error_line(error: BaseException, parser: argparse.ArgumentParser | None) -> str:
    """The error's message with the parameters it names written as the command's options."""
    names = option_names(parser) if parser is not None else {}
    key = getattr(error, "key", None)
    text = f"{names[key]}: {getattr(error, 'detail', error)}" if key in names else str(error)
    return _as_options(text, names)


def _as_options(text: str, names: dict[str, str]) -> str:
    """A message's backquoted parameters (`rescale`) written as the command's options (--rescale)."""
    return re.sub(r"`([A-Za-z_][\w.]*)`", lambda m: names.get(m.group(1), m.group(0)), text)


@contextmanager
def one_line_warnings(command: str, parser: argparse.ArgumentParser) -> Iterator[None]:
    """Warnings as one line each on stderr (no source line), worded like the errors; a line already
    printed is not printed again (a file read by two steps is warned about by both)."""
    names, previous, shown = option_names(parser), warnings.showwarning, set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = f"bicorseg {command}: warning: {_as_options(str(message), names)}"
        if text not in shown:
            shown.add(text)
            print(text, file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's parser."""
    parser = Parser(
        prog="bicorseg",
        description="BiCoR-Seg semantic segmentation for high-resolution remote sensing imagery.",
        epilog="Every command has --help. Errors are one line naming the file or option, exit status 2.",
    )
    parser.add_argument("--version", action="version", version=f"bicorseg {VERSION}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import bicorseg.cli as cli_package

    for module_info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if module_info.name in _NOT_COMMANDS or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bicorseg.cli.{module_info.name}")
        module.register(subparsers)
    return parser, dict(subparsers.choices)


def _resolve_hub_checkpoint(args: argparse.Namespace) -> None:
    """``--checkpoint hf://org/name``: the model's folder in the Hugging Face cache (downloaded once,
    before the command runs, so that its worker processes read the local folder)."""
    checkpoint = getattr(args, "checkpoint", None)
    if isinstance(checkpoint, str) and checkpoint.startswith("hf://"):
        from bicorseg.models import BiCoRSeg
        from bicorseg.models.hub import resolve

        args.checkpoint = str(resolve(checkpoint, BiCoRSeg))


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) is None:
        if extra:
            parser.unknown_option(extra)
        parser.print_help()
        return 1
    command = commands[args.command]
    if extra:
        command.unknown_option(extra)  # type: ignore[attr-defined]
    args.command_parser = command  # for commands that print an error themselves (error_line)
    try:
        _resolve_hub_checkpoint(args)
        # --allow-remote of the commands with it; every command's warnings as one line, like its errors
        with remote_access(getattr(args, "allow_remote", False)), one_line_warnings(args.command, command):
            return int(args.func(args) or 0)
    except BicorsegError as error:
        print(f"bicorseg {args.command}: error: {error_line(error, command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, Terminated):
            print(f"bicorseg {args.command}: interrupted by SIGTERM", file=sys.stderr)
            return 143
        print(f"bicorseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
