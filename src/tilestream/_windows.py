"""Window batches for `predict_slide`: the grid's windows read (or converted straight from the
decoded tiles) into one reused ``(B, C, h, w)`` batch, and the slide opened for such a pass.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Generator, Sequence
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
    path: str | os.PathLike[str], tile: int, reduce: int, num_workers: int
) -> Slide:
    """Open ``path`` with a private tile cache just big enough that each stored tile is decoded
    once in a row-major pass (the tile rows one row of windows touches), instead of the 256 MiB
    process-wide cache, which would keep every tile of the slide until it closes. No cache at
    all when the windows are built straight from the decoded tiles (no workers and a level
    stored at ``reduce``): :func:`_tile_batches` keeps the tiles it still needs."""
    slide = Slide.open(path, cache_bytes=0)
    if num_workers == 0 and _converts_tiles(slide, reduce):
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
) -> Generator[tuple[Tensor, list[Box]], None, None]:
    """``(batch, boxes)`` with windows read straight into one reused ``(B, C, h, w)`` buffer (no
    dataset, collate or per-window tensors); overwritten by the next batch. ``as_float``: the
    batch is ``x / 255`` float32, else the uint8 windows (pinned with ``pin_memory``). When
    the reads at ``reduce`` are copies of stored tiles, the windows are built from tiles
    decoded in a background thread (:func:`_tile_batches`); else each window is read with
    :meth:`Slide.read` (a float window into a one-window uint8 buffer, converted at once,
    still in cache)."""
    if not boxes:
        return
    slide = source.slide
    side = boxes[0].height // reduce
    shape = (batch_size, slide.channels, side, side)
    if as_float:
        # 64-byte aligned (the alignment trap in PERF-NOTES), and numpy's memory: with
        # torch.empty here, a process predicting slide after slide grew by about one batch
        # per slide for its first five slides (glibc kept the freed blocks)
        buffer = torch.from_numpy(_aligned_empty((4 * math.prod(shape),)).view(np.float32))
        buffer = buffer.reshape(shape)
    else:
        buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=pin_memory)
    if _converts_tiles(slide, reduce):
        yield from _tile_batches(source, boxes, reduce, buffer)
        return
    if as_float:
        scratch = torch.empty(shape[1:], dtype=torch.uint8).numpy()  # 64-byte aligned
        floats = buffer.numpy()
        views = [scratch.transpose(1, 2, 0)] * batch_size
    else:
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


def _tile_batches(
    source: SlideSource, boxes: Sequence[Box], reduce: int, buffer: Tensor
) -> Generator[tuple[Tensor, list[Box]], None, None]:
    """Batches (into ``buffer``, reused) built straight from the decoded tiles: float32
    ``x / 255``, bit-identical to ``slide.read(box, reduce) / 255``, or the uint8 windows,
    equal to ``slide.read(box, reduce)``, after the buffer's dtype.

    Each stored tile is decoded once, in a background thread (:class:`_TileDecoder`: JPEG and
    the other codecs release the GIL, so decoding the next tiles overlaps this thread's
    copies, the model and the blending), and de-interleaved once into a channel-first uint8
    copy (``(H, W, C)`` -> ``(C, H, W)``: once per tile pixel instead of once per window
    pixel, and windows overlap). A float window inside one tile is divided by 255 straight from
    it into its slot of the batch; one over several tiles (or past the slide's edge) is
    assembled in a one-window uint8 buffer by row copies first, as the cast-and-divide is slow
    into partial rows. A tile is held from its first use to the last window that needs it
    (known up front: the windows are given), then its buffer goes back to the decoder for a
    later tile. In a row-major pass that is one row of tiles plus the one or two under the
    current window, or two rows of tiles where two consecutive rows of windows straddle the
    same tile-row boundary, plus the :data:`PREFETCH_TILES` the decoder may run ahead."""
    slide = source.slide
    plans = []
    for box in boxes:
        plan = slide._tile_pieces(box, reduce)
        assert plan is not None  # checked by the caller: the level is stored at `reduce`
        plans.append(plan)
    order, last, peak = _tile_schedule([[p.key for p in pieces] for pieces, _ in plans])
    decoder = _TileDecoder(slide._decode_tile, order, peak + PREFETCH_TILES)
    held: dict[_Key, NDArray[np.uint8]] = {}
    out = buffer.numpy()
    # float: one window assembled in uint8 (channel first) before the divide
    window = _aligned_empty(out.shape[1:]) if out.dtype == np.float32 else None
    scale = np.float32(255.0)
    try:
        for start in range(0, len(boxes), len(out)):
            chunk = list(boxes[start : start + len(out)])
            for b, box in enumerate(chunk):
                i = start + b
                pieces, padded = plans[i]
                parts = []
                for p in pieces:
                    tile = held.get(p.key)
                    if tile is None:
                        try:
                            tile = decoder.take(p.key)
                        except Exception as err:
                            raise TileReadError(
                                f"slide {source.id} ({slide.path}), box {box}: {err}"
                            ) from err
                        held[p.key] = tile
                    h, w = p.y1 - p.y0, p.x1 - p.x0
                    parts.append((p, tile[:, p.ty0 : p.ty0 + h, p.tx0 : p.tx0 + w]))
                if window is None:  # uint8: the pieces straight into the batch
                    if padded:
                        out[b].fill(IMAGE_FILL)
                    for p, part in parts:
                        out[b, p.c0 : p.c1, p.y0 : p.y1, p.x0 : p.x1] = part
                # numpy's cast-and-divide loop: bit-identical to x.float() / 255, one pass; it
                # runs at full speed into a whole (contiguous) window, so a window made of
                # several pieces (or padded) is first assembled in uint8 (row copies, ~1/5 of
                # the divide)
                elif len(parts) == 1 and not padded:
                    np.divide(parts[0][1], scale, out=out[b], dtype=np.float32)
                else:
                    if padded:
                        window.fill(IMAGE_FILL)
                    for p, part in parts:
                        window[p.c0 : p.c1, p.y0 : p.y1, p.x0 : p.x1] = part
                    np.divide(window, scale, out=out[b], dtype=np.float32)
                for p in pieces:  # after the window: its buffer goes to a later tile
                    if last[p.key] == i:
                        decoder.give_back(held.pop(p.key))
            yield buffer[: len(chunk)], chunk
    finally:
        decoder.close()


PREFETCH_TILES = 2
"""Tiles the background decoder may hold beyond what the windows in progress need: enough to
keep decoding while the windows of a row use tiles already decoded (a row of windows that
starts no new tile row), without holding a whole extra row of tiles."""

_Key = tuple[int, int, int, int, int]


def _tile_schedule(
    windows: Sequence[Sequence[_Key]],
) -> tuple[list[_Key], dict[_Key, int], int]:
    """For the tiles each window uses, in pass order: the tiles in order of first use, the
    last window using each, and the most tiles held at once when each is held from its first
    window to its last (the buffers a pass needs)."""
    order: list[_Key] = []
    last: dict[_Key, int] = {}
    for i, keys in enumerate(windows):
        for key in keys:
            if key not in last:
                order.append(key)
            last[key] = i
    held: set[_Key] = set()
    peak = 0
    for i, keys in enumerate(windows):
        held.update(keys)
        peak = max(peak, len(held))
        held.difference_update(k for k in keys if last[k] == i)
    return order, last, peak


class _TileDecoder:
    """Decodes ``order`` (tile keys, in the order they will be taken) in a daemon thread into
    at most ``capacity`` channel-first uint8 buffers: a buffer is filled only when one is free
    (given back) or fewer than ``capacity`` exist, so the memory is bounded and the thread
    never runs further ahead than the free buffers allow. ``capacity`` must be at least the
    tiles the taker holds at once plus one (:func:`_tile_schedule`): :meth:`take` raises
    instead of waiting forever when it is not. A decode error is raised by the :meth:`take`
    of that tile."""

    def __init__(self, decode: Any, order: Sequence[_Key], capacity: int) -> None:
        self._decode = decode
        self._order = list(order)
        self._capacity = max(1, capacity)
        self._cond = threading.Condition()
        self._ready: dict[_Key, NDArray[np.uint8] | BaseException] = {}
        self._free: list[NDArray[np.uint8]] = []
        self._buffers = 0  # allocated: taken, ready, being filled, or free
        self._taken = 0
        self._held = 0  # taken and not given back
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tilestream-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for key in self._order:
            with self._cond:
                while not self._closed and not self._free and self._buffers >= self._capacity:
                    self._cond.wait()
                if self._closed:
                    return
                buf = self._free.pop() if self._free else None
                if buf is None:
                    self._buffers += 1
            try:
                tile: NDArray[np.uint8] | BaseException = _channels_first(self._decode(key), buf)
            except BaseException as err:  # handed to the taker, with its traceback
                tile = err
            with self._cond:
                self._ready[key] = tile
                self._cond.notify_all()
            if isinstance(tile, BaseException):
                return

    def take(self, key: _Key) -> NDArray[np.uint8]:
        """The next tile of the order (``key``), waiting for the thread to decode it."""
        with self._cond:
            if self._order[self._taken] != key:  # pragma: no cover - a bug in the caller
                raise RuntimeError(f"tile {key} taken out of order")
            self._taken += 1
            while key not in self._ready:
                if not self._free and self._held >= self._capacity:  # a bug in the caller
                    raise RuntimeError(
                        f"tile decoder: all {self._capacity} buffers are held; the capacity "
                        "must exceed the tiles held at once"
                    )
                self._cond.wait()
            item = self._ready.pop(key)
            self._held += 1
        if isinstance(item, BaseException):
            raise item
        return item

    def give_back(self, tile: NDArray[np.uint8]) -> None:
        """A taken tile no longer needed: its buffer is reused for a later tile."""
        with self._cond:
            self._free.append(tile)
            self._held -= 1
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the thread (it finishes the tile in hand) and drop every buffer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._ready.clear()
        self._free.clear()


def _channels_first(decoded: NDArray[np.uint8], buf: NDArray[np.uint8] | None) -> NDArray[np.uint8]:
    """``decoded`` ``(rows, cols, C)`` copied to ``(C, rows, cols)``, into ``buf`` when it has
    that shape (reused memory is fast; fresh memory is not, PERF-NOTES), else a new buffer."""
    rows, cols, channels = decoded.shape
    shape = (channels, rows, cols)
    out = buf if buf is not None and buf.shape == shape else _aligned_empty(shape)
    np.copyto(out, decoded.transpose(2, 0, 1))
    return out


def _loader_batches(
    loader: DataLoader[dict[str, Any]],
) -> Generator[tuple[Tensor, list[Box]], None, None]:
    for batch in loader:
        yield batch["image"], [Box(*row) for row in batch["box"].tolist()]
