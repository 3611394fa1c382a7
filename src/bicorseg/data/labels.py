"""Turn raw label maps (colour-coded or raw values) into class-index masks, and back into colours.

The colours of classes come from one table (:func:`colour_table`): colour maps, paletted PNG class
maps (:func:`class_map_picture`) and GDAL colour tables (:func:`gdal_colour_map`).

A :class:`LabelTable` maps each raw code to a class index or to the ignore index: either RGB colours
(``kind="colour"``, e.g. the ISPRS label tiles) or integer values (``kind="value"``, e.g. LoveDA's
raw 0..7). A code not in the table is an error naming the file and the code, never silently mapped,
unless the caller explicitly asks for unknown codes to be ignored.

A :class:`~bicorseg.spec.DatasetSpec` records the encoding of its masks
(:class:`~bicorseg.spec.LabelEncoding`); :meth:`LabelTable.for_spec` is its decoder and
:meth:`LabelTable.encoding` the record of a class table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from bicorseg.defaults import colour_hex
from bicorseg.errors import ConfigError, InputError
from bicorseg.spec import DatasetSpec, LabelEncoding

Colour = tuple[int, int, int]


def parse_colour(value: object, where: str = "colour") -> Colour:
    """``"#RRGGBB"``, ``"RRGGBB"`` or a sequence of three 0..255 integers -> ``(r, g, b)``."""
    try:
        if isinstance(value, str):
            rgb = tuple(bytes.fromhex(value.strip().lstrip("#")))
        else:
            rgb = tuple(int(v) for v in value)  # type: ignore[attr-defined]
            rgb = rgb if all(float(v) == r for v, r in zip(value, rgb)) else ()  # type: ignore[call-overload]
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ConfigError(f"{where}: {value!r} is not a colour (use '#RRGGBB' or [r, g, b] in 0..255)")
    return rgb  # type: ignore[return-value]


def _pack(rgb: np.ndarray) -> np.ndarray:
    """``3 x H x W`` uint8 -> ``H x W`` int32 codes ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


@dataclass(frozen=True)
class LabelTable:
    """Raw label code -> class index (or ``ignore_index``).

    Attributes:
        kind: ``"colour"`` (codes are RGB triples) or ``"value"`` (codes are integers).
        codes: mapping from code to class index; codes that mean "ignore" map to ``ignore_index``.
        num_classes: number of classes (indices ``0..num_classes-1``).
        ignore_index: index written for ignored pixels (must not collide with a class).
    """

    kind: Literal["colour", "value"]
    codes: Mapping[int | Colour, int]
    num_classes: int
    ignore_index: int
    _keys: np.ndarray = field(init=False, repr=False, compare=False)
    _values: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.ignore_index <= 255 or self.ignore_index < self.num_classes:
            raise ConfigError(f"ignore_index must be in {self.num_classes}..255, not {self.ignore_index}")
        for code, index in self.codes.items():
            if not (0 <= index < self.num_classes or index == self.ignore_index):
                raise ConfigError(f"label code {code!r} maps to {index}, not a class or the ignore index")
        if self.kind == "colour":  # packed as r << 16 | g << 8 | b
            keys = [(r << 16) | (g << 8) | b for r, g, b in map(parse_colour, self.codes)]
        else:
            keys = [int(code) for code in self.codes]  # type: ignore[arg-type]
        order = np.argsort(keys)
        object.__setattr__(self, "_keys", np.array(keys, dtype=np.int64)[order])
        object.__setattr__(self, "_values", np.array(list(self.codes.values()), dtype=np.uint8)[order])

    @classmethod
    def from_colours(
        cls, colours: Sequence[Colour], ignore_colours: Iterable[Colour] = (), ignore_index: int | None = None
    ) -> LabelTable:
        """Class ``i`` has colour ``colours[i]``; ``ignore_colours`` map to the ignore index."""
        return cls._listed(
            "colour", list(map(parse_colour, colours)), map(parse_colour, ignore_colours), ignore_index
        )

    @classmethod
    def from_value_list(
        cls, values: Sequence[int], ignore_values: Iterable[int] = (), ignore_index: int | None = None
    ) -> LabelTable:
        """Class ``i`` has raw value ``values[i]``; ``ignore_values`` map to the ignore index."""
        return cls._listed("value", [int(v) for v in values], map(int, ignore_values), ignore_index)

    @classmethod
    def _listed(
        cls, kind: Literal["colour", "value"], codes: list, ignore_codes: Iterable, ignore_index: int | None
    ) -> LabelTable:
        """Class ``i`` has code ``codes[i]``; a code listed twice is refused (a dict would keep the last)."""
        ignore = len(codes) if ignore_index is None else ignore_index
        table: dict[int | Colour, int] = {}
        for code, index in [*((c, i) for i, c in enumerate(codes)), *((c, ignore) for c in ignore_codes)]:
            if code in table:
                raise ConfigError(f"label code {code!r} is listed twice")
            table[code] = index
        return cls(kind, table, len(codes), ignore)

    @classmethod
    def identity(cls, num_classes: int, ignore_index: int) -> LabelTable:
        """Index masks that already hold ``0..num_classes-1`` and the ignore index."""
        codes = {i: i for i in range(num_classes)}
        codes[ignore_index] = ignore_index
        return cls("value", codes, num_classes, ignore_index)

    @classmethod
    def for_spec(cls, spec: DatasetSpec, *, colour_masks: bool = False) -> LabelTable:
        """The decoder of masks encoded as ``spec.label_encoding`` says (class indices by default).

        ``colour_masks``: the masks to decode are colour images although the spec's masks held
        class indices (a colour label for an index-trained model): they are decoded by the class
        colours (``spec.palette``).
        """
        encoding = spec.label_encoding
        if encoding.kind == "index":
            if colour_masks:
                return cls.from_colours(spec.palette, ignore_index=spec.ignore_index)
            return cls.identity(spec.num_classes, spec.ignore_index)
        if encoding.kind == "values":
            return cls.from_value_list(encoding.classes, encoding.ignore, spec.ignore_index)
        return cls.from_colours(encoding.classes, encoding.ignore, spec.ignore_index)

    def encoding(self) -> LabelEncoding:
        """The record of this table for a :class:`~bicorseg.spec.DatasetSpec` (one code per class)."""
        by_class: dict[int, list[int | Colour]] = {}
        for code, index in self.codes.items():
            by_class.setdefault(index, []).append(code)
        ignore = tuple(by_class.pop(self.ignore_index, ()))
        if self.kind == "value" and all(by_class.get(i) == [i] for i in range(self.num_classes)):
            if ignore == (self.ignore_index,):
                return LabelEncoding()  # the identity: masks hold class indices
        if sorted(by_class) != list(range(self.num_classes)) or any(len(v) != 1 for v in by_class.values()):
            raise ConfigError("only a table with exactly one code per class can be recorded in a spec")
        kind = "colours" if self.kind == "colour" else "values"
        return LabelEncoding(kind, tuple(by_class[i][0] for i in range(self.num_classes)), ignore)

    def encode(
        self, raw: np.ndarray, path: str | os.PathLike, *, unknown: Literal["error", "ignore"] = "error"
    ) -> tuple[np.ndarray, int]:
        """Raw label map -> ``H x W`` uint8 class indices, and the number of unknown pixels ignored.

        ``raw`` is ``3 x H x W`` uint8 for colour tables, ``H x W`` integers for value tables.
        """
        if self.kind == "colour":
            if raw.ndim != 3 or raw.shape[0] != 3:
                raise InputError(f"{path}: expected a colour-coded (RGB) label map, got shape {raw.shape}")
            codes = _pack(raw)
        else:
            if raw.ndim != 2:
                raise InputError(f"{path}: expected a single-band index mask, got shape {raw.shape}")
            codes = raw
        position = np.searchsorted(self._keys, codes)
        np.minimum(position, len(self._keys) - 1, out=position)
        known = self._keys[position] == codes
        out = self._values[position]
        if known.all():
            return out, 0
        n_unknown = int(known.size - np.count_nonzero(known))
        if unknown == "ignore":
            out[~known] = self.ignore_index
            return out, n_unknown
        raise InputError(f"{path}: {self._describe_unknown(codes, known, n_unknown)}")

    def _describe_unknown(self, codes: np.ndarray, known: np.ndarray, count: int) -> str:
        bad_codes, counts = np.unique(codes[~known], return_counts=True)
        order = np.argsort(-counts)[:5]
        rows, cols = np.nonzero(~known)
        parts = []
        for i in order:
            code = int(bad_codes[i])
            rgb = (code >> 16, (code >> 8) & 255, code & 255)
            label = f"colour {rgb} {colour_hex(rgb)}" if self.kind == "colour" else f"value {code}"
            parts.append(f"{label} ({int(counts[i])} px)")
        more = f" and {len(bad_codes) - 5} more" if len(bad_codes) > 5 else ""
        what = "colours" if self.kind == "colour" else "values"
        return (
            f"{count} pixels have {what} not in the class table, first at row {int(rows[0])}, "
            f"column {int(cols[0])}: {', '.join(parts)}{more}"
        )


def nearest_indices(source: int, target: int) -> np.ndarray:
    """The source pixel of each of ``target`` pixels when ``source`` pixels are resized nearest.

    Pixel centres: ``floor((i + 0.5) * source / target)`` in float64, the positions of GDAL's
    nearest-neighbour decimation; labels resized so are never mixed. torchvision's ``NEAREST_EXACT``
    is meant to be the same rule but computes the scale in float32: it picks another pixel at
    exact ties (e.g. 2 -> 41 pixels, target pixel 20), in 124 of the 6860 size pairs from 1..70 to
    1..98 pixels (measured).
    """
    positions = ((np.arange(target, dtype=np.float64) + 0.5) * source / target).astype(np.int64)
    return np.minimum(positions, source - 1)


Palette = Sequence[Sequence[int]] | Mapping[int, Sequence[int]] | np.ndarray


def colour_table(palette: Palette, default: Sequence[int] = (0, 0, 0), *, alpha: bool = False) -> np.ndarray:
    """The lookup table of a palette: ``256 x 3`` uint8 (``256 x 4`` with ``alpha``).

    Row ``i`` is the colour of class ``i`` (``palette`` lists one colour per class, or maps class
    indices to colours), opaque with ``alpha``; every other row is ``default``, transparent with
    ``alpha``. The one palette-to-colour table of bicorseg: colour maps, figures, GDAL colour tables.
    """
    colours = palette.items() if isinstance(palette, Mapping) else enumerate(palette)
    table = np.zeros((256, 4 if alpha else 3), dtype=np.uint8)
    table[:, :3] = default
    for index, colour in colours:
        table[int(index), :3] = colour
        if alpha:
            table[int(index), 3] = 255
    return table


def colourise(
    mask: np.ndarray, palette: Palette, default: Sequence[int] = (0, 0, 0), *, alpha: bool = False
) -> np.ndarray:
    """``H x W`` index mask -> ``3 x H x W`` uint8 colours (``4 x H x W`` RGBA with ``alpha``).

    Indices without a colour in ``palette`` get ``default`` (transparent with ``alpha``), see
    :func:`colour_table`.
    """
    lut = colour_table(palette, default, alpha=alpha)
    return np.ascontiguousarray(lut[mask.astype(np.uint8, copy=False)].transpose(2, 0, 1))


def class_map_picture(mask: np.ndarray, palette: Palette) -> Image.Image:
    """An ``H x W`` class map as a paletted picture (Pillow mode ``"P"``), saved as a paletted PNG.

    The pixel values stay the class indices (any reader of indices reads them unchanged) and the
    palette shows each class in its colour (:func:`colour_table`); values without a colour (nodata,
    the ignore index) are black and transparent (the PNG's ``tRNS`` chunk).
    """
    table = colour_table(palette, alpha=True)
    picture = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))  # mode "L"
    picture.putpalette(table[:, :3].tobytes())  # makes it mode "P"
    picture.info["transparency"] = table[:, 3].tobytes()
    return picture


def gdal_colour_map(palette: Palette) -> dict[int, tuple[int, ...]]:
    """The colour table of a class raster's band for rasterio's ``write_colormap``: class -> RGBA."""
    table = colour_table(palette, alpha=True)
    indices = list(palette) if isinstance(palette, Mapping) else range(len(palette))
    return {int(i): tuple(int(v) for v in table[int(i)]) for i in indices}
