"""The predict, heatmaps and export commands end to end: workers, skips, errors, heatmaps, ONNX."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio import Affine

from tests.helpers import prints_warnings, require
from tests.helpers.inference import TRANSFORM, random_image, run, spec, write_geotiff
from tests.helpers.models import tiny_config


@pytest.mark.slow
def test_predict_folder_with_two_worker_processes_then_skip(tmp_path: Path, checkpoint: Path, capsys) -> None:
    for i in range(2):
        write_geotiff(tmp_path / "in" / f"tile_{i}.tif", random_image(3, 70, 90, seed=i), nodata=0)
    args = ["predict", tmp_path / "in", "--checkpoint", checkpoint, "--output", tmp_path / "out"]
    code, _, err = run(capsys, *args, "--tile", "64", "--devices", "2", "--probabilities", "--color")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(
        f"tile_{i}{s}" for i in range(2) for s in (".qml", ".tif", ".tif.aux.xml", "_color.tif", "_prob.tif")
    )
    with rasterio.open(tmp_path / "out" / "tile_1.tif") as out:
        assert out.crs.to_epsg() == 32633 and out.transform == TRANSFORM and out.shape == (70, 90)
    before = (tmp_path / "out" / "tile_0.tif").stat().st_mtime_ns
    code, _, err = run(capsys, *args, "--tile", "64", "--probabilities", "--color")
    assert code == 0 and "2 already done" in err
    assert (tmp_path / "out" / "tile_0.tif").stat().st_mtime_ns == before


@prints_warnings
def test_an_optional_map_of_an_earlier_run_is_named_not_left_silently(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    """Recomputed without --probabilities, the earlier run's _prob.tif would sit beside a map it does
    not belong to: the run says so (and leaves the file alone: it was not asked to touch it)."""
    write_geotiff(tmp_path / "in.tif", random_image(3, 40, 50, seed=3))
    args = [
        "predict",
        tmp_path / "in.tif",
        "--checkpoint",
        checkpoint,
        "--output",
        tmp_path / "out",
        "--tile",
        "32",
    ]
    code, _, err = run(capsys, *args, "--probabilities")
    assert code == 0 and "warning" not in err, err
    probabilities = (tmp_path / "out" / "in_prob.tif").read_bytes()
    code, _, err = run(capsys, *args, "--overwrite", "--color")
    assert code == 0, err
    assert (
        f"bicorseg predict: warning: {tmp_path / 'out' / 'in_prob.tif'} is left from an earlier run and "
        "does not belong to the new in.tif: delete it, or ask for --probabilities to replace it"
    ) in err.splitlines()
    assert (tmp_path / "out" / "in_prob.tif").read_bytes() == probabilities
    assert (tmp_path / "out" / "in_color.tif").is_file()


def test_print_config(tmp_path: Path, checkpoint: Path, capsys) -> None:
    code, out, _ = run(
        capsys,
        "predict",
        "a.tif",
        "--checkpoint",
        checkpoint,
        "--output",
        tmp_path,
        "--tta",
        "d4",
        "--print-config",
    )
    assert code == 0 and "tta: d4" in out and "tile: 512" in out
    assert f"threads: {torch.get_num_threads()}" in out  # resolved: the count the run would take


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, checkpoint: Path, capsys) -> None:
    one = write_geotiff(tmp_path / "one.tif", random_image(1, 32, 32))
    broken = tmp_path / "broken.tif"
    broken.write_text("not a raster")
    (tmp_path / "empty").mkdir()
    cases = [
        ([one], checkpoint, "one.tif has 1 band(s) but the checkpoint"),
        ([broken], checkpoint, "cannot read"),
        ([tmp_path / "empty"], checkpoint, "no images in folder"),
        ([one], tmp_path / "nope.ckpt", "checkpoint not found"),
    ]
    for inputs, ckpt, message in cases:
        code, _, err = run(capsys, "predict", *inputs, "--checkpoint", ckpt, "--output", tmp_path / "out")
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bicorseg predict: error:") and message in lines[0], (
            err
        )


@pytest.mark.slow
def test_heatmaps_of_a_raster_with_ground_truth(tmp_path: Path, checkpoint: Path, capsys) -> None:
    src = write_geotiff(tmp_path / "scene.tif", random_image(3, 90, 130), nodata=0)
    label = write_geotiff(
        tmp_path / "label.tif", np.random.default_rng(0).integers(0, 4, (1, 90, 130), dtype=np.uint8)
    )
    code, _, err = run(
        capsys,
        "heatmaps",
        src,
        "--checkpoint",
        checkpoint,
        "--output",
        tmp_path / "out",
        "--tile",
        "64",
        "--label",
        label,
    )
    assert code == 0, err
    for layer in (1, 2):
        with rasterio.open(tmp_path / "out" / f"scene_heatmaps_layer{layer}.tif") as heat:
            assert heat.count == 4 and heat.dtypes[0] == "float32" and heat.shape == (23, 33)
            assert heat.crs.to_epsg() == 32633 and heat.transform == TRANSFORM @ Affine.scale(4)
            assert heat.descriptions == ("road", "building", "tree", "water")
            values = heat.read()
        assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1 and np.isfinite(values).all()
    figure = Image.open(tmp_path / "out" / "scene_heatmaps.png")
    assert figure.format == "PNG" and figure.size[0] > 300


@pytest.mark.slow
def test_heatmaps_of_a_png(tmp_path: Path, checkpoint: Path, capsys) -> None:
    Image.fromarray(random_image(3, 64, 48).transpose(1, 2, 0)).save(tmp_path / "pic.png")
    code, _, err = run(
        capsys,
        "heatmaps",
        tmp_path / "pic.png",
        "--checkpoint",
        checkpoint,
        "--output",
        tmp_path / "out",
        "--layer",
        "1",
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 2 * 4 + 1 and "pic_layer1_road.png" in names and "pic_heatmaps.png" in names
    assert np.asarray(Image.open(tmp_path / "out" / "pic_layer2_water.png")).shape == (16, 12)
    code, _, err = run(
        capsys,
        "heatmaps",
        tmp_path / "pic.png",
        "--checkpoint",
        checkpoint,
        "--output",
        tmp_path,
        "--layer",
        "3",
    )
    assert code == 2 and "--layer: must be in 1..2" in err  # the core's parameter, named as the option


@pytest.mark.slow
def test_export_onnx_matches_pytorch_and_predicts(tmp_path: Path, checkpoint: Path, capsys) -> None:
    require("onnxruntime")
    import torch

    from bicorseg import load_model
    from bicorseg.inference.onnx import OnnxModel

    onnx_path = tmp_path / "export" / "model.onnx"
    code, _, err = run(
        capsys, "export", "onnx", "--checkpoint", checkpoint, "--tile", "64", "--output", onnx_path
    )
    assert code == 0, err
    # one self-contained file: no external weights (.data) and no temporary file beside it
    assert [p.name for p in onnx_path.parent.iterdir()] == ["model.onnx"]
    model, exported = load_model(checkpoint), OnnxModel(onnx_path)
    assert (
        exported.tile == 64
        and exported.info.num_classes == 4
        and exported.info.dataset.class_names[0] == "road"
    )
    x = torch.randn(3, 3, 64, 64)  # another batch size than the export's
    with torch.no_grad():
        assert (exported(x) - model(x)).abs().max() <= 1e-4
    src = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 100, 120))
    for engine, ckpt in (("onnx", onnx_path), ("torch", checkpoint)):
        # the default engine (auto) runs an .onnx checkpoint with ONNX Runtime
        code, _, err = run(capsys, "predict", src, "--checkpoint", ckpt, "--output", tmp_path / engine,
                           "--tile", "64", "--probabilities", "float32", "--precision", "fp32")  # fmt: skip
        assert code == 0, err
        with rasterio.open(tmp_path / engine / "scene_prob.tif") as out:
            assert f"engine={engine}" in out.tags()["bicorseg_settings"]
    code, _, err = run(capsys, "predict", src, "--checkpoint", onnx_path, "--output", tmp_path / "x",
                       "--engine", "torch")  # fmt: skip
    assert code == 2 and "is an ONNX model: run it with --engine onnx" in err
    code, _, err = run(capsys, "heatmaps", src, "--checkpoint", onnx_path, "--output", tmp_path / "x")
    assert code == 2 and "is an ONNX model, not a bicorseg checkpoint" in err
    with (
        rasterio.open(tmp_path / "onnx" / "scene_prob.tif") as a,
        rasterio.open(tmp_path / "torch" / "scene_prob.tif") as b,
    ):
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-4)
        assert a.crs == b.crs
    code, _, err = run(capsys, "export", "onnx", "--checkpoint", checkpoint, "--tile", "50",
                       "--output", onnx_path, "--overwrite")  # fmt: skip
    assert code == 2 and "multiple of 32" in err


@pytest.mark.slow
def test_a_working_resolution_travels_in_the_checkpoint(tmp_path: Path, capsys) -> None:
    """A model with ``downsample`` 2: predict, heatmaps and the ONNX export read it from the checkpoint."""
    require("onnxruntime")
    from bicorseg import load_model
    from bicorseg.checkpoint import save_checkpoint
    from bicorseg.inference.onnx import OnnxModel
    from bicorseg.models import BiCoRSeg

    torch.manual_seed(0)
    half = BiCoRSeg(tiny_config(downsample=2), dataset=spec(3))
    checkpoint = save_checkpoint(half, tmp_path / "half.ckpt")
    assert load_model(checkpoint).config.downsample == 2
    src = write_geotiff(tmp_path / "scene.tif", random_image(3, 90, 130))
    for command in ("predict", "heatmaps"):
        code, _, err = run(capsys, command, src, "--checkpoint", checkpoint, "--output", tmp_path / command,
                           "--tile", "64")  # fmt: skip
        assert code == 0, err
    with rasterio.open(tmp_path / "predict" / "scene.tif") as out:
        assert out.shape == (90, 130) and out.transform == TRANSFORM
    with rasterio.open(tmp_path / "heatmaps" / "scene_heatmaps_layer1.tif") as heat:
        assert heat.shape == (23, 33) and heat.transform == TRANSFORM @ Affine.scale(4)
    onnx_path = tmp_path / "half.onnx"
    code, _, err = run(
        capsys, "export", "onnx", "--checkpoint", checkpoint, "--tile", "64", "--output", onnx_path
    )
    assert code == 0, err
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (OnnxModel(onnx_path)(x) - half.eval()(x)).abs().max() <= 1e-4


def test_export_keeps_an_existing_file_without_overwrite(tmp_path: Path, checkpoint: Path, capsys) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the user's model")
    code, _, err = run(capsys, "export", "onnx", "--checkpoint", checkpoint, "--output", target)
    assert code == 2
    assert err.strip() == f"bicorseg export: error: {target} exists (use --overwrite to replace it)"
    assert target.read_bytes() == b"the user's model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


@pytest.mark.slow
@prints_warnings
def test_a_file_name_that_is_not_utf8_is_skipped_in_a_folder_and_refused_by_name(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    inputs = tmp_path / "in"
    write_geotiff(inputs / "good.tif", random_image(3, 64, 64))
    write_geotiff(inputs / "other.tif", random_image(3, 64, 64))
    latin1 = os.path.join(os.fsencode(inputs), b"caf\xe9.tif")  # a name written on a Latin-1 system
    os.rename(inputs / "other.tif", latin1)
    code, _, err = run(capsys, "predict", inputs, "--checkpoint", checkpoint, "--output", tmp_path / "out",
                       "--tile", "64")  # fmt: skip
    assert code == 0, err
    shown = f"{inputs}/caf\\xe9.tif"
    assert f"warning: {shown}: skipped: its name is not UTF-8 text, which GDAL cannot open (rename it)" in err
    assert sorted({p.name.split(".")[0] for p in (tmp_path / "out").iterdir()}) == [
        "good"
    ]  # good.tif, .qml...
    code, _, err = run(capsys, "predict", os.fsdecode(latin1), "--checkpoint", checkpoint, "--output",
                       tmp_path / "out2")  # fmt: skip
    assert code == 2
    assert (
        err.strip()
        == f"bicorseg predict: error: {shown}: its name is not UTF-8 text, which GDAL cannot open (rename it)"
    )
    assert not (tmp_path / "out2").exists()


def test_worker_processes_have_one_option_name(tmp_path: Path, checkpoint: Path, capsys) -> None:
    source = write_geotiff(tmp_path / "a.tif", random_image(3, 32, 32))
    argv = ["predict", source, "--checkpoint", checkpoint, "--output", tmp_path / "out", "--workers", "2"]
    with pytest.raises(SystemExit) as stopped:
        run(capsys, *argv)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "bicorseg predict: error: unrecognized option --workers (see bicorseg predict --help)"
    )
    assert not (tmp_path / "out").exists()
