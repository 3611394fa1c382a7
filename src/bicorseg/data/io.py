"""Read and write images and label maps as numpy arrays, with one-line errors that name the file.

Images are read in their native dtype (``bands x H x W``): PNG through Pillow (palette images
become RGB unless their indices are asked for; 16-bit colour PNGs, which Pillow cannot hold, go
through GDAL), JPEG, GeoTIFF and other rasters through rasterio (:func:`read_georeferenced` also
returns where they lie). JPEG decoders differ by up to 41 grey levels, so a JPEG is decoded by GDAL
here as it is by ``predict``. Missing, unreadable and truncated files raise
:class:`~bicorseg.errors.InputError`, and so do images that declare more pixels than the limit of
:mod:`bicorseg.raster_access` (checked from the header, before decoding) and rasters that refer to
remote sources when remote access is off.

:func:`write_png` and :func:`write_tiff` write to a temporary name beside the target and rename it
when complete. They are for writing many files into one folder, so they do not look for stale
temporary files (the caller cleans the folder once with :func:`bicorseg.atomic.remove_stale_temps`,
as ``prepare`` does).
"""

from __future__ import annotations

import glob
import os
import struct
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from affine import Affine
from PIL import Image, UnidentifiedImageError
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from bicorseg.atomic import atomic_output
from bicorseg.data.labels import Palette, class_map_picture, gdal_colour_map
from bicorseg.defaults import IMAGE_SUFFIXES
from bicorseg.errors import BicorsegError, BicorsegWarning, InputError, first_line
from bicorseg.raster_access import InputPath, VsiPath, check_pixels, input_path, open_raster
from bicorseg.spec import IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT

_PILLOW_SUFFIXES = {".png"}  # read by Pillow; GDAL reads the others
# Opened by their Pillow plugin directly, after bicorseg's own pixel limit (raster_access), instead
# of Pillow's global decompression-bomb limit (~179 Mpx), which real orthophotos exceed. That global
# is left as it is for other code.
_PILLOW_FORMATS = ("PNG", "JPEG")
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class CrsTransform:
    """Where a raster lies: its CRS (may be None) and affine pixel-to-world transform."""

    crs: CRS | None
    transform: Affine


def _is_16bit_colour_png(path: str | os.PathLike) -> bool:
    """True for 16-bit RGB(A) or grey+alpha PNGs (IHDR bit depth 16, colour type 2, 4 or 6)."""
    with open(path, "rb") as stream:
        head = stream.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    return head[24] == 16 and head[25] in (2, 4, 6)


def _pillow_to_array(image: Image.Image, *, keep_palette: bool) -> np.ndarray:
    mode = image.mode
    if mode == "P" and not keep_palette:
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA" and not keep_palette:
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        return array[None].copy()
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _read_pillow(path: str | os.PathLike, *, keep_palette: bool) -> np.ndarray:
    try:
        with open(path, "rb") as stream:
            prefix = stream.read(16)
            stream.seek(0)
            Image.init()
            for name in _PILLOW_FORMATS:
                factory, accept = Image.OPEN[name]
                if accept(prefix):
                    image = factory(stream, str(path))
                    break
            else:  # another format behind a .png/.jpg name: Pillow's own limit applies as well
                image = Image.open(stream)
            with image:
                check_pixels(image.width, image.height, path)  # from the header, before decoding
                image.load()
                return _pillow_to_array(image, keep_palette=keep_palette)
    except BicorsegError:  # the pixel limit's refusals (ValueErrors) say it all themselves
        raise
    except UnidentifiedImageError as error:
        raise InputError(f"{path}: not a readable image ({error})") from error
    except (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError) as error:
        # Pillow reports truncated and corrupt files as OSError / SyntaxError.
        raise InputError(f"{path}: unreadable or truncated image ({error})") from error


def read_georeferenced(
    path: str | os.PathLike, *, keep_palette: bool = False
) -> tuple[np.ndarray, CrsTransform | None]:
    """Read a whole image (``bands x H x W``, native dtype) and its georeference, if it has one
    (``keep_palette``: a palette PNG gives its indices, otherwise its colours)."""
    if not Path(path).is_file():
        raise InputError(f"{path}: {'is not a file' if Path(path).exists() else 'file does not exist'}")
    suffix = Path(str(path)).suffix.lower()
    if suffix in _PILLOW_SUFFIXES and not (suffix == ".png" and _is_16bit_colour_png(path)):
        return _read_pillow(path, keep_palette=keep_palette), None
    with open_raster(path, whole=True) as dataset:
        try:
            array = dataset.read()
        except RasterioError as error:
            raise InputError(f"{path}: unreadable or truncated raster ({first_line(error)})") from error
        if dataset.crs is None and dataset.transform.is_identity:
            return array, None
        return array, CrsTransform(crs=dataset.crs, transform=dataset.transform)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a whole image as ``bands x H x W`` in its native dtype (palette images become RGB)."""
    return read_georeferenced(path)[0]


def read_mask(path: str | os.PathLike, *, mode: Literal["index", "colour"] = "index") -> np.ndarray:
    """Read a label map: ``H x W`` raw values (``"index"``) or ``3 x H x W`` uint8 colours (``"colour"``).

    In ``"index"`` mode a palette PNG gives its palette indices (the usual way to store class ids);
    in ``"colour"`` mode it gives the colours of its palette.
    """
    array = read_georeferenced(path, keep_palette=mode == "index")[0]
    if mode == "index":
        if array.shape[0] != 1:
            raise InputError(
                f"{path}: an index mask must have one band, this one has {array.shape[0]} "
                "(a colour-coded mask needs a class table with colours)"
            )
        if array.dtype.kind == "f":
            raise InputError(f"{path}: an index mask must hold integers, not {array.dtype}")
        return array[0]
    if array.shape[0] == 4:
        if array.dtype == np.uint8 and not (array[3] == 255).all():
            raise InputError(f"{path}: colour mask has transparent pixels; expected opaque RGB")
        array = array[:3]
    if array.shape[0] != 3 or array.dtype != np.uint8:
        raise InputError(
            f"{path}: a colour mask must be 8-bit RGB, got {array.shape[0]} band(s) of {array.dtype}"
        )
    return array


def _name_fault(path: str | os.PathLike) -> str | None:
    """``path`` printable (bytes that are not UTF-8 as ``\\xNN``) when GDAL cannot open it by its name
    (GDAL takes UTF-8 text; Python keeps other bytes as surrogates), else None."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return None


NOT_UTF8 = "its name is not UTF-8 text, which GDAL cannot open (rename it)"


def openable(paths: Iterable[Path]) -> list[Path]:
    """``paths`` in order, without those GDAL cannot open by name (each left out with a warning)."""
    found = []
    for path in paths:
        if (shown := _name_fault(path)) is None:
            found.append(path)
        else:
            warnings.warn(f"{shown}: skipped: {NOT_UTF8}", BicorsegWarning, stacklevel=3)
    return found


def _listed(paths: Iterable[Path], suffixes: Sequence[str]) -> list[Path]:
    """The files of ``paths`` with one of ``suffixes`` (not hidden), sorted, less those GDAL cannot open."""
    return openable(
        sorted(
            p for p in paths if not p.name.startswith(".") and p.suffix.lower() in suffixes and p.is_file()
        )
    )


def image_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (:data:`~bicorseg.defaults.IMAGE_SUFFIXES`, not hidden), sorted.

    A file whose name is not UTF-8 text, which GDAL cannot open, is left out with a warning that
    names it with those bytes escaped (``caf\\xe9.tif``).
    """
    return _listed(folder.rglob("*") if recursive else folder.iterdir(), IMAGE_SUFFIXES)


def find_inputs(
    entries: Sequence[str | os.PathLike],
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    names: tuple[str, str] = ("input", "images"),
    patterns: bool = False,
) -> list[InputPath]:
    """The files named by ``entries``, in order, each file once (by any path): files; folders, for
    their files with one of ``suffixes`` (not recursively, as :func:`image_files`); with
    ``patterns``, glob patterns (``**`` recursive), for those files too; URLs and GDAL ``/vsi...``
    paths as they are (:func:`~bicorseg.raster_access.input_path`). ``names``: what errors call
    an entry and the files of a folder.
    """
    one, many = names
    if not entries:
        raise InputError(f"no {one} given")
    found: list[InputPath] = []
    for entry in entries:
        text, item = os.fspath(entry), input_path(entry)
        if isinstance(item, VsiPath):
            found.append(item)
        elif item.is_file():
            if (shown := _name_fault(item)) is not None:
                raise InputError(f"{shown}: {NOT_UTF8}")
            found.append(item)
        elif item.is_dir() or (patterns and not _GLOB_CHARACTERS.isdisjoint(text)):
            folder = item.is_dir()
            listed = (
                item.iterdir() if folder else map(Path, glob.glob(os.path.expanduser(text), recursive=True))
            )
            files = _listed(listed, suffixes)
            if not files:
                where = f"in folder {item}" if folder else f"match {text}"
                raise InputError(f"no {many} {where} (looked for {', '.join(suffixes)})")
            found.extend(files)
        else:
            raise InputError(f"{one} not found: {item}")
    unique: dict[Any, InputPath] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def check_finite(array: np.ndarray, path: str | os.PathLike) -> None:
    """Raise InputError when a float image holds NaN or infinite values."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"{path}: {bad} pixel values are NaN or infinite")


# ---------------------------------------------------------------------------------------------- writing


def write_png(path: str | os.PathLike, array: np.ndarray, palette: Palette | None = None) -> Path:
    """Write ``H x W`` or ``bands x H x W`` (1, 3 or 4 bands; uint8, or uint16 single band) as PNG.

    With ``palette`` (one colour per class), a uint8 class map is written as a paletted PNG
    (:func:`bicorseg.data.labels.class_map_picture`): the values stay the class indices.
    """
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    if palette is not None:
        if array.ndim != 2 or array.dtype != np.uint8:
            raise InputError(f"{path}: a paletted PNG holds one uint8 band, got {array.shape} {array.dtype}")
        image = class_map_picture(array, palette)
    else:
        image = Image.fromarray(np.ascontiguousarray(array))
    with atomic_output(path, clean=False) as temp:
        # Level 1: masks compress well already; higher levels cost much time for little space.
        image.save(temp, format="PNG", compress_level=1)
    return Path(path)


def write_tiff(
    path: str | os.PathLike,
    array: np.ndarray,
    georef: CrsTransform | None = None,
    *,
    compress: bool = False,
    palette: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Write ``bands x H x W`` (or ``H x W``) as a (Geo)TIFF, with CRS and transform when ``georef`` is given.

    Patches are left uncompressed: they are read many times during training and decode fastest so.
    ``compress`` writes deflate, in 256-pixel tiles when both sides reach 256 (3 bands as RGB); a
    single-band uint8 map may carry a ``palette`` (its colour table).
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"{path}: expected bands x H x W or H x W, got shape {array.shape}")
    bands, height, width = array.shape
    profile: dict[str, Any] = {"driver": "GTiff", "width": width, "height": height, "count": bands,
                               "dtype": array.dtype.name}  # fmt: skip
    if georef is not None:
        profile.update(crs=georef.crs, transform=georef.transform)
    if compress:
        profile["compress"] = "deflate"
        if height >= 256 and width >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        if bands == 3:
            profile["photometric"] = "RGB"
    with atomic_output(path, clean=False) as temp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(temp, "w", **profile) as dataset:
            dataset.write(array)
            if palette is not None and bands == 1 and array.dtype == np.uint8:
                dataset.write_colormap(1, gdal_colour_map(palette))
    return Path(path)


def default_normalisation(
    bands: int, dtype: Any, samples: Iterable[np.ndarray], what: str
) -> tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]:
    """Band names and statistics of images that record none: ImageNet's for 8-bit RGB (``red, green,
    blue``), else ``band1 ... bandN`` and the per-band mean and std (input units) of ``samples`` (each
    ``bands x pixels`` of ``what``, read only then); a constant band gets std 1, which would otherwise
    divide by zero."""
    if bands == 3 and np.dtype(dtype) == np.uint8:
        return ("red", "green", "blue"), IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT
    total, total_sq, count = np.zeros(bands), np.zeros(bands), 0
    for values in samples:
        values = values.astype(np.float64)
        total += values.sum(1)
        total_sq += (values**2).sum(1)
        count += values.shape[1]
    if not count:
        raise InputError(f"{what}: no valid pixel to take band statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    names = tuple(f"band{i + 1}" for i in range(bands))
    return names, tuple(mean.tolist()), tuple(np.where(std > 0, std, 1.0).tolist())
