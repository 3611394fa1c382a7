"""Tests that need ../shared skip on a contributor's clone without it, and fail (not skip) in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.shared import REPO_ROOT, in_ci

PROBE = """
import pytest

from tests.helpers.shared import shared_path


@pytest.mark.shared
def test_needs_the_data():
    shared_path("data")
"""


def _run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["BICORSEG_SHARED"] = str(tmp_path / "absent")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    if ci is not None:
        env["CI"] = ci
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore",
        "test_probe.py",
    ]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_absent_shared_data_skips_outside_ci(tmp_path):
    result = _run_probe(tmp_path, None)
    assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout
    assert (
        f"{tmp_path / 'absent' / 'data'} is absent: this test needs the shared sample data" in result.stdout
    )


@pytest.mark.slow
def test_absent_shared_data_fails_in_ci(tmp_path):
    result = _run_probe(tmp_path, "true")
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout
    assert (
        f"{tmp_path / 'absent' / 'data'} is absent: this test needs the shared sample data" in result.stdout
    )


def test_what_counts_as_ci(monkeypatch):
    for value, expected in (
        ("true", True),
        ("1", True),
        ("yes", True),
        ("", False),
        ("false", False),
        ("0", False),
    ):
        monkeypatch.setenv("CI", value)
        assert in_ci() is expected, value
    monkeypatch.delenv("CI")
    assert not in_ci()
