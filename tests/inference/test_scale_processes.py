"""Real processes: a shard killed with SIGKILL and rerun, and worker processes over the units.

The reference is one process with one torch thread, as each process here uses (the bytes of a
block depend on the thread count of the process that computes it, not on the partition).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bicorseg.inference import PredictOptions, predict_files
from bicorseg.inference.units import PARTS_FOLDER
from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff


def _command(inputs: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bicorseg.cli.main", "predict", str(inputs), "--checkpoint", str(checkpoint),
            "--output", str(out), "--tile", "128", "--block", "128", "--probabilities", "float32", "--precision", "fp32",
            *extra]  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _reference(inputs: Path, checkpoint: Path, out: Path) -> dict[str, bytes]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = PredictOptions(tile=128, overlap=0.25, probabilities="float32", block=128)
        results = predict_files([inputs], checkpoint, out, options)
    finally:
        torch.set_num_threads(previous)
    return {p.name: p.read_bytes() for r in results for p in r.outputs.values()}


def _outputs(folder: Path, names) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


@pytest.mark.slow
def test_a_killed_shard_rerun_computes_only_the_missing_units(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    inputs = tmp_path / "in"
    write_geotiff(inputs / "big.tif", random_image(3, 1024, 896, seed=3), nodata=0)
    out = tmp_path / "out"
    command = _command(inputs, checkpoint, out, "--shard", "0/1")
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parts = out / PARTS_FOLDER / "big"
    deadline = time.monotonic() + 240
    while len(list(parts.glob("*_class.tif"))) < 3:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no part was written in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = {p.name: p.stat().st_mtime_ns for p in parts.glob("*_class.tif")}
    total = 8 * 7  # 1024 x 896 in blocks of 128
    assert 3 <= len(done) < total, "the shard ended before it could be killed"
    assert not (out / "big.tif").exists()

    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    found = re.search(r"computed (\d+) unit\(s\) into .*, (\d+) already there", rerun.stderr)
    assert found, rerun.stderr
    assert int(found[2]) >= len(done) and int(found[1]) + int(found[2]) == total
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("*_class.tif")}
    assert all(kept[name] == stamp for name, stamp in done.items())  # finished parts were not redone
    assert [t.name for t in parts.iterdir() if t.name.startswith(".")] == []  # the killed run's temporaries

    mosaic = subprocess.run([sys.executable, "-m", "bicorseg.cli.main", "mosaic", str(out)], env=ENV,
                            capture_output=True, text=True)  # fmt: skip
    assert mosaic.returncode == 0, mosaic.stderr
    expected = _reference(inputs, checkpoint, tmp_path / "one")
    assert _outputs(out, expected) == expected
    assert not (out / PARTS_FOLDER).exists()


@pytest.mark.slow
def test_two_worker_processes_give_the_bytes_of_one_process(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    inputs = tmp_path / "in"
    write_geotiff(inputs / "a.tif", random_image(3, 300, 420, seed=4), nodata=0)
    write_geotiff(inputs / "b.tif", random_image(3, 200, 130, seed=5), nodata=0)
    out = tmp_path / "out"
    done = subprocess.run(_command(inputs, checkpoint, out, "--devices", "2"), env=ENV, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "predicted 2 file(s)" in done.stderr
    expected = _reference(inputs, checkpoint, tmp_path / "one")
    assert _outputs(out, expected) == expected
    assert sorted(p.name for p in out.iterdir()) == [
        "a.qml",
        "a.tif",
        "a.tif.aux.xml",
        "a_prob.tif",
        "b.qml",
        "b.tif",
        "b.tif.aux.xml",
        "b_prob.tif",
    ]
