"""What ``bicorseg train`` shows while it runs: plain lines in a pipe (as under nohup, SLURM, CI), a tidy bar in a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.training import REPO, TINY

TERMS = ("total", "main_softce", "main_dice", "aux_softce", "heatmap_0", "heatmap_1", "fisher_0", "fisher_1")
NOISE = ("v_num", "Tip", "litlogger", "GPU available", "Deprecat", "deprecat", "train/total_step")


def _command(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bicorseg.cli.main", "train", "--config", TINY, "--output", str(run),
            "--trainer.progress_bar", "true", *extra]  # fmt: skip


def _env() -> dict[str, str]:
    # warnings shown (the helpers of other tests hide them): no deprecation warning may come from our calls
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default", "COLUMNS": "100"}


@pytest.mark.slow
def test_plain_lines_as_they_happen_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    process = subprocess.Popen(
        _command(tmp_path / "run", "--trainer.log_every_n_steps", "2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO,
    )  # fmt: skip
    lines = []
    running_at_first_step = None
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if running_at_first_step is None and line.startswith("step "):
            running_at_first_step = process.poll() is None
    process.wait(timeout=300)
    err = "".join(lines)
    assert process.returncode == 0, err
    assert running_at_first_step, "the first step line came only once the run was over"
    assert "\r" not in err and "\x1b[" not in err
    assert not [word for word in NOISE if word in err], err
    assert err.startswith("training: 16 training samples, batch 4 x 1 process(es), 4 batches per epoch")
    steps = [line for line in lines if line.startswith("step ")]
    assert [int(line.split()[1]) for line in steps] == [2, 4, 6, 8]
    for line in steps:
        assert all(f" {term} " in line for term in TERMS), line
        assert re.search(r"; lr [0-9.e-]+; [0-9.]+ samples/s$", line.strip()), line
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all(f" {term} " in line and "samples/s" in line for line in epochs for term in TERMS)
    validations = [i for i, line in enumerate(lines) if line.startswith("validation after epoch")]
    assert len(validations) == 2 and "mIoU" in lines[validations[0]]
    table = lines[validations[0] + 1 : validations[0] + 8]
    assert table[0].split()[:3] == ["class", "IoU", "Prec."]
    assert [row.split()[0] for row in table[2:6]] == ["class_0", "class_1", "class_2", "class_3"]


@pytest.mark.slow
def test_tidy_bar_in_a_terminal(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    process = subprocess.Popen(_command(tmp_path / "run"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=slave, env=_env(), cwd=REPO)  # fmt: skip
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(master)
    process.wait(timeout=60)
    shown = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, shown
    assert "Epoch 1/2" in shown and "Epoch 2/2" in shown and "loss:" in shown and "mIoU:" in shown
    assert not [word for word in NOISE if word in shown], shown
    assert "epoch 1/2 done" in shown and "validation after epoch 1" in shown  # the lines above the bar
    assert "step 2 (" not in shown  # per-step lines only where there is no bar
