"""Two `predict` runs writing different inputs into one folder at once: neither removes the other's files."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio

from bicorseg.atomic import find_temps
from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff
from tests.helpers.processes import cli_subprocess, started, wait_until


def _predict(source: Path, checkpoint: Path, out: Path, *extra: str) -> list[object]:
    return [
        "predict",
        source,
        "--checkpoint",
        checkpoint,
        "--output",
        out,
        "--quiet",
        "--probabilities",
        *extra,
    ]


@pytest.mark.slow
def test_two_runs_into_one_folder_both_succeed(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    # "[ab].tif" read as a glob pattern matches "a.tif": the second run must not take the first
    # run's temporary files for its own leftovers
    big = write_geotiff(tmp_path / "big" / "a.tif", random_image(3, 1024, 1024, seed=1))
    small = write_geotiff(tmp_path / "small" / "[ab].tif", random_image(3, 200, 200, seed=2))
    out = tmp_path / "out"
    with started(*_predict(big, checkpoint, out, "--tile", "256", "--tta", "d4")) as first:

        def writing() -> bool:
            return any(t.is_for("a.tif") for t in find_temps(out))

        wait_until(first, writing, "the first run wrote")
        # the first run is paused in the middle of its writes while the second one runs from start
        # to end: their work overlaps whatever the machine's speed
        first.send_signal(signal.SIGSTOP)
        assert writing(), "the first run finished too soon"
        second = cli_subprocess(*_predict(small, checkpoint, out))
        assert second.returncode == 0, second.stderr
        first.send_signal(signal.SIGCONT)
        _, first_err = first.communicate(timeout=600)
        assert first.returncode == 0, first_err
    assert sorted(p.name for p in out.iterdir()) == [
        "[ab].qml", "[ab].tif", "[ab].tif.aux.xml", "[ab]_prob.tif", "a.qml", "a.tif", "a.tif.aux.xml",
        "a_prob.tif"
    ]  # fmt: skip
    for name, size in (("a.tif", 1024), ("[ab].tif", 200)):
        with rasterio.open(out / name) as done:
            assert (done.width, done.height) == (size, size)
            assert np.isin(done.read(1), [0, 1, 2, 3]).all()
