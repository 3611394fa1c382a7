"""Data parallel on CPU: two gloo processes give the loss values and metrics of one process on the same data.

Both runs go through the real command line (Lightning's ``ddp`` strategy launches the second process).
Two processes with 2 samples each see, at every step, the same 4 samples as one process with 4: the
Fisher class means and the Dice sums are taken over the global batch, SoftCE averages to the global
mean, the gradients are exact, so every logged term and the validation confusion matrix agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from training_helpers import TINY, cli_subprocess, column, one_thread, read_metrics  # noqa: F401

TERMS = ("main_softce", "main_dice", "aux_softce", "heatmap_0", "heatmap_1", "fisher_0", "fisher_1", "total")
COMMON = ("--data.shuffle", "false", "--trainer.max_epochs", "2", "--optimizer.lr", "1e-3")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path) -> None:
    single, parallel = tmp_path / "single", tmp_path / "ddp"
    done = cli_subprocess("train", "--config", TINY, "--output", single, *COMMON,
                          "--data.batch_size", "4", "--data.val_batch_size", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    done = cli_subprocess("train", "--config", TINY, "--output", parallel, *COMMON,
                          "--trainer.strategy", "ddp", "--trainer.devices", "2",
                          "--data.batch_size", "2", "--data.val_batch_size", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained to epoch 2, step 8" in done.stdout  # 8 global steps of 2 x 2 samples

    rows_single, rows_parallel = read_metrics(single), read_metrics(parallel)
    for term in TERMS:
        one, two = column(rows_single, f"train/{term}_step"), column(rows_parallel, f"train/{term}_step")
        assert [s for s, _ in one] == [s for s, _ in two] == list(range(8)), term
        assert [v for _, v in two] == pytest.approx([v for _, v in one], rel=2e-5, abs=1e-6), term

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
