"""Per-layer class heatmaps (docs/METHOD.md, section 3): export them for any image or raster, and draw the paper's figure.

Each HBIS layer's sigmoid heatmaps are a segmentation at 1/4 of the input resolution. They are
computed tile by tile like the prediction (same blending, same bounded memory) and written as:

* raster input: ``<stem>_heatmaps_layer{l}.tif``, one float32 band per class (band descriptions are
  the class names), values in [0, 1], nodata NaN, georeferenced at 4x the input's pixel size;
* PNG / JPEG input: ``<stem>_layer{l}_{class}.png``, 8-bit grey (``round(255 * sigmoid)``);
* always: ``<stem>_heatmaps.png``, the figure: the image, the ground truth (if given), the
  prediction and the per-class heatmaps of the chosen layer (downsampled for display).

Layers are numbered from 1 (the first HBIS layer) to L. The figure is drawn on matplotlib's Agg
canvas through the object-oriented API (no pyplot state, no backend switch).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from PIL import Image

from bicorseg.data.io import read_mask
from bicorseg.data.labels import LabelTable, colour_table, nearest_indices
from bicorseg.defaults import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE, NODATA
from bicorseg.errors import ConfigError, InputError
from bicorseg.inference.engine import SlidingWindow
from bicorseg.inference.model_info import ModelInfo, model_info
from bicorseg.inference.raster_io import (
    RasterReader,
    inspect_input,
    is_picture,
    rescale_tag,
)
from bicorseg.inference.tiling import output_size
from bicorseg.inference.writers import RasterOutputs, check_targets, geotiff_profile
from bicorseg.precision import precision_of
from bicorseg.raster_access import GDAL_CACHE_BYTES, InputPath, input_path, open_raster
from bicorseg.rescale import check_rescale

SCALE = 4  # heatmaps live at 1/4 of the input resolution
FIGURE_SIZE = 768  # longest side of the figure's panels, in pixels
HEATMAP_COLORMAP = "viridis"  # perceptually uniform, also readable in grey and with colour blindness
# the file names of heatmap_targets, as the report finds them
HEATMAP_RASTER = re.compile(r"^(?P<stem>.+)_heatmaps_layer(?P<layer>\d+)\.tif$")
HEATMAP_PNG = re.compile(r"^(?P<stem>.+)_layer(?P<layer>\d+)_(?P<cls>[A-Za-z0-9_-]+)\.png$")


@dataclass
class HeatmapResult:
    """The files written for one input: the heatmaps of every layer, and the figure."""

    input: Path
    outputs: list[Path]
    figure: Path


def class_slug(name: str) -> str:
    """A class name as the file names of per-class heatmap PNGs spell it."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "class"


def heatmap_targets(path: InputPath, out_dir: Path, info: ModelInfo, num_layers: int) -> dict[str, Path]:
    """The output paths of one input: per layer (and class, for pictures) and the figure."""
    names = [class_slug(c) for c in info.class_names]
    if is_picture(path):
        targets = {
            f"{li}/{c}": out_dir / f"{path.stem}_layer{li}_{names[c]}.png"
            for li in range(1, num_layers + 1)
            for c in range(info.num_classes)
        }
    else:
        targets = {
            f"{li}": out_dir / f"{path.stem}_heatmaps_layer{li}.tif" for li in range(1, num_layers + 1)
        }
    targets["figure"] = out_dir / f"{path.stem}_heatmaps.png"
    return targets


def export_heatmaps(
    model: torch.nn.Module,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    layer: int | None = None,
    label: str | os.PathLike | None = None,
    labels: LabelTable | None = None,
    tile: int = DEFAULT_TILE,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    info: ModelInfo | None = None,
    rescale: str = "none",
) -> HeatmapResult:
    """Write the heatmaps of every layer and the figure of ``layer`` (default: the last) for one input.

    ``label`` is a ground-truth map for the figure, decoded by ``labels`` (a class table) or by the
    checkpoint's label encoding (see :func:`read_label`). ``device`` None: the model's. ``rescale`` maps
    input values that are not in the checkpoint's 8-bit units (:mod:`bicorseg.rescale`); the raster
    heatmaps record the map (tag ``bicorseg_rescale``).
    """
    path, out_dir, rescale = input_path(path), Path(out_dir), check_rescale(rescale)
    info = info or model_info(model)
    device = device or str(next(model.parameters()).device)
    num_layers = model.config.layers
    layer = num_layers if layer is None else layer
    if not 1 <= layer <= num_layers:
        raise ConfigError(
            f"must be in 1..{num_layers} (the model has {num_layers} HBIS layers), got {layer}", key="layer"
        )
    n = info.num_classes
    targets = heatmap_targets(path, out_dir, info, num_layers)
    plain = is_picture(path)
    check_targets({path: targets})
    out_dir.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), open_raster(path) as src:
        plan = inspect_input(src, path, info, rescale)
        reader = RasterReader(src, plan, info)
        shape = display_shape(src.height, src.width, FIGURE_SIZE)  # image and truth: finer than 1/4
        truth = read_label(Path(label), info, src.shape, shape, labels) if label is not None else None
        engine = SlidingWindow(
            src.height, src.width, n * (num_layers + 1), tile, overlap, batch_size, SCALE, device=device
        )
        out_h, out_w = engine.out_height, engine.out_width
        step = max(1, math.ceil(max(out_h, out_w) / FIGURE_SIZE))  # subsampling for the figure
        thumb_pred = np.full((output_size(out_h, step), output_size(out_w, step)), NODATA, np.uint8)
        thumb_heat = np.full((n, *thumb_pred.shape), np.nan, np.float32)
        outputs = RasterOutputs(targets)
        temp = outputs.group.temp  # the temporary file of an output, renamed at commit
        planes = np.zeros((num_layers, n, out_h, out_w), np.uint8) if plain else None  # PNG heatmaps
        datasets = {}
        if not plain:
            precision = precision_of(model)
            geo = plan.geo.scaled(SCALE)  # heatmap pixels, GCPs included
            profile = geotiff_profile(geo, out_h, out_w, count=n, dtype="float32", nodata=float("nan"))
            tag = rescale_tag(rescale, plan)
            tags = {} if tag is None else {"bicorseg_rescale": tag}
            if precision is not None:
                tags["bicorseg_precision"] = precision
            for li in range(1, num_layers + 1):
                dst = outputs.open_geotiff(f"{li}", profile)
                for c, name in enumerate(info.class_names, start=1):
                    dst.set_band_description(c, name)
                dst.update_tags(bicorseg_layer=str(li), bicorseg_checkpoint=info.source, **tags)
                datasets[li] = dst

        def write(y0: int, x0: int, values: np.ndarray, valid: np.ndarray) -> None:
            h, w = valid.shape
            maps = values[n:].reshape(num_layers, n, h, w)
            # figure thumbnails: every step-th cell of this strip
            ry = np.arange((-y0) % step, h, step)
            rx = np.arange((-x0) % step, w, step)
            if len(ry) and len(rx):
                ty, tx = (y0 + ry[0]) // step, (x0 + rx[0]) // step
                sub_valid = valid[np.ix_(ry, rx)]
                pred = values[:n][:, ry][:, :, rx].argmax(axis=0).astype(np.uint8)
                pred[~sub_valid] = NODATA
                thumb_pred[ty : ty + len(ry), tx : tx + len(rx)] = pred
                heat = maps[layer - 1][:, ry][:, :, rx].copy()
                heat[:, ~sub_valid] = np.nan
                thumb_heat[:, ty : ty + len(ry), tx : tx + len(rx)] = heat
            if plain:
                planes[:, :, y0 : y0 + h, x0 : x0 + w] = np.rint(np.clip(maps, 0, 1) * 255)
            else:
                maps = maps.copy()
                maps[:, :, ~valid] = np.nan
                for li, dst in datasets.items():
                    dst.write(maps[li - 1], window=rasterio.windows.Window(x0, y0, w, h))

        def maps(x: torch.Tensor) -> torch.Tensor:
            """``(L + 1) * N`` maps at 1/4 resolution: the class probabilities (average-pooled, for
            the figure's prediction), then each layer's sigmoid heatmaps."""
            logits, heatmaps = model.predict_with_heatmaps(x)
            probs = F.avg_pool2d(torch.softmax(logits.float(), dim=1), SCALE, ceil_mode=True)
            return torch.cat([probs, *(h.float() for h in heatmaps)], dim=1)

        try:
            engine.run(maps, reader, write)
            if plain:
                for key in targets:
                    if key != "figure":
                        li, c = map(int, key.split("/"))
                        Image.fromarray(np.ascontiguousarray(planes[li - 1, c])).save(temp(key), format="PNG")
            image = display_stretch(*reader.overview(shape))  # RGB or grey in [0, 1]
            draw_figure(temp("figure"), image, thumb_pred, thumb_heat, info, layer, truth, title=path.name)
            outputs.commit()
        except BaseException:
            outputs.abort()
            raise
    figure = targets.pop("figure")
    return HeatmapResult(path, list(targets.values()), figure)


def display_shape(height: int, width: int, max_size: int) -> tuple[int, int]:
    """``(height, width)`` decimated by the smallest integer step that fits ``max_size``."""
    step = max(1, math.ceil(max(height, width) / max_size))
    return output_size(height, step), output_size(width, step)


def display_stretch(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Bands ``B x H x W`` (float32, input units) as an RGB (first three) or grey image in [0, 1].

    Each band is stretched between its 2nd and 98th percentiles over the ``valid`` pixels; invalid
    pixels are white. ``data`` is changed in place.
    """
    data = data[:3] if len(data) >= 3 else data[:1]
    for band in data:
        values = band[valid]
        lo, hi = np.percentile(values, (2, 98)) if values.size else (0.0, 1.0)
        band -= lo
        band /= max(hi - lo, 1e-6)
    data = np.clip(np.nan_to_num(data), 0, 1)
    data[:, ~valid] = 1.0
    image = np.moveaxis(data, 0, -1)
    return image if image.shape[-1] == 3 else image[..., 0]


def read_label(
    path: Path,
    info: ModelInfo,
    input_shape: tuple[int, int],
    shape: tuple[int, int],
    labels: LabelTable | None = None,
) -> np.ndarray:
    """A label map of an input of ``input_shape`` as class indices at ``shape`` (nearest samples).

    The label is decoded by ``labels`` (a class table) or else by the checkpoint's label encoding
    (:meth:`LabelTable.for_spec`); a colour label for a checkpoint trained on index masks is decoded
    by the class colours. A value or colour outside the table is an error naming the file.
    """
    path = Path(path)
    if labels is None:
        spec = info.dataset
        colour = False
        if spec is not None and spec.label_encoding.kind == "index":
            with open_raster(path) as src:
                colour = src.count in (3, 4)  # a colour label for an index-trained checkpoint
        labels = (
            LabelTable.for_spec(spec, colour_masks=colour)
            if spec is not None
            else LabelTable.identity(info.num_classes, NODATA)
        )
    raw = read_mask(path, mode="colour" if labels.kind == "colour" else "index")
    height, width = raw.shape[-2:]
    if (height, width) != tuple(input_shape):
        raise InputError(
            f"label {path} is {width} x {height} px but the input is {input_shape[1]} x {input_shape[0]}"
        )
    # the sample positions of GDAL's nearest-neighbour decimation, as the image panel is read
    rows, cols = nearest_indices(height, shape[0]), nearest_indices(width, shape[1])
    return labels.encode(raw[..., rows[:, None], cols[None, :]], path)[0]


def draw_figure(
    output: Path,
    image: np.ndarray,
    prediction: np.ndarray,
    heatmaps: np.ndarray,
    info: ModelInfo,
    layer: int,
    truth: np.ndarray | None = None,
    title: str = "",
) -> None:
    """The heatmap figure of the paper as a PNG: image, ground truth, prediction, one heatmap per class.

    The class maps get a legend with the class names (in the palette's colours, unknown pixels
    white); the heatmaps share one colour bar in the perceptual colour map :data:`HEATMAP_COLORMAP`
    over [0, 1]. The layout is constrained (no overlapping labels) and the PNG cropped to its content.
    """
    # the object-oriented API draws on its own Agg canvas: no pyplot, no backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    table = (colour_table(info.palette, (255, 255, 255)) / 255.0).astype(np.float32)
    panels = [("image", image)]
    if truth is not None:
        panels.append(("ground truth", table[truth]))
    panels.append(("prediction", table[prediction]))
    n = info.num_classes
    cols = max(len(panels), min(n, 4))
    rows = 1 + math.ceil(n / cols)
    aspect = image.shape[0] / image.shape[1]
    fig = Figure(figsize=(2.6 * cols + 1.2, 2.6 * rows * aspect + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (name, data) in zip(axes[0], panels):
        ax.imshow(data, cmap="gray" if data.ndim == 2 else None, interpolation="nearest")
        ax.set_title(name, fontsize=10)
    mappable = None
    for c in range(n):
        ax = axes[1 + c // cols, c % cols]
        mappable = ax.imshow(heatmaps[c], cmap=HEATMAP_COLORMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"layer {layer}: {info.class_names[c]}", fontsize=10, parse_math=False)
    if mappable is not None:
        fig.colorbar(
            mappable, ax=axes[1:].ravel().tolist(), shrink=0.8, label=f"layer {layer} sigmoid heatmap"
        )
    handles = [
        Patch(facecolor=table[c], edgecolor="0.4", label=name) for c, name in enumerate(info.class_names)
    ]
    legend = fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(n, 6),
        fontsize=9,
        frameon=False,
        title="classes",
    )
    for text in legend.get_texts():  # class names are text: a "$" starts no formula
        text.set_parse_math(False)
    if title:
        fig.suptitle(title, fontsize=11, parse_math=False)
    fig.savefig(output, dpi=100, format="png", bbox_inches="tight", pad_inches=0.05)
