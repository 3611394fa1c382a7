"""Chips and masks written to a folder dataset, drawn by the same sampler as training.

The training windows of a :class:`~.source.GeoSplit` and its validation grid become::

    DIR/train/images/000000_scene_r1024_c512.tif   the chip: native pixel type, CRS and transform
    DIR/train/masks/000000_scene_r1024_c512.png    class indices (a paletted PNG in the class colours),
                                                   the ignore index (transparent) where unlabelled
    DIR/val/images/...  DIR/val/masks/...          the validation windows (outside the area: ignored)
    DIR/classes.yaml                               the class table (written last: the set is complete)

which the folder recipe reads as it is (``bicorseg chips`` prints the command). Every file is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.windows import Window

from bicorseg.atomic import remove_stale_temps, write_text_atomic
from bicorseg.data.folder import class_table_yaml
from bicorseg.data.geo.dataset import GeoTrainingChips, GeoWindows
from bicorseg.data.geo.rasters import window_transform
from bicorseg.data.geo.source import GeoSplit
from bicorseg.data.io import CrsTransform, write_png, write_tiff

TABLE_NAME = "classes.yaml"


def _native(image: np.ndarray, dtype: str) -> np.ndarray:
    """Float32 pixels read from a raster back in its own type (exact for 8 and 16-bit values)."""
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    return image.astype(dtype)


def _file_name(number: int, stem: str, window: Window) -> str:
    stem = re.sub(r"[^\w.-]+", "_", stem)
    return f"{number:06d}_{stem}_r{int(window.row_off)}_c{int(window.col_off)}"


def write_chips(
    split: GeoSplit,
    folder: str | Path,
    count: int,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write ``count`` training chips and every validation window of ``split`` under ``folder``; the
    number of validation chips."""
    folder = Path(folder)
    source = split.source
    train = GeoTrainingChips(source, split.training, count, seed=seed)
    val = GeoWindows(source, split.validation, split.val_window, split.areas)
    total = count + len(val)
    done = 0
    for part, dataset in (("train", train), ("val", val)):
        if not len(dataset):
            continue
        images, masks = folder / part / "images", folder / part / "masks"
        for sub in (images, masks):
            sub.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(sub)
        for number in range(len(dataset)):
            image, labels = dataset.load_arrays(number)
            index, window = train.drawn[number] if part == "train" else val.windows[number]
            raster = source.rasters[index]
            name = _file_name(number, raster.stem, window)
            georef = CrsTransform(CRS.from_wkt(raster.crs), window_transform(raster.transform, window))
            write_tiff(images / f"{name}.tif", _native(image, raster.dtype), georef)
            write_png(masks / f"{name}.png", labels, palette=source.spec.palette)
            done += 1
            if progress is not None:
                progress(done, total)
    comment = "classes of the chips written by bicorseg chips (masks hold the class indices)"
    write_text_atomic(folder / TABLE_NAME, class_table_yaml(source.spec, comment))
    return len(val)
