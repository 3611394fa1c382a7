"""Entry point of the ``bicorseg`` command: discovers the sub-command modules and dispatches.

Every module ``bicorseg.cli.<name>`` (other than this one and ``common``) defines
``register(subparsers) -> None``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit status. User-facing errors (:class:`BicorsegError`) are
printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from bicorseg import __version__
from bicorseg.errors import BicorsegError

_NOT_COMMANDS = {"main", "common"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bicorseg",
        description="BiCoR-Seg semantic segmentation for high-resolution remote sensing imagery.",
    )
    parser.add_argument("--version", action="version", version=f"bicorseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import bicorseg.cli as cli_package

    for module_info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if module_info.name in _NOT_COMMANDS or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bicorseg.cli.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except BicorsegError as error:
        print(f"bicorseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bicorseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
