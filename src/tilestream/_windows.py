"""Window batches for `predict_slide`: the grid's windows read (or converted straight from the
decoded tiles) into one reused ``(B, C, h, w)`` batch, and the slide opened for such a pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader

from .dataset import SlideSource, TileReadError
from .geometry import Box
from .reader import IMAGE_FILL, Slide, _aligned_empty

Tensor = torch.Tensor


def _slide_for_prediction(
    path: str | os.PathLike[str], tile: int, reduce: int, num_workers: int, as_float: bool
) -> Slide:
    """Open ``path`` with a private tile cache just big enough that each stored tile is decoded
    once in a row-major pass (the tile rows one row of windows touches), instead of the 256 MiB
    process-wide cache, which would keep every tile of the slide until it closes. No cache at
    all when the windows are converted straight from the decoded tiles (``as_float`` and a
    level stored at ``reduce``): :func:`_tile_float_batches` keeps the tiles it still needs."""
    slide = Slide.open(path, cache_bytes=0)
    if num_workers == 0 and as_float and _converts_tiles(slide, reduce):
        return slide
    level = slide.levels[slide.level_for(reduce)]
    th, tw = level.tile
    window_rows = -(-tile // level.downsample)
    tile_rows = min(-(-(window_rows - 1) // th) + 1, -(-level.shape[0] // th))
    across = -(-level.shape[1] // tw)
    tile_bytes = th * tw * slide.channels * np.dtype(slide.source_dtype).itemsize
    budget = tile_rows * across * tile_bytes
    if num_workers > 0:  # workers reopen the slide from its pickled options: open it with them
        return Slide.open(path, cache_bytes=budget)
    slide.cache.resize(budget)  # opened once: the cache of this process
    return slide


def _converts_tiles(slide: Slide, reduce: int) -> bool:
    """Whether reads at ``reduce`` are copies of stored tiles (see ``Slide._tile_pieces``)."""
    return slide._tile_pieces(Box(0, 0, reduce, reduce), reduce) is not None


def _window_batches(
    source: SlideSource,
    boxes: Sequence[Box],
    reduce: int,
    batch_size: int,
    *,
    as_float: bool,
    pin_memory: bool,
) -> Iterator[tuple[Tensor, list[Box]]]:
    """``(batch, boxes)`` with windows read straight into one reused ``(B, C, h, w)`` buffer (no
    dataset, collate or per-window tensors); overwritten by the next batch. ``as_float``: the
    batch is ``x / 255`` float32, else the uint8 windows. A float batch is converted straight
    from the decoded tiles when the reads at ``reduce`` are copies of stored tiles
    (:func:`_tile_float_batches`), else each window is read into a one-window uint8 buffer and
    converted at once (still in cache)."""
    if not boxes:
        return
    slide = source.slide
    side = boxes[0].height // reduce
    shape = (batch_size, slide.channels, side, side)
    if as_float:
        buffer = torch.empty(shape, dtype=torch.float32)
        if _converts_tiles(slide, reduce):
            yield from _tile_float_batches(source, boxes, reduce, buffer)
            return
        scratch = torch.empty(shape[1:], dtype=torch.uint8).numpy()  # 64-byte aligned
        floats = buffer.numpy()
        views = [scratch.transpose(1, 2, 0)] * batch_size
    else:
        buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=pin_memory)
        views = [buffer[b].numpy().transpose(1, 2, 0) for b in range(batch_size)]
    scale = np.float32(255.0)
    for start in range(0, len(boxes), batch_size):
        chunk = list(boxes[start : start + batch_size])
        for b, box in enumerate(chunk):
            try:
                slide.read(box, reduce, out=views[b])
            except Exception as err:
                raise TileReadError(f"slide {source.id} ({slide.path}), box {box}: {err}") from err
            if as_float:
                # numpy's cast-and-divide loop: bit-identical to x.float() / 255, one pass
                np.divide(scratch, scale, out=floats[b], dtype=np.float32)
        yield buffer[: len(chunk)], chunk


def _tile_float_batches(
    source: SlideSource, boxes: Sequence[Box], reduce: int, buffer: Tensor
) -> Iterator[tuple[Tensor, list[Box]]]:
    """Float batches ``x / 255`` (into ``buffer``, reused) converted straight from the decoded
    tiles, bit-identical to ``slide.read(box, reduce) / 255``.

    Each stored tile is decoded once and de-interleaved once into a channel-first uint8 copy
    (``(H, W, C)`` -> ``(C, H, W)``: once per tile pixel instead of once per window pixel, and
    windows overlap). A window inside one tile is divided by 255 straight from it into its slot
    of the batch; a window over several tiles (or past the slide's edge) is assembled in a
    one-window uint8 buffer by row copies first, as the cast-and-divide is slow into partial
    rows. A tile is held from its first use to the last window that needs it (known up front:
    the windows are given), then its buffer is reused for the next tile decoded. In a
    row-major pass that is one row of tiles plus the one or two under the current window, or
    two rows of tiles where two consecutive rows of windows straddle the same tile-row
    boundary (about what the row cache of the read path holds)."""
    slide = source.slide
    plans = []
    for box in boxes:
        plan = slide._tile_pieces(box, reduce)
        assert plan is not None  # checked by the caller: the level is stored at `reduce`
        plans.append(plan)
    last: dict[tuple[int, ...], int] = {}
    for i, (pieces, _) in enumerate(plans):
        for piece in pieces:
            last[piece.key] = i
    held: dict[tuple[int, ...], NDArray[np.uint8]] = {}
    spare: list[NDArray[np.uint8]] = []
    floats = buffer.numpy()
    window = _aligned_empty(floats.shape[1:])  # one window, uint8, channel first
    scale = np.float32(255.0)
    for start in range(0, len(boxes), len(floats)):
        chunk = list(boxes[start : start + len(floats)])
        for b, box in enumerate(chunk):
            i = start + b
            pieces, padded = plans[i]
            parts = []
            for p in pieces:
                tile = held.get(p.key)
                if tile is None:
                    try:
                        decoded = slide._decode_tile(p.key)
                    except Exception as err:
                        raise TileReadError(
                            f"slide {source.id} ({slide.path}), box {box}: {err}"
                        ) from err
                    tile = _channels_first(decoded, spare)
                    held[p.key] = tile
                h, w = p.y1 - p.y0, p.x1 - p.x0
                parts.append((p, tile[:, p.ty0 : p.ty0 + h, p.tx0 : p.tx0 + w]))
            # numpy's cast-and-divide loop: bit-identical to x.float() / 255, one pass; it runs
            # at full speed into a whole (contiguous) window, so a window made of several
            # pieces (or padded) is first assembled in uint8 (row copies, ~1/5 of the divide)
            if len(parts) == 1 and not padded:
                np.divide(parts[0][1], scale, out=floats[b], dtype=np.float32)
            else:
                if padded:
                    window.fill(IMAGE_FILL)
                for p, part in parts:
                    window[p.c0 : p.c1, p.y0 : p.y1, p.x0 : p.x1] = part
                np.divide(window, scale, out=floats[b], dtype=np.float32)
            for p in pieces:  # after the window: a released buffer is reused by the next decode
                if last[p.key] == i:
                    spare.append(held.pop(p.key))
        yield buffer[: len(chunk)], chunk


def _channels_first(
    decoded: NDArray[np.uint8], spare: list[NDArray[np.uint8]]
) -> NDArray[np.uint8]:
    """``decoded`` ``(rows, cols, C)`` copied to ``(C, rows, cols)``, into a spare buffer of
    that shape when there is one (reused memory is fast; fresh memory is not, PERF-NOTES)."""
    rows, cols, channels = decoded.shape
    shape = (channels, rows, cols)
    for k, buf in enumerate(spare):
        if buf.shape == shape:
            out = spare.pop(k)
            break
    else:
        out = _aligned_empty(shape)
    np.copyto(out, decoded.transpose(2, 0, 1))
    return out


def _loader_batches(loader: DataLoader[dict[str, Any]]) -> Iterator[tuple[Tensor, list[Box]]]:
    for batch in loader:
        yield batch["image"], [Box(*row) for row in batch["box"].tolist()]
