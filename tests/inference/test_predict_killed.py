"""A `predict` run over a folder killed with SIGKILL: no partial output, and a rerun finishes the rest."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff
from tests.helpers.processes import cli_subprocess, started, wait_until


def _visible(folder: Path) -> dict[str, float]:
    """The class rasters in ``folder`` (each gets its QGIS style beside it once it is complete)."""
    return {
        p.name: p.stat().st_mtime
        for p in folder.iterdir()
        if p.suffix == ".tif" and not p.name.startswith(".")
    }


@pytest.mark.slow
def test_kill_then_rerun_completes_and_skips_finished_files(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    inputs = tmp_path / "rasters"
    for index in range(4):
        write_geotiff(inputs / f"r{index}.tif", random_image(3, 700, 700, seed=index))
    out = tmp_path / "out"
    command = ["predict", inputs, "--checkpoint", checkpoint, "--output", out, "--tile", "256", "--quiet"]
    with started(*command) as process:
        # the first file is finished and the second is being written
        wait_until(process, lambda: out.exists() and bool(_visible(out)), "the first file was finished", 120)
        process.send_signal(signal.SIGKILL)
        process.wait()

    finished = _visible(out)
    assert 1 <= len(finished) < 4
    for name in finished:  # every visible output is complete and readable
        with rasterio.open(out / name) as done:
            assert (done.width, done.height) == (700, 700)
            assert done.read(1).max() < 4

    rerun = cli_subprocess(*command, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    after = _visible(out)
    assert sorted(after) == [f"r{i}.tif" for i in range(4)]
    assert all(after[name] == mtime for name, mtime in finished.items())  # skipped, not redone
    assert sorted(p.name for p in out.glob("*.qml")) == [f"r{i}.qml" for i in range(4)]  # styles completed
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # stale temporaries removed
    with rasterio.open(out / "r3.tif") as last:
        assert np.isin(last.read(1), [0, 1, 2, 3]).all()
