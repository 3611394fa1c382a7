"""The real sample data in ``../shared`` (or ``$BICORSEG_SHARED``): only the real-data and parity tests need it.

Tests that read it are marked ``shared`` (``pytest -m "not shared"`` runs everything else). Without
the folder, :func:`shared_path` skips the test on a contributor's machine and fails it in CI
(``CI`` set), so that a CI run that lost the data cannot pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BICORSEG_SHARED", REPO_ROOT.parent / "shared"))


def in_ci() -> bool:
    """Whether the tests run in CI (``CI`` set to anything but empty, ``0`` or ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def shared_path(*parts: str) -> Path:
    """A path under the shared data; skip the test when it is absent, or fail it in CI."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is absent: this test needs the shared sample data (set BICORSEG_SHARED)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path
