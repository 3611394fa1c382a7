"""Units of one global grid: any partition gives the bytes of one process; shards, parts, mosaic, refusals.

Everything runs the real code on real GeoTIFFs (EPSG:32633) with a real (tiny, random) BiCoR-Seg,
whose predictions depend on the tile: the blocks must be computed from the same tiles, batched the
same way, wherever they run.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bicorseg.cli.main import main
from bicorseg.data.io import find_inputs
from bicorseg.errors import BicorsegWarning, ConfigError, OutputError
from bicorseg.inference import PredictOptions, Predictor, mosaic, predict_files
from bicorseg.inference.batch import build_plan
from bicorseg.inference.executors import UnitWorker
from bicorseg.inference.units import PARTS_FOLDER, PartStore, parse_shard
from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff

# one torch thread: tiny models on a shared CPU, and the thread count of the bytes compared
pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ("", "_prob", "_confidence")  # class, float32 probabilities, confidence


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    write_geotiff(folder / "a.tif", random_image(3, 150, 170, seed=1), nodata=0)
    write_geotiff(folder / "b.tif", random_image(3, 90, 120, seed=2), nodata=0)
    return folder


def _options(block: int, **extra) -> PredictOptions:
    return PredictOptions(tile=64, overlap=0.25, batch_size=3, probabilities="float32", confidence=True,
                          block=block, **extra)  # fmt: skip


def _bytes(folder: Path) -> dict[str, bytes]:
    return {f"{s}{k}.tif": (folder / f"{s}{k}.tif").read_bytes() for s in ("a", "b") for k in KINDS}


_ONE_PROCESS: dict[int, dict[str, bytes]] = {}


def _one_process(block: int, checkpoint: Path, inputs: Path, out: Path) -> dict[str, bytes]:
    if block not in _ONE_PROCESS:
        predict_files([inputs], checkpoint, out, _options(block))
        assert not (out / PARTS_FOLDER).exists()  # one process writes its outputs directly
        _ONE_PROCESS[block] = _bytes(out)
    return _ONE_PROCESS[block]


def _run_partition(checkpoint: Path, inputs: Path, out: Path, block: int, groups: int, seed: int) -> None:
    """Each unit to a random group; each group a fresh predictor (as a separate process would be),
    running its units in a random order into parts; then the mosaic."""
    paths = find_inputs([inputs])
    predictor = Predictor.from_checkpoint(checkpoint, _options(block))
    items = predictor.check_inputs(paths, out)
    store = PartStore(out)
    plan = store.claim(build_plan(predictor, items, None))
    rng = random.Random(seed)
    units = plan.units()
    assignment = [rng.randrange(groups) for _ in units]
    for group in rng.sample(range(groups), groups):
        worker = UnitWorker(
            Predictor.from_checkpoint(checkpoint, _options(block)),
            [item.plan for item in items],
            store,
            plan,
        )
        mine = [u for u, g in zip(units, assignment) if g == group]
        for index, unit in rng.sample(mine, len(mine)):
            worker.compute(index, unit)
    report = mosaic(out)
    assert sorted(report.assembled) == ["a.tif", "b.tif"] and not report.missing


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=st.sampled_from([48, 64, 80, 128]), groups=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_any_partition_gives_the_bytes_of_one_process(
    tmp_path_factory, checkpoint, inputs, block, groups, seed
) -> None:
    """Random partitions of the units (and blocks smaller than the rasters): byte-identical class,
    probability and confidence rasters to one process running them in sequence."""
    expected = _one_process(block, checkpoint, inputs, tmp_path_factory.mktemp(f"one{block}"))
    out = tmp_path_factory.mktemp("partition")
    _run_partition(checkpoint, inputs, out, block, groups, seed)
    assert _bytes(out) == expected
    assert not (out / PARTS_FOLDER).exists()  # assembled parts are removed


@pytest.mark.slow
def test_a_partition_and_shards_give_the_bytes_of_one_process(tmp_path, checkpoint, inputs) -> None:
    expected = _one_process(64, checkpoint, inputs, tmp_path / "one")
    _run_partition(checkpoint, inputs, tmp_path / "random", 64, groups=3, seed=7)
    assert _bytes(tmp_path / "random") == expected
    for i in range(3):  # round-robin shards across both inputs, then the mosaic
        results = predict_files([inputs], checkpoint, tmp_path / "shards", _options(64), shard=(i, 3))
        assert all(not r.assembled for r in results)
    assert sorted(mosaic(tmp_path / "shards").assembled) == ["a.tif", "b.tif"]
    assert _bytes(tmp_path / "shards") == expected
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(
        f"{s}{k}"
        for s in ("a", "b")
        for k in (".qml", ".tif", ".tif.aux.xml", "_prob.tif", "_confidence.tif")
    )


def test_shards_split_one_raster_round_robin(tmp_path, checkpoint, inputs) -> None:
    """Units are spread across all inputs: each of 4 shards gets units of the big raster."""
    counts = []
    for i in range(4):
        results = predict_files([inputs], checkpoint, tmp_path, _options(48), shard=(i, 4))
        counts.append({r.input.name: r.computed for r in results})
    units_a = 4 * 4  # 150 x 170 in blocks of 48: 4 x 4
    assert sum(c["a.tif"] for c in counts) == units_a and all(c["a.tif"] >= 3 for c in counts)
    assert sum(c["b.tif"] for c in counts) == 2 * 3


def test_shard_cli_then_mosaic(tmp_path, checkpoint, inputs, capsys) -> None:
    args = ["predict", str(inputs), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"),
            "--tile", "64", "--block", "64", "--batch-size", "3"]  # fmt: skip
    assert main([*args, "--shard", "0/2"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"shard 0/2: computed \d+ unit\(s\) into .*bicorseg_parts; .*bicorseg mosaic", err), err
    assert main(["mosaic", str(tmp_path / "out")]) == 2  # shard 1 has not run yet
    line = _one_line(capsys.readouterr().err, "mosaic")
    assert re.search(r"a\.tif: \d+ of 9 units missing \(r000c001, .*; shard\(s\) 1\); b\.tif: ", line), line
    assert not (tmp_path / "out" / "a.tif").exists()  # nothing assembled from incomplete parts
    assert main([*args, "--shard", "1/2"]) == 0
    capsys.readouterr()
    assert main(["mosaic", str(tmp_path / "out")]) == 0
    assert "assembled 2 file(s)" in capsys.readouterr().err
    # a one-process rerun: the assembled outputs verify as its own, nothing is redone
    assert main([*args]) == 0 and "2 already done (skipped)" in capsys.readouterr().err


def test_shard_auto_reads_the_scheduler_index(tmp_path, checkpoint, inputs, monkeypatch, capsys) -> None:
    assert parse_shard("auto/4", {"SLURM_ARRAY_TASK_ID": "3"}) == (3, 4)
    assert parse_shard("auto/4", {"JOB_COMPLETION_INDEX": "2"}) == (2, 4)
    assert parse_shard("auto/4", {"AWS_BATCH_JOB_ARRAY_INDEX": "0"}) == (0, 4)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    args = ["predict", str(inputs / "b.tif"), "--checkpoint", str(checkpoint), "--output", str(tmp_path),
            "--tile", "64", "--block", "64", "--shard", "auto/2"]  # fmt: skip
    assert main(args) == 0
    assert "shard 1/2: computed 2 unit(s)" in capsys.readouterr().err  # of 2 x 2 blocks


BAD_SHARDS = [
    ("3/2", r"--shard: the index of 3/2 must be below the shard count \(0 to 1\)"),
    ("0/0", r"--shard: must be i/N or auto/N with N >= 1"),
    ("one/2", r"--shard: must be i/N or auto/N"),
    ("auto/2", r"--shard: auto/2: none of SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX is set"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "message"), BAD_SHARDS, ids=[v for v, _ in BAD_SHARDS])
def test_bad_shard_values(value, message, tmp_path, checkpoint, inputs, monkeypatch, capsys) -> None:
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"):
        monkeypatch.delenv(name, raising=False)
    code = main(["predict", str(inputs), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"),
                 "--shard", value])  # fmt: skip
    assert code == 2 and re.search(message, _one_line(capsys.readouterr().err))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError):
        parse_shard(value, {"SLURM_ARRAY_TASK_ID": "9"} if value.startswith("auto") else {})


def test_outputs_made_from_whole_maps_are_refused_in_a_shard(tmp_path, checkpoint, inputs, capsys) -> None:
    """Polygons, STAC items and the report need the assembled map: a shard would drop them unsaid."""
    code = main(["predict", str(inputs), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"),
                 "--shard", "0/2", "--report", "--stac-out"])  # fmt: skip
    assert code == 2
    assert _one_line(capsys.readouterr().err) == (
        "bicorseg predict: error: --stac-out, --report are made from whole maps, which a shard does not hold: "
        "leave them out of the shards, then after 'bicorseg mosaic' run the command again with them and "
        "without --shard (it skips the finished maps)"
    )
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("other") / "tiny.ckpt", mean=100.0)


MIXED = [
    ("another shard count", [], ["--shard", "1/3"], r"another shard count \(planned for 2 shards; now 3 shards: their units would overlap\)"),
    ("other settings", [], ["--shard", "1/2", "--tile", "32"], r"other settings \(tile=64 .*; now tile=32 "),
    ("other outputs", [], ["--shard", "1/2", "--color"], r"other outputs \(class; now class\+color\)"),
    ("another block size", [], ["--shard", "1/2", "--block", "96"], r"another block or batch size \(64/4; now 96/4\)"),
    ("another checkpoint", ["other"], ["--shard", "1/2"], r"another checkpoint \(sha256 [0-9a-f]{12}; now [0-9a-f]{12}\)"),
    ("a one-process run of another checkpoint", ["other"], [], r"another checkpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "which", "options", "message"), MIXED, ids=[c[0] for c in MIXED])
def test_a_run_that_does_not_match_the_plan_is_refused(
    case, which, options, message, tmp_path, checkpoint, other_checkpoint, inputs, capsys
) -> None:
    out = tmp_path / "out"
    base = ["predict", str(inputs), "--output", str(out), "--tile", "64", "--block", "64", "--quiet"]
    assert main([*base, "--checkpoint", str(checkpoint), "--shard", "0/2"]) == 0
    parts = sorted(p.relative_to(out) for p in out.rglob("*"))
    second = other_checkpoint if which else checkpoint
    code = main([*base, "--checkpoint", str(second), *options])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and re.search(message, line), line
    assert "plans a run with" in line and f"remove {out / PARTS_FOLDER}" in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == parts  # nothing written, nothing removed


def test_a_part_of_another_run_is_not_mixed_in(tmp_path, checkpoint, inputs) -> None:
    for i in range(2):
        predict_files([inputs], checkpoint, tmp_path, _options(64), shard=(i, 2))
    part = tmp_path / PARTS_FOLDER / "1" / "r000c001_probabilities.tif"  # b.tif's second unit
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    # as if another run's file had taken its place (parts carry no georeference: the plan holds it)
    with pytest.warns(NotGeoreferencedWarning), rasterio.open(part, "r+") as dst:
        dst.update_tags(bicorseg_plan="0" * 20)
    report = mosaic(tmp_path)
    assert report.assembled == ["a.tif"] and not (tmp_path / "b.tif").exists()
    assert [(b.key, shard) for b, shard in report.missing["b.tif"]] == [("r000c001", 0)]
    results = predict_files([inputs], checkpoint, tmp_path, _options(64), shard=(0, 2))  # computes it anew
    assert {r.input.name: r.computed for r in results} == {"a.tif": 0, "b.tif": 1}
    assert mosaic(tmp_path).assembled == ["b.tif"] and not (tmp_path / PARTS_FOLDER).exists()


def test_mosaic_of_a_folder_without_parts(tmp_path, capsys) -> None:
    assert main(["mosaic", str(tmp_path)]) == 2
    assert "holds no parts to assemble (no bicorseg_parts/plan.json)" in _one_line(
        capsys.readouterr().err, "mosaic"
    )


def test_an_existing_output_of_another_run_is_not_replaced_by_the_mosaic(
    tmp_path, checkpoint, inputs
) -> None:
    for i in range(2):
        predict_files([inputs], checkpoint, tmp_path, _options(64), shard=(i, 2))
    write_geotiff(tmp_path / "a.tif", random_image(1, 150, 170))  # the user's own file
    before = (tmp_path / "a.tif").read_bytes()
    with pytest.raises(OutputError, match=r"a\.tif exists: not written by bicorseg predict"):
        mosaic(tmp_path)
    assert (tmp_path / "a.tif").read_bytes() == before
    with pytest.warns(BicorsegWarning, match=r"a\.tif: not written by bicorseg predict; recomputing it"):
        assert sorted(mosaic(tmp_path, overwrite=True).assembled) == ["a.tif", "b.tif"]


def _one_line(err: str, command: str = "predict") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"bicorseg {command}: error:"), err
    return lines[0]
