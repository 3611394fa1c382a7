"""Real processes: a shard killed with SIGKILL and rerun, worker processes, Ray, two runs at once.

On a CPU the bytes of a block depend on the torch thread count of the process that computes it;
a run holds its count fixed in every process (and records it), so any partition gives the bytes of
one process, with the default count as with an explicit one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import rasterio
import torch

from bicorseg.inference import PredictOptions, predict_files
from bicorseg.inference.units import PARTS_FOLDER, PartStore
from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff
from tests.helpers.processes import CLI_ENV, bicorseg_command, cli_subprocess, started, wait_until


def _predict(inputs: Path, checkpoint: Path, out: Path, *extra: str) -> list[object]:
    """The arguments of the runs compared with :func:`_reference`."""
    return ["predict", inputs, "--checkpoint", checkpoint, "--output", out, "--tile", "128", "--block", "128",
            "--probabilities", "float32", "--precision", "fp32", *extra]  # fmt: skip


DEFAULT_THREADS = {"OMP_NUM_THREADS": None}  # torch's own default thread count


def _reference(inputs: Path, checkpoint: Path, out: Path) -> dict[str, bytes]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = PredictOptions(tile=128, overlap=0.25, probabilities="float32", block=128, precision="fp32")
        results = predict_files([inputs], checkpoint, out, options)
    finally:
        torch.set_num_threads(previous)
    return {p.name: p.read_bytes() for r in results for p in r.outputs.values()}


def _wait_for_parts(process: subprocess.Popen, parts: Path, count: int) -> None:
    """Wait until ``process`` has written ``count`` class parts into ``parts``."""
    wait_until(
        process, lambda: len(list(parts.glob("*_class.tif"))) >= count, f"{count} part(s) were written"
    )


def _outputs(folder: Path, names) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


@pytest.mark.slow
def test_a_killed_shard_rerun_computes_only_the_missing_units(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    inputs = tmp_path / "in"
    write_geotiff(inputs / "big.tif", random_image(3, 1024, 896, seed=3), nodata=0)
    out = tmp_path / "out"
    command = _predict(inputs, checkpoint, out, "--shard", "0/1")
    parts = out / PARTS_FOLDER / "0"  # the parts of the run's first input
    with started(*command) as process:
        _wait_for_parts(process, parts, 3)
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = {p.name: p.stat().st_mtime_ns for p in parts.glob("*_class.tif")}
    total = 8 * 7  # 1024 x 896 in blocks of 128
    assert 3 <= len(done) < total, "the shard ended before it could be killed"
    assert not (out / "big.tif").exists()

    rerun = cli_subprocess(*command, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    found = re.search(r"computed (\d+) unit\(s\) into .*, (\d+) already there", rerun.stderr)
    assert found, rerun.stderr
    assert int(found[2]) >= len(done) and int(found[1]) + int(found[2]) == total
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("*_class.tif")}
    assert all(kept[name] == stamp for name, stamp in done.items())  # finished parts were not redone
    assert [t.name for t in parts.iterdir() if t.name.startswith(".")] == []  # the killed run's temporaries

    mosaic = cli_subprocess("mosaic", out, timeout=600)
    assert mosaic.returncode == 0, mosaic.stderr
    expected = _reference(inputs, checkpoint, tmp_path / "one")
    assert _outputs(out, expected) == expected
    assert not (out / PARTS_FOLDER).exists()


@pytest.mark.slow
def test_two_worker_processes_give_the_bytes_of_one_process(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    inputs = tmp_path / "in"
    write_geotiff(inputs / "a.tif", random_image(3, 300, 420, seed=4), nodata=0)
    write_geotiff(inputs / "b.tif", random_image(3, 200, 130, seed=5), nodata=0)
    out = tmp_path / "out"
    done = cli_subprocess(*_predict(inputs, checkpoint, out, "--devices", "2"), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "predicted 2 file(s)" in done.stderr
    expected = _reference(inputs, checkpoint, tmp_path / "one")
    assert _outputs(out, expected) == expected
    assert sorted(p.name for p in out.iterdir()) == [
        "a.qml",
        "a.tif",
        "a.tif.aux.xml",
        "a_prob.tif",
        "b.qml",
        "b.tif",
        "b.tif.aux.xml",
        "b_prob.tif",
    ]


@pytest.mark.slow
def test_every_partition_and_executor_gives_the_bytes_of_one_process_at_the_default_thread_count(
    tmp_path: Path,
) -> None:
    """fp32, uint8 probabilities and confidence, torch's default thread count (every core here):
    one process, two worker processes, two shards and the mosaic, two Ray actors."""
    pytest.importorskip("ray")
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    inputs = tmp_path / "in"
    write_geotiff(inputs / "a.tif", random_image(3, 200, 230, seed=6), nodata=0)
    write_geotiff(inputs / "b.tif", random_image(3, 100, 90, seed=7), nodata=0)
    base = ["predict", inputs, "--checkpoint", checkpoint, "--tile", "64", "--block", "96", "--precision",
            "fp32", "--probabilities", "--confidence", "--quiet"]  # fmt: skip
    runs = {
        "one": [[]],
        "devices": [["--devices", "2"]],
        "shards": [["--shard", "0/2"], ["--shard", "1/2"]],
        "ray": [["--executor", "ray", "--devices", "2"]],
    }
    for name, commands in runs.items():
        for extra in commands:
            done = cli_subprocess(
                *base, "--output", tmp_path / name, *extra, env=DEFAULT_THREADS, timeout=600
            )
            assert done.returncode == 0, done.stderr
    assert cli_subprocess("mosaic", tmp_path / "shards", env=DEFAULT_THREADS, timeout=600).returncode == 0
    names = [f"{s}{k}.tif" for s in ("a", "b") for k in ("", "_prob", "_confidence")]
    expected = _outputs(tmp_path / "one", names)
    for name in ("devices", "shards", "ray"):
        assert _outputs(tmp_path / name, names) == expected, name
    default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    with rasterio.open(tmp_path / "ray" / "a.tif") as written:
        assert written.tags()["bicorseg_settings"].endswith(f" threads={default}")  # recorded


@pytest.mark.slow
def test_inputs_named_like_folders_with_worker_processes_keep_the_users_files(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    sources = [write_geotiff(tmp_path / "in" / name, random_image(3, 150, 140, seed=i), nodata=0)
               for i, name in enumerate(["...tif", "..tif"])]  # fmt: skip
    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)
    (out / "notes.txt").write_text("the user's notes")
    (out / "mine" / "field.csv").write_text("id,crop\n1,wheat\n")
    done = cli_subprocess("predict", *sources, "--checkpoint", checkpoint, "--output", out, "--tile", "64",
                          "--block", "64", "--devices", "2", "--quiet", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "notes.txt").read_text() == "the user's notes"
    assert (out / "mine" / "field.csv").read_text() == "id,crop\n1,wheat\n"
    outputs = [f"{stem}{end}" for stem in ("..", ".") for end in (".qml", ".tif", ".tif.aux.xml")]
    assert sorted(p.name for p in out.iterdir()) == sorted(["mine", "notes.txt", *outputs])


@pytest.mark.slow
def test_two_identical_runs_at_once_the_second_is_refused_in_one_line(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    inputs = tmp_path / "in"
    write_geotiff(inputs / "big.tif", random_image(3, 640, 512, seed=3), nodata=0)
    out = tmp_path / "out"
    command = _predict(inputs, checkpoint, out, "--devices", "2", "--quiet")
    with started(*command) as first:
        _wait_for_parts(first, out / PARTS_FOLDER / "0", 1)  # the first run is writing parts
        first.send_signal(signal.SIGSTOP)  # paused in the middle of its units
        second = cli_subprocess(*command)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{out / PARTS_FOLDER} is in use by another run over {out}" in lines[0], (
            lines
        )
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err
    expected = _reference(inputs, checkpoint, tmp_path / "one")
    assert _outputs(out, expected) == expected
    assert not (out / PARTS_FOLDER).exists()


@pytest.mark.slow
def test_ray_without_a_cluster_at_the_address_is_one_line(tmp_path: Path) -> None:
    """``--ray-address auto`` finds any Ray cluster of the machine: the run is made in a process
    namespace of its own (and a Ray folder of its own), where none can be running."""
    pytest.importorskip("ray")
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("no process namespace can be made here: a Ray cluster of the machine would be found")
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    source = write_geotiff(tmp_path / "in" / "a.tif", random_image(3, 64, 64, seed=1), nodata=0)
    env = {k: v for k, v in CLI_ENV.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(tmp_path / "ray")}
    command = bicorseg_command("predict", source, "--checkpoint", checkpoint, "--output", tmp_path / "out",
                               "--executor", "ray", "--ray-address", "auto")  # fmt: skip
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", *command], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "bicorseg predict: error: --ray-address: no Ray cluster"
    ), lines
    assert not (tmp_path / "out" / "a.tif").exists()


def _live_processes(session: int) -> list[str]:
    """The processes of a session that have not ended (a zombie has ended): Ray's workers have
    process groups of their own in the session of the run."""
    command = ["ps", "-ww", "-e", "-o", "sid=,stat=,pid=,args="]  # -ww: whole command lines
    listed = subprocess.run(command, capture_output=True, text=True)
    return [
        line
        for line in listed.stdout.splitlines()
        if int(line.split()[0]) == session and line.split()[1][0] != "Z"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["processes", "ray"])
@pytest.mark.parametrize("when", ["while the workers start", "while they compute"])
def test_ctrl_c_stops_every_worker_and_leaves_nothing_half_written(
    when: str, executor: str, tmp_path: Path
) -> None:
    """A terminal's Ctrl-C: SIGINT to the whole process group of a run with spawned worker processes,
    or with a local Ray cluster started for the run (its processes included: none is left)."""
    if executor == "ray":
        pytest.importorskip("ray")
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    inputs = tmp_path / "in"
    write_geotiff(inputs / "big.tif", random_image(3, 768, 640, seed=3), nodata=0)
    out = tmp_path / "out"
    ray = ["--executor", "ray"] if executor == "ray" else []
    command = _predict(inputs, checkpoint, out, "--devices", "2", "--quiet", *ray)
    # Ray's session files in a folder of the test's own (a short path: Ray's sockets are in it)
    ray_folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        with started(*command, env={"RAY_TMPDIR": str(ray_folder)}, group=True) as process:
            if when == "while the workers start" and ray:  # Ray's node (raylet) starting its processes
                wait_until(
                    process, lambda: any("raylet" in p for p in _live_processes(process.pid)), "Ray started"
                )
            elif when == "while the workers start":  # the plan, claimed just before the workers start
                wait_until(process, (out / PARTS_FOLDER / "plan.json").exists, "the plan was claimed")
                time.sleep(0.5)  # the workers are importing torch
            else:
                _wait_for_parts(process, out / PARTS_FOLDER / "0", 2)
            os.killpg(process.pid, signal.SIGINT)
            _, err = process.communicate(timeout=120)
    finally:
        shutil.rmtree(ray_folder, ignore_errors=True)
    assert process.returncode == 130
    assert err.strip().splitlines() == ["bicorseg predict: interrupted"]  # no worker's traceback
    # a process of the run may still be exiting (the resource tracker, Ray's)
    deadline = time.monotonic() + 30
    while _live_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_processes(process.pid) == []
    written = [p for p in out.rglob("*") if p.is_file()]
    assert [p for p in written if p.name.startswith(".")] == []  # no temporary file: nothing half-written
    assert not (out / "big.tif").exists()
    if when == "while they compute":  # every part left is whole, and the rerun completes the run
        store = PartStore(out)
        plan = store.load()
        assert plan is not None
        whole = [block for block in plan.blocks(plan.files[0]) if store.done(plan, 0, block)]
        assert len(whole) >= 2 and len(list((out / PARTS_FOLDER / "0").glob("*_class.tif"))) == len(whole)
        rerun = cli_subprocess(*command, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
        expected = _reference(inputs, checkpoint, tmp_path / "one")
        assert _outputs(out, expected) == expected


@pytest.mark.slow
def test_sigterm_to_the_run_alone_ends_its_workers_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    """``kill PID`` (or a scheduler stopping the job) signals the run's process alone: it ends its
    worker processes as after Ctrl-C, with status 143, rather than dying and leaving them running."""
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    inputs = tmp_path / "in"
    write_geotiff(inputs / "big.tif", random_image(3, 768, 640, seed=3), nodata=0)
    out = tmp_path / "out"
    command = _predict(inputs, checkpoint, out, "--devices", "2", "--quiet")
    with started(*command, group=True) as process:
        _wait_for_parts(process, out / PARTS_FOLDER / "0", 2)
        process.send_signal(signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=120)
            deadline = time.monotonic() + 30  # the resource tracker may still be exiting
            while _live_processes(process.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _live_processes(process.pid) == []
        finally:  # workers left running by a run that died are ended here, by their ids
            for line in _live_processes(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[2]), signal.SIGKILL)
    assert process.returncode == 143
    assert err.strip().splitlines() == ["bicorseg predict: interrupted by SIGTERM"]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert [p for p in written if p.name.startswith(".")] == []  # no temporary file: nothing half-written
