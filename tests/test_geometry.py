"""Box: validation, bounds, intersection, alignment to reduce factors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tilestream as ts

coords = st.integers(-1000, 1000)
sizes = st.integers(1, 500)


def test_fields_and_bounds() -> None:
    box = ts.Box(y=3, x=-4, height=10, width=20)
    assert (box.bottom, box.right, box.shape) == (13, 16, (10, 20))
    assert ts.Box.from_bounds(3, -4, 13, 16) == box
    assert ts.Box(np.int64(2), np.int32(3), 4, 5) == ts.Box(2, 3, 4, 5)
    assert box.translate(1, 2) == ts.Box(4, -2, 10, 20)


@pytest.mark.parametrize("bad", [(0, 0, 0, 5), (0, 0, 5, -1), (0.5, 0, 5, 5), ("a", 0, 1, 1)])
def test_invalid_boxes(bad: tuple[object, ...]) -> None:
    with pytest.raises(ts.BoxError) as err:
        ts.Box(*bad)  # type: ignore[arg-type]
    assert isinstance(err.value, ValueError)


@given(coords, coords, sizes, sizes, coords, coords, sizes, sizes)
def test_intersection_matches_pixel_sets(
    y1: int, x1: int, h1: int, w1: int, y2: int, x2: int, h2: int, w2: int
) -> None:
    a, b = ts.Box(y1, x1, h1, w1), ts.Box(y2, x2, h2, w2)
    inter = a.intersection(b)
    rows = set(range(y1, y1 + h1)) & set(range(y2, y2 + h2))
    cols = set(range(x1, x1 + w1)) & set(range(x2, x2 + w2))
    if not rows or not cols:
        assert inter is None
    else:
        assert inter == ts.Box(min(rows), min(cols), len(rows), len(cols))
        assert inter == b.intersection(a)


@given(coords, coords, sizes, sizes, st.integers(1, 16))
def test_aligned_contains_and_scales(y: int, x: int, h: int, w: int, r: int) -> None:
    box = ts.Box(y, x, h, w)
    snapped = box.aligned(r)
    assert snapped.y <= box.y and snapped.x <= box.x
    assert snapped.bottom >= box.bottom and snapped.right >= box.right
    assert snapped.bottom - box.bottom < r and box.y - snapped.y < r
    small = snapped.scaled(r)
    assert (small.height * r, small.width * r) == snapped.shape


def test_check_reduce_messages() -> None:
    with pytest.raises(ts.BoxError, match="x, width not a multiple of 4"):
        ts.Box(0, 2, 8, 6).check_reduce(4)
    with pytest.raises(ts.BoxError, match="positive integer"):
        ts.Box(0, 0, 8, 8).check_reduce(0)
    assert ts.Box(0, 0, 4, 4).clip((2, 3)) == ts.Box(0, 0, 2, 3)
    assert ts.Box(5, 5, 4, 4).clip((2, 3)) is None
