"""The units of a prediction on a Ray cluster: one model per actor, bounded streaming, parts, mosaic.

``bicorseg predict ... --executor ray`` (optional extra: ``pip install "bicorseg[ray]"``) connects
to the cluster at ``--ray-address`` (default: a local cluster started for the run and shut down
after it; ``auto`` finds a running one) and starts ``--devices N`` actors, each holding one model
(one GPU each with ``--device cuda``, else one CPU). The driver hands out the units of the run
(:mod:`.units`) with at most two per actor in flight, so memory stays bounded by the block size
whatever the number of inputs; each actor reads its unit's input windows itself (the inputs must be
readable from every node: a shared file system or remote URLs), computes the block and returns its
encoded arrays through Ray's object store. The driver writes each as a part (a killed run rerun
computes only the missing units), and assembles every input whose units are done: the outputs are
the same bytes as a one-process run with the same number of torch threads per process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bicorseg.errors import ConfigError
from bicorseg.inference.units import PartStore, RunPlan

EXTRA_HINT = 'pip install "bicorseg[ray]"'


def require_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`ConfigError` naming the extra."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"ray needs the optional extra: {EXTRA_HINT}", key="executor") from None
    return ray


class UnitActor:
    """One model on one device, computing units of a run (a Ray actor class once decorated)."""

    def __init__(
        self, checkpoint: str, options: Any, engine: str, sha256: str, inputs: list, threads: int
    ) -> None:
        import warnings

        import torch

        from bicorseg.inference.batch import UnitRunner
        from bicorseg.inference.predictor import Predictor

        torch.set_num_threads(threads)
        warnings.simplefilter("ignore")  # the driver already warned while checking the inputs
        self.runner = UnitRunner(
            Predictor.from_checkpoint(checkpoint, options, engine, sha256=sha256), inputs
        )

    def compute(self, index: int, block: Any) -> dict:
        return self.runner.arrays(index, block)


def run_on_ray(
    jobs: Sequence[Any],
    checkpoint: str | Path,
    predictor: Any,
    engine: str,
    inputs: list,
    store: PartStore,
    plan: RunPlan,
    actors: int,
    address: str | None,
    unit_done: Callable[[Any], None],
    progress: Any = None,
) -> None:
    """Compute ``jobs`` on ``actors`` Ray actors; each finished unit is written as a part, then
    ``unit_done(job)`` is called (in the driver, in completion order)."""
    ray = require_ray()
    from bicorseg.inference.batch import IN_FLIGHT_PER_WORKER, bounded

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    handles: list = []
    try:
        gpu = predictor.options.device.startswith("cuda")
        resources = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 1}
        options = replace(predictor.options, device="cuda" if gpu else "cpu")
        remote = ray.remote(**resources)(UnitActor)
        handles = [
            remote.remote(str(checkpoint), options, engine, predictor.info.sha256, inputs, 1)
            for _ in range(actors)
        ]
        load = [0] * actors  # units in flight per actor
        ref_of: dict[Any, Any] = {}
        owner: dict[Any, int] = {}

        def submit(job):
            actor = load.index(min(load))
            load[actor] += 1
            ref = handles[actor].compute.remote(job.index, job.block)
            ref_of[job], owner[ref] = ref, actor
            return ref

        def wait(refs):
            done, _ = ray.wait(refs, num_returns=1)
            return done

        if progress is not None:
            progress.start(f"{len(jobs)} unit(s), {actors} Ray actor(s)", len(jobs))
        for job in bounded(jobs, IN_FLIGHT_PER_WORKER * actors, submit, wait):
            ref = ref_of.pop(job)
            load[owner.pop(ref)] -= 1
            arrays = ray.get(ref)
            store.write_arrays(plan, plan.files[job.index], job.block, arrays)
            del arrays
            if progress is not None:
                progress.advance(1)
            unit_done(job)
    finally:
        for handle in handles:
            ray.kill(handle)
        if started:
            ray.shutdown()
