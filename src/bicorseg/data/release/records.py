"""The typed records of a prepared dataset: one patch, one finished tile, one split, the manifest.

Each record reads its JSON form (``from_dict``) and writes it (``to_dict``) with the keys, in the
order, that ``manifest.json`` and the journal (``.bicorseg-prepare/tiles/...``) hold. Version 1 is
the first format: every key ``to_dict`` writes is required (``null`` where the value may be absent);
only the keys it leaves out when they do not apply (a patch's ``zoom``, ``pixels``, ``ignored`` and
``source_name``, a source's ``label``, a tile's ``settings``) may be missing. A missing key or a
value of the wrong type is a :class:`MalformedRecord`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

MANIFEST_FORMAT = "bicorseg-prepared"
MANIFEST_VERSION = 1

JSON = dict[str, Any]


class MalformedRecord(ValueError):
    """A manifest or journal record lacks a key or holds a value of the wrong type."""


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], *default: Any) -> Any:
    """``data[key]`` checked to be of ``kind``; with a ``default``, the key may be missing (a key
    ``to_dict`` leaves out) and None is allowed when it is the default."""
    if not isinstance(data, Mapping):
        raise MalformedRecord(f"expected an object, got {type(data).__name__}")
    if key not in data:
        if default:
            return default[0]
        raise MalformedRecord(f"no {key!r}")
    value = data[key]
    if value is None and default and default[0] is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise MalformedRecord(f"{key!r} is {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    return value


def _nullable(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``data[key]``, required, of ``kind`` or None."""
    if not isinstance(data, Mapping):
        raise MalformedRecord(f"expected an object, got {type(data).__name__}")
    if key not in data:
        raise MalformedRecord(f"no {key!r}")
    return _get(data, key, kind, None)


def _ints(values: Any, key: str) -> list[int]:
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        raise MalformedRecord(f"{key!r} is not a list of integers")
    return [int(v) for v in values]


@dataclass(frozen=True)
class ZoomRecord:
    """How a zoomed patch (the paper protocol's car zoom) was cut from its patch."""

    window: list[int]  # y, x, side of the square crop
    variant: str  # zoom, zoom_vflip, zoom_hflip, zoom_rot{0|90|180|270}
    quarter_turns: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ZoomRecord:
        return cls(
            _ints(_get(data, "window", list), "window"),
            _get(data, "variant", str),
            _get(data, "quarter_turns", int),
        )

    def to_dict(self) -> JSON:
        return {"window": list(self.window), "variant": self.variant, "quarter_turns": self.quarter_turns}


@dataclass(frozen=True)
class PatchRecord:
    """One written sample: its image (and mask) file relative to the output folder, with checksums."""

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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatchRecord:
        window = _nullable(data, "window", list)
        zoom = _get(data, "zoom", dict, None)
        pixels = _get(data, "pixels", list, None)
        return cls(
            name=_get(data, "name", str),
            image=_get(data, "image", str),
            mask=_nullable(data, "mask", str),
            height=_get(data, "height", int),
            width=_get(data, "width", int),
            tile=_get(data, "tile", str),
            copy=_get(data, "copy", str),
            window=None if window is None else _ints(window, "window"),
            image_sha256=_get(data, "image_sha256", str),
            mask_sha256=_nullable(data, "mask_sha256", str),
            zoom=None if zoom is None else ZoomRecord.from_dict(zoom),
            pixels=None if pixels is None else _ints(pixels, "pixels"),
            ignored=_get(data, "ignored", int, None),
            source_name=_get(data, "source_name", str, ""),
        )

    def to_dict(self) -> JSON:
        data: JSON = {
            "name": self.name,
            "image": self.image,
            "mask": self.mask,
            "height": self.height,
            "width": self.width,
            "tile": self.tile,
            "copy": self.copy,
            "window": None if self.window is None else list(self.window),
            "image_sha256": self.image_sha256,
            "mask_sha256": self.mask_sha256,
        }
        if self.zoom is not None:
            data["zoom"] = self.zoom.to_dict()
        if self.pixels is not None:
            data["pixels"], data["ignored"] = list(self.pixels), self.ignored
        if self.source_name:
            data["source_name"] = self.source_name
        return data

    def files(self) -> list[str]:
        """The files of this sample, relative to the output folder."""
        return [self.image] if self.mask is None else [self.image, self.mask]


@dataclass(frozen=True)
class SourceIdentity:
    """What a finished tile was made from: its source files (paths in the release) and their sizes."""

    image: str
    image_bytes: int
    label: str | None = None
    label_bytes: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceIdentity:
        return cls(
            _get(data, "image", str),
            _get(data, "image_bytes", int),
            _get(data, "label", str, None),
            _get(data, "label_bytes", int, None),
        )

    def to_dict(self) -> JSON:
        data: JSON = {"image": self.image, "image_bytes": self.image_bytes}
        if self.label is not None:
            data.update(label=self.label, label_bytes=self.label_bytes)
        return data


@dataclass(frozen=True)
class Settings:
    """The settings a tile was prepared with: a finished tile is reused only under equal settings."""

    dataset: str | None
    variant: str | None
    rule: JSON | None  # SplitRule.to_dict()
    unknown_colours: str | None
    protocol: str = "clean"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        return cls(
            _nullable(data, "dataset", str),
            _nullable(data, "variant", str),
            _nullable(data, "rule", dict),
            _nullable(data, "unknown_colours", str),
            _get(data, "protocol", str),
        )

    def to_dict(self) -> JSON:
        return {
            "dataset": self.dataset,
            "variant": self.variant,
            "rule": self.rule,
            "unknown_colours": self.unknown_colours,
            "protocol": self.protocol,
        }


@dataclass(frozen=True)
class TileRecord:
    """One finished source image (a tile) and the samples cut from it.

    The journal holds every field; the manifest holds the tile's own fields under its split's
    ``tiles`` (:meth:`summary_dict`) and its samples in the split's ``items``.
    """

    tile: str
    name: str
    fields: dict[str, str]
    source: SourceIdentity
    size: list[int]  # height, width of the source image
    unknown_ignored: int
    entries: list[PatchRecord]
    settings: Settings | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TileRecord:
        settings = _get(data, "settings", dict, None)
        return cls(
            tile=_get(data, "tile", str),
            name=_get(data, "name", str),
            fields=dict(_get(data, "fields", dict)),
            source=SourceIdentity.from_dict(_get(data, "source", dict)),
            size=_ints(_get(data, "size", list), "size"),
            unknown_ignored=_get(data, "unknown_ignored", int),
            entries=[PatchRecord.from_dict(e) for e in _get(data, "entries", list)],
            settings=None if settings is None else Settings.from_dict(settings),
        )

    def to_dict(self) -> JSON:
        data: JSON = {
            "tile": self.tile,
            "name": self.name,
            "fields": dict(self.fields),
            "source": self.source.to_dict(),
            "size": list(self.size),
            "unknown_ignored": self.unknown_ignored,
            "entries": [e.to_dict() for e in self.entries],
        }
        if self.settings is not None:
            data["settings"] = self.settings.to_dict()
        return data

    def summary_dict(self) -> JSON:
        """The tile's entry in its split's ``tiles`` of the manifest."""
        return {
            "tile": self.tile,
            "fields": dict(self.fields),
            "source": self.source.to_dict(),
            "size": list(self.size),
            "unknown_ignored": self.unknown_ignored,
        }

    def files(self) -> set[str]:
        return {path for entry in self.entries for path in entry.files()}


@dataclass(frozen=True)
class SplitRecord:
    """One prepared split: its cutting rule, tiles, samples and class pixel counts."""

    rule: JSON | None  # SplitRule.to_dict()
    label_variant: str | None
    tiles: dict[str, TileRecord]
    items: list[PatchRecord]
    pixels: list[int] | None = None
    ignored: int | None = None

    @property
    def count(self) -> int:
        return len(self.items)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitRecord:
        items = [PatchRecord.from_dict(i) for i in _get(data, "items", list)]
        by_source: dict[str, list[PatchRecord]] = {}
        for item in items:
            by_source.setdefault(item.source_name, []).append(item)
        tiles = {}
        for name, tile in _get(data, "tiles", dict).items():
            tiles[name] = TileRecord.from_dict({**tile, "name": name, "entries": []})
            tiles[name] = replace(tiles[name], entries=by_source.get(name, []))
        pixels = _nullable(data, "pixels", list)
        return cls(
            rule=_nullable(data, "rule", dict),
            label_variant=_nullable(data, "label_variant", str),
            tiles=tiles,
            items=items,
            pixels=None if pixels is None else _ints(pixels, "pixels"),
            ignored=_nullable(data, "ignored", int),
        )

    def to_dict(self) -> JSON:
        return {
            "rule": self.rule,
            "label_variant": self.label_variant,
            "count": self.count,
            "tiles": {name: tile.summary_dict() for name, tile in self.tiles.items()},
            "pixels": None if self.pixels is None else list(self.pixels),
            "ignored": self.ignored,
            "items": [i.to_dict() for i in self.items],
        }

    def files(self) -> set[str]:
        return {path for item in self.items for path in item.files()}


@dataclass(frozen=True)
class Manifest:
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
        splits = _get(data, "splits", dict)
        return cls(
            dataset=_get(data, "dataset", str),
            variant=_nullable(data, "variant", str),
            spec=_get(data, "spec", dict),
            splits={name: _split(name, split) for name, split in splits.items()},
            bands=list(_get(data, "bands", list)),
            unknown_colours=_nullable(data, "unknown_colours", str),
            protocol=_get(data, "protocol", str),
            protocol_notes=list(_get(data, "protocol_notes", list)),
            sources=list(_get(data, "sources", list)),
            found=dict(_get(data, "found", dict)),
            bicorseg_version=_nullable(data, "bicorseg_version", str),
            version=_get(data, "version", int),
        )

    def to_dict(self) -> JSON:
        return {
            "format": MANIFEST_FORMAT,
            "version": self.version,
            "bicorseg_version": self.bicorseg_version,
            "dataset": self.dataset,
            "variant": self.variant,
            "bands": list(self.bands),
            "spec": self.spec,
            "unknown_colours": self.unknown_colours,
            "protocol": self.protocol,
            "protocol_notes": list(self.protocol_notes),
            "sources": list(self.sources),
            "found": self.found,
            "splits": {name: split.to_dict() for name, split in self.splits.items()},
        }

    def settings(self, split: str) -> Settings:
        """The settings the tiles of ``split`` were prepared with."""
        return Settings(
            self.dataset, self.variant, self.splits[split].rule, self.unknown_colours, self.protocol
        )


def _split(name: str, data: Any) -> SplitRecord:
    try:
        return SplitRecord.from_dict(data)
    except MalformedRecord as error:
        raise MalformedRecord(f"split {name!r}: {error}") from None
