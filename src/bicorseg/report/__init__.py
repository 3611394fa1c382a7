"""``report.html``: one self-contained page to look at a prediction (no network, pictures inlined).

* :func:`write_report`: the page for some scenes (:class:`ReportItem`: class raster, image,
  heatmaps, labels) and, optionally, a metrics report (``metrics.json``).
* :func:`report_folder`: the page for an output folder of ``bicorseg predict``, ``heatmaps`` or
  ``demo`` (what :func:`find_items` finds there, and its ``metrics.json``), with labels if given.

:mod:`.collect` reads the files (pictures decimated to a bounded size, areas over every pixel),
:mod:`.truth` the labels (truth and error views, the confusion per class) and :mod:`.place` where
a scene lies (coordinates, scale bar); :mod:`.page` writes the HTML from the packaged template.
Paths on the page are relative to the page's folder, so the page can be moved with its files and
shows nothing of the machine it was made on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bicorseg.atomic import ensure_writable, write_text_atomic
from bicorseg.gis.source import ClassColours
from bicorseg.report.collect import MAX_SIZE, ReportItem, collect, find_items, read_metrics
from bicorseg.report.page import relative, render

REPORT_NAME = "report.html"

__all__ = ["MAX_SIZE", "REPORT_NAME", "ReportItem", "find_items", "report_folder", "write_report"]


def write_report(
    items: Sequence[ReportItem],
    output: str | os.PathLike,
    *,
    metrics: str | os.PathLike | None = None,
    title: str = "bicorseg report",
    subtitle: str = "",
    max_size: int = MAX_SIZE,
    class_table: ClassColours | None = None,
) -> Path:
    """Write the report of ``items`` (and of the metrics file, if any) to ``output``, atomically.

    ``output`` is checked before anything is read (:func:`bicorseg.atomic.ensure_writable`).
    """
    output = Path(output)
    ensure_writable(output)
    scenes = [collect(item, max_size, class_table) for item in items]
    page = render(
        scenes, read_metrics(metrics) if metrics is not None else None, title, subtitle, output.parent
    )
    return write_text_atomic(output, page)


def report_folder(
    folder: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    images: Sequence[str | os.PathLike] = (),
    max_size: int = MAX_SIZE,
    class_table: ClassColours | None = None,
    overwrite: bool = False,
    labels: str | os.PathLike | None = None,
) -> Path:
    """The report of an output folder (``folder/report.html`` unless ``output`` is given).

    ``labels`` (a label raster or a folder of them, named like the inputs) adds each scene's truth
    and error views and its confusion per class. An existing page is replaced only with ``overwrite``.
    """
    folder = Path(folder)
    output = folder / REPORT_NAME if output is None else Path(output)
    ensure_writable(output, overwrite=overwrite)
    items = find_items(folder, images, labels)
    metrics = folder / "metrics.json"
    return write_report(
        items,
        output,
        metrics=metrics if metrics.is_file() else None,
        title=f"bicorseg report: {folder.resolve().name}",
        subtitle=f"{len(items)} scene(s) from {relative(folder, output.parent)}",
        max_size=max_size,
        class_table=class_table,
    )
