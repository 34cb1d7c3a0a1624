"""Polygons -> mask inside a :class:`~tilestream.geometry.Box`, filled on the reduced grid.

Polygons come as shapely geometries in level-0 ``(x, y)`` pixel coordinates (the GeoJSON and
QuPath convention: ``x`` is the column, ``y`` the row). Their vertices are extracted with
shapely's vectorised functions into flat ``float64`` arrays and filled by a numba scanline
kernel straight onto the window's reduced grid, so a full-resolution mask is never built.

Pixel-centre rule: reduced pixel ``(i, j)`` of a box is inside a polygon when the level-0 point
``(x, y) = (box.x + (j + 0.5) * reduce, box.y + (i + 0.5) * reduce)`` is inside it, counting
crossings of all rings of the polygon (even-odd, so holes subtract). Centres exactly on an edge
follow the half-open convention of :class:`~tilestream.geometry.Box`: a centre on a left or top
edge is inside, one on a right or bottom edge is outside (precisely: a scanline ``y`` crosses an
edge when ``min(y1, y2) <= y < max(y1, y2)``, and a pixel is filled when its centre ``x`` lies in
``[x_enter, x_exit)``). Two polygons sharing an edge therefore fill every pixel along it exactly
once. Several polygons are filled one after another (their union); a polygon never cancels
another.

Ties are decided exactly: a centre lying exactly on an edge is recognised as such whenever the
crossing is representable in floating point (integer, half-integer or other binary-fraction
vertices, any reduce factor), so the rule above holds bit for bit, not just approximately.
Vertices must be finite and within 1e9 px of the box corner (else ``ValueError``).

:func:`rasterize` takes any geometries (for example those an ``STRtree`` query returned);
:class:`PolygonIndex` flattens a fixed set once and fills any window from it, which is what a
label source reading many windows wants. Both cost about what ``cv2.fillPoly`` costs with
ready-made int32 vertices, and fill the union of overlapping polygons where ``fillPoly``
XORs them (``benchmarks/bench_rasterize.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

from ._jit import njit
from .errors import GeometryTypeError, GeometryValueError
from .geometry import Box

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

__all__ = ["PolygonIndex", "rasterize"]

_MISSING = -1  # shapely's type id of None
_POLYGON = 3
_MULTIPOLYGON = 6
_COLLECTION = 7
_NO_OWNER = np.empty(0, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# kernels


_BIG = 1e9  # a vertex farther than this (level-0 px) from the box corner, or NaN, is rejected
# For |x| < _BIG the fast crossing (from the slope) is within ~1e-6 px of the true one; when it
# lands within _TIE of a pixel-centre boundary, the exact formula decides.
_TIE = 1e-5


@njit
def _first_centre(y: float, reduce: float, hi: int) -> int:
    """The smallest ``i`` in ``[0, hi]`` whose centre ``(i + 0.5) * reduce >= y`` (else ``hi``).

    The estimate from the division is corrected with exact comparisons (``(i + 0.5) * reduce``
    is exact), so a centre lying exactly on ``y`` always counts.
    """
    t = y / reduce - 0.5
    if not t > 0.0:
        i = 0
    elif t >= hi:
        i = hi
    else:
        i = int(np.ceil(t))
    while i > 0 and (i - 0.5) * reduce >= y:
        i -= 1
    while i < hi and (i + 0.5) * reduce < y:
        i += 1
    return i


# columns of the per-edge float scratch
_X, _Y, _DX, _DY, _SLOPE, _T = 0, 1, 2, 3, 4, 5


@njit
def _exact_column(ef: NDArray[np.float64], e: int, row: int, reduce: float) -> float:
    """The first column whose centre is at or right of edge ``e``'s crossing with ``row``.

    The crossing ``x + (cy - y) * dx / dy`` is exact whenever the true crossing is
    representable (integer and half-integer vertices, say), so ties go by the rule.
    """
    cy = (row + 0.5) * reduce
    x = ef[e, _X] + (cy - ef[e, _Y]) * ef[e, _DX] / ef[e, _DY]
    j = float(np.ceil(x / reduce - 0.5))
    while (j - 0.5) * reduce >= x:
        j -= 1.0
    while (j + 0.5) * reduce < x:
        j += 1.0
    return j


@njit
def _close_chain(
    ef: NDArray[np.float64],
    ei: NDArray[np.int64],
    chains: NDArray[np.int64],
    n_chains: int,
    first: int,
    n_edges: int,
    direction: int,
) -> int:
    """Record edges ``first:n_edges`` as a chain, top to bottom; return the chain count."""
    if n_edges == first:
        return n_chains
    if direction < 0:  # an upward chain: its edges came bottom first
        lo = first
        hi = n_edges - 1
        while lo < hi:
            for c in range(6):
                ef[lo, c], ef[hi, c] = ef[hi, c], ef[lo, c]
            for c in range(2):
                ei[lo, c], ei[hi, c] = ei[hi, c], ei[lo, c]
            lo += 1
            hi -= 1
    chains[n_chains, 0] = first
    chains[n_chains, 1] = n_edges - 1
    return n_chains + 1


@njit
def _fill_polygon(
    xy: NDArray[np.float64],
    ring_offsets: NDArray[np.int64],
    ring_lo: int,
    ring_hi: int,
    value: np.uint8,
    y0: float,
    x0: float,
    reduce: float,
    out: NDArray[np.uint8],
    ef: NDArray[np.float64],
    ei: NDArray[np.int64],
    chains: NDArray[np.int64],
    active: NDArray[np.int64],
    cols: NDArray[np.float64],
) -> bool:
    """Fill one polygon (rings ``ring_lo:ring_hi``) with even-odd; False on a bad vertex.

    Works in level-0 pixels relative to the box corner ``(x0, y0)``, where the centre of
    reduced pixel ``(i, j)`` is exactly ``((j + 0.5) * reduce, (i + 0.5) * reduce)``.

    1. Edge table: each non-horizontal edge, oriented downwards (so an edge shared by two
       polygons gives both the same crossings), covers the rows whose centre ``cy`` has
       ``y_top <= cy < y_bottom``, clipped to the window; edges outside it are dropped.
       Consecutive edges going the same way (down or up) form a chain that covers a
       contiguous run of rows, stored top to bottom: the sweep follows a chain edge by edge
       without an event, so a convex polygon is two chains, whatever its vertex count.
    2. Sweep: rows are visited between events (a chain starts or ends). On each row, each
       active chain's crossing gives the first column whose centre ``cx >= crossing``: from
       the edge's slope, in reduced units (``_T`` at the edge's first row, plus ``_SLOPE``
       per row), or from :func:`_exact_column` when that lands within ``_TIE`` of a boundary.
    3. Even-odd: sorted, the columns pair up as spans ``[enter, exit)``, which are filled.
       (A pixel is inside when an odd number of crossings lie at or left of its centre.)

    Scratch: ``ef`` (edges, 6) float64 and ``ei`` (edges, 2) int64 (first row, stop row);
    ``chains`` (edges, 3) int64 (first edge, last edge, current edge); ``active`` and
    ``cols`` hold one entry per active chain.
    """
    h, w = out.shape
    n_edges = 0
    n_chains = 0
    for ring in range(ring_lo, ring_hi):
        start = ring_offsets[ring]
        stop = ring_offsets[ring + 1]
        if stop - start < 2:
            continue
        x_first = xy[start, 0] - x0
        y_first = xy[start, 1] - y0
        if not (abs(x_first) < _BIG and abs(y_first) < _BIG):
            return False
        x_prev = x_first
        y_prev = y_first
        direction = 0  # of the open chain: 1 down, -1 up
        chain_first = n_edges
        # q == stop closes the ring (a no-op for shapely's rings, which repeat the first vertex)
        for q in range(start + 1, stop + 1):
            if q < stop:
                x = xy[q, 0] - x0
                y = xy[q, 1] - y0
                if not (abs(x) < _BIG and abs(y) < _BIG):
                    return False
            else:
                x = x_first
                y = y_first
            if y != y_prev:  # horizontal edges cross no row and do not break a chain
                if y_prev < y:
                    xa, ya, xb, yb, d = x_prev, y_prev, x, y, 1
                else:
                    xa, ya, xb, yb, d = x, y, x_prev, y_prev, -1
                if d != direction:
                    n_chains = _close_chain(
                        ef, ei, chains, n_chains, chain_first, n_edges, direction
                    )
                    direction = d
                    chain_first = n_edges
                top = _first_centre(ya, reduce, h)
                bottom = _first_centre(yb, reduce, h)
                if top < bottom:
                    slope = (xb - xa) / (yb - ya)
                    ei[n_edges, 0] = top
                    ei[n_edges, 1] = bottom
                    ef[n_edges, _X] = xa
                    ef[n_edges, _Y] = ya
                    ef[n_edges, _DX] = xb - xa
                    ef[n_edges, _DY] = yb - ya
                    ef[n_edges, _SLOPE] = slope
                    # the crossing with the first row, in reduced units (centres at integers)
                    ef[n_edges, _T] = (xa + ((top + 0.5) * reduce - ya) * slope) / reduce - 0.5
                    n_edges += 1
            x_prev = x
            y_prev = y
        n_chains = _close_chain(ef, ei, chains, n_chains, chain_first, n_edges, direction)
    if n_chains == 0:
        return True

    # chains by first row (insertion sort: few chains); chains[:, 2] = current edge
    order = active[n_chains:]  # spare room: at most n_chains chains are ever active
    for c in range(n_chains):
        chains[c, 2] = chains[c, 0]
        key = ei[chains[c, 0], 0]
        b = c
        while b > 0 and ei[chains[order[b - 1], 0], 0] > key:
            order[b] = order[b - 1]
            b -= 1
        order[b] = c
    row = ei[chains[order[0], 0], 0]
    n_active = 0
    nxt = 0
    while True:
        # event: chains ending at this row leave, chains starting here join
        kept = 0
        for a in range(n_active):
            c = active[a]
            if ei[chains[c, 1], 1] > row:
                active[kept] = c
                kept += 1
        n_active = kept
        while nxt < n_chains and ei[chains[order[nxt], 0], 0] <= row:
            active[n_active] = order[nxt]
            n_active += 1
            nxt += 1
        if n_active == 0:
            if nxt == n_chains:
                break
            row = ei[chains[order[nxt], 0], 0]
            continue
        next_event = ei[chains[order[nxt], 0], 0] if nxt < n_chains else h
        for a in range(n_active):
            end = ei[chains[active[a], 1], 1]
            if end < next_event:
                next_event = end
        # rows row .. next_event - 1 share one set of active chains
        if n_active == 2:  # the common case, without the sorting
            ca = active[0]
            cb = active[1]
            ea = chains[ca, 2]
            eb = chains[cb, 2]
            stop_a = -1  # forces loading edge ea's fields
            stop_b = -1
            while row < next_event:
                # _column, inlined by hand with the edge's fields in locals: the hot path
                if row >= stop_a:
                    while ei[ea, 1] <= row:
                        ea += 1
                    first_a, stop_a, t0_a, slope_a = (
                        ei[ea, 0],
                        ei[ea, 1],
                        ef[ea, _T],
                        ef[ea, _SLOPE],
                    )
                if row >= stop_b:
                    while ei[eb, 1] <= row:
                        eb += 1
                    first_b, stop_b, t0_b, slope_b = (
                        ei[eb, 0],
                        ei[eb, 1],
                        ef[eb, _T],
                        ef[eb, _SLOPE],
                    )
                t_a = t0_a + (row - first_a) * slope_a
                j_a = np.ceil(t_a)
                if j_a - t_a < _TIE or t_a - j_a + 1.0 < _TIE:
                    j_a = _exact_column(ef, ea, row, reduce)
                t_b = t0_b + (row - first_b) * slope_b
                j_b = np.ceil(t_b)
                if j_b - t_b < _TIE or t_b - j_b + 1.0 < _TIE:
                    j_b = _exact_column(ef, eb, row, reduce)
                left = min(j_a, j_b)
                right = max(j_a, j_b)
                if left < 0.0:
                    left = 0.0
                if right > w:
                    right = float(w)
                if left < right:
                    out[row, np.int64(left) : np.int64(right)] = value
                row += 1
            chains[ca, 2] = ea
            chains[cb, 2] = eb
            continue
        while row < next_event:
            for a in range(n_active):
                c = active[a]
                e = chains[c, 2]
                while ei[e, 1] <= row:
                    e += 1
                chains[c, 2] = e
                t = ef[e, _T] + (row - ei[e, 0]) * ef[e, _SLOPE]
                j = np.ceil(t)
                if j - t < _TIE or t - j + 1.0 < _TIE:
                    j = _exact_column(ef, e, row, reduce)
                # insertion sort by column: the order barely changes from row to row
                b = a
                while b > 0 and cols[b - 1] > j:
                    cols[b] = cols[b - 1]
                    active[b] = active[b - 1]
                    b -= 1
                cols[b] = j
                active[b] = c
            for a in range(0, n_active - 1, 2):
                left = cols[a]
                right = cols[a + 1]
                if left < 0.0:
                    left = 0.0
                if right > w:
                    right = float(w)
                if left < right:
                    out[row, np.int64(left) : np.int64(right)] = value
            row += 1
    return True


@njit
def _fill_indexed(
    xy: NDArray[np.float64],
    ring_offsets: NDArray[np.int64],
    poly_rings: NDArray[np.int64],
    values: NDArray[np.uint8],
    candidates: NDArray[np.int64],
    bounds: NDArray[np.float64],
    y0: int,
    x0: int,
    reduce: int,
    out: NDArray[np.uint8],
) -> int:
    """Fill polygons ``candidates`` into ``out`` in increasing index order (later ones win).

    Ring ``r`` is ``xy[ring_offsets[r]:ring_offsets[r + 1]]``; polygon ``p`` owns rings
    ``poly_rings[p]:poly_rings[p + 1]`` and burns ``values[p]``. Candidates whose level-0
    ``bounds`` (``(P, 4)``: minx, miny, maxx, maxy) miss the window are skipped. Return -1,
    or the index of the first polygon with a non-finite vertex (``out`` is then partly filled).
    """
    h, w = out.shape
    rf = float(reduce)
    y0f = float(y0)
    x0f = float(x0)
    y1f = y0f + h * rf
    x1f = x0f + w * rf
    keep = np.empty(candidates.shape[0], dtype=np.int64)
    n_keep = 0
    max_edges = 0
    for k in range(candidates.shape[0]):
        p = candidates[k]
        if bounds[p, 0] > x1f or bounds[p, 2] < x0f or bounds[p, 1] > y1f or bounds[p, 3] < y0f:
            continue
        keep[n_keep] = p
        n_keep += 1
        n = ring_offsets[poly_rings[p + 1]] - ring_offsets[poly_rings[p]]
        if n > max_edges:
            max_edges = n
    if n_keep == 0:
        return -1
    keep = np.sort(keep[:n_keep])
    ef = np.empty((max_edges, 6), dtype=np.float64)
    ei = np.empty((max_edges, 2), dtype=np.int64)
    chains = np.empty((max_edges, 3), dtype=np.int64)
    active = np.empty(2 * max_edges, dtype=np.int64)
    cols = np.empty(max_edges, dtype=np.float64)
    for k in range(n_keep):
        p = keep[k]
        ok = _fill_polygon(
            xy, ring_offsets, poly_rings[p], poly_rings[p + 1], values[p], y0f, x0f, rf,
            out, ef, ei, chains, active, cols,
        )  # fmt: skip
        if not ok:
            return int(p)
    return -1


@njit
def _fill_rings(
    xy: NDArray[np.float64],
    ring_counts: NDArray[np.int32],
    ring_owner: NDArray[np.int64],
    value: int,
    y0: int,
    x0: int,
    reduce: int,
    out: NDArray[np.uint8],
) -> int:
    """Fill polygons given as consecutive rings (shapely's output, straight) into ``out``.

    Ring ``r`` has ``ring_counts[r]`` vertices, stored one ring after another in ``xy``.
    ``ring_owner[r]`` is the polygon of ring ``r`` (non-decreasing); empty means one ring per
    polygon. Return -1, or the ordinal of the first polygon with a non-finite vertex.
    """
    n_rings = ring_counts.shape[0]
    ring_offsets = np.empty(n_rings + 1, dtype=np.int64)
    poly_rings = np.empty(n_rings + 1, dtype=np.int64)
    ring_offsets[0] = 0
    poly_rings[0] = 0
    n_polys = 0
    max_edges = 0
    first = 0  # first vertex of the current polygon
    for r in range(n_rings):
        ring_offsets[r + 1] = ring_offsets[r] + ring_counts[r]
        if ring_owner.shape[0] == 0 or r + 1 == n_rings or ring_owner[r + 1] != ring_owner[r]:
            n_polys += 1
            poly_rings[n_polys] = r + 1
            if ring_offsets[r + 1] - first > max_edges:
                max_edges = ring_offsets[r + 1] - first
            first = ring_offsets[r + 1]
    rf = float(reduce)
    ef = np.empty((max_edges, 6), dtype=np.float64)
    ei = np.empty((max_edges, 2), dtype=np.int64)
    chains = np.empty((max_edges, 3), dtype=np.int64)
    active = np.empty(2 * max_edges, dtype=np.int64)
    cols = np.empty(max_edges, dtype=np.float64)
    fill = np.uint8(value)
    for p in range(n_polys):
        ok = _fill_polygon(
            xy, ring_offsets, poly_rings[p], poly_rings[p + 1], fill, float(y0), float(x0),
            rf, out, ef, ei, chains, active, cols,
        )  # fmt: skip
        if not ok:
            return int(p)
    return -1


# --------------------------------------------------------------------------------------------
# geometries -> flat arrays


def _as_geometry_array(geoms: Iterable[BaseGeometry | None] | BaseGeometry) -> NDArray[Any]:
    """A 1-D object array of the inputs (a single geometry becomes a length-1 array)."""
    if isinstance(geoms, np.ndarray):
        return geoms.ravel()
    if isinstance(geoms, shapely.Geometry):
        arr = np.empty(1, dtype=object)
        arr[0] = geoms
        return arr
    if not isinstance(geoms, (list, tuple)):
        geoms = list(geoms)
    return np.fromiter(geoms, dtype=object, count=len(geoms))


def _type_ids(arr: NDArray[Any], src: NDArray[np.int64] | None) -> NDArray[np.int64]:
    try:
        return shapely.get_type_id(arr)  # type: ignore[no-any-return]
    except TypeError as err:
        bad = next(
            i for i, g in enumerate(arr) if g is not None and not isinstance(g, shapely.Geometry)
        )
        where = int(src[bad]) if src is not None else bad
        raise GeometryTypeError(
            f"geoms must hold shapely Polygon, MultiPolygon or GeometryCollection objects, got "
            f"{type(arr[bad]).__name__} at index {where}; build shapes with "
            f"shapely.geometry.shape(feature['geometry'])"
        ) from err


def _polygons(arr: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.int64] | None]:
    """Explode MultiPolygons and collections into Polygons, in input order.

    Returns the polygons and, when anything was exploded or dropped, the input index of each
    (``None`` means polygon ``k`` is input ``k``). None entries are dropped; other non-polygonal
    types raise at the top level and are dropped inside collections (they cover no area).
    """
    types = _type_ids(arr, None)
    if not np.count_nonzero(types != _POLYGON):
        return arr, None
    allowed = (types == _POLYGON) | (types == _MULTIPOLYGON) | (types == _COLLECTION)
    allowed |= types == _MISSING
    if not bool(allowed.all()):
        bad = int(np.flatnonzero(~allowed)[0])
        raise GeometryTypeError(
            f"geoms must be Polygon, MultiPolygon or GeometryCollection, got "
            f"{arr[bad].geom_type} at index {bad}; buffer lines and points first if they should "
            f"cover an area, or drop them"
        )
    src = np.arange(arr.shape[0], dtype=np.int64)
    while True:
        nested = (types == _MULTIPOLYGON) | (types == _COLLECTION)
        if not bool(nested.any()):
            break
        parts, index = shapely.get_parts(arr[nested], return_index=True)
        plain = types == _POLYGON
        arr = np.concatenate([arr[plain], parts])
        src = np.concatenate([src[plain], src[nested][index]])
        types = _type_ids(arr, src)
    keep = types == _POLYGON
    arr, src = arr[keep], src[keep]
    order = np.argsort(src, kind="stable")
    return arr[order], src[order]


def _rings(
    polys: NDArray[Any],
) -> tuple[NDArray[np.float64], NDArray[np.int32], NDArray[np.int64]]:
    """Vertices of all rings of ``polys`` as ``(xy, ring_counts, ring_owner)``.

    ``xy`` is ``(N, 2)`` float64 level-0 ``(x, y)``, ring after ring (exterior first); ring
    ``r`` has ``ring_counts[r]`` vertices and belongs to polygon ``ring_owner[r]`` (empty when
    no polygon has holes: then ring ``r`` is polygon ``r``).
    """
    if np.count_nonzero(shapely.get_num_interior_rings(polys)):
        rings, owner = shapely.get_rings(polys, return_index=True)
        return shapely.get_coordinates(rings), shapely.get_num_coordinates(rings), owner
    return shapely.get_coordinates(polys), shapely.get_num_coordinates(polys), _NO_OWNER


def _check_value(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 255:
        raise ValueError(f"value must be an integer in 1..255, got {value!r}")
    return int(value)


def _prepare_out(out: NDArray[np.uint8] | None, shape: tuple[int, int]) -> NDArray[np.uint8]:
    if out is None:
        return np.zeros(shape, dtype=np.uint8)
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != shape:
        got = (
            f"{out.dtype} array of shape {out.shape}"
            if isinstance(out, np.ndarray)
            else type(out).__name__
        )
        raise ValueError(f"out must be a uint8 array of shape {shape} (box / reduce), got {got}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    return out


def _raise_non_finite(bad: int, src: NDArray[np.int64] | None) -> None:
    where = int(src[bad]) if src is not None else bad
    raise GeometryValueError(
        f"geometry at index {where} has a NaN, infinite or absurdly large (> 1e9 px) vertex; "
        f"fix or drop it (numpy.isfinite(shapely.get_coordinates(geom)) finds it)"
    )


# --------------------------------------------------------------------------------------------
# public API


def rasterize(
    geoms: Iterable[BaseGeometry | None] | BaseGeometry,
    box: Box,
    reduce: int = 1,
    *,
    value: int = 1,
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Fill polygons into the window ``box`` on the grid reduced by ``reduce``.

    Parameters
    ----------
    geoms : iterable of shapely Polygon / MultiPolygon / GeometryCollection, or one geometry
        Level-0 ``(x, y)`` pixel coordinates (GeoJSON / QuPath: ``x`` = column, ``y`` = row).
        Holes are respected; ``None`` and empty geometries are ignored; members of a
        GeometryCollection that cover no area (points, lines) are ignored. Each polygon is
        filled on its own, so overlapping polygons give their union.
    box : Box
        The window, level-0 ``(row, col)``, half-open; may extend past the polygons or the slide.
        Every field must be a multiple of ``reduce``.
    reduce : int
        Reduce factor; the mask has shape ``(box.height // reduce, box.width // reduce)``.
    value : int
        Value (1..255) written into inside pixels.
    out : (h, w) uint8 array, optional
        Burn ``value`` into this array instead of a new zeroed one. It is **not cleared first**:
        pixels outside the polygons keep what they held. Returned as is.

    Returns
    -------
    (box.height // reduce, box.width // reduce) uint8 array
        ``value`` where the pixel centre is inside a polygon, else 0 (or the old ``out``).

    Raises
    ------
    TypeError
        (a :class:`~tilestream.errors.TilestreamError`) for a geometry that is not a Polygon,
        MultiPolygon or GeometryCollection, or an object that is not a shapely geometry.
    ValueError
        For a NaN or infinite vertex (also a ``TilestreamError``), a ``value`` outside 1..255 or
        an ``out`` of the wrong shape or dtype.
    tilestream.BoxError
        When ``box`` is not aligned to ``reduce``.

    Notes
    -----
    Reduced pixel ``(i, j)`` is inside when the level-0 point ``(x, y) = (box.x + (j + 0.5) *
    reduce, box.y + (i + 0.5) * reduce)`` is inside the polygon (even-odd over its rings).
    Centres exactly on an edge follow the box's half-open convention (left and top edges are
    in, right and bottom edges are out), so polygons that share an edge fill each pixel along
    it exactly once. Only edges crossing the window's rows are visited, so a small window of a
    large geometry costs what the geometry has near the window.

    Examples
    --------
    >>> import shapely
    >>> from tilestream.geometry import Box
    >>> square = shapely.box(1, 1, 5, 4)  # x 1..5 (columns), y 1..4 (rows)
    >>> rasterize([square], Box(0, 0, 6, 6))
    array([[0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0]], dtype=uint8)
    >>> rasterize([shapely.box(2, 0, 6, 4)], Box(0, 0, 6, 6), reduce=2, value=7)
    array([[0, 7, 7],
           [0, 7, 7],
           [0, 0, 0]], dtype=uint8)
    """
    fill_value = _check_value(value)
    box.check_reduce(reduce)
    out = _prepare_out(out, (box.height // reduce, box.width // reduce))
    polys, src = _polygons(_as_geometry_array(geoms))
    if not polys.shape[0]:
        return out
    xy, ring_counts, ring_owner = _rings(polys)
    target = out if out.flags.c_contiguous else np.ascontiguousarray(out)
    bad = _fill_rings(xy, ring_counts, ring_owner, fill_value, box.y, box.x, reduce, target)
    if target is not out:
        out[...] = target
    if bad >= 0:
        _raise_non_finite(bad, src)
    return out


class PolygonIndex:
    """A fixed set of polygons flattened once, to fill many windows fast.

    Vertices, ring offsets and bounds are extracted once into flat arrays; each
    :meth:`rasterize` call finds the polygons near the window by a binary search on their top
    edges and fills them with the same kernel and pixel-centre rule as :func:`rasterize`, with
    no shapely call per window.

    Parameters
    ----------
    geoms : iterable of shapely Polygon / MultiPolygon / GeometryCollection, or one geometry
        Level-0 ``(x, y)`` pixel coordinates, as for :func:`rasterize`.
    values : int or sequence of int
        Value (1..255) burnt for every geometry, or one per geometry. Where geometries
        overlap, the later one wins.

    Notes
    -----
    Holds only numpy arrays: safe to pickle and to share between threads (each call writes
    only into its own output).

    Examples
    --------
    >>> import shapely
    >>> from tilestream.geometry import Box
    >>> index = PolygonIndex([shapely.box(0, 0, 4, 4), shapely.box(8, 0, 12, 4)], values=[1, 2])
    >>> len(index)
    2
    >>> index.rasterize(Box(0, 2, 4, 8), reduce=2)
    array([[1, 0, 0, 2],
           [1, 0, 0, 2]], dtype=uint8)
    """

    def __init__(
        self,
        geoms: Iterable[BaseGeometry | None] | BaseGeometry,
        values: int | ArrayLike = 1,
    ) -> None:
        arr = _as_geometry_array(geoms)
        polys, src = _polygons(arr)
        empty = shapely.is_empty(polys)
        if empty.any():  # their bounds are NaN
            src = (np.arange(polys.shape[0], dtype=np.int64) if src is None else src)[~empty]
            polys = polys[~empty]
        n = polys.shape[0]
        self._values = _per_polygon_values(values, arr.shape[0], n, src)
        self._src = src
        xy, ring_counts, ring_owner = _rings(polys)
        self._xy = np.ascontiguousarray(xy, dtype=np.float64).reshape(-1, 2)
        self._ring_offsets = np.zeros(ring_counts.shape[0] + 1, dtype=np.int64)
        np.cumsum(ring_counts, out=self._ring_offsets[1:])
        if ring_owner.shape[0]:
            self._poly_rings = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(ring_owner, minlength=n), out=self._poly_rings[1:])
        else:
            self._poly_rings = np.arange(n + 1, dtype=np.int64)
        finite = (np.abs(self._xy) < _BIG).all(axis=1)  # also False for NaN
        if not finite.all():
            vertex = int(np.flatnonzero(~finite)[0])
            ring = int(np.searchsorted(self._ring_offsets, vertex, side="right")) - 1
            _raise_non_finite(int(np.searchsorted(self._poly_rings, ring, side="right")) - 1, src)
        bounds = np.asarray(shapely.bounds(polys), dtype=np.float64).reshape(-1, 4)
        self._bounds = np.ascontiguousarray(bounds)
        self._by_top = np.argsort(bounds[:, 1], kind="stable").astype(np.int64)
        self._tops = np.ascontiguousarray(bounds[self._by_top, 1])
        self._max_height = float((bounds[:, 3] - bounds[:, 1]).max()) if n else 0.0

    def __len__(self) -> int:
        """Number of non-empty polygons, after exploding MultiPolygons and collections."""
        return int(self._values.shape[0])

    def __repr__(self) -> str:
        return f"PolygonIndex({len(self)} polygons, {self._xy.shape[0]} vertices)"

    def rasterize(
        self, box: Box, reduce: int = 1, *, out: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """Fill the polygons into the window ``box`` on the grid reduced by ``reduce``.

        Parameters
        ----------
        box : Box
            Level-0 window, half-open, aligned to ``reduce``; may extend past everything.
        reduce : int
            Reduce factor; the mask is ``(box.height // reduce, box.width // reduce)``.
        out : (h, w) uint8 array, optional
            Burn the values into this array; it is **not cleared first**. Returned as is.

        Returns
        -------
        (box.height // reduce, box.width // reduce) uint8 array
            Each polygon's value where the pixel centre is inside it, else 0 (or the old
            ``out``). Same rule as :func:`rasterize`.

        Raises
        ------
        tilestream.BoxError
            When ``box`` is not aligned to ``reduce``.
        ValueError
            For an ``out`` of the wrong shape or dtype.
        """
        box.check_reduce(reduce)
        out = _prepare_out(out, (box.height // reduce, box.width // reduce))
        lo = int(self._tops.searchsorted(box.y - self._max_height, side="left"))
        hi = int(self._tops.searchsorted(box.bottom, side="right"))
        if lo >= hi:
            return out
        target = out if out.flags.c_contiguous else np.ascontiguousarray(out)
        bad = _fill_indexed(
            self._xy, self._ring_offsets, self._poly_rings, self._values, self._by_top[lo:hi],
            self._bounds, box.y, box.x, reduce, target,
        )  # fmt: skip
        if target is not out:
            out[...] = target
        if bad >= 0:  # pragma: no cover - vertices were checked when the index was built
            _raise_non_finite(bad, self._src)
        return out


def _per_polygon_values(
    values: int | ArrayLike, n_geoms: int, n_polys: int, src: NDArray[np.int64] | None
) -> NDArray[np.uint8]:
    """``values`` (a scalar or one per input geometry) as one uint8 per exploded polygon."""
    if np.ndim(values) == 0:
        return np.full(n_polys, _check_value(values), dtype=np.uint8)  # type: ignore[arg-type]
    given = np.asarray(values)
    if given.shape != (n_geoms,):
        raise ValueError(
            f"values must be a scalar or have one entry per geometry ({n_geoms}), "
            f"got shape {given.shape}"
        )
    if given.dtype.kind not in "iu" or (given.size and (given.min() < 1 or given.max() > 255)):
        raise ValueError(f"values must be integers in 1..255, got {given!r}")
    per_geom = given.astype(np.uint8)
    return per_geom[src] if src is not None else per_geom
