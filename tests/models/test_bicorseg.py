"""BiCoR-Seg network: one shared test class that every model variant inherits; the plain-module API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bicorseg
from bicorseg.errors import ConfigError, InputError
from bicorseg.losses import BiCoRSegLoss, LossConfig
from bicorseg.models import BiCoRSeg, ModelConfig, TrainOutput, create_model
from tests.helpers import require
from tests.helpers.models import tiny_config


class ModelVariantTests:
    """Shared checks; subclasses set ``config``."""

    config: ModelConfig
    size = 64

    @pytest.fixture
    def model(self) -> BiCoRSeg:
        return BiCoRSeg(self.config)

    def batch(self, n: int = 2) -> torch.Tensor:
        return torch.randn(n, self.config.in_channels, self.size, self.size)

    def labels(self, n: int = 2) -> torch.Tensor:
        """Labels at the working resolution, where :meth:`BiCoRSeg.forward_train` gives its outputs."""
        size = self.size // self.config.downsample
        labels = torch.randint(0, self.config.num_classes, (n, size, size))
        labels[:, :4, :4] = self.config.num_classes  # some ignored pixels
        return labels

    def test_train_outputs(self, model: BiCoRSeg) -> None:
        out = model.train().forward_train(self.batch())
        n, s, c = self.config.num_classes, self.size // self.config.downsample, self.config.width
        assert isinstance(out, TrainOutput)
        assert out.logits.shape == (2, n, s, s)
        assert out.aux_logits.shape == (2, n, s, s)
        assert len(out.heatmap_logits) == len(out.class_embeddings) == self.config.layers
        for heat, emb in zip(out.heatmap_logits, out.class_embeddings):
            assert heat.shape == (2, n, s // 4, s // 4)
            assert emb.shape == (2, n, c)

    def test_eval_returns_logits(self, model: BiCoRSeg) -> None:
        with torch.no_grad():
            logits = model.eval()(self.batch(1))
        assert logits.shape == (1, self.config.num_classes, self.size, self.size)
        assert torch.isfinite(logits).all()

    def test_heatmaps_are_sigmoid_maps(self, model: BiCoRSeg) -> None:
        with torch.no_grad():
            _, heatmaps = model.eval().predict_with_heatmaps(self.batch(1))
        assert len(heatmaps) == self.config.layers
        for heat in heatmaps:
            assert heat.shape == (1, self.config.num_classes, self.size // 4, self.size // 4)
            assert heat.min() >= 0 and heat.max() <= 1

    def test_backward_reaches_every_parameter(self, model: BiCoRSeg) -> None:
        out = model.train().forward_train(self.batch())
        loss = BiCoRSegLoss(LossConfig(ignore_index=self.config.num_classes))(out, self.labels())
        loss["total"].backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert no_grad == []

    def test_auxiliary_head_does_not_train_class_embeddings(self, model: BiCoRSeg) -> None:
        out = model.train().forward_train(self.batch())
        loss = BiCoRSegLoss(LossConfig(ignore_index=self.config.num_classes))
        loss.segmentation(out.aux_logits, self.labels())[0].backward()
        assert model.class_embed.grad is None
        assert model.static_classifier.weight.grad.abs().sum() > 0
        assert model.classifier.weight.grad is None

    def test_wrong_band_count_is_refused(self, model: BiCoRSeg) -> None:
        x = torch.randn(1, self.config.in_channels + 1, self.size, self.size)
        with pytest.raises(InputError, match=f"expects {self.config.in_channels} input band"):
            model.eval()(x)


class TestNanoRGB(ModelVariantTests):
    config = tiny_config()


@pytest.mark.slow
class TestOneBand(ModelVariantTests):
    config = tiny_config(in_channels=1)


@pytest.mark.slow
class TestFourBands(ModelVariantTests):
    config = tiny_config(in_channels=4, layers=1)


@pytest.mark.slow
class TestFiveBands(ModelVariantTests):
    config = tiny_config(in_channels=5, num_classes=2)


@pytest.mark.slow
class TestTopKPerLayerAndInnerSteps(ModelVariantTests):
    config = tiny_config(layers=3, topk_ratio=[0.02, 0.5, 1.0], inner_steps=2)


@pytest.mark.slow
class TestThresholdSelection(ModelVariantTests):
    config = tiny_config(selection="threshold", threshold=0.6)


@pytest.mark.slow
class TestPercentileSelection(ModelVariantTests):
    config = tiny_config(selection="percentile", threshold=0.9)


@pytest.mark.slow
class TestTimmBackbone(ModelVariantTests):
    config = tiny_config(backbone="timm:convnext_atto", in_channels=4)

    @pytest.fixture
    def model(self) -> BiCoRSeg:
        require("timm")
        return BiCoRSeg(self.config)


class TestHalfResolution(ModelVariantTests):
    config = tiny_config(downsample=2)


def test_downsample_classifies_the_block_averaged_input() -> None:
    """``downsample`` k is the same network applied to the input averaged over k x k blocks, its
    logits resized back to the input's size; any input size is padded to a multiple of 32 k."""
    half = BiCoRSeg(tiny_config(downsample=2)).eval()
    full = BiCoRSeg(tiny_config()).eval()
    full.load_state_dict(half.state_dict())
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        expected = F.interpolate(
            full(F.avg_pool2d(x, 2)), size=(128, 64), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(half(x), expected)
        assert half(torch.randn(1, 3, 70, 90)).shape == (1, 4, 70, 90)
        working = half.forward_train(x)  # the objective's outputs stay at the working resolution
        assert working.logits.shape == (1, 4, 64, 32) and working.heatmap_logits[0].shape == (1, 4, 16, 8)
        torch.testing.assert_close(
            F.interpolate(working.logits, size=(128, 64), mode="bilinear", align_corners=False), half(x)
        )
        with pytest.raises(InputError, match="downsample k trains at 1/k: pool the labels"):
            BiCoRSegLoss(LossConfig(ignore_index=4))(working, torch.zeros(1, 128, 64, dtype=torch.long))
    with pytest.raises(
        InputError, match="training input 96x96 is not a multiple of 64: crop or pad to 128x128"
    ):
        half.train().forward_train(torch.randn(1, 3, 96, 96))


def test_forward_gives_logits_in_training_mode_too() -> None:
    """``model.train(); loss(model(x), y)`` as in any PyTorch training loop; the same logits as
    forward_train's (stochastic depth off in the nano backbone, so both passes compute the same)."""
    model = BiCoRSeg(tiny_config()).train()
    x = torch.randn(1, 3, 32, 64)
    logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 4, 32, 64) and logits.requires_grad
    torch.testing.assert_close(logits, model.forward_train(x).logits, rtol=0, atol=0)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 4, (1, 32, 64))).backward()
    assert model.class_embed.grad is not None and model.backbone.features[0][0].weight.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), logits)  # evaluation: the fused CPU blocks' rounding


def test_training_forward_pads_while_forward_train_needs_a_multiple_of_32() -> None:
    model = BiCoRSeg(tiny_config()).train()
    x = torch.randn(1, 3, 70, 90)
    assert model(x).shape == (1, 4, 70, 90)
    with pytest.raises(InputError, match="70x90 is not a multiple of 32: crop or pad to 96x96"):
        model.forward_train(x)


def test_create_model_builds_the_network_of_its_config() -> None:
    config = tiny_config(num_classes=5, in_channels=4, topk_ratio=[0.5, 1.0], tau=0.5)
    torch.manual_seed(3)
    expected = BiCoRSeg(config)
    torch.manual_seed(3)
    built = bicorseg.create_model(
        num_classes=5, backbone="convnext_nano", in_channels=4, width=32, layers=2, min_pixels=4,
        topk_ratio=[0.5, 1.0], tau=0.5,
    )  # fmt: skip
    assert built.config == config
    assert built.state_dict().keys() == expected.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), expected.state_dict().values()))
    assert create_model(**config.to_dict()).config == config
    assert create_model is bicorseg.create_model


def test_create_model_names_the_nearest_option() -> None:
    with pytest.raises(ConfigError, match=r"^model\.widht: unknown model option; did you mean 'width'\?"):
        create_model(num_classes=4, backbone="convnext_nano", widht=32)
    with pytest.raises(ConfigError, match=r"^model\.num_classes: at least 2 classes"):
        create_model(num_classes=1, backbone="convnext_nano")


def test_create_model_checks_each_option_against_its_type() -> None:
    """Options from Python are typed as a config file's are: numpy's integers and a path are taken, a
    fraction where an integer belongs is one error naming the option (not a torch TypeError)."""
    built = create_model(num_classes=np.int64(3), backbone="convnext_nano", width=np.int64(32), layers=1)
    assert type(built.config.num_classes) is int and built.config.width == 32
    with pytest.raises(ConfigError, match=r"^model\.num_classes: expected an integer, got 2\.5$"):
        create_model(num_classes=2.5, backbone="convnext_nano")
    with pytest.raises(ConfigError, match=r"^model\.width: expected an integer, got 32\.0$"):
        ModelConfig.from_dict({"num_classes": 3, "width": 32.0})  # as a checkpoint's metadata may hold it


@pytest.mark.slow
def test_evaluation_pads_any_size_and_crops_back() -> None:
    model = BiCoRSeg(tiny_config()).eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        logits, heatmaps = model.predict_with_heatmaps(x)
        padded = torch.nn.functional.pad(x, (0, 6, 0, 26), mode="reflect")
        reference = model(padded)[..., :70, :90]
    assert logits.shape == (1, 4, 70, 90)
    assert heatmaps[0].shape == (1, 4, 18, 23)
    torch.testing.assert_close(logits, reference)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"topk_ratio": 0.0}, "model.topk_ratio"),
        ({"topk_ratio": 1.5}, "model.topk_ratio"),
        ({"topk_ratio": [0.5]}, "model.topk_ratio"),
        ({"width": 40}, "model.width"),
        ({"num_classes": 1}, "model.num_classes"),
        ({"selection": "best"}, "model.selection"),
        ({"tau": 0}, "model.tau"),
    ],
)
def test_invalid_configuration_names_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        tiny_config(**overrides)


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet101'.*convnext_base, resnet18"):
        BiCoRSeg(tiny_config(backbone="resnet101"))


def test_config_round_trip() -> None:
    config = tiny_config(topk_ratio=[0.1, 0.2])
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"^model\.layer: unknown model option; did you mean 'layers'\?"):
        ModelConfig.from_dict({**config.to_dict(), "layer": 3})
