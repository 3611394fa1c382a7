"""Two `predict` runs writing different inputs into one folder at once: neither removes the other's files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from bicorseg.atomic import find_temps
from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff


def _predict(source: Path, checkpoint: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "bicorseg.cli.main", "predict", str(source), "--checkpoint", str(checkpoint),
               "--output", str(out), "--quiet", "--probabilities", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_runs_into_one_folder_both_succeed(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    # "[ab].tif" read as a glob pattern matches "a.tif": the second run must not take the first
    # run's temporary files for its own leftovers
    big = write_geotiff(tmp_path / "big" / "a.tif", random_image(3, 1024, 1024, seed=1))
    small = write_geotiff(tmp_path / "small" / "[ab].tif", random_image(3, 200, 200, seed=2))
    out = tmp_path / "out"
    first = _predict(big, checkpoint, out, "--tile", "256", "--tta", "d4")
    try:
        deadline = time.monotonic() + 240
        while not any(t.is_for("a.tif") for t in find_temps(out)):  # the first run is writing
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run wrote nothing in time"
            time.sleep(0.02)
        # the first run is paused in the middle of its writes while the second one runs from start
        # to end: their work overlaps whatever the machine's speed
        first.send_signal(signal.SIGSTOP)
        assert any(t.is_for("a.tif") for t in find_temps(out)), "the first run finished too soon"
        second = _predict(small, checkpoint, out)
        _, second_err = second.communicate(timeout=300)
        assert second.returncode == 0, second_err
        first.send_signal(signal.SIGCONT)
        _, first_err = first.communicate(timeout=600)
        assert first.returncode == 0, first_err
    finally:
        first.send_signal(signal.SIGCONT)
        first.kill()
        first.wait()
    assert sorted(p.name for p in out.iterdir()) == [
        "[ab].qml", "[ab].tif", "[ab].tif.aux.xml", "[ab]_prob.tif", "a.qml", "a.tif", "a.tif.aux.xml",
        "a_prob.tif"
    ]  # fmt: skip
    for name, size in (("a.tif", 1024), ("[ab].tif", 200)):
        with rasterio.open(out / name) as done:
            assert (done.width, done.height) == (size, size)
            assert np.isin(done.read(1), [0, 1, 2, 3]).all()
