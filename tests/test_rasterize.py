"""rasterize / PolygonIndex: agreement with shapely and the naive reference, edge rules, out=.

Pixel-centre checks against ``shapely.contains_xy`` leave out centres within 1e-9 px of a
boundary (shapely counts the boundary as outside; the kernel follows its half-open rule there),
while the comparisons with ``tests/naive_rasterize.py`` are exact, boundary included.
"""

from __future__ import annotations

import doctest
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from naive_rasterize import naive_rasterize, naive_rasterize_geoms
from tilestream.errors import BoxError, TilestreamError
from tilestream.geometry import Box
from tilestream.rasterize import PolygonIndex, rasterize

REALDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
HUBMAP_JSON = REALDATA / "hubmap" / "annotations_optimox_4th_place"

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------
# helpers and strategies
# ------------------------------------------------------------------------------------------


def centres(box: Box, reduce: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Level-0 (x, y) of every reduced pixel centre of ``box``, as (h, w) grids."""
    h, w = box.height // reduce, box.width // reduce
    xs = box.x + (np.arange(w) + 0.5) * reduce
    ys = box.y + (np.arange(h) + 0.5) * reduce
    x, y = np.meshgrid(xs, ys)
    return x, y


def shapely_truth(
    geoms: list[Any], box: Box, reduce: int
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(inside any geometry, within 1e-9 px of a boundary) for each pixel centre."""
    x, y = centres(box, reduce)
    points = shapely.points(x, y)
    inside = np.zeros(x.shape, dtype=bool)
    near = np.zeros(x.shape, dtype=bool)
    with np.errstate(all="ignore"):  # GEOS divides by zero on degenerate slivers
        for geom in geoms:
            inside |= shapely.contains_xy(geom, x, y)
            near |= shapely.dwithin(shapely.boundary(geom), points, 1e-9)
    return inside, near


def assert_matches_shapely(geoms: list[Any], box: Box, reduce: int) -> None:
    got = rasterize(geoms, box, reduce)
    assert got.shape == (box.height // reduce, box.width // reduce)
    assert got.dtype == np.uint8
    assert set(np.unique(got)) <= {0, 1}
    inside, near = shapely_truth(geoms, box, reduce)
    wrong = (got.astype(bool) != inside) & ~near
    assert not wrong.any(), f"{int(wrong.sum())} pixels differ, first at {np.argwhere(wrong)[0]}"


@st.composite
def star(draw: st.DrawFn, lo: float = -40.0, hi: float = 200.0) -> shapely.Polygon:
    """A simple, usually concave polygon: random radii at increasing random angles."""
    cx = draw(st.floats(lo, hi))
    cy = draw(st.floats(lo, hi))
    n = draw(st.integers(3, 14))
    radius = draw(st.floats(3.0, 70.0))
    fractions = draw(st.lists(st.floats(0.25, 1.0), min_size=n, max_size=n))
    angles = np.sort(draw(st.lists(st.floats(0.0, 2 * np.pi), min_size=n, max_size=n, unique=True)))
    r = radius * np.asarray(fractions)
    xy = np.round(np.c_[cx + r * np.cos(angles), cy + r * np.sin(angles)], 6)
    poly = shapely.Polygon(xy)
    if not poly.is_valid or poly.area < 1e-3:  # duplicate or collinear angles
        poly = shapely.box(cx, cy, cx + radius, cy + radius / 2)
    return poly


@st.composite
def shapes(draw: st.DrawFn) -> Any:
    """Stars combined by union / difference: holes, multipolygons, concave parts."""
    geom = draw(star())
    for _ in range(draw(st.integers(0, 3))):
        other = draw(star())
        geom = geom.union(other) if draw(st.booleans()) else geom.difference(other)
    return geom


@st.composite
def boxes(draw: st.DrawFn, max_side: int = 48) -> tuple[Box, int]:
    """A box aligned to a random reduce factor, often partly or wholly outside the shapes."""
    reduce = draw(st.sampled_from([1, 2, 3, 4]))
    y = draw(st.integers(-90, 260)) // reduce * reduce
    x = draw(st.integers(-90, 260)) // reduce * reduce
    h = draw(st.integers(1, max_side)) * reduce
    w = draw(st.integers(1, max_side)) * reduce
    return Box(y, x, h, w), reduce


@st.composite
def grid_polygon(draw: st.DrawFn) -> shapely.Polygon:
    """Vertices on a half-integer grid, in random order: pixel centres lie exactly on edges
    and vertices, and the ring usually crosses itself (bow ties and worse)."""
    n = draw(st.integers(3, 9))
    pts = draw(
        st.lists(
            st.tuples(st.integers(-10, 80), st.integers(-10, 80)),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    return shapely.Polygon(np.asarray(pts, dtype=np.float64) / 2)


# ------------------------------------------------------------------------------------------
# agreement with shapely
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(shapes(), min_size=1, max_size=3), boxes())
def test_matches_shapely_contains(geoms: list[Any], box_reduce: tuple[Box, int]) -> None:
    box, reduce = box_reduce
    assert_matches_shapely(geoms, box, reduce)


@pytest.mark.parametrize("reduce", [1, 2, 3, 4])
def test_holes_multipolygons_and_concave_shapes(reduce: int) -> None:
    rng = np.random.default_rng(reduce)
    outer = shapely.Point(60, 50).buffer(45, quad_segs=9)
    holed = outer.difference(shapely.Point(55, 45).buffer(15)).difference(
        shapely.box(70, 25, 85, 35)
    )
    assert len(holed.interiors) == 2
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    r = 30 * (1 + 0.4 * np.sin(5 * t)) + rng.uniform(-2, 2, t.size)
    flower = shapely.Polygon(np.c_[150 + r * np.cos(t), 60 + r * np.sin(t)])
    multi = shapely.MultiPolygon([shapely.box(10, 110, 30, 130), shapely.box(40, 115.3, 70.7, 140)])
    for box in [Box(0, 0, 192, 216), Box(-24, -36, 96, 120), Box(96, 120, 96, 96)]:
        assert_matches_shapely([holed, flower, multi], box, reduce)


def test_self_touching_shapes() -> None:
    # a hole touching the exterior at one point (valid), and an exterior ring touching itself
    # (invalid: even-odd cuts the inner loop out, like make_valid's hole)
    square = [(0, 0), (40, 0), (40, 40), (0, 40)]
    touching_hole = shapely.Polygon(square, [[(0, 20), (20, 10.3), (20, 30.7)]])
    assert touching_hole.is_valid
    loop = shapely.Polygon(
        [(50, 0), (90, 0), (90, 40), (70, 20), (80, 10.3), (60, 10.3), (70, 20), (50, 40)]
    )
    assert not loop.is_valid
    box = Box(-3, -3, 48, 99)
    for reduce in (1, 3):
        assert_matches_shapely([touching_hole, shapely.make_valid(loop)], box, reduce)
        np.testing.assert_array_equal(
            rasterize([loop], box, reduce), rasterize([shapely.make_valid(loop)], box, reduce)
        )


def test_overlapping_polygons_union_not_xor() -> None:
    a, b = shapely.box(0, 0, 10, 10), shapely.box(5, 5, 15, 15)
    mask = rasterize([a, b], Box(0, 0, 16, 16))
    assert mask[7, 7] == 1 and mask.sum() == 175
    # an invalid MultiPolygon with overlapping parts: each part is filled on its own too
    assert rasterize(shapely.MultiPolygon([a, b]), Box(0, 0, 16, 16)).sum() == 175


def test_boxes_outside_and_far_away() -> None:
    poly = shapely.box(10, 10, 50, 30)
    assert not rasterize([poly], Box(100, 100, 64, 64)).any()
    assert not rasterize([poly], Box(-1000, -1000, 8, 8)).any()
    mask = rasterize([poly], Box(-8, -8, 32, 32), 2)
    assert mask[9:16, 9:16].all() and mask.sum() == 7 * 7
    # a window deep inside a large polygon is full
    assert rasterize([shapely.box(-1e6, -1e6, 1e6, 1e6)], Box(5000, -7000, 64, 32)).all()


# ------------------------------------------------------------------------------------------
# the half-open edge rule and tiling
# ------------------------------------------------------------------------------------------


def test_edge_rule_left_top_in_right_bottom_out() -> None:
    # centres (x + 0.5, y + 0.5) lie exactly on every edge of this square
    square = shapely.box(1.5, 2.5, 4.5, 6.5)
    mask = rasterize([square], Box(0, 0, 8, 8))
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 1:4] = 1  # rows 2.5..5.5 (6.5 out), columns 1.5..3.5 (4.5 out)
    np.testing.assert_array_equal(mask, expected)
    # same at reduce 3: centres at 1.5, 4.5, 7.5, ...
    mask3 = rasterize([shapely.box(1.5, 4.5, 7.5, 13.5)], Box(0, 0, 18, 18), 3)
    expected3 = np.zeros((6, 6), np.uint8)
    expected3[1:4, 0:2] = 1
    np.testing.assert_array_equal(mask3, expected3)


@pytest.mark.parametrize("reduce", [1, 2, 3])
def test_adjacent_squares_fill_each_pixel_once(reduce: int) -> None:
    box = Box(0, 0, 24 * reduce, 24 * reduce)
    for cut in (10.5 * reduce, 10 * reduce, 10.25 * reduce):  # on, between and off centres
        left = shapely.box(1.5 * reduce, 2.5 * reduce, cut, 20.5 * reduce)
        right = shapely.box(cut, 2.5 * reduce, 22.5 * reduce, 20.5 * reduce)
        bottom = shapely.box(1.5 * reduce, 20.5 * reduce, 22.5 * reduce, 23.5 * reduce)
        count = sum(rasterize([p], box, reduce).astype(int) for p in (left, right, bottom))
        assert count.max() == 1
        whole = shapely.box(1.5 * reduce, 2.5 * reduce, 22.5 * reduce, 23.5 * reduce)
        np.testing.assert_array_equal(count, rasterize([whole], box, reduce))


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=4, max_size=25, unique=True
    ),
    st.sampled_from([1, 2, 3]),
    st.booleans(),
)
def test_triangulation_tiles_exactly(
    points: list[tuple[int, int]], reduce: int, halves: bool
) -> None:
    """Delaunay triangles share sloped edges and vertices: each centre in the hull is filled once."""
    xy = np.asarray(points, dtype=np.float64) / (2 if halves else 1)
    cloud = shapely.MultiPoint(xy)
    hull = shapely.convex_hull(cloud)
    if hull.geom_type != "Polygon":
        return
    triangles = shapely.get_parts(shapely.delaunay_triangles(cloud))
    side = (64 // reduce + 2) * reduce
    box = Box(-reduce, -reduce, side, side)
    count = np.zeros((box.height // reduce, box.width // reduce), dtype=int)
    for tri in triangles:
        count += rasterize([tri], box, reduce)
    assert count.max() <= 1
    np.testing.assert_array_equal(count, rasterize([hull], box, reduce))


# ------------------------------------------------------------------------------------------
# the kernel against the naive reference (rerun with NUMBA_DISABLE_JIT=1)
# ------------------------------------------------------------------------------------------

KERNEL_SETTINGS = settings(deadline=None, max_examples=40)


@pytest.mark.kernels
@KERNEL_SETTINGS
@given(st.lists(shapes(), min_size=1, max_size=2), boxes(max_side=24))
def test_kernel_matches_naive_on_shapes(geoms: list[Any], box_reduce: tuple[Box, int]) -> None:
    box, reduce = box_reduce
    np.testing.assert_array_equal(
        rasterize(geoms, box, reduce), naive_rasterize_geoms(geoms, box, reduce)
    )


@pytest.mark.kernels
@KERNEL_SETTINGS
@given(
    st.lists(grid_polygon(), min_size=1, max_size=3),
    boxes(max_side=24),
    st.integers(1, 255),
)
def test_kernel_matches_naive_on_grid_and_self_intersecting(
    polys: list[shapely.Polygon], box_reduce: tuple[Box, int], value: int
) -> None:
    """Exact ties everywhere (half-integer vertices), bow ties and other self-intersections."""
    box, reduce = box_reduce
    box = Box(box.y // 3, box.x // 3, box.height, box.width).aligned(reduce)
    expected = naive_rasterize_geoms(polys, box, reduce, value)
    np.testing.assert_array_equal(rasterize(polys, box, reduce, value=value), expected)
    np.testing.assert_array_equal(PolygonIndex(polys, value).rasterize(box, reduce), expected)


@pytest.mark.kernels
@pytest.mark.parametrize("reduce", [1, 2, 3])
def test_kernel_exact_on_long_sloped_edges(reduce: int) -> None:
    """Centres exactly on edges whose slope is not a binary fraction.

    On the 9/14 edge, 42 rows down, the slope estimate gives 42 * (9 / 14) =
    27.000000000000004 where the exact crossing is 27 (and 85 * (6 / 17) = 30.000000000000004
    on the 6/17 edge): the kernel must decide such ties by the exact formula.
    """
    c = 0.5 * reduce  # the first pixel centre
    polys = [
        shapely.Polygon(
            [(c, c), (c + 45 * reduce, c + 70 * reduce), (c - 20 * reduce, c + 70 * reduce)]
        ),
        shapely.Polygon([(c, c), (c + 36 * reduce, c + 102 * reduce), (c + 60 * reduce, c)]),
    ]
    box = Box(0, 0, 104 * reduce, 72 * reduce)  # crossings start at t = 0: no rounding luck
    for poly in polys:
        expected = naive_rasterize_geoms([poly], box, reduce)
        np.testing.assert_array_equal(rasterize([poly], box, reduce), expected)
        np.testing.assert_array_equal(PolygonIndex([poly]).rasterize(box, reduce), expected)


@pytest.mark.kernels
@pytest.mark.parametrize("reduce", [1, 2, 3, 4])
def test_kernel_matches_naive_on_fixed_cases(reduce: int) -> None:
    bowtie = shapely.Polygon([(0, 0), (20, 20), (20, 0), (0, 20)])
    holed = shapely.Polygon(
        [(22, 1), (44, 1), (44, 21), (22, 21)],
        [[(25, 5), (30, 5), (30, 10)], [(35.5, 12), (40, 18), (32, 18)]],
    )
    comb = shapely.Polygon(
        [(0, 24), (40, 24), (40, 44), (36, 26), (32, 44), (28, 26), (24, 44), (20, 26), (0, 44)]
    )
    unclosed_rings = [[np.array([(2.0, 2.0), (8.0, 3.0), (5.0, 9.0)])]]  # the kernel closes rings
    box = Box(-12, -12, 60, 60)
    for geom in (bowtie, holed, comb):
        np.testing.assert_array_equal(
            rasterize([geom], box, reduce), naive_rasterize_geoms([geom], box, reduce)
        )
    from tilestream.rasterize import _fill_rings  # the kernel itself, with a ring left open

    out = np.zeros((box.height // reduce, box.width // reduce), np.uint8)
    ring = unclosed_rings[0][0]
    bad = _fill_rings(
        ring, np.array([3], np.int32), np.empty(0, np.int64), 1, box.y, box.x, reduce, out
    )
    assert bad == -1
    np.testing.assert_array_equal(out, naive_rasterize(unclosed_rings, box, reduce))


# ------------------------------------------------------------------------------------------
# inputs, out= and value
# ------------------------------------------------------------------------------------------


def test_out_is_burnt_into_not_cleared() -> None:
    out = np.full((10, 12), 7, np.uint8)
    got = rasterize([shapely.box(2, 3, 6, 5)], Box(0, 0, 10, 12), out=out, value=3)
    assert got is out
    assert (out[3:5, 2:6] == 3).all()
    assert (out == 3).sum() == 8 and (out == 7).sum() == 120 - 8
    # nothing to fill: out is returned untouched
    assert rasterize([], Box(0, 0, 10, 12), out=out) is out and (out == 3).sum() == 8


def test_out_non_contiguous_view() -> None:
    base = np.zeros((20, 24), np.uint8)
    view = base[::2, ::2]
    got = rasterize([shapely.box(0, 0, 8, 6)], Box(0, 0, 20, 24), 2, out=view, value=9)
    assert got is view
    assert (base[0:6:2, 0:8:2] == 9).all() and (base == 9).sum() == 12


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((10, 11), np.uint8),
        np.zeros((10, 12), np.int32),
        np.zeros((10, 12, 1), np.uint8),
        [[0]],
    ],
)
def test_bad_out(out: Any) -> None:
    with pytest.raises(ValueError, match="out must be a uint8 array of shape"):
        rasterize([shapely.box(0, 0, 1, 1)], Box(0, 0, 10, 12), out=out)


def test_readonly_out() -> None:
    out = np.zeros((4, 4), np.uint8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        rasterize([shapely.box(0, 0, 1, 1)], Box(0, 0, 4, 4), out=out)


@pytest.mark.parametrize("value", [0, 256, -1, True, 1.5, "1"])
def test_bad_value(value: Any) -> None:
    with pytest.raises(ValueError, match=r"value must be an integer in 1\.\.255"):
        rasterize([shapely.box(0, 0, 1, 1)], Box(0, 0, 4, 4), value=value)


def test_value_and_numpy_integer_value() -> None:
    mask = rasterize([shapely.box(0, 0, 2, 2)], Box(0, 0, 4, 4), value=np.uint8(255))
    assert mask.max() == 255 and (mask == 255).sum() == 4


def test_unaligned_box() -> None:
    with pytest.raises(BoxError, match="not aligned to reduce=4"):
        rasterize([shapely.box(0, 0, 1, 1)], Box(0, 2, 8, 8), 4)


def test_accepted_inputs() -> None:
    square = shapely.box(1, 1, 5, 4)
    box = Box(0, 0, 6, 6)
    expected = rasterize([square], box)
    assert expected.sum() == 12
    np.testing.assert_array_equal(rasterize(square, box), expected)  # one geometry
    np.testing.assert_array_equal(rasterize(iter([square]), box), expected)  # any iterable
    np.testing.assert_array_equal(rasterize(np.array([square, None]), box), expected)
    np.testing.assert_array_equal(rasterize((None, shapely.Polygon(), square), box), expected)
    z = shapely.Polygon([(1, 1, 9), (5, 1, 9), (5, 4, 9), (1, 4, 9)])  # z is dropped
    np.testing.assert_array_equal(rasterize([z], box), expected)
    assert not rasterize([], box).any()
    assert not rasterize([shapely.MultiPolygon(), shapely.GeometryCollection()], box).any()


def test_geometry_collections_are_exploded_and_lines_inside_them_ignored() -> None:
    a, b, c = shapely.box(0, 0, 2, 2), shapely.box(4, 4, 6, 6), shapely.box(0, 4, 2, 6)
    collection = shapely.GeometryCollection(
        [a, shapely.LineString([(0, 0), (6, 6)]), shapely.Point(3, 3),
         shapely.GeometryCollection([shapely.MultiPolygon([b]), shapely.MultiLineString([[(0, 5), (6, 5)]])]),
         c]
    )  # fmt: skip
    np.testing.assert_array_equal(
        rasterize(collection, Box(0, 0, 6, 6)), rasterize([a, b, c], Box(0, 0, 6, 6))
    )


@pytest.mark.parametrize(
    "geom",
    [
        shapely.Point(1, 1),
        shapely.LineString([(0, 0), (3, 3)]),
        shapely.LinearRing([(0, 0), (3, 0), (3, 3)]),
        shapely.MultiPoint([(0, 0), (1, 1)]),
        shapely.MultiLineString([[(0, 0), (1, 1)]]),
    ],
)
def test_non_polygonal_geometry_raises(geom: Any) -> None:
    with pytest.raises(TypeError, match=f"got {geom.geom_type} at index 1") as err:
        rasterize([shapely.box(0, 0, 1, 1), geom], Box(0, 0, 4, 4))
    assert isinstance(err.value, TilestreamError)


@pytest.mark.parametrize("thing", [[(0, 0), (1, 0), (1, 1)], "POLYGON ((0 0, 1 0, 1 1, 0 0))", 3])
def test_non_geometry_raises(thing: Any) -> None:
    with pytest.raises(
        TypeError, match="shapely Polygon, MultiPolygon or GeometryCollection"
    ) as err:
        rasterize([shapely.box(0, 0, 1, 1), thing], Box(0, 0, 4, 4))
    assert isinstance(err.value, TilestreamError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 5e9])
def test_non_finite_or_absurd_vertex_raises(bad: float) -> None:
    with np.errstate(invalid="ignore"):  # shapely warns when it builds a NaN ring
        poly = shapely.Polygon([(0, 0), (bad, 1), (1, 3)])
    with pytest.raises(ValueError, match="index 1 has a NaN, infinite or absurdly large") as err:
        rasterize([shapely.box(0, 0, 1, 1), poly], Box(0, 0, 4, 4))
    assert isinstance(err.value, TilestreamError)
    with pytest.raises(ValueError, match="index 1 has a NaN"):
        PolygonIndex([shapely.box(0, 0, 1, 1), poly])


# ------------------------------------------------------------------------------------------
# PolygonIndex
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(shapes(), min_size=1, max_size=6), st.lists(boxes(), min_size=1, max_size=4))
def test_index_matches_rasterize(geoms: list[Any], windows: list[tuple[Box, int]]) -> None:
    index = PolygonIndex(geoms)
    for box, reduce in windows:
        np.testing.assert_array_equal(index.rasterize(box, reduce), rasterize(geoms, box, reduce))


def test_index_values_later_wins() -> None:
    a, b = shapely.box(0, 0, 6, 6), shapely.box(3, 3, 9, 9)
    multi = shapely.MultiPolygon([shapely.box(10, 0, 12, 2), shapely.box(10, 8, 12, 10)])
    box = Box(0, 0, 10, 12)
    mask = PolygonIndex([a, b, multi], values=[1, 2, 5]).rasterize(box)
    assert mask[4, 4] == 2 and mask[1, 1] == 1 and mask[8, 8] == 2
    assert mask[1, 11] == 5 and mask[9, 11] == 5
    assert PolygonIndex([b, a], values=np.array([2, 1])).rasterize(box)[4, 4] == 1
    out = np.full((10, 12), 9, np.uint8)
    assert PolygonIndex([a], values=3).rasterize(box, out=out) is out
    assert out[0, 0] == 3 and out[9, 9] == 9


def test_index_empty_and_misc() -> None:
    empty = PolygonIndex([])
    assert len(empty) == 0 and not empty.rasterize(Box(0, 0, 8, 8)).any()
    index = PolygonIndex(
        [shapely.MultiPolygon([shapely.box(0, 0, 2, 2), shapely.box(4, 4, 6, 6)]), None]
    )
    assert len(index) == 2 and "2 polygons" in repr(index)
    clone = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(
        clone.rasterize(Box(0, 0, 8, 8)), index.rasterize(Box(0, 0, 8, 8))
    )
    assert not index.rasterize(Box(100, 100, 8, 8)).any()
    with pytest.raises(BoxError):
        index.rasterize(Box(0, 1, 8, 8), 2)


@pytest.mark.parametrize("values", [[1], [0, 1], [1, 256], [1.0, 2.0], 0, 300])
def test_index_bad_values(values: Any) -> None:
    with pytest.raises(ValueError, match="value"):
        PolygonIndex([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)], values=values)


def test_index_with_holes_and_tall_polygons() -> None:
    rng = np.random.default_rng(3)
    geoms = [shapely.box(0, -5000, 30, 5000).difference(shapely.box(10, 10, 20, 20))]
    geoms += [
        shapely.Point(p).buffer(r)
        for p, r in zip(rng.uniform(0, 400, (40, 2)), rng.uniform(2, 30, 40), strict=True)
    ]
    index = PolygonIndex(geoms)
    for y, x in rng.integers(-50, 400, (20, 2)):
        box = Box(int(y), int(x), 64, 48)
        np.testing.assert_array_equal(index.rasterize(box), rasterize(geoms, box))


# ------------------------------------------------------------------------------------------
# docstring examples
# ------------------------------------------------------------------------------------------


def test_docstring_examples() -> None:
    result = doctest.testmod(
        sys.modules["tilestream.rasterize"], optionflags=doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted >= 4 and result.failed == 0


# ------------------------------------------------------------------------------------------
# real QuPath annotations (HuBMAP, 4th-place team's files); skipped when absent
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hubmap_annotations() -> Path:
    if not HUBMAP_JSON.is_dir():
        pytest.skip(f"real data folder {HUBMAP_JSON} is absent")
    return HUBMAP_JSON


def load_features(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return data["features"] if isinstance(data, dict) else data


def real_polygons(path: Path, limit: int) -> list[Any]:
    geoms = []
    for feature in load_features(path):
        geometry = feature.get("geometry") or {}
        if geometry.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        geom = shapely.geometry.shape(geometry)
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        geoms.append(geom)
        if len(geoms) == limit:
            break
    return geoms


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["095bf7a1f", "2f6ecfcdf", "c68fe75ea", "VUHSK_1762", "e79de561c"])
def test_real_polygons_match_shapely(hubmap_annotations: Path, name: str) -> None:
    geoms = real_polygons(hubmap_annotations / f"{name}.json", limit=4)
    assert geoms
    for k, geom in enumerate(geoms):
        reduce = (1, 2, 4, 3)[k % 4]
        minx, miny, maxx, maxy = geom.bounds
        margin = 16
        box = Box.from_bounds(
            int(miny) - margin, int(minx) - margin, int(maxy) + margin, int(maxx) + margin
        ).aligned(reduce)
        assert_matches_shapely([geom], box, reduce)
        # a window cutting through the polygon
        half = Box.from_bounds(int(miny), int(minx), int((miny + maxy) / 2), int(maxx)).aligned(
            reduce
        )
        assert_matches_shapely([geom], half, reduce)


@pytest.mark.realdata
def test_real_file_index_and_odd_geometries(hubmap_annotations: Path) -> None:
    # c68fe75ea's x coordinates run past the v1 image width (19780): windows clip them
    geoms = real_polygons(hubmap_annotations / "c68fe75ea.json", limit=10_000)
    index = PolygonIndex(geoms)
    assert len(index) >= len(geoms)
    whole = Box(0, 0, 26848, 19792)
    mask = index.rasterize(whole, reduce=16)
    np.testing.assert_array_equal(mask, rasterize(geoms, whole, 16))
    assert_matches_shapely(geoms, whole, 16)
    # afa5e8098 holds a LineString labelled as a glomerulus: rejected with a clear error
    lines = [
        shapely.geometry.shape(f["geometry"])
        for f in load_features(hubmap_annotations / "afa5e8098.json")
        if f["geometry"]["type"] == "LineString"
    ]
    assert lines
    with pytest.raises(TypeError, match="got LineString at index 0"):
        rasterize(lines, Box(0, 0, 64, 64))
