"""A GIS training source: georeferenced rasters and their labels, read window by window.

:class:`GeoSource` joins the rasters (:mod:`.rasters`), the labels (polygons, :mod:`.vector`, or a
label raster, :mod:`.rasterlabels`), the optional labelled area and the classes (:mod:`.classes`).
:meth:`GeoSource.read` gives the image and labels of any window:

* labels: the class of the polygon covering each pixel centre (overlaps resolved as
  :mod:`.vector` says), else the background class inside the labelled area, else the ignore index
  (not trained, not scored); pixels the image does not hold (nodata, masked, not finite) are ignored
  too;
* image: all bands as float32 in input units, invalid pixels replaced by the band mean (zero after
  normalisation), as prediction does.

:class:`GeoSplit` adds the spatial split of :mod:`.split`: the census, the validation area, the
training windows and the validation grid, and the summary a run prints first.

Every check of the inputs runs when these objects are built, before any training: a fault is one
line naming the file or the parameter.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from bicorseg import raster_access
from bicorseg.data.folder import ClassTable
from bicorseg.data.geo.classes import GeoClasses
from bicorseg.data.geo.rasters import GeoRaster, find_rasters, inspect_rasters, normalisation
from bicorseg.errors import ConfigError, InputError
from bicorseg.raster_access import input_path
from bicorseg.spec import DatasetSpec

LABEL_RULE = "the higher priority wins, else the smaller polygon"


def _is_vector(path: Path) -> bool:
    import pyogrio

    with raster_access.vector_environment(allow_remote=False):
        try:
            return len(pyogrio.list_layers(path)) > 0
        except Exception:
            return False


class GeoSource:
    """Rasters and their labels (see the module docstring).

    Args:
        images: rasters: files, folders, glob patterns, URLs (:func:`.rasters.find_rasters`), and
            STAC items (``.json`` files or URLs: the assets of ``stac_bands`` stacked into one raster,
            as ``predict --stac-item`` does; extra ``cloud``).
        labels: a vector layer (``PATH`` or ``PATH|layername=NAME``) or a label raster.
        label_field: the attribute of the polygons holding their class name or code.
        where: an attribute filter of the polygons (an OGR SQL ``WHERE`` clause).
        priority_field: a numeric attribute; the polygon with the higher value wins an overlap.
        labelled_area: an area layer inside which pixels no polygon covers are ``background``.
        background: the class of those pixels.
        classes: class names in index order (None: from the class table, or the labels' codes).
        class_table: a class table (file or mapping) for names, codes, colours and normalisation.
        spec: the facts of a model (a checkpoint's): its classes and normalisation are used.
        strict: refuse invalid polygons instead of repairing them.
        name: the dataset's name in the spec (default: the labels' file name).
        index: read and index the labels (False: only the rasters, the classes and :attr:`spec`).
        stac_bands: the bands read from STAC items, by ``eo:bands`` common name or asset key, in
            order (default: the model's bands, else the class table's); they name the spec's bands.
    """

    def __init__(
        self,
        images: Sequence[str | os.PathLike],
        labels: str | os.PathLike,
        *,
        label_field: str | None = None,
        where: str | None = None,
        priority_field: str | None = None,
        labelled_area: str | os.PathLike | None = None,
        background: str = "background",
        classes: Sequence[str] | None = None,
        class_table: str | os.PathLike | dict[str, Any] | ClassTable | None = None,
        spec: DatasetSpec | None = None,
        strict: bool = False,
        name: str | None = None,
        index: bool = True,
        stac_bands: Sequence[str] | None = None,
    ) -> None:
        self.scratch: Any = None
        try:
            self._open(images, labels, label_field, where, priority_field, labelled_area, background, classes,
                       class_table, spec, strict, name, index, stac_bands)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def _folder(self) -> Path:
        """The private scratch folder of this source (made on first use)."""
        import bicorseg.data.geo.vector as vector

        if self.scratch is None:
            self.scratch = vector.Scratch()
        return self.scratch.path

    def _open_rasters(
        self, images: Sequence[str | os.PathLike], bands: Sequence[str] | None
    ) -> list[GeoRaster]:
        """The rasters, and a VRT per STAC item stacking its assets of ``bands``."""
        items = [entry for entry in images if input_path(entry).suffix.lower() == ".json"]
        plain = [entry for entry in images if entry not in items]
        paths: list[Any] = find_rasters(plain) if plain else []
        if items:
            if not bands:
                raise ConfigError(
                    "name the bands to read from the STAC items (eo:bands common names or asset keys, "
                    "e.g. [red, green, blue])",
                    key="data.stac_bands",
                )
            from bicorseg.gis.stac import require_cloud, stac_input

            require_cloud()
            folder = self._folder() / "stac"
            folder.mkdir(exist_ok=True)
            paths += [stac_input(item, bands, len(bands), folder).input for item in items]
        return inspect_rasters(paths)

    def _open(
        self, images, labels, label_field, where, priority_field, labelled_area, background, classes,
        class_table, spec, strict, name, index, stac_bands,
    ) -> None:  # fmt: skip
        import bicorseg.data.geo.vector as vector
        from bicorseg.data.geo.rasterlabels import RasterLabels, inspect_label_raster
        from bicorseg.gis.layers import LAYER_SEPARATOR, layer_info, parse_layer

        table = ClassTable.load(class_table, "data.class_table")
        self.stac_bands = tuple(
            stac_bands
            or (spec.bands if spec is not None else None)
            or (table.bands if table is not None and table.bands else ())
        )
        self.rasters = self._open_rasters(images, self.stac_bands)
        label_path = Path(os.fspath(labels).partition(LAYER_SEPARATOR)[0]).expanduser()
        if not label_path.exists():
            raise InputError(f"data.labels: {label_path} does not exist")
        self.is_vector = _is_vector(label_path)
        if self.is_vector and label_field is None:
            raise ConfigError(
                "polygon labels need the attribute that holds their class", key="data.label_field"
            )
        for key, value in (
            ("label_field", label_field),
            ("labels_where", where),
            ("priority_field", priority_field),
        ):
            if value and not self.is_vector:
                raise ConfigError(f"is for polygon labels; {label_path} is a raster", key=f"data.{key}")
        area_ref = parse_layer(labelled_area, "data.labelled_area") if labelled_area is not None else None
        wanted_background = background if area_ref is not None else None
        ref = parse_layer(labels, "data.labels") if self.is_vector else None
        raster_codes = None if self.is_vector else inspect_label_raster(label_path)
        if table is not None:  # also beside a model's facts: it says which codes mean its classes
            self.classes = GeoClasses.from_table(table, wanted_background)
            if spec is not None and self.classes.names != spec.class_names:
                raise ConfigError(
                    f"{table.source} names the classes {', '.join(self.classes.names)} but the model's are "
                    f"{', '.join(spec.class_names)}",
                    key="data.class_table",
                )
        elif spec is not None:
            self.classes = GeoClasses.from_spec(spec, wanted_background)
        elif classes is not None:
            self.classes = GeoClasses.from_names(classes, wanted_background)
        else:
            if ref is not None:
                info = layer_info(ref)
                vector.check_field(ref, info, label_field, "data.label_field")  # type: ignore[arg-type]
                codes = vector.layer_codes(ref, label_field, where)  # type: ignore[arg-type]
            else:
                codes = raster_codes  # type: ignore[assignment]
            self.classes = GeoClasses.from_codes(codes, wanted_background, f"data.labels: {labels}")
        if self.classes.num_classes >= 254:
            raise ConfigError(f"at most 253 classes, got {self.classes.num_classes}", key="data.classes")
        # what the labels burn where no polygon lies: a value that is neither a class nor the ignore index
        self._none = 254 if self.classes.ignore_index == 255 else 255
        if spec is not None:
            self.spec = spec
            if spec.num_bands != self.rasters[0].count:
                raise InputError(
                    f"{self.rasters[0].name} has {self.rasters[0].count} band(s) but the model takes "
                    f"{spec.num_bands} ({', '.join(spec.bands)})"
                )
        else:
            self.spec = self._spec(table, name or label_path.stem)
        self.area = None
        self.area_name = str(area_ref) if area_ref is not None else None
        if not index:
            return
        if ref is not None:
            self.labels: Any = vector.VectorLabels(
                ref, self.rasters, self.classes, label_field, where, priority_field, strict, self._folder()
            )
        else:
            self.labels = RasterLabels(label_path, self.classes, raster_codes)  # type: ignore[arg-type]
        if area_ref is not None:
            self.area, counts = vector.read_areas(area_ref, self.rasters, strict, "the labelled area")
            self.area_repaired = counts["repaired"]

    def _spec(self, table: ClassTable | None, name: str) -> DatasetSpec:
        if table is not None and table.bands is not None:
            if len(table.bands) != self.rasters[0].count:
                raise ConfigError(
                    f"{table.source} lists {len(table.bands)} band(s) but {self.rasters[0].name} has "
                    f"{self.rasters[0].count}",
                    key="data.class_table",
                )
            return self.classes.spec(name, table.bands, table.mean or (), table.std or ())
        bands, mean, std = normalisation(self.rasters)
        return self.classes.spec(name, self.stac_bands or bands, mean, std)

    @property
    def ignore_index(self) -> int:
        return self.classes.ignore_index

    def close(self) -> None:
        """Delete the indexed copy of the polygons and the STAC items' VRTs (also done at the end of
        the process)."""
        if self.scratch is not None:
            self.scratch.close()

    def labels_for(self, index: int, window: Window, count_conflicts: bool = False) -> tuple[np.ndarray, int]:
        """The labels of a window (``H x W`` uint8) and the pixels of conflicting polygons in it.

        Pixels the image does not hold are ignored here too (read only for rasters that can have
        such pixels).
        """
        raster = self.rasters[index]
        labels = self._labels(index, window, count_conflicts)
        if raster.masked and (labels[0] != self.ignore_index).any():
            _, valid = raster.read(window)
            labels[0][~valid] = self.ignore_index
        return labels

    def _labels(self, index: int, window: Window, count_conflicts: bool) -> tuple[np.ndarray, int]:
        raster = self.rasters[index]
        burned, conflicts = self.labels.burn(raster, window, self._none, count_conflicts)
        labels = np.full(burned.shape, self.ignore_index, np.uint8)
        if self.area is not None:
            inside = self.area[index].mask(int(window.row_off), int(window.col_off), *burned.shape)
            labels[inside] = self.classes.background
        covered = burned != self._none
        labels[covered] = burned[covered]
        return labels, conflicts

    def read(self, index: int, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The window's image (float32 ``bands x H x W``, input units, invalid pixels = band mean) and
        labels (``H x W`` uint8, ignore index where unlabelled or invalid)."""
        image, valid = self.rasters[index].read(window)
        labels, _ = self._labels(index, window, False)
        labels[~valid] = self.ignore_index
        if not valid.all():
            mean = np.asarray(self.spec.mean, np.float32)[:, None]
            image[:, ~valid] = mean
        return image, labels

    def labelled_windows(self, size: int) -> list[tuple[int, Window]]:
        """The windows of a grid of ``size`` pixels over each raster that hold labelled pixels (the
        windows of an evaluation: every labelled pixel once)."""
        from bicorseg.data.geo.split import labelled_cells, take_census, validation_windows

        classes = self.classes.num_classes
        censuses = [take_census(i, r, self.labels_for, classes) for i, r in enumerate(self.rasters)]
        return validation_windows(self.rasters, [labelled_cells(c) for c in censuses], size)

    def describe(self) -> list[str]:
        """Lines describing the rasters and the labels, for the summary."""
        first = self.rasters[0]
        from pyproj import CRS

        crs = sorted({CRS.from_wkt(r.crs).name for r in self.rasters})
        lines = [
            f"rasters: {len(self.rasters)} ({first.count} band(s) {first.dtype}, {', '.join(crs)}; "
            f"{sum(r.width * r.height for r in self.rasters) / 1e6:.1f} Mpx)",
            self.labels.summary(),
        ]
        if self.area is not None:
            repaired = f", {self.area_repaired} invalid polygon(s) repaired" if self.area_repaired else ""
            background = self.classes.names[self.classes.background]  # type: ignore[index]
            lines.append(
                f"labelled area {self.area_name}: pixels no polygon covers inside it are {background!r}{repaired}"
            )
        return lines


def training_window(crop_size: int, scales: Sequence[float]) -> int:
    """The side of the window read for a training chip: large enough that the smallest rescale of the
    augmentation still fills the crop (a multiple of 32)."""
    smallest = min(min(scales), 1.0)
    return int(math.ceil(crop_size / smallest / 32) * 32)


class GeoSplit:
    """The spatial split of a :class:`GeoSource` and the windows it draws (see :mod:`.split`).

    Args:
        source: the rasters and labels.
        window: the side of the training windows in pixels.
        val_window: the side of the validation windows in pixels.
        validate: hold out a validation area (False: everything trains).
        val_area: a layer of the validation area (None: blocks).
        val_block: the side of the validation blocks, in pixels of the first raster.
        val_fraction: the share of the labelled pixels the blocks hold (at least one block).
        val_seed: the seed of the block choice.
        val_buffer: pixels around the validation area where no training window reaches.
        strict: refuse invalid polygons of the validation area instead of repairing them.
    """

    def __init__(
        self,
        source: GeoSource,
        window: int,
        val_window: int,
        *,
        validate: bool = True,
        val_area: str | os.PathLike | None = None,
        val_block: int = 1024,
        val_fraction: float = 0.2,
        val_seed: int = 0,
        val_buffer: int = 0,
        strict: bool = False,
    ) -> None:
        import bicorseg.data.geo.split as split
        import bicorseg.data.geo.vector as vector
        from bicorseg.gis.layers import parse_layer

        self.source = source
        rasters, classes = source.rasters, source.classes.num_classes
        self.censuses = [split.take_census(i, r, source.labels_for, classes) for i, r in enumerate(rasters)]
        self.conflicts = sum(c.conflicts for c in self.censuses)
        if not sum(int(c.counts.sum()) for c in self.censuses):
            raise InputError("data.labels: no labelled pixel on any raster (the labels cover only nodata?)")
        areas: list[Any] = [None] * len(rasters)
        self.val_text = "none"
        if validate and val_area is not None:
            ref = parse_layer(val_area, "data.val_area")
            areas, counts = vector.read_areas(ref, rasters, strict, "the validation area")
            self.val_text = f"the area {ref}" + (
                f" ({counts['repaired']} polygon(s) repaired)" if counts["repaired"] else ""
            )
        elif validate:
            blocks, self.val_text = split.choose_blocks(
                rasters, self.censuses, val_block, val_fraction, val_seed
            )
            areas = split.areas_from_blocks(rasters, blocks)
        self.areas = areas
        self.exclusions = [
            split.exclusion(r, a, val_buffer) if a is not None else None for r, a in zip(rasters, areas)
        ]
        self.buffer = val_buffer
        self.zones = split.count_zones(
            rasters, self.censuses, areas, self.exclusions, source.labels_for, classes
        )
        if validate and not self.zones.counts[1].sum():
            raise InputError(f"the validation area ({self.val_text}) holds no labelled pixel")
        self.training = split.TrainingWindows(rasters, self.zones.train_cells, self.exclusions, window)
        self.validation = (
            split.validation_windows(rasters, self.zones.val_cells, val_window) if validate else []
        )
        self.window, self.val_window = window, val_window

    def summary(self) -> list[str]:
        """The lines a run prints first: the data, the split and the labelled pixels per class and zone."""
        from bicorseg.data.geo.split import ZONES

        lines = self.source.describe()
        if self.conflicts:
            lines.append(
                f"overlaps: {self.conflicts} px covered by polygons of different classes ({LABEL_RULE})"
            )
        lines.append(
            f"validation: {self.val_text}; {len(self.validation)} windows of {self.val_window} px; training "
            f"windows of {self.window} px never overlap it"
            + (f" nor its {self.buffer} px buffer" if self.buffer else "")
        )
        counts = self.zones.counts
        shown = [z for i, z in enumerate(ZONES) if i < 2 or counts[i].sum()]
        names = self.source.classes.names
        width = max(len(n) for n in (*names, "labelled pixels"))
        lines.append(f"{'labelled pixels':<{width}}" + "".join(f"{z:>14}" for z in shown))
        for i, name in enumerate(names):
            lines.append(f"{name:<{width}}" + "".join(f"{int(counts[z, i]):>14,}" for z in range(len(shown))))
        lines.append(f"{'all':<{width}}" + "".join(f"{int(counts[z].sum()):>14,}" for z in range(len(shown))))
        missing = [names[i] for i in self.source.classes.eval_classes if counts[0, i] == 0]
        if missing:
            lines.append(f"warning: no training pixel of {', '.join(missing)}")
        return lines
