"""`Stitcher`: blend overlapping window predictions into a slide-sized canvas at reduced scale,
then threshold, vectorise or RLE-encode it without a full-resolution mask.

The canvas lives at ``1/reduce`` of the slide, in RAM (numpy) or on disk (a chunked zarr group)
for slides beyond RAM. Each window is weighted by a blend window that is never zero (Gaussian by
default, sigma = tile/8 as in nnU-Net and MONAI), so every covered pixel is defined and seams
vanish. With arbitrary windows the canvas holds weighted sums and weights (float32 unless
``dtype`` says otherwise) and is normalised when read. When the windows are declared up front
(``grid=``, as `predict_slide` does), the total weight under every pixel is known before any
add, so each window is added already normalised and the canvas *is* the probability map: one
array, no weight canvas and no division pass. The RLE of the thresholded canvas is computed
from its runs scaled to level 0 (each reduced run becomes ``reduce`` level-0 column runs), so
peak memory is the canvas plus the runs.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ._components import row_runs
from ._jit import njit
from ._resample import block_majority
from .errors import TilestreamError
from .geometry import Box, check_reduce_factor
from .rle import Order, runs_to_rle

__all__ = ["Blend", "StitchError", "Stitcher", "blend_window"]

Blend = Literal["gaussian", "pyramid", "mean", "center"]
_MIN_WEIGHT = 1e-3


class StitchError(TilestreamError, ValueError):
    """A window or a canvas does not fit (shape, dtype, NaN, store of another slide)."""


@lru_cache(maxsize=32)
def _blend_window_cached(height: int, width: int, blend: str, margin: int) -> NDArray[np.float32]:
    if blend == "mean":
        w = np.ones((height, width), np.float32)
    elif blend == "gaussian":

        def axis(n: int) -> NDArray[np.float64]:
            sigma = n / 8.0
            x = np.arange(n) - (n - 1) / 2.0
            curve: NDArray[np.float64] = np.exp(-0.5 * (x / sigma) ** 2)
            return curve

        w = np.outer(axis(height), axis(width)).astype(np.float32)
        w /= w.max()
    elif blend == "pyramid":

        def ramp(n: int) -> NDArray[np.float64]:
            x = np.arange(n)
            return np.minimum(x + 1, n - x) / math.ceil(n / 2)

        w = np.minimum.outer(ramp(height), ramp(width)).astype(np.float32)
    elif blend == "center":
        w = np.full((height, width), _MIN_WEIGHT, np.float32)
        m = min(margin, (height - 1) // 2, (width - 1) // 2)
        w[m : height - m, m : width - m] = 1.0
    else:
        raise ValueError(f'blend must be "gaussian", "pyramid", "mean" or "center", got {blend!r}')
    np.maximum(w, _MIN_WEIGHT, out=w)
    w.setflags(write=False)
    return w


def blend_window(
    height: int, width: int, blend: Blend = "gaussian", margin: int = 0
) -> NDArray[np.float32]:
    """The weights one window contributes, ``(height, width)`` float32, never below 1e-3.

    ``"gaussian"``: separable Gaussian, sigma = 1/8 of each side, peak 1. ``"pyramid"``: linear
    ramp from the edges. ``"mean"``: ones. ``"center"``: 1 inside, 1e-3 in a border of
    ``margin`` pixels (centre-crop stitching; edge windows still define the slide border).

    Examples
    --------
    >>> w = blend_window(8, 8, "center", margin=2)
    >>> round(float(w[0, 0]), 6), float(w[4, 4])
    (0.001, 1.0)
    """
    return _blend_window_cached(int(height), int(width), str(blend), int(margin))


@njit
def _column_runs(
    mask: NDArray[np.uint8],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    # Runs of each column of a C-ordered mask, found in row-major passes (cache friendly):
    # CSR offsets per column, run starts and ends (rows, half-open), sorted within a column.
    h, w = mask.shape
    counts = np.zeros(w + 1, np.int64)
    for i in range(h):
        for j in range(w):
            if mask[i, j] != 0 and (i == 0 or mask[i - 1, j] == 0):
                counts[j + 1] += 1
    offsets = np.cumsum(counts)
    total = offsets[w]
    starts = np.empty(total, np.int64)
    ends = np.empty(total, np.int64)
    fill = offsets[:w].copy()
    for i in range(h):
        for j in range(w):
            on = mask[i, j] != 0
            was = i > 0 and mask[i - 1, j] != 0
            if on and not was:
                starts[fill[j]] = i
            elif was and not on:
                ends[fill[j]] = i
                fill[j] += 1
    for j in range(w):
        if h > 0 and mask[h - 1, j] != 0:
            ends[fill[j]] = h
            fill[j] += 1
    return offsets, starts, ends


@njit
def _scale_runs(
    offsets: NDArray[np.int64],
    run_starts: NDArray[np.int64],
    run_ends: NDArray[np.int64],
    factor: int,
    lines: int,
    length: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    # Each reduced line repeats `factor` times at level 0 (up to `lines`); positions scale by
    # `factor`, clipped to `length`. Flat 0-based starts; a run reaching the end of a line
    # merges with one starting the next line (flat RLE semantics).
    n_r = offsets.size - 1
    total = 0
    for lr in range(n_r):
        total += (offsets[lr + 1] - offsets[lr]) * factor
    starts = np.empty(total, np.int64)
    lengths = np.empty(total, np.int64)
    n = 0
    for lr in range(n_r):
        for k in range(factor):
            line = lr * factor + k
            if line >= lines:
                break
            base = line * length
            for q in range(offsets[lr], offsets[lr + 1]):
                a = run_starts[q] * factor
                if a >= length:
                    break
                b = min(run_ends[q] * factor, length)
                start = base + a
                if n > 0 and starts[n - 1] + lengths[n - 1] == start:
                    lengths[n - 1] += b - a
                else:
                    starts[n] = start
                    lengths[n] = b - a
                    n += 1
    return starts[:n], lengths[:n]


class Stitcher:
    """Accumulate weighted window predictions on a canvas at ``1/reduce`` scale.

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)`` of the slide at level 0.
    reduce : int
        Level-0 pixels per canvas pixel (the scale the model predicts at).
    tile : int
        Window side in level-0 pixels (sizes the blend window; other sizes are accepted unless
        ``grid`` is given).
    blend : {"gaussian", "pyramid", "mean", "center"}
        How overlapping windows are weighted (see :func:`blend_window`).
    overlap : int
        Window overlap in level-0 pixels; ``"center"`` keeps the central part, dropping
        ``overlap / 2`` on each side.
    channels : int
        Channels of the predictions (1 for binary segmentation).
    grid : (sequence of int, sequence of int), optional
        Declare the windows up front: every ``Box(y, x, tile, tile)`` for ``y`` in ``grid[0]``
        and ``x`` in ``grid[1]`` (level-0 starts, multiples of ``reduce``; e.g. the positions
        of a :class:`~tilestream.GridSampler`, which is what :func:`~tilestream.predict_slide`
        declares). The canvas then holds the blended probabilities themselves (4 bytes per
        canvas pixel and channel, no weight canvas): each window is normalised by the total
        weight of the declared windows as it is added. A declared window that is never added
        counts as background (probability 0, full weight), so :meth:`probabilities` at any
        time is the blend with the missing windows predicted as 0. :meth:`add` accepts only
        declared windows, each once. RAM only (not with ``store``).
    store : path, optional
        A directory for a chunked zarr canvas on disk (for slides beyond RAM). A store made
        for another slide (other shape, reduce, channels or ``slide_id``) is refused unless
        ``resume=True`` and it matches.
    resume : bool
        Reopen an existing store and keep accumulating (matching parameters required);
        without it an existing store is an error.
    slide_id : str, optional
        Recorded in the store, checked on resume.
    chunk : int
        Side of the store's chunks (canvas pixels).
    dtype : {"float32", "float16", "float64"}
        The canvas's floating-point type (``np.dtype`` spellings). ``float16`` halves the
        canvas (in RAM or on disk) at a precision of a few 1e-3 on the probabilities (each
        addition rounds to 11 significant bits; sums and weights both, without a ``grid``):
        enough to threshold a mask, not to compare probabilities closely. Windows are
        converted to it as they are added.

    Notes
    -----
    Memory while adding: ``b * (channels + 1)`` bytes per canvas pixel in RAM (``b`` = 4 for
    float32), ``b * channels`` with a declared ``grid``, or the chunks under one window with a
    zarr store. Reading results (:meth:`probabilities`, :meth:`to_rle`, ...) without a declared
    grid loads the canvas: about ``b`` bytes per pixel more for probabilities, 1 for masks;
    with a grid, :meth:`probabilities` of the whole canvas is a read-only view (no copy) and
    masks take 1.
    Not thread-safe: add windows from one thread.

    Examples
    --------
    >>> import numpy as np, tilestream as ts
    >>> st = ts.Stitcher((8, 8), tile=4, blend="mean")
    >>> st.add(ts.Box(0, 0, 4, 4), np.ones((4, 4), np.float32))
    >>> st.add(ts.Box(0, 2, 4, 4), np.zeros((4, 4), np.float32))
    >>> st.probabilities()[0, :6]
    array([1. , 1. , 0.5, 0.5, 0. , 0. ], dtype=float32)

    With the windows declared, the canvas is normalised as windows arrive; the window at
    ``x=4`` is never added, so it counts as background:

    >>> st = ts.Stitcher((8, 8), tile=4, blend="mean", grid=([0, 4], [0, 2, 4]))
    >>> st.add(ts.Box(0, 0, 4, 4), np.ones((4, 4), np.float32))
    >>> st.add(ts.Box(0, 2, 4, 4), np.zeros((4, 4), np.float32))
    >>> st.probabilities()[0, :6]
    array([1. , 1. , 0.5, 0.5, 0. , 0. ], dtype=float32)
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        reduce: int = 1,
        tile: int,
        blend: Blend = "gaussian",
        overlap: int = 0,
        channels: int = 1,
        grid: tuple[Sequence[int], Sequence[int]] | None = None,
        store: str | os.PathLike[str] | None = None,
        resume: bool = False,
        slide_id: str | None = None,
        chunk: int = 1024,
        dtype: DTypeLike = np.float32,
    ) -> None:
        check_reduce_factor(reduce)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as err:
            raise StitchError(f"dtype must be float16, float32 or float64, got {dtype!r}") from err
        if self.dtype not in _CANVAS_DTYPES:
            raise StitchError(f"dtype must be float16, float32 or float64, got {self.dtype}")
        h, w = (int(v) for v in shape)
        if h <= 0 or w <= 0:
            raise StitchError(f"shape must be two positive integers, got {shape}")
        if tile <= 0 or tile % reduce:
            raise StitchError(f"tile must be a positive multiple of reduce={reduce}, got {tile}")
        if channels < 1:
            raise StitchError(f"channels must be >= 1, got {channels}")
        blend_window(2, 2, blend)  # validates the name
        self.shape = (h, w)
        self.reduce = reduce
        self.tile = tile
        self.blend: Blend = blend
        self.overlap = overlap
        self.channels = channels
        self.slide_id = slide_id
        self.canvas_shape = (-(-h // reduce), -(-w // reduce))
        self.store = None if store is None else Path(store)
        self.windows = 0
        self.grid: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        ch, cw = self.canvas_shape
        if grid is not None:
            if store is not None:
                raise StitchError(
                    "grid= keeps normalised probabilities in RAM; an on-disk store keeps sums "
                    "and weights (so that any run can add to it): pass one or the other"
                )
            self._declare_grid(grid)
            self._sums: Any = np.zeros((channels, ch, cw), self.dtype)
            self._weights: Any = None
        elif self.store is None:
            self._sums = np.zeros((channels, ch, cw), self.dtype)
            self._weights = np.zeros((ch, cw), self.dtype)
        else:
            self._open_store(resume, chunk)

    # -- a declared grid ----------------------------------------------------------------------

    def _declare_grid(self, grid: tuple[Sequence[int], Sequence[int]]) -> None:
        r, t = self.reduce, self.tile
        axes = []
        for name, starts, length in (
            ("rows", grid[0], self.shape[0]),
            ("cols", grid[1], self.shape[1]),
        ):
            values = tuple(int(v) for v in starts)
            if not values:
                raise StitchError(f"grid {name} must list at least one window start, got none")
            if list(values) != sorted(set(values)):
                raise StitchError(f"grid {name} must be increasing and unique, got {values}")
            bad = [v for v in values if v % r or v + t <= 0 or v >= length]
            if bad:
                raise StitchError(
                    f"grid {name} starts must be multiples of reduce={r} with the window "
                    f"[start, start + {t}) overlapping the slide (0, {length}), got {bad}"
                )
            axes.append(values)
        ys, xs = axes
        self.grid = (ys, xs)
        self._grid_index = ({y: i for i, y in enumerate(ys)}, {x: j for j, x in enumerate(xs)})
        self._added = np.zeros((len(ys), len(xs)), np.bool_)
        side = t // r
        self._grid_context = (
            [self._neighbours(ys, i) for i in range(len(ys))],
            [self._neighbours(xs, j) for j in range(len(xs))],
        )
        ch, cw = self.canvas_shape
        covered = []
        for starts, n in ((ys, ch), (xs, cw)):
            cov = np.zeros(n, np.bool_)
            for v in starts:
                cov[max(v // r, 0) : max(v // r + side, 0)] = True
            covered.append(cov)
        self._covered_rows, self._covered_cols = covered
        self._norms: OrderedDict[tuple[tuple[int, ...], tuple[int, ...]], NDArray[np.float32]]
        self._norms = OrderedDict()
        self._scratch = np.empty((self.channels, side, side), np.float32)

    def _neighbours(self, starts: tuple[int, ...], i: int) -> tuple[int, ...]:
        # Offsets (canvas px) of the windows along one axis that overlap window i, itself included.
        r, t = self.reduce, self.tile
        return tuple((v - starts[i]) // r for v in starts if abs(v - starts[i]) < t)

    def _norm(self, i: int, j: int) -> NDArray[np.float32]:
        """The blend window of grid window (i, j) divided by the total weight of every declared
        window under each of its pixels: what the window's probabilities are multiplied by."""
        key = (self._grid_context[0][i], self._grid_context[1][j])
        cached = self._norms.get(key)
        if cached is not None:
            self._norms.move_to_end(key)
            return cached
        side = self.tile // self.reduce
        window = blend_window(side, side, self.blend, self.overlap // (2 * self.reduce))
        total = window.copy()  # float32, like the weights canvas of the general stitcher
        for dy in key[0]:
            y0, y1 = max(dy, 0), min(dy + side, side)
            for dx in key[1]:
                if dy == 0 and dx == 0:
                    continue
                x0, x1 = max(dx, 0), min(dx + side, side)
                total[y0:y1, x0:x1] += window[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
        norm: NDArray[np.float32] = np.divide(window, total, out=total)
        self._norms[key] = norm
        if len(self._norms) > 4:  # row-major adds meet ~4 x-contexts per row of windows
            self._norms.popitem(last=False)
        return norm

    # -- the on-disk canvas -----------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "reduce": self.reduce,
            "channels": self.channels,
            "slide_id": self.slide_id,
            "tile": self.tile,
            "blend": self.blend,
            "dtype": self.dtype.name,
        }

    def _open_store(self, resume: bool, chunk: int) -> None:
        import zarr

        assert self.store is not None
        ch, cw = self.canvas_shape
        if self.store.exists():
            try:
                group = zarr.open_group(str(self.store), mode="r+")
                meta: dict[str, Any] = dict(group.attrs.get("tilestream", {}))  # type: ignore[arg-type]
            except Exception as err:
                raise StitchError(
                    f"{self.store}: exists and is not a tilestream canvas ({err})"
                ) from err
            wanted = self._meta()
            if not resume:
                raise StitchError(
                    f"{self.store}: a canvas already exists (slide {meta.get('slide_id')!r}, "
                    f"shape {meta.get('shape')}); pass resume=True to keep adding to it, or "
                    "remove it"
                )
            meta.setdefault("dtype", "float32")  # stores written before the dtype option
            if any(
                meta.get(k) != wanted[k]
                for k in ("shape", "reduce", "channels", "slide_id", "dtype")
            ):
                raise StitchError(
                    f"{self.store}: the canvas belongs to slide {meta.get('slide_id')!r} with "
                    f"shape {meta.get('shape')}, reduce {meta.get('reduce')}, channels "
                    f"{meta.get('channels')}, dtype {meta.get('dtype')}; expected {wanted}"
                )
            self._sums = group["sums"]
            self._weights = group["weights"]
            self.windows = int(meta.get("windows", 0))
            return
        group = zarr.open_group(str(self.store), mode="w")
        c = max(16, min(chunk, max(ch, cw)))
        self._sums = group.create_array(
            "sums",
            shape=(self.channels, ch, cw),
            chunks=(self.channels, c, c),
            dtype=self.dtype.name,
            fill_value=0.0,
        )
        self._weights = group.create_array(
            "weights", shape=(ch, cw), chunks=(c, c), dtype=self.dtype.name, fill_value=0.0
        )
        group.attrs["tilestream"] = {**self._meta(), "windows": 0}

    def flush(self) -> None:
        """Record the window count in the store's metadata (no-op in RAM)."""
        if self.store is not None:
            import zarr

            group = zarr.open_group(str(self.store), mode="r+")
            group.attrs["tilestream"] = {**self._meta(), "windows": self.windows}

    def delete(self) -> None:
        """Remove the on-disk store (no-op in RAM)."""
        if self.store is not None and self.store.exists():
            shutil.rmtree(self.store)

    # -- accumulation ---------------------------------------------------------------------

    def add(self, box: Box, probs: NDArray[Any]) -> None:
        """Blend the prediction of one window into the canvas.

        Parameters
        ----------
        box : Box
            The window in level-0 pixels, aligned to ``reduce``. It may extend past the slide
            (edge windows): the part outside is dropped. Wholly outside is an error. With a
            declared ``grid``, one of its windows not added before.
        probs : (h, w) or (C, h, w) float array
            Predictions at the reduced scale, ``h = box.height // reduce``; no NaN.

        Raises
        ------
        StitchError
            Box outside the slide (or not a declared window, or one added twice), wrong shape
            or dtype, NaN values.
        """
        box.check_reduce(self.reduce)
        a = np.asarray(probs)
        if a.ndim == 2:
            a = a[None]
        self._check_probs(box, a.shape, a.dtype, tuple(np.shape(probs)))
        if not np.isfinite(a).all():
            raise StitchError(
                f"probabilities for {box} contain NaN or infinite values; check the model's output"
            )
        self._blend(box, a)

    def add_batch(self, boxes: Sequence[Box], probs: NDArray[Any]) -> None:
        """Blend a batch of windows: the same as ``add(box, probs[i])`` for each box in turn,
        with the checks done once for the batch (the model's output as it comes).

        Parameters
        ----------
        boxes : sequence of Box
            The windows, all of one size (see :meth:`add`).
        probs : (B, h, w) or (B, C, h, w) float array
            ``B = len(boxes)``.

        Raises
        ------
        StitchError
            As :meth:`add`. The windows before a box outside the slide (or not of the declared
            grid) are blended already; shape, dtype and NaN are checked before any is.
        """
        if not boxes:
            return
        for box in boxes:
            box.check_reduce(self.reduce)
        a = np.asarray(probs)
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or a.shape[0] != len(boxes):
            raise StitchError(
                f"probabilities for {len(boxes)} windows must have shape (batch, channels, h, "
                f"w) with batch {len(boxes)}, got {tuple(np.shape(probs))}"
            )
        first = boxes[0]
        if any(box.height != first.height or box.width != first.width for box in boxes):
            raise StitchError("the windows of a batch must have one size; add them one by one")
        self._check_probs(first, a.shape[1:], a.dtype, tuple(np.shape(probs)))
        if not np.isfinite(a).all():
            bad = next(i for i in range(len(a)) if not np.isfinite(a[i]).all())
            raise StitchError(
                f"probabilities for {boxes[bad]} (window {bad} of the batch) contain NaN or "
                "infinite values; check the model's output"
            )
        for box, p in zip(boxes, a, strict=True):
            self._blend(box, p)

    def _check_probs(
        self, box: Box, shape: tuple[int, ...], dtype: np.dtype[Any], given: tuple[int, ...]
    ) -> None:
        r = self.reduce
        h, w = box.height // r, box.width // r
        if shape != (self.channels, h, w):
            expected = (h, w) if self.channels == 1 else (self.channels, h, w)
            raise StitchError(
                f"probabilities for {box} must have shape {expected} (or {(self.channels, h, w)}) "
                f"at reduce {r}, got {given}"
            )
        if dtype.kind != "f":
            raise StitchError(f"probabilities must be floating point, got dtype {dtype}")

    def _blend(self, box: Box, a: NDArray[Any]) -> None:
        """Blend ``a`` ``(C, h, w)`` (checked) at ``box`` (aligned to ``reduce``)."""
        r = self.reduce
        h, w = box.height // r, box.width // r
        ch, cw = self.canvas_shape
        cy, cx = box.y // r, box.x // r
        y0, x0 = max(cy, 0), max(cx, 0)
        y1, x1 = min(cy + h, ch), min(cx + w, cw)
        if y0 >= y1 or x0 >= x1:
            raise StitchError(f"{box} lies wholly outside the slide of shape {self.shape}")
        py, px, hh, ww = y0 - cy, x0 - cx, y1 - y0, x1 - x0
        part = a[:, py : py + hh, px : px + ww]
        if self.grid is not None:
            # normalised already: the canvas is the blend (see `grid`)
            cell = self._grid_cell(box)
            norm = self._norm(*cell)[py : py + hh, px : px + ww]
            region = self._sums[:, y0:y1, x0:x1]
            torch = _loaded_torch()
            if torch is not None and part.dtype == np.float32 and _torch_can_wrap(part):
                # one fused pass (region += part * norm), no scratch: torch's vectorised CPU
                # kernel; torch is imported by whoever made the predictions, never here
                torch.from_numpy(region).addcmul_(torch.from_numpy(part), torch.from_numpy(norm))
            else:
                tmp = self._scratch[:, :hh, :ww]
                np.multiply(part, norm, out=tmp)
                np.add(region, tmp, out=region)
            self._added[cell] = True
        else:
            window = blend_window(h, w, self.blend, self.overlap // (2 * r))[
                py : py + hh, px : px + ww
            ]
            weighted = part * window
            if self.store is None:
                region = self._sums[:, y0:y1, x0:x1]
                np.add(region, weighted, out=region)
                weights = self._weights[y0:y1, x0:x1]
                np.add(weights, window, out=weights)
            else:
                self._sums[:, y0:y1, x0:x1] = np.asarray(self._sums[:, y0:y1, x0:x1]) + weighted
                self._weights[y0:y1, x0:x1] = np.asarray(self._weights[y0:y1, x0:x1]) + window
        self.windows += 1

    def _grid_cell(self, box: Box) -> tuple[int, int]:
        i = self._grid_index[0].get(box.y)
        j = self._grid_index[1].get(box.x)
        if i is None or j is None or box.height != self.tile or box.width != self.tile:
            raise StitchError(
                f"{box} is not a window of the declared grid (tile {self.tile}, starts "
                f"y in {_short(self.grid[0] if self.grid else ())}, x in "
                f"{_short(self.grid[1] if self.grid else ())})"
            )
        if self._added[i, j]:
            raise StitchError(
                f"{box} was already added: with a declared grid each window is added once"
            )
        return i, j

    # -- results --------------------------------------------------------------------------

    def _canvas_box(self, box: Box | None) -> tuple[int, int, int, int]:
        if box is None:
            return 0, 0, *self.canvas_shape
        box.check_reduce(self.reduce)
        r = self.reduce
        return box.y // r, box.x // r, box.height // r, box.width // r

    def probabilities(self, box: Box | None = None) -> NDArray[np.floating[Any]]:
        """Blended predictions, ``(h, w)`` (or ``(C, h, w)`` for several channels), of the
        canvas's ``dtype`` (float32 by default).

        ``box`` (level-0, aligned to ``reduce``) selects a region; by default the whole canvas.
        Pixels no window covered (e.g. skipped background) are 0; outside the slide is 0.
        With a declared ``grid`` the whole canvas comes back as a read-only view of the canvas
        (no copy: it follows later adds; ``.copy()`` it to keep or modify it), a ``box`` as a
        new array.
        """
        if self.grid is not None and box is None:
            view: NDArray[np.floating[Any]] = self._sums[0] if self.channels == 1 else self._sums[:]
            view = view.view()
            view.setflags(write=False)
            return view
        y, x, h, w = self._canvas_box(box)
        out = np.zeros((self.channels, h, w), self.dtype)
        ch, cw = self.canvas_shape
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, ch), min(x + w, cw)
        if y1 > y0 and x1 > x0:
            region = out[:, y0 - y : y1 - y, x0 - x : x1 - x]
            sums = np.asarray(self._sums[:, y0:y1, x0:x1])
            if self.grid is not None:
                region[...] = sums
            else:
                weights = np.asarray(self._weights[y0:y1, x0:x1])
                np.divide(sums, weights[None], out=region, where=weights[None] > 0)
        return out[0] if self.channels == 1 else out

    def coverage(self) -> NDArray[np.bool_]:
        """Canvas pixels that at least one window covered (with a declared ``grid``: the union
        of the declared windows, added or not)."""
        if self.grid is not None:
            grid_covered: NDArray[np.bool_] = np.logical_and.outer(
                self._covered_rows, self._covered_cols
            )
            return grid_covered
        covered: NDArray[np.bool_] = np.asarray(self._weights[:]) > 0
        return covered

    def mask(self, threshold: float = 0.5, *, channel: int = 0) -> NDArray[np.uint8]:
        """The thresholded canvas (``p >= threshold``), ``(h, w)`` uint8 at reduced scale.

        Computed band by band (``sums >= threshold * weights`` where covered), so no
        full-size float copy of the canvas is made. Uncovered pixels are 0.
        """
        ch, cw = self.canvas_shape
        out = np.zeros((ch, cw), np.uint8)
        band = max(1, (16 << 20) // max(1, 4 * cw))
        for y in range(0, ch, band):
            dst = out[y : y + band].view(np.bool_)
            if self.grid is not None:
                np.greater_equal(self._sums[channel, y : y + band], threshold, out=dst)
                continue
            sums = np.asarray(self._sums[channel, y : y + band])
            weights = np.asarray(self._weights[y : y + band])
            np.greater_equal(sums, threshold * weights, out=dst)
            out[y : y + band][weights <= 0] = 0
        if self.grid is not None and threshold <= 0:
            out[~self._covered_rows] = 0
            out[:, ~self._covered_cols] = 0
        return out

    def to_rle(self, threshold: float = 0.5, order: Order = "F", *, channel: int = 0) -> str:
        """RLE of the thresholded prediction at level 0 (slide shape), 1-based.

        Equal to thresholding, upsampling each canvas pixel to its ``reduce x reduce`` block
        (cropped to the slide) and encoding that full-resolution mask, but computed from the
        canvas's runs: peak memory is the canvas mask plus the runs.
        """
        return runs_to_rle(*self.runs(threshold, order, channel=channel))

    def runs(
        self, threshold: float = 0.5, order: Order = "F", *, channel: int = 0
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The runs of :meth:`to_rle` as ``(starts, lengths)`` int64 arrays (1-based starts,
        as :func:`~tilestream.rle_to_runs` parses them), without the text."""
        if order not in ("F", "C"):
            raise ValueError(f'order must be "F" or "C", got {order!r}')
        mask = self.mask(threshold, channel=channel)
        h, w = self.shape
        if order == "F":  # columns are the lines: W lines of H pixels
            offsets, run_starts, run_ends = _column_runs(mask)
            starts, lengths = _scale_runs(offsets, run_starts, run_ends, self.reduce, w, h)
        else:  # rows are the lines: H lines of W pixels
            rows, run_starts, run_ends = row_runs(mask)
            offsets = np.searchsorted(rows, np.arange(mask.shape[0] + 1)).astype(np.int64)
            starts, lengths = _scale_runs(offsets, run_starts, run_ends, self.reduce, h, w)
        starts += 1
        return starts, lengths

    def to_geojson(
        self,
        path: str | os.PathLike[str],
        threshold: float = 0.5,
        *,
        channel: int = 0,
        name: str = "glomerulus",
    ) -> int:
        """Write the predicted objects as QuPath-importable polygons; return how many.

        Contours are traced on the canvas mask with OpenCV (``pip install
        opencv-python-headless``) and scaled to level-0 ``(x, y)`` pixel coordinates.
        """
        try:
            import cv2
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "Stitcher.to_geojson traces contours with OpenCV: pip install "
                "opencv-python-headless"
            ) from err
        import shapely

        from .annotations import PolygonMask

        mask = self.mask(threshold, channel=channel)
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        r = self.reduce
        polygons = []
        if hierarchy is not None:
            hier = hierarchy[0]
            for i, contour in enumerate(contours):
                if hier[i][3] != -1 or len(contour) < 3:
                    continue  # holes are attached to their outer ring below
                shell = (contour[:, 0, :].astype(np.float64) + 0.5) * r
                holes = []
                child = hier[i][2]
                while child != -1:
                    if len(contours[child]) >= 3:
                        holes.append((contours[child][:, 0, :].astype(np.float64) + 0.5) * r)
                    child = hier[child][0]
                poly = shapely.make_valid(shapely.Polygon(shell, holes))
                if not poly.is_empty and poly.area > 0:
                    polygons.append(poly)
        PolygonMask(polygons, self.shape, classes=[name] * len(polygons)).to_geojson(path)
        return len(polygons)

    def as_mask_source(self, threshold: float = 0.5, *, channel: int = 0) -> StitchedMask:
        """The thresholded prediction as a :class:`~tilestream.MaskSource` at level 0."""
        return StitchedMask(self.mask(threshold, channel=channel), self.reduce, self.shape)

    def __repr__(self) -> str:
        where = "RAM" if self.store is None else str(self.store)
        if self.grid is not None:
            where += f", grid {len(self.grid[0])}x{len(self.grid[1])}"
        return (
            f"Stitcher(shape={self.shape}, reduce={self.reduce}, tile={self.tile}, "
            f"blend={self.blend!r}, windows={self.windows}, canvas={where})"
        )


_CANVAS_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _loaded_torch() -> Any:
    """torch when this process has already imported it (``predict_slide`` has), else None."""
    return sys.modules.get("torch")


def _torch_can_wrap(a: NDArray[Any]) -> bool:
    """``torch.from_numpy`` takes ``a`` without a copy or a warning: writeable, aligned, native
    byte order, no negative strides."""
    return (
        a.flags.writeable
        and a.flags.aligned
        and a.dtype.isnative
        and all(s >= 0 for s in a.strides)
    )


def _short(values: Sequence[int]) -> str:
    shown = ", ".join(str(v) for v in values[:6])
    return f"[{shown}{', ...' if len(values) > 6 else ''}]"


class StitchedMask:
    """A reduced-scale binary mask read at level 0 (each pixel a ``reduce x reduce`` block).

    Returned by :meth:`Stitcher.as_mask_source`; a :class:`~tilestream.MaskSource`.
    """

    def __init__(self, mask: NDArray[np.uint8], reduce: int, shape: tuple[int, int]) -> None:
        self.canvas = mask
        self.reduce = reduce
        self._shape = shape

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the slide at level 0."""
        return self._shape

    def read(
        self, box: Box, reduce: int = 1, *, out: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """The mask of ``box`` at ``1/reduce`` (block majority of the upsampled canvas)."""
        box.check_reduce(reduce)
        h, w = self._shape
        r = self.reduce
        rows = np.arange(box.y, box.bottom)
        cols = np.arange(box.x, box.right)
        full = self.canvas[
            np.clip(rows, 0, h - 1)[:, None] // r, np.clip(cols, 0, w - 1)[None, :] // r
        ]
        full[(rows < 0) | (rows >= h)] = 0
        full[:, (cols < 0) | (cols >= w)] = 0
        if out is None:
            return block_majority(full, reduce)
        return block_majority(full, reduce, out=out)

    def objects(self) -> Any:
        """Connected components of the predicted mask, in level-0 pixels."""
        from .annotations import ArrayMask

        objects = ArrayMask(self.canvas).objects()
        r = self.reduce
        return type(objects)(
            objects.bboxes * r, (objects.centroids + 0.5) * r - 0.5, objects.classes
        )
