"""Default --tile and --overlap come from the checkpoint: predict, heatmaps and evaluate --whole-tiles."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
import torch
import yaml

from bicorseg.checkpoint import LIGHTNING_PREFIX, load_checkpoint, save_checkpoint
from bicorseg.cli.main import main
from bicorseg.errors import CheckpointError
from bicorseg.models import BiCoRSeg
from bicorseg.models.hub import Tiling, metadata
from tests.helpers.inference import random_image, spec, write_geotiff
from tests.helpers.models import tiny_config


def _model() -> BiCoRSeg:
    torch.manual_seed(0)
    return BiCoRSeg(tiny_config(in_channels=3), dataset=spec(3))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A checkpoint that records its tiling: 96 px, overlap 0.5."""
    return save_checkpoint(
        _model(), tmp_path_factory.mktemp("rec") / "m.ckpt", tiling=Tiling(96, 0.5, "checkpoint")
    )


def _print_config(capsys, checkpoint: Path, *extra: str) -> dict:
    assert main(["predict", "x.tif", "--checkpoint", str(checkpoint), "--output", "out", "--print-config",
                 *extra]) == 0  # fmt: skip
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.slow
def test_where_the_default_tile_comes_from(tmp_path: Path, recorded: Path, capsys) -> None:
    resolved = _print_config(capsys, recorded)
    assert (resolved["tile"], resolved["overlap"], resolved["tiling_from"]) == (96, 0.5, "checkpoint")
    resolved = _print_config(capsys, recorded, "--tile", "128")  # an option wins, the other stays
    assert (resolved["tile"], resolved["overlap"]) == (128, 0.5)
    bare = save_checkpoint(_model(), tmp_path / "bare.ckpt")  # records nothing: 512 / 0.25
    assert load_checkpoint(bare).tiling == Tiling()
    resolved = _print_config(capsys, bare)
    assert (resolved["tile"], resolved["overlap"], resolved["tiling_from"]) == (512, 0.25, "default")


@pytest.mark.parametrize(
    ("tiling", "message"),
    [
        ({"tile": 16, "overlap": 0.25}, r"the tile must be an integer of at least 32, got 16"),
        ({"tile": 96}, r"the overlap must be a number in \[0, 1\), got None"),
        ([96, 0.25], r"the tile must be an integer"),
    ],
)
def test_a_malformed_tiling_record_is_refused_not_replaced(tmp_path: Path, tiling, message) -> None:
    model = _model()
    lightning = {
        "bicorseg": {**metadata(model), "tiling": tiling},
        "state_dict": {LIGHTNING_PREFIX + k: v for k, v in model.state_dict().items()},
    }
    torch.save(lightning, tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match=rf"last\.ckpt has invalid metadata: tiling: {message}"):
        load_checkpoint(tmp_path / "last.ckpt")


@pytest.mark.slow
def test_predict_heatmaps_and_evaluate_use_the_checkpoints_tiling(
    tmp_path: Path, recorded: Path, capsys
) -> None:
    source = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 150, 130, seed=2), nodata=0)
    assert main(["predict", str(source), "--checkpoint", str(recorded), "--output", str(tmp_path / "p"),
                 "--quiet"]) == 0  # fmt: skip
    with rasterio.open(tmp_path / "p" / "scene.tif") as out:
        assert out.tags()["bicorseg_settings"].startswith("tile=96 overlap=0.5 ")

    def heatmaps(folder: str, *extra: str) -> bytes:
        assert main(["heatmaps", str(source), "--checkpoint", str(recorded), "--output", str(tmp_path / folder),
                     *extra]) == 0  # fmt: skip
        return (tmp_path / folder / "scene_heatmaps_layer2.tif").read_bytes()

    default = heatmaps("h")
    assert default == heatmaps("h96", "--tile", "96", "--overlap", "0.5")
    assert default != heatmaps("h512", "--tile", "512")  # one tile: another prediction (the model pools)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(recorded), "--dataset", "synthetic", "--split", "val",
                 "--whole-tiles", "--limit", "1", "--batch-size", "1"]) == 0  # fmt: skip
    assert "whole tiles (sliding windows 96 px, overlap 0.5)" in capsys.readouterr().out
