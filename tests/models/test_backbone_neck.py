"""Backbone stage extraction, band adaptation, pretrained weights (local, or offline from the web) and the fused neck."""

from __future__ import annotations

import urllib.request

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import convnext_tiny, resnet18

from bicorseg.errors import CheckpointError, ConfigError
from bicorseg.models import FusedNeck, adapt_first_conv_weight, build_backbone
from tests.helpers.cli import refused
from tests.helpers.reference import neck_explicit


def test_stages_have_the_documented_strides_and_channels() -> None:
    backbone = build_backbone("convnext_nano")
    stages = backbone(torch.randn(1, 3, 64, 96))
    assert backbone.channels == (32, 64, 128, 256)
    assert [tuple(s.shape[1:]) for s in stages] == [(32, 16, 24), (64, 8, 12), (128, 4, 6), (256, 2, 3)]
    assert not backbone._forward_hooks and all(not m._forward_hooks for m in backbone.modules())


@pytest.mark.parametrize(
    ("name", "channels"), [("resnet18", (64, 128, 256, 512)), ("resnet50", (256, 512, 1024, 2048))]
)
def test_resnet_stages_have_strides_4_to_32_and_start_as_identity_blocks(name: str, channels: tuple) -> None:
    backbone = build_backbone(name, in_channels=4)
    stages = backbone(torch.randn(1, 4, 64, 96))
    assert backbone.channels == channels
    assert [tuple(s.shape[1:]) for s in stages] == [
        (c, 64 // s, 96 // s) for c, s in zip(channels, (4, 8, 16, 32))
    ]
    # from random weights each residual block's last batch norm starts at zero: the block is the identity
    last_norms = [
        block.bn3 if name == "resnet50" else block.bn2 for stage in backbone.stages for block in stage
    ]
    assert all(torch.count_nonzero(norm.weight) == 0 for norm in last_norms)


def test_resnet_local_weights_are_checked_and_adapted(tmp_path) -> None:
    reference = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", in_channels=4, pretrained=str(path))
    torch.testing.assert_close(backbone.stages[3][1].bn2.weight, reference.layer4[1].bn2.weight)
    torch.testing.assert_close(backbone.stem[0].weight, adapt_first_conv_weight(reference.conv1.weight, 4))
    partial = tmp_path / "partial.pth"
    torch.save({"conv1.weight": reference.conv1.weight}, partial)
    with pytest.raises(
        CheckpointError, match=r"partial\.pth is not resnet18's weights .*: the network has no weight"
    ):
        build_backbone("resnet18", pretrained=str(partial))


@pytest.mark.parametrize("bands", [3, 4])
def test_backbone_convolutions_are_channels_last(bands: int) -> None:
    backbone = build_backbone("convnext_nano", in_channels=bands)  # a new stem for 4 bands
    # the stem and the downsampling convolutions (a depthwise kernel is both layouts at once)
    convs = [m.weight for m in backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1]
    assert len(convs) == 4 and convs[0].shape[1] == bands
    assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)


@pytest.mark.parametrize("bands", [1, 2, 4, 5])
def test_adapted_first_conv_preserves_activations_of_grey_like_inputs(bands: int) -> None:
    weight = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    grey = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    rgb_out = F.conv2d(grey.expand(1, 3, 8, 8), weight)
    adapted = adapt_first_conv_weight(weight, bands)
    assert adapted.shape == (8, bands, 4, 4)
    torch.testing.assert_close(F.conv2d(grey.expand(1, bands, 8, 8), adapted), rgb_out)
    if bands > 3:  # the RGB kernels keep their relative shape
        torch.testing.assert_close(adapted[:, :3], weight * 3 / bands)


@pytest.mark.slow
def test_local_pretrained_file_is_loaded(tmp_path) -> None:
    reference = convnext_tiny()
    path = tmp_path / "convnext_tiny.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("convnext_tiny", in_channels=4, pretrained=str(path))
    torch.testing.assert_close(
        backbone.features[1][0].block[0].weight, reference.features[1][0].block[0].weight
    )
    stem = reference.features[0][0].weight
    torch.testing.assert_close(backbone.features[0][0].weight, adapt_first_conv_weight(stem, 4))


@pytest.mark.slow
def test_bad_pretrained_files_are_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"not found: .*missing\.pth"):
        build_backbone("convnext_tiny", pretrained=str(tmp_path / "missing.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"cannot read pretrained weights .*corrupt\.pth"):
        build_backbone("convnext_tiny", pretrained=str(corrupt))
    partial = tmp_path / "partial.pth"
    torch.save({"features.0.0.weight": torch.zeros(96, 3, 4, 4)}, partial)
    with pytest.raises(
        CheckpointError,
        match=r"partial\.pth is not convnext_tiny.s weights \(convnext_tiny\): the network has no weight features\.0\.0\.bias",
    ):
        build_backbone("convnext_tiny", pretrained=str(partial))


@pytest.mark.parametrize("size", [(16, 16), (15, 21)])
def test_fused_neck_equals_the_explicit_neck(size) -> None:
    neck = FusedNeck((8, 16, 24, 32), width=16).double()
    stages = [
        torch.randn(2, c, 16 // 2**i, 16 // 2**i, dtype=torch.float64) for i, c in enumerate((8, 16, 24, 32))
    ]
    torch.testing.assert_close(neck(stages, size), neck_explicit(neck, stages, size), rtol=1e-12, atol=1e-12)


def _op_names(run) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return {event.key for event in prof.key_averages()}


@pytest.mark.slow
def test_inference_blocks_match_torchvision_blocks() -> None:
    from torchvision.models.convnext import CNBlock

    from bicorseg.models.backbone import InferenceCNBlock

    backbone = build_backbone("convnext_nano").eval()
    blocks = [m for m in backbone.modules() if isinstance(m, CNBlock)]
    assert blocks and all(type(m) is InferenceCNBlock for m in blocks)
    with torch.no_grad():
        for block in blocks:  # torchvision starts them at 1e-6, which would hide the block's work
            block.layer_scale.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 96)
    with torch.enable_grad():  # torchvision's own forward
        expected = [s.detach() for s in backbone(x)]
    with torch.inference_mode():
        fast = backbone(x)
        ops = _op_names(lambda: backbone(x))
    assert "mkldnn::_linear_pointwise" in ops and "aten::gelu" not in ops  # the fused path ran
    for got, want in zip(fast, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # float64 takes torchvision's path: bit-identical
        double = backbone.double()
        assert all(torch.equal(a, b) for a, b in zip(double(x.double()), double.train()(x.double())))


@pytest.mark.slow
def test_pretrained_imagenet_without_network_says_what_to_run(tmp_path, capsys, monkeypatch, request) -> None:
    """The real download path: an empty torch cache and an unreachable proxy (as on a machine offline)."""
    # urlopen's shared opener reads the proxies once, when it is built: built here with this test's,
    # and dropped after it, so that later downloads in this process do not go to the dead proxy
    urllib.request.install_opener(None)
    request.addfinalizer(lambda: urllib.request.install_opener(None))
    cache = tmp_path / "torch_home"
    cache.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(cache))
    for key in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(key, "http://127.0.0.1:9")  # the discard port: nothing listens there
    for key in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)
    line = refused(capsys, "train", "--config", "tiny-test", "--model.backbone", "convnext_tiny",
                   "--model.pretrained", "imagenet", "--output", tmp_path / "run")  # fmt: skip
    assert (
        "the weights of backbone convnext_tiny are not cached and cannot be downloaded from https://download.pytorch.org"
        in line
    )
    assert (
        "run 'bicorseg weights download convnext_tiny', carry the file it names (convnext_tiny-983f1562.pth)"
        in line
    )
    assert "set pretrained to a local weights file" in line
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no partial download left
