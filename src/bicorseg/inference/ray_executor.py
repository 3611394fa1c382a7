"""The units of a prediction on a Ray cluster: one model per actor, bounded streaming, parts, mosaic.

``bicorseg predict ... --executor ray`` (optional extra: ``pip install "bicorseg[ray]"``) connects
to the cluster at ``--ray-address`` (default: a local cluster started for the run and shut down
after it; ``auto`` finds a running one) and starts ``--devices N`` actors, each holding one model
(one GPU each with ``--device cuda``, else one CPU and one torch thread). The driver hands out the
units of the run (:mod:`.units`) with at most two per actor in flight; each actor reads its unit's
input windows, computes the block strip by strip and writes it as a part, so every process's memory
is bounded by the block size, whatever the number and size of the inputs, and nothing but unit
names travels through Ray. The inputs and the output folder must be reachable at the same paths
from every node (a shared file system, as for the parts of ``--shard`` runs). The driver assembles
each input as soon as its units are done; a killed run rerun computes only the missing units; the
outputs are the same bytes as a one-process run with one torch thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bicorseg.errors import BicorsegError, ConfigError
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
    """One model on one device, computing units of a run into parts (a Ray actor class once decorated)."""

    def __init__(
        self,
        checkpoint: str,
        options: Any,
        engine: str,
        sha256: str,
        inputs: list,
        out_dir: str,
        plan_json: str,
    ) -> None:
        import warnings

        import torch

        from bicorseg.inference.batch import UnitRunner
        from bicorseg.inference.predictor import Predictor

        torch.set_num_threads(1)
        warnings.simplefilter("ignore")  # the driver already warned while checking the inputs
        self.runner = UnitRunner(
            Predictor.from_checkpoint(checkpoint, options, engine, sha256=sha256), inputs
        )
        self.store = PartStore(out_dir)
        self.plan = RunPlan.from_json(plan_json, self.store.plan_path)

    def compute(self, index: int, block: Any) -> str:
        with self.store.writing(self.plan, self.plan.files[index], block) as sink:
            self.runner.compute(index, block, sink)
        return block.key


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
    """Compute ``jobs`` on ``actors`` Ray actors, each writing its units as parts; ``unit_done(job)``
    is called in the driver as each unit's part is there (in completion order)."""
    ray = require_ray()
    from bicorseg.inference.batch import IN_FLIGHT_PER_WORKER, bounded

    started = not ray.is_initialized()
    handlers = _signal_handlers()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    handles: list = []
    try:
        gpu = predictor.options.device.startswith("cuda")
        resources = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 1}
        options = replace(predictor.options, device="cuda" if gpu else "cpu")
        remote = ray.remote(**resources)(UnitActor)
        args = (
            str(checkpoint),
            options,
            engine,
            predictor.info.sha256,
            inputs,
            str(store.out_dir),
            plan.to_json(),
        )
        handles = [remote.remote(*args) for _ in range(actors)]
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
            try:
                ray.get(done)
            except ray.exceptions.RayTaskError as error:  # an actor's one-line error, not Ray's report
                if isinstance(error.cause, BicorsegError):
                    raise error.cause from None
                raise
            return done

        if progress is not None:
            progress.start(f"{len(jobs)} unit(s), {actors} Ray actor(s)", len(jobs))
        for job in bounded(jobs, IN_FLIGHT_PER_WORKER * actors, submit, wait):
            ref = ref_of.pop(job)
            load[owner.pop(ref)] -= 1
            if progress is not None:
                progress.advance(1)
            unit_done(job)
    finally:
        for handle in handles:
            ray.kill(handle)
        if started:
            ray.shutdown()
            _restore_signal_handlers(handlers)  # Ray's init replaces SIGTERM's and leaves it after shutdown


def _signal_handlers() -> dict[int, Any]:
    """The process's SIGINT and SIGTERM handlers (none outside the main thread, where they cannot change)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict[int, Any]) -> None:
    for number, handler in handlers.items():
        if handler is not None:  # None: installed outside Python, cannot be put back
            signal.signal(number, handler)
