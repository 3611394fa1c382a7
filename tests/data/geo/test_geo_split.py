"""Spatial validation that does not leak: blocks or an area layer, never overlapped by a training window."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import torch
from pyproj import Transformer
from rasterio.features import geometry_mask
from rasterio.windows import Window

from bicorseg.data.geo import GeoSource, GeoSplit, GeoTrainingChips, GeoWindows
from bicorseg.data.geo.rasters import pixel_polygon
from bicorseg.errors import ConfigError
from tests.helpers.geo import pixel_region, write_layer, write_scene, write_truth

SIZE = 384


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    path, mask, transform = write_scene(folder, SIZE, seed=11)
    labelled = np.ones(mask.shape, bool)
    labelled[250:, 250:] = False  # a corner without labels
    labels = write_truth(folder / "labels.gpkg", mask, transform, where=labelled)
    geo = GeoSource([path], labels, label_field="class")
    yield geo, labelled, folder
    geo.close()


def _window_box(geo: GeoSource, index: int, window: Window) -> shapely.Polygon:
    row, col = int(window.row_off), int(window.col_off)
    return pixel_polygon(geo.rasters[index], row, col, row + int(window.height), col + int(window.width))


def _val_geometry(split: GeoSplit, index: int = 0) -> shapely.Geometry:
    return shapely.union_all(split.areas[index].polygons)


@pytest.mark.parametrize(("buffer", "fraction"), [(0, 0.25), (20, 0.1)])
def test_training_windows_never_overlap_the_validation_blocks_over_many_seeds(source, buffer, fraction):
    geo, _, _ = source
    pixel = geo.rasters[0].pixel_size
    for seed in range(8):
        split = GeoSplit(
            geo,
            window=64,
            val_window=64,
            val_block=64,
            val_fraction=fraction,
            val_seed=seed,
            val_buffer=buffer,
        )
        val = _val_geometry(split)
        assert val.area > 0
        rng = np.random.default_rng(seed)
        for _ in range(150):
            index, window = split.training.draw(rng.random(3))
            box = _window_box(geo, index, window)
            assert shapely.intersection(box, val).area <= 1e-9 * pixel**2
            assert shapely.distance(box, val) >= buffer * pixel - 1e-6


def test_validation_blocks_differ_by_seed_and_hold_the_asked_share(source):
    geo, _, _ = source
    first = GeoSplit(geo, window=96, val_window=64, val_block=64, val_fraction=0.25, val_seed=0)
    second = GeoSplit(geo, window=96, val_window=64, val_block=64, val_fraction=0.25, val_seed=1)
    assert not _val_geometry(first).equals(_val_geometry(second))
    counts = first.zones.counts
    share = counts[1].sum() / counts.sum()
    assert 0.25 <= share < 0.25 + 64 * 64 / counts.sum()  # blocks are taken until the share is reached


def test_zone_counts_are_exact_and_validation_windows_score_only_the_validation_area(source, tmp_path):
    geo, _, _ = source
    raster = geo.rasters[0]
    # an irregular validation area drawn in another CRS, with a buffer
    xs = np.array([40, 200, 230, 60]) + 0.3
    ys = np.array([30, 60, 220, 180]) + 0.6
    utm = shapely.Polygon(
        np.column_stack(
            [raster.transform.c + xs * raster.transform.a, raster.transform.f + ys * raster.transform.e]
        )
    )
    layer = write_layer(tmp_path / "val.gpkg", np.array([utm]), {"id": [1]}, crs="EPSG:4326")
    split = GeoSplit(geo, window=96, val_window=64, val_area=str(layer), val_buffer=8)
    labels = geo.read(0, Window(0, 0, SIZE, SIZE))[1]
    labelled = labels != geo.ignore_index
    back = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    area = shapely.transform(
        shapely.transform(
            np.array([utm]),
            lambda xy: np.column_stack(
                Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(xy[:, 0], xy[:, 1])
            ),
        ),
        lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])),
    )
    inside = geometry_mask(area, (SIZE, SIZE), raster.transform, invert=True)
    grown = geometry_mask(
        [shapely.buffer(area[0], 8 * raster.pixel_size)], (SIZE, SIZE), raster.transform, invert=True
    )
    counts = split.zones.counts
    for k in range(geo.classes.num_classes):
        assert counts[0, k] == (labelled & ~grown & (labels == k)).sum()
        assert counts[1, k] == (labelled & inside & (labels == k)).sum()
        assert counts[2, k] == (labelled & grown & ~inside & (labels == k)).sum()
    windows = GeoWindows(geo, split.validation, 64, split.areas)
    scored = np.zeros((SIZE, SIZE), int)
    for i in range(len(windows)):
        sample = windows[i]
        _, window = split.validation[i]
        row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        mask = sample["mask"].numpy()
        assert mask.shape == (64, 64)
        scored[row : row + h, col : col + w] += mask[:h, :w] != geo.ignore_index
    assert np.array_equal(
        scored, (labelled & inside).astype(int)
    )  # every validation pixel once, nothing else
    rng = np.random.default_rng(0)
    for _ in range(200):
        box = _window_box(geo, *split.training.draw(rng.random(3)))
        assert shapely.distance(box, area[0]) >= 8 * raster.pixel_size - 1e-6


def test_training_chips_are_drawn_toward_labelled_pixels(source):
    geo, _, _ = source
    split = GeoSplit(geo, window=96, val_window=64, validate=False)
    chips = GeoTrainingChips(geo, split.training, length=64, seed=3)
    corner = 0
    for i in range(len(chips)):
        sample = chips[i]
        assert sample["image"].shape == (3, 96, 96) and sample["image"].dtype == torch.float32
        assert (sample["mask"] != geo.ignore_index).any()
        row, col = (int(v) for v in sample["name"].rsplit(" row ", 1)[1].split(" col "))
        corner += row >= 250 and col >= 250  # windows entirely in the unlabelled corner
    assert corner == 0
    first, second, other = (GeoTrainingChips(geo, split.training, length=8, seed=s) for s in (3, 3, 4))
    names = [first[i]["name"] for i in range(8)]
    assert names == [second[i]["name"] for i in range(8)]  # a seed draws the same windows
    assert names != [other[i]["name"] for i in range(8)]


def test_blocks_too_large_for_the_labels_are_refused(source):
    geo, _, _ = source
    with pytest.raises(
        ConfigError, match=r"validation would take all 1 labelled blocks|lie in 1 block"
    ) as error:
        GeoSplit(geo, window=96, val_window=64, val_block=4096)
    assert error.value.key == "data.val_block"
    assert str(error.value).endswith("a validation area (data.val_area)")  # the key as train writes it


def test_a_validation_area_without_labels_is_refused(source, tmp_path):
    geo, _, _ = source
    raster = geo.rasters[0]
    corner = write_layer(
        tmp_path / "corner.gpkg",
        np.array([pixel_region(raster.transform, slice(300, 380), slice(300, 380))]),
        {"id": [1]},
        crs="EPSG:32633",
    )
    with pytest.raises(Exception, match="holds no labelled pixel"):
        GeoSplit(geo, window=96, val_window=64, val_area=str(corner))
