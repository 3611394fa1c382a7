"""What a preparation did, for people: the per-split summary and the progress bar.

:class:`PrepareResult` is what :func:`bicorseg.data.release.prepare` returns; its
:meth:`~PrepareResult.summary` is what ``bicorseg prepare`` prints.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bicorseg.data.datasets import Release, SplitRule

if TYPE_CHECKING:
    from rich.progress import Progress


@dataclass
class SplitSummary:
    """The counts of one split of a preparation (tiles, files written or reused, class pixels)."""

    name: str
    rule: SplitRule
    tiles: int = 0
    patches: int = 0
    reused: int = 0
    pixels: list[int] = field(default_factory=list)
    ignored: int = 0
    unknown_ignored: int = 0


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
            if s.pixels and sum(s.pixels) + s.ignored:
                total = sum(s.pixels) + s.ignored
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


def progress_bar(enabled: bool) -> Progress:
    """A progress bar on stderr (rich), shown only when ``enabled``; a context manager."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
        disable=not enabled,
    )
