"""Partitioned runs never lose the user's files, trust nothing unchecked, and fail in one line.

Real GeoTIFFs, real shards, parts, mosaics and reports; the user's own files beside the outputs
must survive whatever the inputs are named and whatever a plan or a tag says.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from bicorseg.cli.main import main
from bicorseg.inference.units import PARTS_FOLDER, PartStore
from bicorseg.report.collect import find_items
from tests.helpers.inference import random_image, run, tiny_checkpoint, write_geotiff

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def _user_files(out: Path) -> dict[str, bytes]:
    """The user's own files in the output folder (written before any run)."""
    (out / "mine").mkdir(parents=True)
    (out / "notes.txt").write_text("the user's notes")
    (out / "mine" / "field.csv").write_text("id,crop\n1,wheat\n")
    return _tree(out, ("notes.txt", "mine/field.csv"))


def _tree(out: Path, names) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in names if (out / name).is_file()}


def _one_line(err: str, command: str = "predict") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"bicorseg {command}: error:"), err
    return lines[0]


def _predict(capsys, source: Path | list[Path], checkpoint: Path, out: Path, *extra: str) -> tuple[int, str]:
    sources = source if isinstance(source, list) else [source]
    code, _, err = run(capsys, "predict", *sources, "--checkpoint", checkpoint, "--output", out, "--tile", "64",
                       "--block", "64", "--quiet", *extra)  # fmt: skip
    return code, err


# --- names that could climb out of their folder ----------------------------------------------------


def test_inputs_named_like_folders_keep_the_users_files(tmp_path, checkpoint, capsys) -> None:
    """``...tif`` has the stem ``..``, ``..tif`` the stem ``.``, ``plan.json.tif`` the plan's name."""
    names = ["...tif", "..tif", "plan.json.tif"]
    sources = [
        write_geotiff(tmp_path / "in" / n, random_image(3, 70, 100, seed=i), nodata=0)
        for i, n in enumerate(names)
    ]
    out = tmp_path / "out"
    mine = _user_files(out)
    for i in range(2):
        code, err = _predict(capsys, sources, checkpoint, out, "--probabilities", "--shard", f"{i}/2")
        assert code == 0, err
    assert main(["mosaic", str(out), "--quiet"]) == 0, capsys.readouterr().err
    assert _tree(out, mine) == mine
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "mine",
            "notes.txt",
            *(f"{n[:-4]}{end}" for n in names for end in (".tif", ".tif.aux.xml", "_prob.tif", ".qml")),
        ]
    )
    code, err = _predict(capsys, sources, checkpoint, tmp_path / "one", "--probabilities")
    assert code == 0, err
    for name in names:  # each assembled from its own parts: the bytes of one process
        assert (out / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


TAMPERED = {
    "a stem that climbs": {"stem": "../.."},
    "a stem of ..": {"stem": ".."},
    "a name with a folder": {"name": "../../scene.tif", "stem": "scene"},
    "an absolute name": {"name": "/tmp/scene.tif", "stem": "scene"},
    "two inputs of one name": "duplicate",
}


@pytest.mark.parametrize("change", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_tampered_plan_is_refused_and_removes_nothing(change, tmp_path, checkpoint, capsys) -> None:
    write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 70, 100, seed=1), nodata=0)
    out = tmp_path / "work" / "out"
    mine = _user_files(out)
    beside = tmp_path / "work" / "beside.txt"
    beside.write_text("a file next to the output folder")
    code, err = _predict(capsys, tmp_path / "in" / "scene.tif", checkpoint, out, "--shard", "0/1")
    assert code == 0, err
    plan = out / PARTS_FOLDER / "plan.json"
    data = json.loads(plan.read_text())
    if change == "duplicate":
        data["files"].append(dict(data["files"][0]))
    else:
        data["files"][0].update(change)
    plan.write_text(json.dumps(data))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["mosaic", str(out)]) == 2
    line = _one_line(capsys.readouterr().err, "mosaic")
    assert f"{plan} is not a readable bicorseg plan" in line, line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert _tree(out, mine) == mine and beside.exists()


def test_a_tag_cannot_bring_a_file_from_outside_the_folder_into_the_report(
    tmp_path, checkpoint, capsys
) -> None:
    secret = write_geotiff(tmp_path / "private" / "secret.tif", random_image(3, 40, 50, seed=9))
    source = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 40, 50, seed=1), nodata=0)
    code, err = _predict(capsys, source, checkpoint, tmp_path / "pred")
    assert code == 0, err
    (item,) = find_items(tmp_path / "pred", [tmp_path / "in"])
    assert item.image == source  # the tag names the input: its picture is shown
    for tag in ("../private/secret.tif", str(secret)):
        with rasterio.open(tmp_path / "pred" / "scene.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
            dst.update_tags(bicorseg_input=tag)
        (item,) = find_items(tmp_path / "pred", [tmp_path / "in"])
        assert item.image is None and item.heatmaps == []
        page = tmp_path / f"report{len(tag)}.html"
        assert (
            main(["report", str(tmp_path / "pred"), "--images", str(tmp_path / "in"), "--output", str(page)])
            == 0
        )
        assert "the input image was not found" in page.read_text()


# --- nothing trusted unchecked -----------------------------------------------------------------------


def _shards(capsys, tmp_path: Path, checkpoint: Path, count: int, *extra: str, size=(130, 100)) -> Path:
    write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, *size, seed=3), nodata=0)
    out = tmp_path / "out"
    for i in range(count):
        code, err = _predict(capsys, tmp_path / "in", checkpoint, out, "--probabilities", "--confidence",
                             "--shard", f"{i}/{count}", *extra)  # fmt: skip
        assert code == 0, err
    return out


def test_a_truncated_probability_part_is_computed_again(tmp_path, checkpoint, capsys) -> None:
    out = _shards(capsys, tmp_path, checkpoint, 1)
    part = out / PARTS_FOLDER / "0" / "r001c000_probabilities.tif"
    kept = {p.name: p.stat().st_mtime_ns for p in part.parent.iterdir() if "r001c000" not in p.name}
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    code, err = _predict(capsys, tmp_path / "in", checkpoint, out, "--probabilities", "--confidence", "--shard",
                         "0/1")  # fmt: skip
    assert code == 0, err
    assert {p.name: p.stat().st_mtime_ns for p in part.parent.iterdir() if "r001c000" not in p.name} == kept
    assert main(["mosaic", str(out), "--quiet"]) == 0, capsys.readouterr().err
    code, err = _predict(
        capsys, tmp_path / "in", checkpoint, tmp_path / "one", "--probabilities", "--confidence"
    )
    assert code == 0, err
    for name in ("scene.tif", "scene_prob.tif", "scene_confidence.tif"):
        assert (out / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_mosaic_names_a_damaged_part_and_the_remedy(tmp_path, checkpoint, capsys) -> None:
    # one unit (shard 0's) whose parts are GeoTIFFs of 2 x 2 tiles
    out = _shards(capsys, tmp_path, checkpoint, 2, "--block", "512", size=(300, 290))
    part = out / PARTS_FOLDER / "0" / "r000c000_probabilities.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # parts have no georeferencing
        with rasterio.open(part) as src:  # damaging the first block: the part still opens and ends whole
            assert len(list(src.block_windows(1))) > 1
            offset = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    with open(part, "r+b") as stream:
        stream.seek(offset)
        stream.write(b"\xff" * 64)
    assert main(["mosaic", str(out)]) == 2
    line = _one_line(capsys.readouterr().err, "mosaic")
    assert f"cannot read the part {part} (" in line and "delete it and run shard 0/2 again" in line, line
    assert not (out / "scene.tif").exists()
    part.unlink()  # the remedy the line gives
    code, err = _predict(capsys, tmp_path / "in", checkpoint, out, "--probabilities", "--confidence", "--shard",
                         "0/2", "--block", "512")  # fmt: skip
    assert code == 0 and main(["mosaic", str(out), "--quiet"]) == 0, err
    assert (out / "scene_prob.tif").exists() and not (out / PARTS_FOLDER).exists()


# --- one line, never a traceback ---------------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path: Path):
    """Make a folder read-only for root too (a read-only bind mount of itself); undone at the end."""
    mounted = []

    def make(folder: Path) -> None:
        bound = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
        if bound.returncode != 0:
            if os.geteuid() == 0:
                pytest.skip("root without the right to mount: no folder stops root from writing")
            folder.chmod(0o555)
            mounted.append((folder, False))
            return
        mounted.append((folder, True))
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)

    yield make
    for folder, bind in reversed(mounted):
        if bind:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        else:
            folder.chmod(0o755)


def test_a_shard_into_a_read_only_parts_folder_is_one_line(tmp_path, checkpoint, capsys, read_only) -> None:
    write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 130, 100, seed=3), nodata=0)
    out = tmp_path / "out"
    code, err = _predict(capsys, tmp_path / "in", checkpoint, out, "--shard", "0/2")
    assert code == 0, err
    read_only(out / PARTS_FOLDER)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code, err = _predict(capsys, tmp_path / "in", checkpoint, out, "--shard", "1/2")
    line = _one_line(err)
    assert code == 2 and f"cannot write {out / PARTS_FOLDER}" in line, line
    assert "Read-only file system" in line or "Permission denied" in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert main(["mosaic", str(out)]) == 2  # mosaic removes parts: the same check, the same one line
    assert f"cannot write {out / PARTS_FOLDER}" in _one_line(capsys.readouterr().err, "mosaic")


def test_a_run_that_removes_parts_is_alone_in_its_folder(tmp_path, checkpoint, capsys) -> None:
    """While a shard writes (holding the folder shared), another shard may join, but a run that
    assembles and removes parts (a mosaic, a run without --shard) is refused in one line."""
    write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 130, 100, seed=3), nodata=0)
    out = tmp_path / "out"
    code, err = _predict(capsys, tmp_path / "in", checkpoint, out, "--shard", "0/2")
    assert code == 0, err
    store = PartStore(out)
    with store.lock(shared=True):  # as a shard still running would
        code, err = _predict(capsys, tmp_path / "in", checkpoint, out, "--shard", "1/2")
        assert code == 0, err
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        assert main(["mosaic", str(out)]) == 2
        line = _one_line(capsys.readouterr().err, "mosaic")
        assert f"{out / PARTS_FOLDER} is in use by another run over {out}" in line, line
        code, err = _predict(capsys, tmp_path / "in", checkpoint, out)
        assert code == 2 and "is in use by another run" in _one_line(err)
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert main(["mosaic", str(out), "--quiet"]) == 0
    assert not (out / PARTS_FOLDER).exists() and (out / "scene.tif").exists()


# --- the thread count --------------------------------------------------------------------------------


def test_threads_are_checked_and_recorded(tmp_path, checkpoint, capsys) -> None:
    source = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 40, 50, seed=1), nodata=0)
    code, err = _predict(capsys, source, checkpoint, tmp_path / "zero", "--threads", "0")
    assert code == 2 and _one_line(err).endswith("--threads: must be a whole number of at least 1, got 0")
    assert not (tmp_path / "zero").exists()
    code, err = _predict(capsys, source, checkpoint, tmp_path / "out", "--threads", "2")
    assert code == 0, err
    with rasterio.open(tmp_path / "out" / "scene.tif") as written:
        assert written.tags()["bicorseg_settings"].endswith(" threads=2")
    # another thread count is another setting: the existing output is not taken for this run's
    code, err = _predict(capsys, source, checkpoint, tmp_path / "out", "--threads", "1")
    assert code == 2 and "settings differ (" in _one_line(err) and "threads=1)" in err
