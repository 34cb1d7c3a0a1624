"""Area-average downsampling of (H, W, C) uint8 images by an integer factor (numba kernel)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ._jit import njit

__all__ = ["area_downsample", "block_majority"]


@njit
def _area_mean_u8(src: NDArray[np.uint8], factor: int, out: NDArray[np.uint8]) -> None:
    # src (h*f, w*f, c) uint8 -> out (h, w, c): round-half-up mean of each f x f block.
    h, w, c = out.shape
    area = factor * factor
    half = area // 2
    acc = np.zeros((w, c), dtype=np.uint32)
    for i in range(h):
        acc[:, :] = 0
        for di in range(factor):
            row = src[i * factor + di]
            for j in range(w):
                base = j * factor
                for dj in range(factor):
                    for k in range(c):
                        acc[j, k] += row[base + dj, k]
        for j in range(w):
            for k in range(c):
                out[i, j, k] = (acc[j, k] + half) // area


def area_downsample(
    image: NDArray[np.uint8], factor: int, out: NDArray[np.uint8] | None = None
) -> NDArray[np.uint8]:
    """Average ``factor x factor`` blocks of an ``(H, W, C)`` uint8 image.

    Parameters
    ----------
    image : (H, W, C) uint8 array
        H and W must be multiples of ``factor``.
    factor : int
        Block size, >= 1. ``1`` returns ``image`` unchanged (no copy).
    out : (H/factor, W/factor, C) uint8 array, optional
        Written in full when given.

    Returns
    -------
    (H/factor, W/factor, C) uint8 array
        Each pixel is the mean of its block, rounded half up.
    """
    if factor == 1:
        if out is None:
            return image
        out[...] = image
        return out
    h, w, c = image.shape
    if h % factor or w % factor:
        raise ValueError(f"image shape {image.shape[:2]} is not a multiple of factor {factor}")
    if out is None:
        out = np.empty((h // factor, w // factor, c), dtype=np.uint8)
    _area_mean_u8(np.ascontiguousarray(image), factor, out)
    return out


@njit
def _block_majority_u8(src: NDArray[np.uint8], factor: int, out: NDArray[np.uint8]) -> None:
    # out[i, j] = the most frequent non-zero value of the block when at least half the block
    # is non-zero (ties: the smaller value), else 0.
    h, w = out.shape
    area = factor * factor
    counts = np.zeros(256, np.int64)
    for i in range(h):
        for j in range(w):
            nonzero = 0
            for di in range(factor):
                row = src[i * factor + di]
                for dj in range(factor):
                    v = row[j * factor + dj]
                    if v != 0:
                        counts[v] += 1
                        nonzero += 1
            best = 0
            if 2 * nonzero >= area:
                best_count = 0
                for v in range(1, 256):
                    if counts[v] > best_count:
                        best_count = counts[v]
                        best = v
            if nonzero:
                for di in range(factor):
                    row = src[i * factor + di]
                    for dj in range(factor):
                        counts[row[j * factor + dj]] = 0
            out[i, j] = best


def block_majority(
    mask: NDArray[np.uint8], factor: int, out: NDArray[np.uint8] | None = None
) -> NDArray[np.uint8]:
    """Reduce an ``(H, W)`` label mask by ``factor`` with the block-majority rule.

    A reduced pixel is non-zero when at least half of its ``factor x factor`` block is; it then
    takes the block's most frequent non-zero value (the smaller one on ties). For a binary
    mask: positive when at least half of the block is positive.
    """
    if factor == 1:
        if out is None:
            return mask
        out[...] = mask
        return out
    h, w = mask.shape
    if h % factor or w % factor:
        raise ValueError(f"mask shape {mask.shape} is not a multiple of factor {factor}")
    if out is None:
        out = np.empty((h // factor, w // factor), dtype=np.uint8)
    _block_majority_u8(np.ascontiguousarray(mask, np.uint8), factor, out)
    return out
