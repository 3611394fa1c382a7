"""The command line run in-process (``main``), with its stderr lines: for tests of one-line refusals."""

from __future__ import annotations

import pytest

from bicorseg.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, list[str]]:
    """Exit status and the non-empty stderr lines of ``bicorseg ARGS``."""
    status = main([str(a) for a in args])
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


def refused(capsys: pytest.CaptureFixture[str], *args: object) -> str:
    """Run a command that must be refused: exit 2 and exactly one line, which is returned."""
    status, lines = run_cli(capsys, *args)
    assert status == 2 and len(lines) == 1, (status, lines)
    return lines[0]
