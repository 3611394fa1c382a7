"""A class raster opened for reading: checked, with its class names, colours, nodata and windows.

A class raster is a single-band integer raster of class indices, as ``bicorseg predict`` writes
(uint8, nodata 255, class names in the tag ``bicorseg_classes``, colours in the colour table).
Class names come from a class table (read by the caller: a :class:`bicorseg.data.folder.ClassTable`)
when one is given, else from the raster's tags; without either, class ``i`` is called ``class_i``. Nodata is the
raster's mask (its nodata value or internal mask); a uint8 raster without a nodata value has 255 as
nodata (255 is never a class: at most 255 classes fit a uint8 map). A pixel value that is not one
of the known classes is an error, never silently named; without names, class ids are
``0..MAX_UNNAMED_CLASS`` (the uint16 range: land-cover codes fit, a stray 32-bit value is refused
rather than counted in a table of four billion entries).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import rasterio
from rasterio.windows import Window

from bicorseg.defaults import DEFAULT_WINDOW, NODATA, default_class_name
from bicorseg.errors import ConfigError, InputError
from bicorseg.raster_access import GDAL_CACHE_BYTES, InputPath, input_path, open_raster, reading
from bicorseg.spec import check_class_names

CLASSES_TAG = "bicorseg_classes"  # written by bicorseg predict: a JSON list of class names
MAX_UNNAMED_CLASS = 65535  # the largest class id of a raster without class names
_SHAPES_TYPES = {"uint8", "uint16", "int16", "int32"}


class ClassColours(Protocol):
    """Class names and colours given with a class raster: a class table (``ClassTable.from_yaml``)."""

    @property
    def class_names(self) -> Sequence[str]: ...
    @property
    def palette(self) -> Sequence[Sequence[int]]: ...
    @property
    def source(self) -> str: ...  # the class table's file, for messages


@dataclass
class ClassRaster:
    """An open, checked class raster (from :meth:`open`)."""

    path: InputPath
    src: rasterio.DatasetReader
    names: list[str] | None  # None: no names known, classes are called class_<i>
    palette: dict[int, tuple[int, int, int]]
    names_from: str  # where the names come from, for messages
    extra_nodata: int | None  # 255 for a uint8 raster without a nodata value

    @classmethod
    @contextmanager
    def open(cls, path: str | os.PathLike, class_table: ClassColours | None = None) -> Iterator[ClassRaster]:
        """Open and check ``path`` (a context manager yielding the :class:`ClassRaster`); a
        ``class_table`` names the classes instead of the raster's tags."""
        path = input_path(path)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), open_raster(path) as src:
            if src.count != 1:
                raise InputError(
                    f"{path} has {src.count} bands: a class raster has one band of class indices"
                )
            dtype = np.dtype(src.dtypes[0])
            if dtype.kind not in "ui":
                raise InputError(
                    f"{path} has pixel type {dtype.name}: a class raster holds integer class indices"
                )
            palette: dict[int, tuple[int, int, int]] = {}
            if class_table is not None:
                names, names_from = list(class_table.class_names), class_table.source
                palette = {i: (int(c[0]), int(c[1]), int(c[2])) for i, c in enumerate(class_table.palette)}
            else:
                names, names_from = _tag_names(src, path), f"the tag {CLASSES_TAG} of {path}"
                with suppress(ValueError):  # no colour table
                    palette = {int(k): tuple(map(int, v[:3])) for k, v in src.colormap(1).items()}
            extra = NODATA if src.nodata is None and dtype == np.uint8 else None
            yield cls(path, src, names, palette, names_from, extra)

    # --- classes --------------------------------------------------------------------------------

    @property
    def class_limit(self) -> int:
        """One more than the largest class id: the number of names, or ``MAX_UNNAMED_CLASS + 1``."""
        return len(self.names) if self.names is not None else MAX_UNNAMED_CLASS + 1

    def name(self, class_id: int) -> str:
        if self.names is not None and 0 <= class_id < len(self.names):
            return self.names[class_id]
        return default_class_name(class_id)

    def select(self, classes: Sequence[str | int] | None) -> set[int] | None:
        """Class ids from names or ids (``None``: every class)."""
        if not classes:
            return None
        chosen: set[int] = set()
        for item in classes:
            text = str(item).strip()
            if self.names is not None and text in self.names:
                chosen.add(self.names.index(text))
            elif text.lstrip("-").isdigit():
                value = int(text)
                limit = self.class_limit
                if not 0 <= value < limit:
                    raise ConfigError(f"{value} is not a class id (0..{limit - 1})", key="classes")
                chosen.add(value)
            else:
                known = ", ".join(self.names) if self.names else "none: give class ids"
                raise ConfigError(f"unknown class {text!r} (class names: {known})", key="classes")
        return chosen

    # --- pixels ---------------------------------------------------------------------------------

    def windows(self, size: int = DEFAULT_WINDOW) -> Iterator[Window]:
        """Windows of ``size`` pixels in row-major order (the last row and column are smaller)."""
        if size < 16:
            raise ConfigError(f"window must be at least 16 pixels, got {size}")
        for row in range(0, self.src.height, size):
            for col in range(0, self.src.width, size):
                yield Window(col, row, min(size, self.src.width - col), min(size, self.src.height - row))

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Class values (a type ``rasterio.features.shapes`` takes) and validity of a window."""
        with reading(self.path):
            data = self.src.read(1, window=window)
            valid = self.src.read_masks(1, window=window) > 0
        if self.extra_nodata is not None:
            valid &= data != self.extra_nodata
        values, limit = data[valid], self.class_limit  # class ids fit int32: at most MAX_UNNAMED_CLASS
        if values.size and (int(values.min()) < 0 or int(values.max()) >= limit):
            bad = int(values.min()) if int(values.min()) < 0 else int(values.max())
            rows, cols = np.nonzero(valid & (data == bad))
            known = (
                f"in {self.names_from}"
                if self.names is not None
                else "without class names: give `class_table`"
            )
            raise InputError(
                f"{self.path}: pixel value {bad} at row {int(window.row_off + rows[0])}, column "
                f"{int(window.col_off + cols[0])} is not a class (0..{limit - 1} {known})"
            )
        return (data if data.dtype.name in _SHAPES_TYPES else data.astype(np.int32)), valid


def _tag_names(src: rasterio.DatasetReader, path: InputPath) -> list[str] | None:
    text = src.tags().get(CLASSES_TAG)
    if text is None:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list):
        raise InputError(f"{path}: the tag {CLASSES_TAG} is not a JSON list of class names")
    return list(check_class_names(names, f"{path}: the tag {CLASSES_TAG}", InputError))
