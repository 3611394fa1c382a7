"""A window of a class raster as regions: read with a margin, small regions merged, counted, nodes found.

A *region* is a 4-connected set of pixels of one value: a class, or ``NODATA_REGION`` for nodata
pixels (polygonised too, so that the coverage of a window has no hole where nodata is; their
polygons are dropped before anything is written). Beyond the raster's edge the value is
``OUTSIDE``.

* :func:`read_labels` reads a window with a margin of ``margin`` pixels on every side
  (``OUTSIDE`` beyond the raster), as ``int32`` region values.
* :func:`merge_small_regions` (``vectorize --min-area``): each class region of fewer than ``size``
  pixels takes the class most common among the valid pixels bordering it (4-neighbours, as read:
  one pass; ties to the lowest class id); a region with no valid neighbour stays. A region whose
  pixels reach the edge of what was read is never merged (it may go on beyond). The result at a
  pixel depends only on the pixels within ``size`` of it, so a margin of ``size + 1`` gives every
  window the same classes in its core and in the ring of pixels around it, whatever the windows.
* :func:`regions_beyond`: the number of regions of a window when it exceeds a budget (a cheap
  upper bound first: the pixels whose upper and left neighbours differ from them; the exact count,
  by ``scipy.ndimage.label``, only when that bound exceeds the budget).
* :func:`node_vertices`: the pixel corners where three or more regions meet (or two, diagonally).
  Every polygon passing through such a corner must have a vertex there for the polygons to share
  their edges vertex for vertex (GDAL's polygons have vertices at their own corners only).
"""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from bicorseg.gis.source import ClassRaster

NODATA_REGION = -1
OUTSIDE = -2


def read_labels(raster: ClassRaster, window: Window, margin: int) -> np.ndarray:
    """Region values of ``window`` and ``margin`` pixels around it (``int32``, ``OUTSIDE`` beyond the raster)."""
    height, width = raster.src.height, raster.src.width
    row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    top, left = max(0, row - margin), max(0, col - margin)
    bottom, right = min(height, row + h + margin), min(width, col + w + margin)
    data, valid = raster.read(Window(left, top, right - left, bottom - top))
    labels = np.where(valid, data.astype(np.int32), np.int32(NODATA_REGION))
    pad = (
        (top - (row - margin), row + h + margin - bottom),
        (left - (col - margin), col + w + margin - right),
    )
    return np.pad(labels, pad, constant_values=OUTSIDE)


def _class_regions(labels: np.ndarray, first_value: int = 0) -> np.ndarray:
    """An id per pixel of the 4-connected regions of values ``>= first_value`` (0: none), from 1."""
    from scipy import ndimage

    keys = np.where(labels >= first_value, labels - first_value + 1, 0)
    ids = np.zeros(labels.shape, np.int64)
    total = 0
    for index, box in enumerate(ndimage.find_objects(keys)):  # one bounding box per value
        if box is None:
            continue
        part, count = ndimage.label(keys[box] == index + 1)
        inside = part > 0
        ids[box][inside] = part[inside] + total
        total += count
    return ids


def merge_small_regions(labels: np.ndarray, size: int) -> np.ndarray:
    """``labels`` with every class region of fewer than ``size`` pixels merged (see the module docstring)."""
    ids = _class_regions(labels)
    small = np.bincount(ids.ravel()) < size
    small[0] = False
    small[np.concatenate([ids[0], ids[-1], ids[:, 0], ids[:, -1]])] = False  # may go on beyond
    in_small = small[ids]
    if not in_small.any():
        return labels
    regions, neighbours = [], []
    for here, there in (
        ((slice(None), slice(0, -1)), (slice(None), slice(1, None))),
        ((slice(None), slice(1, None)), (slice(None), slice(0, -1))),
        ((slice(0, -1), slice(None)), (slice(1, None), slice(None))),
        ((slice(1, None), slice(None)), (slice(0, -1), slice(None))),
    ):
        value = labels[there]
        border = in_small[here] & (value >= 0) & (value != labels[here])
        regions.append(ids[here][border])
        neighbours.append(value[border])
    region, neighbour = np.concatenate(regions), np.concatenate(neighbours).astype(np.int64)
    if not len(region):
        return labels
    pairs, counts = np.unique(np.stack([region, neighbour], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # per region: most common, then lowest class
    pairs = pairs[order]
    first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
    new_class = np.full(len(small), -1, np.int64)
    new_class[pairs[first, 0]] = pairs[first, 1]
    merged = in_small & (new_class[ids] >= 0)
    out = labels.copy()
    out[merged] = new_class[ids[merged]]
    return out


def regions_beyond(labels: np.ndarray, limit: int) -> int | None:
    """The number of regions of ``labels`` (values ``>= NODATA_REGION``) if more than ``limit``, else None."""
    starts = np.ones(labels.shape, bool)
    starts[1:] &= labels[1:] != labels[:-1]
    starts[:, 1:] &= labels[:, 1:] != labels[:, :-1]
    if int(starts.sum()) <= limit:  # every region has one such pixel at least: its first
        return None
    count = int(_class_regions(labels, NODATA_REGION).max())
    return count if count > limit else None


def node_vertices(ring: np.ndarray) -> np.ndarray:
    """``(h + 1) x (w + 1)`` flags of the corners of an ``h x w`` core given with a 1-pixel margin
    (``ring``: ``(h + 2) x (w + 2)``) where three or more regions meet."""
    upper_left, upper_right = ring[:-1, :-1], ring[:-1, 1:]
    lower_left, lower_right = ring[1:, :-1], ring[1:, 1:]
    edges = (
        (upper_left != upper_right).astype(np.uint8)
        + (lower_left != lower_right)
        + (upper_left != lower_left)
        + (upper_right != lower_right)
    )
    return edges >= 3
