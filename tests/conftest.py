"""Fixtures of the whole suite: the shared sample data (see tests/helpers/shared.py), the seed, torch threads;
the skip of ``cuda`` tests without a GPU, and under ``CI=true`` the failure of every other skip."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import in_ci, require
from tests.helpers.network import Listener
from tests.helpers.shared import shared_path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped where torch sees no CUDA GPU: in CI too, whose machines have
    none (``benchmarks/gpu_check.sh`` runs them on a GPU machine and fails if any is skipped)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it on one)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under ``CI=true`` a skipped test fails, unless it is marked ``cuda`` (CI machines have no GPU):
    a CI run that lost an optional dependency, the shared data or a tool cannot pass by skipping."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("cuda") is None:
        _fail_in_ci(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a whole module skipped while it is collected (``require`` at module level)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped:
        _fail_in_ci(report)


def _fail_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not in_ci():
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, where only tests marked cuda may skip: {reason}"


@pytest.fixture
def shared_data() -> Path:
    return shared_path("data")


@pytest.fixture
def parity_dir() -> Path:
    return shared_path("parity")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight checkpoint (4 classes, 3 bands) for the tests that only read one."""
    from tests.helpers.inference import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A TCP server on 127.0.0.1 that counts the connections it is offered (the tests of the network
    guard expect none), closed after the test."""
    server = Listener()
    yield server
    server.close()


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for the whole session (the Ray tests are slow), shut down at the end."""
    ray = require("ray")
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    for number, handler in handlers.items():  # Ray's SIGTERM handler would outlive the fixture's tests
        signal.signal(number, handler)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on a shared CPU: one torch thread avoids oversubscription (20x faster here).

    Used by every training test (tests/training/conftest.py) and by modules that ask for it
    (``pytestmark = pytest.mark.usefixtures("one_thread")``).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
