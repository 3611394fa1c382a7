"""Procedural aerial-like scenes with labels, for the demo and for tests (numpy only, seeded).

A scene is painted in layers, each one over the previous: land parcels (crop fields with row
texture, meadows, bare soil), forest patches, rivers and lakes, roads and dirt paths, buildings
with gabled or flat roofs, single trees; then cast shadows, illumination, colour cast, sensor blur
and noise. Shadows darken whatever lies under them and keep its label (the ISPRS convention).

``generate_scene(size, seed)`` returns ``(image, mask)``: ``uint8`` arrays ``3 x H x W`` (RGB) and
``H x W`` (class indices of :data:`DEMO_DATASET`). The same seed gives the same scene on every machine.
:func:`scene_transform` and :func:`write_scene_geotiff` give the scenes a real CRS and transform.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import Affine

from bicorseg.data.io import CrsTransform, write_tiff
from bicorseg.defaults import NODATA
from bicorseg.errors import InputError
from bicorseg.spec import DatasetSpec

BARE, FIELD, TREE, WATER, ROAD, BUILDING = range(6)

DEMO_DATASET = DatasetSpec(
    name="demo",
    class_names=("bare ground", "field", "tree", "water", "road", "building"),
    palette=(
        (190, 150, 100),  # bare ground: sand
        (170, 220, 90),  # field / low vegetation: light green
        (20, 110, 40),  # tree: dark green
        (40, 90, 220),  # water: blue
        (150, 150, 150),  # road: grey
        (220, 40, 40),  # building: red
    ),
    ignore_index=NODATA,
    eval_classes=(0, 1, 2, 3, 4, 5),
    label_variant="full",
)

# UTM zone 33N (central Europe): a real projected CRS with metre units.
DEMO_CRS = "EPSG:32633"
DEMO_RESOLUTION = 0.5  # metres per pixel

# Sun from the south-east, about 50 degrees high: shadows fall towards the upper left of the image,
# 0.85 m long per metre of object height. (dy, dx) in pixels per metre of height.
_SUN_SHADOW = np.array([-0.6, -0.8]) * 0.85 / DEMO_RESOLUTION


def generate_scene(size: int | tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A scene of ``size`` pixels (one int for a square) from ``seed``: ``(image 3xHxW, mask HxW)``.

    Both arrays are ``uint8``; mask values are class indices of :data:`DEMO_DATASET`. Scenes from 64
    pixels up work; from about 384 pixels on every class is present.
    """
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 32 or width < 32:
        raise InputError(f"demo scenes must be at least 32 x 32 pixels, got {height} x {width}")
    return _Painter(height, width, np.random.default_rng(seed)).paint()


def scene_transform(size: int | tuple[int, int], seed: int) -> Affine:
    """A north-up transform in :data:`DEMO_CRS`, its origin chosen by ``seed`` (inside the UTM zone)."""
    rng = np.random.default_rng([seed, 7919])
    east = 400_000.0 + float(rng.integers(0, 200)) * 1000.0
    north = 5_200_000.0 + float(rng.integers(0, 400)) * 1000.0
    return Affine(
        DEMO_RESOLUTION, 0.0, east, 0.0, -DEMO_RESOLUTION, north
    )  # north-up, origin at the top left


def write_scene_geotiff(
    path: str | os.PathLike,
    image: np.ndarray,
    transform: Affine,
    crs: str = DEMO_CRS,
    palette: tuple[tuple[int, int, int], ...] | None = None,
) -> Path:
    """Write ``image`` (``bands x H x W`` or a ``H x W`` label map with an optional ``palette``) as a
    tiled, compressed GeoTIFF, atomically."""
    return write_tiff(
        path, image, CrsTransform(CRS.from_user_input(crs), transform), compress=True, palette=palette
    )


# --------------------------------------------------------------------------------------------------
# Painting


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] with features about ``cell`` pixels wide (smoothstep interpolation)."""
    height, width = shape
    grid = rng.random((int(height / cell) + 2, int(width / cell) + 2)).astype(np.float32)
    y, x = np.arange(height) / cell, np.arange(width) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0
    fy, fx = (fy * fy * (3 - 2 * fy)).astype(np.float32), (fx * fx * (3 - 2 * fx)).astype(np.float32)
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


def _fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], cell: float, octaves: int = 4
) -> np.ndarray:
    """Sum of ``octaves`` value-noise layers (each half the size and weight), rescaled to [0, 1]."""
    total = np.zeros(shape, np.float32)
    weight_sum = 0.0
    for octave in range(octaves):
        weight = 0.5**octave
        total += weight * _value_noise(rng, shape, max(cell / 2**octave, 1.5))
        weight_sum += weight
    total /= weight_sum
    low, high = total.min(), total.max()
    return (total - low) / max(high - low, 1e-6)


def _blur(image: np.ndarray) -> np.ndarray:
    """3 x 3 binomial blur over the first two axes (edge pixels replicated): the sensor's softness."""
    padded = np.pad(image, ((1, 1), (1, 1)) + ((0, 0),) * (image.ndim - 2), mode="edge")
    rows = padded[:-2] * 0.25 + padded[1:-1] * 0.5 + padded[2:] * 0.25
    return rows[:, :-2] * 0.25 + rows[:, 1:-1] * 0.5 + rows[:, 2:] * 0.25


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` translated by (dy, dx) pixels, zero-filled."""
    out = np.zeros_like(mask)
    height, width = mask.shape
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = mask[
        max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
    ]
    return out


class _Painter:
    """Paints one scene; every random draw comes from one generator, so the seed fixes everything."""

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
        self.h, self.w, self.rng = height, width, rng
        self.image = np.zeros((height, width, 3), np.float32)
        self.mask = np.zeros((height, width), np.uint8)
        self.height_map = np.zeros((height, width), np.float32)  # object heights in metres, for shadows
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.scale = 1.0 / DEMO_RESOLUTION  # pixels per metre

    def paint(self) -> tuple[np.ndarray, np.ndarray]:
        self._leaf = _value_noise(self.rng, (self.h, self.w), 1.7)  # fine texture of crowns and roofs
        self._tree_colour = self._colour((45, 80, 40), 0.1)
        self._parcels()
        self._forest()
        self._water()
        roads = self._roads()
        self._buildings(roads)
        self._single_trees()
        self._shadows()
        self._finish()
        image = np.clip(self.image + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)
        return np.ascontiguousarray(image), self.mask

    # -- helpers ---------------------------------------------------------------------------------

    def _colour(self, base: tuple[float, float, float], jitter: float) -> np.ndarray:
        """``base`` with random brightness (+-jitter) and a smaller random tint (+-jitter/3)."""
        tint = 1 + self.rng.uniform(-jitter / 3, jitter / 3, 3)
        return (np.asarray(base) * tint * (1 + self.rng.uniform(-jitter, jitter))).astype(np.float32)

    def _fill(self, where: np.ndarray, cls: int, texture: np.ndarray) -> None:
        self.mask[where] = cls
        self.image[where] = texture[where] if texture.ndim == 3 else texture

    def _rotated(self, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates (u along ``angle``, v across it) of every pixel, centred on the scene."""
        cy, cx = self.h / 2, self.w / 2
        cos, sin = math.cos(angle), math.sin(angle)
        u = (self.xx - cx) * cos + (self.yy - cy) * sin
        v = -(self.xx - cx) * sin + (self.yy - cy) * cos
        return u, v

    # -- layers ----------------------------------------------------------------------------------

    def _parcels(self) -> None:
        """Voronoi parcels: crop fields with rows, meadows, bare soil; soft noise inside each."""
        rng, h, w = self.rng, self.h, self.w
        count = max(3, round(h * w / rng.uniform(90, 140) ** 2))
        points = np.stack([rng.uniform(-0.1 * h, 1.1 * h, count), rng.uniform(-0.1 * w, 1.1 * w, count)], 1)
        # Nearest parcel centre per pixel, computed row block by row block to bound memory.
        owner = np.empty((h, w), np.int32)
        for start in range(0, h, 128):
            ys = self.yy[start : start + 128, :, None]
            xs = self.xx[start : start + 128, :, None]
            owner[start : start + 128] = np.argmin(
                (ys - points[:, 0]) ** 2 + (xs - points[:, 1]) ** 2, axis=2
            )
        # At least one parcel of each kind, the rest at random (rows, meadow, bare).
        kinds = rng.choice(3, size=count, p=[0.45, 0.2, 0.35])
        kinds[rng.permutation(count)[:3]] = [0, 1, 2]
        grain = _fractal_noise(rng, (h, w), 24, octaves=3).ravel()[:, None]
        fine = _value_noise(rng, (h, w), 2.0).ravel()[:, None]
        # Each parcel's pixels as flat indices (one sort instead of one full-image test per parcel).
        order = np.argsort(owner.ravel(), kind="stable")
        bounds = np.searchsorted(owner.ravel()[order], np.arange(count + 1))
        flat_image, flat_mask = self.image.reshape(-1, 3), self.mask.reshape(-1)
        for parcel in range(count):
            index = order[bounds[parcel] : bounds[parcel + 1]]
            kind = kinds[parcel]
            g, f = grain[index], fine[index]
            if kind == 2:
                texture = self._colour((155, 130, 95), 0.12) * (0.85 + 0.3 * g) * (0.92 + 0.16 * f)
                cls = BARE
            elif kind == 0:  # crop rows: a sinusoid across a random direction, period 5-9 px
                green = [(95, 135, 60), (120, 150, 70), (150, 160, 85), (80, 120, 55)][rng.integers(4)]
                base = self._colour(green, 0.1)
                angle = rng.uniform(0, math.pi)
                u = self.xx.ravel()[index] * math.cos(angle) + self.yy.ravel()[index] * math.sin(angle)
                rows = 0.5 + 0.5 * np.sin(2 * math.pi * u / rng.uniform(5, 9))[:, None]
                soil = self._colour((125, 105, 80), 0.08)
                share = rng.uniform(0.55, 0.8)  # how much of the row is crop
                texture = (base * share + soil * (1 - share)) + (base - soil) * (rows - 0.5) * 0.9
                texture = texture * (0.9 + 0.2 * g)
                cls = FIELD
            else:  # meadow: smooth green with patches
                texture = self._colour((100, 145, 65), 0.12) * (0.8 + 0.35 * g) * (0.94 + 0.12 * f)
                cls = FIELD
            flat_image[index] = texture
            flat_mask[index] = cls
        # Dark field margins between parcels (hedges are too thin to label): a slight darkening.
        edge = np.zeros((h, w), bool)
        edge[1:] |= owner[1:] != owner[:-1]
        edge[:, 1:] |= owner[:, 1:] != owner[:, :-1]
        self.image[edge] *= 0.85

    def _draw_crowns(self, centres: np.ndarray, radii: np.ndarray, allowed: np.ndarray | None) -> None:
        """Trees as discs with shading (lit towards the sun), label TREE, height for shadows."""
        rng = self.rng
        leaf = self._leaf
        for (cy, cx), radius in zip(centres, radii):
            y0, y1 = int(max(cy - radius - 1, 0)), int(min(cy + radius + 2, self.h))
            x0, x1 = int(max(cx - radius - 1, 0)), int(min(cx + radius + 2, self.w))
            if y0 >= y1 or x0 >= x1:
                continue
            dy = self.yy[y0:y1, x0:x1] - cy
            dx = self.xx[y0:y1, x0:x1] - cx
            dist = np.sqrt(dy * dy + dx * dx) / radius
            disc = dist <= 1.0
            if allowed is not None:
                disc &= allowed[y0:y1, x0:x1]
            if not disc.any():
                continue
            # Light from the sun side (opposite to the shadow direction), darker rim.
            lit = -(dy * _SUN_SHADOW[0] + dx * _SUN_SHADOW[1]) / (radius * np.linalg.norm(_SUN_SHADOW))
            shade = (0.85 + 0.25 * lit - 0.25 * dist**2)[..., None]
            colour = self._tree_colour * (1 + rng.uniform(-0.12, 0.12))
            texture = colour * shade * (0.8 + 0.4 * leaf[y0:y1, x0:x1, None])
            region = self.image[y0:y1, x0:x1]
            region[disc] = texture[disc]
            self.mask[y0:y1, x0:x1][disc] = TREE
            heights = self.height_map[y0:y1, x0:x1]
            heights[disc] = np.maximum(heights[disc], radius / self.scale * 1.6)

    def _forest(self) -> None:
        """Forest patches: a thresholded noise field filled densely with crowns."""
        rng, h, w = self.rng, self.h, self.w
        field = _fractal_noise(rng, (h, w), rng.uniform(70, 110), octaves=3)
        level = np.quantile(field, 1 - rng.uniform(0.1, 0.2))
        forest = field > level
        area = int(forest.sum())
        if area == 0:
            return
        count = int(area / 40)
        ys, xs = np.nonzero(forest)
        pick = rng.integers(0, len(ys), count)
        centres = np.stack(
            [ys[pick] + rng.uniform(-0.5, 0.5, count), xs[pick] + rng.uniform(-0.5, 0.5, count)], 1
        )
        self._draw_crowns(centres, rng.uniform(4, 9, count), None)

    def _water(self) -> None:
        """A river (a meandering band across the scene) and/or a lake (a smooth blob)."""
        rng, h, w = self.rng, self.h, self.w
        has_river = rng.random() < 0.6
        has_lake = not has_river or rng.random() < 0.4
        water = np.zeros((h, w), bool)
        if has_river:
            u, v = self._rotated(rng.uniform(0, math.pi))
            centre = rng.uniform(-0.25, 0.25) * min(h, w)
            meander = (
                rng.uniform(0.05, 0.12)
                * min(h, w)
                * np.sin(2 * math.pi * u / rng.uniform(250, 450) + rng.uniform(0, 6.3))
            )
            half_width = rng.uniform(9, 20) * (0.8 + 0.4 * _value_noise(rng, (h, w), 80))
            water |= np.abs(v - centre - meander) < half_width
        if has_lake:
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            radius = rng.uniform(0.08, 0.16) * min(h, w) + 10
            wobble = _fractal_noise(rng, (h, w), radius * 0.8, octaves=3)
            dist = np.sqrt((self.yy - cy) ** 2 + (self.xx - cx) ** 2) / radius
            water |= dist < 0.7 + 0.6 * wobble
        deep = self._colour((40, 70, 85), 0.15)
        ripple = _value_noise(rng, (h, w), 3.0)[..., None]
        slow = _fractal_noise(rng, (h, w), 60, octaves=2)[..., None]
        texture = deep * (0.8 + 0.35 * slow) * (0.95 + 0.1 * ripple)
        # Shallow water near the shore is lighter and greener.
        near = water & ~(
            _shift(water, 3, 0) & _shift(water, -3, 0) & _shift(water, 0, 3) & _shift(water, 0, -3)
        )
        self._fill(water, WATER, texture)
        self.image[near] = self.image[near] * 0.7 + np.asarray([70, 95, 80], np.float32) * 0.3
        self.height_map[water] = 0

    def _roads(self) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """Asphalt roads (with dashed centre lines) and dirt paths, both labelled ROAD.

        Returns (angle, rows, columns) for each asphalt road: where buildings facing it may stand.
        """
        rng, h, w = self.rng, self.h, self.w
        roads = []
        grain = _value_noise(rng, (h, w), 2.0)[..., None]
        for index in range(rng.integers(1, 4)):
            angle = (
                rng.uniform(0, math.pi) if index == 0 else roads[0][0] + math.pi / 2 + rng.uniform(-0.3, 0.3)
            )
            u, v = self._rotated(angle)
            centre = rng.uniform(-0.35, 0.35) * min(h, w)
            bend = (
                rng.uniform(0, 0.04)
                * min(h, w)
                * np.sin(2 * math.pi * u / rng.uniform(400, 900) + rng.uniform(0, 6.3))
            )
            dist = np.abs(v - centre - bend)
            half_width = rng.uniform(5, 8)
            road = dist < half_width
            asphalt = self._colour((105, 105, 108), 0.12)
            texture = asphalt * (0.9 + 0.2 * grain)
            self._fill(road, ROAD, texture)
            dashes = (dist < 0.8) & (np.mod(u, 14) < 7)
            self.image[dashes] = self._colour((225, 225, 220), 0.05)
            self.height_map[road] = 0
            # Where buildings facing this road may stand: 6-35 px beyond its edge (every 4th pixel).
            edge = (dist - half_width)[::4, ::4]
            ys, xs = np.nonzero((edge > 6) & (edge < 35))
            roads.append((angle, ys * 4.0, xs * 4.0))
        for _ in range(rng.integers(1, 3)):
            u, v = self._rotated(rng.uniform(0, math.pi))
            centre = rng.uniform(-0.4, 0.4) * min(h, w)
            bend = (
                rng.uniform(0.02, 0.08)
                * min(h, w)
                * np.sin(2 * math.pi * u / rng.uniform(200, 500) + rng.uniform(0, 6.3))
            )
            path = np.abs(v - centre - bend) < rng.uniform(4, 5.5)  # 8-11 px: 4-5.5 m tracks
            path &= self.mask != WATER
            dirt = self._colour((192, 188, 178), 0.06)  # pale gravel: grey like asphalt, never soil brown
            self._fill(path, ROAD, dirt * (0.88 + 0.24 * grain))
            self.height_map[path] = 0
        return roads

    def _buildings(self, roads: list[tuple[float, np.ndarray, np.ndarray]]) -> None:
        """Rectangular buildings along the roads (and a few elsewhere): roofs, ridges, heights."""
        rng, h, w = self.rng, self.h, self.w
        blocked = (self.mask == WATER) | (self.mask == ROAD)
        target = max(2, int(h * w / rng.uniform(5000, 9000)))
        placed, tries = 0, 0
        # Red tiles, dark brick, orange clay, burgundy: never the grey of asphalt nor the brown of soil
        # (grey roofs were the demo's main confusion, buildings predicted as road).
        roof_colours = [(175, 75, 55), (145, 55, 50), (196, 116, 70), (128, 60, 72)]
        while placed < target and tries < target * 30:
            tries += 1
            if roads and rng.random() < 0.8:
                angle, ys, xs = roads[rng.integers(len(roads))]
                if len(ys) == 0:
                    continue
                k = rng.integers(len(ys))
                cy, cx = ys[k] + rng.uniform(0, 4), xs[k] + rng.uniform(0, 4)
                angle += rng.normal(0, 0.04)
            else:
                cy, cx, angle = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, math.pi)
            length, breadth = rng.uniform(14, 44), rng.uniform(12, 26)
            radius = math.hypot(length, breadth) / 2 + 3
            y0, y1 = int(max(cy - radius, 0)), int(min(cy + radius + 1, h))
            x0, x1 = int(max(cx - radius, 0)), int(min(cx + radius + 1, w))
            if y1 - y0 < 4 or x1 - x0 < 4:
                continue
            dy, dx = self.yy[y0:y1, x0:x1] - cy, self.xx[y0:y1, x0:x1] - cx
            cos, sin = math.cos(angle), math.sin(angle)
            u, v = dx * cos + dy * sin, -dx * sin + dy * cos
            footprint = (np.abs(u) <= length / 2) & (np.abs(v) <= breadth / 2)
            margin = (np.abs(u) <= length / 2 + 3) & (np.abs(v) <= breadth / 2 + 3)
            if not footprint.any() or (blocked[y0:y1, x0:x1] & margin).any():
                continue
            colour = self._colour(roof_colours[rng.integers(len(roof_colours))], 0.08)
            if rng.random() < 0.65:  # gabled roof: two faces lit differently, a bright ridge
                side = np.where(v * np.sign(rng.standard_normal()) > 0, 1.12, 0.82)
                ridge = np.abs(v) < 1.0
                shade = np.where(ridge, 1.25, side)
            else:  # flat roof with an edge and a small rooftop structure
                shade = np.where((np.abs(u) > length / 2 - 1.5) | (np.abs(v) > breadth / 2 - 1.5), 0.8, 1.0)
                box = (np.abs(u - length * 0.15) < 2.5) & (np.abs(v + breadth * 0.1) < 2.5)
                shade = np.where(box, 1.25, shade)
            texture = colour * shade[..., None] * (0.96 + 0.08 * self._leaf[y0:y1, x0:x1, None])
            region = self.image[y0:y1, x0:x1]
            region[footprint] = texture[footprint]
            self.mask[y0:y1, x0:x1][footprint] = BUILDING
            self.height_map[y0:y1, x0:x1][footprint] = rng.uniform(5, 12)
            blocked[y0:y1, x0:x1] |= margin
            placed += 1

    def _single_trees(self) -> None:
        """Single trees and hedgerows on open ground (never over water, roads or buildings)."""
        rng, h, w = self.rng, self.h, self.w
        allowed = np.isin(self.mask, (BARE, FIELD, TREE))
        count = int(h * w / rng.uniform(4000, 8000))
        centres = np.stack([rng.uniform(0, h, count), rng.uniform(0, w, count)], 1)
        ok = allowed[centres[:, 0].astype(int), centres[:, 1].astype(int)]
        self._draw_crowns(centres[ok], rng.uniform(4, 8, int(ok.sum())), allowed)

    def _shadows(self) -> None:
        """Cast shadows: each object darkens the ground along the shadow direction up to its height."""
        shadow = np.zeros((self.h, self.w), bool)
        heights = self.height_map
        top = float(heights.max())
        if top <= 0:
            return
        # March along the shadow direction; a pixel is shaded if an object at distance d is taller
        # than d along the sun's elevation (here: height in metres * scale * |direction|).
        reach = float(np.linalg.norm(_SUN_SHADOW))  # shadow length in pixels per metre of height
        steps = math.ceil(top * reach) + 1
        direction = _SUN_SHADOW / np.linalg.norm(_SUN_SHADOW)
        for step in range(1, steps + 1):
            dy, dx = (direction * step).round().astype(int)
            caster = _shift(heights, int(dy), int(dx))
            shadow |= (caster * reach >= step) & (caster > heights + 0.5)
        self.image[shadow] *= np.asarray([0.58, 0.6, 0.7], np.float32)  # bluish; the ground stays readable

    def _finish(self) -> None:
        """Illumination, colour cast, sensor blur and noise."""
        rng, h, w = self.rng, self.h, self.w
        light = 0.9 + 0.2 * _fractal_noise(rng, (h, w), max(h, w) / 2, octaves=2)[..., None]
        cast = rng.uniform(0.9, 1.1, 3).astype(np.float32) * rng.uniform(0.85, 1.15)
        self.image = _blur(self.image * light * cast)
        self.image += rng.normal(0, rng.uniform(2.0, 5.0), self.image.shape).astype(np.float32)
