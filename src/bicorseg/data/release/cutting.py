"""Cutting: one tile of a release read, its label converted, its samples written as the protocol says.

:func:`process_item` reads one :class:`~bicorseg.data.release.planning.Item`, converts its label
with the release's label table, pads (bottom and right; top and left where the protocol's preparation
says), flips and cuts it into patches (or copies a whole image byte for byte), writes every file
atomically and returns the :class:`TileRecord` of what it wrote. The
paper protocol's car zoom (:class:`~bicorseg.data.datasets.ZoomStep`) is :func:`zoom_variants`.
Patches keep the georeference of their tile (flipped and shifted with them).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine

from bicorseg.atomic import sha256_file
from bicorseg.data.datasets import BandVariant, PaperPreparation, Release, SplitRule, ZoomStep
from bicorseg.data.io import CrsTransform, check_finite, read_georeferenced, read_mask, write_png, write_tiff
from bicorseg.data.release.planning import Item
from bicorseg.data.release.records import PatchRecord, TileRecord, ZoomRecord
from bicorseg.errors import InputError

Unknown = Literal["error", "ignore"]
Variant = tuple[str, np.ndarray, np.ndarray | None, CrsTransform | None, ZoomRecord | None]


def _flip(copy: str, extent: tuple[int, int]) -> Affine:
    """Pixel coordinates of a copy flipped over ``extent`` (height, width) -> those before the flip."""
    if copy == "hflip":
        return Affine(-1, 0, extent[1], 0, 1, 0)
    if copy == "vflip":
        return Affine(1, 0, 0, 0, -1, extent[0])
    return Affine.identity()


def _copy_pixels(
    copy: str, tile: tuple[int, int], padded: tuple[int, int], offset: tuple[int, int], flip_before_pad: bool
) -> Affine:
    """Pixel coordinates in the padded array of a copy -> pixel coordinates in the tile.

    ``offset`` (rows, columns) is the padding before the tile's first row and column. The tile is
    either flipped as it is, then padded (``flip_before_pad``), or padded, then flipped as a whole.
    """
    shift = Affine.translation(-offset[1], -offset[0])
    if flip_before_pad:
        return _flip(copy, tile) @ shift
    return shift @ _flip(copy, padded)


def _pad(
    image: np.ndarray, mask: np.ndarray | None, shape: tuple[int, int], mask_value: int, top_left: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Image (with 0) and mask (with ``mask_value``) padded to ``shape``, at the top and left
    (``top_left``: the tile placed bottom-right, as albumentations' ``PadIfNeeded(position='bottom_right')``
    places it), else at the bottom and right."""
    rows, cols = shape[0] - image.shape[-2], shape[1] - image.shape[-1]
    extra = [(rows, 0), (cols, 0)] if top_left else [(0, rows), (0, cols)]
    padded = np.pad(image, [(0, 0), *extra], constant_values=0)
    return padded, None if mask is None else np.pad(mask, extra, constant_values=mask_value)


def _zoom_resize(image: np.ndarray, mask: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (bilinear, pixel centres) and mask (nearest, ``floor(i * c / side)``) resized to ``side``,
    as OpenCV's ``INTER_LINEAR`` and ``INTER_NEAREST`` (which albumentations uses) resize them."""
    import torch
    import torch.nn.functional as F

    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))[None]
    resized = F.interpolate(source, size=(side, side), mode="bilinear", align_corners=False)[0].numpy()
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        resized = np.clip(np.rint(resized), info.min, info.max)
    rows = np.arange(side) * mask.shape[0] // side
    cols = np.arange(side) * mask.shape[1] // side
    return resized.astype(image.dtype), mask[rows][:, cols]


_ROT90 = Affine(0, -1, 1, 1, 0, 0)  # one counter-clockwise quarter turn of a unit square (np.rot90)


def zoom_variants(
    name: str, image: np.ndarray, mask: np.ndarray, georef: CrsTransform | None, zoom: ZoomStep
) -> list[Variant] | None:
    """The car zoom of one patch (see :class:`ZoomStep`): its four variants, or None to keep the patch."""
    side = mask.shape[-1]
    rng = np.random.default_rng([zoom.seed, zlib.crc32(name.encode("utf-8"))])
    low, high = zoom.side_range(side)
    crop = int(rng.integers(low, high + 1))
    y0, x0 = (int(v) for v in rng.integers(0, side - crop + 1, size=2))
    crop_image, crop_mask = _zoom_resize(
        image[:, y0 : y0 + crop, x0 : x0 + crop], mask[y0 : y0 + crop, x0 : x0 + crop], side
    )
    if np.count_nonzero(crop_mask == zoom.class_index) <= zoom.min_share * crop_mask.size:
        return None
    turns = int(rng.integers(0, 4))
    base = None
    if georef is not None:
        base = georef.transform @ (Affine.translation(x0, y0) @ Affine.scale(crop / side))
    turn = Affine.identity()
    for _ in range(turns):
        turn = turn @ (Affine.scale(side) @ (_ROT90 @ Affine.scale(1 / side)))
    variants = [
        ("zoom", crop_image, crop_mask, Affine.identity()),
        ("zoom_vflip", crop_image[:, ::-1], crop_mask[::-1], Affine(1, 0, 0, 0, -1, side)),
        ("zoom_hflip", crop_image[:, :, ::-1], crop_mask[:, ::-1], Affine(-1, 0, side, 0, 1, 0)),
        (
            f"zoom_rot{90 * turns}",
            np.rot90(crop_image, turns, axes=(-2, -1)),
            np.rot90(crop_mask, turns),
            turn,
        ),
    ]
    out: list[Variant] = []
    for suffix, img, msk, pixel_map in variants:
        ref = None if base is None or georef is None else CrsTransform(georef.crs, base @ pixel_map)
        info = ZoomRecord([y0, x0, crop], suffix, turns if "rot" in suffix else 0)
        out.append((f"{name}_{suffix}", np.ascontiguousarray(img), np.ascontiguousarray(msk), ref, info))
    return out


def process_item(
    item: Item, rule: SplitRule, release: Release, variant: BandVariant, out: Path, unknown: Unknown,
    preparation: PaperPreparation,
) -> TileRecord:  # fmt: skip
    """Read one tile, convert its label, cut and write its patches (as ``preparation`` says); return its record."""
    with item.image.local() as local:
        image, georef = read_georeferenced(local)
    if image.shape[0] != len(variant.bands):
        raise InputError(
            f"{item.image.display}: has {image.shape[0]} band(s), expected {len(variant.bands)} "
            f"({', '.join(variant.bands)})"
        )
    check_finite(image, item.image.display)
    height, width = image.shape[1:]
    mask = None
    unknown_count = 0
    if item.label is not None:
        table = release.label_table
        with item.label.local() as local:
            raw = read_mask(local, mode="colour" if table.kind == "colour" else "index")
        mask, unknown_count = table.encode(raw, item.label.display, unknown=unknown)
        del raw
        if mask.shape != (height, width):
            raise InputError(
                f"{item.label.display}: label is {mask.shape[1]}x{mask.shape[0]} px but its image "
                f"{item.image.display} is {width}x{height} px (width x height)"
            )
    split_dir = Path(item.split)
    entries: list[PatchRecord] = []

    def record(name: str, rel_image: str, mask: np.ndarray | None, copy: str, window: list[int] | None,
               shape: tuple[int, int], zoom: ZoomRecord | None = None) -> PatchRecord:  # fmt: skip
        """The record of a written sample, its mask (if any) written first."""
        rel_mask, pixels, ignored = None, None, None
        if mask is not None:
            rel_mask = (split_dir / "masks" / f"{name}.png").as_posix()
            write_png(out / rel_mask, mask, palette=release.spec.palette)
            counts = np.bincount(mask.ravel(), minlength=256)
            pixels = counts[: release.spec.num_classes].tolist()
            ignored = int(counts[release.spec.ignore_index])
        return PatchRecord(
            name=name,
            image=rel_image,
            mask=rel_mask,
            height=shape[0],
            width=shape[1],
            tile=item.fields["tile"],
            copy=copy,
            window=window,
            image_sha256=sha256_file(out / rel_image),
            mask_sha256=sha256_file(out / rel_mask) if rel_mask else None,
            zoom=zoom,
            pixels=pixels,
            ignored=ignored,
        )

    is_tiff = item.image.suffix in (".tif", ".tiff")
    if rule.patch_size is None:
        # Whole images: the source file is copied unchanged (lossless, keeps any georeference).
        rel_image = (split_dir / "images" / f"{item.name}{item.image.suffix}").as_posix()
        item.image.copy_to(out / rel_image)
        entries.append(record(item.name, rel_image, mask, "original", None, (height, width)))
    else:
        size = rule.patch_size
        stride = rule.stride or size
        padded = (-(-height // size) * size, -(-width // size) * size) if rule.pad else (height, width)
        pad_label = release.spec.ignore_index if preparation.pad_label is None else preparation.pad_label
        top_left = preparation.pad_top_left
        offset = (padded[0] - height, padded[1] - width) if top_left else (0, 0)
        zoom = preparation.zoom if preparation.zoom and item.split in preparation.zoom.splits else None
        if not preparation.flip_before_pad:
            image, mask = _pad(image, mask, padded, pad_label, top_left)
        suffix = ".tif" if is_tiff else ".png"
        for copy in ("original", *rule.flips):
            axis = {"original": None, "hflip": -1, "vflip": -2}[copy]
            img = image if axis is None else np.flip(image, axis)
            msk = mask if axis is None or mask is None else np.flip(mask, axis)
            if preparation.flip_before_pad:  # flip the tile as it is, then pad (the original's order)
                img, msk = _pad(img, msk, padded, pad_label, top_left)
            pixels = _copy_pixels(copy, (height, width), padded, offset, preparation.flip_before_pad)
            for y in range(0, padded[0] - size + 1, stride):
                for x in range(0, padded[1] - size + 1, stride):
                    name = f"{item.name}{'' if copy == 'original' else '_' + copy}_{y}_{x}"
                    patch = np.ascontiguousarray(img[:, y : y + size, x : x + size])
                    patch_mask = (
                        None if msk is None else np.ascontiguousarray(msk[y : y + size, x : x + size])
                    )
                    patch_georef = None
                    if georef is not None:  # a flipped copy is still a correct map of the ground
                        window = pixels @ Affine.translation(x, y)
                        patch_georef = CrsTransform(georef.crs, georef.transform @ window)
                    variants = None
                    if zoom is not None and patch_mask is not None:
                        variants = zoom_variants(name, patch, patch_mask, patch_georef, zoom)
                    for out_name, out_image, out_mask, out_georef, zoomed in variants or [
                        (name, patch, patch_mask, patch_georef, None)
                    ]:
                        rel_image = (split_dir / "images" / f"{out_name}{suffix}").as_posix()
                        if is_tiff:
                            write_tiff(out / rel_image, out_image, out_georef)
                        else:
                            write_png(out / rel_image, out_image)
                        entries.append(
                            record(out_name, rel_image, out_mask, copy, [y, x], (size, size), zoomed)
                        )
    return TileRecord(
        tile=item.fields["tile"],
        name=item.name,
        fields=item.fields,
        source=item.identity(),
        size=[height, width],
        unknown_ignored=unknown_count,
        entries=entries,
    )
