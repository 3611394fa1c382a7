"""The journal: finished tiles recorded as they are done, so that a rerun redoes only what is missing.

Every finished tile is written to ``DIR/.bicorseg-prepare/tiles/{split}/{name}.json`` (a
:class:`TileRecord` with its :class:`Settings`) before the next one starts; the manifest is written
last. A rerun takes the finished tiles of the manifest and the journal (:func:`previous_records`)
and reuses those whose settings and source are unchanged and whose files are intact
(:func:`record_valid`); outputs nothing lists any more are removed (:func:`safe_unlink`, never
outside the output folder).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from bicorseg.atomic import atomic_output, sha256_file
from bicorseg.data.datasets import PaperPreparation, SplitRule
from bicorseg.data.release.planning import Item
from bicorseg.data.release.records import JSON, Manifest, TileRecord
from bicorseg.text_files import read_json_object

WORK_DIR = ".bicorseg-prepare"


def rule_record(rule: SplitRule, preparation: PaperPreparation) -> JSON:
    """How a split is cut under a protocol, as the manifest records it and a rerun compares it."""
    record = rule.to_dict()
    if rule.pad and rule.patch_size and preparation.pad_top_left:
        record["pad_side"] = "top_left"  # absent: bottom and right
    return record


def record_valid(record: TileRecord, item: Item, out: Path, verify: bool) -> bool:
    """A finished tile can be reused if its source is unchanged and its files are intact."""
    if record.source != item.identity():
        return False
    for entry in record.entries:
        for rel, checksum in ((entry.image, entry.image_sha256), (entry.mask, entry.mask_sha256)):
            if rel is None:
                continue
            path = out / rel
            if not path.is_file():
                return False
            if verify and sha256_file(path) != checksum:
                return False
    return True


def write_journal(work: Path, split: str, record: TileRecord) -> None:
    """Record a finished tile of ``split`` in the journal of the work folder ``work``."""
    with atomic_output(work / "tiles" / split / f"{record.name}.json", clean=False) as temp:
        temp.write_text(json.dumps(record.to_dict()), encoding="utf-8")


def previous_records(work: Path, old: Manifest | None) -> dict[tuple[str, str], TileRecord]:
    """Finished tiles of earlier runs (from the manifest and the journal), with their settings."""
    records: dict[tuple[str, str], TileRecord] = {}
    if old is not None:
        for split, info in old.splits.items():
            for name, tile in info.tiles.items():
                records[(split, name)] = replace(tile, settings=old.settings(split))
    tiles_dir = work / "tiles"
    if tiles_dir.is_dir():
        for path in sorted(tiles_dir.glob("*/*.json")):
            try:
                record = TileRecord.from_dict(read_json_object(path, "journal entry", ValueError))
            except ValueError:  # MalformedRecord is one too
                continue  # an unreadable journal entry only means that tile is redone
            records[(path.parent.name, path.stem)] = record
    return records


def safe_unlink(out: Path, rel: str) -> bool:
    path = (out / rel).resolve()
    if out.resolve() not in path.parents:
        return False  # never delete outside the output folder, whatever a manifest says
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
