"""Turn an official dataset release into training data: check it, convert labels, cut patches, write a manifest.

:func:`prepare` reads a release (unpacked folders and/or the official zip archives, see
:mod:`bicorseg.data.sources`) as declared in :mod:`bicorseg.data.datasets`, and writes::

    DIR/manifest.json                 everything below, with sizes, checksums and class pixel counts
    DIR/{split}/images/{name}.tif     image patches in their native dtype (GeoTIFF sources: GeoTIFF,
                                      georeferenced like the source; PNG/JPEG sources: PNG; whole
                                      images that need no cutting are copied byte for byte)
    DIR/{split}/masks/{name}.png      uint8 index masks (paletted PNGs in the class colours): 0..N-1
                                      classes, ``spec.ignore_index`` ignored

Patch names are ``{tile name}[_{hflip|vflip}][_{y}_{x}]`` (``y, x``: the patch's top-left pixel in
the padded, possibly flipped tile), e.g. ``top_mosaic_09cm_area1_hflip_512_0``. Splits without
labels (LoveDA test) have no masks. Tiles are padded to a multiple of the patch size (image 0): at
the bottom and right, or at the top and left under ``paper``.

Two protocols (``protocol``, recorded in the manifest): ``clean`` (the default: padding labelled
ignore, flipped copies flips of the padded tile) and ``paper``, the original code's preparation (the
release's :class:`~bicorseg.data.datasets.PaperPreparation`, compared in docs/paper.md; Vaihingen's
car zoom, :class:`~bicorseg.data.datasets.ZoomStep`, writes ``{patch}_zoom``, ``_zoom_vflip``,
``_zoom_hflip`` and ``_zoom_rot{0|90|180|270}`` in place of ``{patch}``).

Every file is written to a temporary name and renamed; each finished tile is recorded in
``DIR/.bicorseg-prepare/`` and the manifest is written last. A rerun verifies what is there
(files present, checksums equal, sources unchanged), redoes only what is missing or broken, and
removes outputs of a previous run that the new one no longer lists.

The modules, one step each:

* :mod:`.planning`: which source files make which samples of which split (:func:`plan`, :class:`Item`).
* :mod:`.cutting`: one tile read, its label converted, its samples written (:func:`process_item`).
* :mod:`.journal`: finished tiles recorded and reused by a rerun; stale outputs removed.
* :mod:`.records`: the typed records of the manifest and journal (:class:`Manifest`,
  :class:`SplitRecord`, :class:`TileRecord`, :class:`PatchRecord`); ``manifest.json`` read
  (checked) and written atomically.
* :mod:`.run`: :func:`prepare`, the steps in order, and what a run did (:class:`PrepareResult`).
"""

from __future__ import annotations

from bicorseg.data.release.run import PrepareResult, prepare

__all__ = ["PrepareResult", "prepare"]
