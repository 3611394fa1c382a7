"""The sliding-window engine: overlapping tiles in batches, blended into a strip buffer of bounded size.

The engine knows nothing about files. It pulls normalised input windows from a ``read`` callback,
runs a batch function on tiles, blends the results with smooth weights (:mod:`.tiling`) and hands
finished strips to a ``write`` callback, in output coordinates. Memory is bounded independently of
the raster size:

* the raster is processed in column chunks of at most ``chunk`` input pixels (tiles that straddle
  a chunk boundary are computed for both chunks: a few percent of extra work on very wide rasters,
  in exchange for a buffer whose size does not depend on the raster's width);
* within a chunk, tile rows are processed top to bottom and the accumulator keeps only the rows
  that a later tile can still touch (one tile high); rows above the current tile row are final and
  are written out and dropped.

The result for a pixel is ``sum_t w_t(p) f_t(p) / sum_t w_t(p)`` over the tiles that cover it, so
it does not depend on the chunking, and a per-pixel function gives the same values tiled and not.
"""

from __future__ import annotations

import ctypes
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bicorseg.inference.tiling import Tile, TileGrid, blend_weights, output_size

# read(y0, x0, height, width) -> (normalised float32 bands x h x w, valid bool h x w), input pixels
ReadFn = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]
# write(y0, x0, values float32 K x h x w, valid bool h x w), output pixels (input / scale)
WriteFn = Callable[[int, int, np.ndarray, np.ndarray], None]
BatchFn = Callable[[torch.Tensor], torch.Tensor]

DEFAULT_CHUNK = 4096  # input pixels per column chunk: a multiple of common GeoTIFF block sizes
FLUSH_ROWS = 128  # output rows handed to ``write`` at a time


@dataclass(frozen=True)
class Chunk:
    """A column range of the output (``out0:out1``) and the tile columns needed to compute it."""

    out0: int
    out1: int
    cols: tuple[tuple[int, int], ...]  # (x0, width) in input pixels


class SlidingWindow:
    """Tiled, blended application of ``fn`` over a ``height x width`` input.

    Args:
        height, width: input size in pixels.
        channels: K, the number of maps ``fn`` returns per tile.
        tile, overlap: the tile grid (:class:`TileGrid`).
        batch_size: tiles per call of ``fn``.
        scale: ``fn`` maps an ``h x w`` tile to ``K x ceil(h/scale) x ceil(w/scale)`` (4 for heatmaps).
        chunk: maximal width of a column chunk in input pixels (bounds the memory).
        device: where the batches go.
    """

    def __init__(
        self,
        height: int,
        width: int,
        channels: int,
        tile: int = 512,
        overlap: float = 0.25,
        batch_size: int = 4,
        scale: int = 1,
        chunk: int = DEFAULT_CHUNK,
        device: str | torch.device = "cpu",
    ) -> None:
        self.grid = TileGrid(height, width, tile, overlap, multiple=scale)
        self.height, self.width, self.channels, self.scale = height, width, channels, scale
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.out_height, self.out_width = output_size(height, scale), output_size(width, scale)
        self.chunks = self._plan_chunks(max(chunk, tile) // scale)

    def _plan_chunks(self, chunk_out: int) -> list[Chunk]:
        bounds = [*range(0, self.out_width, chunk_out), self.out_width]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < chunk_out // 2:
            del bounds[-2]  # merge a thin last chunk into its neighbour
        cols, s = self.grid.cols, self.scale
        return [
            Chunk(a, b, tuple(c for c in cols if c[0] // s < b and output_size(c[0] + c[1], s) > a))
            for a, b in itertools.pairwise(bounds)
        ]

    @property
    def total_tiles(self) -> int:
        """Model tiles over the whole run (progress total), counting the chunk-boundary repeats."""
        return len(self.grid.rows) * sum(len(c.cols) for c in self.chunks)

    def run(self, fn: BatchFn, read: ReadFn, write: WriteFn, progress: Callable[[int], None] | None = None):
        for chunk in self.chunks:
            self._run_chunk(chunk, fn, read, write, progress)

    def _run_chunk(self, chunk: Chunk, fn: BatchFn, read: ReadFn, write: WriteFn, progress) -> None:
        s, rows = self.scale, self.grid.rows
        acc_x0 = chunk.cols[0][0] // s
        acc_w = output_size(max(x0 + w for x0, w in chunk.cols), s) - acc_x0
        buf_h = max(output_size(h, s) for _, h in rows)
        acc = np.zeros((self.channels, buf_h, acc_w), np.float32)
        weight = np.zeros((buf_h, acc_w), np.float32)
        valid = np.zeros((buf_h, acc_w), bool)
        state = {"top": 0}  # output row held by buffer row 0
        c0, c1 = chunk.out0 - acc_x0, chunk.out1 - acc_x0

        def flush(until: int) -> None:
            top = state["top"]
            n = until - top
            if n <= 0:
                return
            for r0 in range(0, n, FLUSH_ROWS):  # in pieces: small temporaries whatever the width
                r1 = min(n, r0 + FLUSH_ROWS)
                w = weight[r0:r1, c0:c1]
                values = acc[:, r0:r1, c0:c1] / np.where(w > 0, w, 1.0)  # 0 only under skipped tiles
                write(top + r0, chunk.out0, values, valid[r0:r1, c0:c1].copy())
            # drop the finished rows: shift the buffer up (numpy handles the overlapping copy)
            acc[:, : buf_h - n] = acc[:, n:]
            acc[:, buf_h - n :] = 0.0
            weight[: buf_h - n] = weight[n:]
            weight[buf_h - n :] = 0.0
            valid[: buf_h - n] = valid[n:]
            valid[buf_h - n :] = False
            state["top"] = until
            release_memory()

        pending: list[tuple[Tile, np.ndarray]] = []

        def run_batch() -> None:
            batch = np.stack([data for _, data in pending])
            with torch.inference_mode():
                out = fn(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
            for (tile, _), values in zip(pending, out):
                oh, ow = values.shape[-2:]
                wts = blend_weights(oh, ow)
                ox = tile.x0 // s - acc_x0
                acc[:, :oh, ox : ox + ow] += values * wts
                weight[:oh, ox : ox + ow] += wts
            if progress is not None:
                progress(len(pending))
            pending.clear()

        for y0, th in rows:
            flush(y0 // s)
            for x0, tw in chunk.cols:
                # one read per tile: the read buffer does not grow with the raster's width, and
                # overlapping reads come from GDAL's block cache
                data, mask = read(y0, x0, th, tw)
                cells = _pool_any(mask, s)
                ox = x0 // s - acc_x0
                valid[: cells.shape[0], ox : ox + cells.shape[1]] = cells
                if not mask.any():  # never feed the model a tile of pure nodata
                    if progress is not None:
                        progress(1)
                    continue
                if pending and (len(pending) == self.batch_size or pending[0][1].shape != data.shape):
                    run_batch()
                pending.append((Tile(y0, x0, th, tw), data))
            if pending:
                run_batch()
        flush(self.out_height)


def release_memory() -> None:
    """Give freed heap pages back to the system (glibc): keeps the resident size flat on long runs."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (musl and others have no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def _batches(tiles: list[Tile], size: int) -> list[list[Tile]]:
    """Consecutive groups of at most ``size`` tiles of one shape (a batch needs one shape)."""
    groups: list[list[Tile]] = []
    for tile in tiles:
        last = groups[-1] if groups else None
        if last and len(last) < size and (last[0].height, last[0].width) == (tile.height, tile.width):
            last.append(tile)
        else:
            groups.append([tile])
    return groups


def _pool_any(mask: np.ndarray, scale: int) -> np.ndarray:
    """An output cell is valid when any input pixel of its ``scale x scale`` block is valid."""
    if scale == 1:
        return mask
    h, w = mask.shape
    oh, ow = output_size(h, scale), output_size(w, scale)
    padded = np.zeros((oh * scale, ow * scale), bool)
    padded[:h, :w] = mask
    return padded.reshape(oh, scale, ow, scale).any(axis=(1, 3))
