"""Release sources: zip members are streamed in bounded memory; what a scan unpacks goes when it ends or fails;
archive bombs, zip-slip members, archives nested too deep and symbolic link loops are one line."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from bicorseg.atomic import find_temps
from bicorseg.cli.main import main
from bicorseg.data.io import read_image
from bicorseg.data.sources import ArchiveLimits, source_files
from bicorseg.errors import InputError
from tests.helpers.cli import refused
from tests.helpers.data import load_generator

gen = load_generator()


def _peak_bytes(action) -> tuple[object, int]:
    """What ``action()`` returns, and the peak of Python and numpy allocations while it ran."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_member_is_read_and_copied_without_holding_its_bytes(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (3, 1600, 1600), dtype=np.uint8)
    tif = tmp_path / "area1.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=1600, height=1600, count=3, dtype="uint8",
                       crs="EPSG:32632", transform=Affine(0.09, 0, 496000, 0, -0.09, 5420000)) as dst:  # fmt: skip
        dst.write(array)  # uncompressed: the member is as large as the image
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.write(tif, "top/area1.tif")
    with source_files([archive], tmp_path / "out") as files:
        (member,) = files
        with member.local() as local:
            assert str(local) == f"{archive}!top/area1.tif"  # messages name the member
            image, peak = _peak_bytes(lambda: read_image(local))
        np.testing.assert_array_equal(image, array)
        # the decoded image and little else (the member's 7.7 MB read whole would double it)
        assert peak < array.nbytes + 2**20, peak
        _, peak = _peak_bytes(lambda: member.copy_to(tmp_path / "copy.tif"))
        assert peak < 6 * 2**20, peak  # blocks of 1 MiB, not the member
    assert (tmp_path / "copy.tif").read_bytes() == tif.read_bytes()
    assert list((tmp_path / "out").iterdir()) == []


def _unpacked(folder: Path) -> list[str]:
    """Temporary files and folders of the atomic scheme anywhere under ``folder`` (the names scans write)."""
    found = [t.path for t in find_temps(folder)]
    found += [t.path for d in folder.rglob("*") if d.is_dir() for t in find_temps(d)]
    return sorted(str(p.relative_to(folder)) for p in found)


def test_nested_archives_and_members_live_in_one_scratch_folder_that_goes_with_the_scan(
    tmp_path: Path,
) -> None:
    release = gen.make_potsdam(
        None, tmp_path / "release", (64, 80), archives=True, nested=True, tiles=["2_10"]
    )
    work = tmp_path / "work"
    nested = ["2_Ortho_RGB.zip", "5_Labels_all.zip"]
    with source_files([release / "Potsdam.zip"], work, nested) as files:
        (scratch,) = work.iterdir()
        assert [t.path for t in find_temps(work)] == [scratch] and scratch.name.startswith(".sources.")
        inside = sorted(p.name for p in scratch.iterdir())
        assert [n.split(".")[1:3] for n in inside] == [["2_Ortho_RGB", "zip"], ["5_Labels_all", "zip"]], (
            inside
        )
        image = next(f for f in files if f.rel.endswith("_RGB.tif"))
        with image.local() as local:
            assert Path(local).parent == scratch and Path(local).name.startswith(".top_potsdam_2_10_RGB.tif.")
        assert sorted(p.name for p in scratch.iterdir()) == inside  # the unpacked member is gone
    assert list(work.iterdir()) == []
    with pytest.raises(RuntimeError, match="a failed preparation"):
        with source_files([release / "Potsdam.zip"], work, nested):
            assert _unpacked(work) != []
            raise RuntimeError("a failed preparation")
    assert list(work.iterdir()) == []


def test_a_failed_prepare_leaves_no_unpacked_archive(tmp_path: Path, capsys) -> None:
    folder = gen.make_potsdam(None, tmp_path / "unpacked", (64, 80)) / "Potsdam"
    broken = folder / "5_Labels_all" / "top_potsdam_2_12_label.tif"  # the second tile: the first is cut
    broken.write_bytes(b"II*\0 not a tiff")
    zips = tmp_path / "zips"
    inner = [
        gen._zip(zips / "2_Ortho_RGB.zip", gen._members(folder / "2_Ortho_RGB", folder)),
        gen._zip(zips / "5_Labels_all.zip", gen._members(folder / "5_Labels_all", folder / "5_Labels_all")),
    ]
    potsdam = gen._zip(tmp_path / "release" / "Potsdam.zip", [(z, z.name) for z in inner])
    out = tmp_path / "out"
    args = ["prepare", "potsdam", "--source", potsdam, "--output", out, "--splits", "train", "--patch-size", "64",
            "--no-progress"]  # fmt: skip
    assert main([str(a) for a in args]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "top_potsdam_2_12_label.tif" in lines[0], lines
    assert any(out.glob("train/images/top_potsdam_2_11_*.tif"))  # the scan had unpacked and cut a tile
    assert _unpacked(out) == []  # no .sources.* folder, no .2_Ortho_RGB.zip.*.tmp.zip anywhere
    assert not any(p.suffix == ".zip" for p in out.rglob("*"))


def _loveda_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _png_bytes(value: int = 1) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(stream, format="PNG")
    return stream.getvalue()


def _declare_size(archive: Path, member: str, size: int) -> None:
    """Patch the central directory so that ``member`` declares ``size`` uncompressed bytes."""
    data = bytearray(archive.read_bytes())
    entry = data.find(b"PK\x01\x02")
    while entry >= 0:
        name_length = struct.unpack_from("<H", data, entry + 28)[0]
        if data[entry + 46 : entry + 46 + name_length].decode() == member:
            struct.pack_into("<I", data, entry + 24, size)
            break
        entry = data.find(b"PK\x01\x02", entry + 4)
    archive.write_bytes(bytes(data))


def _prepare_refused(capsys, source: Path, out: Path) -> str:
    return refused(capsys, "prepare", "loveda", "--source", source, "--output", out, "--no-progress")


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_an_archive_member_declaring_4_gib_is_refused_before_reading(tmp_path, capsys) -> None:
    archive = _loveda_zip(tmp_path / "LoveDA.zip", {"Train/Rural/images_png/0.png": _png_bytes(),
                                                     "Train/Rural/masks_png/0.png": _png_bytes()})  # fmt: skip
    _declare_size(archive, "Train/Rural/images_png/0.png", 0xFFFFFFF0)
    line = _prepare_refused(capsys, archive, tmp_path / "out")
    assert "LoveDA.zip!Train/Rural/images_png/0.png: 4 GiB is more than the 2 GiB" in line, line
    assert _files_under(tmp_path / "out") == []


def test_archives_nested_too_deep_are_refused_and_their_unpacked_copies_removed(tmp_path, capsys) -> None:
    inner = {"Train/Rural/images_png/0.png": _png_bytes(), "Train/Rural/masks_png/0.png": _png_bytes()}
    level = _loveda_zip(tmp_path / "nest" / "Train.zip", inner)
    for depth in range(4):  # Train.zip in Train.zip in ... : the official name, so each one is unpacked
        level = _loveda_zip(tmp_path / "nest" / f"{depth}" / "Train.zip", {"Train.zip": level.read_bytes()})
    out = tmp_path / "out"
    line = _prepare_refused(capsys, level, out)
    assert "archives nested more than 3 deep" in line, line
    assert _files_under(out) == []  # no .bicorseg-prepare/archives/<depth>__Train.zip or .tmp left


def test_zip_slip_members_are_refused(tmp_path, capsys) -> None:
    for name in ("../../escaped.png", "/abs/escaped.png", "Train/../../escaped.png", "..\\..\\escaped.png"):
        archive = _loveda_zip(tmp_path / "LoveDA.zip", {name: _png_bytes()})
        line = _prepare_refused(capsys, archive, tmp_path / "out")
        assert f"LoveDA.zip: member {name!r} has an absolute path or climbs out with '..'" in line, line
    assert not list(tmp_path.parent.glob("escaped.png")) and not list(tmp_path.rglob("escaped.png"))


def test_a_symbolic_link_loop_in_a_source_folder_is_reported(tmp_path, capsys) -> None:
    rural = tmp_path / "LoveDA" / "Train" / "Rural"
    (rural / "images_png").mkdir(parents=True)
    (rural / "images_png" / "0.png").write_bytes(_png_bytes())
    os.symlink(tmp_path / "LoveDA" / "Train", rural / "again")  # Rural/again -> Train, which holds Rural
    line = _prepare_refused(capsys, tmp_path / "LoveDA", tmp_path / "out")
    assert f"{rural / 'again'}: symbolic link loop (it points back to" in line, line


def test_nested_archive_size_and_total_size_limits(tmp_path) -> None:
    """The two limits the default test archives cannot reach, with small limits (same code path)."""
    inner = _loveda_zip(tmp_path / "inner" / "Train.zip", {"Train/Rural/images_png/0.png": _png_bytes()})
    outer = _loveda_zip(tmp_path / "LoveDA.zip", {"Train.zip": inner.read_bytes(), "notes.txt": b"x" * 500})
    scratch = tmp_path / "scratch"
    size = inner.stat().st_size
    with pytest.raises(
        InputError, match=rf"LoveDA\.zip!Train\.zip: {size} bytes is more than the {size - 1} bytes"
    ):
        with source_files([outer], scratch, ["Train.zip"], ArchiveLimits(archive_bytes=size - 1)):
            pass
    with pytest.raises(
        InputError, match=r"LoveDA\.zip: the archives of the source unpack to more than 100 bytes"
    ):
        with source_files([outer], scratch, ["Train.zip"], ArchiveLimits(total_bytes=100)):
            pass
    assert list(scratch.iterdir()) == []
    with source_files([outer], scratch, ["Train.zip"]) as files:
        assert sorted(f.rel for f in files) == ["Train/Rural/images_png/0.png", "notes.txt"]
    # the limit on one file is the one given, for members and plain files alike
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"x" * 500)
    for source in (outer, folder):
        with source_files([source], scratch, ["Train.zip"], ArchiveLimits(file_bytes=499)) as files:
            notes = next(f for f in files if f.rel.endswith("notes.txt"))
            with pytest.raises(InputError, match=r"notes\.txt: 500 bytes is more than the 499 bytes"):
                notes.copy_to(tmp_path / "copy.txt")
    assert not (tmp_path / "copy.txt").exists()
