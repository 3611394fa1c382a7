"""Fixtures of the training tests that change global state."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread: None) -> None:
    """Every training test runs on one torch thread (the suite's ``one_thread`` fixture)."""
