"""The embedded demo: procedural aerial scenes with labels and the ``bicorseg demo`` pipeline."""

from bicorseg.demo.scenes import (
    DEMO_CRS,
    DEMO_DATASET,
    DEMO_RESOLUTION,
    generate_scene,
    scene_transform,
    write_scene_geotiff,
)

__all__ = [
    "DEMO_CRS",
    "DEMO_DATASET",
    "DEMO_RESOLUTION",
    "generate_scene",
    "scene_transform",
    "write_scene_geotiff",
]
