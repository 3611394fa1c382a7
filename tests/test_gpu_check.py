"""``benchmarks/gpu_check.sh`` without a GPU: one line naming what is missing, exit 2, nothing run."""

from __future__ import annotations

import os
import subprocess

from tests.helpers.shared import REPO_ROOT


def test_gpu_check_refuses_in_one_line_without_a_gpu() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, on any machine
    done = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=120, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert done.stderr.startswith("gpu_check.sh: torch ") and "sees no CUDA GPU" in done.stderr
