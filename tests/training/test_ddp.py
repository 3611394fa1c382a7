"""Data parallel on CPU: two gloo processes give the loss values and metrics of one process on the same data.

Both runs go through the real command line (Lightning's ``ddp`` strategy launches the second process).
Two processes with 2 samples each see, at every step, the same 4 samples as one process with 4: the
Fisher class means and the Dice sums are taken over the global batch, SoftCE averages to the global
mean, the gradients are exact, so every logged term and the validation confusion matrix agree.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bicorseg.atomic import find_temps
from tests.helpers.processes import cli_subprocess
from tests.helpers.training import REPO, TINY, column, read_metrics

TERMS = ("main_softce", "main_dice", "aux_softce", "heatmap_0", "heatmap_1", "fisher_0", "fisher_1", "total")
# the original's independent sub-pixel start: at width 32 the tied start leaves the head's LayerNorm
# two distinct values, so rounding (the order of DDP's gradient sums) moves the terms past 2e-5
COMMON = ("--data.shuffle", "false", "--trainer.max_epochs", "2", "--optimizer.lr", "1e-3",
          "--model.subpixel_init", "independent")  # fmt: skip


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One process, 4 samples a step, no shuffling."""
    run = tmp_path_factory.mktemp("single") / "run"
    done = cli_subprocess("train", "--config", TINY, "--output", run, *COMMON,
                          "--data.batch_size", "4", "--data.val_batch_size", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def _same_terms(first: Path, second: Path) -> None:
    rows_first, rows_second = read_metrics(first), read_metrics(second)
    for term in TERMS:
        one, two = column(rows_first, f"train/{term}_step"), column(rows_second, f"train/{term}_step")
        assert [s for s, _ in one] == [s for s, _ in two] == list(range(8)), term
        assert [v for _, v in two] == pytest.approx([v for _, v in one], rel=2e-5, abs=1e-6), term


@pytest.mark.slow
def test_one_data_parallel_process_keeps_the_data_order(single: Path, tmp_path: Path) -> None:
    """``--trainer.strategy ddp`` with one process: the batches of one plain process (data.shuffle false
    holds; Lightning's own sampler would shuffle)."""
    parallel = tmp_path / "ddp1"
    done = cli_subprocess("train", "--config", TINY, "--output", parallel, *COMMON, "--trainer.strategy", "ddp",
                          "--trainer.devices", "1", "--data.batch_size", "4", "--data.val_batch_size", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _same_terms(single, parallel)


@pytest.mark.slow
def test_two_processes_match_one(single: Path, tmp_path: Path) -> None:
    parallel = tmp_path / "ddp"
    done = cli_subprocess("train", "--config", TINY, "--output", parallel, *COMMON,
                          "--trainer.strategy", "ddp", "--trainer.devices", "2",
                          "--data.batch_size", "2", "--data.val_batch_size", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained to epoch 2, step 8" in done.stdout  # 8 global steps of 2 x 2 samples

    _same_terms(single, parallel)

    one = json.loads((single / "val_metrics.json").read_text())
    two = json.loads((parallel / "val_metrics.json").read_text())
    total = sum(map(sum, one["confusion_matrix"]))
    assert total == sum(map(sum, two["confusion_matrix"])) == 8 * 62 * 62  # every labelled pixel, once
    differing = sum(
        abs(a - b) for ra, rb in zip(one["confusion_matrix"], two["confusion_matrix"]) for a, b in zip(ra, rb)
    )
    assert differing <= 1e-4 * total  # at most a near-tie pixel or two may flip
    for key in ("miou", "mean_f1", "oa"):
        assert two[key] == pytest.approx(one[key], abs=1e-3), key


@pytest.mark.slow
def test_two_processes_score_an_odd_number_of_validation_samples_once(tmp_path: Path) -> None:
    """7 validation samples on 2 processes: the eighth that evens out the shards scores nothing."""
    parallel = tmp_path / "ddp"
    done = cli_subprocess("train", "--config", TINY, "--output", parallel, *COMMON, "--trainer.max_epochs", "1",
                          "--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.batch_size", "2",
                          "--data.val_batch_size", "2", "--data.synthetic_size=[64,8,7]",
                          env={"PYTHONWARNINGS": None})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sync_dist" not in done.stderr  # the scores are the summed matrix's: nothing to recommend
    matrix = json.loads((parallel / "val_metrics.json").read_text())["confusion_matrix"]
    assert sum(map(sum, matrix)) == 7 * 62 * 62  # every labelled pixel, once


@pytest.mark.slow
def test_sigterm_stops_both_processes_at_the_same_step(tmp_path: Path) -> None:
    """SIGTERM to rank 0 only: both processes agree on the step, rank 0 alone saves and reports."""
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bicorseg.cli.main", "train", "--config", TINY, "--output", str(run),
         "--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.batch_size", "2",
         "--data.synthetic_size=[64,64,8]", "--trainer.max_epochs", "50"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    try:
        while not last.is_file():  # the first epoch (16 global steps) is done
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the first epoch did not end in time"
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if line.startswith("bicorseg")]
    assert len(ours) == 1 and ours[0].startswith("bicorseg train: interrupted by SIGTERM at epoch "), stderr
    step = int(re.search(r"step (\d+);", ours[0]).group(1))
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == step > 16
    assert find_temps(run / "checkpoints") == []
