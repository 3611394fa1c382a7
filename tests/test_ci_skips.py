"""A test that lacks what it needs skips on a contributor's machine and fails under ``CI=true``,
unless it needs a GPU (marked ``cuda``): CI cannot pass by skipping (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import in_ci
from tests.helpers.shared import REPO_ROOT

PROBE = """
import pytest

from tests.helpers import require
from tests.helpers.shared import shared_path


def test_needs_the_data():
    shared_path("data")


def test_needs_an_extra():
    require("bicorseg_absent_extra")


def test_skips():
    pytest.skip("no reason is good enough in CI")


@pytest.mark.cuda
def test_needs_a_gpu():
    pytest.skip("no GPU here")


def test_runs():
    pass
"""
MODULE_PROBE = """
from tests.helpers import require

require("bicorseg_absent_extra")


def test_never_collected():
    pass
"""


def _run_probe(tmp_path: Path, probe: str, ci: str | None) -> subprocess.CompletedProcess:
    """``probe`` run by pytest with the suite's conftest as a plugin, with the shared data absent."""
    (tmp_path / "test_probe.py").write_text(probe)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["BICORSEG_SHARED"] = str(tmp_path / "absent")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", "-p", "tests.conftest",
               "-W", "ignore", "test_probe.py"]  # fmt: skip
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_outside_ci_what_is_missing_skips_with_its_reason(tmp_path):
    result = _run_probe(tmp_path, PROBE, None)
    assert result.returncode == 0 and "1 passed, 4 skipped" in result.stdout, result.stdout
    assert (
        f"{tmp_path / 'absent' / 'data'} is absent: this test needs the shared sample data" in result.stdout
    )
    assert "needs bicorseg_absent_extra, an optional dependency" in result.stdout


@pytest.mark.slow
def test_in_ci_only_a_test_that_needs_a_gpu_skips(tmp_path):
    result = _run_probe(tmp_path, PROBE, "true")
    assert result.returncode == 1 and "3 failed, 1 passed, 1 skipped" in result.stdout, result.stdout
    failed = sorted(
        line.split("::")[1].split()[0] for line in result.stdout.splitlines() if line.startswith("FAILED")
    )
    assert failed == ["test_needs_an_extra", "test_needs_the_data", "test_skips"], result.stdout
    assert (
        f"{tmp_path / 'absent' / 'data'} is absent: this test needs the shared sample data" in result.stdout
    )


@pytest.mark.slow
def test_in_ci_a_module_skipped_while_collected_fails(tmp_path):
    result = _run_probe(tmp_path, MODULE_PROBE, "true")
    assert result.returncode != 0 and "1 error" in result.stdout, result.stdout
    assert "skipped under CI=true" in result.stdout and "needs bicorseg_absent_extra" in result.stdout


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
