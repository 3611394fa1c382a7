"""Where units of prediction work run: this process, worker processes, or Ray actors.

An executor computes :class:`Job`\\ s (units of a :class:`~.units.RunPlan`) into parts and calls
``done(job, nonfinite)`` in the calling process as each unit's parts are there, in completion order
(``nonfinite``: the unit's pixels written as nodata for want of a finite model output); the
dispatcher (:func:`.batch.predict_files`) decides what follows. Every worker, in this process, in a
worker process or in a Ray actor (:mod:`.ray_executor`), is a :class:`UnitWorker` made from the
same :class:`WorkerSpec`: the checkpoint, the options with the run's thread count, the inputs and
the plan. So a unit's bytes do not depend on where it ran.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from bicorseg.inference.engine import Block, SlidingWindow
from bicorseg.inference.predictor import PredictOptions, Predictor, Progress
from bicorseg.inference.raster_io import InputPlan
from bicorseg.inference.units import PartStore, RunPlan

IN_FLIGHT_PER_WORKER = 2  # units queued per worker process or actor: bounded memory, no idle worker


@dataclass(frozen=True)
class Job:
    """One unit to compute: its input (index in the plan) and its block."""

    index: int
    block: Block


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to compute units (picklable: it travels to worker processes and actors)."""

    checkpoint: str
    options: PredictOptions  # the driver's, its thread count resolved
    engine: str
    inputs: tuple[InputPlan, ...]
    out_dir: str
    plan_json: str


class UnitWorker:
    """One predictor computing units of a plan into parts; each input's tile grid is made once (and
    its area of interest, by the predictor); the input is opened for each unit (cheap next to a block)."""

    def __init__(
        self, predictor: Predictor, inputs: Sequence[InputPlan], store: PartStore, plan: RunPlan
    ) -> None:
        self.predictor, self.inputs, self.store, self.plan = predictor, list(inputs), store, plan
        self._engines: dict[int, SlidingWindow] = {}

    @classmethod
    def from_spec(cls, spec: WorkerSpec, device: str | None = None) -> UnitWorker:
        """A worker in another process (``device``: this worker's, e.g. ``cuda:1``)."""
        warnings.simplefilter("ignore")  # the driver already warned while checking the inputs
        options = spec.options if device is None else replace(spec.options, device=device)
        store = PartStore(spec.out_dir)
        plan = RunPlan.from_json(spec.plan_json, store.plan_path)  # the checkpoint's hash is in it
        predictor = Predictor.from_checkpoint(spec.checkpoint, options, spec.engine, plan.checkpoint_sha256)
        return cls(predictor, spec.inputs, store, plan)

    def engine(self, index: int) -> SlidingWindow:
        if index not in self._engines:
            self._engines[index] = self.predictor.engine_for(self.inputs[index].shape)
        return self._engines[index]

    def compute(self, index: int, block: Block, progress: Callable[[int], None] | None = None) -> int:
        """Compute the unit ``block`` of input ``index`` into its parts; returns the pixels written as
        nodata for want of a finite model output."""
        with (
            self.predictor.reading(self.inputs[index]) as reader,
            self.store.writing(self.plan, index, block) as sink,
        ):
            return self.predictor.compute_block(self.engine(index), reader, block, sink, progress)


Done = Callable[[Job, int], None]  # done(job, nonfinite pixels)


class Executor(Protocol):
    """Runs jobs into parts, calling ``done`` here as each job's parts are there."""

    def run(self, jobs: Sequence[Job], done: Done, progress: Progress | None) -> None: ...


class InProcess:
    """The jobs in this process, in order, with progress by tiles."""

    def __init__(self, worker: UnitWorker) -> None:
        self.worker = worker

    def run(self, jobs: Sequence[Job], done: Done, progress: Progress | None) -> None:
        advance = None
        if progress is not None:
            progress.start(
                f"{len(jobs)} unit(s)", sum(self.worker.engine(j.index).tile_count(j.block) for j in jobs)
            )
            advance = progress.advance
        for job in jobs:
            done(job, self.worker.compute(job.index, job.block, advance))


def stream(
    jobs: Sequence[Job],
    workers: int,
    submit: Callable[[Job], Any],
    wait: Callable,
    done: Done,
    progress: Progress | None,
    label: str,
) -> None:
    """Submit ``jobs`` with at most :data:`IN_FLIGHT_PER_WORKER` per worker in flight, and call ``done``
    with each job and its result as it completes (progress by units, ``label`` naming the workers).

    ``submit(job)`` returns a handle; ``wait(handles)`` returns ``(handle, result)`` of the completed
    ones (raising the failure of a failed one).
    """
    if progress is not None:
        progress.start(f"{len(jobs)} unit(s), {label}", len(jobs))
    queue = iter(jobs)
    flight: dict[Any, Job] = {}
    for job in queue:
        flight[submit(job)] = job
        if len(flight) >= IN_FLIGHT_PER_WORKER * workers:
            break
    while flight:
        for handle, result in wait(list(flight)):
            if progress is not None:
                progress.advance(1)
            done(flight.pop(handle), result)
            job = next(queue, None)
            if job is not None:
                flight[submit(job)] = job


_WORKER: list[UnitWorker] = []  # the worker of a worker process


def _start_worker(spec: WorkerSpec, devices: Any) -> None:
    _WORKER.append(UnitWorker.from_spec(spec, devices.get()))


def _compute(index: int, block: Block) -> int:
    return _WORKER[0].compute(index, block)


@contextmanager
def interrupt_blocked() -> Iterator[None]:
    """SIGINT held back from this thread: a process started meanwhile inherits the blocked signal,
    so the terminal's Ctrl-C (sent to the whole process group) reaches this process alone."""
    if not hasattr(signal, "pthread_sigmask"):  # not on POSIX: no process group signals either
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a Ctrl-C held back is raised now


class WorkerProcesses:
    """One worker process per device (``cuda:0`` .. ``cuda:N-1``, or N times ``cpu``), each with the
    run's thread count.

    An interrupt (Ctrl-C, SIGINT) is this process's alone: the workers never see it (a worker
    interrupted while it starts would print its own traceback); this process ends them, and their
    unfinished parts (temporary files) are deleted by the dispatcher, so nothing half-written is left.
    """

    def __init__(self, spec: WorkerSpec, devices: Sequence[str]) -> None:
        self.spec, self.devices = spec, list(devices)

    def run(self, jobs: Sequence[Job], done: Done, progress: Progress | None) -> None:
        workers = len(self.devices)
        context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks
        queue = context.Queue()
        for device in self.devices:
            queue.put(device)
        with futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(self.spec, queue)
        ) as pool:

            def submit(job: Job) -> futures.Future:
                with interrupt_blocked():  # the pool starts its processes in submit
                    return pool.submit(_compute, job.index, job.block)

            def wait(handles: list[futures.Future]) -> list[tuple[futures.Future, int]]:
                finished, _ = futures.wait(handles, return_when=futures.FIRST_COMPLETED)
                return [(handle, handle.result()) for handle in finished]

            try:
                stream(jobs, workers, submit, wait, done, progress, f"{workers} workers")
            except BaseException:
                # the pool then fails what is pending and joins its processes (cancelling futures
                # here instead would race with that); Python 3.14 names this terminate_workers()
                for process in list(pool._processes.values()):
                    process.terminate()
                raise
