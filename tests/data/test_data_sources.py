"""Release sources: zip members are streamed in bounded memory; what a scan unpacks goes when it ends or fails."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from bicorseg.atomic import find_temps
from bicorseg.cli.main import main
from bicorseg.data.io import read_image
from bicorseg.data.sources import source_files
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
