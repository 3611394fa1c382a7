"""The launch recipes of the training guide (docs/training.md), run for real on CPU: torchrun, two nodes on loopback, SLURM tasks.

Each recipe drives the real ``bicorseg train`` command line in two gloo processes with 2 samples
each; one process with 4 samples sees the same global batch at every step, so every logged loss
term must agree with it (the Fisher means and Dice sums are global, SoftCE averages to the global
mean: the two ranks compute one loss). Only rank 0 writes: the run folder holds exactly one
config, one set of checkpoints and one set of logs.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.processes import cli_subprocess
from tests.helpers.training import REPO, TINY, column, read_metrics

pytestmark = pytest.mark.slow

TERMS = ("main_softce", "main_dice", "aux_softce", "heatmap_0", "heatmap_1", "fisher_0", "fisher_1", "total")
# the original's independent sub-pixel start: at width 32 the tied start leaves the head's LayerNorm
# two distinct values, so rounding (the order of DDP's gradient sums) moves the terms past 2e-5
COMMON = ("--data.shuffle", "false", "--trainer.max_epochs", "2", "--optimizer.lr", "1e-3",
          "--model.subpixel_init", "independent")  # fmt: skip
PER_RANK = ("--trainer.strategy", "ddp", "--data.batch_size", "2", "--data.val_batch_size", "2")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
TRAIN = [sys.executable, "-m", "bicorseg.cli.main", "train", "--config", TINY]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> list[dict[str, str]]:
    run = tmp_path_factory.mktemp("single") / "run"
    done = cli_subprocess("train", "--config", TINY, "--output", run, *COMMON, "--data.batch_size", "4",
                          "--data.val_batch_size", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return read_metrics(run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_terms_and_one_writer(run: Path, reference: list[dict[str, str]], stdout: str) -> None:
    rows = read_metrics(run)
    for term in TERMS:
        one, two = column(reference, f"train/{term}_step"), column(rows, f"train/{term}_step")
        assert [s for s, _ in two] == [s for s, _ in one] == list(range(8)), term
        assert [v for _, v in two] == pytest.approx([v for _, v in one], rel=2e-5, abs=1e-6), term
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    events = [f for f in files if "tfevents" in f]
    assert len(events) == 1, files  # one TensorBoard writer
    assert [f for f in files if "tfevents" not in f] == [
        "checkpoints/best.ckpt", "checkpoints/last.ckpt", "config.yaml", "logs/csv/metrics.csv",
        "logs/tensorboard/hparams.yaml", "val_metrics.json",
    ], files  # fmt: skip
    assert stdout.count("trained to epoch 2, step 8") == 1, stdout  # one summary, by rank 0


def test_torchrun_standalone_two_processes(tmp_path: Path, one_process) -> None:
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "bicorseg.cli.main", "train", "--config", TINY, "--output", str(run), *COMMON, *PER_RANK,
               "--trainer.devices", "2"]  # fmt: skip
    done = subprocess.run(command, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_terms_and_one_writer(run, one_process, done.stdout)


def _two_processes(run: Path, env_of, extra: tuple[str, ...]) -> str:
    """Rank 0, then rank 1 once rank 0 has laid out the run folder (a node that starts late)."""

    def start(rank: int) -> subprocess.Popen:
        return subprocess.Popen([*TRAIN, "--output", str(run), *COMMON, *PER_RANK, *extra], env={**ENV, **env_of(rank)},
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    processes = [start(0)]
    deadline = time.monotonic() + 300
    while not (run / "config.yaml").exists():
        assert processes[0].poll() is None, processes[0].communicate()[1][-3000:]
        assert time.monotonic() < deadline, "rank 0 did not start the run in time"
        time.sleep(0.1)
    processes.append(start(1))
    try:
        while any(p.poll() is None for p in processes):  # a rank that fails leaves the other waiting
            failed = [p for p in processes if p.poll() not in (None, 0)]
            assert not failed, failed[0].communicate()[1][-3000:]
            assert time.monotonic() < deadline + 300, "the ranks did not finish in time"
            time.sleep(0.2)
        outputs = [p.communicate() for p in processes]
    finally:
        for p in processes:
            p.kill()
            p.wait()
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    return "".join(out for out, _ in outputs)


def test_two_nodes_on_loopback(tmp_path: Path, one_process) -> None:
    """``--trainer.num_nodes 2``: two "nodes" of one process each, found through MASTER_ADDR and NODE_RANK
    (Lightning's general-cluster recipe); the run folder is shared, as on a cluster file system."""
    port = str(_free_port())
    run = tmp_path / "run"
    stdout = _two_processes(
        run,
        lambda rank: {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "NODE_RANK": str(rank),
            "WORLD_SIZE": "2",
        },
        ("--trainer.num_nodes", "2", "--trainer.devices", "1"),
    )
    _same_terms_and_one_writer(run, one_process, stdout)


def test_slurm_tasks_match_the_devices(tmp_path: Path, one_process) -> None:
    """Two SLURM tasks on one node (what ``srun`` sets for ``--ntasks-per-node 2``) with
    ``--trainer.devices 2``: Lightning's SLURM environment runs them as the two ranks."""
    run = tmp_path / "run"
    job = {"SLURM_JOB_ID": str(_free_port()), "SLURM_JOB_NAME": "bicorseg", "SLURM_NTASKS": "2",
           "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1",
           "MASTER_ADDR": "127.0.0.1"}  # fmt: skip
    stdout = _two_processes(
        run,
        lambda rank: {**job, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
        ("--trainer.devices", "2"),
    )
    _same_terms_and_one_writer(run, one_process, stdout)


def test_the_slurm_example_asks_for_one_task_per_device() -> None:
    """The training guide's sbatch script: ``--ntasks-per-node`` equals ``--trainer.devices`` and
    ``--nodes`` equals ``--trainer.num_nodes`` (a mismatch leaves GPUs idle or fails at start)."""
    guide = (REPO / "docs" / "training.md").read_text()
    script = re.search(r"```bash\n(#!/bin/bash\n#SBATCH.*?)```", guide, re.S)
    assert script, "docs/training.md has no sbatch example"
    text = script[1]
    tasks = int(re.search(r"#SBATCH --ntasks-per-node=(\d+)", text)[1])
    gpus = int(re.search(r"#SBATCH --gpus-per-node=(\d+)", text)[1])
    nodes = int(re.search(r"#SBATCH --nodes=(\d+)", text)[1])
    assert int(re.search(r"--trainer\.devices (\d+)", text)[1]) == tasks == gpus
    assert int(re.search(r"--trainer\.num_nodes (\d+)", text)[1]) == nodes
    assert "srun bicorseg train" in text
