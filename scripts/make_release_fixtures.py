"""Build fixtures in the layout of the official ISPRS Vaihingen, ISPRS Potsdam and LoveDA releases.

The pixels come from the real samples in ``../shared/data`` (see its README), or, with no shared
folder (``shared_data=None``, ``--procedural``), from procedural aerial scenes
(:mod:`bicorseg.demo.scenes`, seeded: the same fixtures on every machine), so that the tests run
anywhere. The 512 x 512 crop of each ISPRS dataset (a scene whose classes are mapped to the ISPRS
ones, with an eroded boundary at class borders) is mirrored out to the requested tile size and
shifted per tile (so tiles differ), and its index mask (0 eroded boundary, 1..6 classes) is written
in the official colour encoding, both as the eroded ("noBoundary") label and as a full label
(boundary pixels filled from their neighbours). A small block of clutter is painted in, so that
every class colour occurs. LoveDA pairs are the shared Train/Rural sample, or 1024 x 1024 scenes
with the LoveDA raw values.
Images and labels are GeoTIFFs with a real CRS (EPSG:32632 for Vaihingen, EPSG:32633 for Potsdam).
The Potsdam IRRG tiles are synthetic (a pseudo near-infrared band made from the RGB crop).

Every tile name of every split is generated, with the file names and folders of the releases::

    vaihingen/ISPRS_semantic_labeling_Vaihingen/top/top_mosaic_09cm_area{N}.tif
    vaihingen/ISPRS_semantic_labeling_Vaihingen/gts_for_participants/top_mosaic_09cm_area{N}.tif
    vaihingen/ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE/top_mosaic_09cm_area{N}.tif
    vaihingen/ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE/top_mosaic_09cm_area{N}_noBoundary.tif
    potsdam/2_Ortho_RGB/top_potsdam_{r}_{c}_RGB.tif   (3_Ortho_IRRG/..._IRRG.tif on request)
    potsdam/5_Labels_all/top_potsdam_{r}_{c}_label.tif
    potsdam/5_Labels_all_noBoundary/top_potsdam_{r}_{c}_label_noBoundary.tif
    loveda/{Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}/{id}.png

or, with ``archives=True``, as the official zip files (Potsdam optionally nested in ``Potsdam.zip``).
Fixtures are generated into temporary folders by the tests; never commit them.

Usage: ``python scripts/make_release_fixtures.py vaihingen --shared ../shared/data --output /tmp/fx``
(or ``--procedural`` instead of ``--shared``)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

from bicorseg.data.datasets import LOVEDA, POTSDAM_SPLITS, VAIHINGEN_SPLITS
from bicorseg.data.labels import colourise
from bicorseg.demo import scenes

ISPRS_COLOURS = {
    1: (255, 255, 255),  # impervious surfaces
    2: (0, 0, 255),  # building
    3: (0, 255, 255),  # low vegetation
    4: (0, 255, 0),  # tree
    5: (255, 255, 0),  # car
    6: (255, 0, 0),  # clutter
    0: (0, 0, 0),  # eroded boundary
}
VAIHINGEN_TILES = tuple(sorted({t for tiles in VAIHINGEN_SPLITS.values() for t in tiles}, key=int))
# The Potsdam release also has tile 7_10, which the protocol leaves out: generate it to check that.
POTSDAM_TILES = tuple(sorted({*(t for tiles in POTSDAM_SPLITS.values() for t in tiles), "7_10"}))

Size = tuple[int, int]
SizeSpec = Size | Mapping[str, Size] | Callable[[str], Size]


def _size_of(size: SizeSpec, tile: str, default: Size) -> Size:
    if callable(size):
        return size(tile)
    if isinstance(size, Mapping):
        return tuple(size.get(tile, default))  # type: ignore[return-value]
    return tuple(size)  # type: ignore[return-value]


# The classes of the demo scenes as ISPRS indices (1 impervious, 2 building, 3 low vegetation,
# 4 tree, 5 car, 6 clutter) and as LoveDA raw values (1 background, 2 building, 3 road, 4 water,
# 5 barren, 6 forest, 7 agriculture).
_SCENE_TO_ISPRS = np.zeros(256, np.uint8)
_SCENE_TO_ISPRS[[scenes.BARE, scenes.FIELD, scenes.TREE, scenes.WATER, scenes.ROAD, scenes.BUILDING]] = (
    6, 3, 4, 6, 1, 2,
)  # fmt: skip
_SCENE_TO_LOVEDA = np.zeros(256, np.uint8)
_SCENE_TO_LOVEDA[[scenes.BARE, scenes.FIELD, scenes.TREE, scenes.WATER, scenes.ROAD, scenes.BUILDING]] = (
    5, 7, 6, 4, 3, 2,
)  # fmt: skip
_SCENE_SEEDS = {"vaihingen": 9, "potsdam": 5, "loveda": 7}


def _class_borders(mask: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class (the eroded boundary of the ISPRS labels)."""
    border = np.zeros(mask.shape, bool)
    border[1:] |= mask[1:] != mask[:-1]
    border[:-1] |= mask[1:] != mask[:-1]
    border[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    border[:, :-1] |= mask[:, 1:] != mask[:, :-1]
    return border


@lru_cache(maxsize=4)
def procedural_isprs_crop(dataset: str, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A procedural crop like the shared one: image ``3 x size x size`` uint8, eroded index mask.

    A demo scene (seeded per dataset) with its classes mapped to the ISPRS ones, a few cars (dark
    4 x 8 px blocks on the roads) and the class borders as the eroded boundary (0).
    """
    image, scene = scenes.generate_scene(size, _SCENE_SEEDS[dataset])
    mask = _SCENE_TO_ISPRS[scene]
    rng = np.random.default_rng(_SCENE_SEEDS[dataset])
    rows, cols = np.nonzero(scene[:-8, :-8] == scenes.ROAD)
    for k in rng.choice(len(rows), size=min(len(rows), 12), replace=False) if len(rows) else []:
        y, x = int(rows[k]), int(cols[k])
        mask[y : y + 4, x : x + 8] = 5
        image[:, y : y + 4, x : x + 8] = np.array([40, 40, 60], np.uint8)[:, None, None]
    mask[_class_borders(mask)] = 0
    return np.ascontiguousarray(image), mask


def load_isprs_crop(shared_data: Path | None, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The crop of ``dataset``: image ``3 x 512 x 512`` uint8 and its eroded index mask (0 boundary, 1..6).

    From the shared sample, or procedural when ``shared_data`` is None.
    """
    if shared_data is None:
        image, mask = procedural_isprs_crop(dataset)
        return image.copy(), mask.copy()
    folder = Path(shared_data) / "isprs" / dataset
    image_file = next((folder / "img_dir").glob("*.png"))
    mask_file = folder / "ann_dir" / image_file.name
    image = np.asarray(Image.open(image_file).convert("RGB")).transpose(2, 0, 1)
    mask = np.asarray(Image.open(mask_file))
    return np.ascontiguousarray(image), mask.copy()


def _grow(array: np.ndarray, size: Size, shift: int) -> np.ndarray:
    """Mirror an array (``... x H x W``) out to ``size`` and roll it by ``shift`` pixels."""
    pad = [(0, 0)] * (array.ndim - 2) + [
        (0, max(0, size[0] - array.shape[-2])),
        (0, max(0, size[1] - array.shape[-1])),
    ]
    grown = np.pad(array, pad, mode="symmetric")[..., : size[0], : size[1]]
    return np.roll(grown, (shift, 2 * shift), axis=(-2, -1))


def fill_boundary(eroded: np.ndarray) -> np.ndarray:
    """A full label from an eroded one: boundary pixels (0) take a neighbouring class."""
    full = eroded.copy()
    for _ in range(64):
        holes = full == 0
        if not holes.any():
            break
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            neighbour = np.roll(full, step, axis=axis)
            take = holes & (neighbour > 0)
            full[take] = neighbour[take]
            holes &= ~take
    full[full == 0] = 1
    return full


def make_tile(
    crop: tuple[np.ndarray, np.ndarray], size: Size, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, full and eroded index labels of one fixture tile (tile ``index`` shifts the content)."""
    image, eroded = crop
    shift = (37 * index) % 256
    image = _grow(image, size, shift)
    eroded = _grow(eroded, size, shift)
    # A clutter block (class 6), so that every class colour occurs in the labels.
    y, x = size[0] // 3, size[1] // 3
    eroded[y : y + 12, x : x + 12] = 6
    eroded[y - 2 : y, x : x + 12] = 0
    return image, fill_boundary(eroded), eroded


def write_geotiff(
    path: Path,
    array: np.ndarray,
    epsg: int,
    origin: tuple[float, float],
    resolution: float,
    compress: str | None = None,
) -> None:
    """A GeoTIFF with a CRS (label tiles, a few flat colours, are deflated to keep fixtures small)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": array.shape[1],
        "width": array.shape[2],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1]),
    }
    if compress:
        profile["compress"] = compress
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(array)


def write_label(
    path: Path, array: np.ndarray, epsg: int, origin: tuple[float, float], resolution: float
) -> None:
    write_geotiff(path, array, epsg, origin, resolution, compress="deflate")


def _zip(archive: Path, files: Iterable[tuple[Path, str]]) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as handle:
        for path, member in files:
            handle.write(path, member)
    return archive


def make_vaihingen(
    shared_data: Path | None,
    output: Path,
    size: SizeSpec = (300, 360),
    *,
    archives: bool = False,
    tiles: Iterable[str] | None = None,
) -> Path:
    """ISPRS Vaihingen in its release layout (or as its three official zips); returns the folder."""
    output = Path(output)
    crop = load_isprs_crop(shared_data, "vaihingen")
    stage = output / ".stage" if archives else output
    base = stage / "ISPRS_semantic_labeling_Vaihingen"
    complete = stage / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE"
    eroded_dir = stage / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE"
    participants = set(VAIHINGEN_SPLITS["train"]) | set(VAIHINGEN_SPLITS["val"])
    for tile in tiles or VAIHINGEN_TILES:
        n = int(tile)
        image, full, eroded = make_tile(crop, _size_of(size, tile, (300, 360)), n)
        # Tiles lie side by side in UTM 32N, 9 cm pixels.
        origin = (496000.0 + 250.0 * n, 5420000.0)
        name = f"top_mosaic_09cm_area{tile}"
        write_geotiff(base / "top" / f"{name}.tif", image, 32632, origin, 0.09)
        full_rgb = colourise(full, ISPRS_COLOURS)
        write_label(complete / f"{name}.tif", full_rgb, 32632, origin, 0.09)
        if tile in participants:
            write_label(base / "gts_for_participants" / f"{name}.tif", full_rgb, 32632, origin, 0.09)
        write_label(
            eroded_dir / f"{name}_noBoundary.tif", colourise(eroded, ISPRS_COLOURS), 32632, origin, 0.09
        )
    if archives:
        _zip(output / "ISPRS_semantic_labeling_Vaihingen.zip", _members(base, base))
        _zip(
            output / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip",
            _members(complete, complete),
        )
        _zip(
            output / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
            _members(eroded_dir, eroded_dir),
        )
        shutil.rmtree(stage)
    return output


def _members(folder: Path, relative_to: Path) -> list[tuple[Path, str]]:
    return [(p, p.relative_to(relative_to).as_posix()) for p in sorted(folder.rglob("*")) if p.is_file()]


def _pseudo_irrg(rgb: np.ndarray) -> np.ndarray:
    """A synthetic IR-R-G image: vegetation (green > red) is bright in the made-up infrared band."""
    red, green = rgb[0].astype(np.int16), rgb[1].astype(np.int16)
    nir = np.clip(green + (green - red).clip(0) * 2, 0, 255).astype(np.uint8)
    return np.stack([nir, rgb[0], rgb[1]])


def make_potsdam(
    shared_data: Path | None,
    output: Path,
    size: SizeSpec = (300, 360),
    *,
    archives: bool = False,
    nested: bool = False,
    irrg: bool = False,
    tiles: Iterable[str] | None = None,
) -> Path:
    """ISPRS Potsdam in its release layout (or as its zips, optionally nested in ``Potsdam.zip``)."""
    output = Path(output)
    crop = load_isprs_crop(shared_data, "potsdam")
    stage = output / ".stage" if archives else output / "Potsdam"
    folders = {
        "rgb": stage / "2_Ortho_RGB",
        "irrg": stage / "3_Ortho_IRRG",
        "full": stage / "5_Labels_all",
        "eroded": stage / "5_Labels_all_noBoundary",
    }
    for index, tile in enumerate(tiles or POTSDAM_TILES):
        image, full, eroded = make_tile(crop, _size_of(size, tile, (300, 360)), index)
        row, col = (int(v) for v in tile.split("_"))
        # Tiles are 300 m squares in UTM 33N, 5 cm pixels.
        origin = (366000.0 + 300.0 * col, 5808000.0 - 300.0 * row)
        name = f"top_potsdam_{tile}"
        write_geotiff(folders["rgb"] / f"{name}_RGB.tif", image, 32633, origin, 0.05)
        if irrg:
            write_geotiff(folders["irrg"] / f"{name}_IRRG.tif", _pseudo_irrg(image), 32633, origin, 0.05)
        write_label(
            folders["full"] / f"{name}_label.tif", colourise(full, ISPRS_COLOURS), 32633, origin, 0.05
        )
        write_label(
            folders["eroded"] / f"{name}_label_noBoundary.tif",
            colourise(eroded, ISPRS_COLOURS),
            32633,
            origin,
            0.05,
        )
    if archives:
        target = output / ".zips" if nested else output
        zips = [_zip(target / "2_Ortho_RGB.zip", _members(folders["rgb"], stage))]
        if irrg:
            zips.append(_zip(target / "3_Ortho_IRRG.zip", _members(folders["irrg"], stage)))
        # The label archives hold their files without a folder.
        zips.append(_zip(target / "5_Labels_all.zip", _members(folders["full"], folders["full"])))
        zips.append(
            _zip(target / "5_Labels_all_noBoundary.zip", _members(folders["eroded"], folders["eroded"]))
        )
        if nested:
            _zip(output / "Potsdam.zip", [(z, z.name) for z in zips])
            shutil.rmtree(target)
        shutil.rmtree(stage)
    return output


# The shared LoveDA sample holds Train/Rural only; the other parts reuse its pairs under new ids
# (LoveDA ids are unique across splits and domains: Val/Rural starts at 2522, Test/Rural at 4191...).
LOVEDA_FIRST_ID = {
    ("Train", "Rural"): 0,
    ("Train", "Urban"): 1366,
    ("Val", "Rural"): 2522,
    ("Val", "Urban"): 3514,
    ("Test", "Rural"): 4191,
    ("Test", "Urban"): 5167,
}


PROCEDURAL_LOVEDA_PAIRS = 4  # distinct pairs (shifted copies of one scene); more files repeat them


@lru_cache(maxsize=1)
def _loveda_scene() -> tuple[np.ndarray, np.ndarray]:
    image, scene = scenes.generate_scene(512, _SCENE_SEEDS["loveda"])
    return image, _SCENE_TO_LOVEDA[scene]


@lru_cache(maxsize=PROCEDURAL_LOVEDA_PAIRS)
def _procedural_loveda_pair(index: int) -> tuple[bytes, bytes]:
    """PNG bytes of procedural LoveDA pair ``index``: the scene grown to 1024 x 1024, shifted per pair."""
    import io

    image, mask = _loveda_scene()
    shift = 97 * index
    files = []
    for array in (np.moveaxis(_grow(image, (1024, 1024), shift), 0, -1), _grow(mask, (1024, 1024), shift)):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
        files.append(buffer.getvalue())
    return files[0], files[1]


def make_loveda(
    shared_data: Path | None,
    output: Path,
    parts: Mapping[tuple[str, str], int] | None = None,
    *,
    archives: bool = False,
) -> Path:
    """LoveDA in its release layout: ``parts`` maps (split folder, domain) to a number of pairs.

    The default is the shared sample as it is (Train/Rural, 16 pairs), or 4 procedural pairs when
    ``shared_data`` is None. Test parts get no masks, like the release.
    """
    output = Path(output)
    if shared_data is None:
        names: list[Path] = []
        pairs = PROCEDURAL_LOVEDA_PAIRS
    else:
        source = Path(shared_data) / "loveda" / "Train" / "Rural"
        names = sorted((source / "images_png").glob("*.png"), key=lambda p: int(p.stem))
        pairs = len(names)
    parts = parts or {("Train", "Rural"): pairs}
    stage = output / ".stage" if archives else output
    for (split, domain), count in parts.items():
        if (split, domain) not in LOVEDA_FIRST_ID:
            raise ValueError(f"unknown LoveDA part {split}/{domain}")
        first = LOVEDA_FIRST_ID[(split, domain)]
        for k in range(count):
            new_name = f"{first + k}.png"
            folder = stage / split / domain
            (folder / "images_png").mkdir(parents=True, exist_ok=True)
            if split != "Test":
                (folder / "masks_png").mkdir(parents=True, exist_ok=True)
            if shared_data is None:
                image_png, mask_png = _procedural_loveda_pair(k % pairs)
                (folder / "images_png" / new_name).write_bytes(image_png)
                if split != "Test":
                    (folder / "masks_png" / new_name).write_bytes(mask_png)
                continue
            src = names[k % len(names)]
            shutil.copyfile(src, folder / "images_png" / new_name)
            if split != "Test":
                shutil.copyfile(source / "masks_png" / src.name, folder / "masks_png" / new_name)
    if archives:
        for split in sorted({s for s, _ in parts}):
            _zip(output / f"{split}.zip", _members(stage / split, stage))
        shutil.rmtree(stage)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["vaihingen", "potsdam", "loveda"])
    pixels = parser.add_mutually_exclusive_group()
    pixels.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    pixels.add_argument("--procedural", action="store_true", help="procedural pixels (no shared data)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=(300, 360))
    parser.add_argument("--archives", action="store_true", help="write the official zip archives")
    args = parser.parse_args(argv)
    if args.procedural:
        args.shared = None
    if args.dataset == "vaihingen":
        make_vaihingen(args.shared, args.output, tuple(args.size), archives=args.archives)
    elif args.dataset == "potsdam":
        make_potsdam(args.shared, args.output, tuple(args.size), archives=args.archives, irrg=True)
    else:
        make_loveda(args.shared, args.output, {p: 2 for p in LOVEDA_FIRST_ID}, archives=args.archives)
    print(f"{args.dataset} release fixture written to {args.output}")
    return 0


assert LOVEDA.spec.ignore_index == 7  # the fixtures follow the declared raw encoding (0 = no-data)

if __name__ == "__main__":
    sys.exit(main())
