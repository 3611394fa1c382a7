"""The units of a prediction on a Ray cluster: one model per actor, bounded streaming, parts.

What ``--executor ray`` does for users (the cluster, the actors, the shared file system it needs) is
in ``docs/prediction.md`` (Scaling out). Each actor is a :class:`~.executors.UnitWorker`; at most
:data:`~.executors.IN_FLIGHT_PER_WORKER` units per actor are in flight, and nothing but unit names
travels through Ray.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bicorseg.errors import BicorsegError, ConfigError, first_line, require_extra
from bicorseg.inference.engine import Block
from bicorseg.inference.executors import Done, Job, UnitWorker, WorkerSpec, interrupt_blocked, stream
from bicorseg.inference.predictor import Progress


def require_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`ConfigError` naming the extra."""
    return require_extra("ray", ("ray",), "ray", key="executor")[0]


class UnitActor:
    """A :class:`~.executors.UnitWorker` in a Ray actor (a Ray actor class once decorated)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = UnitWorker.from_spec(spec)

    def compute(self, index: int, block: Block) -> int:
        return self.worker.compute(index, block)


class RayActors:
    """``actors`` Ray actors on the cluster at ``address`` (None: a local one started for the run)."""

    def __init__(self, spec: WorkerSpec, actors: int, address: str | None) -> None:
        self.ray = require_ray()
        gpu = spec.options.device.startswith("cuda")
        self.spec = replace(spec, options=replace(spec.options, device="cuda" if gpu else "cpu"))
        self.resources = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 1}
        self.actors, self.address = actors, address

    def _start(self, ray: Any) -> None:
        """Connect to the cluster at ``address`` or start a local one. Its processes start with SIGINT
        blocked, so a terminal's Ctrl-C reaches this process alone, which shuts the cluster down."""
        # a local cluster gets a CPU of Ray's accounting per actor, so none waits for a free one
        cpus = None if self.address else max(self.actors, os.cpu_count() or 1)
        try:
            with interrupt_blocked():
                ray.init(address=self.address, num_cpus=cpus, include_dashboard=False,
                         logging_level="ERROR", log_to_driver=False)  # fmt: skip
        except ConnectionError as error:
            raise ConfigError(
                f"no Ray cluster answers at {self.address} ({first_line(error)}): start one "
                "(ray start --head) or leave out --ray-address for a local cluster of this run",
                key="ray_address",
            ) from None

    def run(self, jobs: Sequence[Job], done: Done, progress: Progress | None) -> None:
        ray = self.ray
        started = not ray.is_initialized()
        # Ray's init replaces SIGTERM's handler and leaves it after shutdown: they are put back (not
        # outside the main thread, where they cannot change; None: installed outside Python)
        main = threading.current_thread() is threading.main_thread()
        handlers = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)} if main else {}
        handles: list = []
        try:
            if started:
                self._start(ray)
            remote = ray.remote(**self.resources)(UnitActor)
            handles = [remote.remote(self.spec) for _ in range(self.actors)]
            load = [0] * self.actors  # units in flight per actor
            owner: dict[Any, int] = {}

            def submit(job: Job) -> Any:
                actor = load.index(min(load))
                load[actor] += 1
                ref = handles[actor].compute.remote(job.index, job.block)
                owner[ref] = actor
                return ref

            def wait(refs: list) -> list[tuple[Any, int]]:
                finished, _ = ray.wait(refs, num_returns=1)
                try:
                    results = ray.get(finished)
                except ray.exceptions.RayTaskError as error:  # an actor's one-line error, not Ray's report
                    if isinstance(error.cause, BicorsegError):
                        raise error.cause from None
                    raise
                for ref in finished:
                    load[owner.pop(ref)] -= 1
                return list(zip(finished, results))

            stream(jobs, self.actors, submit, wait, done, progress, f"{self.actors} Ray actor(s)")
        finally:
            for handle in handles:
                ray.kill(handle)
            if started:
                ray.shutdown()
                for number, handler in handlers.items():
                    if handler is not None:
                        signal.signal(number, handler)
