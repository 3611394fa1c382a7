"""Helpers for the report tests: a real output folder (scene, prediction, heatmaps, metrics) from a tiny
model, a class raster as predict writes it, the pictures of a page, and an independent measure of a
raster's ground width."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.transform import Affine

from bicorseg.demo import DEMO_DATASET, generate_scene, scene_transform, write_scene_geotiff
from bicorseg.inference import PredictOptions, Predictor, export_heatmaps, model_info
from bicorseg.metrics import Convention, EvaluationReport, write_report_json
from bicorseg.models import BiCoRSeg, ModelConfig
from tests.helpers import require

SIZE = 160


def tiny_model() -> BiCoRSeg:
    torch.manual_seed(0)
    config = ModelConfig(
        num_classes=DEMO_DATASET.num_classes, backbone="convnext_nano", width=32, layers=2, min_pixels=4
    )
    return BiCoRSeg(config, dataset=DEMO_DATASET).eval()


def output_folder(folder: Path, *, metrics: bool = True, labels: bool = False) -> Path:
    """``folder`` laid out as ``bicorseg demo`` writes it: scene.tif, prediction.tif, heatmaps/, metrics.json;
    with ``labels``, the scene's ground truth as labels/scene.tif."""
    folder.mkdir(parents=True, exist_ok=True)
    image, truth = generate_scene(SIZE, 11)
    scene = write_scene_geotiff(folder / "scene.tif", image, scene_transform(SIZE, 11))
    if labels:
        (folder / "labels").mkdir()
        write_scene_geotiff(folder / "labels" / "scene.tif", truth, scene_transform(SIZE, 11))
    model = tiny_model()
    predictor = Predictor(model, model_info(model, "tiny"), PredictOptions(tile=SIZE, overlap=0.25))
    result = predictor.predict_file(scene, folder / "predicted")
    result.outputs["class"].rename(folder / "prediction.tif")
    export_heatmaps(model, scene, folder / "heatmaps", tile=SIZE, batch_size=1)
    if metrics:  # a made-up confusion matrix: the report shows what the file says
        confusion = torch.diag(torch.arange(1, DEMO_DATASET.num_classes + 1) * 100) + 3
        report = EvaluationReport.from_confusion(
            confusion,
            DEMO_DATASET.class_names,
            DEMO_DATASET.eval_classes,
            Convention("demo", split="held-out"),
        )
        write_report_json(report, folder / "metrics.json")
    return folder


def pictures(page: str) -> list[Image.Image]:
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    return [Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) for s in sources]


def write_classes(path, classes, names=DEMO_DATASET.class_names, pixel=0.5, crs="EPSG:32633"):
    profile = dict(driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1, dtype="uint8",
                   crs=crs, transform=Affine(pixel, 0.0, 500_000.0, 0.0, -pixel, 5_000_000.0), nodata=255,
                   tiled=True, compress="deflate")  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(classes, 1)
        dst.update_tags(bicorseg_input="scene.tif", bicorseg_classes=json.dumps(list(names)))
        dst.write_colormap(1, {i: (*c, 255) for i, c in enumerate(DEMO_DATASET.palette)})
    return path


def ground_width(path: Path) -> float:
    """The ground length of a raster's middle row by pyproj's geodesics on WGS 84 (an independent reference)."""
    pyproj = require("pyproj")
    with rasterio.open(path) as src:
        t, w, h = src.transform, src.width, src.height
        row = [t @ (c, h / 2) for c in np.linspace(0, w, 200)]
        lonlat = pyproj.Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        lons, lats = lonlat.transform([p[0] for p in row], [p[1] for p in row])
    return pyproj.Geod(ellps="WGS84").line_length(lons, lats)
