"""Turn an official dataset release into training data: check it, convert labels, cut patches, write a manifest.

:func:`prepare` reads a release (unpacked folders and/or the official zip archives, see
:mod:`bicorseg.data.sources`) as declared in :mod:`bicorseg.data.datasets`, and writes::

    DIR/manifest.json                 everything below, with sizes, checksums and class pixel counts
    DIR/{split}/images/{name}.tif     image patches in their native dtype (GeoTIFF sources: GeoTIFF,
                                      georeferenced like the source; PNG/JPEG sources: PNG; whole
                                      images that need no cutting are copied byte for byte)
    DIR/{split}/masks/{name}.png      uint8 index masks: 0..N-1 classes, ``spec.ignore_index`` ignored

Patch names are ``{tile name}[_{hflip|vflip}][_{y}_{x}]`` (``y, x``: the patch's top-left pixel in
the padded, possibly flipped tile), e.g. ``top_mosaic_09cm_area1_hflip_512_0``. Splits without
labels (LoveDA test) have no masks. Tiles are padded at the bottom and right to a multiple of the
patch size (image 0).

Two protocols (``protocol``, recorded in the manifest):

* ``clean`` (the default): padding is labelled ignore, so it never counts as a class; flipped
  copies are flips of the padded tile.
* ``paper``: what the original code did (the release's :class:`~bicorseg.data.datasets.PaperPreparation`).
  ISPRS: padding is labelled impervious surface (class 0) in every split, so it is trained and
  scored as that class; flipped copies are flips of the unpadded tile, padded afterwards; Vaihingen
  training patches go through the car zoom (:class:`~bicorseg.data.datasets.ZoomStep`): names
  ``{patch}_zoom``, ``_zoom_vflip``, ``_zoom_hflip``, ``_zoom_rot{0|90|180|270}`` replace ``{patch}``.
  LoveDA: the same files as ``clean``.

Every file is written to a temporary name and renamed; each finished tile is recorded in
``DIR/.bicorseg-prepare/`` and the manifest is written last. A rerun verifies what is there
(files present, checksums equal, sources unchanged), redoes only what is missing or broken, and
removes outputs of a previous run that the new one no longer lists.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from affine import Affine

from bicorseg.atomic import remove_stale_temps
from bicorseg.data.datasets import (
    PROTOCOLS,
    BandVariant,
    Release,
    SplitRule,
    ZoomStep,
    get_release,
)
from bicorseg.data.io import (
    Georeference,
    atomic_output,
    check_finite,
    copy_bytes,
    read_georeferenced,
    read_mask,
    sha256_file,
    write_png,
    write_tiff,
)
from bicorseg.data.manifest import FORMAT, MANIFEST, VERSION, read_manifest, write_manifest
from bicorseg.data.sources import SourceFile, scan_sources
from bicorseg.errors import ConfigError, InputError

WORK_DIR = ".bicorseg-prepare"
MIN_PATCH_SIZE = 32  # the network's input granularity; smaller patches hold nothing to train on
Unknown = Literal["error", "ignore"]


@dataclass
class Item:
    """One source image of a split (a tile), with its label file if the split has labels."""

    split: str
    name: str  # output base name, from the release's patch_name
    fields: dict[str, str]
    image: SourceFile
    label: SourceFile | None


@dataclass
class SplitSummary:
    name: str
    rule: SplitRule
    tiles: int = 0
    patches: int = 0
    reused: int = 0
    pixels: list[int] = field(default_factory=list)
    ignored: int = 0
    unknown_ignored: int = 0
    patch_shape: tuple[int, int] | None = None


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


# ------------------------------------------------------------------------------------------------ plan


def _best(candidates: list[SourceFile]) -> SourceFile:
    # Prefer unpacked files over archive members, then the shallowest path: deterministic either way.
    return min(candidates, key=lambda f: (f.in_archive, f.rel.count("/"), f.rel))


def _short_list(values: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _match(
    release: Release, patterns: Iterable[str], files: Iterable[SourceFile]
) -> dict[tuple, list[SourceFile]]:
    found: dict[tuple, list[SourceFile]] = defaultdict(list)
    compiled = [release.pattern(p) for p in patterns]
    for f in files:
        for regex in compiled:
            m = regex.search(f.rel)
            if m:
                found[tuple(sorted(m.groupdict().items()))].append(f)
                break
    return found


def plan(
    release: Release,
    variant: BandVariant,
    rules: Sequence[SplitRule],
    files: Sequence[SourceFile],
    sources: str,
) -> tuple[dict[str, list[Item]], dict[str, list[str]], dict[str, list[str]]]:
    """Match source files to the splits: items per split, parts found and not found per split.

    Raises InputError listing every tile the protocol needs that is absent, every image without
    its label and every label without its image.
    """
    images = _match(release, variant.images, files)
    claimed = {id(f) for group in images.values() for f in group}
    rest = [f for f in files if id(f) not in claimed]
    labels = {role: _match(release, patterns, rest) for role, patterns in release.labels.items()}
    if not images:
        expected = _short_list([*variant.images, *release.archives], 6)
        raise InputError(
            f"{sources}: no image of the {release.name} release found (expected e.g. {expected})"
        )

    # Labels indexed by the names of their fields, so that finding an image's label is a lookup.
    label_index: dict[str, dict[tuple[str, ...], dict[tuple, list[SourceFile]]]] = {}
    for role, found_labels in labels.items():
        label_index[role] = defaultdict(dict)
        for key, group in found_labels.items():
            label_index[role][tuple(k for k, _ in key)][key] = group

    def label_for(role: str, fields: dict[str, str]) -> SourceFile | None:
        for names, table in label_index[role].items():
            group = table.get(tuple((k, fields.get(k)) for k in names))
            if group:
                return _best(group)
        return None

    items: dict[str, list[Item]] = {}
    found: dict[str, list[str]] = {}
    not_found: dict[str, list[str]] = {}
    problems: list[str] = []
    for rule in rules:
        selected: list[dict[str, str]] = []
        if rule.tiles:
            by_tile: dict[str, list[tuple]] = defaultdict(list)
            for key in images:
                by_tile[dict(key)["tile"]].append(key)
            absent = [t for t in rule.tiles if t not in by_tile]
            if absent:
                problems.append(
                    f"{rule.name}: no image for tile(s) {_short_list(absent)} (expected {' or '.join(variant.images)})"
                )
            for tile in rule.tiles:
                if tile in by_tile:
                    keys = by_tile[tile]
                    best = min(keys, key=lambda k: (_best(images[k]).in_archive, k))
                    selected.append(dict(best))
        else:
            parts: dict[str, int] = defaultdict(int)
            for key in sorted(images):
                fields = dict(key)
                if all(fields.get(k) in allowed for k, allowed in rule.where.items()):
                    selected.append(fields)
                    parts["/".join(fields[k] for k in rule.where)] += 1
            found[rule.name] = [f"{p} ({n} images)" for p, n in sorted(parts.items())]
            combos = [[]]
            for allowed in rule.where.values():
                combos = [[*c, v] for c in combos for v in allowed]
            not_found[rule.name] = ["/".join(c) for c in combos if "/".join(c) not in parts]
            if rule.labels is not None:
                # Labels without their image are as suspicious as images without labels.
                orphans = []
                for names, table in label_index[rule.labels].items():
                    wanted = {tuple((k, f.get(k)) for k in names) for f in selected}
                    orphans += [
                        _best(group).display
                        for key, group in table.items()
                        if key not in wanted
                        and all(dict(key).get(k, v[0]) in v for k, v in rule.where.items())
                    ]
                if orphans:
                    problems.append(
                        f"{rule.name}: {len(orphans)} label(s) without an image: {_short_list(orphans, 5)}"
                    )
        split_items = []
        no_label = []
        for fields in selected:
            image = _best(images[tuple(sorted(fields.items()))])
            label = None
            if rule.labels is not None:
                label = label_for(rule.labels, fields)
                if label is None:
                    no_label.append(fields["tile"] if rule.tiles else image.display)
                    continue
            split_items.append(Item(rule.name, release.patch_name.format(**fields), fields, image, label))
        if no_label:
            what = "tile(s)" if rule.tiles else "image(s)"
            problems.append(
                f"{rule.name}: no {rule.labels} label for {what} {_short_list(no_label)} "
                f"(expected {' or '.join(release.labels[rule.labels or ''])})"
            )
        names = [item.name for item in split_items]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f"{rule.name}: several images would be written as {_short_list(duplicates, 5)}")
        items[rule.name] = split_items
    if problems:
        raise InputError(f"{sources}: the {release.name} release is incomplete: " + "; ".join(problems))
    if not any(items.values()):
        raise InputError(
            f"{sources}: none of the requested splits ({', '.join(r.name for r in rules)}) of {release.name} "
            "has any image"
        )
    return items, found, not_found


# ------------------------------------------------------------------------------------------------- cut


def _window_georef(
    georef: Georeference | None, copy: str, extent: tuple[int, int], y: int, x: int
) -> Georeference | None:
    """The georeference of the window at (y, x) of a copy flipped over ``extent`` (height, width)."""
    if georef is None:
        return None
    transform = georef.transform
    height, width = extent
    # A flipped copy is still a correct map of the ground: its transform is flipped too.
    if copy == "hflip":
        transform = _compose(transform, Affine(-1, 0, width, 0, 1, 0))
    elif copy == "vflip":
        transform = _compose(transform, Affine(1, 0, 0, 0, -1, height))
    return Georeference(georef.crs, _compose(transform, Affine.translation(x, y)))


def _pad(array: np.ndarray, shape: tuple[int, int], value: int) -> np.ndarray:
    """``array`` (``... x H x W``) padded at the bottom and right to ``shape`` with ``value``."""
    extra = [(0, 0)] * (array.ndim - 2) + [(0, shape[0] - array.shape[-2]), (0, shape[1] - array.shape[-1])]
    return np.pad(array, extra, constant_values=value)


def _zoom_resize(image: np.ndarray, mask: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (bilinear, pixel centres) and mask (nearest, ``floor(i * c / side)``) resized to ``side``,
    as OpenCV's ``INTER_LINEAR`` and ``INTER_NEAREST`` (which albumentations uses) resize them."""
    import torch
    import torch.nn.functional as F

    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))[None]
    resized = F.interpolate(source, size=(side, side), mode="bilinear", align_corners=False)[0].numpy()
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        resized = np.clip(np.rint(resized), info.min, info.max)
    rows = np.arange(side) * mask.shape[0] // side
    cols = np.arange(side) * mask.shape[1] // side
    return resized.astype(image.dtype), mask[rows][:, cols]


_ROT90 = Affine(0, -1, 1, 1, 0, 0)  # one counter-clockwise quarter turn of a unit square (np.rot90)


def _zoom_variants(
    name: str, image: np.ndarray, mask: np.ndarray, georef: Georeference | None, zoom: ZoomStep
) -> list[tuple[str, np.ndarray, np.ndarray, Georeference | None, dict[str, Any]]] | None:
    """The car zoom of one patch (see :class:`ZoomStep`): its four variants, or None to keep the patch."""
    side = mask.shape[-1]
    rng = np.random.default_rng([zoom.seed, zlib.crc32(name.encode("utf-8"))])
    low, high = zoom.side_range(side)
    crop = int(rng.integers(low, high + 1))
    y0, x0 = (int(v) for v in rng.integers(0, side - crop + 1, size=2))
    crop_image, crop_mask = _zoom_resize(
        image[:, y0 : y0 + crop, x0 : x0 + crop], mask[y0 : y0 + crop, x0 : x0 + crop], side
    )
    if np.count_nonzero(crop_mask == zoom.class_index) <= zoom.min_share * crop_mask.size:
        return None
    turns = int(rng.integers(0, 4))
    base = None
    if georef is not None:
        base = _compose(georef.transform, _compose(Affine.translation(x0, y0), Affine.scale(crop / side)))
    turn = Affine.identity()
    for _ in range(turns):
        turn = _compose(turn, _compose(Affine.scale(side), _compose(_ROT90, Affine.scale(1 / side))))
    variants = [
        ("zoom", crop_image, crop_mask, Affine.identity()),
        ("zoom_vflip", crop_image[:, ::-1], crop_mask[::-1], Affine(1, 0, 0, 0, -1, side)),
        ("zoom_hflip", crop_image[:, :, ::-1], crop_mask[:, ::-1], Affine(-1, 0, side, 0, 1, 0)),
        (
            f"zoom_rot{90 * turns}",
            np.rot90(crop_image, turns, axes=(-2, -1)),
            np.rot90(crop_mask, turns),
            turn,
        ),
    ]
    out = []
    for suffix, img, msk, pixel_map in variants:
        ref = None if base is None else Georeference(georef.crs, _compose(base, pixel_map))
        info = {"window": [y0, x0, crop], "variant": suffix, "quarter_turns": turns if "rot" in suffix else 0}
        out.append((f"{name}_{suffix}", np.ascontiguousarray(img), np.ascontiguousarray(msk), ref, info))
    return out


def _compose(first: Affine, second: Affine) -> Affine:
    """``first`` after ``second`` (affine >= 2.4 spells it ``@``; older versions only ``*``)."""
    try:
        return first @ second
    except TypeError:  # pragma: no cover - affine < 2.4
        return first * second


def _counts(mask: np.ndarray, num_classes: int, ignore_index: int) -> tuple[list[int], int]:
    counts = np.bincount(mask.ravel(), minlength=256)
    return counts[:num_classes].tolist(), int(counts[ignore_index])


def _entry(
    out: Path, rel_image: str, rel_mask: str | None, name: str, tile: str, copy: str,
    window: list[int] | None, shape: tuple[int, int], mask: np.ndarray | None, release: Release,
    zoom: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    entry: dict[str, Any] = {
        "name": name,
        "image": rel_image,
        "mask": rel_mask,
        "height": shape[0],
        "width": shape[1],
        "tile": tile,
        "copy": copy,
        "window": window,
        "image_sha256": sha256_file(out / rel_image),
        "mask_sha256": sha256_file(out / rel_mask) if rel_mask else None,
    }
    if zoom is not None:
        entry["zoom"] = zoom
    if mask is not None:
        entry["pixels"], entry["ignored"] = _counts(mask, release.spec.num_classes, release.spec.ignore_index)
    return entry


def process_item(
    item: Item, rule: SplitRule, release: Release, variant: BandVariant, out: Path, unknown: Unknown = "error",
    protocol: str = "clean",
) -> dict[str, Any]:  # fmt: skip
    """Read one tile, convert its label, cut and write its patches (by ``protocol``); return its record."""
    preparation = release.preparation(protocol)
    data = item.image.read_bytes()
    image, georef = read_georeferenced(item.image.display, data=data)
    if image.shape[0] != len(variant.bands):
        raise InputError(
            f"{item.image.display}: has {image.shape[0]} band(s), expected {len(variant.bands)} "
            f"({', '.join(variant.bands)})"
        )
    check_finite(image, item.image.display)
    height, width = image.shape[1:]
    mask = None
    unknown_count = 0
    if item.label is not None:
        table = release.label_table
        raw = read_mask(item.label.display, mode="colour" if table.kind == "colour" else "index",
                        data=item.label.read_bytes())  # fmt: skip
        mask, unknown_count = table.encode(raw, item.label.display, unknown=unknown)
        del raw
        if mask.shape != (height, width):
            raise InputError(
                f"{item.label.display}: label is {mask.shape[1]}x{mask.shape[0]} px but its image "
                f"{item.image.display} is {width}x{height} px (width x height)"
            )
    split_dir = Path(item.split)
    entries: list[dict[str, Any]] = []
    is_tiff = item.image.suffix in (".tif", ".tiff")
    if rule.patch_size is None:
        # Whole images: the source file is copied unchanged (lossless, keeps any georeference).
        rel_image = (split_dir / "images" / f"{item.name}{item.image.suffix}").as_posix()
        copy_bytes(out / rel_image, data)
        rel_mask = None
        if mask is not None:
            rel_mask = (split_dir / "masks" / f"{item.name}.png").as_posix()
            write_png(out / rel_mask, mask)
        entries.append(_entry(out, rel_image, rel_mask, item.name, item.fields["tile"], "original", None,
                              (height, width), mask, release))  # fmt: skip
    else:
        size = rule.patch_size
        stride = rule.stride or size
        padded = (-(-height // size) * size, -(-width // size) * size) if rule.pad else (height, width)
        pad_label = release.spec.ignore_index if preparation.pad_label is None else preparation.pad_label
        zoom = (
            preparation.zoom
            if preparation.zoom is not None and item.split in preparation.zoom.splits
            else None
        )
        if not preparation.flip_before_pad:
            image = _pad(image, padded, 0)
            mask = None if mask is None else _pad(mask, padded, pad_label)
        del data
        suffix = ".tif" if is_tiff else ".png"
        for copy in ("original", *rule.flips):
            axis = {"original": None, "hflip": -1, "vflip": -2}[copy]
            img = image if axis is None else np.flip(image, axis)
            msk = mask if axis is None or mask is None else np.flip(mask, axis)
            extent = padded  # the array a flipped copy is flipped over
            if preparation.flip_before_pad:  # flip the tile as it is, then pad (the original's order)
                img, extent = _pad(img, padded, 0), (height, width)
                msk = None if msk is None else _pad(msk, padded, pad_label)
            for y in range(0, padded[0] - size + 1, stride):
                for x in range(0, padded[1] - size + 1, stride):
                    name = f"{item.name}{'' if copy == 'original' else '_' + copy}_{y}_{x}"
                    patch = np.ascontiguousarray(img[:, y : y + size, x : x + size])
                    patch_mask = (
                        None if msk is None else np.ascontiguousarray(msk[y : y + size, x : x + size])
                    )
                    patch_georef = _window_georef(georef, copy, extent, y, x)
                    variants = None
                    if zoom is not None and patch_mask is not None:
                        variants = _zoom_variants(name, patch, patch_mask, patch_georef, zoom)
                    for out_name, out_image, out_mask, out_georef, zoomed in variants or [
                        (name, patch, patch_mask, patch_georef, None)
                    ]:
                        rel_image = (split_dir / "images" / f"{out_name}{suffix}").as_posix()
                        if is_tiff:
                            write_tiff(out / rel_image, out_image, out_georef)
                        else:
                            write_png(out / rel_image, out_image)
                        rel_mask = None
                        if out_mask is not None:
                            rel_mask = (split_dir / "masks" / f"{out_name}.png").as_posix()
                            write_png(out / rel_mask, out_mask)
                        entries.append(_entry(out, rel_image, rel_mask, out_name, item.fields["tile"], copy,
                                              [y, x], (size, size), out_mask, release, zoomed))  # fmt: skip
    return {
        "tile": item.fields["tile"],
        "name": item.name,
        "fields": item.fields,
        "source": _source_identity(item),
        "size": [height, width],
        "unknown_ignored": unknown_count,
        "entries": entries,
    }


def _source_identity(item: Item) -> dict[str, Any]:
    identity: dict[str, Any] = {"image": item.image.rel, "image_bytes": item.image.size}
    if item.label is not None:
        identity.update(label=item.label.rel, label_bytes=item.label.size)
    return identity


# -------------------------------------------------------------------------------------------- bookkeeping


def _record_valid(record: dict[str, Any], item: Item, out: Path, verify: bool) -> bool:
    """A finished tile can be reused if its source is unchanged and its files are intact."""
    if record.get("source") != _source_identity(item):
        return False
    for entry in record.get("entries", []):
        for key in ("image", "mask"):
            rel = entry.get(key)
            if rel is None:
                continue
            path = out / rel
            if not path.is_file():
                return False
            if verify and sha256_file(path) != entry.get(f"{key}_sha256"):
                return False
    return True


def _journal_path(work: Path, split: str, name: str) -> Path:
    return work / "tiles" / split / f"{name}.json"


def _write_journal(path: Path, record: dict[str, Any]) -> None:
    with atomic_output(path, clean=False) as temp:
        temp.write_text(json.dumps(record), encoding="utf-8")


def _settings(
    release: Release, variant: str, rule: SplitRule, unknown: Unknown, protocol: str
) -> dict[str, Any]:
    return {
        "dataset": release.name,
        "variant": variant,
        "rule": rule.to_dict(),
        "unknown_colours": unknown,
        "protocol": protocol,
    }


def _previous_records(
    out: Path, work: Path, old: dict[str, Any] | None
) -> dict[tuple[str, str], dict[str, Any]]:
    """Finished tiles of earlier runs (from the manifest and the journal), with their settings."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    if old is not None:
        for split, info in old.get("splits", {}).items():
            by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for entry in info.get("items", []):
                by_name[entry.get("source_name", "")].append(entry)
            for name, tile in info.get("tiles", {}).items():
                records[(split, name)] = {
                    **tile,
                    "name": name,
                    "settings": {
                        "dataset": old.get("dataset"),
                        "variant": old.get("variant"),
                        "rule": info.get("rule"),
                        "unknown_colours": old.get("unknown_colours"),
                        "protocol": old.get("protocol", "clean"),
                    },
                    "entries": by_name.get(name, []),
                }
    tiles_dir = work / "tiles"
    if tiles_dir.is_dir():
        for path in sorted(tiles_dir.glob("*/*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # an unreadable journal entry only means that tile is redone
            records[(path.parent.name, path.stem)] = record
    return records


def _output_files(records: Iterable[dict[str, Any]]) -> set[str]:
    files = set()
    for record in records:
        for entry in record.get("entries", []):
            files.update(v for v in (entry.get("image"), entry.get("mask")) if v)
    return files


def _safe_unlink(out: Path, rel: str) -> bool:
    path = (out / rel).resolve()
    if out.resolve() not in path.parents:
        return False  # never delete outside the output folder, whatever a manifest says
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------------------- main


def prepare(
    dataset: str | Release,
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
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
    """Prepare an official release (see the module docstring for the output layout).

    Args:
        dataset: registered name (``vaihingen``, ``potsdam``, ``loveda``) or a :class:`Release`.
        sources: folder(s) and/or zip archive(s) holding the release.
        output: output folder (created).
        splits: splits to prepare (default: all of the protocol's).
        variant: band variant (e.g. Potsdam ``RGB`` or ``IRRG``; default: the protocol's).
        patch_size: another patch size for quick experiments (strides keep their ratio).
        unknown_colours: ``"error"`` (default) or ``"ignore"``: label codes not in the table.
        protocol: ``"clean"`` (default) or ``"paper"``, the original code's preparation (see the
            module docstring).
        force: replace an output folder prepared for another dataset or band variant.
        verify: on rerun, check the checksums of finished files (otherwise only their presence).
        progress: show a progress bar on stderr.
    """
    release = get_release(dataset) if isinstance(dataset, str) else dataset
    chosen = release.variant(variant)
    variant_name = next(k for k, v in release.variants.items() if v is chosen)
    if patch_size is not None and patch_size < MIN_PATCH_SIZE:
        raise ConfigError(f"must be at least {MIN_PATCH_SIZE} pixels, not {patch_size}", key="patch_size")
    if unknown_colours not in ("error", "ignore"):
        raise ConfigError(f"unknown_colours must be 'error' or 'ignore', not {unknown_colours!r}")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
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
    if old is not None and (old.get("dataset"), old.get("variant")) != (release.name, variant_name):
        if not force:
            raise ConfigError(
                f"{out} holds {old.get('dataset')} ({old.get('variant')}) prepared data; choose another "
                "`output` or pass `force` to replace it"
            )
        for rel in _output_files(_previous_records(out, work, old).values()):
            _safe_unlink(out, rel)
        (out / MANIFEST).unlink()
        shutil.rmtree(work, ignore_errors=True)
        old = None

    files = scan_sources(source_list, work, release.archives)
    where = ", ".join(str(s) for s in source_list)
    items, found, not_found = plan(release, chosen, rules, files, where)
    previous = _previous_records(out, work, old)
    summaries = {r.name: SplitSummary(r.name, r, pixels=[0] * release.spec.num_classes) for r in rules}
    records: dict[str, list[dict[str, Any]]] = {r.name: [] for r in rules}

    bar = _progress(progress)
    total = sum(len(v) for v in items.values())
    task = bar.add_task(f"{release.name}", total=total) if bar else None
    try:
        if bar:
            bar.start()
        for rule in rules:
            settings = _settings(release, variant_name, rule, unknown_colours, protocol)
            summary = summaries[rule.name]
            for item in items[rule.name]:
                if bar:
                    bar.update(task, description=f"{release.name} {rule.name} {item.name}")
                record = previous.get((rule.name, item.name))
                if (
                    record is not None
                    and record.get("settings") == settings
                    and _record_valid(record, item, out, verify)
                ):
                    summary.reused += 1
                else:
                    record = process_item(item, rule, release, chosen, out, unknown_colours, protocol)
                    record["settings"] = settings
                    _write_journal(_journal_path(work, rule.name, item.name), record)
                records[rule.name].append(record)
                if bar:
                    bar.advance(task)
    finally:
        if bar:
            bar.stop()

    manifest = _manifest(release, variant_name, chosen, rules, records, summaries, found, unknown_colours,
                         [str(Path(s).expanduser()) for s in source_list], old, protocol)  # fmt: skip
    manifest_file = write_manifest(out, manifest)
    # Files of an earlier run (other patch size, another band variant...) that nothing lists any more.
    keep = _output_files(r for rs in records.values() for r in rs)
    for kept in (old or {}).get("splits", {}).keys() - set(records):
        keep |= {
            v for e in old["splits"][kept].get("items", []) for v in (e.get("image"), e.get("mask")) if v
        }
    removed = sum(_safe_unlink(out, rel) for rel in _output_files(previous.values()) - keep)
    shutil.rmtree(work, ignore_errors=True)
    return PrepareResult(
        out, manifest_file, release, variant_name, summaries, found, not_found, removed, protocol
    )


def _manifest(
    release: Release, variant_name: str, variant: BandVariant, rules: Sequence[SplitRule],
    records: dict[str, list[dict[str, Any]]], summaries: dict[str, SplitSummary],
    found: dict[str, list[str]], unknown: Unknown, sources: list[str], old: dict[str, Any] | None,
    protocol: str = "clean",
) -> dict[str, Any]:  # fmt: skip
    from bicorseg import __version__

    spec = release.spec_for(variant_name)
    splits: dict[str, Any] = {}
    if old is not None and old.get("protocol", "clean") == protocol:
        # Splits prepared earlier and not asked for now stay listed (same dataset, variant, protocol).
        splits.update({k: v for k, v in old.get("splits", {}).items() if k not in records})
    for rule in rules:
        summary = summaries[rule.name]
        items = []
        tiles = {}
        for record in records[rule.name]:
            tiles[record["name"]] = {
                "tile": record["tile"],
                "fields": record["fields"],
                "source": record["source"],
                "size": record["size"],
                "unknown_ignored": record.get("unknown_ignored", 0),
            }
            summary.unknown_ignored += int(record.get("unknown_ignored", 0))
            for entry in record["entries"]:
                items.append({**entry, "source_name": record["name"]})
                if entry.get("pixels") is not None:
                    summary.pixels = [a + b for a, b in zip(summary.pixels, entry["pixels"])]
                    summary.ignored += int(entry["ignored"])
        summary.tiles = len(tiles)
        summary.patches = len(items)
        splits[rule.name] = {
            "rule": rule.to_dict(),
            "label_variant": rule.labels,
            "count": len(items),
            "tiles": tiles,
            "pixels": summary.pixels if rule.labels else None,
            "ignored": summary.ignored if rule.labels else None,
            "items": items,
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "bicorseg_version": __version__,
        "dataset": release.name,
        "variant": variant_name,
        "bands": list(variant.bands),
        "spec": spec.to_dict(),
        "unknown_colours": unknown,
        "protocol": protocol,
        "protocol_notes": release.preparation(protocol).notes(spec) if protocol == "paper" else [],
        "sources": sources,
        "found": found,
        "splits": splits,
    }


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
