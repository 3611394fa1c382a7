"""Shared helpers of the training tests: run the CLI in-process, read a run's metrics."""

from __future__ import annotations

import csv
from pathlib import Path

from bicorseg.cli.main import main
from tests.helpers.shared import REPO_ROOT

REPO = REPO_ROOT
TINY = str(REPO / "configs" / "tiny-test.yaml")


def cli(*args: str) -> int:
    return main([str(a) for a in args])


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "csv" / "metrics.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def column(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    """(step, value) of every row where ``name`` was logged."""
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
