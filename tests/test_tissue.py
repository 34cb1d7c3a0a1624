"""Tissue detection and O(1) tissue fractions against brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tilestream as ts
from tilestream.synthetic import SlideSpec, make_slide
from tilestream.tissue import otsu_threshold, tissue_from_rgb


def brute_fraction(tm: ts.TissueMap, box: ts.Box) -> float:
    r = tm.reduce
    y0, x0 = box.y // r, box.x // r
    y1, x1 = -(-box.bottom // r), -(-box.right // r)
    count = 0
    for i in range(y0, y1):
        for j in range(x0, x1):
            if 0 <= i < tm.mask.shape[0] and 0 <= j < tm.mask.shape[1] and tm.mask[i, j]:
                count += 1
    return count / ((y1 - y0) * (x1 - x0))


@settings(max_examples=80, deadline=None)
@given(
    st.integers(-40, 120),
    st.integers(-40, 120),
    st.integers(1, 90),
    st.integers(1, 90),
    st.sampled_from([1, 3, 4]),
)
def test_fraction_matches_brute_force(y: int, x: int, h: int, w: int, reduce: int) -> None:
    rng = np.random.default_rng(reduce)
    mask = rng.random((25, 31)) < 0.4
    tm = ts.TissueMap(mask, reduce=reduce, shape=(25 * reduce, 31 * reduce))
    box = ts.Box(y, x, h, w)
    assert tm.fraction(box) == pytest.approx(brute_fraction(tm, box))
    many = tm.fractions(np.array([[y, x, h, w], [0, 0, 5, 5]]))
    assert many[0] == pytest.approx(brute_fraction(tm, box))


def test_sample_points_lie_on_tissue() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:4, 5:9] = True
    tm = ts.TissueMap(mask, reduce=8, shape=(80, 80))
    pts = tm.sample_points(np.random.default_rng(0), 500)
    assert mask[(pts[:, 0] // 8).astype(int), (pts[:, 1] // 8).astype(int)].all()
    assert tm.area == 8 * 64
    with pytest.raises(ValueError, match="empty"):
        ts.TissueMap(np.zeros((3, 3), bool), 1, (3, 3)).sample_points(np.random.default_rng(0), 1)


def test_sample_point_is_sample_points_of_one() -> None:
    rng = np.random.default_rng(5)
    tm = ts.TissueMap(rng.random((37, 53)) < 0.3, reduce=8, shape=(37 * 8, 53 * 8))
    for seed in range(200):
        a, b = np.random.default_rng((seed, 1)), np.random.default_rng((seed, 1))
        assert tm.sample_point(a) == tuple(tm.sample_points(b, 1)[0].tolist())
        assert a.random() == b.random()  # the same use of the generator
    with pytest.raises(ValueError, match="empty"):
        ts.TissueMap(np.zeros((4, 4), bool), reduce=2, shape=(8, 8)).sample_point(rng)


def test_summed_area_table_is_int32_while_counts_fit() -> None:
    tm = ts.TissueMap(np.ones((300, 200), bool), reduce=4, shape=(1200, 800))
    assert tm._table.dtype == np.int32  # type: ignore[attr-defined]
    assert tm.fraction(ts.Box(0, 0, 1200, 800)) == 1.0
    assert tm.fractions(np.array([[0, 0, 1200, 800], [-400, 0, 800, 800]])).tolist() == [1.0, 0.5]


def test_tissue_mask_of_synthetic_slide(tmp_path: Path) -> None:
    spec = SlideSpec(height=4096, width=3072, seed=2, tissue_fraction=0.45, tile=256)
    path = make_slide(tmp_path / "s.tif", spec)
    with ts.Slide.open(path) as slide:
        tm = ts.tissue_mask(slide, max_size=512)
        assert tm.reduce == 8 and tm.mask.shape == (512, 384)
        assert 0.3 < tm.mask.mean() < 0.6
        otsu = ts.tissue_mask(slide, 16, method="otsu")
        assert 0.3 < otsu.mask.mean() < 0.7
        with pytest.raises(ValueError, match="method"):
            ts.tissue_mask(slide, 16, method="nope")  # type: ignore[arg-type]


def test_rules_dark_white_and_grey() -> None:
    img = np.zeros((1, 4, 3), np.uint8)
    img[0, 0] = (230, 160, 200)  # pink tissue
    img[0, 1] = (245, 245, 245)  # glass
    img[0, 2] = (10, 0, 20)  # near black, saturated: rejected as dark
    img[0, 3] = (120, 120, 125)  # grey: low saturation
    assert tissue_from_rgb(img).tolist() == [[True, False, False, False]]
    grey = np.array([[[40], [200], [45], [210]]], np.uint8)
    assert tissue_from_rgb(grey).tolist() == [[True, False, True, False]]
    assert otsu_threshold(np.array([0, 0, 255, 255], np.uint8)) == 0


def test_tissue_map_pickles() -> None:
    import pickle

    tm = ts.TissueMap(np.eye(4, dtype=bool), 2, (8, 8))
    clone = pickle.loads(pickle.dumps(tm))
    assert clone.fraction(ts.Box(0, 0, 8, 8)) == tm.fraction(ts.Box(0, 0, 8, 8)) == 0.25
