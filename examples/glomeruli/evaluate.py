"""Stitched validation: predict whole validation slides, score them with slide-level Dice, and
search the probability threshold on the out-of-fold predictions.

Each validation slide is predicted window by window with :func:`tilestream.predict_slide` and
summarised by two histograms over probability bins: the level-0 area each canvas pixel adds to
the prediction, and the part of it that is truth. From those the exact level-0 Dice (the
Kaggle metric, per slide; what :func:`tilestream.dice` gives, tested) at every threshold on
the grid :data:`THRESHOLDS` is a cumulative sum: the slide's score at 0.5 and the threshold
search need no second pass over the slide or its labels, and the out-of-fold files stay a few
kilobytes per slide.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import tilestream as ts

__all__ = [
    "THRESHOLDS",
    "SlideResult",
    "TruthBlocks",
    "best_threshold",
    "dice_curve",
    "predict_and_score",
    "tile_loss",
    "truth_blocks",
]

#: Thresholds searched (float32, as the stitcher compares float32 probabilities).
THRESHOLDS = (np.arange(1, 100) / 100).astype(np.float32)
_HALF = int(np.flatnonzero(THRESHOLDS == 0.5)[0])  # the index of threshold 0.5
#: Longest side of the overlay thumbnails, in pixels.
OVERLAY_PX = 1024


@dataclass(frozen=True)
class TruthBlocks:
    """The truth counted per canvas pixel: ``counts[i, j]`` positive level-0 pixels in the
    ``reduce x reduce`` block (cropped to the slide), whose area is ``sizes[i, j]``."""

    counts: NDArray[np.int32]
    sizes: NDArray[np.int32]
    reduce: int

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def truth_blocks(
    mask: ts.MaskSource, shape: tuple[int, int], reduce: int, band: int = 2048
) -> TruthBlocks:
    """Count ``mask`` per ``reduce`` block, reading ``band`` level-0 rows at a time."""
    h, w = shape
    ch, cw = -(-h // reduce), -(-w // reduce)
    band = max(reduce, band // reduce * reduce)
    counts = np.zeros((ch, cw), np.int32)
    for y in range(0, h, band):
        rows = min(band, h - y)
        strip = mask.read(ts.Box(y, 0, rows, w)) > 0
        padded = np.zeros((-(-rows // reduce) * reduce, cw * reduce), np.int32)
        padded[:rows, :w] = strip
        blocks = padded.reshape(padded.shape[0] // reduce, reduce, cw, reduce).sum(axis=(1, 3))
        counts[y // reduce : y // reduce + blocks.shape[0]] = blocks
    row_sizes = np.minimum(reduce, h - np.arange(ch) * reduce)
    col_sizes = np.minimum(reduce, w - np.arange(cw) * reduce)
    sizes = np.outer(row_sizes, col_sizes).astype(np.int32)
    return TruthBlocks(counts, sizes, reduce)


def histograms(
    probs: NDArray[np.float32], truth: TruthBlocks
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(intersection, predicted)`` level-0 areas per probability bin.

    Bin ``b`` holds canvas pixels with exactly ``b`` thresholds ``<= p``, so the prediction at
    ``THRESHOLDS[k]`` is bins ``k + 1`` and up.
    """
    bins = np.searchsorted(THRESHOLDS, probs.astype(np.float32, copy=False), side="right").ravel()
    n = len(THRESHOLDS) + 1
    inter = np.bincount(bins, weights=truth.counts.ravel(), minlength=n)
    pred = np.bincount(bins, weights=truth.sizes.ravel(), minlength=n)
    return inter.astype(np.float64), pred.astype(np.float64)


def dice_curve(
    inter: NDArray[np.float64], pred: NDArray[np.float64], truth: float
) -> NDArray[np.float64]:
    """Level-0 Dice at each of :data:`THRESHOLDS` from a slide's histograms (1 when both empty)."""
    i = np.cumsum(inter[::-1])[::-1][1:]
    p = np.cumsum(pred[::-1])[::-1][1:]
    total = p + truth
    return np.where(total > 0, 2 * i / np.maximum(total, 1), 1.0)


def best_threshold(curves: Sequence[NDArray[np.float64]]) -> tuple[float, float]:
    """The threshold maximising the mean per-slide Dice, and that mean (ties: nearest 0.5)."""
    mean = np.mean(np.stack(curves), axis=0)
    best = mean.max()
    candidates = np.flatnonzero(mean >= best - 1e-12)
    k = candidates[np.argmin(np.abs(THRESHOLDS[candidates] - 0.5))]
    return round(float(THRESHOLDS[k]), 2), float(mean[k])


@dataclass
class SlideResult:
    """One validation slide scored: Dice at 0.5, histograms, overlay thumbnails."""

    slide: str
    dice: float
    inter: NDArray[np.float64]
    pred: NDArray[np.float64]
    truth: int
    probs_thumb: NDArray[np.uint8]
    truth_thumb: NDArray[np.uint8]
    thumb_reduce: int

    def curve(self) -> NDArray[np.float64]:
        return dice_curve(self.inter, self.pred, self.truth)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` (atomically: temp file, then rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez_compressed(
            tmp,
            slide=self.slide,
            dice=self.dice,
            inter=self.inter,
            pred=self.pred,
            truth=self.truth,
            probs_thumb=self.probs_thumb,
            truth_thumb=self.truth_thumb,
            thumb_reduce=self.thumb_reduce,
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SlideResult:
        with np.load(path) as z:
            return cls(
                slide=str(z["slide"]),
                dice=float(z["dice"]),
                inter=z["inter"],
                pred=z["pred"],
                truth=int(z["truth"]),
                probs_thumb=z["probs_thumb"],
                truth_thumb=z["truth_thumb"],
                thumb_reduce=int(z["thumb_reduce"]),
            )


def _block_mean(a: NDArray[Any], k: int) -> NDArray[np.float32]:
    h, w = a.shape
    ph, pw = -(-h // k) * k, -(-w // k) * k
    padded = np.zeros((ph, pw), np.float32)
    padded[:h, :w] = a
    out: NDArray[np.float32] = padded.reshape(ph // k, k, pw // k, k).mean(axis=(1, 3))
    return out


def predict_and_score(
    model: Callable[[torch.Tensor], torch.Tensor],
    record: ts.hubmap.SlideRecord,
    *,
    tile: int,
    overlap: int,
    reduce: int,
    batch_size: int,
    device: torch.device,
    amp: bool,
    truth: TruthBlocks,
    num_workers: int = 0,
) -> SlideResult:
    """Predict ``record`` whole with :func:`tilestream.predict_slide` and score it."""
    if record.mask is None:
        raise ValueError(f"slide {record.id} has no labels to validate against")
    stitcher = ts.predict_slide(
        model,
        record.image,
        tile=tile,
        overlap=overlap,
        reduce=reduce,
        batch_size=batch_size,
        device=device,
        amp=amp,
        progress=False,
        num_workers=num_workers,
        slide_id=record.id,
    )
    probs = stitcher.probabilities()
    inter, pred = histograms(probs, truth)
    k = max(1, math.ceil(max(probs.shape) / OVERLAY_PX))
    probs_thumb = np.round(_block_mean(probs, k) * 255).astype(np.uint8)
    fraction = truth.counts / np.maximum(truth.sizes, 1)
    truth_thumb = np.round(_block_mean(fraction, k) * 255).astype(np.uint8)
    return SlideResult(
        slide=record.id,
        dice=float(dice_curve(inter, pred, truth.total)[_HALF]),
        inter=inter,
        pred=pred,
        truth=truth.total,
        probs_thumb=probs_thumb,
        truth_thumb=truth_thumb,
        thumb_reduce=reduce * k,
    )


def tile_loss(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    criterion: torch.nn.Module,
    device: torch.device,
) -> float:
    """Mean loss over fixed validation tiles (eval mode, no augmentation)."""
    model.eval()
    total, n = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            x = batch["image"].to(device).float().div_(255)
            y = batch["mask"].to(device).float()
            total += float(criterion(model(x), y)) * len(x)
            n += len(x)
    return total / max(n, 1)
