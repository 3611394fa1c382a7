"""Benchmark of scaling out ``bicorseg predict``: units per second and peak memory per worker for one
process, two worker processes, two shards and two Ray actors; the cost of planning and of the mosaic.

Part A (``--size``, default 6144 px, blocks of ``--block`` px): a synthetic 3-band uint8 GeoTIFF
(EPSG:32633) and a random-weight BiCoR-Seg (ConvNeXt-nano, C = 32, 6 classes), tile 512, overlap
0.25, batch 4; every run in fresh processes: ``bicorseg predict`` alone; with ``--devices 2``; as
``--shard 0/2`` and ``--shard 1/2`` started together, then ``bicorseg mosaic``; with ``--executor
ray --devices 2`` (a local Ray cluster started by the run). Peak memory is each process's VmHWM
(the workers' and actors' read from /proc while they run). The class rasters are compared with the
one-process run's bytes.

Part B (``--mosaic-sizes``): what the units cost beyond the model, measured with a per-pixel model
(a 1x1 convolution, so the model costs next to nothing): for each size, one process writing its
outputs directly, then two shards writing parts in sequence and the mosaic (in a fresh process,
with its peak memory); the planning time; and the parts' size on disk.

    python benchmarks/scale.py                     # writes benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe as describe_machine
from raster import CHILD, make_checkpoint, write_scene

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as stream:
            return dict(line.split(":", 1) for line in stream if ":" in line)
    except OSError:
        return {}


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as stream:
                    children = [int(c) for c in stream.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


class PeakWatcher:
    """Polls the VmHWM of every descendant of some processes (name -> peak MiB)."""

    def __init__(self, roots: list[int]) -> None:
        self.roots, self.peaks, self.names = roots, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for root in self.roots:
                for pid in _descendants(root):
                    status = _status(pid)
                    if "VmHWM" not in status:
                        continue
                    peak = int(status["VmHWM"].split()[0]) / 1024
                    self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak)
                    self.names[pid] = status.get("Name", "").strip()
            time.sleep(0.2)

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def _cli(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})  # fmt: skip


def _finish(process: subprocess.Popen, what: str) -> dict:
    out, err = process.communicate()
    lines = [line for line in out.splitlines() if line.startswith("BENCH ")]
    if process.returncode != 0 or not lines:
        raise SystemExit(f"{what} failed:\n{err[-3000:]}")
    result = json.loads(lines[-1][6:])
    if result["code"] != 0:
        raise SystemExit(f"{what} exited {result['code']}:\n{err[-3000:]}")
    return result


def part_a(work: Path, args: argparse.Namespace) -> dict:
    from bicorseg.inference.engine import SlidingWindow

    raster = work / "scene.tif"
    write_scene(raster, args.size)
    checkpoint = work / "model.ckpt"
    make_checkpoint(checkpoint)
    engine = SlidingWindow(args.size, args.size, 6, 512, 0.25, block=args.block)
    units = len(engine.blocks)
    base = ["predict", str(raster), "--checkpoint", str(checkpoint), "--quiet", "--tile", "512", "--overlap",
            "0.25", "--batch-size", "4", "--block", str(args.block), "--device", "cpu", "--precision",
            "fp32"]  # fmt: skip
    rows = []

    def row(name: str, seconds: float, peaks: list[float], out: Path, processes: int) -> None:
        same = (out / "scene.tif").read_bytes() == (work / "one" / "scene.tif").read_bytes()
        rows.append({"run": name, "processes": processes, "seconds": round(seconds, 1),
                     "units_per_second": round(units / seconds, 4),
                     "megapixels_per_second": round(args.size**2 / 1e6 / seconds, 3),
                     "peak_rss_mib_per_worker": [round(p) for p in peaks],
                     "class_raster_identical_to_one_process": same})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    start = time.perf_counter()
    one = _finish(_cli([*base, "--output", str(work / "one")]), "one process")
    row("1 process", time.perf_counter() - start, [one["peak_rss_bytes"] / 2**20], work / "one", 1)

    start = time.perf_counter()
    process = _cli([*base, "--output", str(work / "devices"), "--devices", "2"])
    watcher = PeakWatcher([process.pid])
    main_result = _finish(process, "--devices 2")
    peaks = watcher.stop()
    workers = sorted(peaks.values(), reverse=True)[:2]
    row("--devices 2 (2 worker processes)", time.perf_counter() - start, workers, work / "devices", 2)
    rows[-1]["peak_rss_mib_main_process"] = round(main_result["peak_rss_bytes"] / 2**20)

    start = time.perf_counter()
    shards = [_cli([*base, "--output", str(work / "shards"), "--shard", f"{i}/2"]) for i in range(2)]
    shard_results = [_finish(p, f"shard {i}/2") for i, p in enumerate(shards)]
    shards_seconds = time.perf_counter() - start
    mosaic = _finish(_cli(["mosaic", str(work / "shards"), "--quiet"]), "mosaic")
    row("2 shards at once + mosaic", time.perf_counter() - start, [r["peak_rss_bytes"] / 2**20 for r in shard_results],
        work / "shards", 2)  # fmt: skip
    rows[-1].update(shards_seconds=round(shards_seconds, 1), mosaic_seconds=round(mosaic["seconds"], 1),
                    mosaic_peak_rss_mib=round(mosaic["peak_rss_bytes"] / 2**20))  # fmt: skip

    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray is not installed: no Ray row", flush=True)
    else:
        start = time.perf_counter()
        process = _cli([*base, "--output", str(work / "ray"), "--executor", "ray", "--devices", "2"])
        watcher = PeakWatcher([process.pid])
        _finish(process, "--executor ray")
        peaks = watcher.stop()
        actors = [p for pid, p in peaks.items() if "UnitActor" in watcher.names.get(pid, "")]
        row("--executor ray --devices 2 (local cluster, 2 actors)", time.perf_counter() - start,
            actors or sorted(peaks.values(), reverse=True)[:2], work / "ray", 2)  # fmt: skip
    return {"size": args.size, "block": args.block, "units": units, "tiles": engine.total_tiles,
            "tile_overhead": round(engine.overhead(), 4), "rows": rows}  # fmt: skip


def part_b(work: Path, sizes: list[int], block: int) -> list[dict]:
    import torch

    from bicorseg.inference import ModelInfo, PredictOptions, Predictor
    from bicorseg.inference.batch import build_plan, find_inputs
    from bicorseg.inference.units import PARTS_FOLDER, PartStore
    from bicorseg.spec import DatasetSpec

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 6, 1).eval()
    spec = DatasetSpec(name="synthetic", class_names=tuple(f"c{i}" for i in range(6)),
                       palette=tuple((40 * i, 255 - 40 * i, 128) for i in range(6)), ignore_index=255,
                       eval_classes=tuple(range(6)))  # fmt: skip
    info = ModelInfo(6, 3, spec, "per-pixel model")
    options = PredictOptions(tile=512, overlap=0.25, batch_size=4, block=block)
    rows = []
    for size in sizes:
        folder = work / f"b{size}"
        raster = folder / "in" / "scene.tif"
        raster.parent.mkdir(parents=True)
        write_scene(raster, size)
        start = time.perf_counter()
        Predictor(model, info, options).predict_file(raster, folder / "one")
        direct = time.perf_counter() - start
        # planning: inspect, plan and claim (what a shard does before its first unit)
        start = time.perf_counter()
        predictor = Predictor(model, info, options)
        paths = find_inputs([raster])
        plans = {p: predictor.inspect(p) for p in paths}
        PartStore(folder / "plan").claim(build_plan(predictor, paths, plans, 2))
        planning = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(2):
            _shard(model, info, options, raster, folder / "shards", (i, 2))
        sharded = time.perf_counter() - start
        parts_bytes = sum(p.stat().st_size for p in (folder / "shards" / PARTS_FOLDER).rglob("*.tif"))
        process = _cli(["mosaic", str(folder / "shards"), "--quiet"])
        result = _finish(process, "mosaic")
        same = (folder / "shards" / "scene.tif").read_bytes() == (folder / "one" / "scene.tif").read_bytes()
        rows.append({"size": size, "megapixels": round(size * size / 1e6, 1),
                     "units": len(predictor.engine_for((size, size)).blocks),
                     "direct_seconds": round(direct, 2), "planning_seconds": round(planning, 3),
                     "two_shards_seconds": round(sharded, 2), "mosaic_seconds": round(result["seconds"], 2),
                     "mosaic_peak_rss_mib": round(result["peak_rss_bytes"] / 2**20),
                     "parts_mib": round(parts_bytes / 2**20, 1),
                     "overhead_seconds": round(sharded + result["seconds"] - direct, 2),
                     "class_raster_identical": same})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _shard(model, info, options, raster: Path, out: Path, shard: tuple[int, int]) -> None:
    """One shard of a run with an in-memory model: the code path of ``predict --shard``."""
    from bicorseg.inference import Predictor
    from bicorseg.inference.batch import Job, _run_here, build_plan, find_inputs
    from bicorseg.inference.units import PartStore

    predictor = Predictor(model, info, options)
    paths = find_inputs([raster])
    plans = {p: predictor.inspect(p) for p in paths}
    store = PartStore(out)
    plan = store.claim(build_plan(predictor, paths, plans, shard[1]))
    jobs = [Job(g, i, b) for g, (i, b) in enumerate(plan.units()) if g % shard[1] == shard[0]]
    _run_here(jobs, predictor, [(p, plans[p]) for p in paths], store, plan, lambda job: None, None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=6144)
    parser.add_argument("--block", type=int, default=3072)
    parser.add_argument("--mosaic-sizes", type=int, nargs="+", default=[2048, 6144, 12288])
    parser.add_argument("--mosaic-block", type=int, default=8192)
    parser.add_argument("--skip-a", action="store_true", help="only part B")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    from bicorseg import __version__

    report = {
        "benchmark": "scaling out bicorseg predict: processes, shards, Ray; planning and mosaic",
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
        "model": "part A: BiCoR-Seg, convnext_nano, width 32, 2 HBIS layers, 6 classes, random weights; "
        "part B: a per-pixel 1x1 convolution",
        "machine": describe_machine(),
        "bicorseg": __version__,
    }
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        if not args.skip_a:
            (work / "a").mkdir()
            report["throughput"] = part_a(work / "a", args)
        report["units_overhead"] = part_b(work, args.mosaic_sizes, args.mosaic_block)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
