"""Test-time augmentation: pass lists (the publication's per dataset), exact inverses, merges, equivariance."""

from __future__ import annotations

import math

import pytest
import torch

from bicorseg.checkpoint import load_checkpoint, save_checkpoint
from bicorseg.data import get_spec
from bicorseg.errors import ConfigError
from bicorseg.inference.tta import (
    TTA_MODES,
    TTAPass,
    describe_tta,
    parse_scales,
    resolve_tta,
    tta_name,
    tta_passes,
    with_tta,
)
from bicorseg.models import BiCoRSeg
from bicorseg.spec import TTASpec
from tests.helpers.inference import pixel_model
from tests.helpers.models import tiny_config

VAIHINGEN, POTSDAM, LOVEDA = (get_spec(name) for name in ("vaihingen", "potsdam", "loveda"))


@pytest.mark.parametrize(
    "mode, dataset, count",
    [("none", None, 1), ("lr", None, 4), ("d4", None, 8), ("paper", VAIHINGEN, 40), ("paper", POTSDAM, 4),
     ("paper", LOVEDA, 8)],
)  # fmt: skip
def test_pass_counts_and_distinct_passes(mode: str, dataset, count: int) -> None:
    passes = tta_passes(resolve_tta(mode, dataset))
    assert len(passes) == count == len(set(passes))
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    images = {tuple(p.forward(x).flatten().tolist()) + tuple(p.forward(x).shape) for p in passes}
    assert len(images) == count  # no two passes show the model the same input


def test_the_publications_pass_lists() -> None:
    # read from the original test scripts: ttach Compose of these transforms, product in this order
    scales = (0.5, 0.75, 1.0, 1.25, 1.5)
    expected = [
        TTAPass(h, v, k, s) for h in (False, True) for v in (False, True) for k in (0, 1) for s in scales
    ]
    assert tta_passes(resolve_tta("paper", VAIHINGEN)) == expected
    assert tta_passes(resolve_tta("paper", POTSDAM)) == [
        TTAPass(h, v) for h in (False, True) for v in (False, True)
    ]
    loveda = [TTAPass(h, False, 0, s) for h in (False, True) for s in (0.75, 1.0, 1.25, 1.5)]
    assert tta_passes(resolve_tta("paper", LOVEDA)) == loveda
    for spec in (VAIHINGEN, POTSDAM, LOVEDA):
        assert resolve_tta("paper", spec).merge == "logits"
    # lr is the product of both flips: identity, h, v and hv (the combined flip too)
    assert tta_passes("lr") == [TTAPass(), TTAPass(vflip=True), TTAPass(hflip=True), TTAPass(True, True)]
    assert describe_tta(resolve_tta("paper", VAIHINGEN)) == (
        "horizontal flip x vertical flip x rot90 {0, 90} x scales {0.5, 0.75, 1, 1.25, 1.5} (bicubic) "
        "= 40 passes, logits averaged, softmax after"
    )
    assert tta_name("paper", [None, LOVEDA]) == "paper (loveda)" and tta_name("lr", VAIHINGEN) == "lr"


def test_flip_and_rotation_passes_invert_exactly() -> None:
    x = torch.randn(2, 3, 5, 7)
    for one in tta_passes("d4") + tta_passes("lr"):
        assert torch.equal(one.inverse(one.forward(x), (5, 7)), x)
    scaled = TTAPass(True, False, 1, 1.25)
    assert scaled.forward(x).shape[-2:] == (8, 6)  # turned to 7 x 5, then int(1.25 * side)
    assert scaled.inverse(scaled.forward(x), (5, 7)).shape == x.shape


@pytest.mark.parametrize("mode", [m for m in TTA_MODES if m != "paper"])
def test_per_pixel_model_is_unchanged_by_flips_and_turns(mode: str) -> None:
    model = pixel_model(3)
    x = torch.randn(2, 3, 20, 30)
    with torch.no_grad():
        expected = torch.softmax(model(x), 1)
        for merge in ("probs", "logits"):
            got = with_tta(model, resolve_tta(mode, merge=merge))(x)
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def _smooth_image(height: int = 64, width: int = 96) -> torch.Tensor:
    rows = torch.linspace(0, 1, height)[:, None]
    cols = torch.linspace(0, 1, width)[None, :]
    bands = [torch.sin(2 * math.pi * rows) * torch.cos(math.pi * cols), rows + 0.5 * cols, cols * cols - rows]
    return torch.stack(bands)[None]


@pytest.mark.parametrize("dataset", [VAIHINGEN, POTSDAM, LOVEDA])
def test_model_equivariant_to_the_transforms_gives_the_untransformed_output(dataset) -> None:
    # A linear per-pixel model commutes with flips, turns and (linear) bicubic resizing; on a smooth
    # image the resize round trip is nearly exact, so the merged output is the plain one.
    model = pixel_model(3, seed=2)
    with torch.no_grad():
        model.weight.mul_(0.3)
    x = _smooth_image()
    with torch.no_grad():
        expected = torch.softmax(model(x), 1)
        got = with_tta(model, resolve_tta("paper", dataset))(x)
    assert (got - expected).abs().max() < 5e-3

    # the same merge for a model that is not equivariant differs: the check above can fail
    def position_model(batch: torch.Tensor) -> torch.Tensor:
        cols = torch.arange(batch.shape[-1], dtype=torch.float32).expand(batch.shape[0], 1, *batch.shape[-2:])
        return torch.cat([cols, -cols, 0 * cols, 0 * cols], 1) * 0.05

    with torch.no_grad():
        moved = with_tta(position_model, resolve_tta("paper", dataset))(x)
    assert (moved - torch.softmax(position_model(x), 1)).abs().max() > 0.1


def test_merges_average_logits_or_probabilities() -> None:
    def position_model(x: torch.Tensor) -> torch.Tensor:  # not flip-equivariant: depends on the column
        cols = torch.arange(x.shape[-1], dtype=torch.float32).expand(x.shape[0], 1, x.shape[-2], -1)
        return torch.cat([cols, -cols], 1) * 0.1

    x = torch.zeros(1, 1, 4, 6)
    logits = position_model(x)
    flipped = logits.flip(-1)
    # lr: identity and v see the plain columns, h and hv the flipped ones
    probs = with_tta(position_model, "lr")(x)
    torch.testing.assert_close(probs, (2 * torch.softmax(logits, 1) + 2 * torch.softmax(flipped, 1)) / 4)
    merged = with_tta(position_model, resolve_tta("lr", merge="logits"))(x)
    torch.testing.assert_close(merged, torch.softmax((2 * logits + 2 * flipped) / 4, 1))
    assert not torch.allclose(probs, merged)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 4, 6))


def test_scales_for_any_mode_and_the_paper_mode_is_fixed() -> None:
    spec = resolve_tta("d4", scales=parse_scales("0.75,1,1.25"))
    assert len(tta_passes(spec)) == 24 and spec.merge == "probs"
    assert len(tta_passes(resolve_tta("none", scales=(0.5, 1.0)))) == 2
    with pytest.raises(ConfigError, match="tta_scales"):
        parse_scales("0.75,big")
    with pytest.raises(ConfigError, match="tta_scales"):
        parse_scales("0,1")
    for scales in ((0.0, 1.0), (1.0, 1.0), (9.0,)):  # given as numbers, checked the same way
        with pytest.raises(ConfigError, match=r"tta_scales: give distinct factors in \(0, 8\]"):
            resolve_tta("d4", scales=scales)
    with pytest.raises(ConfigError, match="fixes its passes"):
        resolve_tta("paper", VAIHINGEN, scales=(1.0, 1.5))
    with pytest.raises(ConfigError, match="tta: must be one of none, lr, d4, paper"):
        with_tta(pixel_model(3), "d8")


def test_paper_passes_come_from_the_dataset_facts_not_its_name(tmp_path) -> None:
    from dataclasses import replace

    with pytest.raises(ConfigError, match="carries no dataset facts"):
        resolve_tta("paper", None)
    renamed = replace(VAIHINGEN, name="my-vaihingen-copy")
    assert resolve_tta("paper", renamed) == VAIHINGEN.paper_tta  # the declaration, whatever the name
    bare = replace(VAIHINGEN, paper_tta=None)
    with pytest.raises(ConfigError, match="'vaihingen' declares no test-time augmentation"):
        resolve_tta("paper", bare)
    custom = TTASpec(vflip=True, scales=(1.0, 2.0), merge="logits")
    assert resolve_tta("paper", [bare, replace(bare, paper_tta=custom)]) == custom
    # a checkpoint carries the declaration (this is what predict, evaluate and submit read)
    model = BiCoRSeg(tiny_config(num_classes=6), dataset=VAIHINGEN)
    stored = load_checkpoint(save_checkpoint(model, tmp_path / "model.ckpt")).dataset
    assert stored.paper_tta == VAIHINGEN.paper_tta and stored.paper_tta.num_passes == 40


def test_predict_takes_the_checkpoints_paper_passes_and_records_them(tmp_path) -> None:
    import rasterio

    from bicorseg.inference.predictor import ModelInfo, PredictOptions, Predictor
    from tests.helpers.inference import random_image, write_geotiff

    info = ModelInfo(6, 3, LOVEDA, "model.ckpt")
    model = pixel_model(3, classes=7)
    predictor = Predictor(model, ModelInfo(7, 3, LOVEDA, "model.ckpt"), PredictOptions(tile=64, tta="paper"))
    assert predictor.tta == LOVEDA.paper_tta
    raster = write_geotiff(tmp_path / "scene.tif", random_image(3, 80, 90))
    result = predictor.predict_file(raster, tmp_path / "out")
    with rasterio.open(result.outputs["class"]) as out:
        tags = out.tags()
    assert tags["bicorseg_tta"] == describe_tta(LOVEDA.paper_tta)
    assert "tta=paper (loveda)" in tags["bicorseg_settings"]
    with pytest.raises(ConfigError, match="fixes its passes"):
        Predictor(model, info, PredictOptions(tta="paper", tta_scales=(1.0, 2.0)))
