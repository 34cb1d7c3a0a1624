"""Slow, obvious reference implementations the kernels and readers are compared with."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def area_mean(image: NDArray[np.uint8], factor: int) -> NDArray[np.uint8]:
    """Mean of each factor x factor block, rounded half up, by plain Python loops."""
    h, w, c = image.shape
    out = np.zeros((h // factor, w // factor, c), np.uint8)
    area = factor * factor
    for i in range(h // factor):
        for j in range(w // factor):
            for k in range(c):
                block = image[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor, k]
                total = int(block.astype(np.int64).sum())
                out[i, j, k] = (total + area // 2) // area
    return out


def padded_crop(
    image: NDArray[np.uint8], y: int, x: int, h: int, w: int, fill: int = 255
) -> NDArray[np.uint8]:
    """``image[y:y+h, x:x+w]`` with everything outside the image set to ``fill``."""
    out = np.full((h, w, image.shape[2]), fill, np.uint8)
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + h, image.shape[0]), min(x + w, image.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = image[y0:y1, x0:x1]
    return out


def to_uint8(values: NDArray[np.generic], bits: int | None = None) -> NDArray[np.uint8]:
    """The documented sample conversion, written out element-wise in float64."""
    a = np.asarray(values)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype.kind == "f":
        return np.rint(np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1) * 255).astype(np.uint8)
    nbits = bits if bits is not None else a.dtype.itemsize * 8
    v = a.astype(np.float64)
    if a.dtype.kind == "i":
        v = v + 2 ** (nbits - 1)
    return np.rint(np.clip(v * 255.0 / (2**nbits - 1), 0, 255)).astype(np.uint8)
