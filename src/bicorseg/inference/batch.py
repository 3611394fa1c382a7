"""Many files, shards, worker processes and Ray: the dispatcher of a prediction's units.

:func:`predict_files` checks every input and every existing output before any work
(:meth:`.predictor.Predictor.check_inputs`), then runs the units (:mod:`.units`) of the inputs
still to do with one executor (:mod:`.executors`): in this process, each input's blocks in sequence
straight into its outputs (the default); on ``devices`` worker processes (one per GPU with
``device="cuda"``) or Ray actors (:mod:`.ray_executor`), as parts, each input assembled as soon as
its units are done; or, for ``shard=(i, N)``, only the units ``i, i + N, ...`` of the run's list
(round-robin across all inputs), left as parts for ``bicorseg mosaic``. All give the same bytes on
the same hardware and software: every process that computes runs the run's torch thread count
(``options.threads``). A partitioned run that was killed is rerun with the same command: finished
parts are kept and only the missing units are computed.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

import torch

from bicorseg.atomic import folder_kept_on_success
from bicorseg.data.io import find_inputs
from bicorseg.defaults import EXECUTORS
from bicorseg.errors import ConfigError
from bicorseg.inference.executors import Executor, InProcess, Job, UnitWorker, WorkerProcesses, WorkerSpec
from bicorseg.inference.predictor import (
    CheckedInput,
    FileResult,
    PredictOptions,
    Predictor,
    Progress,
    warn_nonfinite,
)
from bicorseg.inference.raster_io import rescale_tag
from bicorseg.inference.units import PartStore, PlannedFile, RunPlan, assemble, outputs_done


def build_plan(predictor: Predictor, items: Sequence[CheckedInput], shards: int | None) -> RunPlan:
    """The plan of a partitioned run over the checked inputs ``items`` (see :mod:`.units`)."""
    files = []
    for item in items:
        plan, size = item.plan, None
        with suppress(OSError):
            size = item.path.stat().st_size
        picture = item.targets["class"].suffix == ".png"
        rescale = rescale_tag(predictor.options.rescale, plan)
        files.append(
            PlannedFile(item.path.name, str(item.path), *plan.shape, size, picture, plan.geo, rescale)
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


def devices_for(device: str, devices: int) -> list[str]:
    """One device per worker: ``cuda`` -> ``cuda:0`` .. ``cuda:N-1`` (checked), ``cpu`` -> ``cpu`` each."""
    kind = torch.device(device).type
    if kind != "cuda":
        return [device] * devices
    if devices == 1:
        return [device]
    if torch.device(device).index is not None:
        raise ConfigError(
            f"{devices} uses GPUs 0 to {devices - 1}: give `device` cuda, not {device}", key="devices"
        )
    available = torch.cuda.device_count()
    if devices > available:
        raise ConfigError(f"{devices}: only {available} GPU(s) are visible", key="devices")
    return [f"cuda:{k}" for k in range(devices)]


def predict_files(
    inputs: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    engine: str = "torch",
    devices: int = 1,
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
    ``devices`` is the number of worker processes (local executor) or Ray actors.
    """
    options = options or PredictOptions()
    if devices < 1:
        raise ConfigError(f"must be at least 1, got {devices}", key="devices")
    if executor not in EXECUTORS:
        raise ConfigError(f"must be one of {', '.join(EXECUTORS)}, got {executor!r}", key="executor")
    paths = find_inputs(inputs)
    out_dir = Path(out_dir)
    if any(p.is_dir() and p.resolve() == out_dir.resolve() for p in map(Path, inputs)):
        raise ConfigError(f"{out_dir} is an input folder: choose another folder", key="output")
    with folder_kept_on_success(out_dir):  # a run that fails leaves no empty output folder
        workers = devices_for(options.device, devices) if executor == "local" else []
        if executor == "ray":
            from bicorseg.inference.ray_executor import require_ray

            require_ray()
        predictor = Predictor.from_checkpoint(checkpoint, options, engine)
        items = predictor.check_inputs(paths, out_dir)
        results: dict[int, FileResult] = {}
        for index, item in enumerate(items):
            if item.finished:
                results[index] = FileResult(item.path, item.targets, skipped=True)
                if on_result is not None:
                    on_result(results[index])
        todo = [index for index, item in enumerate(items) if not item.finished]
        store = PartStore(out_dir)
        if todo and (shard is not None or devices > 1 or executor == "ray" or store.plan_path.is_file()):
            with store.lock(shared=shard is not None):
                plan = store.claim(
                    build_plan(predictor, items, shard[1] if shard else None), any_shards=shard is None
                )
                store.clean_stale(plan)
                plans = tuple(item.plan for item in items)
                spec = WorkerSpec(
                    str(checkpoint), predictor.options, engine, plans, str(store.out_dir), plan.to_json()
                )
                if executor == "ray":
                    from bicorseg.inference.ray_executor import RayActors

                    runner: Executor = RayActors(spec, devices, ray_address)
                elif devices > 1:
                    runner = WorkerProcesses(spec, workers)
                else:
                    runner = InProcess(UnitWorker(predictor, plans, store, plan))
                _run_units(runner, store, plan, items, set(todo), shard, results, on_result, progress)
        else:
            for index in todo:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the inputs were inspected (and warned about) above
                    results[index] = predictor.write_file(items[index], progress)
                warn_nonfinite(items[index].path, results[index].nonfinite)
                if on_result is not None:
                    on_result(results[index])
        return [results[index] for index in range(len(items))]


def _run_units(
    runner: Executor,
    store: PartStore,
    plan: RunPlan,
    items: Sequence[CheckedInput],
    wanted: set[int],
    shard: tuple[int, int] | None,
    results: dict[int, FileResult],
    on_result: Callable[[FileResult], None] | None,
    progress: Progress | None,
) -> None:
    """Compute the missing units of the inputs ``wanted`` (a shard's share only) and assemble each
    input as its last unit is there (not for a shard: its parts wait for the mosaic)."""
    jobs, owned = [], Counter[int]()
    for position, (index, block) in enumerate(plan.units()):
        if index not in wanted or (shard is not None and position % shard[1] != shard[0]):
            continue
        owned[index] += 1
        if not store.done(plan, index, block):
            jobs.append(Job(index, block))
    queued = Counter(job.index for job in jobs)
    left, nonfinite = queued.copy(), Counter[int]()  # nonfinite: pixels of the units computed here

    def finish(index: int) -> None:
        file, whole = plan.files[index], shard is None
        if whole:
            assemble(store, plan, index)
        units = len(plan.blocks(file)) if whole else owned[index]
        targets = plan.layout.targets(store.out_dir, file.stem, file.picture)
        results[index] = FileResult(
            items[index].path, targets, units=units, computed=queued[index], assembled=whole,
            nonfinite=nonfinite[index],
        )  # fmt: skip
        if on_result is not None:
            on_result(results[index])

    def done(job: Job, count: int) -> None:
        nonfinite[job.index] += count
        left[job.index] -= 1
        if left[job.index] == 0:
            finish(job.index)

    for index in sorted(wanted):
        if left[index] == 0:
            finish(index)
    if jobs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the inputs were inspected (and warned about) before
            try:
                runner.run(jobs, done, progress)
            finally:  # the unfinished parts of workers ended by an interrupt or a failure
                store.clean_stale(plan)
    for index, count in nonfinite.items():
        warn_nonfinite(items[index].path, count)
    if shard is None and all(outputs_done(plan, f, store.out_dir)[0] for f in plan.files):
        store.remove_if_finished(plan)
