"""Connected components of a binary mask given as runs, in O(runs) (numba kernels).

A mask is described by runs on "lines": columns for column-major RLE, rows for row-major RLE
or dense arrays. Runs on adjacent lines that touch (8-connectivity) are merged with a
union-find; each component gets its bounding box, area and centroid. No full-resolution mask
is ever built, so a whole-slide RLE is labelled in milliseconds.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ._jit import njit

__all__ = ["components_from_line_runs", "flat_runs_to_line_runs", "row_runs"]


@njit
def _split_flat_runs(
    starts: NDArray[np.int64], lengths: NDArray[np.int64], line_length: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    # 0-based flat runs -> (line, start, end) pieces, one per line a run touches.
    total = 0
    for k in range(starts.size):
        first = starts[k] // line_length
        last = (starts[k] + lengths[k] - 1) // line_length
        total += last - first + 1
    lines = np.empty(total, np.int64)
    lo = np.empty(total, np.int64)
    hi = np.empty(total, np.int64)
    n = 0
    for k in range(starts.size):
        p = starts[k]
        end = starts[k] + lengths[k]
        while p < end:
            line = p // line_length
            line_end = min(end, (line + 1) * line_length)
            lines[n] = line
            lo[n] = p - line * line_length
            hi[n] = line_end - line * line_length
            n += 1
            p = line_end
    return lines, lo, hi


def flat_runs_to_line_runs(
    starts0: NDArray[np.int64], lengths: NDArray[np.int64], line_length: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Split sorted 0-based flat runs into per-line pieces ``(line, start, end)``.

    ``line_length`` is H for column-major runs (lines are columns) and W for row-major runs.
    """
    return _split_flat_runs(
        np.ascontiguousarray(starts0, np.int64),
        np.ascontiguousarray(lengths, np.int64),
        int(line_length),
    )


@njit
def _find(parent: NDArray[np.int64], i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit
def _label_runs(
    lines: NDArray[np.int64], lo: NDArray[np.int64], hi: NDArray[np.int64], diagonal: bool
) -> NDArray[np.int64]:
    n = lines.size
    parent = np.arange(n)
    reach = 1 if diagonal else 0
    prev_first = 0  # first run of the previous line
    prev_end = 0  # one past its last run
    i = 0
    while i < n:
        line = lines[i]
        j = i
        while j < n and lines[j] == line:
            j += 1
        # runs i..j-1 are on `line`; compare with the previous line's runs when adjacent
        if prev_end > prev_first and lines[prev_first] == line - 1:
            a = prev_first
            b = i
            while a < prev_end and b < j:
                if lo[a] < hi[b] + reach and lo[b] < hi[a] + reach:
                    ra = _find(parent, a)
                    rb = _find(parent, b)
                    if ra != rb:
                        if ra < rb:
                            parent[rb] = ra
                        else:
                            parent[ra] = rb
                if hi[a] < hi[b]:
                    a += 1
                else:
                    b += 1
        prev_first = i
        prev_end = j
        i = j
    labels = np.empty(n, np.int64)
    for k in range(n):
        labels[k] = _find(parent, k)
    return labels


@njit
def _component_stats(
    lines: NDArray[np.int64],
    lo: NDArray[np.int64],
    hi: NDArray[np.int64],
    roots: NDArray[np.int64],
    count: int,
    index_of_root: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    # bbox: line_min, line_max(excl), pos_min, pos_max(excl); sums: area, sum_line, sum_pos
    bbox = np.empty((count, 4), np.int64)
    bbox[:, 0] = np.iinfo(np.int64).max
    bbox[:, 1] = np.iinfo(np.int64).min
    bbox[:, 2] = np.iinfo(np.int64).max
    bbox[:, 3] = np.iinfo(np.int64).min
    sums = np.zeros((count, 3), np.float64)
    for k in range(lines.size):
        c = index_of_root[roots[k]]
        line = lines[k]
        a = lo[k]
        b = hi[k]
        bbox[c, 0] = min(bbox[c, 0], line)
        bbox[c, 1] = max(bbox[c, 1], line + 1)
        bbox[c, 2] = min(bbox[c, 2], a)
        bbox[c, 3] = max(bbox[c, 3], b)
        length = b - a
        sums[c, 0] += length
        sums[c, 1] += line * length
        sums[c, 2] += (a + b - 1) * length / 2.0
    return bbox, sums


def components_from_line_runs(
    lines: NDArray[np.int64],
    lo: NDArray[np.int64],
    hi: NDArray[np.int64],
    *,
    diagonal: bool = True,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Label runs sorted by ``(line, start)`` and summarise each component.

    Returns
    -------
    bbox : (N, 4) int64
        ``line_min, line_max, pos_min, pos_max`` (half-open) per component.
    centroid : (N, 2) float64
        ``(line, pos)`` mean of the component's pixels.
    area : (N,) int64
        Pixels per component.
    Components are ordered by their first run.
    """
    if lines.size == 0:
        return np.zeros((0, 4), np.int64), np.zeros((0, 2), np.float64), np.zeros(0, np.int64)
    lines = np.ascontiguousarray(lines, np.int64)
    lo = np.ascontiguousarray(lo, np.int64)
    hi = np.ascontiguousarray(hi, np.int64)
    roots = _label_runs(lines, lo, hi, diagonal)
    unique_roots = np.unique(roots)
    index_of_root = np.full(lines.size, -1, np.int64)
    index_of_root[unique_roots] = np.arange(unique_roots.size)
    bbox, sums = _component_stats(lines, lo, hi, roots, unique_roots.size, index_of_root)
    area = sums[:, 0].astype(np.int64)
    centroid = np.stack([sums[:, 1] / sums[:, 0], sums[:, 2] / sums[:, 0]], axis=1)
    return bbox, centroid, area


@njit
def _row_runs_kernel(
    band: NDArray[np.uint8], row0: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    h, w = band.shape
    count = 0
    for i in range(h):
        prev = False
        for j in range(w):
            on = band[i, j] != 0
            if on and not prev:
                count += 1
            prev = on
    lines = np.empty(count, np.int64)
    lo = np.empty(count, np.int64)
    hi = np.empty(count, np.int64)
    n = 0
    for i in range(h):
        j = 0
        while j < w:
            if band[i, j] != 0:
                s = j
                while j < w and band[i, j] != 0:
                    j += 1
                lines[n] = row0 + i
                lo[n] = s
                hi[n] = j
                n += 1
            else:
                j += 1
    return lines, lo, hi


def row_runs(
    band: NDArray[np.uint8], row0: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Runs of non-zero pixels of each row of a 2-D band: ``(row0 + row, start, end)``."""
    return _row_runs_kernel(np.ascontiguousarray(band, np.uint8), int(row0))
