"""Inputs that are not 8-bit, rescaled onto the checkpoint's 8-bit units: real GeoTIFFs (EPSG:32633).

16-bit, 12-bit in a 16-bit container and floating point in 0..1, each made from one 8-bit image:
rescaled, each gives the 8-bit image's map; as they are, a warning and another map.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

import bicorseg.inference.raster_io as raster_io
from bicorseg.errors import ConfigError
from bicorseg.inference import ModelInfo, PredictOptions, Predictor, mosaic, predict_files
from bicorseg.inference.batch import build_plan
from bicorseg.inference.executors import UnitWorker
from bicorseg.inference.units import PARTS_FOLDER, PLAN_NAME, PartStore
from bicorseg.rescale import SAMPLE_SIDE, SAMPLE_WINDOWS
from tests.helpers import prints_warnings
from tests.helpers.inference import pixel_model, random_image, run, spec, tiny_checkpoint, write_geotiff

EIGHT_BIT = random_image(3, 96, 112, seed=3)


def predict(path: Path, out: Path, rescale: str = "none") -> tuple[np.ndarray, dict[str, str], list[str]]:
    """The class map and tags of ``path`` predicted by a per-pixel model, and the warnings."""
    predictor = Predictor(
        pixel_model(3), ModelInfo(4, 3, spec(3), "pixel-model"), PredictOptions(tile=64, rescale=rescale)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predictor.predict_file(path, out)
    with rasterio.open(result.outputs["class"]) as src:
        return src.read(1), src.tags(), [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> np.ndarray:
    folder = tmp_path_factory.mktemp("eight")
    return predict(write_geotiff(folder / "eight.tif", EIGHT_BIT), folder / "out")[0]


@pytest.mark.parametrize(
    ("name", "data", "how"),
    [
        ("sixteen.tif", EIGHT_BIT.astype(np.uint16) * 257, "16-bit values: band ranges 0..65535"),
        ("twelve.tif", EIGHT_BIT.astype(np.uint16) * 16, "12-bit values: band ranges 0..4095"),
        (
            "unit.tif",
            (EIGHT_BIT / 255.0).astype(np.float32),
            "floating-point values in 0..1: band ranges 0..1",
        ),
    ],
)
def test_auto_gives_the_map_of_the_8bit_image(tmp_path, reference, name, data, how) -> None:
    path = write_geotiff(tmp_path / name, data)
    plain, tags, caught = predict(path, tmp_path / "none")
    assert any(f"{name} is {data.dtype.name}" in w and "the `rescale` option maps them" in w for w in caught)
    assert (plain == reference).mean() < 0.5  # as they are, the values make another map
    assert "bicorseg_rescale" not in tags and "rescale" not in tags["bicorseg_settings"]

    rescaled, tags, caught = predict(path, tmp_path / "auto", "auto")
    assert caught == []
    # 16-bit and 0..1 map back to the 8-bit values exactly; 12-bit (x 16 / 4095 * 255) nearly
    assert (rescaled == reference).mean() >= (0.99 if name == "twelve.tif" else 0.9999)
    assert tags["bicorseg_rescale"].startswith(how) and "rescale=auto" in tags["bicorseg_settings"]


def test_declared_bit_depth_percentiles_and_a_given_range(tmp_path, reference) -> None:
    dark = write_geotiff(tmp_path / "dark.tif", EIGHT_BIT.astype(np.uint16) * 4, NBITS=12)  # values < 1024
    _, tags, _ = predict(dark, tmp_path / "nbits", "auto")
    assert tags["bicorseg_rescale"].startswith("12-bit values: band ranges 0..4095")  # NBITS, not the values

    sixteen = write_geotiff(tmp_path / "sixteen.tif", EIGHT_BIT.astype(np.uint16) * 257)
    given, tags, _ = predict(sixteen, tmp_path / "given", "0,65535")
    assert (given == reference).mean() >= 0.9999 and "rescale=0,65535" in tags["bicorseg_settings"]
    stretched, tags, _ = predict(sixteen, tmp_path / "percentile", "percentile")
    low = [np.percentile(band, 2) for band in EIGHT_BIT.astype(np.float64) * 257]
    assert tags["bicorseg_rescale"].startswith(
        f"percentiles 2 and 98 of {96 * 112:,} sampled pixels: band ranges {low[0]:.6g}.."
    )
    assert 0.9 < (stretched == reference).mean() < 1.0  # a contrast stretch: close, not the same


def test_statistics_come_from_a_bounded_sample_of_the_whole_raster(tmp_path) -> None:
    data = np.full((1, 1500, 2400), 100, np.uint16)
    data[:, :, 1800:] = 3000  # the right quarter is bright
    path = write_geotiff(tmp_path / "large.tif", data, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path) as src:
        plan = raster_io.InputPlan(path, (1,), shape=(src.height, src.width))
        sample = raster_io.sample_values(src, plan)
    assert sample.shape == (1, SAMPLE_WINDOWS * SAMPLE_SIDE**2)
    assert set(np.unique(sample)) == {100, 3000}  # both parts of the raster were sampled
    assert abs((sample == 3000).mean() - 0.25) < 0.02


def test_nodata_is_left_out_of_the_statistics(tmp_path, reference) -> None:
    data = EIGHT_BIT.astype(np.uint16) * 257
    data[:, :40, :] = 0  # declared nodata
    path = write_geotiff(tmp_path / "holes.tif", data, nodata=0)
    classes, tags, _ = predict(path, tmp_path / "out", "percentile")
    assert (classes[:40] == 255).all()
    low = np.percentile(EIGHT_BIT[0, 40:].astype(np.float64) * 257, 2)
    assert f"band ranges {low:.6g}.." in tags["bicorseg_rescale"]


def test_a_checkpoint_in_other_units_refuses_a_rescale(tmp_path) -> None:
    path = write_geotiff(tmp_path / "sixteen.tif", EIGHT_BIT.astype(np.uint16) * 257)
    predictor = Predictor(
        pixel_model(3), ModelInfo(4, 3, spec(3, mean=1200.0), "wide-model"), PredictOptions(rescale="auto")
    )
    with pytest.raises(ConfigError, match=r"^rescale: auto: the checkpoint wide-model normalises in other"):
        predictor.predict_file(path, tmp_path / "out")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_shards_give_the_bytes_of_one_process_with_statistics_planned_once(
    tmp_path, checkpoint, monkeypatch
) -> None:
    inputs = tmp_path / "in"
    write_geotiff(inputs / "a.tif", random_image(3, 150, 170, seed=1).astype(np.uint16) * 200)
    write_geotiff(inputs / "b.tif", (random_image(3, 90, 120, seed=2) / 300.0).astype(np.float32))
    options = PredictOptions(tile=64, overlap=0.25, probabilities="float32", block=64, rescale="percentile")
    predict_files([inputs], checkpoint, tmp_path / "one", options)
    for i in range(3):  # round-robin shards, each its own predictor, then the mosaic
        predict_files([inputs], checkpoint, tmp_path / "shards", options, shard=(i, 3))
        if i == 0:
            plan = json.loads((tmp_path / "shards" / PARTS_FOLDER / PLAN_NAME).read_text())
            rescales = [f["rescale"] for f in plan["files"]]
            assert all(r.startswith("percentiles 2 and 98") for r in rescales) and rescales[0] != rescales[1]
    assert sorted(mosaic(tmp_path / "shards").assembled) == ["a.tif", "b.tif"]
    for name in ("a.tif", "a_prob.tif", "b.tif", "b_prob.tif"):
        assert (tmp_path / "shards" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    with rasterio.open(tmp_path / "shards" / "a.tif") as src:
        assert src.tags()["bicorseg_rescale"] == rescales[0]

    # the units of a plan read the statistics it carries: none of them samples the raster again
    predictor = Predictor.from_checkpoint(checkpoint, options)
    paths = sorted(inputs.iterdir())
    items = predictor.check_inputs(paths, tmp_path / "units")
    store = PartStore(tmp_path / "units")
    run_plan = store.claim(build_plan(predictor, items, None))
    monkeypatch.setattr(raster_io, "sample_values", None)  # a unit that sampled would fail here
    worker = UnitWorker(predictor, [item.plan for item in items], store, run_plan)
    for index, block in run_plan.units():
        worker.compute(index, block)
    assert sorted(mosaic(tmp_path / "units").assembled) == ["a.tif", "b.tif"]
    assert (tmp_path / "units" / "a.tif").read_bytes() == (tmp_path / "one" / "a.tif").read_bytes()


@pytest.mark.slow
@prints_warnings
def test_the_option_of_predict_and_heatmaps(tmp_path, checkpoint, capsys) -> None:
    path = write_geotiff(tmp_path / "sixteen.tif", EIGHT_BIT.astype(np.uint16) * 257)
    code, _, err = run(capsys, "predict", path, "--checkpoint", checkpoint, "--output", tmp_path / "p",
                       "--rescale", "auto", "--quiet")  # fmt: skip
    assert code == 0 and "normalisation" not in err, err
    with rasterio.open(tmp_path / "p" / "sixteen.tif") as src:
        assert src.tags()["bicorseg_rescale"].startswith("16-bit values")
    code, _, err = run(capsys, "heatmaps", path, "--checkpoint", checkpoint, "--output", tmp_path / "h",
                       "--rescale", "auto")  # fmt: skip
    assert code == 0 and "normalisation" not in err, err
    with rasterio.open(tmp_path / "h" / "sixteen_heatmaps_layer1.tif") as src:
        assert src.tags()["bicorseg_rescale"].startswith("16-bit values")
    for command in ("predict", "heatmaps"):
        code, _, err = run(capsys, command, path, "--checkpoint", checkpoint, "--output", tmp_path / "x",
                           "--rescale", "12bit")  # fmt: skip
        assert code == 2 and err.strip().splitlines() == [
            f"bicorseg {command}: error: --rescale: must be one of none, auto, percentile or MIN,MAX "
            "(e.g. 0,4095), got '12bit'"
        ]
    assert not (tmp_path / "x").exists()
    for command in ("predict", "heatmaps"):  # the warning names the option as the command writes it
        code, _, err = run(capsys, command, path, "--checkpoint", checkpoint, "--output", tmp_path / command)
        assert (
            code == 0 and f"bicorseg {command}: warning: " in err and "the --rescale option maps them" in err
        ), err
