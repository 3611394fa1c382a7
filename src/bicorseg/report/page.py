"""The report as one self-contained HTML page: pictures inlined as base64 PNG, no external resource.

The page is the template ``template.html`` (package data: CSS and a small script, no network, a
Content-Security-Policy that forbids loading anything but inline ``data:`` images) with one section
per scene (image, prediction overlay with an opacity slider; with labels, truth and error views to
switch to and the confusion per class; with a CRS, a scale bar, the corner coordinates and the
coordinates under the pointer; legend with per-class areas; heatmaps with a layer switch and class
toggles) and one for the metrics, whose convention reads as sentences. Every text from the files
(class names, file names, metric keys) is HTML-escaped; file paths are written relative to the
page's folder.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bicorseg.inference.heatmaps import HEATMAP_COLORMAP
from bicorseg.report.collect import SceneContent
from bicorseg.report.place import Place
from bicorseg.report.truth import CORRECT, WRONG, TruthView

DEFAULT_OPACITY = 60  # percent
DIAGONAL_CELL = '<td class="diagonal">'  # a confusion cell of correct pixels


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def png_data_uri(rgba: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an ``H x W x 3|4`` uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(buffer, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(rgba: np.ndarray, alt: str, css: str = "", extra: str = "") -> str:
    height, width = rgba.shape[:2]
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} alt="{_e(alt)}" width="{width}" height="{height}"{extra} src="{png_data_uri(rgba)}">'


def relative(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` as seen from the folder ``base`` (the page's), with forward slashes."""
    try:
        text = os.path.relpath(Path(path).resolve(), Path(base).resolve())
    except ValueError:  # another drive (Windows): the name alone, nothing of the machine
        text = Path(path).name
    return Path(text).as_posix()


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _percent(value: Any, unit: str = "") -> str:
    """A share in percent; n/a for what is not a number (an undefined score)."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    return f"{100 * value:.1f}{unit}"


def _colour_ramp() -> str:
    """A CSS gradient of the heatmap colour map (11 stops)."""
    from matplotlib import colormaps

    stops = colormaps[HEATMAP_COLORMAP](np.linspace(0, 1, 11), bytes=True)
    return "linear-gradient(to right, " + ", ".join(f"rgb({r},{g},{b})" for r, g, b, _ in stops) + ")"


def _legend(scene: SceneContent) -> str:
    areas = scene.areas
    with_ha = areas.total_hectares is not None
    head = (
        "<tr><th>class</th><th>pixels</th><th>share</th>"
        + ("<th>area (ha)</th>" if with_ha else "")
        + "</tr>"
    )
    rows = []
    for row in areas.rows:
        swatch = f'<span class="swatch" style="background: rgb{row.colour}"></span>'
        cells = [
            f'<td class="name">{swatch}{_e(row.name)}</td>',
            f"<td>{row.pixels:,}</td>",
            f"<td>{row.percent:.1f} %</td>",
        ]
        if with_ha:
            cells.append(f"<td>{_number(row.hectares, 3)}</td>")
        rows.append(f'<tr class="legend-row">{"".join(cells)}</tr>')
    total = f"<td>{areas.total_pixels:,}</td><td>100 %</td>" + (
        f"<td>{_number(areas.total_hectares, 3)}</td>" if with_ha else ""
    )
    rows.append(f'<tr><td class="name"><b>valid pixels</b></td>{total}</tr>')
    return (
        f'<table class="legend">{head}{"".join(rows)}</table>'
        f'<p class="note areas-method">{_e(areas.method)}</p>'
    )


def _heatmaps(scene: SceneContent, index: int) -> str:
    if not scene.heatmaps:
        return (
            '<p class="note">No heatmaps for this scene (bicorseg heatmaps writes them; '
            "bicorseg report finds them beside the prediction or in heatmaps/).</p>"
        )
    names = {row.class_id: row.name for row in scene.areas.rows}
    last = max(scene.heatmaps)
    layers = "".join(
        f'<label><input type="radio" class="layer" name="layer-{index}" value="{layer}"'
        f"{' checked' if layer == last else ''}> layer {layer}</label>"
        for layer in scene.heatmaps
    )
    present = sorted({c for pictures in scene.heatmaps.values() for c in pictures})
    boxes = "".join(
        f'<label><input type="checkbox" class="heat-class" value="{c}" checked> {_e(names.get(c, c))}</label>'
        for c in present
    )
    figures = []
    for layer, pictures in scene.heatmaps.items():
        for c, picture in sorted(pictures.items()):
            caption = f"layer {layer}: {names.get(c, c)}"
            figures.append(
                f'<figure class="heatmap" data-layer="{layer}" data-class="{c}">'
                f"{_img(picture, caption)}<figcaption>{_e(caption)}</figcaption></figure>"
            )
    return (
        "<h3>Class heatmaps of the HBIS layers</h3>"
        '<p class="note">Each layer\'s sigmoid heatmap per class, at 1/4 of the input resolution: '
        "where the layer locates the class before refining the features.</p>"
        f'<div class="heat-controls"><fieldset><legend>layer</legend>{layers}</fieldset>'
        f"<fieldset><legend>classes</legend>{boxes}</fieldset></div>"
        f'<div class="heat-grid">{"".join(figures)}</div>'
        f'<div class="colorbar"><span>0</span><span class="ramp" style="background: {_colour_ramp()}"></span>'
        f"<span>1</span><span>sigmoid heatmap ({HEATMAP_COLORMAP})</span></div>"
    )


def _coordinate(value: float, units: str) -> str:
    return f"{value:,.6f}°" if units == "°" else f"{value:,.2f} {units}"


def _place(place: Place | None) -> tuple[str, str, str]:
    """The stack's data attributes, the scale bar inside it, and the coordinates under it."""
    if place is None:
        return "", "", '<p class="note place">no CRS: no coordinates and no scale</p>'
    transform = ",".join(f"{v:.17g}" for v in place.transform)
    data = (
        f' data-transform="{transform}" data-size="{place.size[0]},{place.size[1]}"'
        f' data-units="{_e(place.units)}"'
    )
    metres = place.bar_metres
    label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    bar = (
        f'<div class="scalebar" style="width: {100 * place.bar_share:.4f}%" title="{_e(place.scale_note)}">'
        f'<span class="scale-label">{label}</span></div>'
    )
    (x0, y0), (x1, y1) = place.corners
    centre = ""
    if place.centre_lonlat is not None:
        lon, lat = place.centre_lonlat
        centre = (
            f"; centre {abs(lon):.5f}° {'E' if lon >= 0 else 'W'}, {abs(lat):.5f}° {'N' if lat >= 0 else 'S'}"
        )
    text = (
        f'<p class="note place">CRS <span class="crs">{_e(place.crs)}</span>; upper-left corner '
        f"{_coordinate(x0, place.units)}, {_coordinate(y0, place.units)}; lower-right corner "
        f"{_coordinate(x1, place.units)}, {_coordinate(y1, place.units)}{_e(centre)}. Scale bar: "
        f"{_e(place.scale_note)}.</p>"
        '<p class="note">Under the pointer: <output class="pointer">move the pointer over the map</output></p>'
    )
    return data, bar, text


def _truth(truth: TruthView, names: list[str]) -> str:
    scores, matrix = truth.scores, truth.confusion
    n = len(names)
    compared = int(matrix.sum())
    right = int(np.trace(matrix))
    if compared == 0:
        return '<h3>Labels</h3><p class="note">No labelled pixel has a prediction: nothing to compare.</p>'
    present = [i for i in range(n) if matrix[i].sum() > 0 or matrix[:, i].sum() > 0]
    head = "".join(f'<th class="class-col">{_e(names[j])}</th>' for j in present)
    rows = []
    for i in present:
        cells = "".join(
            (DIAGONAL_CELL if i == j else "<td>") + f"{int(matrix[i, j]):,}</td>" for j in present
        )
        iou, recall = float(scores.iou[i]), float(scores.recall[i])
        rows.append(
            f'<tr class="confusion-row"><td class="name">{_e(names[i])}</td>{cells}'
            f"<td>{int(matrix[i].sum()):,}</td><td>{_percent(recall, ' %')}</td><td>{_percent(iou, ' %')}</td></tr>"
        )
    legend = (
        f'<p><span class="swatch" style="background: rgb{CORRECT}"></span>correct '
        f'<b class="correct-share">{100 * right / compared:.1f} %</b> &nbsp; '
        f'<span class="swatch" style="background: rgb{WRONG}"></span>wrong '
        f"<b>{100 * (compared - right) / compared:.1f} %</b> of the {compared:,} labelled pixels that have a "
        "prediction (unlabelled pixels are not compared and stay transparent)</p>"
    )
    summary = (
        f'<p class="note">Overall accuracy {_percent(scores.oa, " %")}; mean IoU {_percent(scores.miou, " %")} over '
        "the classes present in the labels or the prediction. Rows are the labels, columns the "
        "prediction; every pixel is counted (the pictures may be decimated).</p>"
    )
    table = (
        '<table class="confusion"><tr><th class="name">labels \\ prediction</th>'
        f"{head}<th>pixels</th><th>correct</th><th>IoU</th></tr>{''.join(rows)}</table>"
    )
    return f"<h3>Labels and errors</h3>{legend}{table}{summary}"


def _scene(scene: SceneContent, index: int, base: Path) -> str:
    data, bar, coordinates = _place(scene.place)
    parts = [f"{kind} <code>{_e(relative(path, base))}</code>" for kind, path in scene.files.items()]
    files = f'<p class="note files">{" · ".join(parts)}</p>' if parts else ""
    overlays: list[tuple[str, str, np.ndarray]] = []
    if scene.image is not None:
        under = _img(scene.image, "image", "base")
        overlays.append(("prediction", "prediction", scene.prediction))
    else:
        under = _img(scene.prediction, "prediction", "base")
    if scene.truth is not None:
        overlays += [("truth", "labels", scene.truth.truth), ("errors", "errors", scene.truth.errors)]
    # the first view is the prediction: over the image, or the image-less base itself
    layers = "".join(
        _img(picture, alt, "overlay", f' data-view="{view}"' + ("" if view == "prediction" else " hidden"))
        for view, alt, picture in overlays
    )
    controls = ""
    if overlays:
        controls = (
            f'<div class="controls"><label for="opacity-{index}">overlay opacity</label>'
            f'<input type="range" class="opacity" id="opacity-{index}" min="0" max="100" step="1" '
            f'value="{DEFAULT_OPACITY}"><output class="opacity-value" for="opacity-{index}">'
            f"{DEFAULT_OPACITY} %</output></div>"
        )
    if scene.truth is not None:
        choices = ([] if scene.image is not None else [("prediction", "prediction")]) + [
            (view, alt) for view, alt, _ in overlays
        ]
        radios = "".join(
            f'<label><input type="radio" class="view" name="view-{index}" value="{view}"'
            f"{' checked' if view == 'prediction' else ''}> {_e(label)}</label>"
            for view, label in choices
        )
        controls += f'<fieldset class="views"><legend>show</legend>{radios}</fieldset>'
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in scene.notes)
    names = [row.name for row in scene.areas.rows]
    truth = _truth(scene.truth, names) if scene.truth is not None else ""
    return (
        f'<section class="scene" id="scene-{index}"><h2>{_e(scene.name)}</h2>{files}'
        f'<div class="scene-grid"><div class="viewer">{controls}<div class="stack"{data}>{under}{layers}{bar}'
        f"</div>{coordinates}{notes}</div>"
        f"<div><h3>Legend and areas</h3>{_legend(scene)}{truth}</div></div>"
        f"{_heatmaps(scene, index)}</section>"
    )


def _metrics(metrics: dict[str, Any], base: Path) -> str:
    headline = (
        f'<p class="headline">mIoU <b class="miou">{_percent(metrics.get("miou"))}</b> · '
        f"OA <b>{_percent(metrics.get('oa'))}</b> · mean F1 <b>{_percent(metrics.get('mean_f1'))}</b></p>"
    )
    rows = []
    for name, scores in metrics["per_class"].items():
        scores = scores if isinstance(scores, dict) else {}
        averaged = "" if scores.get("in_means", True) else " (not averaged)"
        rows.append(
            f'<tr><td class="name">{_e(name)}{averaged}</td><td>{_percent(scores.get("iou"))}</td>'
            f"<td>{_percent(scores.get('f1'))}</td><td>{_percent(scores.get('precision'))}</td>"
            f"<td>{_percent(scores.get('recall'))}</td></tr>"
        )
    table = (
        "<table><tr><th>class</th><th>IoU</th><th>F1</th><th>precision</th><th>recall</th></tr>"
        f"{''.join(rows)}</table>"
    )
    convention = metrics.get("convention")
    sentences = convention_sentences(convention, metrics, base) if isinstance(convention, dict) else []
    items = "".join(f"<li>{_e(sentence)}</li>" for sentence in sentences)
    return (
        '<section class="metrics"><h2>Scores</h2>'
        f'{headline}{table}<h3>How these scores were obtained</h3><ul class="convention">{items}</ul></section>'
    )


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    return str(value)


def _list(names: Sequence[Any]) -> str:
    names = [str(n) for n in names]
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def convention_sentences(convention: dict[str, Any], metrics: dict[str, Any], base: Path) -> list[str]:
    """The convention of a metrics report (``EvaluationReport.to_dict``) as sentences."""
    c = dict(convention)
    said: list[str] = []
    dataset, split, variant = c.pop("dataset", None), c.pop("split", ""), c.pop("label_variant", None)
    if dataset:
        where = f"the split “{split}” of the dataset “{dataset}”" if split else f"the dataset “{dataset}”"
        said.append(f"Scored on {where}, with its {variant or 'full'} labels.")
    if mode := c.pop("mode", None):
        said.append(f"The model was applied to {mode}.")
    if protocol := c.pop("protocol", ""):
        said.append(f"The data were prepared by the {protocol} protocol.")
    tta, detail = c.pop("tta", "none"), c.pop("tta_detail", "")
    c.pop("tta_passes", None)
    if tta in ("none", "", None):
        said.append("No test-time augmentation was used.")
    else:
        said.append(f"Test-time augmentation {tta}" + (f": {detail}." if detail else "."))
    averaged = c.pop("classes_averaged", None)
    per_class = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
    if isinstance(averaged, list) and averaged:
        left = [name for name in per_class if name not in averaged]
        sentence = f"mIoU and mean F1 average {len(averaged)} classes ({_list(averaged)})"
        if left:
            sentence += f"; {_list(left)} {'is' if len(left) == 1 else 'are'} left out of the means"
        said.append(sentence + ".")
    if c.pop("oa_classes", None) is not None:
        said.append("Overall accuracy (OA) counts the pixels of every class; ignored pixels count nowhere.")
    if c.pop("undefined_scores", None) is not None:
        said.append(
            "A class absent from both the labels and the predictions has no score and is left out of the means."
        )
    if c.pop("confusion_matrix_axes", None) is not None:
        said.append("All scores come from one confusion matrix: ground truth in rows, prediction in columns.")
    if "checkpoint" in c:  # an absolute path as seen from the page; a relative one as it was given
        checkpoint = str(c.pop("checkpoint"))
        said.append(
            f"The checkpoint was {relative(checkpoint, base) if os.path.isabs(checkpoint) else checkpoint}."
        )
    if precision := c.pop("precision", None):
        said.append(f"The model ran at {precision} precision.")
    if masks := c.pop("masks", None):
        said.append(f"The masks held {masks}.")
    if labels := c.pop("labels", None):
        said.append(f"The labels were {labels}.")
    if rescale := c.pop("rescale", None):
        said.append(f"The input values were rescaled: {rescale}.")
    steps, planned = c.pop("training_steps", None), c.pop("training_steps_planned", None)
    seconds, threads = c.pop("training_seconds", None), c.pop("torch_threads", None)
    if steps is not None:
        sentence = f"The model was trained for {steps} steps"
        sentence += f" of {planned} planned" if planned not in (None, steps) else ""
        sentence += f" in {float(seconds):.0f} s" if isinstance(seconds, (int, float)) else ""
        sentence += f" with {threads} torch thread(s)" if threads is not None else ""
        said.append(sentence + ".")
    for key, value in c.items():  # anything else a report carries, said as plainly as it can be
        said.append(f"{str(key).replace('_', ' ').capitalize()}: {_plain(value)}.")
    return said


def render(
    scenes: Sequence[SceneContent],
    metrics: dict[str, Any] | None,
    title: str,
    subtitle: str = "",
    base: str | os.PathLike = ".",
) -> str:
    """The whole page as a string; file paths are written relative to ``base`` (the page's folder)."""
    base = Path(base)
    body = "".join(_scene(scene, i, base) for i, scene in enumerate(scenes))
    if metrics is not None:
        body += _metrics(metrics, base)
    template = resources.files("bicorseg.report").joinpath("template.html").read_text(encoding="utf-8")
    values = {"title": _e(title), "subtitle": _e(subtitle), "body": body}
    # one pass: text substituted in is never scanned for placeholders again
    return re.sub(r"\{\{(title|subtitle|body)\}\}", lambda m: values[m.group(1)], template)
