"""Mask sources: RleMask, ArrayMask, PolygonMask (contract suite, files, bad input)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
import shapely.affinity
import zarr

import tilestream as ts
from contracts import MaskSourceContract
from naive import block_majority_naive, components_naive, padded_mask_crop


def blobs(h: int = 90, w: int = 130, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(9):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 14)
        mask[(yy - cy) ** 2 + ((xx - cx) * 0.8) ** 2 < r * r] = 1
    mask[0, :7] = 1  # a run touching the first row and one wrapping in column-major order
    mask[-3:, 20] = 1
    mask[:2, 21] = 1
    return mask


class RasterContract(MaskSourceContract):
    def expected_reduced(self, source, dense, box, reduce):  # type: ignore[no-untyped-def]
        return block_majority_naive(padded_mask_crop(dense, box), reduce)


class TestRleMaskF(RasterContract):
    @pytest.fixture
    def dense(self) -> np.ndarray:
        return blobs()

    @pytest.fixture
    def source(self, dense: np.ndarray) -> ts.RleMask:
        return ts.RleMask(ts.rle_encode(dense), dense.shape)


class TestRleMaskC(RasterContract):
    @pytest.fixture
    def dense(self) -> np.ndarray:
        return blobs(seed=3)

    @pytest.fixture
    def source(self, dense: np.ndarray) -> ts.RleMask:
        return ts.RleMask(ts.rle_encode(dense, order="C"), dense.shape, order="C")


class TestArrayMaskNumpy(RasterContract):
    @pytest.fixture
    def dense(self) -> np.ndarray:
        return blobs(seed=5)

    @pytest.fixture
    def source(self, dense: np.ndarray) -> ts.ArrayMask:
        return ts.ArrayMask(dense, band_rows=16)


class TestArrayMaskZarr(RasterContract):
    @pytest.fixture
    def dense(self) -> np.ndarray:
        return blobs(seed=6) * 3  # class ids

    @pytest.fixture
    def source(self, dense: np.ndarray) -> ts.ArrayMask:
        z = zarr.create_array(store={}, shape=dense.shape, chunks=(32, 32), dtype="uint8")
        z[:] = dense
        return ts.ArrayMask(z)


class TestPolygonMask(MaskSourceContract):
    @pytest.fixture
    def source(self) -> ts.PolygonMask:
        geoms = [
            shapely.Polygon([(10.3, 5.2), (60.7, 8.1), (40.2, 50.9)]),
            shapely.Polygon(
                [(70, 20), (120, 20), (120, 80), (70, 80)], [[(85, 35), (105, 35), (95, 60)]]
            ),
            shapely.MultiPolygon([shapely.box(2, 60, 20, 88), shapely.box(25.3, 70.2, 31.6, 84.7)]),
            shapely.box(110, -20, 160, 10),  # crosses the slide edge: clipped
        ]
        # off the integer and half-integer grid: no sample point falls on an edge
        geoms = [shapely.affinity.translate(g, 0.137, 0.291) for g in geoms]
        return ts.PolygonMask(geoms, (90, 130))

    @pytest.fixture
    def dense(self, source: ts.PolygonMask) -> np.ndarray:
        # the pixel-centre rule, by shapely, pixel by pixel
        yy, xx = np.mgrid[0:90, 0:130]
        union = shapely.union_all(source.geometries)
        return shapely.contains_xy(union, xx + 0.5, yy + 0.5).astype(np.uint8)

    def expected_reduced(self, source, dense, box, reduce):  # type: ignore[no-untyped-def]
        h, w = box.height // reduce, box.width // reduce
        yy, xx = np.mgrid[0:h, 0:w]
        union = shapely.union_all(source.geometries)
        cx = box.x + (xx + 0.5) * reduce
        cy = box.y + (yy + 0.5) * reduce
        inside = shapely.contains_xy(union, cx, cy) & (cy < 90) & (cx < 130) & (cy >= 0) & (cx >= 0)
        return inside.astype(np.uint8)


# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["F", "C"])
def test_rle_objects_match_flood_fill(order: str) -> None:
    mask = blobs(seed=8)
    source = ts.RleMask(ts.rle_encode(mask, order=order), mask.shape, order=order)  # type: ignore[arg-type]
    objects = source.objects()
    got = {(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in objects.bboxes}
    assert got == {c[:4] for c in components_naive(mask)}


def test_rle_mask_empty_and_nan() -> None:
    for value in ("", None, float("nan"), "   "):
        m = ts.RleMask(value, (5, 6))
        assert m.area == 0 and len(m.objects()) == 0
        assert not m.read(ts.Box(0, 0, 5, 6)).any()
    with pytest.raises(ts.RLEFormatError, match="token"):
        ts.RleMask("1 2 3", (5, 6))
    with pytest.raises(ValueError, match="order"):
        ts.RleMask("1 2", (5, 6), order="X")  # type: ignore[arg-type]


def test_array_mask_rejects_3d() -> None:
    with pytest.raises(ValueError, match="squeeze the channel axis"):
        ts.ArrayMask(np.zeros((4, 4, 1), np.uint8))


def test_polygon_classes_and_values(tmp_path: Path) -> None:
    feats = [
        {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(shapely.box(0, 0, 10, 10)),
            "properties": {"classification": {"name": "Cortex"}},
        },
        {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(shapely.box(5, 5, 20, 20)),
            "properties": {"classification": {"name": "Medulla"}},
        },
        {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(shapely.box(0, 15, 4, 19)),
            "properties": {"name": "other"},
        },
    ]
    path = tmp_path / "regions.json"
    path.write_text(json.dumps(feats))
    binary = ts.PolygonMask.from_geojson(path, (20, 20))
    assert binary.classes == ("Cortex", "Medulla", "other")
    assert set(np.unique(binary.read(ts.Box(0, 0, 20, 20)))) == {0, 1}
    labelled = ts.PolygonMask.from_geojson(path, (20, 20), classes=["Cortex", "Medulla"])
    grid = labelled.read(ts.Box(0, 0, 20, 20))
    assert grid[2, 2] == 1 and grid[15, 15] == 2 and grid[7, 7] == 2  # larger value wins
    assert grid[17, 1] == 0  # "other" dropped
    assert len(labelled) == 2
    out = tmp_path / "back.json"
    labelled.to_geojson(out)
    again = ts.PolygonMask.from_geojson(out, (20, 20), classes={"Cortex": 1, "Medulla": 2})
    np.testing.assert_array_equal(again.read(ts.Box(0, 0, 20, 20)), grid)
    objects = labelled.objects()
    assert objects.classes == ("Cortex", "Medulla")
    np.testing.assert_array_equal(objects.bboxes, [[0, 0, 10, 10], [5, 5, 15, 15]])


def test_polygon_bad_input_warns_and_skips(tmp_path: Path) -> None:
    feats = [
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}},
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [1, float("nan")], [2, 2], [0, 0]]],
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [3, 3], [0, 0]]]},
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]],
            },
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[500, 500], [600, 500], [600, 600], [500, 500]]],
            },
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[1, 1, 0], [8, 1, 0], [8, 8, 0], [1, 1, 0]]],
            },
        },
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": "oops"}},
        "not a feature",
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(feats).replace("NaN", "NaN"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = ts.PolygonMask.from_geojson(path, (20, 20))
    messages = [str(w.message) for w in caught]
    assert all(issubclass(w.category, ts.AnnotationWarning) for w in caught)
    assert any("feature 0" in m and "LineString" in m for m in messages)
    assert any("feature 1" in m and "NaN" in m for m in messages)
    assert any("feature 2" in m and "fewer than 3" in m for m in messages)
    assert any("feature 3" in m and "make_valid" in m for m in messages)
    assert any("feature 4" in m and "outside the slide" in m for m in messages)
    assert any("feature 6" in m for m in messages) and any("feature 7" in m for m in messages)
    assert len(mask) == 2  # the repaired bow-tie and the 3-D triangle
    for text in ("{", '{"type": "Point"}', "42"):
        path.write_text(text)
        with pytest.raises(ts.AnnotationFormatError, match=r"bad\.json"):
            ts.PolygonMask.from_geojson(path, (20, 20))


def test_polygon_mask_pickles(tmp_path: Path) -> None:
    import pickle

    mask = ts.PolygonMask([shapely.box(1, 1, 9, 9)], (10, 10))
    mask.read(ts.Box(0, 0, 10, 10))  # builds the tree
    clone = pickle.loads(pickle.dumps(mask))
    np.testing.assert_array_equal(clone.read(ts.Box(0, 0, 10, 10)), mask.read(ts.Box(0, 0, 10, 10)))


# ------------------------------------------------------------------------------------------
# Real files
# ------------------------------------------------------------------------------------------


def real_shapes(realdata: Path) -> dict[str, tuple[int, int]]:
    info = ts.hubmap.read_dataset_info(realdata / "hubmap" / "HuBMAP-20-dataset_information.csv")
    return {k: (int(v["height_pixels"]), int(v["width_pixels"])) for k, v in info.items()}


@pytest.mark.realdata
def test_every_real_qupath_json_loads(realdata: Path) -> None:
    shapes = real_shapes(realdata)
    folder = realdata / "hubmap" / "annotations_optimox_4th_place"
    files = sorted(folder.glob("*.json"))
    assert len(files) == 14
    total = 0
    for path in files:
        shape = shapes.get(path.stem, (60000, 60000))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mask = ts.PolygonMask.from_geojson(path, shape)
        raw = json.loads(path.read_text())
        kinds = [f["geometry"]["type"] for f in raw]
        skipped = [str(w.message) for w in caught]
        if "LineString" in kinds:
            assert any("LineString" in m for m in skipped), path.name
        assert len(mask) + len(skipped) >= len(raw) - kinds.count("LineString"), path.name
        assert set(mask.classes) <= {"G", "FC"}
        total += len(mask)
        # each polygon reads back where it lies, at full and reduced resolution
        objects = mask.objects()
        for i in range(0, len(mask), max(1, len(mask) // 5)):
            b = objects.box(i).aligned(4)
            assert mask.read(b).any()
            assert mask.read(b, 4).shape == (b.height // 4, b.width // 4)
    assert total > 150


@pytest.mark.realdata
def test_real_out_of_slide_coordinates_are_clipped(realdata: Path) -> None:
    path = realdata / "hubmap" / "annotations_optimox_4th_place" / "2f6ecfcdf.json"
    raw = json.loads(path.read_text())
    bounds = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in raw]).bounds
    small = (int(bounds[3] * 0.5), int(bounds[2] * 0.5))  # a slide half as large
    with pytest.warns(ts.AnnotationWarning, match="outside the slide"):
        mask = ts.PolygonMask.from_geojson(path, small)
    assert max(g.bounds[2] for g in mask.geometries) <= small[1]
    assert max(g.bounds[3] for g in mask.geometries) <= small[0]


@pytest.mark.realdata
def test_real_feature_collection_with_z(realdata: Path) -> None:
    path = realdata / "annotations" / "large_image" / "sample.geojson"
    mask = ts.PolygonMask.from_geojson(path, (30000, 30000))
    assert len(mask) == 10
    objects = mask.objects()
    b = objects.box(0)
    assert mask.read(b).mean() > 0.3


@pytest.mark.realdata
def test_real_rle_whole_slide(realdata: Path) -> None:
    rles = ts.hubmap.read_rle_csv(realdata / "hubmap" / "rle" / "0486052bb_predicted_rle.csv")
    shape = real_shapes(realdata)["0486052bb"]
    mask = ts.RleMask(rles["0486052bb"], shape)
    assert mask.area == 10_144_946
    objects = mask.objects()
    assert 120 <= len(objects) <= 140  # ~133 round blobs along the cortex
    for i in range(0, len(objects), 10):
        b = objects.box(i)
        window = mask.read(b)
        # the bounding box is tight: the component touches all four sides of its window
        assert window[0].any() and window[-1].any() and window[:, 0].any() and window[:, -1].any()
