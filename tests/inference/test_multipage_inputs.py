"""A file of several images (pages of a TIFF, subdatasets) is never read as its first page without a
word: it is refused in one line that says how to name a page, and a page named so
(``GTIFF_DIR:N:path``) is predicted into outputs of its own (``<stem>_pageN``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from bicorseg.cli.main import main
from bicorseg.raster_access import input_path
from tests.helpers import require
from tests.helpers.inference import CRS, TRANSFORM, random_image, write_geotiff


def two_pages(path: Path) -> Path:
    """A georeferenced TIFF of two pages (GDAL appends the second as another directory)."""
    write_geotiff(path, random_image(3, 32, 32, seed=1))
    profile = dict(driver="GTiff", width=32, height=32, count=3, dtype="uint8", crs=CRS, transform=TRANSFORM)
    with rasterio.open(path, "w", APPEND_SUBDATASET="YES", **profile) as page:
        page.write(random_image(3, 32, 32, seed=2))
    return path


def run(capsys, *argv) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_page_is_named_as_gdal_names_it() -> None:
    page = input_path("GTIFF_DIR:2:/data/scene.tif")
    assert (
        page.name == "scene_page2.tif"
        and page.stem == "scene_page2"
        and str(page) == "GTIFF_DIR:2:/data/scene.tif"
    )


@pytest.mark.slow
def test_a_multipage_tiff_is_refused_and_a_named_page_is_predicted(tmp_path, checkpoint, capsys) -> None:
    source = two_pages(tmp_path / "in" / "scene.tif")
    out = tmp_path / "out"
    common = ["--checkpoint", checkpoint, "--output", out, "--tile", "32", "--quiet"]
    code, lines = run(capsys, "predict", source, *common)
    assert code == 2 and len(lines) == 1, lines
    assert (
        f"{source}: holds 2 images (pages or subdatasets)" in lines[0] and f"GTIFF_DIR:2:{source}" in lines[0]
    )
    assert not out.exists()
    code, lines = run(capsys, "predict", f"GTIFF_DIR:2:{source}", *common)
    assert code == 0, lines
    with rasterio.open(out / "scene_page2.tif") as page:
        assert page.tags()["bicorseg_input"] == "scene_page2.tif" and page.crs == CRS
    # the second page's map is the map of the same pixels as a file of their own
    with rasterio.open(f"GTIFF_DIR:2:{source}") as src:
        write_geotiff(tmp_path / "alone" / "page.tif", src.read())
    alone = ["--checkpoint", checkpoint, "--output", tmp_path / "o2", "--tile", "32", "--quiet"]
    code, lines = run(capsys, "predict", tmp_path / "alone" / "page.tif", *alone)
    assert code == 0, lines
    with rasterio.open(out / "scene_page2.tif") as a, rasterio.open(tmp_path / "o2" / "page.tif") as b:
        assert np.array_equal(a.read(), b.read())


@pytest.mark.parametrize("command", ["vectorize", "areas"])
def test_a_multipage_class_raster_is_refused(command, tmp_path, capsys) -> None:
    require("shapely")
    source = two_pages(tmp_path / "classes.tif")
    target = tmp_path / ("polygons.gpkg" if command == "vectorize" else "areas.json")
    code, lines = run(capsys, command, source, "--output", target)
    assert code == 2 and len(lines) == 1 and "holds 2 images" in lines[0], lines
    assert not target.exists()
