"""The demo on one CPU core: wall time, CPU time, steps and held-out scores for several seeds.

Runs the real command, ``taskset -c CORE bicorseg demo --seed S --output DIR`` (default settings),
once per seed, one after the other, and records for each run: the wall time of the whole command,
the CPU time it used (its children's user + system time), the load average of the machine before
and after (other jobs share it), the steps trained and the held-out mIoU, OA and per-class IoU from
``DIR/metrics.json``. Writes ``benchmarks/results/demo.json``::

    python benchmarks/demo.py [--seeds 42 43 44] [--core 0] [--minutes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(seed: int, core: int, minutes: float, out: Path) -> dict:
    command = ["taskset", "-c", str(core), "bicorseg", "demo", "--seed", str(seed), "--output", str(out)]
    command += ["--minutes", f"{minutes:g}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    convention = metrics["convention"]
    return {
        "seed": seed,
        "command": " ".join(command),
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "training_steps": convention["training_steps"],
        "training_steps_planned": convention["training_steps_planned"],
        "training_seconds": convention["training_seconds"],
        "miou": metrics["miou"],
        "oa": metrics["oa"],
        "iou": {name: scores["iou"] for name, scores in metrics["per_class"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "demo.json"))
    args = parser.parse_args()
    if shutil.which("taskset") is None or shutil.which("bicorseg") is None:
        raise SystemExit("needs taskset (util-linux) and the bicorseg command on PATH")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bicorseg-demo-bench-") as scratch:
        for seed in args.seeds:
            result = run(seed, args.core, args.minutes, Path(scratch) / f"seed{seed}")
            print(json.dumps(result), flush=True)
            runs.append(result)
    mious = [r["miou"] for r in runs]
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), {platform.python_version()}",
        "runs": runs,
        "miou_mean": round(statistics.mean(mious), 4),
        "miou_min": round(min(mious), 4),
        "wall_s_max": max(r["wall_s"] for r in runs),
    }
    Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}), file=sys.stderr)


if __name__ == "__main__":
    main()
