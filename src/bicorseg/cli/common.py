"""What several sub-commands share: the options several commands take, declared once
(:data:`SHARED_OPTIONS`) with one default each, the Python API's (:mod:`bicorseg.defaults`, the fields
of :class:`~bicorseg.inference.PredictOptions`); the ``--section.key`` and ``--set`` options of config
sections (``train``, ``chips``), made from the dataclasses; reading ``--class-table``, warnings as one
line, progress, the summary of polygons, and SIGTERM ending a command as Ctrl-C does."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bicorseg.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_OVERLAP,
    DEFAULT_PRECISION,
    DEFAULT_TILE,
    DEFAULT_WINDOW,
    PRECISION_HELP,
    PRECISIONS,
    RESCALE_HELP,
)
from bicorseg.errors import ConfigError
from bicorseg.raster_access import ALLOW_REMOTE_HELP
from bicorseg.spec import TTA_MERGES, TTA_MODES

SHARED_OPTIONS: dict[str, dict[str, Any]] = {
    "checkpoint": {
        "required": True,
        "metavar": "CKPT",
        "help": "a bicorseg checkpoint (from train or convert)",
    },
    "device": {
        "default": DEFAULT_DEVICE,
        "help": f"auto (the GPU if there is one, else the CPU), cpu, cuda or cuda:N (default: {DEFAULT_DEVICE})",
    },
    "precision": {"choices": PRECISIONS, "default": DEFAULT_PRECISION, "help": PRECISION_HELP},
    "batch_size": {
        "type": int,
        "default": DEFAULT_BATCH_SIZE,
        "metavar": "N",
        "help": f"tiles or images per model call (default: {DEFAULT_BATCH_SIZE})",
    },
    "threads": {  # None: this process's count, as in PredictOptions
        "type": int,
        "default": None,
        "metavar": "N",
        "help": "torch CPU threads per process (default: torch's, one per core or OMP_NUM_THREADS). On a "
        "machine shared with other jobs give your share (e.g. 1): threads that outnumber the free cores wait "
        "for each other and run several times slower",
    },
    "allow_remote": {"action": "store_true", "help": ALLOW_REMOTE_HELP},
    "overwrite": {"action": "store_true", "help": "replace existing outputs"},
    "aoi": {
        "default": None,
        "metavar": "POLYGONS",
        "help": "area of interest: polygons (PATH or PATH|layername=NAME), any OGR format with a CRS",
    },
    "class_table": {
        "default": None,
        "metavar": "YAML",
        "help": "YAML class table (default: the raster's tags)",
    },
    "window": {
        "type": int,
        "default": DEFAULT_WINDOW,
        "metavar": "PX",
        "help": f"side of the windows the raster is read in, in pixels (default {DEFAULT_WINDOW})",
    },
    # tiling: None is the checkpoint's (bicorseg.checkpoint.Tiling), as in PredictOptions
    "tile": {
        "type": int,
        "default": None,
        "help": f"tile size in pixels (default: the checkpoint's, the size it was trained on; "
        f"{DEFAULT_TILE} for checkpoints that do not record it)",
    },
    "overlap": {
        "type": float,
        "default": None,
        "help": f"tile overlap fraction in [0, 1) (default: the checkpoint's; {DEFAULT_OVERLAP} if it records none)",
    },
    "tta": {
        "choices": TTA_MODES,
        "default": "none",
        "help": "test-time augmentation: none; lr (horizontal x vertical flip, 4 passes); d4 (the 8 dihedral "
        "transforms, probabilities averaged: not the original code's '-t d4', which is paper for Vaihingen "
        "and LoveDA and 16 passes for Potsdam); paper (the passes the original publication used for the "
        "checkpoint's dataset: Vaihingen 40, Potsdam 4, LoveDA 8, logits averaged) (default: none)",
    },
    "tta_scales": {
        "metavar": "LIST",
        "help": "also run every pass at these input scales, e.g. 0.75,1,1.25 (bicubic resizing; not with paper)",
    },
    "tta_merge": {
        "choices": TTA_MERGES,
        "help": "average the passes' logits or probabilities (default: probs; paper: logits, fixed)",
    },
    # inputs that are not 8-bit mapped onto the checkpoint's units (bicorseg.rescale)
    "rescale": {"default": "none", "metavar": "MODE", "help": RESCALE_HELP},
}
TILING = ("tile", "overlap")
TTA = ("tta", "tta_scales", "tta_merge")


def add_shared_options(parser: argparse._ActionsContainer, *names: str, **helps: str) -> None:
    """The options ``names`` (keys of :data:`SHARED_OPTIONS`) as declared there; ``helps`` words
    what an option does in this command where that says more (``overwrite="replace an existing page"``)."""
    for name in names:
        declared = dict(SHARED_OPTIONS[name], dest=name)
        if name in helps:
            declared["help"] = helps[name]
        parser.add_argument(f"--{name.replace('_', '-')}", **declared)


def add_config_options(parser: argparse.ArgumentParser, sections: dict[str, type]) -> None:
    """A ``--section.key`` option for every key of each config section (``train``, ``chips``), with
    its meaning, type and default from the dataclass, and ``--set KEY=VALUE`` for any of them."""
    import typing

    from bicorseg import typedconfig
    from bicorseg.training.config import DERIVED_KEYS

    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"set any key of {', '.join(sections)} (data.augment.mosaic_p=0), as --data.augment.mosaic_p 0 does",
    )
    for section, cls in sections.items():
        group = parser.add_argument_group(
            f"{section}: {(cls.__doc__ or section).splitlines()[0].rstrip('.')}"
        )
        for info in typedconfig.fields_of(cls, section):
            if tuple(info.key.split(".")) in DERIVED_KEYS:
                default = "the dataset's"
            elif typedconfig.section_of(info.type) is not None:
                default = f"the --{info.key}.* keys"
            else:
                default = (
                    "required"
                    if info.required
                    else typedconfig.to_yaml(info.default).strip().removesuffix("...").strip()
                )
            kind = typedconfig.type_name(info.type)
            repeated = {str, list[str]} <= set(typing.get_args(info.type))  # data.images: one or several
            group.add_argument(
                f"--{info.key}",
                dest=f"override__{info.key}",
                metavar={"int": "INT", "float": "FLOAT", "str": "TEXT", "bool": "BOOL"}.get(kind, "VALUE"),
                default=argparse.SUPPRESS,
                action="append" if repeated else "store",
                help=f"{info.doc} [{kind}; default: {default}]".replace("%", "%%")
                + (" (may be given several times)" if repeated else ""),
            )


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted overrides of the command line: ``--set KEY=VALUE`` and ``--section.key VALUE``."""
    from bicorseg.typedconfig import parse_value

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(value)
    for key, value in vars(args).items():
        if key.startswith("override__"):
            if isinstance(value, list):  # a repeated option: its values joined into one list
                items = [v for p in map(parse_value, value) for v in (p if isinstance(p, list) else [p])]
                value = items if len(items) > 1 else items[0]
            else:
                value = parse_value(value)
            overrides[key.removeprefix("override__")] = value
    return overrides


def tta_options(args: argparse.Namespace) -> dict:
    """The parsed TTA options as keyword arguments (``tta``, ``tta_scales``, ``tta_merge``)."""
    from bicorseg.inference.tta import parse_scales

    scales = parse_scales(args.tta_scales)
    if args.tta == "paper" and (scales is not None or args.tta_merge is not None):
        raise ConfigError(
            "--tta paper fixes its passes and merge: leave out --tta-scales and --tta-merge "
            "(or build the product you want from --tta lr or d4 with them)"
        )
    return {"tta": args.tta, "tta_scales": scales, "tta_merge": args.tta_merge}


EVALUATION_PRECISION_HELP = (
    "auto, bf16, fp16 or fp32 (default: auto, which is fp32 under --tta paper or on data prepared with "
    "--protocol paper, as the original code evaluates, and elsewhere bf16 where the device runs it fast, else fp32)"
)


def evaluation_precision(requested: str, paper: bool) -> str:
    """The precision of ``evaluate`` and ``submit``: ``auto`` is ``fp32`` where the paper's protocol is
    reproduced (the original code evaluates in fp32)."""
    return "fp32" if requested == "auto" and paper else requested


def checkpoint_tiling(checkpoint: str, engine: str, tile: int | None, overlap: float | None):
    """The :class:`~bicorseg.checkpoint.Tiling` to use: the options given, else the checkpoint's."""
    from dataclasses import replace

    from bicorseg.inference.predictor import checkpoint_info
    from bicorseg.models.hub import Tiling

    if tile is not None and overlap is not None:
        return Tiling(tile, overlap, "options")
    recorded = checkpoint_info(checkpoint, engine).tiling
    return replace(
        recorded,
        tile=recorded.tile if tile is None else tile,
        overlap=recorded.overlap if overlap is None else overlap,
    )


def counter(label: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` that rewrites ``label done/total`` on stderr when it is a terminal."""

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{label} {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    return progress


class RichProgress:
    """A rich progress bar for the predictor (one task per file, or one over files with workers)."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
            transient=False,
        )
        self.task = None

    def start(self, name: str, total: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, visible=False)
        self.task = self.bar.add_task(name, total=total)

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)


class Terminated(KeyboardInterrupt):
    """SIGTERM raised as an interrupt (:func:`sigterm_interrupts`): the command ends with status 143."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """In the block, SIGTERM (``kill``, a scheduler stopping a job) raises :class:`Terminated`, so the
    command ends its worker processes and deletes its temporary files as after Ctrl-C. An ignored
    SIGTERM stays ignored; outside the main thread nothing changes."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_summary(summary) -> None:
    """One line for the output and one per class on stderr, for the vectorize and predict commands."""
    merged = f", regions under {summary.merge_pixels} px merged" if summary.merge_pixels else ""
    print(
        f"{summary.raster.name} -> {summary.output}: {summary.features} polygon(s), areas {summary.area_method}, "
        f"simplified at {summary.simplify:g} CRS units{merged}, {summary.windows} window(s), "
        f"{summary.seconds:.1f} s",
        file=sys.stderr,
    )
    for entry in sorted(summary.classes.values(), key=lambda c: c.class_id):
        print(
            f"  {entry.class_id:>3} {entry.class_name:<20} {entry.features:>8} polygons {entry.area_m2:>16.1f} m2",
            file=sys.stderr,
        )


def class_table_file(value: str | None) -> str | None:
    """``--class-table``: a YAML file, or the name of a shipped class table (``dubai``) as in
    ``--data.class_table``; anything else is returned as it is, for the reader to refuse."""
    if value is None or Path(value).expanduser().is_file():
        return value
    from bicorseg.training.config import shipped

    named = shipped("classes", value)
    return str(named) if named.is_file() else value


def read_class_table(path: str | None):
    """The ``--class-table`` of a command, read once here (None when none is given)."""
    if path is None:
        return None
    from bicorseg.data.folder import ClassTable

    return ClassTable.from_yaml(class_table_file(path))
