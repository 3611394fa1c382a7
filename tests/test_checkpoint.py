"""Checkpoints: save/load round trip, clear errors, and conversion from the original layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bicorseg import DatasetSpec, load_model, save_checkpoint
from bicorseg.checkpoint import convert_official, load_checkpoint
from bicorseg.cli.main import main
from bicorseg.errors import CheckpointError
from bicorseg.models import BiCoRSeg
from bicorseg.models.hub import metadata
from tests.helpers.cli import refused
from tests.helpers.inference import random_image, spec, write_geotiff
from tests.helpers.models import tiny_config

TOY_DATASET = DatasetSpec(
    name="toy",
    class_names=("a", "b", "c", "d"),
    palette=((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)),
    ignore_index=255,
    eval_classes=(0, 1, 2),
)


def _official_state_dict(model: BiCoRSeg) -> dict[str, torch.Tensor]:
    """Our weights renamed to the original implementation's layout (its ``net.*`` keys), written out by hand."""
    names = {
        "class_norm": "dict_ln",
        "feat_norm": "feat_ln",
        "query": "dict_to_feat",
        "value": "feat_to_dict",
        "gate": "gate_mlp",
        "candidate": "cand_mlp",
        "gamma": "gamma_proj",
        "beta": "beta_proj",
    }
    out = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "backbone":
            new = "encoder.0." + ".".join(parts[2:])
        elif parts[:2] == ["neck", "proj"]:
            new = f"proj_layers.{parts[2]}.proj.{parts[3]}"
        elif key == "neck.fuse.weight":
            new = "feature_aggregator.weight"
        elif key == "class_embed":
            new = "decoder.class_dict.class_embed.weight"
        elif parts[0] == "layers":
            new = f"decoder.bicor_stack.layers.{parts[1]}.{names[parts[2]]}." + ".".join(parts[3:])
        elif parts[0] == "upsampler":
            new = "decoder." + key
        elif parts[0] == "classifier":
            new = "decoder.classifier_proj.weight"
        else:
            new = "decoder." + key
        out["net." + new] = value.clone()
    return out


@pytest.fixture(scope="module")
def official_model() -> BiCoRSeg:
    torch.manual_seed(3)
    return BiCoRSeg(tiny_config(backbone="convnext_tiny", width=32, layers=2, topk_ratio=0.5)).eval()


@pytest.mark.slow
def test_round_trip_keeps_weights_config_and_dataset(tmp_path) -> None:
    model = BiCoRSeg(tiny_config(), dataset=TOY_DATASET).eval()
    path = save_checkpoint(model, tmp_path / "model.ckpt", extra={"epoch": 3})
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config and loaded.dataset == TOY_DATASET
    assert load_checkpoint(path).extra == {"epoch": 3}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]  # no temporary file left


def test_numpy_numbers_and_paths_are_saved_as_plain_data_that_loads(tmp_path) -> None:
    # statistics computed with numpy and options from numpy or pathlib, as a practitioner passes them
    pixels = np.arange(3 * 16, dtype=np.float64).reshape(3, 16)
    dataset = DatasetSpec(
        name="np", class_names=("a", "b", "c", "d"), palette=TOY_DATASET.palette, ignore_index=255,
        eval_classes=(0, 1, 2), bands=("r", "g", "b"), mean=tuple(pixels.mean(axis=1)), std=tuple(pixels.std(axis=1)),
    )  # fmt: skip
    model = BiCoRSeg(tiny_config(width=np.int64(32), topk_ratio=(np.float32(0.5), 1.0)), dataset=dataset)
    loaded = load_model(save_checkpoint(model, tmp_path / "model.ckpt"))  # read with weights_only
    assert loaded.config == model.config and loaded.dataset == dataset
    assert type(loaded.config.width) is int and type(loaded.dataset.mean[0]) is float
    assert tiny_config(pretrained=Path("weights.pth")).to_dict()["pretrained"] == "weights.pth"


def test_clear_errors(tmp_path) -> None:
    path = save_checkpoint(BiCoRSeg(tiny_config()), tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="trained for 4 classes, but 6 are expected"):
        load_checkpoint(path, num_classes=6)
    with pytest.raises(CheckpointError, match="expects 3 input band"):
        load_checkpoint(path, in_channels=4)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*corrupt\.ckpt: corrupt"):
        load_checkpoint(corrupt)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a bicorseg checkpoint"):
        load_checkpoint(other)
    # version 1 is the first format: every key it writes is required
    data = torch.load(path, weights_only=True)
    for change, message in [
        ({"format_version": 2}, r"format version 2; this bicorseg reads version 1"),
        ({"dataset": ...}, r"invalid metadata: no 'dataset'"),
    ]:
        broken = {k: v for k, v in {**data, **change}.items() if v is not ...}
        torch.save(broken, tmp_path / "broken.ckpt")
        with pytest.raises(
            CheckpointError, match=rf"broken\.ckpt (is a bicorseg checkpoint of |has ){message}"
        ):
            load_checkpoint(tmp_path / "broken.ckpt")


@pytest.mark.slow
def test_convert_cli_reproduces_the_original_model(tmp_path, official_model, capsys) -> None:
    source = tmp_path / "official.ckpt"
    torch.save({"state_dict": _official_state_dict(official_model), "epoch": 44}, source)
    with pytest.raises(CheckpointError, match="original BiCoR-Seg code: convert it first"):
        load_checkpoint(source)
    out = tmp_path / "converted.ckpt"
    status = main(["convert", str(source), "--output", str(out), "--num-classes", "4", "--topk-ratio", "0.5"])
    assert status == 0
    assert "convnext_tiny, 4 classes, 2 HBIS layers, width 32" in capsys.readouterr().out
    converted = load_model(out)
    assert converted.config.topk_ratio == 0.5 and converted.config.backbone == "convnext_tiny"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), official_model(x))


@pytest.mark.slow
def test_convert_names_missing_and_unexpected_keys(official_model) -> None:
    state = _official_state_dict(official_model)
    del state["net.decoder.bicor_stack.layers.1.gamma_proj.bias"]
    state["net.decoder.extra_head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as error:
        convert_official({"state_dict": state}, num_classes=4)
    message = str(error.value)
    assert "1 missing (layers.1.gamma.bias)" in message
    assert "1 unexpected (decoder.extra_head.weight)" in message


def test_convert_checks_class_and_layer_counts(official_model) -> None:
    state = {"state_dict": _official_state_dict(official_model)}
    with pytest.raises(CheckpointError, match="4 class embeddings but `num_classes` is 6"):
        convert_official(state, num_classes=6)
    with pytest.raises(CheckpointError, match="2 HBIS layers but 3 were asked for"):
        convert_official(state, num_classes=4, layers=3)


def test_cli_prints_one_line_errors(tmp_path, capsys) -> None:
    status = main(
        ["convert", str(tmp_path / "nope.ckpt"), "--output", str(tmp_path / "x.ckpt"), "--num-classes", "4"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "checkpoint not found" in err
    assert not (tmp_path / "x.ckpt").exists()


@pytest.mark.slow
def test_convert_takes_the_recipe_of_the_dataset(tmp_path, capsys) -> None:
    torch.manual_seed(5)
    original = BiCoRSeg(tiny_config(backbone="convnext_tiny", num_classes=7, layers=2)).eval()
    source = tmp_path / "loveda_official.ckpt"
    torch.save({"state_dict": _official_state_dict(original)}, source)
    out = tmp_path / "loveda.ckpt"
    assert main(["convert", str(source), "--output", str(out), "--dataset", "loveda"]) == 0
    printed = capsys.readouterr().out
    assert (
        "top-k ratio 0.02, min pixels 64; layers, top-k ratio, min pixels from the loveda recipe" in printed
    )
    converted = load_checkpoint(out)
    config = converted.model_config
    assert (config.num_classes, config.layers, config.topk_ratio, config.min_pixels) == (7, 2, 0.02, 64)
    assert converted.dataset.name == "loveda" and converted.extra["recipe"] == "loveda"
    # what is given wins over the recipe; the existing output is replaced as asked
    argv = ["convert", str(source), "--output", str(out), "--dataset", "loveda", "--topk-ratio", "0.1"]
    assert main(argv) == 2 and "exists (use --overwrite to replace it)" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert "layers, min pixels from the loveda recipe" in capsys.readouterr().out
    assert load_checkpoint(out).model_config.topk_ratio == 0.1
    # without a dataset the plain defaults are used, and said
    assert main(["convert", str(source), "--output", str(out), "--num-classes", "7", "--overwrite"]) == 0
    assert "top-k ratio 1.0, min pixels 64" in capsys.readouterr().out


def test_convert_refuses_a_recipe_that_does_not_fit_and_bicorseg_checkpoints(tmp_path, capsys) -> None:
    torch.manual_seed(6)
    original = BiCoRSeg(tiny_config(num_classes=6, layers=2)).eval()  # refused before the backbone matters
    source = tmp_path / "official.ckpt"
    torch.save({"state_dict": _official_state_dict(original)}, source)
    out = tmp_path / "out.ckpt"
    assert main(["convert", str(source), "--output", str(out), "--dataset", "potsdam"]) == 2
    assert "the source has 2 HBIS layers but the potsdam recipe has 3" in capsys.readouterr().err
    assert (
        main(["convert", str(source), "--output", str(out), "--dataset", "potsdam", "--num-classes", "7"])
        == 2
    )
    assert "--num-classes is 7 but dataset 'potsdam' has 6" in capsys.readouterr().err
    assert main(["convert", str(source), "--output", str(out)]) == 2
    assert "--num-classes" in capsys.readouterr().err
    ours = save_checkpoint(original, tmp_path / "ours.ckpt")
    assert main(["convert", str(ours), "--output", str(out), "--num-classes", "6"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already a bicorseg checkpoint: use it as it is" in err
    assert not out.exists()


def test_checkpoints_with_non_finite_weights_are_refused(tmp_path, capsys) -> None:
    model = BiCoRSeg(tiny_config(), dataset=spec())
    with torch.no_grad():
        model.class_embed[1, 3] = float("nan")
    plain = save_checkpoint(model, tmp_path / "nan.ckpt")
    line = refused(capsys, "predict", write_geotiff(tmp_path / "a.tif", random_image(3, 8, 8)),
                   "--checkpoint", plain, "--output", tmp_path / "out")  # fmt: skip
    assert "nan.ckpt: weight class_embed has 1 NaN or infinite value(s)" in line
    # the Lightning layout of bicorseg train, and an original implementation's checkpoint for convert
    lightning = tmp_path / "inf.ckpt"
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    state["model.class_embed"][0, 0] = float("inf")
    torch.save({"bicorseg": metadata(model), "state_dict": state}, lightning)
    with pytest.raises(CheckpointError, match=r"inf\.ckpt: weight class_embed has 2 NaN or infinite"):
        load_model(lightning)
    original = tmp_path / "original.ckpt"
    torch.save(
        {"state_dict": {"net.decoder.class_dict.class_embed.weight": torch.full((4, 32), np.inf)}}, original
    )
    line = refused(capsys, "convert", original, "--output", tmp_path / "c.ckpt", "--num-classes", "4")
    assert "original.ckpt: weight net.decoder.class_dict.class_embed.weight has 128 NaN" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "c.ckpt").exists()
