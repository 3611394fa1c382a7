"""The sliding-window engine: output blocks of one global tile grid, each computed from every tile over it.

The engine knows nothing about files. It pulls normalised input windows from a ``read`` callback,
runs a batch function on tiles, blends the results with smooth weights (:mod:`.tiling`) and hands
finished strips to a ``write`` callback, in output coordinates.

**Blocks.** The output is cut into blocks of ``block`` pixels on a grid anchored at the raster's
origin (the last block of a row or column is the remainder). A block is computed from every tile
of the global :class:`~.tiling.TileGrid` that overlaps it, so every pixel gets
``sum_t w_t(p) f_t(p) / sum_t w_t(p)`` over all the tiles that cover it, whichever block it lies
in. A block's computation is fixed by the block alone: its tiles in row-major order, batched row
by row in runs of ``batch_size`` tiles of one shape, added to its accumulator in that order. So the
bytes of a block do not depend on which other blocks run, in which order or in which process: any
partition of the blocks (the units of :mod:`.units`) gives the same result as running them all in
sequence. Tiles that overlap two blocks are computed for both (the recomputation overhead,
:meth:`SlidingWindow.overhead`).

**Memory.** Within a block, tile rows are processed top to bottom and the accumulator keeps only
the rows that a later tile can still touch (one tile high, the block's width plus a tile); rows
above the current tile row are final and are written out and dropped. Memory is bounded by the
block size, never by the raster's.
"""

from __future__ import annotations

import ctypes
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bicorseg.defaults import DEFAULT_BATCH_SIZE, DEFAULT_BLOCK, DEFAULT_OVERLAP, DEFAULT_TILE
from bicorseg.errors import ConfigError
from bicorseg.inference.tiling import Tile, TileGrid, blend_weights, output_size

# read(y0, x0, height, width) -> (normalised float32 bands x h x w, valid bool h x w), input pixels
ReadFn = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]
# write(y0, x0, values float32 K x h x w, valid bool h x w), output pixels (input / scale)
WriteFn = Callable[[int, int, np.ndarray, np.ndarray], None]
BatchFn = Callable[[torch.Tensor], torch.Tensor]
# keep(y0, x0, height, width) -> False to skip a tile as if it held no valid pixel (an area of interest)
KeepFn = Callable[[int, int, int, int], bool]

MIN_BLOCK = 16
FLUSH_ROWS = 128  # output rows handed to ``write`` at a time


@dataclass(frozen=True)
class Block:
    """One output block: block row ``row`` and column ``col`` of the grid; rows ``y0:y0+height`` and
    columns ``x0:x0+width`` in output pixels."""

    row: int
    col: int
    y0: int
    x0: int
    height: int
    width: int

    @property
    def key(self) -> str:
        """A stable name of the block, e.g. ``r002c013``."""
        return f"r{self.row:03d}c{self.col:03d}"


def block_grid(height: int, width: int, block: int) -> list[Block]:
    """The blocks of ``block`` pixels covering a ``height x width`` output, row-major."""
    rows = enumerate((y0, min(block, height - y0)) for y0 in range(0, height, block))
    cols = enumerate((x0, min(block, width - x0)) for x0 in range(0, width, block))
    return [Block(r, c, y0, x0, h, w) for (r, (y0, h)), (c, (x0, w)) in itertools.product(rows, cols)]


class SlidingWindow:
    """Tiled, blended application of ``fn`` over a ``height x width`` input, block by block.

    Args:
        height, width: input size in pixels.
        channels: K, the number of maps ``fn`` returns per tile.
        tile, overlap: the tile grid (:class:`TileGrid`).
        batch_size: tiles per call of ``fn``.
        scale: ``fn`` maps an ``h x w`` tile to ``K x ceil(h/scale) x ceil(w/scale)`` (4 for heatmaps).
        block: block side in input pixels, a multiple of ``scale`` (bounds the memory).
        device: where the batches go.
    """

    def __init__(
        self,
        height: int,
        width: int,
        channels: int,
        tile: int = DEFAULT_TILE,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int = DEFAULT_BATCH_SIZE,
        scale: int = 1,
        block: int = DEFAULT_BLOCK,
        device: str | torch.device = "cpu",
    ) -> None:
        self.grid = TileGrid(height, width, tile, overlap, multiple=scale)
        if block < MIN_BLOCK or block % scale:
            raise ConfigError(
                f"block must be a multiple of {scale} of at least {MIN_BLOCK} pixels, got {block}"
            )
        self.channels, self.scale = channels, scale
        if batch_size < 1:
            raise ConfigError(f"must be at least 1, got {batch_size}", key="batch_size")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.out_height, self.out_width = output_size(height, scale), output_size(width, scale)
        self.blocks = block_grid(self.out_height, self.out_width, block // scale)

    def _overlapping(self, spans: list[tuple[int, int]], start: int, stop: int) -> list[tuple[int, int]]:
        """The tile spans (input pixels) whose output footprint meets output cells ``start:stop``."""
        s = self.scale
        return [(a, n) for a, n in spans if a // s < stop and output_size(a + n, s) > start]

    def tiles_of(self, block: Block) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The tile rows and tile columns (start, size in input pixels) that overlap ``block``."""
        rows = self._overlapping(self.grid.rows, block.y0, block.y0 + block.height)
        cols = self._overlapping(self.grid.cols, block.x0, block.x0 + block.width)
        return rows, cols

    def tile_count(self, block: Block) -> int:
        rows, cols = self.tiles_of(block)
        return len(rows) * len(cols)

    @property
    def total_tiles(self) -> int:
        """Model tiles over the whole run (progress total), counting the tiles shared by blocks."""
        return sum(self.tile_count(b) for b in self.blocks)

    def overhead(self) -> float:
        """Tiles computed over the tiles of the grid, minus one: the recomputation at block edges."""
        return self.total_tiles / len(self.grid) - 1.0

    def run(
        self, fn: BatchFn, read: ReadFn, write: WriteFn, progress: Callable[[int], None] | None = None
    ) -> None:
        """Compute every block in order and hand their strips to ``write``."""
        for block in self.blocks:
            self.run_block(block, fn, read, write, progress)

    def run_block(
        self,
        block: Block,
        fn: BatchFn,
        read: ReadFn,
        write: WriteFn,
        progress: Callable[[int], None] | None = None,
        keep: KeepFn | None = None,
    ) -> None:
        """Compute one block from every tile over it; its strips go to ``write`` top to bottom."""
        s, advance = self.scale, progress or (lambda n: None)
        rows, cols = self.tiles_of(block)
        acc_x0 = cols[0][0] // s
        acc_w = output_size(max(x0 + w for x0, w in cols), s) - acc_x0
        buf_h = max(output_size(h, s) for _, h in rows)
        acc = np.zeros((self.channels, buf_h, acc_w), np.float32)
        weight = np.zeros((buf_h, acc_w), np.float32)
        valid = np.zeros((buf_h, acc_w), bool)
        top = rows[0][0] // s  # output row held by buffer row 0
        c0, c1 = block.x0 - acc_x0, block.x0 + block.width - acc_x0
        y_stop = block.y0 + block.height

        def flush(until: int) -> None:
            nonlocal top
            n = until - top
            if n <= 0:
                return
            first, last = max(top, block.y0) - top, min(until, y_stop) - top  # buffer rows inside the block
            for r0 in range(first, last, FLUSH_ROWS):  # in pieces: small temporaries whatever the width
                r1 = min(last, r0 + FLUSH_ROWS)
                w = weight[r0:r1, c0:c1]
                values = acc[:, r0:r1, c0:c1] / np.where(w > 0, w, 1.0)  # 0 only under skipped tiles
                write(top + r0, block.x0, values, valid[r0:r1, c0:c1].copy())
            # drop the finished rows: shift the buffers up (numpy handles the overlapping copy)
            for buffer in (acc, weight, valid):  # rows are the second-to-last axis of each
                buffer[..., : buf_h - n, :] = buffer[..., n:, :]
                buffer[..., buf_h - n :, :] = 0
            top = until

        pending: list[tuple[Tile, np.ndarray]] = []

        def run_batch() -> None:
            batch = np.stack([data for _, data in pending])
            with torch.inference_mode():
                out = fn(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
            for (tile, _), values in zip(pending, out):
                oh, ow = values.shape[-2:]
                wts = blend_weights(oh, ow)
                oy, ox = tile.y0 // s - top, tile.x0 // s - acc_x0
                acc[:, oy : oy + oh, ox : ox + ow] += values * wts
                weight[oy : oy + oh, ox : ox + ow] += wts
            advance(len(pending))
            pending.clear()

        for y0, th in rows:
            flush(y0 // s)
            for x0, tw in cols:
                tile = Tile(y0, x0, th, tw)
                if keep is not None and not keep(y0, x0, th, tw):
                    advance(1)
                    continue
                # one read per tile: the read buffer does not grow with the raster's width, and
                # overlapping reads come from GDAL's block cache
                data, mask = read(y0, x0, th, tw)
                cells = _pool_any(mask, s)
                ox = x0 // s - acc_x0
                valid[: cells.shape[0], ox : ox + cells.shape[1]] = cells
                if not mask.any():  # never feed the model a tile of pure nodata
                    advance(1)
                    continue
                if pending and (len(pending) == self.batch_size or pending[0][1].shape != data.shape):
                    run_batch()
                pending.append((tile, data))
            if pending:
                run_batch()
        flush(y_stop)
        if _MALLOC_TRIM is not None:  # freed heap pages back to the system: a flat resident size
            _MALLOC_TRIM(0)


try:  # glibc's malloc_trim (musl and other systems have none)
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _MALLOC_TRIM = None


def _pool_any(mask: np.ndarray, scale: int) -> np.ndarray:
    """An output cell is valid when any input pixel of its ``scale x scale`` block is valid."""
    if scale == 1:
        return mask
    h, w = mask.shape
    oh, ow = output_size(h, scale), output_size(w, scale)
    padded = np.zeros((oh * scale, ow * scale), bool)
    padded[:h, :w] = mask
    return padded.reshape(oh, scale, ow, scale).any(axis=(1, 3))
