"""Helpers of the test suite, imported as a package (``from tests.helpers.data import ...``).

Here: :func:`require` (an optional dependency a test needs), :func:`in_ci`, and the mark
:data:`prints_warnings`. A test that lacks
what it needs skips on a contributor's machine; under ``CI=true`` every skip but that of a test
marked ``cuda`` fails the run (tests/conftest.py), so CI cannot pass by skipping.

* :mod:`.shared`: the real sample data in ``../shared`` (:func:`shared_path`).
* :mod:`.models`: tiny random-weight model configs.
* :mod:`.data`, :mod:`.gis`, :mod:`.inference`, :mod:`.training`: helpers of those test folders.
* :mod:`.report`: a real output folder for the report tests.
* :mod:`.processes`: ``bicorseg`` run as a real process (to its end, or in the background and
  always ended), and a wait for what it writes.
* :mod:`.loopback`: the HTTP server on 127.0.0.1 that :mod:`.range_server` (files with byte
  ranges) and :mod:`.hub` (a Hugging Face cache filled by hand and the Hub's endpoints) build on;
  :mod:`.temp_owners`: temporary files of the atomic-output scheme, live or stale.

Fixtures that change global state (seeds, torch threads) live in the conftests, not here.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

# bicorseg's warnings fail a test (pyproject.toml); a test that reads them as the command line prints
# them (``bicorseg predict: warning: ...``) lets them through with this mark
prints_warnings = pytest.mark.filterwarnings("default::bicorseg.errors.BicorsegWarning")


def in_ci() -> bool:
    """Whether the tests run in CI (``CI`` set to anything but empty, ``0`` or ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require(module: str) -> ModuleType:
    """``module`` imported, or the test skipped (a failure in CI): for optional dependencies only."""
    __tracebackhide__ = True  # the skip names the test's line, not this one
    return pytest.importorskip(
        module, reason=f"needs {module}, an optional dependency: pip install -e '.[dev]'"
    )
