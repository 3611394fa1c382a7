"""The CUDA paths on one GPU: predict, evaluate and a few training steps at fp32 and bf16, a
data-parallel start over NCCL, and the speed benchmark against the reference form of the method.

Every test is marked ``cuda``: where torch sees no CUDA GPU they are skipped (tests/conftest.py),
in CI too. ``benchmarks/gpu_check.sh`` runs them on a GPU machine, with the GPU benchmarks. The CPU
runs they compare with are made here, on the same inputs; a GPU result is never compared bit for bit
(cuDNN runs fp32 convolutions in TF32 by default, bf16 rounds), only as far as a correct run of a
barely trained model agrees: 90 % of the pixels (a broken device path agrees on about one pixel in
four for four classes) and the same pixel count.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from tests.helpers.inference import random_image, run, tiny_checkpoint, write_geotiff
from tests.helpers.processes import cli_subprocess
from tests.helpers.training import REPO, TINY, column, read_metrics

pytestmark = pytest.mark.cuda

PRECISIONS = ("fp32", "bf16")
TERMS = ("main_softce", "main_dice", "aux_softce", "heatmap_0", "heatmap_1", "fisher_0", "fisher_1", "total")
# the tiny recipe: 16 samples in batches of 4, one epoch; no shuffling, so runs see the same batches
TRAIN = ("--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.max_epochs", "1",
         "--data.shuffle", "false")  # fmt: skip
STEPS = 4


def _on_cuda(action: Callable[[], object]) -> int:
    """Run ``action`` and return the peak CUDA memory it allocated (bytes): > 0 when it used the GPU."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    action()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def _agreement(first: np.ndarray, second: np.ndarray) -> float:
    assert first.shape == second.shape
    return float((first == second).mean())


# --- predict --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A GeoTIFF, a tiny random-weight checkpoint, and its class map predicted on the CPU in fp32."""
    base = tmp_path_factory.mktemp("cuda_predict")
    source = write_geotiff(base / "in" / "scene.tif", random_image(3, 200, 260))
    checkpoint = tiny_checkpoint(base / "tiny.ckpt")
    out = base / "cpu"
    done = cli_subprocess("predict", source, "--checkpoint", checkpoint, "--output", out, "--tile", "128",
                          "--device", "cpu", "--precision", "fp32")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with rasterio.open(out / "scene.tif") as result:
        return source, checkpoint, result.read(1)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_predict_on_cuda(scene, precision: str, tmp_path: Path, capsys) -> None:
    source, checkpoint, on_cpu = scene
    out = tmp_path / precision
    outcome: list[tuple[int, str, str]] = []
    argv = ("predict", source, "--checkpoint", checkpoint, "--output", out, "--tile", "128", "--device", "cuda",
            "--precision", precision, "--probabilities", "float32")  # fmt: skip
    peak = _on_cuda(lambda: outcome.append(run(capsys, *argv)))
    code, _, err = outcome[0]
    assert code == 0, err
    assert peak > 0  # the model ran on the GPU
    with rasterio.open(out / "scene.tif") as result, rasterio.open(source) as src:
        assert (result.crs, result.transform) == (src.crs, src.transform)
        assert result.tags()["bicorseg_settings"].endswith(f" precision={precision}")
        on_gpu = result.read(1)
    assert _agreement(on_gpu, on_cpu) > 0.9
    with rasterio.open(out / "scene_prob.tif") as probabilities:
        values = probabilities.read()
    assert np.isfinite(values).all() and np.allclose(values.sum(0), 1, atol=1e-3)


# --- training, data parallel, evaluate --------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_runs(tmp_path_factory) -> dict[str, Path]:
    """The tiny recipe trained for one epoch on one GPU, at each precision."""
    runs = {}
    for precision in PRECISIONS:
        runs[precision] = tmp_path_factory.mktemp(f"cuda_{precision}") / "run"
        done = cli_subprocess("train", "--config", TINY, "--output", runs[precision], *TRAIN,
                              "--trainer.precision", precision)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    return runs


@pytest.mark.parametrize("precision", PRECISIONS)
def test_training_steps_on_cuda(gpu_runs, precision: str) -> None:
    run_dir = gpu_runs[precision]
    config = (run_dir / "config.yaml").read_text()
    assert "accelerator: gpu" in config and f"precision: {precision}" in config
    rows = read_metrics(run_dir)
    for term in TERMS:
        values = column(rows, f"train/{term}_step")
        assert [s for s, _ in values] == list(range(STEPS)), term
        assert all(math.isfinite(v) for _, v in values), term
    assert column(rows, "val/miou"), "validation ran at the end of the epoch"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, STEPS)
    weights = [v for v in last["state_dict"].values() if v.is_floating_point()]
    assert weights and all(torch.isfinite(w).all() for w in weights)


def test_data_parallel_start_on_one_gpu_over_nccl(gpu_runs, tmp_path: Path) -> None:
    """``--trainer.strategy ddp`` on one GPU: a process group over NCCL, the same losses as one device."""
    run_dir = tmp_path / "ddp"
    done = cli_subprocess("train", "--config", TINY, "--output", run_dir, *TRAIN, "--trainer.strategy", "ddp",
                          env={"NCCL_DEBUG": "INFO"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NCCL INFO" in done.stdout + done.stderr  # NCCL set up a communicator for the process group
    reference, rows = read_metrics(gpu_runs["fp32"]), read_metrics(run_dir)
    for term in TERMS:
        one, ddp = column(reference, f"train/{term}_step"), column(rows, f"train/{term}_step")
        assert [s for s, _ in ddp] == [s for s, _ in one] == list(range(STEPS)), term
        # one process: the global batch is the local one (GPU reductions may differ in the last bits)
        assert [v for _, v in ddp] == pytest.approx([v for _, v in one], rel=1e-3, abs=1e-5), term


def _evaluate(capsys, checkpoint: Path, device: str, precision: str, out: Path) -> dict:
    code, printed, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--dataset", "synthetic",
                             "--split", "val", "--device", device, "--precision", precision, "--output", out)  # fmt: skip
    assert code == 0, err
    assert f"precision: {precision}" in printed
    return json.loads(out.read_text())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_evaluate_on_cuda(gpu_runs, precision: str, tmp_path: Path, capsys) -> None:
    checkpoint = gpu_runs["fp32"] / "checkpoints" / "last.ckpt"  # trained on the GPU, read on both
    on_cpu = _evaluate(capsys, checkpoint, "cpu", "fp32", tmp_path / "cpu.json")
    reports: list[dict] = []
    peak = _on_cuda(
        lambda: reports.append(_evaluate(capsys, checkpoint, "cuda", precision, tmp_path / "gpu.json"))
    )
    on_gpu = reports[0]
    assert peak > 0
    assert on_gpu["convention"]["precision"] == precision
    assert on_gpu["pixels"] == on_cpu["pixels"] > 0
    predicted_gpu = np.asarray(on_gpu["confusion_matrix"]).sum(0)
    predicted_cpu = np.asarray(on_cpu["confusion_matrix"]).sum(0)
    # the same pixels, predicted as the CPU predicts them but for near-ties (as in predict: 90 %)
    assert np.abs(predicted_gpu - predicted_cpu).sum() <= 0.2 * on_cpu["pixels"]
    assert on_gpu["oa"] == pytest.approx(on_cpu["oa"], abs=0.1)


# --- the speed benchmark ----------------------------------------------------------------------------


@pytest.mark.slow
def test_speed_benchmark_on_cuda_against_the_reference_form(tmp_path: Path) -> None:
    """``benchmarks/speed.py --device cuda`` at a small size: every GPU row, the reference among them."""
    out = tmp_path / "speed.json"
    command = [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--device", "cuda", "--sizes", "256",
               "--train-size", "256", "--warmup", "1", "--repeats", "2", "--output", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["gpu"] == torch.cuda.get_device_name()
    rows = {(r["task"], r["variant"]): r for r in report["rows"]}
    assert set(rows) == {
        *(("eval", v) for v in ("reference-fp32", "fp32", "bf16", "fp16")),
        *(("train", v) for v in ("reference-fp32", "fp32", "bf16-mixed")),
    }
    for row in rows.values():
        assert row["device"] == "cuda" and row["seconds"] > 0 and row["peak_growth_mib"] > 0
    # the reference (explicit neck, N-fold CE2F, torchvision's blocks) computes what the product does
    assert rows[("eval", "reference-fp32")]["argmax_agreement_vs_fp32"] > 0.9
    assert rows[("eval", "bf16")]["argmax_agreement_vs_fp32"] > 0.9
    assert "| eval | 256 | reference-fp32 | cuda |" in done.stdout
