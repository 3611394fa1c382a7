"""Temporary files made by other real processes, alive or ended, through bicorseg's own scheme.

A forked child calls :func:`bicorseg.atomic.new_temp` (so the names are exactly those the code
writes, with the child's pid in them), then either exits (its temporary files are stale) or waits
until the test is done (they belong to a live run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bicorseg.atomic import new_temp


def _fork_owner(targets: Sequence[Path], stay: bool) -> tuple[int, list[Path], int | None]:
    paths_read, paths_write = os.pipe()
    hold_read, hold_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only os-level work, then leave without running any cleanup
        try:
            os.close(paths_read)
            os.close(hold_write)
            made = [str(new_temp(t)) for t in targets]
            os.write(paths_write, ("\n".join(made) + "\n").encode())
            os.close(paths_write)
            if stay:
                os.read(hold_read, 1)  # returns when the parent closes its end
        finally:
            os._exit(0)
    os.close(paths_write)
    os.close(hold_read)
    with os.fdopen(paths_read) as stream:
        made = [Path(line) for line in stream.read().splitlines() if line]
    if not stay:
        os.close(hold_write)
        os.waitpid(pid, 0)  # reaped: the pid no longer exists
        return pid, made, None
    return pid, made, hold_write


def stale_temps(*targets: Path) -> list[Path]:
    """Temporary files for ``targets`` whose owner process has ended."""
    return _fork_owner(targets, stay=False)[1]


@contextmanager
def live_temps(*targets: Path) -> Iterator[list[Path]]:
    """Temporary files for ``targets`` owned by a process that runs until the block ends."""
    pid, made, hold = _fork_owner(targets, stay=True)
    try:
        yield made
    finally:
        os.close(hold)
        os.waitpid(pid, 0)
