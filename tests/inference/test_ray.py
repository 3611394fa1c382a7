"""The Ray executor on a real local Ray cluster (2 CPUs, one per session): the same bytes, parts, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inference_helpers import random_image, tiny_checkpoint, write_geotiff

from bicorseg.cli.main import main
from bicorseg.errors import InputError
from bicorseg.inference import PredictOptions, predict_files
from bicorseg.inference.units import PARTS_FOLDER

pytestmark = pytest.mark.slow


def _options() -> PredictOptions:
    return PredictOptions(tile=64, overlap=0.25, probabilities="float32", confidence=True, block=96)


def test_ray_actors_give_the_bytes_of_one_process(tmp_path: Path, ray_cluster) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    write_geotiff(tmp_path / "in" / "a.tif", random_image(3, 200, 230, seed=1), nodata=0)
    write_geotiff(tmp_path / "in" / "b.tif", random_image(3, 100, 90, seed=2), nodata=0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors' thread count
    try:
        reference = predict_files([tmp_path / "in"], checkpoint, tmp_path / "one", _options())
    finally:
        torch.set_num_threads(previous)
    results = predict_files(
        [tmp_path / "in"], checkpoint, tmp_path / "ray", _options(), workers=2, executor="ray"
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
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.qml", "a.tif"]
    # an input that breaks while the actors read it: the actor's one-line error reaches the user
    source.write_bytes(source.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"a\.tif"):
        predict_files([source], checkpoint, tmp_path / "out2", _options(), workers=2, executor="ray")
