"""Shared helpers of the training tests: run the CLI in-process or as a real subprocess."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from bicorseg.cli.main import main
from tests.helpers.shared import REPO_ROOT

REPO = REPO_ROOT
TINY = str(REPO / "configs" / "tiny-test.yaml")


def cli(*args: str) -> int:
    return main([str(a) for a in args])


def cli_subprocess(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m bicorseg.cli.main ARGS`` in a fresh process (one torch thread per process)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bicorseg.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "csv" / "metrics.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def column(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    """(step, value) of every row where ``name`` was logged."""
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
