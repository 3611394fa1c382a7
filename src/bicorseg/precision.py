"""The inference ``precision``: ``auto``, ``bf16``, ``fp16`` or ``fp32``; resolved for a device, applied by autocast.

``auto`` is bf16 where the device runs it fast (a CUDA GPU with native bf16, i.e. compute capability
8.0 or newer; a CPU with AVX512-BF16 or AMX-BF16 instructions) and fp32 otherwise. Reduced precision
runs under :func:`torch.autocast`: convolutions and matrix products in bf16/fp16, the operations
autocast keeps in float32 (losses, reductions such as quantiles) in float32; the model returns
float32 logits either way (see :class:`~bicorseg.models.BiCoRSeg`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bicorseg.defaults import PRECISIONS
from bicorseg.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used: the command line registers --precision without it
    import torch

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
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # no /proc (macOS, Windows)
    return bool(probe and probe())


def _cuda_has_fast_bf16(device: torch.device) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8  # Ampere and newer compute bf16 natively; older GPUs only emulate it


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
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        fast = _cuda_has_fast_bf16(device)
    elif device.type == "cpu":
        fast = cpu_has_fast_bf16()
    else:
        fast = False
    return "bf16" if fast else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device_type: str) -> Iterator[None]:
    """Autocast to ``precision`` (resolved, not ``auto``) on ``device_type``; fp32 changes nothing."""
    if check_precision(precision, resolved=True) == "fp32":
        yield
        return
    import torch

    with torch.autocast(device_type=device_type, dtype=getattr(torch, DTYPE_NAMES[precision])):
        yield
