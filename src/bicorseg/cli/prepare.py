"""``bicorseg prepare``: turn an official dataset release into patches, masks and a manifest."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from bicorseg import typedconfig
from bicorseg.atomic import ensure_writable
from bicorseg.errors import ConfigError
from bicorseg.spec import RELEASE_NAMES


@dataclass
class PrepareOptions:
    """The options of ``bicorseg prepare``; a ``--config`` YAML file holds the same keys.

    Attributes:
        source: folder or zip archive of the release (repeat for several).
        output: the output folder.
        splits: comma-separated splits to prepare (default: train,val,test).
        bands: band variant: Potsdam RGB (the default) or IRRG.
        patch_size: patch size instead of the protocol's 1024 (strides keep their ratio); for quick
            experiments.
        unknown_colours: label colours or values outside the class table: stop with an error
            (``error``, the default) or mark them ignored (``ignore``).
        protocol: ``clean`` (the default): padding is ignored; ``paper``: as the original code (ISPRS
            padding labelled impervious surface, flipped copies flipped before padding, Vaihingen car
            zoom).
        force: replace an output prepared for another dataset.
        verify: on rerun, check the checksums of finished files (the default; ``--no-verify`` trusts
            them).
        progress: a progress bar in a terminal (the default; ``--no-progress`` shows none).
    """

    source: list[str] | str | None = None
    output: str | None = None
    splits: list[str] | str | None = None
    bands: str | None = None
    patch_size: int | None = None
    unknown_colours: str = "error"
    protocol: str = "clean"
    force: bool = False
    verify: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.source, str):
            self.source = [self.source]
        if isinstance(self.splits, str):
            self.splits = [s.strip() for s in self.splits.split(",") if s.strip()]
        for key, choices in CHOICES.items():
            typedconfig.check_choice(key, getattr(self, key), choices)


CHOICES = {"unknown_colours": ("error", "ignore"), "protocol": ("clean", "paper")}
# option -> (field of PrepareOptions, how argparse reads it); no defaults: the --config file's, else the field's
OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "--source": ("source", {"action": "append", "metavar": "PATH"}),
    "--output": ("output", {"metavar": "DIR"}),
    "--splits": ("splits", {"metavar": "LIST"}),
    "--bands": ("bands", {"metavar": "VARIANT"}),
    "--patch-size": ("patch_size", {"type": int, "metavar": "PX"}),
    "--unknown-colours": ("unknown_colours", {"choices": CHOICES["unknown_colours"]}),
    "--protocol": ("protocol", {"choices": CHOICES["protocol"]}),
    "--force": ("force", {"action": "store_true"}),
    "--no-verify": ("verify", {"action": "store_false"}),
    "--no-progress": ("progress", {"action": "store_false"}),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="turn an official release (Vaihingen, Potsdam, LoveDA) into training data",
        description=(
            "Check an official dataset release (unpacked folders and/or its zip archives), convert its "
            "labels to class indices (ISPRS eroded boundary -> ignore; LoveDA 0 -> ignore, 1..7 -> 0..6), "
            "cut patches by the published protocol and write OUTPUT/{split}/images, OUTPUT/{split}/masks "
            "and OUTPUT/manifest.json (files, sizes, checksums, class pixel counts). Re-running skips "
            "finished work and verifies it."
        ),
    )
    parser.add_argument("dataset", choices=RELEASE_NAMES, help="which release")
    docs = typedconfig.field_docs(PrepareOptions)
    for flag, (name, how) in OPTIONS.items():
        parser.add_argument(flag, dest=name, default=None, help=docs[name], **how)
    parser.add_argument("--config", metavar="YAML", help="options as a YAML mapping (command line wins)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved options and exit")
    parser.set_defaults(func=run)


def resolve(args: argparse.Namespace) -> PrepareOptions:
    """The options: defaults, then the ``--config`` YAML file, then the command line."""
    from bicorseg.text_files import read_yaml_mapping

    data: dict[str, Any] = {}
    if args.config:
        loaded = read_yaml_mapping(args.config, "option file")
        data = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    given = {name for name, _ in OPTIONS.values() if getattr(args, name) is not None}
    data.update({name: getattr(args, name) for name in given})
    try:
        return typedconfig.build(PrepareOptions, data)
    except ConfigError as error:
        if error.key is not None and error.key not in given:  # a key of the file: name the file
            raise ConfigError(f"{args.config}: {error}") from None
        raise


def run(args: argparse.Namespace) -> int:
    from bicorseg.data.release import prepare

    options = resolve(args)
    if args.print_config:
        print(typedconfig.to_yaml({"dataset": args.dataset, **typedconfig.to_plain(options)}), end="")
        return 0
    if not options.source:
        raise ConfigError("give the folder or archives of the release", key="source")
    if not options.output:
        raise ConfigError("give the output folder", key="output")
    ensure_writable(options.output, folder=True)
    result = prepare(
        args.dataset,
        options.source,
        options.output,
        splits=options.splits,
        variant=options.bands,
        patch_size=options.patch_size,
        unknown_colours=options.unknown_colours,
        protocol=options.protocol,
        force=options.force,
        verify=options.verify,
        progress=options.progress and sys.stderr.isatty(),
    )
    print(result.summary())
    return 0
