"""A slow, obvious polygon rasterizer: the reference the numba scanline kernel is checked against.

Every pixel centre of the reduced grid is tested against every edge of every ring (even-odd
crossing count), in level-0 pixels relative to the box corner, with the same half-open rule as :func:`tilestream.rasterize.rasterize`: a
horizontal line ``y`` crosses an edge when ``min(y1, y2) <= y < max(y1, y2)``, and the centre
``(x, y)`` toggles inside when the crossing lies at or left of it (``x_cross <= x``). So a
centre on a left edge is inside and one on a right edge is outside. Each polygon is filled on
its own (overlapping polygons give their union).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from numpy.typing import NDArray

from tilestream.geometry import Box

Rings = Sequence[NDArray[np.float64]]  # one polygon: rings of (n, 2) level-0 (x, y) vertices


def polygon_rings(geom: shapely.Geometry) -> list[list[NDArray[np.float64]]]:
    """The rings of every polygon in ``geom`` (Polygon, MultiPolygon or collection)."""
    polys: list[list[NDArray[np.float64]]] = []
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon":
            if not part.is_empty:
                rings = [part.exterior, *part.interiors]
                polys.append([np.asarray(r.coords, dtype=np.float64)[:, :2] for r in rings])
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            polys.extend(polygon_rings(part))
    return polys


def naive_rasterize(
    polygons: Sequence[Rings], box: Box, reduce: int = 1, value: int = 1
) -> NDArray[np.uint8]:
    """Fill ``polygons`` (each a list of rings) into ``box`` at ``reduce``, pixel by pixel."""
    h, w = box.height // reduce, box.width // reduce
    # level-0 pixel centres relative to the box corner (exact), and vertices in that frame
    cy = (np.arange(h) + 0.5) * reduce
    cx = (np.arange(w) + 0.5) * reduce
    out = np.zeros((h, w), dtype=np.uint8)
    for rings in polygons:
        inside = np.zeros((h, w), dtype=bool)
        for ring in rings:
            ring = np.asarray(ring, dtype=np.float64) - (box.x, box.y)
            for k in range(len(ring)):
                x1, y1 = ring[k]
                x2, y2 = ring[(k + 1) % len(ring)]
                if y1 == y2:
                    continue
                if y1 > y2:
                    x1, y1, x2, y2 = x2, y2, x1, y1
                rows = (cy >= y1) & (cy < y2)
                for i in np.flatnonzero(rows):
                    x_cross = x1 + (cy[i] - y1) * (x2 - x1) / (y2 - y1)
                    inside[i] ^= cx >= x_cross
        out[inside] = value
    return out


def naive_rasterize_geoms(
    geoms: Sequence[shapely.Geometry], box: Box, reduce: int = 1, value: int = 1
) -> NDArray[np.uint8]:
    """:func:`naive_rasterize` of shapely geometries (rings taken as they are)."""
    polygons: list[list[NDArray[np.float64]]] = []
    for geom in geoms:
        if geom is not None:
            polygons.extend(polygon_rings(geom))
    return naive_rasterize(polygons, box, reduce, value)
