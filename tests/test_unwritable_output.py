"""Every command that writes checks its output location first: one line, exit status 2, nothing created.

The unwritable places are real for root too (the tests run as root, where permission bits do not
stop writes): a read-only tmpfs mounted for the test (or, without the right to mount, a folder
without write permission, which does stop an ordinary user), and a path below a regular file.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bicorseg.atomic import ensure_writable
from bicorseg.cli.main import main
from bicorseg.errors import OutputError
from tests.helpers import require
from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff

TINY_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny-test.yaml")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint, a raster, a folder dataset, a LoveDA-like test folder, a release folder."""
    root = tmp_path_factory.mktemp("inputs")
    files = {"checkpoint": tiny_checkpoint(root / "model.ckpt")}
    files["raster"] = write_geotiff(root / "scene.tif", random_image(3, 64, 64))
    for sub in ("images", "masks"):
        (root / "dataset" / sub).mkdir(parents=True)
    Image.fromarray(random_image(3, 64, 64).transpose(1, 2, 0)).save(root / "dataset" / "images" / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "dataset" / "masks" / "a.png")
    (root / "loveda" / "Urban" / "images_png").mkdir(parents=True)
    Image.fromarray(random_image(3, 64, 64).transpose(1, 2, 0)).save(
        root / "loveda" / "Urban" / "images_png" / "1.png"
    )
    (root / "release").mkdir()
    assert main(["predict", str(files["raster"]), "--checkpoint", files["checkpoint"].as_posix(), "--output",
                 str(root / "predicted"), "--quiet"]) == 0  # fmt: skip
    return files | {"root": root}


def _commands(inputs: dict[str, Path], out: Path) -> dict[str, list[str]]:
    ckpt, root = str(inputs["checkpoint"]), inputs["root"]
    return {
        "predict": ["predict", str(inputs["raster"]), "--checkpoint", ckpt, "--output", str(out / "pred"),
                    "--quiet"],
        "prepare": ["prepare", "vaihingen", "--source", str(root / "release"), "--output", str(out / "data")],
        "train": ["train", "--config", TINY_CONFIG, "--output", str(out / "run")],
        "evaluate": ["evaluate", "--checkpoint", ckpt, "--dataset", "folder", "--root", str(root / "dataset"),
                     "--split", "", "--output", str(out / "metrics.json")],
        "export": ["export", "onnx", "--checkpoint", ckpt, "--tile", "64", "--output", str(out / "model.onnx")],
        "heatmaps": ["heatmaps", str(inputs["raster"]), "--checkpoint", ckpt, "--output", str(out / "heat")],
        "submit": ["submit", "loveda", "--checkpoint", ckpt, "--root", str(root / "loveda"),
                   "--output", str(out / "submission.zip")],
        "demo": ["demo", "--output", str(out / "demo"), "--minutes", "0.3"],
        "convert": ["convert", ckpt, "--output", str(out / "converted.ckpt"), "--num-classes", "4"],
        "vectorize": ["vectorize", str(inputs["raster"]), "--output", str(out / "classes.gpkg")],
        "areas": ["areas", str(inputs["raster"]), "--output", str(out / "areas.json")],
        "report": ["report", str(root / "predicted"), "--output", str(out / "report.html")],
        "chips": ["chips", "--data.images", str(inputs["raster"]), "--data.labels", str(root / "labels.gpkg"),
                  "--data.label_field", "class", "--output", str(out / "chips")],
    }  # fmt: skip


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder nobody can write into, root included (a read-only tmpfs when mounting is allowed)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("root without the right to mount: no folder stops root from writing")
        folder.chmod(0o555)
    yield folder
    if mounted.returncode == 0:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        folder.chmod(0o755)


@pytest.fixture
def below_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file.txt").write_text("a regular file, not a folder")
    return tmp_path / "file.txt"


COMMANDS = ["predict", "prepare", "train", "evaluate", "export", "heatmaps", "submit", "demo", "convert",
            "vectorize", "areas", "report", "chips"]  # fmt: skip


@pytest.mark.parametrize("where", ["read-only", "below-a-file"])
@pytest.mark.parametrize("command", COMMANDS)
def test_an_unwritable_output_is_one_line_before_any_work(
    command: str, where: str, inputs, request, capsys
) -> None:
    if command in ("vectorize", "areas"):
        require("pyogrio")  # the optional extra "vector"
    place = request.getfixturevalue("read_only_folder" if where == "read-only" else "below_a_file")
    before = sorted(p.name for p in place.parent.iterdir())
    argv = _commands(inputs, place)[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    output = argv[argv.index("--output") + 1]
    assert lines[0].startswith(f"bicorseg {command}: error: cannot write {output}"), lines[0]
    reason = "Read-only file system|Permission denied" if where == "read-only" else "is not a folder"
    assert any(word in lines[0] for word in reason.split("|")), lines[0]
    assert sorted(p.name for p in place.parent.iterdir()) == before  # nothing created beside it
    if place.is_dir():
        assert list(place.iterdir()) == []  # nor inside it


def test_ensure_writable_creates_nothing(tmp_path: Path) -> None:
    ensure_writable(tmp_path / "a" / "b" / "c.json")
    ensure_writable(tmp_path / "d" / "e", folder=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "x").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        ensure_writable(tmp_path / "x")
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="it is a file, not a folder"):
        ensure_writable(tmp_path / "f", folder=True)


FILE_COMMANDS = ["evaluate", "export", "submit", "convert", "vectorize", "areas", "report"]


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_an_existing_output_file_is_kept_without_overwrite(
    command: str, inputs, tmp_path: Path, capsys
) -> None:
    if command in ("vectorize", "areas"):
        require("pyogrio")  # the optional extra "vector"
    argv = _commands(inputs, tmp_path)[command]
    output = Path(argv[argv.index("--output") + 1])
    output.write_text("the user's own file\n")
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bicorseg {command}: error: {output}"), lines
    assert "exists" in lines[0] and "--overwrite" in lines[0], lines
    assert output.read_text() == "the user's own file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]  # nothing else written


@pytest.mark.slow
def test_heatmaps_keep_existing_files_without_overwrite(inputs, tmp_path: Path, capsys) -> None:
    argv = _commands(inputs, tmp_path)["heatmaps"]
    figure = tmp_path / "heat" / f"{inputs['raster'].stem}_heatmaps.png"
    figure.parent.mkdir()
    figure.write_text("the user's own file\n")
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bicorseg heatmaps: error: {figure} exists"), lines
    assert "--overwrite" in lines[0] and figure.read_text() == "the user's own file\n"
    assert [p.name for p in figure.parent.iterdir()] == [figure.name]  # nothing else written
    assert main([*argv, "--overwrite"]) == 0
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_evaluate_replaces_an_existing_report_with_overwrite(inputs, tmp_path: Path) -> None:
    report = tmp_path / "metrics.json"
    report.write_text("the user's own file\n")
    assert main([*_commands(inputs, tmp_path)["evaluate"], "--overwrite"]) == 0
    assert "miou" in json.loads(report.read_text())
