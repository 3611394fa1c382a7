"""The one temporary-file scheme: names, multi-file commits, and cleanup of exactly the stale temporaries."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bicorseg.atomic import (
    OutputGroup,
    atomic_output,
    find_temps,
    folder_kept_on_success,
    new_temp,
    parse_temp,
    remove_stale_temps,
    scratch_folder,
    temp_name,
)
from tests.helpers.temp_owners import live_temps, stale_temps

# names that are glob patterns: cleanup must treat them as names
TRICKY = ["a.tif", "[ab].tif", "*.tif", "?.tif", "b.tif"]


def test_temporary_names_are_hidden_name_the_owner_and_keep_the_suffix(tmp_path: Path) -> None:
    temp = new_temp(tmp_path / "scene.tif")
    assert temp.parent == tmp_path and temp.name.startswith(".scene.tif.") and temp.name.endswith(".tmp.tif")
    parsed = parse_temp(temp)
    assert parsed is not None and parsed.pid == os.getpid() and parsed.is_for("scene.tif")
    assert not parsed.stale  # this process is alive
    assert stat.S_IMODE(temp.stat().st_mode) == 0o666 & ~_umask()  # ordinary permissions
    assert new_temp(tmp_path / "scene.tif") != temp  # two writers of one target never share a name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_very_long_name_still_fits_and_is_recognised(tmp_path: Path) -> None:
    name = "x" * 240 + ".tif"
    temp = new_temp(tmp_path / name)  # would fail with ENAMETOOLONG if the name were not shortened
    assert len(temp.name.encode()) <= 255
    parsed = parse_temp(temp)
    assert parsed.is_for(name) and not parsed.is_for("x" * 239 + ".tif")


def test_find_temps_lists_only_this_scheme(tmp_path: Path) -> None:
    ours = new_temp(tmp_path / "a.tif")
    for other in (".a.tif.12345.tmp", ".hidden", "a.tif", ".a.tif.host-1-xyz.tmp", ".a.tif.host-1-0123abcd"):
        (tmp_path / other).write_text("not ours")
    assert [t.path for t in find_temps(tmp_path)] == [ours]
    assert find_temps(tmp_path / "missing") == []


def test_cleanup_removes_exactly_the_stale_temporaries_of_the_named_targets(tmp_path: Path) -> None:
    targets = [tmp_path / name for name in TRICKY]
    with live_temps(*targets) as live:
        stale = dict(zip(TRICKY, stale_temps(*targets)))  # after the live ones: see the next test
        removed = remove_stale_temps(tmp_path, ["[ab].tif", "*.tif"])
        assert sorted(removed) == sorted([stale["[ab].tif"], stale["*.tif"]])
        # a glob of "[ab].tif" would have matched a.tif and b.tif, "*.tif" all of them
        left = {t.path for t in find_temps(tmp_path)}
        assert left == set(live) | {stale[n] for n in ("a.tif", "?.tif", "b.tif")}
        assert remove_stale_temps(tmp_path) and {t.path for t in find_temps(tmp_path)} == set(live)
    assert {t.path for t in find_temps(tmp_path)} == set(live)  # the owner ended: now stale
    assert all(t.stale for t in find_temps(tmp_path))
    remove_stale_temps(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_writer_first_removes_the_stale_temporaries_of_its_targets(tmp_path: Path) -> None:
    names = ["a.tif", "b.tif", "c.tif"]
    with live_temps(*(tmp_path / n for n in names)) as live:
        stale = dict(zip(names, stale_temps(*(tmp_path / n for n in names))))
        group = OutputGroup({"x": tmp_path / "a.tif"})  # removes a.tif's stale temporary file
        assert {t.path for t in find_temps(tmp_path)} == {*live, stale["b.tif"], stale["c.tif"]}
        with atomic_output(tmp_path / "b.tif") as temp:
            temp.write_text("done")
        OutputGroup({"x": tmp_path / "c.tif"}, clean=False)  # the opt-out of writers of many files
        assert {t.path for t in find_temps(tmp_path)} == {*live, stale["c.tif"]}
        group.abort()


def test_recursive_cleanup_and_stale_scratch_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    deep = stale_temps(tmp_path / "a" / "b" / "x.png")
    with scratch_folder(tmp_path, "predict") as scratch:
        (scratch / "inside.tif").write_text("work in progress")
        assert [t.path for t in find_temps(tmp_path)] == [scratch]
        assert remove_stale_temps(tmp_path, recursive=True) == deep  # the live scratch folder stays
        assert scratch.is_dir()
    assert not scratch.exists()


def test_an_output_group_appears_only_when_every_file_verifies(tmp_path: Path) -> None:
    targets = {"class": tmp_path / "x.tif", "prob": tmp_path / "x_prob.tif"}
    checked = []

    def verify(key: str, temp: Path) -> None:
        checked.append(key)
        if temp.read_text() != "complete":
            raise OSError(f"{key} is incomplete")

    group = OutputGroup(targets, last="class")
    group.temp("class").write_text("complete")
    group.temp("prob").write_text("half")
    with pytest.raises(OSError, match="prob is incomplete"):
        group.commit(verify)
    assert checked == ["class", "prob"] and list(tmp_path.iterdir()) == []  # nothing renamed, no temp

    with OutputGroup(targets, last="class") as group:
        for key in targets:
            group.temp(key).write_text("complete")
        side = group.side_file("prob", ".aux.xml")
        side.write_text("a writer's side file")
        group.commit(verify)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif", "x_prob.tif"]


def test_the_last_file_of_a_group_is_renamed_last(tmp_path: Path) -> None:
    (tmp_path / "x_prob.tif").mkdir()  # renaming onto a folder fails: the group stops there
    group = OutputGroup({"class": tmp_path / "x.tif", "prob": tmp_path / "x_prob.tif"}, last="class")
    group.temp("class").write_text("done")
    group.temp("prob").write_text("done")
    with pytest.raises(OSError):
        group.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_prob.tif"]  # the marker never appeared


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "report.json") as temp:
        temp.write_text("{")
        raise RuntimeError("failed half-way")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(tmp_path / "report.json") as temp:
        temp.write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_temp_name_is_what_new_temp_creates(tmp_path: Path) -> None:
    name = temp_name(tmp_path / "m.onnx", token="0123abcd")
    assert parse_temp(tmp_path / name).is_for("m.onnx") and name.endswith("-0123abcd.tmp.onnx")


def test_a_failed_block_removes_the_empty_folders_it_created(tmp_path) -> None:
    target = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), folder_kept_on_success(target):
        target.mkdir(parents=True)
        raise RuntimeError("failed")
    assert list(tmp_path.iterdir()) == []  # a and a/b gone; tmp_path itself existed before
    with pytest.raises(RuntimeError), folder_kept_on_success(target):
        target.mkdir(parents=True)
        (target / "part.tif").write_bytes(b"kept for a rerun")
        raise RuntimeError("failed")
    assert (target / "part.tif").is_file()  # a folder with something in it stays
    with folder_kept_on_success(tmp_path / "c"):
        (tmp_path / "c").mkdir()
    assert (tmp_path / "c").is_dir()  # success keeps it
