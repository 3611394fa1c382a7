"""The inference ``precision``: ``auto``, ``bf16``, ``fp16`` or ``fp32``; resolved for a device,
applied by an explicit wrapper.

``auto`` is bf16 where the device runs it fast (a CUDA GPU with native bf16, i.e. compute capability
8.0 or newer; a CPU with AVX512-BF16 or AMX-BF16 instructions) and fp32 otherwise. Reduced precision
is :class:`InferencePrecision`: the model's forward and ``predict_with_heatmaps`` run under
:func:`torch.autocast` (convolutions and matrix products in bf16/fp16, the operations autocast keeps
in float32 in float32) and return float32 logits and heatmaps, as an fp32 model does. The model
itself never sets a precision, so training precision stays the trainer's (Lightning's plugin).
:func:`with_precision` is what ``load_model(path, precision=...)`` and the commands apply.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from bicorseg.defaults import PRECISIONS
from bicorseg.errors import ConfigError

DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # torch dtypes
_FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo``; None where there is no such file."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 and ARM spellings
            return set(value.split())
    return set()


def cpu_has_fast_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags(cpuinfo)
    if flags is not None:
        return any(flag in flags for flag in _FAST_BF16_CPU_FLAGS)
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # no /proc (macOS, Windows)
    return bool(probe and probe())


def check_precision(precision: str, resolved: bool = False) -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS` (not ``auto`` when ``resolved``),
    else a :class:`ConfigError`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"must be one of {', '.join(PRECISIONS)}, got {precision!r}", key="precision")
    if resolved and precision == "auto":
        raise ConfigError("'auto' must be resolved for a device first (resolve_precision)", key="precision")
    return precision


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``bf16``, ``fp16`` or ``fp32`` for ``device``; ``auto`` becomes bf16 where it is fast, else fp32."""
    check_precision(precision)
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":  # Ampere and newer compute bf16 natively; older GPUs only emulate it
        fast = torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    else:
        fast = device.type == "cpu" and cpu_has_fast_bf16()
    return "bf16" if fast else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device_type: str) -> Iterator[None]:
    """Autocast to ``precision`` (resolved, not ``auto``) on ``device_type``; fp32 changes nothing."""
    if check_precision(precision, resolved=True) == "fp32":
        yield
        return
    with torch.autocast(device_type=device_type, dtype=getattr(torch, DTYPE_NAMES[precision])):
        yield


_Heatmaps = tuple[torch.Tensor, list[torch.Tensor]]  # logits and per-layer heatmaps


class InferencePrecision(nn.Module):
    """``model`` applied at ``precision`` for inference: its forward and ``predict_with_heatmaps`` run
    under :func:`autocast` on the input's device and return float32 (not bf16/fp16) tensors.

    Args:
        model: a :class:`~bicorseg.models.BiCoRSeg` (or any module from a batch to logits).
        precision: ``bf16``, ``fp16`` or ``fp32`` (resolved: see :func:`resolve_precision`).

    ``config`` and ``dataset`` are the model's. The wrapped model is ``.model``: train, save or
    export that one (the wrapper's state dict keys carry the prefix ``model.``).
    """

    def __init__(self, model: nn.Module, precision: str) -> None:
        super().__init__()
        self.model = model
        self.precision = check_precision(precision, resolved=True)
        self.train(model.training)  # in the wrapped model's mode (load_model's: evaluation)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def dataset(self) -> Any:
        return self.model.dataset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, x.device.type):
            logits = self.model(x)
        return _float32(logits)

    def predict_with_heatmaps(self, x: torch.Tensor) -> _Heatmaps:
        with autocast(self.precision, x.device.type):
            predict = cast(Callable[[torch.Tensor], _Heatmaps], self.model.predict_with_heatmaps)
            logits, heatmaps = predict(x)
        return _float32(logits), [_float32(heat) for heat in heatmaps]

    def extra_repr(self) -> str:
        return f"precision={self.precision}"


def _float32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 outputs as float32, so that callers see the dtype of an fp32 model (float64 is kept)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def with_precision(model: nn.Module, precision: str, device: str | torch.device = "cpu") -> nn.Module:
    """``model`` itself for fp32, else ``model`` in an :class:`InferencePrecision`; ``auto`` is
    resolved for ``device``. An :class:`InferencePrecision` given is unwrapped first."""
    if isinstance(model, InferencePrecision):
        model = model.model
    resolved = resolve_precision(precision, device)
    return model if resolved == "fp32" else InferencePrecision(model, resolved)


def precision_of(model: nn.Module) -> str | None:
    """The precision ``model`` runs at: an :class:`InferencePrecision`'s, else that of its floating
    parameters (``fp32``, ``bf16``, ``fp16``); None for other dtypes or without parameters."""
    if isinstance(model, InferencePrecision):
        return model.precision
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names.get(dtype) if dtype is not None else None
