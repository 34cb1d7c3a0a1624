"""Slow, obvious RLE references (flat pixel indices, plain Python loops) for the kernel tests."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def flat_pixels(mask: NDArray[np.generic], order: str) -> list[int]:
    """The mask's pixels as 0/1 in flat order: ``order="F"`` down the columns, ``"C"`` along
    the rows."""
    h, w = mask.shape
    out = []
    if order == "F":
        for col in range(w):
            for row in range(h):
                out.append(1 if mask[row, col] != 0 else 0)
    else:
        for row in range(h):
            for col in range(w):
                out.append(1 if mask[row, col] != 0 else 0)
    return out


def naive_encode(mask: NDArray[np.generic], order: str = "F") -> str:
    """RLE of ``mask`` by walking its flat pixels one at a time."""
    pixels = flat_pixels(np.asarray(mask), order)
    tokens: list[str] = []
    run_start = None
    for i, v in enumerate([*pixels, 0]):
        if v and run_start is None:
            run_start = i
        elif not v and run_start is not None:
            tokens += [str(run_start + 1), str(i - run_start)]
            run_start = None
    return " ".join(tokens)


def naive_decode(rle: str, shape: tuple[int, int], order: str = "F") -> NDArray[np.uint8]:
    """Mask of ``rle`` by setting each listed flat pixel, then placing pixels in ``order``."""
    h, w = shape
    flat = [0] * (h * w)
    tokens = rle.split()
    for k in range(0, len(tokens), 2):
        start, length = int(tokens[k]), int(tokens[k + 1])
        for p in range(start - 1, start - 1 + length):
            flat[p] = 1
    out = np.zeros((h, w), np.uint8)
    for p, v in enumerate(flat):
        if order == "F":
            out[p % h, p // h] = v
        else:
            out[p // w, p % w] = v
    return out


def naive_window(mask: NDArray[np.uint8], y: int, x: int, h: int, w: int) -> NDArray[np.uint8]:
    """``mask[y:y+h, x:x+w]`` pixel by pixel, 0 outside the mask."""
    out = np.zeros((h, w), np.uint8)
    for i in range(h):
        for j in range(w):
            r, c = y + i, x + j
            if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]:
                out[i, j] = mask[r, c]
    return out


def naive_block_majority(window: NDArray[np.uint8], r: int) -> NDArray[np.uint8]:
    """1 where at least half of an ``r x r`` block is 1."""
    h, w = window.shape
    out = np.zeros((h // r, w // r), np.uint8)
    for i in range(h // r):
        for j in range(w // r):
            total = sum(int(window[i * r + a, j * r + b]) for a in range(r) for b in range(r))
            out[i, j] = 1 if 2 * total >= r * r else 0
    return out
