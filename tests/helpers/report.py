"""Helpers for the report tests: a real output folder (scene, prediction, heatmaps, metrics) from a tiny model."""

from __future__ import annotations

from pathlib import Path

import torch

from bicorseg.demo import DEMO_DATASET, generate_scene, scene_transform, write_scene_geotiff
from bicorseg.inference import PredictOptions, Predictor, export_heatmaps, model_info
from bicorseg.metrics import Convention, EvaluationReport, write_report_json
from bicorseg.models import BiCoRSeg, ModelConfig

SIZE = 160


def tiny_model() -> BiCoRSeg:
    torch.manual_seed(0)
    config = ModelConfig(
        num_classes=DEMO_DATASET.num_classes, backbone="convnext_nano", width=32, layers=2, min_pixels=4
    )
    return BiCoRSeg(config, dataset=DEMO_DATASET).eval()


def output_folder(folder: Path, *, metrics: bool = True) -> Path:
    """``folder`` laid out as ``bicorseg demo`` writes it: scene.tif, prediction.tif, heatmaps/, metrics.json."""
    folder.mkdir(parents=True, exist_ok=True)
    image, _ = generate_scene(SIZE, 11)
    scene = write_scene_geotiff(folder / "scene.tif", image, scene_transform(SIZE, 11))
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
