"""The one reader of torch files: :func:`read_torch_file` unpickles with ``weights_only=True``;
:func:`check_finite_weights` refuses a state dict with a NaN or infinite weight.

Below the models and the checkpoints (the backbone reads pretrained weights with it, the checkpoint
module everything else), so that neither imports the other for it.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from bicorseg.errors import CheckpointError, first_line


def read_torch_file(
    path: str | os.PathLike[str], *, mmap: bool = False, map_location: Any = "cpu", what: str = "checkpoint"
) -> Any:
    """The content of a ``torch.save`` file, unpickled with ``weights_only=True``: tensors and plain data.

    A file that holds any other Python object (which could run code when unpickled) is refused with
    a :class:`CheckpointError` naming the object; nothing of it is executed. Every checkpoint read
    in bicorseg goes through here (plain checkpoints, Lightning ``best.ckpt``/``last.ckpt``,
    ``--resume``, checkpoints of the original implementation, pretrained backbone weights); ``what``
    names the file in messages.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(
            f"{path} is an ONNX model, not a bicorseg {what}: only prediction runs ONNX models (with the "
            "ONNX engine); give the checkpoint it was exported from"
        )
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it may not support; the error below says it all
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:  # not a pickle of tensors and data at all
            raise CheckpointError(
                f"cannot read {what} {path}: corrupt or not a torch file (no tensors and plain data)"
            ) from error
        raise CheckpointError(
            f"refusing to read {what} {path}: it refers to {found.group(1)}, and loading it could run "
            "code (only tensors and plain data are read; if you trust the file, save its state dict alone)"
        ) from error
    except Exception as error:  # a corrupt file surfaces as many exception types
        raise CheckpointError(
            f"cannot read {what} {path}: corrupt or not a torch file ({first_line(error)})"
        ) from error


def check_finite_weights(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Raise a :class:`CheckpointError` naming the first floating tensor with NaN or infinite values."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{path}: weight {key} has {bad} NaN or infinite value(s)")
