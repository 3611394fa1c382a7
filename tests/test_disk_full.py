"""A full output disk gives a clear error and never a corrupt or partial file.

The disk is a real, small tmpfs mounted for the test (root only; skipped elsewhere with a reason,
a failure in CI).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from bicorseg.checkpoint import load_model, save_checkpoint
from bicorseg.errors import BicorsegError
from bicorseg.models import BiCoRSeg
from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff
from tests.helpers.models import tiny_config


@pytest.fixture
def small_disk(tmp_path) -> Path:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or 'not root'})")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: Path, leave: int = 0) -> None:
    """Fill the disk up to ``leave`` free bytes."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / "ballast", "wb") as stream:
        stream.write(b"\0" * max(free - leave, 0))


@pytest.mark.slow
def test_checkpoint_on_a_full_disk_fails_cleanly_and_keeps_the_old_one(small_disk) -> None:
    model = BiCoRSeg(tiny_config(width=16))
    path = save_checkpoint(model, small_disk / "model.ckpt")  # fits: the good checkpoint
    before = path.read_bytes()
    bigger = BiCoRSeg(tiny_config(width=64))
    _fill(small_disk, leave=4096)
    with pytest.raises(BicorsegError, match=r"cannot write .*model\.ckpt.*(No space left|space)"):
        save_checkpoint(bigger, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast", "model.ckpt"]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), model.eval()(x))


@pytest.mark.slow
def test_predict_on_a_full_disk_fails_cleanly(small_disk, tmp_path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    source = write_geotiff(tmp_path / "scene.tif", random_image(3, 300, 300))
    _fill(small_disk, leave=20_000)
    result = subprocess.run(
        [sys.executable, "-m", "bicorseg.cli.main", "predict", str(source), "--checkpoint", str(checkpoint),
         "--output", str(small_disk / "out"), "--quiet", "--probabilities", "float32"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    # libtiff may print its own notes first; ours is the last line, and the only one of ours
    lines = result.stderr.strip().splitlines()
    assert sum(line.startswith("bicorseg") for line in lines) == 1, result.stderr
    assert re.fullmatch(
        r"bicorseg predict: error: cannot write .*scene\S*\.tif: the disk is full .*", lines[-1]
    )
    leftovers = (
        sorted(p.name for p in (small_disk / "out").iterdir()) if (small_disk / "out").exists() else []
    )
    assert leftovers == []


@pytest.mark.slow
def test_prepare_on_a_full_disk_is_one_line_keeps_whole_files_and_a_rerun_continues(
    small_disk, tmp_path
) -> None:
    from bicorseg.atomic import find_temps
    from tests.helpers.data import load_generator

    release = load_generator().make_vaihingen(None, tmp_path / "release", (64, 80), archives=True)
    out = small_disk / "out"
    command = [sys.executable, "-m", "bicorseg.cli.main", "prepare", "vaihingen", "--source", str(release),
               "--output", str(out), "--patch-size", "64", "--no-progress"]  # fmt: skip
    _fill(small_disk, leave=300_000)  # room for a few tiles, not for all of them
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert sum(line.startswith("bicorseg") for line in lines) == 1, result.stderr
    assert re.fullmatch(
        rf"bicorseg prepare: error: cannot write {re.escape(str(out))}: the disk is full \(\d+ KiB free\); "
        r"the finished tiles are kept: rerun prepare to continue",
        lines[-1],
    ), lines[-1]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in written) and not (out / "manifest.json").exists()
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert [
        t.path for folder in folders for t in find_temps(folder)
    ] == []  # no temporary, no unpacked member
    for path in written:  # every file under a final name is whole
        if path.suffix == ".png":
            Image.open(path).load()

    (small_disk / "ballast").unlink()
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["dataset"] == "vaihingen"
    assert re.search(r"train: 15 tiles -> \d+ files .*; [1-9]\d* already done", result.stdout), result.stdout
