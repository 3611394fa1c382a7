"""The procedural demo scenes: determinism, value ranges, every class present, GeoTIFF georeferencing."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from bicorseg.demo import (
    DEMO_CRS,
    DEMO_DATASET,
    generate_scene,
    scene_transform,
    write_scene_geotiff,
)
from bicorseg.errors import InputError


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    image_a, mask_a = generate_scene(128, seed=3)
    image_b, mask_b = generate_scene(128, seed=3)
    image_c, mask_c = generate_scene(128, seed=4)
    assert np.array_equal(image_a, image_b) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(image_a, image_c)
    assert not np.array_equal(mask_a, mask_c)


@pytest.mark.parametrize("size", [64, (96, 160)])
def test_shapes_dtypes_and_value_ranges(size) -> None:
    image, mask = generate_scene(size, seed=1)
    height, width = (size, size) if isinstance(size, int) else size
    assert image.shape == (3, height, width) and image.dtype == np.uint8
    assert mask.shape == (height, width) and mask.dtype == np.uint8
    assert mask.max() < DEMO_DATASET.num_classes
    assert image.std() > 5  # texture, not a flat fill


def test_every_class_present_in_a_larger_scene() -> None:
    for seed in (0, 42):
        _, mask = generate_scene(512, seed=seed)
        shares = np.bincount(mask.ravel(), minlength=DEMO_DATASET.num_classes) / mask.size
        assert (shares > 0.005).all(), f"seed {seed}: class shares {shares.round(3)}"


def test_classes_differ_in_colour() -> None:
    # Not trivially separable, but each class has its own mean colour.
    image, mask = generate_scene(512, seed=7)
    means = np.stack([image[:, mask == c].mean(axis=1) for c in range(DEMO_DATASET.num_classes)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=2)
    assert distances[~np.eye(len(means), dtype=bool)].min() > 8


def test_too_small_scene_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="at least 32"):
        generate_scene(16, seed=0)


def test_geotiff_has_crs_transform_and_data(tmp_path) -> None:
    image, mask = generate_scene(96, seed=5)
    transform = scene_transform(96, seed=5)
    assert transform == scene_transform(96, seed=5)
    image_path = write_scene_geotiff(tmp_path / "scene.tif", image, transform)
    label_path = write_scene_geotiff(tmp_path / "label.tif", mask, transform, palette=DEMO_DATASET.palette)
    with rasterio.open(image_path) as src:
        assert src.crs.to_epsg() == int(DEMO_CRS.split(":")[1])
        assert src.transform == transform and src.count == 3 and src.dtypes[0] == "uint8"
        assert np.array_equal(src.read(), image)
    with rasterio.open(label_path) as src:
        assert src.count == 1 and np.array_equal(src.read(1), mask)
        assert src.colormap(1)[2][:3] == DEMO_DATASET.palette[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label.tif", "scene.tif"]  # no temporary left


def test_geotiff_rejects_bad_shape(tmp_path) -> None:
    with pytest.raises(InputError, match="bands x H x W"):
        write_scene_geotiff(tmp_path / "x.tif", np.zeros(5, np.uint8), scene_transform(5, 0))
