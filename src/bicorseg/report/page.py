"""The report as one self-contained HTML page: pictures inlined as base64 PNG, no external resource.

The page is the template ``template.html`` (package data: CSS and a small script, no network, a
Content-Security-Policy that forbids loading anything but inline ``data:`` images) with one section
per scene (image, prediction overlay with an opacity slider, legend with per-class areas, heatmaps
with a layer switch and class toggles) and one for the metrics. Every text from the files (class
names, file names, metric keys) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
from PIL import Image

from bicorseg.inference.heatmaps import HEATMAP_COLORMAP
from bicorseg.report.collect import Picture, SceneContent

DEFAULT_OPACITY = 60  # percent


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def png_data_uri(rgba: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an ``H x W x 3|4`` uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(buffer, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(picture: Picture, alt: str, css: str = "") -> str:
    height, width = picture.rgba.shape[:2]
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} alt="{_e(alt)}" width="{width}" height="{height}" src="{png_data_uri(picture.rgba)}">'


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


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


def _scene(scene: SceneContent, index: int) -> str:
    if scene.image is not None:
        stack = _img(scene.image, "image", "base") + _img(scene.prediction, "prediction", "overlay")
        controls = (
            f'<div class="controls"><label for="opacity-{index}">prediction opacity</label>'
            f'<input type="range" class="opacity" id="opacity-{index}" min="0" max="100" step="1" '
            f'value="{DEFAULT_OPACITY}"><output class="opacity-value" for="opacity-{index}">'
            f"{DEFAULT_OPACITY} %</output></div>"
        )
    else:
        stack, controls = _img(scene.prediction, "prediction", "base"), ""
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in scene.notes)
    return (
        f'<section class="scene" id="scene-{index}"><h2>{_e(scene.name)}</h2>'
        f'<div class="scene-grid"><div class="viewer">{controls}<div class="stack">{stack}</div>{notes}</div>'
        f"<div><h3>Legend and areas</h3>{_legend(scene)}</div></div>"
        f"{_heatmaps(scene, index)}</section>"
    )


def _metrics(metrics: dict[str, Any]) -> str:
    def pct(value: Any) -> str:
        return "n/a" if not isinstance(value, (int, float)) else f"{100 * value:.1f}"

    headline = (
        f'<p class="headline">mIoU <b class="miou">{pct(metrics.get("miou"))}</b> · '
        f"OA <b>{pct(metrics.get('oa'))}</b> · mean F1 <b>{pct(metrics.get('mean_f1'))}</b></p>"
    )
    rows = []
    for name, scores in metrics["per_class"].items():
        scores = scores if isinstance(scores, dict) else {}
        averaged = "" if scores.get("in_means", True) else " (not averaged)"
        rows.append(
            f'<tr><td class="name">{_e(name)}{averaged}</td><td>{pct(scores.get("iou"))}</td>'
            f"<td>{pct(scores.get('f1'))}</td><td>{pct(scores.get('precision'))}</td>"
            f"<td>{pct(scores.get('recall'))}</td></tr>"
        )
    table = (
        "<table><tr><th>class</th><th>IoU</th><th>F1</th><th>precision</th><th>recall</th></tr>"
        f"{''.join(rows)}</table>"
    )
    convention = metrics.get("convention")
    entries = ""
    if isinstance(convention, dict):
        entries = "".join(
            f"<dt>{_e(key.replace('_', ' '))}</dt><dd>{_e(_plain(value))}</dd>"
            for key, value in convention.items()
        )
    return (
        '<section class="metrics"><h2>Scores</h2>'
        f'{headline}{table}<h3>Convention</h3><dl class="convention">{entries}</dl></section>'
    )


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return str(value)


def render(
    scenes: Sequence[SceneContent], metrics: dict[str, Any] | None, title: str, subtitle: str = ""
) -> str:
    """The whole page as a string."""
    body = "".join(_scene(scene, i) for i, scene in enumerate(scenes))
    if metrics is not None:
        body += _metrics(metrics)
    template = resources.files("bicorseg.report").joinpath("template.html").read_text(encoding="utf-8")
    values = {"title": _e(title), "subtitle": _e(subtitle), "body": body}
    # one pass: text substituted in is never scanned for placeholders again
    return re.sub(r"\{\{(title|subtitle|body)\}\}", lambda m: values[m.group(1)], template)
