"""Area-average downsampling of (H, W, C) uint8 images by an integer factor (numba kernel)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ._jit import njit

__all__ = ["area_downsample"]


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
