"""The run behind the guide "Training from GIS data" (docs/gis-training.md) and its pictures.

A procedural scene (the demo's generator, 1536 x 1536 px at 50 cm, UTM 33N) is labelled the way a
GIS user labels: polygons of every class but bare ground over the left two thirds, simplified like
hand-drawn outlines, in a GeoPackage in EPSG:4326 beside a ``labelled_area`` layer (bare ground is
the background inside it). Then the commands of the guide run as a user types them: ``bicorseg
train --config geo`` (a small network on the CPU, the demo's training settings), ``predict``,
``vectorize``; and the pictures are drawn from their outputs into ``docs/images/``.

    python scripts/geo_guide.py --work /tmp/geo-guide        # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyogrio
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import shapes

from bicorseg.data.geo import GeoSource, GeoSplit
from bicorseg.data.geo.rasters import map_xy
from bicorseg.data.labels import colour_table
from bicorseg.demo.scenes import DEMO_CRS, DEMO_DATASET, generate_scene, scene_transform, write_scene_geotiff

SIZE = 1536
LABELLED_COLUMNS = 1024  # the left two thirds are labelled
SEED = 21
IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
TRAIN = [
    "--model.width",
    "128",
    "--model.min_pixels",
    "4",
    "--data.crop_size",
    "128",
    "--data.batch_size",
    "2",
    "--data.num_workers",
    "0",
    "--data.val_block",
    "256",
    "--data.chips_per_epoch",
    "400",
    "--data.augment",
    "{scales: [1.0], crop_retries: 0, mosaic_p: 0.0}",
    "--optimizer.lr",
    "7e-3",
    "--optimizer.schedule",
    "constant",
    "--trainer.max_epochs",
    "4",
    "--trainer.check_val_every_n_epoch",
    "1",
    "--trainer.num_threads",
    "1",
    "--trainer.accelerator",
    "cpu",
    "--trainer.tensorboard",
    "false",
    "--trainer.progress_bar",
    "false",
]


def write_labels(folder: Path) -> tuple[Path, Path, np.ndarray]:
    image, mask = generate_scene(SIZE, SEED)
    transform = scene_transform(SIZE, SEED)
    scene = write_scene_geotiff(folder / "scene.tif", image, transform)
    region = np.zeros(mask.shape, bool)
    region[:, :LABELLED_COLUMNS] = True
    drawn = region & (mask != DEMO_DATASET.class_names.index("bare ground"))
    geoms, names = [], []
    for geojson, value in shapes(mask, mask=drawn, connectivity=4, transform=transform):
        polygon = shapely.simplify(shapely.geometry.shape(geojson), 0.6)  # a hand-drawn outline
        if not polygon.is_empty and polygon.area > 1.0:
            geoms.append(polygon)
            names.append(DEMO_DATASET.class_names[int(value)])
    to_wgs84 = Transformer.from_crs(DEMO_CRS, "EPSG:4326", always_xy=True)

    def wgs84(polygons: list) -> np.ndarray:
        return shapely.transform(
            np.array(polygons, dtype=object),
            lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1])),
        )

    gpkg = folder / "labels.gpkg"
    table = pa.table({"geometry": shapely.to_wkb(wgs84(geoms)), "class": names})
    pyogrio.write_arrow(
        table,
        gpkg,
        layer="labels",
        driver="GPKG",
        geometry_name="geometry",
        geometry_type="Polygon",
        crs="EPSG:4326",
    )
    xs, ys = map_xy(
        transform, np.array([0, LABELLED_COLUMNS, LABELLED_COLUMNS, 0]), np.array([0, 0, SIZE, SIZE])
    )
    area = pa.table(
        {"geometry": shapely.to_wkb(wgs84([shapely.Polygon(np.column_stack([xs, ys]))])), "id": [1]}
    )
    pyogrio.write_arrow(
        area,
        gpkg,
        layer="labelled_area",
        driver="GPKG",
        geometry_name="geometry",
        geometry_type="Polygon",
        crs="EPSG:4326",
        append=True,
    )
    return scene, gpkg, mask


def run(command: list[str], log: Path | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bicorseg.cli.main", *command], capture_output=True, text=True
    )
    if log is not None:
        log.write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def finish(figure, axes, palette: dict, path: Path) -> None:
    """The class legend under the panels (outlined swatches: a white class shows on the white page),
    and the figure as a small PNG (128 colours, which the textures of a scene need and little more)."""
    import io

    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from PIL import Image

    for axis in axes:
        axis.set_axis_off()
    handles = [
        Patch(facecolor=np.array(colour) / 255, edgecolor="0.3", linewidth=0.6, label=name)
        for name, colour in palette.items()
    ]
    rows = 1 if len(handles) <= 6 else 2  # more swatches than one row of the page holds: two rows
    figure.legend(handles=handles, loc="lower center", ncol=-(-len(handles) // rows), frameon=False)
    figure.tight_layout(rect=(0, 0.06 if rows == 1 else 0.1, 1, 0.96))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    Image.open(buffer).convert("RGB").quantize(128).save(path, optimize=True)


def pictures(
    scene: Path, gpkg: Path, run_dir: Path, prediction: Path, polygons: Path, truth: np.ndarray
) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with rasterio.open(scene) as src:
        image = src.read().transpose(1, 2, 0)
        transform = src.transform
    with rasterio.open(prediction) as src:
        predicted = src.read(1)
    config = (run_dir / "config.yaml").read_text()
    names = tuple(DEMO_DATASET.class_names)
    palette = dict(zip(names, DEMO_DATASET.palette))
    source = GeoSource(
        [scene],
        f"{gpkg}|layername=labels",
        label_field="class",
        labelled_area=f"{gpkg}|layername=labelled_area",
        background="bare ground",
    )
    split = GeoSplit(source, 128, 128, val_block=256, val_fraction=0.2, val_seed=0)
    run_classes = source.classes.names
    to_pixels = ~transform

    def pixel_rings(geometry):
        for part in shapely.get_parts(geometry):
            for ring in (part.exterior, *part.interiors):
                xy = shapely.get_coordinates(ring)
                yield map_xy(to_pixels, xy[:, 0], xy[:, 1])

    _, _, wkb, attrs = pyogrio.raw.read(gpkg, layer="labels", columns=["class"])
    back = Transformer.from_crs("EPSG:4326", DEMO_CRS, always_xy=True)
    labels = shapely.transform(
        shapely.from_wkb(wkb), lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1]))
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), dpi=80)
    axes[0].imshow(image)
    axes[0].set_title("the scene and the label polygons")
    for polygon, name in zip(labels, attrs[0]):
        for x, y in pixel_rings(polygon):
            axes[0].plot(x, y, color=np.array(palette[name]) / 255, linewidth=0.6)
    axes[0].axvline(LABELLED_COLUMNS, color="white", linestyle="--", linewidth=1.2)
    burned = source.read(0, rasterio.windows.Window(0, 0, SIZE, SIZE))[1]
    shown = colour_table([palette[n] for n in run_classes])[burned]
    shown[burned == 255] = (image[burned == 255] * 0.35).astype(np.uint8)
    axes[1].imshow(shown)
    axes[1].set_title("burned labels, validation blocks (hatched)")
    for x, y in pixel_rings(shapely.union_all(split.areas[0].polygons)):
        axes[1].fill(x, y, facecolor="none", edgecolor="yellow", hatch="///", linewidth=1.0)
    finish(fig, axes, palette, IMAGES / "geo-guide-labels.png")

    _, _, wkb, attrs = pyogrio.raw.read(polygons, columns=["class_name"])
    vectors = shapely.from_wkb(wkb)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), dpi=80)
    axes[0].imshow(colour_table([palette[n] for n in run_classes])[predicted])
    axes[0].axvline(LABELLED_COLUMNS, color="white", linestyle="--", linewidth=1.2)
    axes[0].set_title("bicorseg predict (the class raster)")
    axes[1].imshow(image[:512, 1024:])
    axes[1].set_title("bicorseg vectorize, a corner never labelled")
    xs, ys = map_xy(transform, np.array([1024, SIZE]), np.array([512, 0]))
    window = shapely.box(xs.min(), ys.min(), xs.max(), ys.max())
    for polygon, name in zip(vectors, attrs[0]):
        if polygon.intersects(window):
            for x, y in pixel_rings(polygon):
                axes[1].plot(np.asarray(x) - 1024, y, color=np.array(palette[name]) / 255, linewidth=0.8)
    axes[1].set_xlim(0, 512)
    axes[1].set_ylim(512, 0)
    finish(fig, axes, palette, IMAGES / "geo-guide-results.png")
    truth_in_run = np.array([run_classes.index(n) for n in names])[truth]
    right = np.s_[:, LABELLED_COLUMNS:]
    return {
        "classes_in_config": "classes: [" + ", ".join(run_classes) + "]" in config,
        "agreement_unlabelled_part": float((predicted[right] == truth_in_run[right]).mean()),
        "polygons": len(vectors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="a new folder for the data and the run")
    parser.add_argument("--pictures-only", action="store_true", help="draw the pictures of a finished --work")
    args = parser.parse_args()
    work = args.work
    IMAGES.mkdir(parents=True, exist_ok=True)
    if args.pictures_only:
        scene, gpkg, truth = work / "scene.tif", work / "labels.gpkg", generate_scene(SIZE, SEED)[1]
        facts = pictures(
            scene, gpkg, work / "run", work / "pred" / "scene.tif", work / "pred" / "scene.gpkg", truth
        )
        print(json.dumps(facts, indent=2))
        return
    work.mkdir(parents=True, exist_ok=False)
    scene, gpkg, truth = write_labels(work)
    seconds = {
        "train": run(
            [
                "train",
                "--config",
                "geo",
                "--data.images",
                str(scene),
                "--data.labels",
                f"{gpkg}|layername=labels",
                "--data.label_field",
                "class",
                "--data.labelled_area",
                f"{gpkg}|layername=labelled_area",
                "--data.background",
                "bare ground",
                "--output",
                str(work / "run"),
                *TRAIN,
            ],
            work / "train.log",
        ),
        "predict": run(
            [
                "predict",
                str(scene),
                "--checkpoint",
                str(work / "run" / "checkpoints" / "best.ckpt"),
                "--output",
                str(work / "pred"),
                "--color",
                "--quiet",
            ]
        ),
        "vectorize": run(
            ["vectorize", str(work / "pred" / "scene.tif"), "--output", str(work / "pred" / "scene.gpkg")]
        ),
    }
    facts = pictures(
        scene, gpkg, work / "run", work / "pred" / "scene.tif", work / "pred" / "scene.gpkg", truth
    )
    print(json.dumps({"seconds": seconds, **facts}, indent=2))
    print(f"train log: {work / 'train.log'}; pictures in {IMAGES}")


if __name__ == "__main__":
    main()
