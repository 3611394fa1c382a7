"""A QGIS layer style (``<stem>.qml``) beside a class raster: one named colour per class, nodata transparent.

A paletted (unique values) renderer on band 1, one entry per class (value, colour, label),
nearest-neighbour resampling, the nodata value fully transparent; QGIS loads it with ``<stem>.tif``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from bicorseg.atomic import write_text_atomic
from bicorseg.defaults import NODATA, colour_hex
from bicorseg.errors import ConfigError
from bicorseg.spec import check_class_names

_RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png"}


def qml_path(raster_path_or_stem: str | os.PathLike) -> Path:
    """``out/map.tif`` or ``out/map`` -> ``out/map.qml``."""
    path = Path(raster_path_or_stem)
    if path.suffix.lower() in _RASTER_SUFFIXES:
        return path.with_suffix(".qml")
    return path.with_name(path.name + ".qml")


def write_qml(
    raster_path_or_stem: str | os.PathLike,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | Mapping[int, Sequence[int]],
    nodata: int | None = NODATA,
) -> Path:
    """Write ``<stem>.qml`` beside the class raster (atomically) and return its path; ``palette``
    gives an RGB colour per class index (a sequence or a mapping)."""
    class_names = check_class_names(class_names, "QGIS style")
    colours = dict(enumerate(palette)) if not isinstance(palette, Mapping) else dict(palette)
    missing = [i for i in range(len(class_names)) if i not in colours]
    if missing:
        raise ConfigError(f"palette: no colour for class {missing[0]} ({class_names[missing[0]]!r})")
    root = ET.Element("qgis", version="3.28.0", styleCategories="AllStyleCategories",
                      hasScaleBasedVisibilityFlag="0", minScale="1e+08", maxScale="0")  # fmt: skip
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(provider, "resampling", enabled="false", maxOversampling="2",
                  zoomedInResamplingMethod="nearestNeighbour", zoomedOutResamplingMethod="nearestNeighbour")  # fmt: skip
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1",
                             alphaBand="-1", nodataColor="")  # fmt: skip
    transparency = ET.SubElement(renderer, "rasterTransparency")
    if nodata is not None:
        pixels = ET.SubElement(transparency, "singleValuePixelList")
        ET.SubElement(pixels, "pixelListEntry", min=str(nodata), max=str(nodata), percentTransparent="100")
    minmax = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated"),
                      ("cumulativeCutLower", "0.02"), ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):  # fmt: skip
        ET.SubElement(minmax, tag).text = text
    entries = ET.SubElement(renderer, "colorPalette")
    for index, name in enumerate(class_names):
        colour = tuple(int(c) for c in colours[index][:3])
        ET.SubElement(entries, "paletteEntry", value=str(index), color=colour_hex(colour).lower(),
                      alpha="255", label=str(name))  # fmt: skip
    ET.SubElement(renderer, "colorramp", type="randomcolors", name="[source]")
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0",
                  colorizeRed="255", colorizeGreen="128", colorizeBlue="128", colorizeStrength="100")  # fmt: skip
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    doctype = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
    return write_text_atomic(qml_path(raster_path_or_stem), f"{doctype}\n{body}\n")
