"""Benchmark of scaling out ``bicorseg predict``: wall and CPU time and peak memory per worker for one
process, two worker processes, two shards and two Ray actors, Ray's fixed start-up cost; the cost of
planning and of the mosaic.

Part A (``--size``, default 4096 px, blocks of ``--block`` px): a synthetic 3-band uint8 GeoTIFF
(EPSG:32633) and a random-weight BiCoR-Seg (ConvNeXt-nano, C = 32, 6 classes), tile 512, overlap
0.25, batch 4, fp32, uint8 probabilities, ``--threads`` torch threads in every process (default 1:
one core per process); every run in fresh processes: ``bicorseg predict`` alone, and once more at
torch's default thread count (one per core); with ``--devices 2``; as ``--shard 0/2`` and ``--shard
1/2`` started together, then ``bicorseg mosaic``; with ``--executor ray --devices 2`` (a local Ray
cluster started by the run). The runs are repeated ``--rounds`` times, interleaved (round r starts
with the r-th run), so a change of the machine's load falls on every run alike. Each run records
its wall time, the CPU time (user + system) of all its processes (sampled from /proc every 0.2 s),
each process's peak memory (VmHWM) and the load average before and after it; its class and
probability rasters are compared with the one-process run's bytes, and the probability values that
differ are counted. Ray's fixed cost (starting a local cluster and its actors, loading the model in
each, shutting down) is measured apart: the same two runs on a raster of one small unit, Ray's time
minus one process's.

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
import statistics
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its own, not its children's)."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            fields = stream.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcessWatcher:
    """Samples every descendant of some processes: peak memory (VmHWM, MiB), name and CPU time."""

    def __init__(self, roots: list[int]) -> None:
        self.roots, self.peaks, self.names, self.cpu = roots, {}, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for root in self.roots:
                for pid in [root, *_descendants(root)]:
                    status = _status(pid)
                    if "VmHWM" not in status:
                        continue
                    peak = int(status["VmHWM"].split()[0]) / 1024
                    self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak)
                    self.names[pid] = status.get("Name", "").strip()
                    self.cpu[pid] = max(self.cpu.get(pid, 0.0), _cpu_seconds(pid))
            time.sleep(0.2)

    def stop(self) -> ProcessWatcher:
        self._stop.set()
        self._thread.join()
        return self

    def children_peaks(self) -> dict[int, float]:
        return {pid: peak for pid, peak in self.peaks.items() if pid not in self.roots}


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


def _same(out: Path, reference: Path, name: str) -> bool:
    return (out / name).read_bytes() == (reference / name).read_bytes()


def _differing(out: Path, reference: Path, name: str) -> int:
    """How many values of two rasters differ (their bytes may differ in the tags alone)."""
    import rasterio

    with rasterio.open(out / name) as a, rasterio.open(reference / name) as b:
        return int((a.read() != b.read()).sum())


def _timed(runs: list[tuple[str, list[str]]], what: str) -> dict:
    """Start each ``(name, argv)`` command at once, wait for all; wall and CPU time, peaks, load."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    processes = [(name, _cli(argv)) for name, argv in runs]
    watcher = ProcessWatcher([p.pid for _, p in processes])
    results = [_finish(p, f"{what}: {name}") for name, p in processes]
    seconds = time.perf_counter() - start
    watcher.stop()
    return {"seconds": seconds, "cpu_seconds": sum(watcher.cpu.values()), "results": results,
            "watcher": watcher, "load_before": load_before, "load_after": os.getloadavg()[0]}  # fmt: skip


def part_a(work: Path, args: argparse.Namespace) -> dict:
    from bicorseg.inference.engine import SlidingWindow

    raster = work / "scene.tif"
    write_scene(raster, args.size)
    small = work / "small" / "scene.tif"
    small.parent.mkdir()
    write_scene(small, 256)
    checkpoint = work / "model.ckpt"
    make_checkpoint(checkpoint)
    engine = SlidingWindow(args.size, args.size, 6, 512, 0.25, block=args.block)
    units = len(engine.blocks)
    options = ["--checkpoint", str(checkpoint), "--quiet", "--tile", "512", "--overlap", "0.25", "--batch-size",
               "4", "--block", str(args.block), "--device", "cpu", "--precision", "fp32", "--probabilities"]  # fmt: skip
    default_threads = list(options)  # torch's default: one thread per core in every process
    options += ["--threads", str(args.threads)]
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray is not installed: no Ray rows", flush=True)
        has_ray = False
    else:
        has_ray = True

    def one(out: Path, source: Path = raster) -> dict:
        return _timed([("one", ["predict", str(source), *options, "--output", str(out)])], "one process")

    def devices(out: Path) -> dict:
        return _timed([("devices", ["predict", str(raster), *options, "--output", str(out), "--devices", "2"])],
                      "--devices 2")  # fmt: skip

    def shards(out: Path) -> dict:
        runs = [(f"shard {i}", ["predict", str(raster), *options, "--output", str(out), "--shard", f"{i}/2"])
                for i in range(2)]  # fmt: skip
        timed = _timed(runs, "--shard i/2")
        mosaic = _timed([("mosaic", ["mosaic", str(out), "--quiet"])], "mosaic")
        timed.update(shards_seconds=timed["seconds"], mosaic_seconds=mosaic["seconds"],
                     mosaic_peak=mosaic["results"][0]["peak_rss_bytes"] / 2**20)  # fmt: skip
        timed["seconds"] += mosaic["seconds"]
        timed["cpu_seconds"] += mosaic["cpu_seconds"]
        timed["load_after"] = mosaic["load_after"]
        return timed

    def ray_actors(out: Path, source: Path = raster) -> dict:
        return _timed([("ray", ["predict", str(source), *options, "--output", str(out), "--executor", "ray",
                                "--devices", "2"])], "--executor ray")  # fmt: skip

    def one_default(out: Path) -> dict:
        return _timed([("one", ["predict", str(raster), *default_threads, "--output", str(out)])],
                      "one process, default threads")  # fmt: skip

    kinds = {
        "1 process": one,
        "1 process, torch's default threads": one_default,
        "--devices 2 (2 worker processes)": devices,
        "2 shards at once + mosaic": shards,
    }
    if has_ray:
        kinds["--executor ray --devices 2 (local cluster, 2 actors)"] = ray_actors
    names = list(kinds)
    measured: dict[str, list[dict]] = {name: [] for name in names}
    fixed: list[dict] = []
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        folder = work / f"round{round_}"
        for name in order:
            out = folder / f"run{names.index(name)}"
            timed = kinds[name](out)
            measured[name].append(timed | {"out": out, "reference": folder / "run0"})
            print(json.dumps({"round": round_, "run": name, "seconds": round(timed["seconds"], 1),
                              "cpu_seconds": round(timed["cpu_seconds"], 1),
                              "load": [round(timed["load_before"], 1), round(timed["load_after"], 1)]}),
                  flush=True)  # fmt: skip
        if has_ray:  # Ray's fixed cost: one small unit, Ray against one process
            base = one(folder / "small-one", small)
            with_ray = ray_actors(folder / "small-ray", small)
            fixed.append({"one_process_seconds": round(base["seconds"], 1), "ray_seconds": round(with_ray["seconds"], 1),
                          "ray_fixed_seconds": round(with_ray["seconds"] - base["seconds"], 1),
                          "ray_fixed_cpu_seconds": round(with_ray["cpu_seconds"] - base["cpu_seconds"], 1)})  # fmt: skip
            print(json.dumps({"round": round_, "ray_fixed": fixed[-1]}), flush=True)

    rows = []
    for name, runs in measured.items():
        seconds = [r["seconds"] for r in runs]
        row = {
            "run": name,
            "processes": 1 if name.startswith("1 process") else 2,
            "seconds": [round(v, 1) for v in seconds],
            "median_seconds": round(statistics.median(seconds), 1),
            "cpu_seconds": [round(r["cpu_seconds"], 1) for r in runs],
            "median_cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 1),
            "units_per_second": round(units / statistics.median(seconds), 4),
            "load_average_before_after": [
                [round(r["load_before"], 1), round(r["load_after"], 1)] for r in runs
            ],
            "class_raster_identical_to_one_process": all(
                _same(r["out"], r["reference"], "scene.tif") for r in runs
            ),
            "probabilities_identical_to_one_process": all(
                _same(r["out"], r["reference"], "scene_prob.tif") for r in runs
            ),
            "probability_values_differing_from_one_process": max(
                _differing(r["out"], r["reference"], "scene_prob.tif") for r in runs
            ),
        }
        last = runs[-1]
        if name.startswith("1 process"):
            row["peak_rss_mib_per_worker"] = [round(last["results"][0]["peak_rss_bytes"] / 2**20)]
        elif name.startswith("2 shards"):
            row["peak_rss_mib_per_worker"] = [round(r["peak_rss_bytes"] / 2**20) for r in last["results"]]
            row["median_shards_seconds"] = round(statistics.median(r["shards_seconds"] for r in runs), 1)
            row["median_mosaic_seconds"] = round(statistics.median(r["mosaic_seconds"] for r in runs), 1)
            row["mosaic_peak_rss_mib"] = round(last["mosaic_peak"])
        else:
            watcher = last["watcher"]
            peaks = watcher.children_peaks()
            actors = [p for pid, p in peaks.items() if "UnitActor" in watcher.names.get(pid, "")]
            row["peak_rss_mib_per_worker"] = [
                round(p) for p in (actors or sorted(peaks.values(), reverse=True)[:2])
            ]
            row["peak_rss_mib_main_process"] = round(last["results"][0]["peak_rss_bytes"] / 2**20)
        if name.startswith("--executor ray") and fixed:
            cost = statistics.median(f["ray_fixed_seconds"] for f in fixed)
            row["median_ray_fixed_seconds"] = round(cost, 1)
            row["median_seconds_without_ray_fixed"] = round(row["median_seconds"] - cost, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"size": args.size, "block": args.block, "units": units, "tiles": engine.total_tiles,
            "tile_overhead": round(engine.overhead(), 4), "threads_per_process": args.threads,
            "rounds": args.rounds, "rows": rows, "ray_fixed_cost": fixed}  # fmt: skip


def part_b(work: Path, sizes: list[int], block: int) -> list[dict]:
    import torch

    from bicorseg.data.io import find_inputs
    from bicorseg.inference import ModelInfo, PredictOptions, Predictor
    from bicorseg.inference.batch import build_plan
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
        # planning: check, plan and claim (what a shard does before its first unit)
        start = time.perf_counter()
        predictor = Predictor(model, info, options)
        paths = find_inputs([raster])
        items = predictor.check_inputs(paths, folder / "plan")
        PartStore(folder / "plan").claim(build_plan(predictor, items, 2))
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
    from bicorseg.data.io import find_inputs
    from bicorseg.inference import Predictor
    from bicorseg.inference.batch import build_plan
    from bicorseg.inference.executors import InProcess, Job, UnitWorker
    from bicorseg.inference.units import PartStore

    predictor = Predictor(model, info, options)
    paths = find_inputs([raster])
    items = predictor.check_inputs(paths, out)
    store = PartStore(out)
    plan = store.claim(build_plan(predictor, items, shard[1]))
    jobs = [Job(g, i, b) for g, (i, b) in enumerate(plan.units()) if g % shard[1] == shard[0]]
    InProcess(UnitWorker(predictor, [item.plan for item in items], store, plan)).run(
        jobs, lambda job, nonfinite: None, None
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of part A (default 3)")
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
        "model": "part A: BiCoR-Seg, convnext_nano, width 32, 2 HBIS layers, 6 classes, random weights, fp32; "
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
