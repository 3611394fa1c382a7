"""Class names as GDAL reads them: category names and a raster attribute table beside a class raster.

GDAL keeps a band's category names and its raster attribute table (RAT) in its auxiliary metadata,
``<raster>.aux.xml`` (why, and who reads it: ``docs/gis.md``, QGIS styles, class names for GDAL).
The file holds one category name per pixel value ``0..N-1`` and a thematic RAT: ``value`` (usage
MinMax), ``class`` (usage Name), ``red``, ``green``, ``blue``, ``alpha``, one row per class.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from bicorseg.atomic import write_text_atomic
from bicorseg.spec import check_class_names

# GDAL's GDALRATFieldType and GDALRATFieldUsage codes
_INTEGER, _STRING = 0, 2
_NAME, _MIN_MAX, _RED, _GREEN, _BLUE, _ALPHA = 2, 5, 6, 7, 8, 9
_COLUMNS = (
    ("value", _INTEGER, _MIN_MAX),
    ("class", _STRING, _NAME),
    ("red", _INTEGER, _RED),
    ("green", _INTEGER, _GREEN),
    ("blue", _INTEGER, _BLUE),
    ("alpha", _INTEGER, _ALPHA),
)


def pam_path(raster: str | os.PathLike) -> Path:
    """``out/map.tif`` -> ``out/map.tif.aux.xml`` (where GDAL looks)."""
    raster = Path(raster)
    return raster.with_name(raster.name + ".aux.xml")


def write_categories(
    raster: str | os.PathLike, class_names: Sequence[str], palette: Sequence[Sequence[int]]
) -> Path:
    """Write ``<raster>.aux.xml`` (band 1's category names and raster attribute table, atomically)
    and return its path."""
    class_names = check_class_names(class_names, "raster attribute table")
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    categories = ET.SubElement(band, "CategoryNames")
    for name in class_names:
        ET.SubElement(categories, "Category").text = name
    table = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for index, (name, kind, usage) in enumerate(_COLUMNS):
        column = ET.SubElement(table, "FieldDefn", index=str(index))
        ET.SubElement(column, "Name").text = name
        ET.SubElement(column, "Type").text = str(kind)
        ET.SubElement(column, "Usage").text = str(usage)
    for value, name in enumerate(class_names):
        row = ET.SubElement(table, "Row", index=str(value))
        red, green, blue = (int(c) for c in palette[value][:3])
        for field in (value, name, red, green, blue, 255):
            ET.SubElement(row, "F").text = str(field)
    ET.indent(root)
    return write_text_atomic(pam_path(raster), ET.tostring(root, encoding="unicode") + "\n")
