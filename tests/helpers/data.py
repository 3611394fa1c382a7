"""Helpers of the data tests: the release fixture generator (a script, loaded by path) and small checks."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.helpers.shared import REPO_ROOT

# The published protocol's splits, tile for tile (written here independently of the code).
VAIHINGEN_SPLITS = {
    "train": "1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 32, 34, 37",
    "val": "30",
    "test": "2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38",
}
POTSDAM_SPLITS = {
    "train": "2_11, 2_12, 3_10, 3_11, 3_12, 4_10, 4_11, 4_12, 5_10, 5_11, 5_12, 6_7, 6_8, 6_9, 6_10, 6_11, "
    "6_12, 7_7, 7_8, 7_9, 7_11, 7_12",
    "val": "2_10",
    "test": "2_13, 2_14, 3_13, 3_14, 4_13, 4_14, 4_15, 5_13, 5_14, 5_15, 6_13, 6_14, 6_15, 7_13",
}


def split_tiles(table: dict[str, str]) -> dict[str, list[str]]:
    return {split: [t.strip() for t in text.split(",")] for split, text in table.items()}


def load_generator() -> ModuleType:
    """scripts/make_release_fixtures.py as a module."""
    name = "make_release_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def expected_patches(height: int, width: int, size: int, stride: int, copies: int) -> int:
    """Patches of a tile padded to a multiple of ``size`` and cut with ``stride`` (times its copies)."""
    padded_h = -(-height // size) * size
    padded_w = -(-width // size) * size
    return copies * ((padded_h - size) // stride + 1) * ((padded_w - size) // stride + 1)
