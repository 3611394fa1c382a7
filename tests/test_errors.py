"""bicorseg's errors are also the standard exceptions they are, so generic callers catch them."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bicorseg.atomic import ensure_writable
from bicorseg.errors import (
    BicorsegError,
    CheckpointError,
    ConfigError,
    InputError,
    InstallError,
    OutputError,
)
from bicorseg.models import ModelConfig
from bicorseg.torch_files import read_torch_file


@pytest.mark.parametrize(
    ("kind", "standard"),
    [
        (ConfigError, ValueError),
        (InputError, ValueError),
        (CheckpointError, ValueError),
        (OutputError, OSError),
        (InstallError, ImportError),
    ],
)
def test_each_error_is_its_standard_exception_across_processes(kind, standard) -> None:
    error = pickle.loads(pickle.dumps(kind("must be positive", key="tile")))  # as workers send it back
    assert type(error) is kind and isinstance(error, BicorsegError) and isinstance(error, standard)
    assert str(error) == "tile: must be positive" and error.key == "tile"


def test_generic_callers_catch_what_bicorseg_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^model\.width: must be a multiple of 16"):
        ModelConfig(num_classes=3, width=40)
    (tmp_path / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt or not a torch file"):
        read_torch_file(tmp_path / "weights.pt")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OSError, match="it is a file, not a folder"):
        ensure_writable(tmp_path / "a-file", folder=True)
