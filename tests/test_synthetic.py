"""Synthetic slides: deterministic, written in the requested layout, render == file content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import tilestream as ts
from tilestream.synthetic import SlideSpec, make_slide, render, slide_labels


def layout_of(path: Path | str) -> str:
    """Which HuBMAP quirk tifffile sees: (H, W, 3), (3, H, W) or (1, 1, 3, H, W)."""
    if tifffile.imread(path, squeeze=False).shape[:3] == (1, 1, 3):
        return "tzcyx"
    return "chw" if tifffile.imread(path).shape[0] == 3 else "hwc"


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


def test_tissue_fraction_is_respected() -> None:
    for fraction in (0.3, 0.7):
        spec = SlideSpec(height=4096, width=4096, seed=1, tissue_fraction=fraction)
        img = render(spec, ts.Box(0, 0, 4096, 4096), 8)
        saturation = img.max(axis=2).astype(int) - img.min(axis=2)
        assert abs((saturation > 40).mean() - fraction) < 0.1
        assert img.std() > 10
    a = render(SlideSpec(height=1024, width=1024, seed=1), ts.Box(0, 0, 1024, 1024), 4)
    b = render(SlideSpec(height=1024, width=1024, seed=2), ts.Box(0, 0, 1024, 1024), 4)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tile": None, "compression": "none", "pyramid": False},
        {"tile": None, "compression": "jpeg", "pyramid": False},
        {"tile": 64, "layout": "chw", "compression": "zstd"},
        {"tile": None, "layout": "chw", "compression": "none", "pyramid": False},
        {"tile": 64, "layout": "tzcyx", "compression": "jpeg"},
        {"tile": None, "layout": "tzcyx", "compression": "lzw"},
    ],
)
def test_layouts(tmp_path: Path, kwargs: dict[str, object]) -> None:
    spec = SlideSpec(height=200, width=260, seed=3, **kwargs)  # type: ignore[arg-type]
    path = make_slide(tmp_path / "s.tif", spec)
    assert layout_of(path) == spec.layout
    ref = tifffile.imread(path)
    if ref.shape[0] == 3:
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


def test_glomeruli_are_drawn_where_labelled() -> None:
    spec = SlideSpec(height=2000, width=2400, seed=9, glomeruli_per_mpx=8.0)
    labels = slide_labels(spec)
    assert len(labels.glomeruli) >= 5
    assert all(p.is_valid for p in labels.glomeruli)
    assert set(labels.regions) <= {"Cortex", "Medulla"} and labels.regions
    box = ts.Box(0, 0, 2000, 2400)
    image = render(spec, box, 4).astype(float)
    inside = ts.rasterize(labels.glomeruli, box, 4).astype(bool)
    assert 0.01 < inside.mean() < 0.5
    # glomeruli are darker (tuft nuclei) than the average tissue and far from the white glass
    assert image[inside].mean() < image[~inside].mean() - 15


def test_dataset_layout_and_consistency(hubmap_root: Path) -> None:
    from tilestream import hubmap

    files = {p.relative_to(hubmap_root).as_posix() for p in hubmap_root.rglob("*") if p.is_file()}
    assert {"train.csv", "HuBMAP-20-dataset_information.csv", "sample_submission.csv"} <= files
    records = hubmap.read_dataset(hubmap_root)
    train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split == "test"]
    assert len(train) == 3 and len(test) == 1
    patients = [r.patient for r in records]
    assert len(set(patients)) == 2  # shared by several slides
    layouts = set()
    for r in records:
        layouts.add(layout_of(r.image))
        assert r.regions is not None and set(r.regions.classes) <= {"Cortex", "Medulla"}
    assert layouts == {"hwc", "chw", "tzcyx"}
    rles = hubmap.read_rle_csv(hubmap_root / "train.csv")
    for r in train:
        polygons = ts.PolygonMask.from_geojson(r.image.with_suffix(".json"), r.shape)
        full = ts.Box(0, 0, *r.shape)
        np.testing.assert_array_equal(ts.rle_decode(rles[r.id], r.shape), polygons.read(full))
        assert isinstance(r.mask, ts.RleMask) and len(r.mask.objects()) >= len(polygons) - 2
    sample = hubmap.read_rle_csv(hubmap_root / "sample_submission.csv")
    assert sample == {test[0].id: ""}


def test_dataset_is_cached_and_deterministic(hubmap_root: Path, tmp_path: Path) -> None:
    from tilestream.synthetic import DatasetSpec, make_dataset

    spec = DatasetSpec(
        n_train=3, n_test=1, height=1600, width=2000, patients=2, seed=11, glomeruli_per_mpx=6.0
    )
    before = {p: p.stat().st_mtime_ns for p in hubmap_root.rglob("*") if p.is_file()}
    assert make_dataset(hubmap_root, spec) == hubmap_root  # cached: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in hubmap_root.rglob("*") if p.is_file()} == before
    with pytest.raises(FileExistsError, match="another spec"):
        make_dataset(hubmap_root, DatasetSpec(n_train=1, n_test=0, height=300, width=300))
    other = make_dataset(tmp_path / "again", spec)
    for path in before:
        twin = other / path.relative_to(hubmap_root)
        if path.suffix == ".tiff":  # OME-XML carries a random UUID: compare the pixels
            np.testing.assert_array_equal(tifffile.imread(twin), tifffile.imread(path))
        else:
            assert twin.read_bytes() == path.read_bytes(), path.name
