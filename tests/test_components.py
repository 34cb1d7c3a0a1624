"""Run-based connected components and block-majority reduction against slow references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from naive import block_majority_naive, components_naive
from tilestream._components import components_from_line_runs, flat_runs_to_line_runs, row_runs
from tilestream._resample import block_majority

masks = arrays(
    np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.integers(0, 1)
)


def _components(mask: np.ndarray) -> set[tuple[int, int, int, int, int]]:
    lines, lo, hi = row_runs(mask)
    bbox, centroid, area = components_from_line_runs(lines, lo, hi)
    out = set()
    for (r0, r1, c0, c1), (cy, cx), a in zip(bbox, centroid, area, strict=True):
        out.add((int(r0), int(c0), int(r1 - r0), int(c1 - c0), int(a)))
        assert r0 <= cy < r1 and c0 <= cx < c1
    return out


@pytest.mark.kernels
@settings(max_examples=60, deadline=None)
@given(masks)
def test_components_match_flood_fill(mask: np.ndarray) -> None:
    assert _components(mask) == components_naive(mask)


@pytest.mark.kernels
def test_column_major_runs_split_at_column_ends() -> None:
    # 4 x 3 mask, column-major runs: pixels 1..3 (col 0 rows 1-3) and 8..9 (col 2 rows 0-1)
    lines, lo, hi = flat_runs_to_line_runs(np.array([1, 8]), np.array([3, 2]), 4)
    assert lines.tolist() == [0, 2] and lo.tolist() == [1, 0] and hi.tolist() == [4, 2]
    # one run spanning two whole columns and part of a third
    lines, lo, hi = flat_runs_to_line_runs(np.array([2]), np.array([9]), 4)
    assert lines.tolist() == [0, 1, 2] and lo.tolist() == [2, 0, 0] and hi.tolist() == [4, 4, 3]


def test_diagonal_connectivity() -> None:
    mask = np.eye(4, dtype=np.uint8)
    lines, lo, hi = row_runs(mask)
    assert components_from_line_runs(lines, lo, hi)[2].tolist() == [4]
    assert sorted(components_from_line_runs(lines, lo, hi, diagonal=False)[2].tolist()) == [1] * 4


@pytest.mark.kernels
@settings(max_examples=60, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 3)),
    st.integers(1, 4),
)
def test_block_majority_matches_naive(cells: np.ndarray, factor: int) -> None:
    mask = np.kron(cells, np.ones((1, 1), np.uint8))
    h, w = (mask.shape[0] // factor) * factor, (mask.shape[1] // factor) * factor
    if h == 0 or w == 0:
        return
    mask = np.ascontiguousarray(mask[:h, :w])
    np.testing.assert_array_equal(block_majority(mask, factor), block_majority_naive(mask, factor))


def test_block_majority_half_is_positive() -> None:
    block = np.array([[1, 1], [0, 0]], np.uint8)
    assert block_majority(block, 2).tolist() == [[1]]
    assert block_majority(np.array([[1, 0], [0, 0]], np.uint8), 2).tolist() == [[0]]
    with pytest.raises(ValueError, match="multiple"):
        block_majority(np.zeros((3, 3), np.uint8), 2)
