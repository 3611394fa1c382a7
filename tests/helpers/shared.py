"""The real sample data in ``../shared`` (or ``$BICORSEG_SHARED``): only the real-data and parity tests need it.

Tests that read it are marked ``shared`` (``pytest -m "not shared"`` runs everything else). Without
the folder, :func:`shared_path` skips the test on a contributor's machine; in CI (``CI=true``) the
skip is a failure (tests/conftest.py), so that a CI run that lost the data cannot pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BICORSEG_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under the shared data; the test skipped when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared sample data (set BICORSEG_SHARED)")
    return path
