"""The Ray executor on a real local Ray cluster (2 CPUs, one per session): the same bytes, parts, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bicorseg.cli.main import main
from bicorseg.errors import InputError
from bicorseg.inference import PredictOptions, predict_files
from bicorseg.inference.units import PARTS_FOLDER
from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[2] / "src"


def _options() -> PredictOptions:
    return PredictOptions(tile=64, overlap=0.25, probabilities="float32", confidence=True, block=96)


def test_ray_actors_give_the_bytes_of_one_process(tmp_path: Path, ray_cluster) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    write_geotiff(tmp_path / "in" / "a.tif", random_image(3, 200, 230, seed=1), nodata=0)
    write_geotiff(tmp_path / "in" / "b.tif", random_image(3, 100, 90, seed=2), nodata=0)
    # this process's thread count, which the run records and every actor takes
    reference = predict_files([tmp_path / "in"], checkpoint, tmp_path / "one", _options())
    results = predict_files(
        [tmp_path / "in"], checkpoint, tmp_path / "ray", _options(), devices=2, executor="ray"
    )
    assert [r.computed for r in results] == [3 * 3, 2 * 1] and all(
        r.assembled for r in results
    )  # blocks of 96
    for ref in reference:
        for kind, path in ref.outputs.items():
            assert (tmp_path / "ray" / path.name).read_bytes() == path.read_bytes(), kind
    assert not (tmp_path / "ray" / PARTS_FOLDER).exists()
    assert ray_cluster.is_initialized()  # a cluster the caller started is left running


def test_ray_run_through_the_command_line_and_errors_are_one_line(
    tmp_path: Path, ray_cluster, capsys
) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    source = write_geotiff(tmp_path / "in" / "a.tif", random_image(3, 120, 100, seed=3), nodata=0)
    args = ["predict", str(source), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"),
            "--tile", "64", "--block", "64", "--executor", "ray", "--devices", "2"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert "predicted 1 file(s)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.qml", "a.tif", "a.tif.aux.xml"]
    # an input that breaks while the actors read it: the actor's one-line error reaches the user
    source.write_bytes(source.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"a\.tif"):
        predict_files([source], checkpoint, tmp_path / "out2", _options(), devices=2, executor="ray")


def test_a_cluster_started_for_the_run_gives_the_signal_handlers_back(tmp_path: Path) -> None:
    """Ray's init replaces the driver's SIGTERM handler and keeps it after shutdown; the run puts it back."""
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    write_geotiff(tmp_path / "in" / "a.tif", random_image(3, 80, 70, seed=4), nodata=0)
    script = f"""
import signal
import ray
from bicorseg.inference import PredictOptions, predict_files
def mine(signum, frame):
    pass
signal.signal(signal.SIGTERM, mine)
options = PredictOptions(tile=64, overlap=0.25, block=64)
predict_files([{str(tmp_path / "in")!r}], {str(checkpoint)!r}, {str(tmp_path / "out")!r}, options,
              devices=1, executor="ray")
print(signal.getsignal(signal.SIGTERM) is mine, signal.getsignal(signal.SIGINT) is signal.default_int_handler,
      ray.is_initialized())
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(  # SIGINT not inherited as ignored (a shell's background job ignores it)
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "False"]
    assert (tmp_path / "out" / "a.tif").exists()
