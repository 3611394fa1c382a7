"""Real ``bicorseg`` processes: the command line, its environment, a run that is always ended, a wait.

* :data:`CLI_ENV`: the environment of a command run by a test (one torch thread a process, so that
  runs side by side do not crowd each other; Python's warnings off, as a user's terminal shows
  bicorseg's own lines only);
* :func:`bicorseg_command` and :func:`cli_subprocess`: ``python -m bicorseg.cli.main ARGS``, the
  command, or run to its end;
* :func:`started`: a run started in the background and ended whatever the test does (resumed if a
  test paused it, then killed with its process group);
* :func:`wait_until`: wait for what a run writes, failing at once when the run has ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from tests.helpers.shared import REPO_ROOT

CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def bicorseg_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "bicorseg.cli.main", *map(str, args)]


def _environment(env: dict[str, str | None] | None) -> dict[str, str]:
    """:data:`CLI_ENV` with ``env`` over it (None: the variable unset)."""
    return {k: v for k, v in {**CLI_ENV, **(env or {})}.items() if v is not None}


def cli_subprocess(
    *args: object, env: dict[str, str | None] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m bicorseg.cli.main ARGS`` run to its end in a fresh process (``env``: see
    :func:`_environment`)."""
    return subprocess.run(
        bicorseg_command(*args),
        capture_output=True,
        text=True,
        env=_environment(env),
        timeout=timeout,
        cwd=REPO_ROOT,
    )


@contextmanager
def started(
    *args: object, env: dict[str, str | None] | None = None, group: bool = False
) -> Iterator[subprocess.Popen]:
    """``bicorseg ARGS`` running in the background (stderr piped, as text), ended when the block ends.

    ``group``: the run leads a process group of its own, with SIGINT handled as a terminal's
    foreground job has it (a shell's background job ignores it, and children inherit that), so a
    test can send Ctrl-C to the run and its workers; the group is killed at the end.
    """
    process = subprocess.Popen(
        bicorseg_command(*args),
        env=_environment(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if group else None,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused run cannot end otherwise
            if group:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()


def wait_until(
    process: subprocess.Popen, condition: Callable[[], bool], what: str, timeout: float = 240
) -> None:
    """Wait until ``condition()`` holds while ``process`` runs; fail naming ``what`` when it ends first
    (with its errors) or when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, (
            f"the run ended before {what}: {process.stderr.read() if process.stderr else ''}"
        )
        assert time.monotonic() < deadline, f"{what}: not in {timeout} s"
        time.sleep(0.02)
