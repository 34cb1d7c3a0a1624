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


def components_naive(mask: NDArray[np.uint8]) -> set[tuple[int, int, int, int, int]]:
    """8-connected components by flood fill: {(y, x, height, width, area)}."""
    h, w = mask.shape
    seen = np.zeros((h, w), bool)
    out = set()
    for i in range(h):
        for j in range(w):
            if not mask[i, j] or seen[i, j]:
                continue
            stack = [(i, j)]
            seen[i, j] = True
            pixels = []
            while stack:
                y, x = stack.pop()
                pixels.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            stack.append((yy, xx))
            ys = [p[0] for p in pixels]
            xs = [p[1] for p in pixels]
            out.add((min(ys), min(xs), max(ys) - min(ys) + 1, max(xs) - min(xs) + 1, len(pixels)))
    return out


def block_majority_naive(mask: NDArray[np.uint8], factor: int) -> NDArray[np.uint8]:
    """Per block: the most frequent non-zero value if at least half the block is non-zero."""
    h, w = mask.shape[0] // factor, mask.shape[1] // factor
    out = np.zeros((h, w), np.uint8)
    for i in range(h):
        for j in range(w):
            block = mask[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor].ravel()
            nonzero = block[block != 0]
            if 2 * nonzero.size >= block.size and nonzero.size:
                values, counts = np.unique(nonzero, return_counts=True)
                out[i, j] = values[np.argmax(counts)]
    return out


def padded_mask_crop(mask: NDArray[np.uint8], box: object) -> NDArray[np.uint8]:
    """The (H, W) mask under a Box, 0 outside the mask."""
    y, x, h, w = box.y, box.x, box.height, box.width  # type: ignore[attr-defined]
    return padded_crop(mask[..., None], y, x, h, w, fill=0)[..., 0]
