"""Synthetic slides: deterministic, written in the requested layout, render == file content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import tilestream as ts
from tilestream.synthetic import SlideSpec, make_slide, render


def test_deterministic_and_matches_render(tmp_path: Path) -> None:
    spec = SlideSpec(height=300, width=420, seed=4, tile=64, compression="deflate")
    a = make_slide(tmp_path / "a.tif", spec)
    b = make_slide(tmp_path / "b.tif", spec)
    assert Path(a).read_bytes() == Path(b).read_bytes()
    with ts.Slide.open(a) as slide:
        np.testing.assert_array_equal(
            slide.read(ts.Box(0, 0, 300, 420)), render(spec, ts.Box(0, 0, 300, 420))
        )
        np.testing.assert_array_equal(
            slide.read(ts.Box(0, 0, 300, 420), 2), render(spec, ts.Box(0, 0, 300, 420), 2)
        )


def test_not_constant_and_has_tissue_and_background(tmp_path: Path) -> None:
    spec = SlideSpec(height=1024, width=1024, seed=1, tissue_fraction=0.5)
    img = render(spec, ts.Box(0, 0, 1024, 1024), 4)
    saturation = img.max(axis=2).astype(int) - img.min(axis=2)
    tissue = (saturation > 40).mean()
    assert 0.2 < tissue < 0.8
    assert img.std() > 10
    other = render(SlideSpec(height=1024, width=1024, seed=2), ts.Box(0, 0, 1024, 1024), 4)
    assert not np.array_equal(img, other)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tile": None, "compression": "none", "pyramid": False},
        {"tile": None, "compression": "jpeg", "pyramid": False},
        {"tile": 64, "planar": True, "compression": "zstd"},
        {"tile": None, "planar": True, "compression": "none", "pyramid": False},
    ],
)
def test_layouts(tmp_path: Path, kwargs: dict[str, object]) -> None:
    spec = SlideSpec(height=200, width=260, seed=3, **kwargs)  # type: ignore[arg-type]
    path = make_slide(tmp_path / "s.tif", spec)
    ref = tifffile.imread(path)
    if kwargs.get("planar"):
        assert ref.shape == (3, 200, 260)
        ref = ref.transpose(1, 2, 0)
    with ts.Slide.open(path) as slide:
        np.testing.assert_array_equal(slide.read(ts.Box(0, 0, 200, 260)), ref)
        assert slide.levels[0].is_tiled == (spec.tile is not None)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        SlideSpec(height=10, width=10, tile=100)
    with pytest.raises(ValueError, match="tissue_fraction"):
        SlideSpec(height=10, width=10, tissue_fraction=0)
    with pytest.raises(ValueError, match="> 0"):
        SlideSpec(height=0, width=10)
