"""Slide-level Dice of two masks at level 0, streamed: run against run for RLE masks and
stitchers, window by window for other mask sources. No full-resolution mask, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._jit import njit
from .annotations import MaskSource, RleMask
from .geometry import Box
from .rle import Order
from .stitch import Stitcher

__all__ = ["DiceScore", "dice", "dice_report"]


@dataclass(frozen=True)
class DiceScore:
    """Pixel counts of a prediction against the truth at level 0, and their Dice."""

    intersection: int
    pred_area: int
    truth_area: int

    @property
    def dice(self) -> float:
        """``2 |P and T| / (|P| + |T|)``; 1.0 when both masks are empty (Kaggle's rule)."""
        total = self.pred_area + self.truth_area
        return 1.0 if total == 0 else 2.0 * self.intersection / total


@njit
def _runs_overlap(
    s1: NDArray[np.int64], l1: NDArray[np.int64], s2: NDArray[np.int64], l2: NDArray[np.int64]
) -> int:
    total = 0
    i = 0
    j = 0
    while i < s1.size and j < s2.size:
        a0, a1 = s1[i], s1[i] + l1[i]
        b0, b1 = s2[j], s2[j] + l2[j]
        lo = max(a0, b0)
        hi = min(a1, b1)
        if hi > lo:
            total += hi - lo
        if a1 < b1:
            i += 1
        else:
            j += 1
    return total


def _runs(
    source: Any, order: Order, threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    if isinstance(source, RleMask) and source.order == order:
        return source.starts, source.lengths
    if isinstance(source, Stitcher):
        return source.runs(threshold, order)
    return None


def dice(
    pred: MaskSource | Stitcher,
    truth: MaskSource | Stitcher,
    *,
    window: int = 4096,
    threshold: float = 0.5,
) -> DiceScore:
    """Slide-level Dice of two masks at level 0, streamed (no full-resolution mask).

    RLE masks and stitchers are compared run against run in O(runs); other sources
    (polygons, arrays) window by window (``window`` x ``window`` level-0 pixels at a time).
    A :class:`Stitcher` is thresholded at ``threshold``.

    Examples
    --------
    >>> import numpy as np, tilestream as ts
    >>> a = ts.RleMask("1 4", (4, 4)); b = ts.ArrayMask(np.eye(4, dtype=np.uint8))
    >>> score = dice(a, b)
    >>> score.intersection, score.pred_area, score.truth_area, round(score.dice, 3)
    (1, 4, 4, 0.25)
    """
    if tuple(pred.shape) != tuple(truth.shape):
        raise ValueError(f"masks differ in shape: {tuple(pred.shape)} vs {tuple(truth.shape)}")
    orders: tuple[Order, ...] = ("F", "C")
    for order in orders:
        a, b = _runs(pred, order, threshold), _runs(truth, order, threshold)
        if a is not None and b is not None:
            return DiceScore(
                int(_runs_overlap(a[0], a[1], b[0], b[1])), int(a[1].sum()), int(b[1].sum())
            )
    p = pred.as_mask_source(threshold) if isinstance(pred, Stitcher) else pred
    t = truth.as_mask_source(threshold) if isinstance(truth, Stitcher) else truth
    h, w = pred.shape
    inter = pa = ta = 0
    for y in range(0, h, window):
        for x in range(0, w, window):
            box = Box(y, x, min(window, h - y), min(window, w - x))
            mp = p.read(box) > 0
            mt = t.read(box) > 0
            inter += int(np.count_nonzero(mp & mt))
            pa += int(np.count_nonzero(mp))
            ta += int(np.count_nonzero(mt))
    return DiceScore(inter, pa, ta)


def dice_report(
    pairs: Mapping[str, tuple[MaskSource | Stitcher, MaskSource | Stitcher]],
) -> list[dict[str, Any]]:
    """Per-slide Dice rows (``slide``, ``dice``, ``intersection``, ``pred_area``,
    ``truth_area``) followed by a ``mean`` row (the mean of the slide Dice scores)."""
    rows: list[dict[str, Any]] = []
    for slide_id, (pred, truth) in pairs.items():
        score = dice(pred, truth)
        rows.append(
            {
                "slide": slide_id,
                "dice": score.dice,
                "intersection": score.intersection,
                "pred_area": score.pred_area,
                "truth_area": score.truth_area,
            }
        )
    if rows:
        rows.append({"slide": "mean", "dice": float(np.mean([r["dice"] for r in rows]))})
    return rows
