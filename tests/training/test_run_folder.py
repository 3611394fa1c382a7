"""The run folder of ``bicorseg train``: a run is never written over by surprise, a failed start writes nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.training import TINY, cli, column, read_metrics


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for folders)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real one-epoch run with validation (config.yaml, checkpoints, logs, val_metrics.json)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert cli("train", "--config", TINY, "--trainer.max_epochs", "1", "--output", run) == 0
    return run


@pytest.fixture
def old_run(finished_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "notes.txt").write_text("the user's own file")
    return run


def _error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("bicorseg")]


def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(old_run: Path, capsys) -> None:
    before = _snapshot(old_run)
    assert cli("train", "--config", TINY, "--output", old_run) == 2
    (line,) = _error_lines(capsys)
    assert line.startswith(f"bicorseg train: error: --output: {old_run} already holds a run (config.yaml, ")
    assert "--resume" in line and "--overwrite" in line
    assert _snapshot(old_run) == before


@pytest.mark.parametrize("part", ["config.yaml", "checkpoints", "logs"])
def test_any_part_of_a_run_marks_the_folder(part: str, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    (run / part).mkdir(parents=True) if "." not in part else (run.mkdir(), (run / part).write_text("x"))
    before = _snapshot(run)
    assert cli("train", "--config", TINY, "--output", run) == 2
    assert f"already holds a run ({part})" in _error_lines(capsys)[0]
    assert _snapshot(run) == before


def test_a_folder_of_other_files_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("not a run")
    assert cli("train", "--config", TINY, "--trainer.max_epochs", "1", "--output", tmp_path) == 0
    assert (tmp_path / "readme.txt").read_text() == "not a run"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_overwrite_replaces_the_run_and_keeps_other_files(old_run: Path) -> None:
    assert (old_run / "checkpoints" / "best.ckpt").is_file()
    assert cli("train", "--config", TINY, "--trainer.max_epochs", "2", "--data.val_split", "null",
               "--output", old_run, "--overwrite") == 0  # fmt: skip
    # the new run has no validation: no best checkpoint and no validation report; the old ones are gone
    assert sorted(p.name for p in (old_run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert not (old_run / "val_metrics.json").exists()
    assert torch.load(old_run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    assert "val_split: null" in (old_run / "config.yaml").read_text()
    rows = (old_run / "logs" / "csv" / "metrics.csv").read_text().splitlines()
    assert not any("val/" in r for r in rows[:1])  # the old run's log (with val columns) was replaced
    assert (old_run / "notes.txt").read_text() == "the user's own file"


def test_a_failed_overwrite_keeps_the_old_run(old_run: Path, tmp_path: Path, capsys) -> None:
    before = _snapshot(old_run)
    missing = tmp_path / "no-such-data"
    assert cli("train", "--config", TINY, "--data.dataset", "vaihingen", "--data.root", missing,
               "--output", old_run, "--overwrite") == 2  # fmt: skip
    assert str(missing) in _error_lines(capsys)[0]
    assert _snapshot(old_run) == before


def test_resume_and_overwrite_exclude_each_other(old_run: Path, capsys) -> None:
    before = _snapshot(old_run)
    assert cli("train", "--config", TINY, "--output", old_run, "--resume", "--overwrite") == 2
    assert "exclude each other" in _error_lines(capsys)[0]
    assert _snapshot(old_run) == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--data.dataset", "vaihingen", "--data.root", "{tmp}/missing"], "missing"),  # no data there
        (["--data.batch_size", "64"], "data.batch_size"),  # more than the 16 samples
        (["--data.train_samples", "[no-such-sample]"], "data.train_samples"),  # a name that is not there
        (["--model.backbone", "convnext_tiny", "--model.pretrained", "{tmp}/weights.pth"], "weights.pth"),
    ],
    ids=["missing-data", "batch-too-large", "unknown-sample", "missing-weights"],
)
def test_a_failed_start_writes_nothing(options: list[str], message: str, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    assert cli("train", "--config", TINY, "--output", run, *options) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and message in lines[0], lines
    assert not run.exists()  # no config.yaml, no logs, no checkpoints folder


@pytest.mark.parametrize("mode", [["--overwrite"], ["--resume"]], ids=["overwrite", "resume"])
def test_a_run_never_writes_through_a_link_out_of_its_folder(
    mode: list[str], finished_run: Path, tmp_path: Path, capsys
) -> None:
    other = tmp_path / "other"
    shutil.copytree(finished_run, other)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(other / "checkpoints")
    before, own = _snapshot(other), _snapshot(run)
    assert cli("train", "--config", TINY, "--trainer.max_epochs", "2", "--output", run, *mode) == 2
    (line,) = _error_lines(capsys)
    assert line == (
        f"bicorseg train: error: --output: {run / 'checkpoints'} is a symbolic link (to {other / 'checkpoints'}): "
        "a run writes only inside its own folder; remove the link or choose another folder"
    )
    assert _snapshot(other) == before  # the other run's best.ckpt and last.ckpt are as they were
    assert _snapshot(run) == own and os.readlink(run / "checkpoints") == str(other / "checkpoints")


def test_resuming_with_another_class_count_is_one_line_and_writes_nothing(old_run: Path, capsys) -> None:
    before = _snapshot(old_run)
    assert cli("train", "--config", TINY, "--output", old_run, "--resume", "--model.num_classes", "5") == 2
    (line,) = _error_lines(capsys)
    assert line == (
        f"bicorseg train: error: cannot resume from {old_run / 'checkpoints' / 'last.ckpt'}: it was trained "
        "with another model (model.num_classes is 4 there, 5 here); resume with the run's own config, "
        "or start a new run"
    )
    assert _snapshot(old_run) == before  # no new config.yaml, no logs


def test_resume_without_a_config_continues_with_the_runs_own(old_run: Path) -> None:
    own = (old_run / "config.yaml").read_text()
    assert "backbone: convnext_nano" in own and "max_epochs: 1" in own  # the tiny run, not the defaults
    assert cli("train", "--output", old_run, "--resume", "--trainer.max_epochs", "2") == 0
    assert (old_run / "config.yaml").read_text() == own.replace("max_epochs: 1", "max_epochs: 2")
    assert torch.load(old_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    # metrics.csv continues: the first epoch's rows are kept (Lightning's CSVLogger would delete them)
    steps = [step for step, _ in column(read_metrics(old_run), "train/total_step")]
    assert steps == list(range(8))


def test_a_resumed_run_with_more_epochs_ends_its_cosine_at_the_new_end(old_run: Path) -> None:
    # the one-epoch run ended annealed (min_lr); past its saved length the cosine would climb back up
    assert cli("train", "--output", old_run, "--resume", "--trainer.max_epochs", "3") == 0
    rates = [lr for step, lr in column(read_metrics(old_run), "train/lr") if step >= 4]
    min_lr = yaml.safe_load((old_run / "config.yaml").read_text())["optimizer"]["min_lr"]
    assert len(rates) == 8 and max(rates) == pytest.approx(min_lr)
