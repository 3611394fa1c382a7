"""``predict`` never gives a silently wrong result: the table of the cases that used to.

Each case runs the real command line on real GeoTIFFs/PNGs (EPSG:32633 or ground control points):
outputs that would overwrite an input or each other, undeclared float nodata, extra bands that are
not masks, GCP georeferencing, and reruns over outputs made by another checkpoint or settings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.control import GroundControlPoint

from bicorseg.cli.main import main
from bicorseg.precision import resolve_precision
from tests.helpers import prints_warnings
from tests.helpers.inference import CRS, random_image, tiny_checkpoint, write_geotiff

pytestmark = [pytest.mark.usefixtures("one_thread"), prints_warnings]  # tiny models on a shared CPU

FLOAT32_LOWEST = np.float32(-3.4028235e38)


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory) -> Path:
    """The same classes and bands, other statistics: another checkpoint file (another hash)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("other") / "tiny.ckpt", mean=100.0)


def predict(capsys, inputs, checkpoint: Path, output: Path, *options: str) -> tuple[int, str]:
    argv = ["predict", *map(str, inputs), "--checkpoint", str(checkpoint), "--output", str(output)]
    code = main([*argv, "--tile", "64", "--quiet", *options])
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bicorseg predict: error:"), err
    return lines[0]


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("bicorseg predict: warning:")]


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


# -- an output never overwrites an input -----------------------------------------------------------


def _same_folder(tmp: Path, source: Path) -> Path:
    return source.parent


def _symlinked_folder(tmp: Path, source: Path) -> Path:
    os.symlink(source.parent, tmp / "link")
    return tmp / "link"


def _hard_link(tmp: Path, source: Path) -> Path:
    (tmp / "out").mkdir()
    os.link(source, tmp / "out" / source.name)  # the output name is a hard link of the input
    return tmp / "out"


OVER_INPUT = [("output folder = input's folder", _same_folder), ("a symlink to it", _symlinked_folder),
              ("output name is a hard link of the input", _hard_link)]  # fmt: skip


@pytest.mark.parametrize("overwrite", [False, True], ids=["", "--overwrite"])
@pytest.mark.parametrize(("case", "output"), OVER_INPUT, ids=[c[0] for c in OVER_INPUT])
def test_an_output_that_is_an_input_is_refused(case, output, overwrite, tmp_path, checkpoint, capsys) -> None:
    source = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 40, 50))
    before = source.read_bytes()
    out = output(tmp_path, source)
    code, err = predict(capsys, [source], checkpoint, out, *(["--overwrite"] if overwrite else []))
    assert code == 2, case
    assert re.search(r"scene\.tif of .*scene\.tif would overwrite the input .*in/scene\.tif", one_error(err))
    assert source.read_bytes() == before
    assert sorted(p.name for p in source.parent.iterdir()) == ["scene.tif"]


def _stems(d: Path) -> list[Path]:
    write_geotiff(d / "a" / "x.tif", random_image(3, 32, 32))
    Image.fromarray(random_image(3, 32, 32).transpose(1, 2, 0)).save(d / "b" / "x.png")
    return [d / "a" / "x.tif", d / "b" / "x.png"]


def _color(d: Path) -> list[Path]:
    return [write_geotiff(d / "a" / "x.tif", random_image(3, 32, 32)),
            write_geotiff(d / "b" / "x_color.tif", random_image(3, 32, 32))]  # fmt: skip


def _prob(d: Path) -> list[Path]:
    return [write_geotiff(d / "a" / "x.tif", random_image(3, 32, 32)),
            write_geotiff(d / "a" / "x_prob.tif", random_image(3, 32, 32))]  # fmt: skip


def _case(d: Path) -> list[Path]:
    return [write_geotiff(d / "a" / "Scene.tif", random_image(3, 32, 32)),
            write_geotiff(d / "b" / "scene.TIF", random_image(3, 32, 32))]  # fmt: skip


SHARED_NAME = [
    ("x.tif and x.png in two folders", _stems, ["--probabilities"], r"x\.(tif|png) and .*x\.(png|tif) would both write .*x_prob\.tif"),
    ("x.tif and x_color.tif with --color", _color, ["--color"], r"x\.tif and .*x_color\.tif would both write .*x_color\.tif"),
    ("x.tif and x_prob.tif with --probabilities", _prob, ["--probabilities"], r"x\.tif and .*x_prob\.tif would both write .*x_prob\.tif"),
    ("Scene.tif and scene.TIF", _case, [], r"Scene\.tif and .*scene\.TIF would both write .*Scene\.tif .*without case"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "options", "message"), SHARED_NAME, ids=[c[0] for c in SHARED_NAME])
def test_inputs_that_would_share_an_output_are_refused_before_any_work(
    case, make, options, message, tmp_path, checkpoint, capsys
) -> None:
    (tmp_path / "b").mkdir(parents=True, exist_ok=True)
    inputs = make(tmp_path)
    code, err = predict(capsys, inputs, checkpoint, tmp_path / "out", *options)
    assert code == 2, case
    assert re.search(message, one_error(err)), err
    assert not (tmp_path / "out").exists()  # nothing was predicted


def test_the_same_file_named_twice_is_predicted_once(tmp_path, checkpoint, capsys) -> None:
    source = write_geotiff(tmp_path / "in" / "x.tif", random_image(3, 32, 32))
    code, err = predict(
        capsys, [source, tmp_path / "in" / ".." / "in" / "x.tif"], checkpoint, tmp_path / "out"
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.qml", "x.tif", "x.tif.aux.xml"]


# -- undeclared float nodata ------------------------------------------------------------------------


def test_undeclared_float_nodata_is_masked_exactly_like_declared_nodata(tmp_path, checkpoint, capsys) -> None:
    data = random_image(3, 90, 110, seed=2).astype(np.float32)
    data[:, 20:40, 30:60] = FLOAT32_LOWEST  # a GIS tool's "lowest float" fill, not declared
    undeclared = write_geotiff(tmp_path / "a" / "scene.tif", data)
    declared = write_geotiff(tmp_path / "b" / "scene.tif", data, nodata=float(FLOAT32_LOWEST))
    code, err = predict(capsys, [undeclared], checkpoint, tmp_path / "out_a", "--probabilities", "float32")
    assert code == 0, err
    [warning] = warnings_of(err)
    assert re.search(
        r"a/scene\.tif: 600 pixel\(s\) with undeclared nodata .*-3\.403e\+38.* masked as nodata", warning
    )
    code, err = predict(capsys, [declared], checkpoint, tmp_path / "out_b", "--probabilities", "float32")
    assert code == 0 and warnings_of(err) == [], err
    classes = read(tmp_path / "out_a" / "scene.tif")[0]
    assert np.array_equal(classes, read(tmp_path / "out_b" / "scene.tif")[0])
    assert (classes[20:40, 30:60] == 255).all() and (np.delete(classes, slice(20, 40), 0) < 4).all()
    np.testing.assert_array_equal(
        read(tmp_path / "out_a" / "scene_prob.tif"), read(tmp_path / "out_b" / "scene_prob.tif")
    )


def test_non_finite_and_absurd_values_in_one_band_are_masked(tmp_path, checkpoint, capsys) -> None:
    data = random_image(3, 40, 40, seed=3).astype(np.float32)
    data[1, 5, 5] = np.inf
    data[2, 6, 6] = np.nan
    data[0, 7, 7] = 1e9  # millions of standard deviations from the checkpoint's mean
    code, err = predict(capsys, [write_geotiff(tmp_path / "f.tif", data)], checkpoint, tmp_path / "out")
    assert code == 0, err
    assert re.search(r"f\.tif: 3 pixel\(s\) with undeclared nodata", warnings_of(err)[0])
    classes = read(tmp_path / "out" / "f.tif")[0]
    assert [tuple(p) for p in np.argwhere(classes == 255)] == [(5, 5), (6, 6), (7, 7)]


def test_float_0_1_data_with_8_bit_statistics_warns_like_16_bit(tmp_path, checkpoint, capsys) -> None:
    unit = write_geotiff(
        tmp_path / "unit.tif", np.random.default_rng(0).random((3, 40, 40), dtype=np.float32)
    )
    u16 = write_geotiff(tmp_path / "u16.tif", random_image(3, 40, 40, dtype=np.uint16))
    code, err = predict(capsys, [unit, u16], checkpoint, tmp_path / "out")
    assert code == 0, err
    found = warnings_of(err)
    assert any(re.search(r"unit\.tif is float32 with values in 0\.\.1 but the checkpoint's normalisation is in "
                         r"8-bit units \(mean 126\): values are used as they are", w) for w in found), err  # fmt: skip
    assert any(
        re.search(r"u16\.tif is uint16 but the checkpoint's normalisation is in 8-bit units", w)
        for w in found
    )


# -- a 4th band is a mask only when it is a real alpha band --------------------------------------


def test_real_alpha_band_masks_pixels(tmp_path, checkpoint, capsys) -> None:
    data = np.concatenate([random_image(3, 50, 60), np.full((1, 50, 60), 255, np.uint8)])
    data[3, :10, :20] = 0
    src = write_geotiff(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    with rasterio.open(src) as check:
        assert check.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    code, err = predict(capsys, [src], checkpoint, tmp_path / "out")
    assert code == 0 and warnings_of(err) == [], err
    classes = read(tmp_path / "out" / "rgba.tif")[0]
    assert (classes[:10, :20] == 255).all() and (classes[10:] < 4).all()


@pytest.mark.parametrize("declared_alpha", [True, False], ids=["GDAL says alpha", "no colour interpretation"])
def test_a_data_4th_band_is_dropped_and_masks_nothing(declared_alpha, tmp_path, checkpoint, capsys) -> None:
    rgb = random_image(3, 50, 60, seed=4)
    nir = np.random.default_rng(5).integers(0, 256, (1, 50, 60)).astype(np.uint8)
    nir[0, :10, :10] = 0  # zeros in the band: GDAL's alpha mask would make them nodata
    extra = {} if declared_alpha else {"photometric": "MINISBLACK"}
    src = write_geotiff(tmp_path / "in" / "rgbn.tif", np.concatenate([rgb, nir]), **extra)
    with rasterio.open(src) as check:
        assert (check.colorinterp[3] == rasterio.enums.ColorInterp.alpha) == declared_alpha
    code, err = predict(capsys, [src], checkpoint, tmp_path / "out")
    assert code == 0, err
    [warning] = warnings_of(err)
    interp = "alpha" if declared_alpha else "undefined"
    assert re.search(
        rf"rgbn\.tif: band 4 \({interp}\) is dropped: the checkpoint .* expects 3 band\(s\)", warning
    )
    assert ("no pixel is masked by it" in warning) == declared_alpha
    code, err = predict(
        capsys, [write_geotiff(tmp_path / "in3" / "rgbn.tif", rgb)], checkpoint, tmp_path / "out3"
    )
    assert code == 0, err
    classes = read(tmp_path / "out" / "rgbn.tif")[0]
    assert (classes < 4).all()  # no pixel masked
    assert np.array_equal(classes, read(tmp_path / "out3" / "rgbn.tif")[0])  # the 4th band is not used


# -- ground control points ------------------------------------------------------------------------

GCPS = [
    GroundControlPoint(0, 0, 500_000.0, 5_000_000.0, id="1"),
    GroundControlPoint(0, 64, 500_016.0, 5_000_001.0, id="2"),
    GroundControlPoint(48, 0, 499_999.0, 4_999_988.0, id="3"),
    GroundControlPoint(48, 64, 500_015.0, 4_999_989.0, id="4"),
]


def test_gcp_georeferencing_survives_in_every_output(tmp_path, checkpoint, capsys) -> None:
    src = tmp_path / "in" / "gcp.tif"
    src.parent.mkdir()
    profile = dict(driver="GTiff", width=64, height=48, count=3, dtype="uint8", gcps=GCPS, crs=CRS)
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(random_image(3, 48, 64))
    code, err = predict(capsys, [src], checkpoint, tmp_path / "out", "--probabilities", "--color")
    assert code == 0, err
    code = main(["heatmaps", str(src), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"),
                 "--tile", "64"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    outputs = {name: 1 for name in ("gcp.tif", "gcp_prob.tif", "gcp_color.tif")}
    outputs |= {"gcp_heatmaps_layer1.tif": 4, "gcp_heatmaps_layer2.tif": 4}
    for name, scale in outputs.items():
        with rasterio.open(tmp_path / "out" / name) as out:
            gcps, crs = out.gcps
            assert crs.to_string() == CRS, name
            assert out.transform.is_identity, name
            got = [(g.row * scale, g.col * scale, g.x, g.y) for g in gcps]
            assert got == [(g.row, g.col, g.x, g.y) for g in GCPS], name


# -- reruns: skip only what this checkpoint made with these settings ------------------------------


def _first_run(tmp_path: Path, checkpoint: Path, capsys, *options: str) -> tuple[Path, Path]:
    source = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 40, 50))
    code, err = predict(capsys, [source], checkpoint, tmp_path / "out", *options)
    assert code == 0, err
    return source, tmp_path / "out" / "scene.tif"


def test_rerun_skips_what_verifies(tmp_path, checkpoint, capsys) -> None:
    source, out = _first_run(tmp_path, checkpoint, capsys, "--probabilities", "--color")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.parent.iterdir()}
    with rasterio.open(out) as written:
        tags = written.tags()
    assert len(tags["bicorseg_checkpoint_sha256"]) == 64
    precision = resolve_precision("auto", "cpu")  # --precision auto, resolved for this CPU
    threads = torch.get_num_threads()  # the thread count the run took (a CPU's results depend on it)
    assert tags["bicorseg_settings"] == (
        f"tile=64 overlap=0.25 tta=none engine=torch precision={precision} threads={threads}"
    )
    code = main(["predict", str(source), "--checkpoint", str(checkpoint), "--output", str(out.parent),
                 "--tile", "64", "--probabilities", "--color"])  # fmt: skip
    assert code == 0 and "1 already done (skipped)" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.parent.iterdir()} == stamps


def _truncate(out: Path) -> None:
    out.write_bytes(out.read_bytes()[:300])


def _foreign(out: Path) -> None:
    write_geotiff(out, random_image(1, 40, 50))  # the user's own file under the output's name


def _resize(out: Path) -> None:
    write_geotiff(out, random_image(1, 20, 20))


def _three_bands(out: Path) -> None:
    write_geotiff(out, random_image(3, 40, 50))


OTHER_PRECISION = "fp32" if resolve_precision("auto", "cpu") == "bf16" else "bf16"  # not what auto runs here
RERUNS = [
    ("another checkpoint", None, [], r"scene\.tif exists: made by another checkpoint"),
    ("another tile size", None, ["--tile", "32"], r"scene\.tif exists: settings differ \(tile=64 .*; now tile=32 "),
    ("another TTA", None, ["--tta", "lr"], r"scene\.tif exists: settings differ \(.*tta=none.*; now .*tta=lr"),
    ("another precision", None, ["--precision", OTHER_PRECISION], rf"settings differ \(.*precision=.*; now .*precision={OTHER_PRECISION}"),
    ("truncated output", _truncate, [], r"scene\.tif exists: unreadable"),
    ("a file bicorseg did not write", _foreign, [], r"scene\.tif exists: not written by bicorseg predict"),
    ("an output of another size", _resize, [], r"scene\.tif exists: 20 x 20 px, not the input's 50 x 40"),
    ("an output with other bands", _three_bands, [], r"scene\.tif exists: 3 band\(s\) of uint8, not 1 band\(s\) of uint8"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "damage", "options", "message"), RERUNS, ids=[c[0] for c in RERUNS])
def test_rerun_over_outputs_that_do_not_verify(
    case, damage, options, message, tmp_path, checkpoint, other_checkpoint, capsys
) -> None:
    source, out = _first_run(tmp_path, checkpoint, capsys)
    if damage is not None:
        damage(out)
    second = other_checkpoint if case == "another checkpoint" else checkpoint
    before = out.read_bytes()
    code, err = predict(capsys, [source], second, out.parent, *options)
    assert code == 2, case
    line = one_error(err)
    assert re.search(message, line) and "use --overwrite to recompute it" in line, line
    assert out.read_bytes() == before  # refused: nothing replaced
    code, err = predict(capsys, [source], second, out.parent, *options, "--overwrite")
    assert code == 0, err
    [warning] = warnings_of(err)
    assert re.search(message.replace(" exists: ", ": "), warning) and warning.endswith("recomputing it"), (
        warning
    )
    code, err = predict(capsys, [source], second, out.parent, *options)  # now made by this run: skipped
    assert code == 0 and warnings_of(err) == [], err


def test_png_outputs_record_and_verify_the_checkpoint(tmp_path, checkpoint, other_checkpoint, capsys) -> None:
    Image.fromarray(random_image(3, 40, 50).transpose(1, 2, 0)).save(tmp_path / "photo.jpg", quality=95)
    code, err = predict(capsys, [tmp_path / "photo.jpg"], checkpoint, tmp_path / "out", "--color")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "photo.png") as image:
        assert len(image.text["bicorseg_checkpoint_sha256"]) == 64
    code, err = predict(capsys, [tmp_path / "photo.jpg"], checkpoint, tmp_path / "out", "--color")
    assert code == 0, err
    code, err = predict(capsys, [tmp_path / "photo.jpg"], other_checkpoint, tmp_path / "out", "--color")
    assert code == 2 and re.search(r"photo\.png exists: made by another checkpoint", one_error(err))
