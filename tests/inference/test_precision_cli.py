"""--precision on predict, evaluate, heatmaps and submit; --engine auto; outputs record the precision."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from bicorseg.checkpoint import save_checkpoint
from bicorseg.data.synthetic import synthetic_spec
from bicorseg.models import BiCoRSeg
from bicorseg.precision import resolve_precision
from tests.helpers import require
from tests.helpers.inference import random_image, run, write_geotiff
from tests.helpers.models import tiny_config


def _settings(path: Path) -> str:
    with rasterio.open(path) as src:
        return src.tags()["bicorseg_settings"]


@pytest.mark.slow
def test_predict_records_the_precision_it_ran_at(tmp_path: Path, checkpoint: Path, capsys) -> None:
    src = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 70, 90))
    maps = {}
    for precision in ("bf16", "fp32", None):
        out = tmp_path / str(precision)
        extra = ["--precision", precision] if precision else []
        code, _, err = run(
            capsys, "predict", src, "--checkpoint", checkpoint, "--output", out, "--tile", "64", *extra
        )
        assert code == 0, err
        expected = precision or resolve_precision("auto", "cpu")
        assert _settings(out / "scene.tif").endswith(
            f" precision={expected} threads={torch.get_num_threads()}"
        )
        with rasterio.open(out / "scene.tif") as result:
            maps[precision] = result.read(1)
    agreement = (maps["bf16"] == maps["fp32"]).mean()
    assert 0.9 < agreement  # a random tiny model: close logits, a few flipped arg-maxes


@pytest.mark.slow
def test_onnx_engine_is_picked_for_onnx_files_and_refuses_bf16(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    require("onnxruntime")
    onnx_path = tmp_path / "model.onnx"
    code, _, err = run(
        capsys, "export", "onnx", "--checkpoint", checkpoint, "--tile", "64", "--output", onnx_path
    )
    assert code == 0, err
    from bicorseg.inference.onnx import OnnxModel

    threads = torch.get_num_threads()
    try:  # onnxruntime follows torch's thread count, which the predictor sets to the run's
        torch.set_num_threads(1)
        assert OnnxModel(onnx_path).session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(threads)
    src = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 70, 90))
    base = ["predict", src, "--checkpoint", onnx_path, "--tile", "64"]
    code, _, err = run(capsys, *base, "--output", tmp_path / "auto")  # --engine auto, --precision auto
    assert code == 0, err
    assert _settings(tmp_path / "auto" / "scene.tif").endswith(
        f" precision=fp32 threads={torch.get_num_threads()}"
    )
    code, _, err = run(capsys, *base, "--output", tmp_path / "bf16", "--precision", "bf16")
    assert code == 2
    assert err.strip() == (
        "bicorseg predict: error: --precision: the ONNX engine runs in fp32 only, got bf16 (use fp32 or auto)"
    )
    assert not (tmp_path / "bf16" / "scene.tif").exists()
    code, _, err = run(capsys, *base, "--output", tmp_path / "torch", "--engine", "torch")
    assert code == 2 and "is an ONNX model: run it with --engine onnx" in err


@pytest.mark.slow
def test_evaluate_report_states_the_precision(tmp_path: Path, capsys) -> None:
    model = BiCoRSeg(tiny_config(), dataset=synthetic_spec())
    path = save_checkpoint(model, tmp_path / "synthetic.ckpt")
    for precision in ("bf16", "fp32"):
        out = tmp_path / f"{precision}.json"
        code, printed, err = run(
            capsys, "evaluate", "--checkpoint", path, "--dataset", "synthetic", "--split", "val",
            "--precision", precision, "--output", out, "--limit", "2",
        )  # fmt: skip
        assert code == 0, err
        assert f"precision: {precision}" in printed
        assert json.loads(out.read_text())["convention"]["precision"] == precision


@pytest.mark.slow
def test_heatmaps_record_the_precision(tmp_path: Path, checkpoint: Path, capsys) -> None:
    src = write_geotiff(tmp_path / "scene.tif", random_image(3, 64, 64))
    code, _, err = run(
        capsys, "heatmaps", src, "--checkpoint", checkpoint, "--output", tmp_path / "out",
        "--tile", "64", "--precision", "bf16",
    )  # fmt: skip
    assert code == 0, err
    with rasterio.open(tmp_path / "out" / "scene_heatmaps_layer1.tif") as heat:
        assert heat.tags()["bicorseg_precision"] == "bf16" and heat.dtypes[0] == "float32"
        assert np.isfinite(heat.read()).all()


@pytest.mark.slow
def test_submit_at_bf16_and_paper_tta_at_fp32(tmp_path: Path, capsys) -> None:
    from bicorseg.data import get_spec

    torch.manual_seed(0)
    model = BiCoRSeg(tiny_config(num_classes=7), dataset=get_spec("loveda"))
    path = save_checkpoint(model, tmp_path / "loveda.ckpt")
    folder = tmp_path / "Test" / "Rural" / "images_png"
    folder.mkdir(parents=True)
    Image.fromarray(random_image(3, 1024, 1024).transpose(1, 2, 0)).save(folder / "4001.png")

    def submit(out: Path, *options: str) -> tuple[str, str]:
        code, printed, err = run(
            capsys, "submit", "loveda", "--checkpoint", path, "--root", tmp_path, "--output", out,
            "--batch-size", "1", *options,
        )  # fmt: skip
        assert code == 0, err
        return printed, err

    out = tmp_path / "submission.zip"
    printed, _ = submit(out, "--precision", "bf16")
    assert "at precision bf16" in printed
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["4001.png"]
    # --tta paper reproduces the original, which evaluates in fp32: the default follows it
    printed, err = submit(tmp_path / "paper.zip", "--tta", "paper")
    assert "at precision fp32" in printed and "= 8 passes, logits averaged" in err
