"""Files from strangers: no code runs, no network is reached, no resource is exhausted, one line each.

The table of the guarantees about files from strangers (docs/guarantees.md), run through the real command line (in-process ``main``) and the
real readers. Every refusal is one line on stderr with exit status 2, and leaves nothing behind.

* checkpoints that would run code when unpickled, and checkpoints with non-finite weights;
* ONNX files without, or with malformed, bicorseg metadata;
* inputs that refer to remote sources (VRT files, web-service descriptions), checked with a real
  socket server that must see no connection;
* global state left alone on import; images that declare too many pixels; archive bombs, zip-slip
  members, symbolic link loops; non-UTF-8 and mistyped YAML; out-of-range options;
  ``pretrained: imagenet`` without network access.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bicorseg.checkpoint import metadata
from bicorseg.cli.main import main
from bicorseg.errors import BicorsegError, CheckpointError, InputError
from bicorseg.models import BiCoRSeg
from tests.helpers import require
from tests.helpers.inference import random_image, spec, tiny_checkpoint, write_geotiff
from tests.helpers.models import tiny_config
from tests.helpers.network import Listener
from tests.helpers.shared import REPO_ROOT


def run_cli(capsys, *args) -> tuple[int, list[str]]:
    """Exit status and the non-empty stderr lines of ``bicorseg ARGS``."""
    status = main([str(a) for a in args])
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


def refused(capsys, *args) -> str:
    """Run a command that must be refused: exit 2 and exactly one line, which is returned."""
    status, lines = run_cli(capsys, *args)
    assert status == 2 and len(lines) == 1, (status, lines)
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


# ---------------------------------------------------------------------------------------------------
# checkpoints that would run code


class _CreatesFile:
    """Unpickling this object calls ``Path.touch(marker)``: the stand-in for any code a file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A file laid out like a bicorseg training checkpoint, with the payload inside."""
    model = BiCoRSeg(tiny_config(), dataset=spec())
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {
            **metadata(model),
            "state_dict": state,
            "bicorseg": metadata(model),
            "global_step": 1,
            "optimizer_states": [],
            "extra": {"payload": _CreatesFile(marker)},
        },
        path,
    )
    return path


def _commands(tmp: Path, evil: Path) -> dict[str, list]:
    image = write_geotiff(tmp / "in" / "scene.tif", random_image(3, 40, 40))
    return {
        "predict": ["predict", image, "--checkpoint", evil, "--output", tmp / "out"],
        "evaluate": ["evaluate", "--checkpoint", evil, "--dataset", "synthetic"],
        "heatmaps": ["heatmaps", image, "--checkpoint", evil, "--output", tmp / "out"],
        "submit": ["submit", "loveda", "--checkpoint", evil, "--root", tmp / "in", "--output", tmp / "s.zip"],
        "export": ["export", "onnx", "--checkpoint", evil, "--output", tmp / "m.onnx"],
        "convert": ["convert", evil, "--output", tmp / "out.ckpt", "--num-classes", "4"],
        "train --resume": ["train", "--config", "tiny-test", "--output", tmp / "run", "--resume", evil],
    }


COMMANDS = ["predict", "evaluate", "heatmaps", "submit", "export", "convert", "train --resume"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_that_would_run_code_is_refused(command, tmp_path, capsys) -> None:
    marker = tmp_path / "code_ran"
    evil = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    line = refused(capsys, *_commands(tmp_path, evil)[command])
    assert "refusing to read checkpoint" in line and "evil.ckpt" in line and "could run code" in line
    assert not marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.onnx").exists()
    assert not (tmp_path / "out.ckpt").exists() and not (tmp_path / "s.zip").exists()


@pytest.mark.slow
def test_load_model_and_lightnings_resume_reader_refuse_it(tmp_path) -> None:
    from bicorseg import load_model
    from bicorseg.training.run import AtomicCheckpointIO

    marker = tmp_path / "code_ran"
    evil = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="refusing to read checkpoint"):
        load_model(evil)
    # the reader Lightning's trainer.fit(ckpt_path=...) calls, even when asked for weights_only=False
    with pytest.raises(CheckpointError, match="refusing to read checkpoint"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    # pretrained backbone weights (model.pretrained: FILE) go through the same reader
    with pytest.raises(CheckpointError, match=r"refusing to read pretrained weights .*evil\.ckpt"):
        BiCoRSeg(tiny_config(backbone="convnext_tiny", pretrained=str(evil)))
    assert not marker.exists()


@pytest.mark.slow
def test_real_training_checkpoints_load_without_unpickling_objects(tmp_path, capsys) -> None:
    """best.ckpt and last.ckpt of a real run hold only tensors and plain data (no allow-list needed)."""
    status, lines = run_cli(capsys, "train", "--config", "tiny-test", "--output", tmp_path / "run")
    assert status == 0, lines
    for name in ("best", "last"):
        path = tmp_path / "run" / "checkpoints" / f"{name}.ckpt"
        assert isinstance(torch.load(path, weights_only=True), dict)
        assert load_model_classes(path) == 4
    # and a resumed run reads last.ckpt through the same reader
    status, lines = run_cli(
        capsys, "train", "--config", "tiny-test", "--output", tmp_path / "run", "--resume",
        "--trainer.max_epochs", "3",
    )  # fmt: skip
    assert status == 0, lines


def load_model_classes(path: Path) -> int:
    from bicorseg import load_model

    return load_model(path).config.num_classes


# ---------------------------------------------------------------------------------------------------
# non-finite weights


def test_checkpoints_with_non_finite_weights_are_refused(tmp_path, capsys) -> None:
    from bicorseg import save_checkpoint

    model = BiCoRSeg(tiny_config(), dataset=spec())
    with torch.no_grad():
        model.class_embed[1, 3] = float("nan")
    plain = save_checkpoint(model, tmp_path / "nan.ckpt")
    line = refused(capsys, "predict", write_geotiff(tmp_path / "a.tif", random_image(3, 8, 8)),
                   "--checkpoint", plain, "--output", tmp_path / "out")  # fmt: skip
    assert "nan.ckpt: weight class_embed has 1 NaN or infinite value(s)" in line
    # the Lightning layout of bicorseg train, and an original implementation's checkpoint for convert
    lightning = tmp_path / "inf.ckpt"
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    state["model.class_embed"][0, 0] = float("inf")
    torch.save({"bicorseg": metadata(model), "state_dict": state}, lightning)
    with pytest.raises(CheckpointError, match=r"inf\.ckpt: weight class_embed has 2 NaN or infinite"):
        load_model_classes(lightning)
    original = tmp_path / "original.ckpt"
    torch.save(
        {"state_dict": {"net.decoder.class_dict.class_embed.weight": torch.full((4, 32), np.inf)}}, original
    )
    line = refused(capsys, "convert", original, "--output", tmp_path / "c.ckpt", "--num-classes", "4")
    assert "original.ckpt: weight net.decoder.class_dict.class_embed.weight has 128 NaN" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "c.ckpt").exists()


# ---------------------------------------------------------------------------------------------------
# ONNX files


def _onnx_file(path: Path, meta: str | None) -> Path:
    onnx = require("onnx")
    require("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 32, 32])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    if meta is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "bicorseg", meta
    onnx.save(model, str(path))
    return path


GOOD_CONFIG = {"num_classes": 3, "in_channels": 3}
ONNX_CASES = [
    ("no metadata", None, r"was not exported by bicorseg \(no 'bicorseg' metadata\)"),
    ("not JSON", "{model_config: ", r"invalid 'bicorseg' metadata: not JSON"),
    ("a JSON list", "[1, 2]", r"invalid 'bicorseg' metadata: expected a JSON object, got list"),
    ("no model config", '{"tile": 32}', r"model_config: missing or not an object"),
    (
        "tile is a string",
        json.dumps({"tile": "32", "model_config": GOOD_CONFIG}),
        r"tile: expected a positive integer, got '32'",
    ),
    (
        "classes are a float",
        '{"tile": 32, "model_config": {"num_classes": 2.5, "in_channels": 3}}',
        r"model_config\.num_classes: expected a positive integer, got 2\.5",
    ),
    (
        "dataset is malformed",
        '{"tile": 32, "model_config": {"num_classes": 3, "in_channels": 3}, "dataset": {"name": "x"}}',
        r"invalid 'bicorseg' metadata: dataset: ",
    ),
]


@pytest.mark.parametrize(("case", "meta", "message"), ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_onnx_metadata_problems_are_one_line(case, meta, message, tmp_path, capsys) -> None:
    import re

    model = _onnx_file(tmp_path / "model.onnx", meta)
    image = write_geotiff(tmp_path / "a.tif", random_image(3, 16, 16))
    line = refused(
        capsys, "predict", image, "--engine", "onnx", "--checkpoint", model, "--output", tmp_path / "o"
    )
    assert "model.onnx" in line and re.search(message, line), line


def test_a_file_that_is_not_onnx_is_one_line(tmp_path, capsys) -> None:
    require("onnxruntime")
    fake = tmp_path / "model.onnx"
    fake.write_text("not a model\n" * 10)
    image = write_geotiff(tmp_path / "a.tif", random_image(3, 16, 16))
    line = refused(
        capsys, "predict", image, "--engine", "onnx", "--checkpoint", fake, "--output", tmp_path / "o"
    )
    assert "cannot read ONNX model" in line and "model.onnx" in line


# ---------------------------------------------------------------------------------------------------
# remote sources


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def _vrt(
    path: Path, source: str, relative: bool = False, size: int = 16, count: int = 3, crs: bool = False
) -> Path:
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
        f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for b in range(1, count + 1)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    place = (
        "<SRS>EPSG:32631</SRS><GeoTransform>500000, 0.5, 0, 5700000, 0, -0.5</GeoTransform>" if crs else ""
    )
    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">{place}{bands}</VRTDataset>')
    return path


@pytest.mark.slow
def test_a_vrt_with_a_remote_source_is_refused_before_any_connection(tmp_path, capsys, listener) -> None:
    url = f"/vsicurl/http://127.0.0.1:{listener.port}/x.tif"
    vrt = _vrt(tmp_path / "in" / "remote.vrt", url)
    nested = _vrt(tmp_path / "in" / "outer.vrt", "remote.vrt", relative=True)
    disguised = tmp_path / "in" / "disguised.tif"  # a VRT under a GeoTIFF's name: GDAL reads it all the same
    disguised.write_bytes(vrt.read_bytes())
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    for source in (vrt, nested, disguised):
        line = refused(capsys, "predict", source, "--checkpoint", checkpoint, "--output", tmp_path / "out")
        assert f"{source}: refers to the remote source {url}; remote access is off" in line
    line = refused(capsys, "heatmaps", nested, "--checkpoint", checkpoint, "--output", tmp_path / "out")
    assert f"{nested}: refers to the remote source {url}; remote access is off" in line
    assert listener.close() == 0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_allow_remote_lets_the_source_be_read(tmp_path, capsys, listener) -> None:
    vrt = _vrt(tmp_path / "remote.vrt", f"/vsicurl/http://127.0.0.1:{listener.port}/x.tif")
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    status, lines = run_cli(
        capsys, "predict", vrt, "--checkpoint", checkpoint, "--output", tmp_path / "out", "--allow-remote"
    )
    assert status == 2 and "remote.vrt" in lines[-1]  # the server answers nothing, so the read fails
    assert listener.close() >= 1  # ... but it was asked


def _remote_class_raster(tmp_path: Path, port: int, command: str) -> tuple[Path, str, Path]:
    require("shapely")
    url = f"/vsicurl/http://127.0.0.1:{port}/classes.tif"
    output = tmp_path / ("out.gpkg" if command == "vectorize" else "areas.json")
    return _vrt(tmp_path / "classes.vrt", url, count=1, crs=True), url, output


@pytest.mark.parametrize("command", ["vectorize", "areas"])
def test_class_raster_commands_refuse_a_remote_source(tmp_path, capsys, listener, command) -> None:
    vrt, url, output = _remote_class_raster(tmp_path, listener.port, command)
    line = refused(capsys, command, vrt, "--output", output)
    assert f"{vrt}: refers to the remote source {url}; remote access is off" in line
    assert listener.close() == 0 and not output.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["vectorize", "areas"])
def test_class_raster_commands_reach_a_remote_source_when_allowed(
    tmp_path, capsys, listener, command
) -> None:
    vrt, _, output = _remote_class_raster(tmp_path, listener.port, command)
    status, lines = run_cli(capsys, command, vrt, "--output", output, "--allow-remote")
    assert status == 2 and "classes.vrt" in lines[-1]  # the server answers nothing, so the read fails
    assert listener.close() >= 1 and not output.exists()  # ... but it was asked


@pytest.mark.slow
def test_a_vrt_over_a_local_tif_is_predicted(tmp_path, capsys, checkpoint) -> None:
    import rasterio

    write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 48, 48))
    vrt = _vrt(tmp_path / "in" / "scene.vrt", "scene.tif", relative=True, size=48)
    for source, out in ((vrt, "vrt"), (tmp_path / "in" / "scene.tif", "tif")):
        status, lines = run_cli(capsys, "predict", source, "--checkpoint", checkpoint, "--output", tmp_path / out,
                                "--quiet")  # fmt: skip
        assert status == 0, lines
    with (
        rasterio.open(tmp_path / "vrt" / "scene.tif") as a,
        rasterio.open(tmp_path / "tif" / "scene.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())


def test_web_service_descriptions_and_remote_paths_are_refused(tmp_path, listener) -> None:
    from bicorseg.data.io import read_image
    from bicorseg.raster_access import is_remote, open_raster

    wms = tmp_path / "tiles.xml"
    wms.write_text(
        f"<GDAL_WMS><Service name='TMS'><ServerUrl>http://127.0.0.1:{listener.port}/${{z}}/${{x}}/${{y}}.png"
        "</ServerUrl></Service><DataWindow><UpperLeftX>0</UpperLeftX><UpperLeftY>1</UpperLeftY>"
        "<LowerRightX>1</LowerRightX><LowerRightY>0</LowerRightY><TileLevel>0</TileLevel>"
        "</DataWindow><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY></GDAL_WMS>"
    )
    with pytest.raises(InputError, match=r"tiles\.xml: describes a web service; remote access is off"):
        with open_raster(wms):
            pass
    disguised = tmp_path / "tiles.tif"  # GDAL goes by the content, whatever the name
    disguised.write_bytes(wms.read_bytes())
    with pytest.raises(InputError, match=r"tiles\.tif: describes a web service"):
        read_image(disguised)
    commented = tmp_path / "commented.vrt"  # GDAL skips a byte-order mark and comments before the root
    vrt = _vrt(tmp_path / "plain.vrt", f"/vsicurl/http://127.0.0.1:{listener.port}/y.tif").read_bytes()
    commented.write_bytes(b"\xef\xbb\xbf<!-- a comment -->\n" + vrt)
    with pytest.raises(InputError, match=r"commented\.vrt: refers to the remote source /vsicurl/"):
        with open_raster(commented):
            pass
    with pytest.raises(InputError, match=r"/vsis3/bucket/x\.tif: is a remote source; remote access is off"):
        with open_raster("/vsis3/bucket/x.tif"):
            pass
    assert listener.close() == 0
    for name in ("/vsicurl/http://h/x.tif", "/vsizip//vsis3/b/x.zip/a.tif", "https://h/x.tif", "WMS:http://h",
                 "s3://b/x.tif", "/vsigs_streaming/b/x.tif"):  # fmt: skip
        assert is_remote(name), name
    for name in ("/data/x.tif", "file:///data/x.tif", "/vsizip//data/x.zip/a.tif", "C:\\data\\x.tif"):
        assert not is_remote(name), name


def test_evaluate_refuses_a_folder_dataset_image_with_a_remote_source(tmp_path, capsys, listener) -> None:
    root = tmp_path / "data"
    (root / "masks").mkdir(parents=True)
    _vrt(root / "images" / "a.tif", f"/vsicurl/http://127.0.0.1:{listener.port}/x.tif", size=32)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "a.png")
    table = root / "classes.yaml"
    names = ("road", "building", "tree", "water")  # the checkpoint's classes
    classes = [{"name": n, "value": i} for i, n in enumerate(names)]
    table.write_text(yaml.safe_dump({"classes": classes, "ignore_index": 255}))
    line = refused(capsys, "evaluate", "--checkpoint", tiny_checkpoint(tmp_path / "m.ckpt"), "--dataset", "folder",
                   "--root", root, "--split", "all", "--class-table", table)  # fmt: skip
    assert "a.tif: refers to the remote source" in line
    assert listener.close() == 0


# ---------------------------------------------------------------------------------------------------
# no global side effects on import


SIDE_EFFECTS = r"""
import importlib, pkgutil, sys, warnings
import matplotlib, numpy, PIL.Image, rasterio, torch, torchvision, torchmetrics, yaml
import lightning, lightning.pytorch
for optional in ("onnx", "onnxruntime", "onnxscript", "timm", "rich", "tensorboard"):
    try:
        importlib.import_module(optional)
    except ImportError:
        pass
backend = dict.__getitem__(matplotlib.rcParams, "backend")
pixels = PIL.Image.MAX_IMAGE_PIXELS
filters = list(warnings.filters)

import bicorseg
for module in pkgutil.walk_packages(bicorseg.__path__, "bicorseg."):
    importlib.import_module(module.name)
assert PIL.Image.MAX_IMAGE_PIXELS == pixels, ("Pillow limit", PIL.Image.MAX_IMAGE_PIXELS)
assert list(warnings.filters) == filters, ("warning filters", warnings.filters[:5])

# drawing the heatmap figure does not switch matplotlib's backend either
import numpy as np
from pathlib import Path
from bicorseg.inference.heatmaps import draw_figure
from bicorseg.inference.predictor import ModelInfo
draw_figure(Path(sys.argv[1]), np.zeros((8, 8, 3)), np.zeros((2, 2), np.uint8), np.zeros((2, 2, 2)),
            ModelInfo(2, 3, None, "m"), 1)
assert dict.__getitem__(matplotlib.rcParams, "backend") is backend, ("backend", matplotlib.rcParams["backend"])
assert Path(sys.argv[1]).stat().st_size > 0
print("unchanged")
"""


@pytest.mark.slow
def test_importing_bicorseg_changes_no_global_state(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", SIDE_EFFECTS, str(tmp_path / "figure.png")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "unchanged" in result.stdout, result.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------
# images that declare too many pixels


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid PNG header declaring ``width x height`` RGB pixels, with (almost) no data: 66 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )
    return path


def _folder_dataset(root: Path) -> None:
    from bicorseg.data import build_dataset

    table = root / "classes.yaml"
    table.write_text("classes: [{name: a, value: 0}, {name: b, value: 1}]")
    dataset = build_dataset("folder", root, split="all", class_table=table)
    for index in range(len(dataset)):
        dataset[index]


def test_a_png_declaring_ten_gigapixels_is_refused_at_once(tmp_path, capsys, checkpoint) -> None:
    bomb = _png_declaring(tmp_path / "in" / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 100
    message = r"bomb\.png: 100000 x 100000 pixels is more than the limit of 2147483648 pixels"
    for command in ("predict", "heatmaps"):
        start = time.perf_counter()
        line = refused(capsys, command, bomb, "--checkpoint", checkpoint, "--output", tmp_path / "out")
        assert time.perf_counter() - start < 5 and re.search(message, line), line
    # the folder dataset (train, evaluate) and prepare read through the same check
    root = tmp_path / "folder"
    _png_declaring(root / "images" / "a.png", 100_000, 100_000)
    (root / "masks").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "a.png")
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"a\.png: 100000 x 100000 pixels is more than the limit"):
        _folder_dataset(root)
    assert time.perf_counter() - start < 5
    release = tmp_path / "LoveDA" / "Train" / "Rural"
    _png_declaring(release / "images_png" / "0.png", 100_000, 100_000)
    (release / "masks_png").mkdir()
    Image.fromarray(np.ones((8, 8), np.uint8)).save(release / "masks_png" / "0.png")
    start = time.perf_counter()
    line = refused(capsys, "prepare", "loveda", "--source", tmp_path / "LoveDA", "--output", tmp_path / "p",
                   "--no-progress")  # fmt: skip
    assert time.perf_counter() - start < 5 and re.search(r"0\.png: 100000 x 100000 pixels", line), line
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_the_pixel_limit_is_configurable_and_leaves_pillow_alone(tmp_path, monkeypatch) -> None:
    from bicorseg.data.io import read_image

    small = tmp_path / "small.png"
    Image.fromarray(random_image(3, 20, 30).transpose(1, 2, 0)).save(small)
    tif = write_geotiff(tmp_path / "small.tif", random_image(3, 20, 30))
    pillow_limit = Image.MAX_IMAGE_PIXELS
    assert read_image(small).shape == (3, 20, 30)
    monkeypatch.setenv("BICORSEG_MAX_PIXELS", "599")
    for path in (small, tif):
        # the limit's own message, not wrapped in the reader's "unreadable" (both are ValueErrors)
        with pytest.raises(
            InputError, match=rf"^{path}: 30 x 20 pixels is more than the limit of 599 pixels"
        ):
            read_image(path)
    monkeypatch.setenv("BICORSEG_MAX_PIXELS", "600")
    assert read_image(small).shape == read_image(tif).shape == (3, 20, 30)
    monkeypatch.setenv("BICORSEG_MAX_PIXELS", "lots")
    with pytest.raises(BicorsegError, match=r"^BICORSEG_MAX_PIXELS must be a positive number"):
        read_image(small)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit and pillow_limit is not None
    # above Pillow's own limit (179 Mpx) but under bicorseg's: the header passes, the pixels are read
    monkeypatch.delenv("BICORSEG_MAX_PIXELS")
    big = _png_declaring(tmp_path / "big.png", 20_000, 10_000)
    with pytest.raises(InputError, match=r"big\.png: unreadable or truncated image"):
        read_image(big)  # the pixel data is missing: Pillow gets past the header and stops there


# ---------------------------------------------------------------------------------------------------
# archives: bombs, zip-slip, nesting; symbolic link loops


def _loveda_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _png_bytes(value: int = 1) -> bytes:
    import io

    stream = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(stream, format="PNG")
    return stream.getvalue()


def _declare_size(archive: Path, member: str, size: int) -> None:
    """Patch the central directory so that ``member`` declares ``size`` uncompressed bytes."""
    data = bytearray(archive.read_bytes())
    entry = data.find(b"PK\x01\x02")
    while entry >= 0:
        name_length = struct.unpack_from("<H", data, entry + 28)[0]
        if data[entry + 46 : entry + 46 + name_length].decode() == member:
            struct.pack_into("<I", data, entry + 24, size)
            break
        entry = data.find(b"PK\x01\x02", entry + 4)
    archive.write_bytes(bytes(data))


def _prepare_refused(capsys, source: Path, out: Path) -> str:
    return refused(capsys, "prepare", "loveda", "--source", source, "--output", out, "--no-progress")


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_an_archive_member_declaring_4_gib_is_refused_before_reading(tmp_path, capsys) -> None:
    archive = _loveda_zip(tmp_path / "LoveDA.zip", {"Train/Rural/images_png/0.png": _png_bytes(),
                                                     "Train/Rural/masks_png/0.png": _png_bytes()})  # fmt: skip
    _declare_size(archive, "Train/Rural/images_png/0.png", 0xFFFFFFF0)
    line = _prepare_refused(capsys, archive, tmp_path / "out")
    assert "LoveDA.zip!Train/Rural/images_png/0.png: 4 GiB is more than the 2 GiB" in line, line
    assert _files_under(tmp_path / "out") == []


def test_archives_nested_too_deep_are_refused_and_their_unpacked_copies_removed(tmp_path, capsys) -> None:
    inner = {"Train/Rural/images_png/0.png": _png_bytes(), "Train/Rural/masks_png/0.png": _png_bytes()}
    level = _loveda_zip(tmp_path / "nest" / "Train.zip", inner)
    for depth in range(4):  # Train.zip in Train.zip in ... : the official name, so each one is unpacked
        level = _loveda_zip(tmp_path / "nest" / f"{depth}" / "Train.zip", {"Train.zip": level.read_bytes()})
    out = tmp_path / "out"
    line = _prepare_refused(capsys, level, out)
    assert "archives nested more than 3 deep" in line, line
    assert _files_under(out) == []  # no .bicorseg-prepare/archives/<depth>__Train.zip or .tmp left


def test_zip_slip_members_are_refused(tmp_path, capsys) -> None:
    for name in ("../../escaped.png", "/abs/escaped.png", "Train/../../escaped.png", "..\\..\\escaped.png"):
        archive = _loveda_zip(tmp_path / "LoveDA.zip", {name: _png_bytes()})
        line = _prepare_refused(capsys, archive, tmp_path / "out")
        assert f"LoveDA.zip: member {name!r} has an absolute path or climbs out with '..'" in line, line
    assert not list(tmp_path.parent.glob("escaped.png")) and not list(tmp_path.rglob("escaped.png"))


def test_a_symbolic_link_loop_in_a_source_folder_is_reported(tmp_path, capsys) -> None:
    rural = tmp_path / "LoveDA" / "Train" / "Rural"
    (rural / "images_png").mkdir(parents=True)
    (rural / "images_png" / "0.png").write_bytes(_png_bytes())
    os.symlink(tmp_path / "LoveDA" / "Train", rural / "again")  # Rural/again -> Train, which holds Rural
    line = _prepare_refused(capsys, tmp_path / "LoveDA", tmp_path / "out")
    assert f"{rural / 'again'}: symbolic link loop (it points back to" in line, line


# ---------------------------------------------------------------------------------------------------
# YAML files and options


LATIN1 = "model:\n  backbone: convnext_nano\n# caf\xe9\n".encode("latin-1")


def test_yaml_that_is_not_utf8_is_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(LATIN1)
    offset = LATIN1.index(b"\xe9")
    message = f"latin1.yaml: unreadable {{}} (not UTF-8 text: byte 0xe9 at offset {offset}; save it as UTF-8)"
    assert message.format("config file") in refused(
        capsys, "train", "--config", bad, "--output", tmp_path / "r"
    )
    assert message.format("option file") in refused(capsys, "prepare", "loveda", "--config", bad)
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / folder / "a.png")
    line = refused(capsys, "evaluate", "--checkpoint", tiny_checkpoint(tmp_path / "m.ckpt"), "--dataset", "folder",
                   "--root", tmp_path, "--split", "all", "--class-table", bad)  # fmt: skip
    assert message.format("class table") in line
    assert not (tmp_path / "r").exists()


CLASS_TABLE_CASES = [
    ("classes: [{name: a, value: 0.5}, {name: b, value: 1}]", r"classes\[0\]\.value: expected an integer, got 0\.5"),
    ("classes: [{name: a, value: true}, {name: b, value: 1}]", r"classes\[0\]\.value: expected an integer, got True"),
    ("classes: [{name: [a], value: 0}, {name: b, value: 1}]", r"classes\[0\]\.name: expected a string"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nignore_values: [null]", r"ignore_values\[0\]: must not be null"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nignore_values: 7", r"ignore_values: expected a list"),
    ("classes: [{name: a, colour: '#000000'}, {name: b, colour: '#000001'}]\nignore_colours: 3",
     r"ignore_colours: expected a list"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nbands: [r]\nmean: [x]\nstd: [1]",
     r"mean\[0\]: expected a number, got 'x'"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nbands: [r]\nmean: [.inf]\nstd: [1]",
     r"mean\[0\]: must be a finite number, got inf"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nbands: [r]\nmean: [1]\nstd: [0]",
     r"std\[0\]: must be positive"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nname: {x: 1}", r"name: expected a string"),
    ("- just\n- a list", r"class table must be a mapping of keys, not a list"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), CLASS_TABLE_CASES)
def test_class_tables_with_wrong_types_name_the_key(text, message, tmp_path) -> None:
    from bicorseg.data.folder import ClassTable
    from bicorseg.errors import ConfigError

    path = tmp_path / "classes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"classes\.yaml: " + message):
        ClassTable.from_yaml(path)


OPTION_CASES = [
    (["train", "--config", "tiny-test", "--trainer.devices", "0"], "trainer.devices: give at least 1 device"),
    (["train", "--config", "tiny-test", "--trainer.devices", "[0, 0]"], "trainer.devices: give a non-empty list"),
    (["train", "--config", "tiny-test", "--optimizer.lr", ".inf"], "optimizer.lr: must be a finite number"),
    (["train", "--config", "tiny-test", "--model.tau=-.inf"], "model.tau: must be a finite number"),
    (["train", "--config", "tiny-test", "--trainer.gradient_clip_val", ".nan"],
     "trainer.gradient_clip_val: must be a finite number"),
    (["evaluate", "--checkpoint", "{ckpt}", "--dataset", "synthetic", "--limit", "-1"],
     "--limit must be at least 1 sample, got -1"),
    (["evaluate", "--checkpoint", "{ckpt}", "--dataset", "synthetic", "--num-workers", "-2"],
     "--num-workers must not be negative"),
    (["prepare", "loveda", "--source", "{tmp}", "--output", "{tmp}/p", "--patch-size", "1"],
     "--patch-size: must be at least 32 pixels, not 1"),
    (["prepare", "loveda", "--config", "{tmp}/options.yaml"], "options.yaml: patch_size: expected an integer, got 'big'"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), OPTION_CASES, ids=[" ".join(c[0][:4]) for c in OPTION_CASES])
def test_out_of_range_options_name_the_option(args, message, tmp_path, capsys, checkpoint) -> None:
    (tmp_path / "options.yaml").write_text("source: x\npatch_size: big\n")
    args = [a.format(ckpt=checkpoint, tmp=tmp_path) for a in args]
    if args[0] == "train":
        args += ["--output", str(tmp_path / "run")]
    assert message in refused(capsys, *args)
    assert not (tmp_path / "run").exists() and not (tmp_path / "p").exists()


# ---------------------------------------------------------------------------------------------------
# pretrained weights without network access


@pytest.mark.slow
def test_pretrained_imagenet_without_network_says_what_to_run(tmp_path, capsys, monkeypatch) -> None:
    """The real download path: an empty torch cache and an unreachable proxy (as on a machine offline)."""
    cache = tmp_path / "torch_home"
    cache.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(cache))
    for key in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(key, "http://127.0.0.1:9")  # the discard port: nothing listens there
    for key in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)
    line = refused(capsys, "train", "--config", "tiny-test", "--model.backbone", "convnext_tiny",
                   "--model.pretrained", "imagenet", "--output", tmp_path / "run")  # fmt: skip
    assert (
        "the weights of backbone convnext_tiny are not cached and cannot be downloaded from https://download.pytorch.org"
        in line
    )
    assert (
        "run 'bicorseg weights download convnext_tiny', carry the file it names (convnext_tiny-983f1562.pth)"
        in line
    )
    assert "set pretrained to a local weights file" in line
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no partial download left


def test_nested_archive_size_and_total_size_limits(tmp_path) -> None:
    """The two limits the default test archives cannot reach, with small limits (same code path)."""
    from bicorseg.data.sources import ArchiveLimits, source_files

    inner = _loveda_zip(tmp_path / "inner" / "Train.zip", {"Train/Rural/images_png/0.png": _png_bytes()})
    outer = _loveda_zip(tmp_path / "LoveDA.zip", {"Train.zip": inner.read_bytes(), "notes.txt": b"x" * 500})
    scratch = tmp_path / "scratch"
    size = inner.stat().st_size
    with pytest.raises(
        InputError, match=rf"LoveDA\.zip!Train\.zip: {size} bytes is more than the {size - 1} bytes"
    ):
        with source_files([outer], scratch, ["Train.zip"], ArchiveLimits(archive_bytes=size - 1)):
            pass
    with pytest.raises(
        InputError, match=r"LoveDA\.zip: the archives of the source unpack to more than 100 bytes"
    ):
        with source_files([outer], scratch, ["Train.zip"], ArchiveLimits(total_bytes=100)):
            pass
    assert list(scratch.iterdir()) == []
    with source_files([outer], scratch, ["Train.zip"]) as files:
        assert sorted(f.rel for f in files) == ["Train/Rural/images_png/0.png", "notes.txt"]
