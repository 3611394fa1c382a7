"""Typed configs: the shipped recipes, strict validation naming the key, overrides, the CLI refusing early."""

from __future__ import annotations

from pathlib import Path

import pytest

from bicorseg.data_options import ONLY_CROP, AugmentOptions
from bicorseg.errors import ConfigError
from bicorseg.training.config import load_config
from tests.helpers.training import REPO, TINY, cli


def test_tiny_config_fills_dataset_facts() -> None:
    config = load_config(TINY)
    assert config.model.num_classes == 4 and config.model.in_channels == 3
    assert config.loss.ignore_index == 255


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"optimizer.lr": -1}, "optimizer.lr"),
        ({"optimizer.lr": "abc"}, "optimizer.lr"),
        ({"model.topk_ratio": 1.5}, "model.topk_ratio"),
        ({"model.topk_ratio": 0.0}, "model.topk_ratio"),
        ({"model.colour": 3}, "model.colour"),
        ({"trainer.epochs": 3}, "trainer.epochs"),
        ({"data.batch_size": 0}, "data.batch_size"),
        ({"data.crop_size": 100}, "data.crop_size"),
        ({"model.downsample": 0}, "model.downsample"),
        ({"model.downsample": 2, "data.crop_size": 96}, "data.crop_size"),  # not a multiple of 64
        ({"trainer.precision": "fp8"}, "trainer.precision"),
        ({"trainer.nan_policy": "ignore"}, "trainer.nan_policy"),
        ({"loss.ignore_index": 3}, "loss.ignore_index"),
        ({"optimizer.lookahead_alpha": 2.0}, "optimizer.lookahead_alpha"),
        ({"trainer.progress_bar": "yes"}, "trainer.progress_bar"),
    ],
)
def test_invalid_values_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}"):
        load_config(TINY, overrides)


def test_training_precision_takes_inference_words() -> None:
    for word, lightning in {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}.items():
        assert load_config(TINY, {"trainer.precision": word}).trainer.precision == word
        with pytest.raises(ConfigError, match=rf"^trainer\.precision: write '{word}', not '{lightning}'"):
            load_config(TINY, {"trainer.precision": lightning})


def test_class_count_must_agree_with_dataset() -> None:
    with pytest.raises(ConfigError, match=r"^model\.num_classes: is 6 but dataset 'loveda' has 7 classes"):
        load_config(REPO / "configs" / "loveda.yaml", {"model.num_classes": 6})


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(Path(TINY).read_text() + "optimizer:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"^optimizer\.learning_rate: unknown key"):
        load_config(path)
    path.write_text("model: {width: 32}\nschedule: {}\n")
    with pytest.raises(
        ConfigError, match=r"^schedule: unknown key; \(known: model, loss, data, optimizer, trainer\)"
    ):
        load_config(path)


def test_numbers_written_as_strings_and_overrides() -> None:
    config = load_config(
        TINY, {"optimizer.lr": "5e-5", "model.topk_ratio": [0.5, 0.02], "trainer.devices": 2}
    )
    assert config.optimizer.lr == 5e-5
    assert config.model.topk_ratio == [0.5, 0.02]
    assert config.trainer.devices == 2
    nested = load_config(TINY, {"data.augment.mosaic_p": 0.0})
    assert nested.data.augment == AugmentOptions(mosaic_p=0.0)
    assert load_config(TINY, {"data.augment": False}).data.augment == ONLY_CROP
    with pytest.raises(
        ConfigError, match=r"^data\.augment\.mosiac_p: unknown key; did you mean data\.augment\.mosaic_p\?"
    ):
        load_config(TINY, {"data.augment.mosiac_p": 0.1})
    with pytest.raises(
        ConfigError, match=r"^data\.augment\.rot90_p: must be a probability in \[0, 1\], not 2\.0"
    ):
        load_config(TINY, {"data.augment": {"rot90_p": 2}})


RECIPES = {
    # name: (layers, topk ratio, final fisher, lr, epochs, batch size, crop)
    "vaihingen": (2, 1.0, 0.0, 5e-5, 45, 4, 512),
    "potsdam": (3, 1.0, 0.0, 1e-4, 45, 4, 768),
    "loveda": (2, 0.02, 1.0, 8e-5, 30, 8, 512),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_published_recipes(name: str) -> None:
    layers, ratio, final_fisher, lr, epochs, batch, crop = RECIPES[name]
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config.model.backbone == "convnext_base" and config.model.pretrained == "imagenet"
    assert config.model.width == 256 and config.model.min_pixels == 64
    assert (config.model.layers, config.model.topk_ratio, config.loss.final_fisher_weight) == (
        layers,
        ratio,
        final_fisher,
    )
    assert (config.optimizer.lr, config.trainer.max_epochs) == (lr, epochs)
    assert (config.data.batch_size, config.data.crop_size) == (batch, crop)
    opt = config.optimizer
    assert (opt.weight_decay, opt.lookahead, opt.lookahead_k, opt.lookahead_alpha) == (0.01, True, 5, 0.5)
    assert (opt.schedule, opt.min_lr, config.trainer.seed) == ("cosine", 1e-6, 42)


def test_recipe_augmentation() -> None:
    from bicorseg.training.datamodule import training_transform

    potsdam = load_config(REPO / "configs" / "potsdam.yaml")
    assert potsdam.data.augment == AugmentOptions(
        rot90_p=0.25, rotate_draw="paper", rescale_interpolation="bicubic"
    )
    config = training_transform(potsdam.data, seed=42).config
    assert (config.crop_size, config.rot90_p, config.hflip_p, config.vflip_p) == (768, 0.25, 0.5, 0.5)
    assert (config.mosaic_p, config.scales, config.max_class_ratio, config.crop_retries) == (
        0.25, (0.75, 1.0, 1.25, 1.5), 0.75, 10
    )  # fmt: skip
    vaihingen = training_transform(load_config(REPO / "configs" / "vaihingen.yaml").data, seed=42).config
    assert (vaihingen.crop_size, vaihingen.rot90_p) == (512, 0.5)


def test_loveda_recipe_trains_on_train_and_val() -> None:
    config = load_config(REPO / "configs" / "loveda.yaml")
    assert config.data.train_splits == ["train", "val"]
    assert config.data.val_split is None  # nothing held out: the last epoch is kept


@pytest.mark.parametrize("name", ["vaihingen", "potsdam", "loveda"])
def test_published_recipes_use_the_original_protocol(name: str) -> None:
    from bicorseg.training.datamodule import training_transform

    config = load_config(REPO / "configs" / f"{name}.yaml")
    augment = training_transform(config.data, seed=42).config
    assert (augment.rotate_draw, augment.rescale_interpolation) == ("paper", "bicubic")
    assert augment.rotation_rate == pytest.approx(0.75 * augment.rot90_p)
    assert config.optimizer.lookahead_phase == "paper"
    if name != "loveda":  # ISPRS: mean F1 (clutter excluded) on the validation tile, as the original's val_F1
        assert (config.trainer.monitor, config.data.val_split) == ("val/mean_f1", "val")
    # the clean defaults stay clean
    default = load_config(TINY)
    assert default.optimizer.lookahead_phase == "textbook" and default.trainer.monitor == "val/miou"
    with pytest.raises(ConfigError, match=r"optimizer\.lookahead_phase"):
        load_config(TINY, {"optimizer.lookahead_phase": "catalyst"})


def test_cli_print_config_and_early_refusal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli("train", "--config", "tiny-test", "--optimizer.lr", "2e-4", "--print-config") == 0
    printed = capsys.readouterr().out
    assert "lr: 0.0002" in printed and "num_classes: 4" in printed
    out = tmp_path / "run"
    assert cli("train", "--config", TINY, "--model.topk_ratio", "2", "--output", out) == 2
    assert "model.topk_ratio" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was built
    assert cli("train", "--config", TINY, "--set", "data.batch_size=-3", "--output", out) == 2
    assert "data.batch_size" in capsys.readouterr().err


def test_typedconfig_reads_field_docs_and_refuses_unknown_keys() -> None:
    from dataclasses import dataclass

    from bicorseg import typedconfig

    @dataclass
    class Options:
        """Some options.

        Attributes:
            tile, overlap: the ``tile`` and its overlap,
                continued here.
            name: a :class:`Name`.
        """

        tile: int = 512
        overlap: float = 0.25
        name: str = "x"

    docs = typedconfig.field_docs(Options)
    assert docs == {
        "tile": "the tile and its overlap, continued here.",
        "overlap": docs["tile"],
        "name": "a Name.",
    }
    assert typedconfig.build(Options, {"tile": "64", "name": 7}, "section") == Options(64, 0.25, "7")
    with pytest.raises(
        ConfigError, match=r"^section\.tiel: unknown key; did you mean section\.tile\?"
    ) as error:
        typedconfig.build(Options, {"tiel": 3}, "section")
    assert error.value.key == "section.tiel"
    with pytest.raises(ConfigError, match=r"^section\.overlap: expected a number, got 'big'$"):
        typedconfig.build(Options, {"overlap": "big"}, "section")
    assert typedconfig.nearest("bf", ["fp32", "bf16", "fp16"]) == "bf16"  # a shortening
    assert typedconfig.nearest("zzz", ["tile", "overlap"]) is None
