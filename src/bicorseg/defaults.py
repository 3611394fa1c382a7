"""The facts several modules share, stated once: tiling, the class-raster nodata value, file
suffixes, default class names and colours (and how a colour is written), and the choices of
precision, executor and rescale.

Plain Python (no torch, numpy or rasterio), so that the command line and the configs read them
without loading anything heavy. Every module that needs one of these imports it from here.
"""

from __future__ import annotations

from collections.abc import Sequence

VERSION = "0.1.0"  # bicorseg's version (the package's __version__; pyproject.toml reads it here)

# --- tiling -----------------------------------------------------------------------------------------

STRIDE = 32  # the network's output stride: inputs are padded to a multiple of it
MIN_TILE = STRIDE  # the smallest tile a model is applied to
DEFAULT_TILE = 512  # side of a prediction tile when the checkpoint records none (the published crop)
DEFAULT_OVERLAP = 0.25  # share of a tile covered by its neighbour
DEFAULT_WINDOW = 2048  # side of the windows a class raster is read in (polygons, areas)
DEFAULT_BLOCK = 8192  # side of a unit of prediction work in input pixels: a multiple of GeoTIFF blocks

# --- class rasters ----------------------------------------------------------------------------------

NODATA = 255  # the nodata value of uint8 class rasters: never a class
MAX_CLASSES = NODATA  # classes 0..254 fit a uint8 class raster beside the nodata value

# --- files ------------------------------------------------------------------------------------------

# Files taken as images when a folder is given (training folders, predict's inputs).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt", ".bmp", ".webp")
# Pictures: formats without georeferencing, whose class maps are written as PNG (not COG). GIF is
# read as a picture when named, but a folder scan leaves it out (animations are rarely imagery).
PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"})

# --- classes ----------------------------------------------------------------------------------------

# matplotlib's "tab20" colours (8-bit), cycled: the palette of classes that come without colours.
DEFAULT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44),
    (152, 223, 138), (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213),
    (140, 86, 75), (196, 156, 148), (227, 119, 194), (247, 182, 210), (127, 127, 127),
    (199, 199, 199), (188, 189, 34), (219, 219, 141), (23, 190, 207), (158, 218, 229),
)  # fmt: skip


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """One RGB colour per class for classes without colours of their own."""
    return tuple(DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)] for i in range(num_classes))


def colour_hex(colour: Sequence[int]) -> str:
    """An RGB colour as ``#RRGGBB``."""
    return "#{:02X}{:02X}{:02X}".format(*colour[:3])


def default_class_name(class_id: int) -> str:
    """The name of a class that comes without one: ``class_<id>``."""
    return f"class_{class_id}"


def default_class_names(num_classes: int) -> tuple[str, ...]:
    return tuple(default_class_name(i) for i in range(num_classes))


# --- choices ----------------------------------------------------------------------------------------

# Precision, the same words for inference and training. ``auto``: bf16 where the device runs it
# fast, else fp32 (bicorseg.precision).
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PRECISION_HELP = "auto (default: bf16 where the device runs it fast, else fp32), bf16, fp16 or fp32"
DEFAULT_PRECISION = "auto"  # of a model applied to data (training: fp32 unless its config says)
DEFAULT_DEVICE = "auto"  # the GPU if there is one, else the CPU (bicorseg.device)
DEFAULT_BATCH_SIZE = 4  # tiles or images per model call
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")  # mixed precision through Lightning's plugin
LIGHTNING_PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}

EXECUTORS = ("local", "ray")  # where units of prediction work run: local processes, or Ray actors
ENGINES = ("torch", "onnx")  # what runs a model: PyTorch, or ONNX Runtime for an exported .onnx file

# How input values are mapped onto the 8-bit units of a checkpoint (bicorseg.rescale), or "MIN,MAX".
RESCALE_MODES = ("none", "auto", "percentile")
RESCALE_HELP = (
    "map the input's values onto the 8-bit range the checkpoint was trained on: none (default: as they "
    "are), auto (from the data type and values: floats in 0..1, 10- to 16-bit integers, ...), percentile "
    "(2nd..98th percentile of each band) or MIN,MAX (e.g. 0,4095)"
)
