"""Training data from GIS files: georeferenced rasters with label polygons or label rasters.

A practitioner's labels are polygons digitised over an orthophoto or a satellite scene, kept in a
GeoPackage, Shapefile or GeoJSON with a class attribute. This package trains on them directly, with
no tiling by hand (needs the extra ``vector``: ``pip install "bicorseg[vector]"``):

* :mod:`.rasters`: the rasters (files, folders, glob patterns, URLs), checked once, read in windows;
* :mod:`.classes`: class names and the codes that mean them (a class table, a list of names, or
  the codes found in the labels);
* :mod:`.vector`: label polygons in any format and CRS, indexed per raster CRS on disk and
  rasterised per window; the labelled area and the validation area layers;
* :mod:`.rasterlabels`: label rasters on any grid, resampled by nearest neighbour;
* :mod:`.source`: :class:`GeoSource` (a window's image and labels) and :class:`GeoSplit` (the
  spatial split and the summary);
* :mod:`.split`: the census of labelled pixels, validation blocks, zones, training windows drawn
  toward labelled pixels, the validation grid;
* :mod:`.dataset`: the torch datasets of training chips and of fixed windows.

No Lightning here; the training layer builds these from ``data.dataset: geo``.
"""

from __future__ import annotations

from bicorseg.data.geo.dataset import GeoTrainingChips, GeoWindows
from bicorseg.data.geo.source import GeoSource, GeoSplit, training_window

__all__ = ["GeoSource", "GeoSplit", "GeoTrainingChips", "GeoWindows", "training_window"]
