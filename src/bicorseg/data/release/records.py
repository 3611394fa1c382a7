"""The manifest of a prepared dataset: its typed records, and ``manifest.json`` read and written.

``DIR/manifest.json`` is written last by :func:`bicorseg.data.release.prepare`::

    {"format": "bicorseg-prepared", "version": 1, "bicorseg_version": "...",
     "dataset": release name, "variant": band variant, "bands": [...], "spec": DatasetSpec.to_dict(),
     "unknown_colours": "error" | "ignore", "protocol": "clean" | "paper", "protocol_notes": [...],
     "sources": [...], "found": {split: ["Train/Rural (n images)", ...]},
     "splits": {split: {"rule": {...}, "label_variant": "full" | "eroded" | null,
                        "count": samples, "pixels": [per class], "ignored": pixels,
                        "tiles": {name: {"tile", "fields", "source", "size", "unknown_ignored"}},
                        "items": [{"name", "image", "mask", "height", "width", "tile", "copy",
                                   "window": [y, x] | null, "image_sha256", "mask_sha256",
                                   ["zoom",] "pixels": [per class], "ignored", "source_name"}, ...]}}}

Each record (one patch, one finished tile, one split, the manifest) reads its JSON form
(``from_dict``) and writes it (``to_dict``) with the keys that ``manifest.json`` and the journal
(``.bicorseg-prepare/tiles/...``) hold, checked against the fields' annotations; paths in items are
relative to ``DIR``. Version 1 is the first format: every key ``to_dict`` writes is required
(``null`` where the value may be absent); only the keys it leaves out when they hold their default
(a record's ``OPTIONAL``: a patch's ``zoom``, ``pixels``, ``ignored`` and ``source_name``, a
source's ``label``, a tile's ``settings``) may be missing. Another version, a missing key or a value
of the wrong type is refused in one line (:func:`read_manifest`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from bicorseg.atomic import atomic_output
from bicorseg.errors import InputError
from bicorseg.text_files import read_json_object
from bicorseg.typedconfig import to_plain

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "bicorseg-prepared"
MANIFEST_VERSION = 1
MANIFEST_LIMIT = 256 << 20  # bytes: a few hundred per tile; the largest release has a few thousand tiles

JSON = dict[str, Any]
_R = TypeVar("_R", bound="Record")


class MalformedRecord(ValueError):
    """A manifest or journal record lacks a key or holds a value of the wrong type."""


def _mapping(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise MalformedRecord(f"expected an object, got {type(data).__name__}")
    return data


def _checked(value: Any, annotation: Any, key: str) -> Any:
    """``value`` of the type ``annotation`` (a record is read; a mapping is taken as it is)."""
    options = (
        typing.get_args(annotation) if typing.get_origin(annotation) is types.UnionType else (annotation,)
    )
    if value is None and type(None) in options:
        return None
    (kind,) = [option for option in options if option is not type(None)]
    if kind is Any:
        return value
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_dict(value)
    origin = typing.get_origin(kind) or kind
    if not isinstance(value, origin) or (isinstance(value, bool) and origin is int):
        raise MalformedRecord(f"{key!r} is {type(value).__name__}, not {origin.__name__}")
    if origin is list:
        return [_checked(item, typing.get_args(kind)[0], key) for item in value]
    return dict(value) if origin is dict else value


class Record:
    """A dataclass read from and written to JSON by its fields (see the module docstring)."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # keys to_dict leaves out when they hold the default

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any]) -> _R:
        data, hints, values = _mapping(data), typing.get_type_hints(cls), {}
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            if item.name in data:
                values[item.name] = _checked(data[item.name], hints[item.name], item.name)
            elif item.name not in cls.OPTIONAL:
                raise MalformedRecord(f"no {item.name!r}")
        return cls(**values)

    def to_dict(self) -> JSON:
        return {
            item.name: to_plain(getattr(self, item.name))
            for item in dataclasses.fields(self)  # type: ignore[arg-type]
            if item.name not in self.OPTIONAL or getattr(self, item.name) != item.default
        }


@dataclass(frozen=True)
class ZoomRecord(Record):
    """How a zoomed patch (the paper protocol's car zoom) was cut from its patch."""

    window: list[int]  # y, x, side of the square crop
    variant: str  # zoom, zoom_vflip, zoom_hflip, zoom_rot{0|90|180|270}
    quarter_turns: int


@dataclass(frozen=True)
class PatchRecord(Record):
    """One written sample: its image (and mask) file relative to the output folder, with checksums."""

    OPTIONAL = ("zoom", "pixels", "ignored", "source_name")

    name: str
    image: str
    mask: str | None
    height: int
    width: int
    tile: str
    copy: str  # original, hflip, vflip
    window: list[int] | None  # y, x of the patch in the padded tile; None for a whole image
    image_sha256: str
    mask_sha256: str | None
    zoom: ZoomRecord | None = None
    pixels: list[int] | None = None  # per class (None without a mask)
    ignored: int | None = None
    source_name: str = ""  # the tile record it belongs to (manifest items only)

    def files(self) -> list[str]:
        """The files of this sample, relative to the output folder."""
        return [self.image] if self.mask is None else [self.image, self.mask]


@dataclass(frozen=True)
class SourceIdentity(Record):
    """What a finished tile was made from: its source files (paths in the release) and their sizes."""

    OPTIONAL = ("label", "label_bytes")

    image: str
    image_bytes: int
    label: str | None = None
    label_bytes: int | None = None


@dataclass(frozen=True)
class Settings(Record):
    """The settings a tile was prepared with: a finished tile is reused only under equal settings."""

    dataset: str | None
    variant: str | None
    rule: JSON | None  # SplitRule.to_dict()
    unknown_colours: str | None
    protocol: str = "clean"


_TILE_SUMMARY = ("tile", "fields", "source", "size", "unknown_ignored")


@dataclass(frozen=True)
class TileRecord(Record):
    """One finished source image (a tile) and the samples cut from it.

    The journal holds every field; the manifest holds the tile's own fields under its split's
    ``tiles`` (:meth:`summary_dict`) and its samples in the split's ``items``.
    """

    OPTIONAL = ("settings",)

    tile: str
    name: str
    fields: dict[str, str]
    source: SourceIdentity
    size: list[int]  # height, width of the source image
    unknown_ignored: int
    entries: list[PatchRecord]
    settings: Settings | None = None

    def summary_dict(self) -> JSON:
        """The tile's entry in its split's ``tiles`` of the manifest."""
        return {key: value for key, value in self.to_dict().items() if key in _TILE_SUMMARY}

    def files(self) -> set[str]:
        return {path for entry in self.entries for path in entry.files()}


@dataclass(frozen=True)
class SplitRecord(Record):
    """One prepared split: its cutting rule, tiles, samples and class pixel counts."""

    rule: JSON | None  # SplitRule.to_dict()
    label_variant: str | None
    tiles: dict[str, TileRecord]
    items: list[PatchRecord]
    pixels: list[int] | None = None
    ignored: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitRecord:
        split = super().from_dict(data)  # its tiles as the manifest holds them: summaries
        by_source: dict[str, list[PatchRecord]] = {}
        for item in split.items:
            by_source.setdefault(item.source_name, []).append(item)
        tiles = {
            name: replace(
                TileRecord.from_dict({**_mapping(tile), "name": name, "entries": []}),
                entries=by_source.get(name, []),
            )
            for name, tile in split.tiles.items()
        }
        return replace(split, tiles=tiles)

    def to_dict(self) -> JSON:
        tiles = {name: tile.summary_dict() for name, tile in self.tiles.items()}
        return {**super().to_dict(), "count": len(self.items), "tiles": tiles}

    def files(self) -> set[str]:
        return {path for item in self.items for path in item.files()}


@dataclass(frozen=True)
class Manifest(Record):
    """``manifest.json`` of a prepared dataset (see :mod:`bicorseg.data.release`)."""

    dataset: str
    variant: str | None
    spec: JSON  # DatasetSpec.to_dict()
    splits: dict[str, SplitRecord]
    bands: list[str] = field(default_factory=list)
    unknown_colours: str | None = None
    protocol: str = "clean"
    protocol_notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    found: dict[str, list[str]] = field(default_factory=dict)
    bicorseg_version: str | None = None
    version: int = MANIFEST_VERSION

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        manifest = super().from_dict(data)  # checks that the splits are an object
        splits = {}
        for name, split in data["splits"].items():
            try:
                splits[name] = SplitRecord.from_dict(split)
            except MalformedRecord as error:
                raise MalformedRecord(f"split {name!r}: {error}") from None
        return replace(manifest, splits=splits)

    def to_dict(self) -> JSON:
        data = super().to_dict()
        splits = data.pop("splits")
        return {"format": MANIFEST_FORMAT, **data, "splits": splits}  # the splits last, for readers

    def settings(self, split: str) -> Settings:
        """The settings the tiles of ``split`` were prepared with."""
        return Settings(
            self.dataset, self.variant, self.splits[split].rule, self.unknown_colours, self.protocol
        )


def read_manifest(root: str | os.PathLike[str]) -> Manifest:
    """Load and check ``root/manifest.json``."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: no manifest here; run `bicorseg prepare` to build this folder first")
    data = read_json_object(path, "manifest", InputError, MANIFEST_LIMIT)
    if data.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path}: not a bicorseg manifest (format {data.get('format')!r})")
    version = data.get("version")
    if version != MANIFEST_VERSION:
        raise InputError(
            f"{path}: manifest version {version!r}; this bicorseg reads version {MANIFEST_VERSION}"
        )
    try:
        return Manifest.from_dict(data)
    except MalformedRecord as error:
        raise InputError(f"{path}: malformed manifest: {error}") from None


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> Path:
    path = Path(root) / MANIFEST
    with atomic_output(path) as temp:
        with open(temp, "w", encoding="utf-8") as stream:
            json.dump(manifest.to_dict(), stream, indent=1)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
    return path
