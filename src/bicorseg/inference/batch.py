"""Many files, shards, worker processes and executors: every way of running the units of a prediction.

:func:`predict_files` checks every input and every existing output before any work (module
docstring of :mod:`.predictor`), then runs the units (:mod:`.units`) of the inputs still to do:

* **one process** (the default): each input's blocks in sequence, written straight into its
  outputs;
* **worker processes** (``workers=N``, ``--devices N``): N processes over the units of all inputs
  (one per GPU with ``device="cuda"``: ``cuda:0`` to ``cuda:N-1``; on a CPU each gets
  ``threads / N`` torch threads), each writing parts; an input is assembled as soon as its units
  are done;
* **a shard** (``shard=(i, N)``, ``--shard i/N``): only the units ``i, i + N, i + 2N, ...`` of the
  run's list (round-robin across all inputs, so one huge raster spreads over N machines), written
  as parts and left for ``bicorseg mosaic``;
* **Ray** (``executor="ray"``, :mod:`.ray_executor`): the units on a Ray cluster, one model per
  actor, parts written as results stream back, then assembled.

All of them give the same bytes (:mod:`.engine`), on the same hardware and software with the same
number of torch threads per process (on a CPU, kernels may round differently with other thread
counts). A partitioned run that was killed is rerun with the same command: finished parts are kept
and only the missing units are computed.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bicorseg import raster_access
from bicorseg.data.io import check_name, image_files
from bicorseg.defaults import EXECUTORS, IMAGE_SUFFIXES
from bicorseg.errors import ConfigError, InputError
from bicorseg.inference.engine import Block, SlidingWindow
from bicorseg.inference.predictor import FileResult, PredictOptions, Predictor, Progress, warn_nonfinite
from bicorseg.inference.raster_io import InputPlan
from bicorseg.inference.units import PartStore, PlannedFile, RunPlan, assemble, outputs_done
from bicorseg.inference.writers import check_targets, refuse_existing

IN_FLIGHT_PER_WORKER = 2  # units queued per worker process or actor: bounded memory, no idle worker


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path | raster_access.VsiPath]:
    """The image files named by ``inputs`` (files, or folders searched non-recursively), in order.

    A URL or GDAL ``/vsi...`` path is taken as it is, as a :class:`~bicorseg.raster_access.VsiPath`
    (see :func:`~bicorseg.raster_access.input_path`). A file named twice (by any path) is taken once.
    """
    if not inputs:
        raise InputError("no input given")
    found: list[Path | raster_access.VsiPath] = []
    for item in map(raster_access.input_path, inputs):
        if isinstance(item, raster_access.VsiPath):
            found.append(item)
        elif item.is_dir():
            files = image_files(item)
            if not files:
                raise InputError(f"no images in folder {item} (looked for {', '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif item.is_file():
            found.append(check_name(item))
        else:
            raise InputError(f"input not found: {item}")
    unique: dict[Any, Path | raster_access.VsiPath] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


@dataclass(frozen=True)
class Job:
    """One unit to compute: its position in the run's unit list, its input, its block."""

    position: int
    index: int
    block: Block


def build_plan(
    predictor: Predictor, paths: Sequence[Path], plans: dict[Path, InputPlan], shards: int | None
) -> RunPlan:
    """The plan of a partitioned run over ``paths`` (see :mod:`.units`)."""
    files = []
    for path in paths:
        plan, size = plans[path], None
        with suppress(OSError):
            size = path.stat().st_size
        picture, rescale = predictor.writes_picture(path), predictor.rescale_tag(plan)
        files.append(
            PlannedFile(path.name, path.stem, str(path), *plan.shape, size, picture, plan.geo, rescale)
        )
    opts = predictor.options
    return RunPlan(
        predictor.info.sha256 or "",
        predictor.settings("class"),
        opts.block,
        opts.batch_size,
        predictor.layout,
        predictor.base_tags(),
        tuple(files),
        shards,
    )


class UnitRunner:
    """Computes units of a plan with one predictor; each input's tile grid is made once (and its area
    of interest, by the predictor); the input is opened for each unit (cheap next to a block)."""

    def __init__(self, predictor: Predictor, inputs: Sequence[tuple[Path, InputPlan]]) -> None:
        self.predictor, self.inputs = predictor, list(inputs)
        self._engines: dict[int, SlidingWindow] = {}

    def engine(self, index: int) -> SlidingWindow:
        if index not in self._engines:
            self._engines[index] = self.predictor.engine_for(self.inputs[index][1].shape)
        return self._engines[index]

    def compute(
        self, index: int, block: Block, sink: Callable, progress: Callable[[int], None] | None = None
    ) -> int:
        """Compute the unit ``block`` of input ``index``; its encoded strips go to ``sink``; returns the
        pixels written as nodata for want of a finite model output."""
        path, plan = self.inputs[index]
        aoi = self.predictor.area_of_interest(path, plan)
        with self.predictor.reading(path, plan) as reader:
            return self.predictor.compute_block(self.engine(index), reader, block, sink, aoi, progress)


def devices_for(device: str, workers: int) -> list[str]:
    """One device per worker: ``cuda`` -> ``cuda:0`` .. ``cuda:N-1`` (checked), ``cpu`` -> ``cpu`` each."""
    kind = torch.device(device).type
    if kind != "cuda":
        return [device] * workers
    if workers == 1:
        return [device]
    if torch.device(device).index is not None:
        raise ConfigError(
            f"{workers} uses GPUs 0 to {workers - 1}: give `device` cuda, not {device}", key="devices"
        )
    available = torch.cuda.device_count()
    if workers > available:
        raise ConfigError(f"{workers}: only {available} GPU(s) are visible", key="devices")
    return [f"cuda:{k}" for k in range(workers)]


def predict_files(
    inputs: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    engine: str = "torch",
    workers: int = 1,
    progress: Progress | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    *,
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> list[FileResult]:
    """Predict every file of ``inputs`` into ``out_dir`` (see the module docstring for the modes).

    Before any prediction starts, every input is inspected (readable, band count, undeclared
    nodata; warnings are issued here), the outputs are checked against the inputs and each other,
    existing outputs are verified, and a partitioned run's plan is claimed (:mod:`.units`).
    ``workers`` is the number of worker processes (local executor) or Ray actors.
    """
    options = options or PredictOptions()
    if workers < 1:
        raise ConfigError(f"must be at least 1, got {workers}", key="devices")
    if executor not in EXECUTORS:
        raise ConfigError(f"must be one of {', '.join(EXECUTORS)}, got {executor!r}", key="executor")
    paths = find_inputs(inputs)
    out_dir = Path(out_dir)
    if any(p.is_dir() and p.resolve() == out_dir.resolve() for p in map(Path, inputs)):
        raise ConfigError(f"{out_dir} is an input folder: choose another folder", key="output")
    devices = devices_for(options.device, workers) if executor == "local" else []
    predictor = Predictor.from_checkpoint(checkpoint, options, engine)
    plans = {path: predictor.inspect(path) for path in paths}
    check_targets({path: predictor.targets(path, out_dir) for path in paths})
    for path in paths:  # the area of interest is read and placed on every input before any work
        predictor.area_of_interest(path, plans[path])
    results: dict[Path, FileResult] = {}
    todo: list[Path] = []
    problems: dict[Path, str] = {}
    for path in paths:
        done, bad = predictor.existing_outputs(path, out_dir, plans[path].shape)
        problems.update(bad)
        if done and not options.overwrite:
            results[path] = FileResult(path, predictor.targets(path, out_dir), skipped=True)
        else:
            todo.append(path)
    refuse_existing(problems, options.overwrite)
    if todo:
        predictor.check_logits()  # before any work: a model whose logits overflow makes no map
    for result in results.values():
        predictor.ensure_style(result.outputs)
        if on_result is not None:
            on_result(result)
    store = PartStore(out_dir)
    partitioned = shard is not None or workers > 1 or executor == "ray" or store.exists()
    if not todo or not partitioned:
        for path in todo:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the inputs were inspected (and warned about) above
                results[path] = predictor.predict_file(path, out_dir, progress)
            warn_nonfinite(path, results[path].nonfinite)
            if on_result is not None:
                on_result(results[path])
        return [results[p] for p in paths]

    plan = store.claim(
        build_plan(predictor, paths, plans, shard[1] if shard else None), any_shards=shard is None
    )
    store.clean_stale()
    wanted = {paths.index(p) for p in todo}
    jobs, owned = [], dict.fromkeys(wanted, 0)
    for position, (index, block) in enumerate(plan.units()):
        if index not in wanted or (shard is not None and position % shard[1] != shard[0]):
            continue
        owned[index] += 1
        if not store.done(plan, plan.files[index], block):
            jobs.append(Job(position, index, block))
    left = dict.fromkeys(wanted, 0)
    for job in jobs:
        left[job.index] += 1
    computed = dict.fromkeys(wanted, 0)
    out_dir.mkdir(parents=True, exist_ok=True)

    def finish(index: int) -> None:
        path = paths[index]
        targets = predictor.targets(path, out_dir)
        units = len(plan.blocks(plan.files[index]))
        if shard is not None:
            result = FileResult(path, targets, units=owned[index], computed=computed[index], assembled=False)
        else:
            assemble(store, plan, index)
            result = FileResult(path, targets, units=units, computed=computed[index])
        results[path] = result
        if on_result is not None:
            on_result(result)

    def unit_done(job: Job) -> None:
        computed[job.index] += 1
        left[job.index] -= 1
        if left[job.index] == 0:
            finish(job.index)

    for index in sorted(wanted):
        if left[index] == 0:
            finish(index)
    inputs_ = [(p, plans[p]) for p in paths]
    nonfinite: Counter = Counter()  # counted where the units run in this process
    if jobs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if executor == "ray":
                from bicorseg.inference.ray_executor import run_on_ray

                run_on_ray(
                    jobs, checkpoint, predictor, engine, inputs_, store, plan, workers, ray_address,
                    unit_done, progress,
                )  # fmt: skip
            elif workers > 1:
                _run_pool(
                    jobs, checkpoint, predictor, engine, inputs_, store, plan, devices, unit_done, progress
                )
            else:
                nonfinite = _run_here(jobs, predictor, inputs_, store, plan, unit_done, progress)
    for index, count in nonfinite.items():
        warn_nonfinite(paths[index], count)
    if shard is None:
        finished = [outputs_done(plan, f, out_dir)[0] for f in plan.files]
        store.remove_if_finished(plan, finished)
    return [results[p] for p in paths]


def _run_here(jobs, predictor, inputs, store: PartStore, plan: RunPlan, unit_done, progress) -> Counter:
    """The jobs in this process, in order, with progress by tiles; returns the pixels per input
    written as nodata for want of a finite model output."""
    nonfinite: Counter = Counter()
    runner = UnitRunner(predictor, inputs)
    if progress is not None:
        total = sum(runner.engine(j.index).tile_count(j.block) for j in jobs)
        progress.start(f"{len(jobs)} unit(s)", total)
    for job in jobs:
        with store.writing(plan, plan.files[job.index], job.block) as sink:
            nonfinite[job.index] += runner.compute(
                job.index, job.block, sink, progress.advance if progress is not None else None
            )
        unit_done(job)
    return nonfinite


# --- worker processes ----------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(checkpoint, options, engine, sha256, threads, devices, inputs, out_dir, plan_json) -> None:
    torch.set_num_threads(threads)
    device = devices.get()
    warnings.simplefilter("ignore")  # the main process already warned while checking the inputs
    predictor = Predictor.from_checkpoint(checkpoint, replace(options, device=device), engine, sha256=sha256)
    store = PartStore(out_dir)
    _WORKER.update(
        runner=UnitRunner(predictor, inputs), store=store, plan=RunPlan.from_json(plan_json, store.plan_path)
    )


def _work(index: int, block: Block) -> tuple[int, str]:
    runner, store, plan = _WORKER["runner"], _WORKER["store"], _WORKER["plan"]
    with store.writing(plan, plan.files[index], block) as sink:
        runner.compute(index, block, sink)
    return index, block.key


def bounded(jobs: Sequence[Job], limit: int, submit: Callable[[Job], Any], wait: Callable) -> Iterator[Job]:
    """Submit ``jobs`` with at most ``limit`` in flight; yield each job as it completes.

    ``submit(job)`` returns a handle; ``wait(handles)`` returns the completed ones (raising the
    failure of a failed one).
    """
    queue = iter(jobs)
    flight: dict[Any, Job] = {}
    for job in queue:
        flight[submit(job)] = job
        if len(flight) >= limit:
            break
    while flight:
        for handle in wait(list(flight)):
            yield flight.pop(handle)
            job = next(queue, None)
            if job is not None:
                flight[submit(job)] = job


def _run_pool(jobs, checkpoint, predictor, engine, inputs, store, plan, devices, unit_done, progress) -> None:
    workers = len(devices)
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks
    queue = context.Queue()
    for device in devices:
        queue.put(device)
    if progress is not None:
        progress.start(f"{len(jobs)} unit(s), {workers} workers", len(jobs))
    initargs = (str(checkpoint), predictor.options, engine, predictor.info.sha256, threads, queue, inputs,
                str(store.out_dir), plan.to_json())  # fmt: skip
    with futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=initargs
    ) as pool:

        def wait(handles):
            done, _ = futures.wait(handles, return_when=futures.FIRST_COMPLETED)
            for handle in done:
                handle.result()
            return done

        running = []

        def submit(job: Job):
            handle = pool.submit(_work, job.index, job.block)
            running.append(handle)
            return handle

        try:
            for job in bounded(jobs, IN_FLIGHT_PER_WORKER * workers, submit, wait):
                if progress is not None:
                    progress.advance(1)
                unit_done(job)
        except BaseException:
            for handle in running:
                handle.cancel()
            raise
