"""The preparation of a release from end to end: check the options, plan, cut or reuse, write the manifest.

:func:`prepare` is the one entry point (``bicorseg prepare`` calls it); the steps are the other
modules of :mod:`bicorseg.data.release`. It returns what it did (:class:`PrepareResult`), whose
:meth:`~PrepareResult.summary` is what ``bicorseg prepare`` prints, and shows a progress bar on stderr.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bicorseg.atomic import remove_stale_temps, write_error
from bicorseg.data.datasets import BandVariant, PaperPreparation, Release, SplitRule, get_release
from bicorseg.data.release.cutting import Unknown, process_item
from bicorseg.data.release.journal import (
    WORK_DIR,
    previous_records,
    record_valid,
    rule_record,
    safe_unlink,
    write_journal,
)
from bicorseg.data.release.planning import plan
from bicorseg.data.release.records import (
    JSON,
    MANIFEST,
    Manifest,
    Settings,
    SplitRecord,
    TileRecord,
    read_manifest,
    write_manifest,
)
from bicorseg.data.sources import source_files
from bicorseg.defaults import STRIDE
from bicorseg.errors import BicorsegError, ConfigError, InputError

MIN_PATCH_SIZE = STRIDE  # the network's input granularity; smaller patches hold nothing to train on


@dataclass
class SplitSummary:
    """The counts of one split of a preparation (tiles, files written or reused, class pixels)."""

    name: str
    rule: SplitRule
    tiles: int
    patches: int
    reused: int
    pixels: list[int]
    ignored: int
    unknown_ignored: int


@dataclass
class PrepareResult:
    """What :func:`prepare` did; :meth:`summary` renders it for people."""

    output: Path
    manifest: Path
    release: Release
    variant: str
    splits: dict[str, SplitSummary]
    found: dict[str, list[str]]
    not_found: dict[str, list[str]]
    removed_stale: int = 0
    protocol: str = "clean"

    @property
    def up_to_date(self) -> bool:
        return all(s.reused == s.tiles for s in self.splits.values())

    def summary(self) -> str:
        spec = self.release.spec
        lines = [f"{spec.name} ({self.variant}) prepared in {self.output}, protocol {self.protocol}"]
        if self.protocol == "paper":
            lines.append(f"  as the original code: {'; '.join(self.release.paper.notes(spec))}")
        for s in self.splits.values():
            rule = s.rule
            if rule.patch_size:
                cut = f"patches {rule.patch_size}x{rule.patch_size}, stride {rule.stride or rule.patch_size}"
            else:
                cut = "whole images"
            flips = f", flipped copies {'+'.join(rule.flips)}" if rule.flips else ""
            labels = f"{rule.labels} labels" if rule.labels else "no labels"
            reused = f"; {s.reused} already done" if s.reused else ""
            tiles = f"{s.tiles} tile{'' if s.tiles == 1 else 's'}"
            lines.append(f"  {s.name}: {tiles} -> {s.patches} files ({cut}{flips}; {labels}){reused}")
            if total := sum(s.pixels) + s.ignored:
                shares = ", ".join(f"{n} {100 * c / total:.1f}%" for n, c in zip(spec.class_names, s.pixels))
                lines.append(f"    pixels: {shares}, ignored {100 * s.ignored / total:.1f}%")
            if s.unknown_ignored:
                lines.append(f"    {s.unknown_ignored} pixels of unknown colour/value were set to ignore")
        for split, parts in self.found.items():
            missing = self.not_found.get(split, [])
            text = f"  found for {split}: {', '.join(parts) if parts else 'nothing'}"
            if missing:
                text += f" (not found: {', '.join(missing)})"
            lines.append(text)
        if self.removed_stale:
            lines.append(f"  removed {self.removed_stale} files of an earlier preparation")
        lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)


def prepare(
    dataset: str | Release,
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    splits: Sequence[str] | None = None,
    variant: str | None = None,
    patch_size: int | None = None,
    unknown_colours: Unknown = "error",
    protocol: str = "clean",
    force: bool = False,
    verify: bool = True,
    progress: bool = False,
) -> PrepareResult:
    """Prepare an official release (see :mod:`bicorseg.data.release` for the output layout).

    Args:
        dataset: registered name (``vaihingen``, ``potsdam``, ``loveda``) or a :class:`Release`.
        sources: folder(s) and/or zip archive(s) holding the release.
        output: output folder (created).
        splits: splits to prepare (default: all of the protocol's).
        variant: band variant (e.g. Potsdam ``RGB`` or ``IRRG``; default: the protocol's).
        patch_size: another patch size for quick experiments (strides keep their ratio).
        unknown_colours: ``"error"`` (default) or ``"ignore"``: label codes not in the table.
        protocol: ``"clean"`` (default) or ``"paper"``, the original code's preparation (see
            :mod:`bicorseg.data.release`).
        force: replace an output folder prepared for another dataset or band variant.
        verify: on rerun, check the checksums of finished files (otherwise only their presence).
        progress: show a progress bar on stderr.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    release = get_release(dataset) if isinstance(dataset, str) else dataset
    variant_name, chosen = release.variant(variant)
    if patch_size is not None and patch_size < MIN_PATCH_SIZE:
        raise ConfigError(f"must be at least {MIN_PATCH_SIZE} pixels, not {patch_size}", key="patch_size")
    if unknown_colours not in ("error", "ignore"):
        raise ConfigError(f"unknown_colours must be 'error' or 'ignore', not {unknown_colours!r}")
    preparation = release.preparation(protocol)  # refuses an unknown protocol
    names = list(splits) if splits else [r.name for r in release.splits]
    rules = [release.split(name).scaled(patch_size) for name in names]
    source_list = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, recursive=True)  # once here; the many patch writes do not look again
    work = out / WORK_DIR

    old = None
    if (out / MANIFEST).exists():
        try:
            old = read_manifest(out)
        except InputError:
            if not force:
                raise
    if old is not None and (old.dataset, old.variant) != (release.name, variant_name):
        if not force:
            raise ConfigError(
                f"{out} holds {old.dataset} ({old.variant}) prepared data; choose another "
                "`output` or pass `force` to replace it"
            )
        for rel in _files(previous_records(work, old).values()):
            safe_unlink(out, rel)
        (out / MANIFEST).unlink()
        shutil.rmtree(work, ignore_errors=True)
        old = None

    try:
        with source_files(source_list, out, release.archives) as files:
            where = ", ".join(str(s) for s in source_list)
            items, found, not_found = plan(release, chosen, rules, files, where)
            previous = previous_records(work, old)
            summaries: dict[str, SplitSummary] = {}
            done: dict[str, SplitRecord] = {}

            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            console = Console(file=sys.stderr)
            with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
                task = bar.add_task(release.name, total=sum(len(v) for v in items.values()))
                for rule in rules:
                    cut = rule_record(rule, preparation)
                    wanted = Settings(release.name, variant_name, cut, unknown_colours, protocol)
                    records: list[TileRecord] = []
                    reused = 0
                    for item in items[rule.name]:
                        bar.update(task, description=f"{release.name} {rule.name} {item.name}")
                        record = previous.get((rule.name, item.name))
                        if (
                            record is not None
                            and record.settings == wanted
                            and record_valid(record, item, out, verify)
                        ):
                            reused += 1
                        else:
                            made = process_item(
                                item, rule, release, chosen, out, unknown_colours, preparation
                            )
                            record = replace(made, settings=wanted)
                            write_journal(work, rule.name, record)
                        records.append(record)
                        bar.advance(task)
                    split = done[rule.name] = _split_record(rule, cut, records, release.spec.num_classes)
                    summaries[rule.name] = SplitSummary(
                        rule.name, rule, len(split.tiles), len(split.items), reused, split.pixels or [],
                        split.ignored or 0, sum(r.unknown_ignored for r in records),
                    )  # fmt: skip
        manifest = _manifest(release, variant_name, chosen, done, found, unknown_colours,
                             [str(Path(s).expanduser()) for s in source_list], old, protocol, preparation)  # fmt: skip
        manifest_file = write_manifest(out, manifest)
    except BicorsegError:
        raise
    except OSError as error:  # a full disk, most likely: every file written so far is whole
        raise write_error(out, error, "the finished tiles are kept: rerun prepare to continue") from error
    # Files of an earlier run (other patch size, another band variant...) that nothing lists any more.
    keep = {path for split in done.values() for path in split.files()}
    if old is not None:
        for kept in old.splits.keys() - set(done):
            keep |= old.splits[kept].files()
    removed = sum(safe_unlink(out, rel) for rel in _files(previous.values()) - keep)
    shutil.rmtree(work, ignore_errors=True)
    return PrepareResult(
        out, manifest_file, release, variant_name, summaries, found, not_found, removed, protocol
    )


def _files(records: Iterable[TileRecord]) -> set[str]:
    """The output files (relative paths) of tile records."""
    return {path for record in records for path in record.files()}


def _split_record(rule: SplitRule, cut: JSON, records: list[TileRecord], num_classes: int) -> SplitRecord:
    """The manifest's record of a split: its tiles, its samples and their class pixel counts."""
    items = [replace(entry, source_name=record.name) for record in records for entry in record.entries]
    pixels, ignored = [0] * num_classes, 0
    for entry in items:
        if entry.pixels is not None:
            pixels = [a + b for a, b in zip(pixels, entry.pixels)]
            ignored += int(entry.ignored or 0)
    labelled = bool(rule.labels)
    return SplitRecord(cut, rule.labels, {record.name: record for record in records}, items,
                       pixels if labelled else None, ignored if labelled else None)  # fmt: skip


def _manifest(
    release: Release, variant_name: str, variant: BandVariant, splits: dict[str, SplitRecord],
    found: dict[str, list[str]], unknown: Unknown, sources: list[str], old: Manifest | None,
    protocol: str, preparation: PaperPreparation,
) -> Manifest:  # fmt: skip
    from bicorseg.defaults import VERSION

    spec = release.spec_for(variant_name)
    if old is not None and old.protocol == protocol:
        # Splits prepared earlier and not asked for now stay listed (same dataset, variant, protocol).
        splits = {**{k: v for k, v in old.splits.items() if k not in splits}, **splits}
    return Manifest(
        dataset=release.name,
        variant=variant_name,
        spec=spec.to_dict(),
        splits=splits,
        bands=list(variant.bands),
        unknown_colours=unknown,
        protocol=protocol,
        protocol_notes=preparation.notes(spec) if protocol == "paper" else [],
        sources=sources,
        found=found,
        bicorseg_version=VERSION,
    )
