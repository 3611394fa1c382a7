"""Inference precision: resolving ``auto``, the InferencePrecision wrapper (the model sets none)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bicorseg.checkpoint import load_model, save_checkpoint
from bicorseg.errors import ConfigError
from bicorseg.models import BiCoRSeg
from bicorseg.precision import (
    InferencePrecision,
    check_precision,
    cpu_flags,
    cpu_has_fast_bf16,
    precision_of,
    resolve_precision,
    with_precision,
)
from tests.helpers.models import tiny_config

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx2 avx512f {extra}
bogomips\t: 4000.00
"""


def write_cpuinfo(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    return path


def test_cpu_flags_decide_fast_bf16(tmp_path: Path) -> None:
    assert cpu_has_fast_bf16(write_cpuinfo(tmp_path, "avx512_bf16 avx512_vnni"))
    assert cpu_has_fast_bf16(write_cpuinfo(tmp_path, "amx_bf16 amx_tile"))
    assert not cpu_has_fast_bf16(write_cpuinfo(tmp_path, "avx512_vnni"))
    assert "avx2" in cpu_flags(write_cpuinfo(tmp_path, ""))
    assert cpu_flags(tmp_path / "absent") is None


def test_auto_follows_the_device() -> None:
    expected = "bf16" if cpu_has_fast_bf16() else "fp32"
    assert resolve_precision("auto", "cpu") == expected
    for name in ("bf16", "fp16", "fp32"):
        assert resolve_precision(name, "cpu") == name
    if torch.cuda.is_available():
        major, _ = torch.cuda.get_device_capability()
        assert resolve_precision("auto", "cuda") == ("bf16" if major >= 8 else "fp32")


def test_unknown_precision_names_the_parameter() -> None:
    with pytest.raises(ConfigError, match=r"^precision: must be one of auto, bf16, fp16, fp32, got 'int8'$"):
        resolve_precision("int8")
    with pytest.raises(ConfigError, match=r"^precision: 'auto' must be resolved"):
        check_precision("auto", resolved=True)
    model = BiCoRSeg(tiny_config())
    with pytest.raises(ConfigError, match=r"^precision: 'auto' must be resolved"):
        InferencePrecision(model, "auto")
    with pytest.raises(ConfigError, match="got 'half'"):
        with_precision(model, "half")


def _stem_dtypes(model: BiCoRSeg) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    model.backbone.features[0].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_reduced_precision_runs_in_that_dtype_and_returns_float32(precision, dtype) -> None:
    # independent draws: the tied start gives the head's LayerNorm C/16 = 2 distinct values at this
    # width, so the logits of an untrained network flip with rounding and no tolerance would hold
    model = BiCoRSeg(tiny_config(subpixel_init="independent")).eval()
    x = torch.randn(2, 3, 64, 80)
    seen = _stem_dtypes(model)
    reduced = with_precision(model, precision)
    assert isinstance(reduced, InferencePrecision) and reduced.model is model
    assert reduced.config is model.config and precision_of(reduced) == precision
    with torch.inference_mode():
        reference = model(x)
        logits = reduced(x)
        heat_logits, heatmaps = reduced.predict_with_heatmaps(x)
    assert seen == [torch.float32, dtype, dtype]
    assert logits.dtype == torch.float32 and logits.shape == reference.shape
    assert all(h.dtype == torch.float32 for h in heatmaps)
    assert not torch.equal(logits, reference)  # really computed at reduced precision
    torch.testing.assert_close(logits, heat_logits)
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()
    assert with_precision(reduced, "fp32") is model  # unwrapped: fp32 needs no wrapper


@pytest.mark.slow
def test_the_model_sets_no_precision_of_its_own() -> None:
    """No autocast inside the model: float64 stays float64, and under a caller's autocast (Lightning's
    precision plugin) the model computes in that dtype, training mode included."""
    model = BiCoRSeg(tiny_config()).double().eval()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert model(x).dtype == torch.float64
    assert precision_of(model) is None
    model = BiCoRSeg(tiny_config()).train()
    seen = _stem_dtypes(model)
    out = model.forward_train(torch.randn(2, 3, 64, 64))
    assert seen == [torch.float32] and out.logits.dtype == torch.float32 and precision_of(model) == "fp32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 64, 64))
    assert seen == [torch.float32, torch.bfloat16] and logits.dtype == torch.bfloat16


@pytest.mark.slow
def test_load_model_wraps_for_reduced_precision(tmp_path: Path) -> None:
    path = save_checkpoint(BiCoRSeg(tiny_config()), tmp_path / "m.ckpt")
    plain = load_model(path)
    assert type(plain) is BiCoRSeg and not plain.training and precision_of(plain) == "fp32"
    bf16 = load_model(path, precision="bf16")
    assert isinstance(bf16, InferencePrecision) and bf16.precision == "bf16" and not bf16.model.training
    assert not bf16.training  # the wrapper says the mode of the model it runs: evaluation
    assert precision_of(load_model(path, precision="auto")) == resolve_precision("auto", "cpu")
    with pytest.raises(ConfigError, match=r"^precision: must be one of"):
        load_model(path, precision="float8")
    again = save_checkpoint(bf16, tmp_path / "again.ckpt")  # the wrapped network's weights
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(again)(x), plain(x), rtol=0, atol=0)
