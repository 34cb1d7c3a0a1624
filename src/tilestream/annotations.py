"""Label sources: masks for any box at any reduce factor, from RLE, polygons or arrays.

Every source satisfies :class:`MaskSource`: ``shape``, ``read(box, reduce=1)`` returning an
``(h, w)`` uint8 mask of the box (0 outside the image), and ``objects()`` listing the labelled
objects (bounding boxes and centroids, for samplers that centre tiles on objects).

Raster sources (:class:`RleMask`, :class:`ArrayMask`) reduce by block majority; polygons
(:class:`PolygonMask`) are filled directly on the reduced grid with the pixel-centre rule, so
image and mask stay aligned on the same reduced grid.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from ._components import components_from_line_runs, flat_runs_to_line_runs, row_runs
from ._io import atomic_path
from ._resample import block_majority
from .errors import AnnotationFormatError, AnnotationWarning
from .geometry import Box
from .rasterize import PolygonIndex
from .rle import rle_decode_window, rle_to_runs

__all__ = ["ArrayMask", "LabelObjects", "MaskArray", "MaskSource", "PolygonMask", "RleMask"]

Order = Literal["F", "C"]


@dataclass(frozen=True)
class LabelObjects:
    """The labelled objects of a mask source, in level-0 pixels.

    Attributes
    ----------
    bboxes : (N, 4) int64 array
        ``(y, x, height, width)`` of each object, half-open.
    centroids : (N, 2) float64 array
        ``(row, col)`` centre of mass of each object.
    classes : tuple of (str or None)
        Class name of each object (``None`` when unknown, e.g. for RLE components).
    """

    bboxes: NDArray[np.int64]
    centroids: NDArray[np.float64]
    classes: tuple[str | None, ...]

    def __len__(self) -> int:
        return int(self.bboxes.shape[0])

    def box(self, i: int) -> Box:
        """The bounding box of object ``i`` as a :class:`~tilestream.Box`."""
        y, x, h, w = (int(v) for v in self.bboxes[i])
        return Box(y, x, h, w)


@runtime_checkable
class MaskSource(Protocol):
    """What samplers and datasets need from a label source."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the labelled image at level 0."""
        ...

    def read(
        self, box: Box, reduce: int = 1, *, out: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """The ``(box.height // reduce, box.width // reduce)`` uint8 mask of ``box``."""
        ...

    def objects(self) -> LabelObjects:
        """Bounding boxes and centroids of the labelled objects."""
        ...


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {tuple(shape)}")
    h, w = (int(v) for v in shape)
    if h <= 0 or w <= 0:
        raise ValueError(f"shape must be two positive integers, got {tuple(shape)}")
    return h, w


def _prepare_out(
    out: NDArray[np.uint8] | None, shape: tuple[int, int], *, clear: bool
) -> NDArray[np.uint8]:
    if out is None:
        return np.zeros(shape, np.uint8)
    if out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"out must be a uint8 array of shape {shape}, got {out.dtype} {out.shape}")
    if clear:
        out.fill(0)
    return out


class MaskArray:
    """A :class:`MaskSource` seen as a read-only ``(H, W)`` uint8 array: slicing reads windows.

    Lets array consumers take any label source, e.g. :func:`~tilestream.rle_encode` encodes a
    polygon or stitched mask band by band without a full-resolution mask. Only step-1 slices.

    Examples
    --------
    >>> import shapely, tilestream as ts
    >>> ts.rle_encode(ts.MaskArray(ts.PolygonMask([shapely.box(1, 0, 3, 2)], (4, 4))))
    '5 2 9 2'
    """

    def __init__(self, source: MaskSource) -> None:
        self.source = source
        self.shape = tuple(source.shape)
        self.ndim = 2
        self.dtype = np.dtype(np.uint8)

    def __getitem__(self, key: tuple[slice, slice]) -> NDArray[np.uint8]:
        ys, xs = key
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0)), np.uint8)
        return self.source.read(Box(y0, x0, y1 - y0, x1 - x0))


# --------------------------------------------------------------------------------------------
# RLE
# --------------------------------------------------------------------------------------------


class RleMask:
    """A whole-slide binary mask held as an RLE string, read window by window.

    The runs are parsed and indexed once; :meth:`read` decodes only the runs that cross the
    window. Memory is two int64 arrays of the run count, never a full-resolution mask.

    Parameters
    ----------
    rle : str
        ``"start length ..."``, 1-based starts (Kaggle/HuBMAP/COCO convention). ``""``, ``None``
        or NaN (an empty CSV cell) mean an empty mask.
    shape : (int, int)
        ``(H, W)`` of the slide at level 0.
    order : {"F", "C"}
        Pixel numbering: ``"F"`` column-major (default, HuBMAP), ``"C"`` row-major.

    Raises
    ------
    RLEFormatError
        Malformed RLE (the message names the token index).

    Examples
    --------
    >>> import tilestream as ts
    >>> m = ts.RleMask("2 3 9 2", shape=(4, 3))
    >>> m.read(ts.Box(0, 0, 4, 3))
    array([[0, 0, 1],
           [1, 0, 1],
           [1, 0, 0],
           [1, 0, 0]], dtype=uint8)
    >>> len(m.objects())
    2
    """

    def __init__(
        self, rle: str | bytes | float | None, shape: Sequence[int], order: Order = "F"
    ) -> None:
        self._shape = _check_shape(shape)
        if order not in ("F", "C"):
            raise ValueError(f'order must be "F" or "C", got {order!r}')
        self.order: Order = order
        if rle is None or (isinstance(rle, float) and math.isnan(rle)):
            rle = ""
        if isinstance(rle, float):
            raise TypeError(f"rle must be a string, got the number {rle!r}")
        starts, lengths = rle_to_runs(rle, shape=self._shape)
        self.starts: NDArray[np.int64] = starts
        self.lengths: NDArray[np.int64] = lengths

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` at level 0."""
        return self._shape

    @property
    def area(self) -> int:
        """Positive pixels at level 0."""
        return int(self.lengths.sum())

    def __repr__(self) -> str:
        return f"RleMask(runs={self.starts.size}, shape={self._shape}, order={self.order!r})"

    def read(
        self, box: Box, reduce: int = 1, *, out: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """The mask of ``box`` at ``1/reduce`` scale (block majority), 0 outside the slide.

        ``out`` (``(h, w)`` uint8), when given, is overwritten and returned.
        """
        box.check_reduce(reduce)
        return rle_decode_window(
            self.starts,
            self.lengths,
            self._shape,
            box,
            reduce=reduce,
            order=self.order,
            out=out,
        )

    def objects(self) -> LabelObjects:
        """Connected components (8-connected), labelled from the runs in O(runs)."""
        h, w = self._shape
        line_length = h if self.order == "F" else w
        lines, lo, hi = flat_runs_to_line_runs(self.starts - 1, self.lengths, line_length)
        bbox, centroid, _ = components_from_line_runs(lines, lo, hi)
        if self.order == "F":  # lines are columns, positions are rows
            bboxes = np.stack(
                [bbox[:, 2], bbox[:, 0], bbox[:, 3] - bbox[:, 2], bbox[:, 1] - bbox[:, 0]], 1
            )
            centroids = centroid[:, ::-1].copy()
        else:
            bboxes = np.stack(
                [bbox[:, 0], bbox[:, 2], bbox[:, 1] - bbox[:, 0], bbox[:, 3] - bbox[:, 2]], 1
            )
            centroids = centroid.copy()
        return LabelObjects(bboxes.astype(np.int64), centroids, (None,) * bboxes.shape[0])


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------


class ArrayMask:
    """A mask held as a 2-D array: numpy in memory, or anything sliceable (zarr, memmap, dask).

    Only the window under a box is pulled from the array on each :meth:`read`.

    Parameters
    ----------
    array : (H, W) array-like
        Label values (0 background; 1 or class ids 1..255).
    band_rows : int
        Rows pulled at a time by :meth:`objects`.

    Examples
    --------
    >>> import numpy as np, tilestream as ts
    >>> m = ts.ArrayMask(np.eye(4, dtype=np.uint8))
    >>> m.read(ts.Box(-2, 0, 4, 4), reduce=2)
    array([[0, 0],
           [1, 0]], dtype=uint8)
    """

    def __init__(self, array: Any, *, band_rows: int = 1024) -> None:
        if len(array.shape) != 2:
            raise ValueError(
                f"mask array must be 2-D (H, W), got shape {tuple(array.shape)}; "
                "squeeze the channel axis first"
            )
        self.array = array
        self._shape = _check_shape(array.shape)
        self.band_rows = int(band_rows)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self._shape

    def __repr__(self) -> str:
        return f"ArrayMask({type(self.array).__name__}, shape={self._shape})"

    def read(
        self, box: Box, reduce: int = 1, *, out: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """The mask of ``box`` at ``1/reduce`` scale (block majority), 0 outside the array."""
        box.check_reduce(reduce)
        shape = (box.height // reduce, box.width // reduce)
        inside = box.clip(self._shape)
        if reduce == 1:
            result = _prepare_out(out, shape, clear=inside != box)
            if inside is not None:
                result[
                    inside.y - box.y : inside.bottom - box.y,
                    inside.x - box.x : inside.right - box.x,
                ] = np.asarray(self.array[inside.y : inside.bottom, inside.x : inside.right])
            return result
        full = np.zeros(box.shape, np.uint8)
        if inside is not None:
            full[
                inside.y - box.y : inside.bottom - box.y, inside.x - box.x : inside.right - box.x
            ] = np.asarray(self.array[inside.y : inside.bottom, inside.x : inside.right])
        result = _prepare_out(out, shape, clear=False)
        return block_majority(full, reduce, out=result)

    def objects(self) -> LabelObjects:
        """Connected components (8-connected) of the non-zero pixels, pulled band by band."""
        h, _ = self._shape
        pieces = []
        for y in range(0, h, self.band_rows):
            band = np.asarray(self.array[y : y + self.band_rows])
            pieces.append(row_runs(band, y))
        lines = np.concatenate([p[0] for p in pieces])
        lo = np.concatenate([p[1] for p in pieces])
        hi = np.concatenate([p[2] for p in pieces])
        bbox, centroid, _ = components_from_line_runs(lines, lo, hi)
        bboxes = np.stack(
            [bbox[:, 0], bbox[:, 2], bbox[:, 1] - bbox[:, 0], bbox[:, 3] - bbox[:, 2]], 1
        )
        return LabelObjects(bboxes.astype(np.int64), centroid, (None,) * bboxes.shape[0])


# --------------------------------------------------------------------------------------------
# Polygons
# --------------------------------------------------------------------------------------------


class PolygonMask:
    """Polygon labels (QuPath / HuBMAP JSON, GeoJSON), filled per window on the reduced grid.

    Geometries are shapely Polygons / MultiPolygons in level-0 ``(x, y)`` pixel coordinates
    (x = column, y = row, as in GeoJSON), clipped to the slide. A
    :class:`~tilestream.PolygonIndex` (built once) finds the polygons under a box and fills them
    with the pixel-centre rule of :func:`~tilestream.rasterize`; :meth:`query` uses an STRtree.

    Parameters
    ----------
    geometries : sequence of shapely geometries
        Polygons or MultiPolygons.
    shape : (int, int)
        ``(H, W)`` of the slide at level 0.
    classes : sequence of (str or None), optional
        Class name of each geometry.
    values : mapping of class name to int in 1..255, optional
        Value :meth:`read` burns for each class. By default every geometry reads as 1 (a
        binary mask). Geometries of classes missing from ``values`` are dropped.

    Notes
    -----
    Where geometries of different classes overlap, the larger value wins. Safe to pickle
    (the STRtree is rebuilt on first use).

    Examples
    --------
    >>> import shapely, tilestream as ts
    >>> m = ts.PolygonMask([shapely.box(1, 0, 3, 2)], shape=(4, 4))
    >>> m.read(ts.Box(0, 0, 4, 4))
    array([[0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0],
           [0, 0, 0, 0]], dtype=uint8)
    """

    def __init__(
        self,
        geometries: Sequence[BaseGeometry],
        shape: Sequence[int],
        *,
        classes: Sequence[str | None] | None = None,
        values: Mapping[str | None, int] | None = None,
    ) -> None:
        self._shape = _check_shape(shape)
        geoms = list(geometries)
        names: list[str | None] = list(classes) if classes is not None else [None] * len(geoms)
        if len(names) != len(geoms):
            raise ValueError(f"{len(geoms)} geometries but {len(names)} class names")
        if values is not None:
            for name, v in values.items():
                if not 1 <= int(v) <= 255:
                    raise ValueError(f"class value for {name!r} must be in 1..255, got {v}")
            keep = [i for i, n in enumerate(names) if n in values]
            geoms = [geoms[i] for i in keep]
            names = [names[i] for i in keep]
        self.values: dict[str | None, int] | None = dict(values) if values is not None else None
        bounds = shapely.box(0, 0, self._shape[1], self._shape[0])
        array = np.asarray(geoms, dtype=object) if geoms else np.zeros(0, dtype=object)
        if array.size:
            # Clip only what crosses the slide edge: an intersection rewrites coordinates
            # (ring start, orientation, rounding) and could move a pixel-centre decision.
            b = shapely.bounds(array)
            inside = (
                (b[:, 0] >= 0)
                & (b[:, 1] >= 0)
                & (b[:, 2] <= self._shape[1])
                & (b[:, 3] <= self._shape[0])
            )
            crossing = ~inside & ~shapely.is_empty(array)
            if crossing.any():
                array[crossing] = shapely.intersection(array[crossing], bounds)
            array = np.array([_polygonal_part(g) for g in array], dtype=object)
            polygonal = np.array([g is not None and not g.is_empty for g in array], dtype=bool)
            names = [n for n, ok in zip(names, polygonal, strict=True) if ok]
            array = array[polygonal]
        self.geometries: NDArray[Any] = array
        self.classes: tuple[str | None, ...] = tuple(names)
        self._burn = np.array(
            [self.values[n] if self.values is not None else 1 for n in self.classes], np.int64
        )
        self._tree: shapely.STRtree | None = None
        self._index: PolygonIndex | None = None

    # -- construction from files ---------------------------------------------------------

    @classmethod
    def from_geojson(
        cls,
        path: str | os.PathLike[str],
        shape: Sequence[int],
        classes: Sequence[str | None] | Mapping[str | None, int] | None = None,
    ) -> PolygonMask:
        """Read QuPath / HuBMAP JSON (a list of Features) or a GeoJSON FeatureCollection.

        Parameters
        ----------
        path : path
            The JSON file.
        shape : (int, int)
            ``(H, W)`` of the slide; polygons are clipped to it.
        classes : sequence or mapping, optional
            ``None``: every polygon reads as 1. A sequence of class names: only those classes,
            read as 1, 2, ... in that order. A mapping name -> value. The class of a feature is
            ``properties.classification.name`` (QuPath), else ``properties.name``,
            ``properties.label`` or ``properties.class``, else ``None``.

        Notes
        -----
        Polygons and MultiPolygons are kept; other geometry types (LineString, Point, ...)
        are skipped with an :class:`~tilestream.AnnotationWarning` naming the feature. Invalid
        rings are repaired with ``shapely.make_valid`` (warning). Features with NaN
        coordinates, rings of fewer than 3 points or lying wholly outside the slide are
        skipped with a warning. A third coordinate (z) is dropped.

        Raises
        ------
        AnnotationFormatError
            The file is not JSON or not a list/collection of features.
        """
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as err:
            raise AnnotationFormatError(
                f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
            ) from err
        features = _features(data, path)
        geoms: list[BaseGeometry] = []
        names: list[str | None] = []
        h, w = _check_shape(shape)
        for index, feature in enumerate(features):
            label = _feature_label(feature, index)
            geom = _feature_geometry(feature, f"{path}: {label}")
            if geom is None:
                continue
            minx, miny, maxx, maxy = geom.bounds
            if minx >= 0 and miny >= 0 and maxx <= w and maxy <= h:
                clipped = geom
            else:
                clipped = _polygonal_part(shapely.intersection(geom, shapely.box(0, 0, w, h)))
            if clipped is None or clipped.is_empty:
                warnings.warn(
                    f"{path}: {label} lies outside the slide (bounds {tuple(round(b) for b in geom.bounds)}"
                    f" vs width {w}, height {h}); skipped",
                    AnnotationWarning,
                    stacklevel=2,
                )
                continue
            geoms.append(clipped)
            names.append(_feature_class(feature))
        values: Mapping[str | None, int] | None
        if classes is None:
            values = None
        elif isinstance(classes, Mapping):
            values = dict(classes)
        else:
            values = {name: i + 1 for i, name in enumerate(classes)}
        return cls(geoms, (h, w), classes=names, values=values)

    # -- MaskSource ------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` at level 0."""
        return self._shape

    def __len__(self) -> int:
        return int(self.geometries.size)

    def __repr__(self) -> str:
        names = sorted({str(n) for n in self.classes})
        return f"PolygonMask({len(self)} polygons, classes={names}, shape={self._shape})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tree"] = None  # rebuilt on first use; the index pickles as arrays
        return state

    @property
    def index(self) -> PolygonIndex:
        """The flattened polygons :meth:`read` fills from (built on first use).

        Geometries are ordered by their burn value (stable) so that where classes overlap the
        larger value wins.
        """
        if self._index is None:
            order = np.argsort(self._burn, kind="stable")
            self._index = PolygonIndex(self.geometries[order], values=self._burn[order])
        return self._index

    @property
    def tree(self) -> shapely.STRtree:
        """The STRtree over the geometries (built on first use)."""
        if self._tree is None:
            self._tree = shapely.STRtree(self.geometries)
        return self._tree

    def query(self, box: Box) -> NDArray[np.int64]:
        """Indices of the geometries whose bounding box intersects ``box``."""
        window = shapely.box(box.x, box.y, box.right, box.bottom)
        return np.asarray(self.tree.query(window), dtype=np.int64)

    def read(
        self, box: Box, reduce: int = 1, *, out: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """The mask of ``box`` at ``1/reduce`` scale: binary, or class values when given.

        ``out`` (``(h, w)`` uint8), when given, is cleared and filled.
        """
        box.check_reduce(reduce)
        result = _prepare_out(out, (box.height // reduce, box.width // reduce), clear=True)
        if not len(self):
            return result
        return self.index.rasterize(box, reduce, out=result)

    def objects(self) -> LabelObjects:
        """One object per geometry: bounding box (outward-rounded) and centroid."""
        if not len(self):
            return LabelObjects(np.zeros((0, 4), np.int64), np.zeros((0, 2)), ())
        b = shapely.bounds(self.geometries)  # minx, miny, maxx, maxy
        y0, x0 = np.floor(b[:, 1]), np.floor(b[:, 0])
        y1, x1 = np.ceil(b[:, 3]), np.ceil(b[:, 2])
        bboxes = np.stack([y0, x0, np.maximum(y1 - y0, 1), np.maximum(x1 - x0, 1)], 1)
        c = shapely.get_coordinates(shapely.centroid(self.geometries))
        return LabelObjects(bboxes.astype(np.int64), c[:, ::-1].copy(), self.classes)

    def to_geojson(self, path: str | os.PathLike[str]) -> None:
        """Write the polygons as a QuPath-importable JSON list of Features, atomically."""
        features = []
        for geom, name in zip(self.geometries, self.classes, strict=True):
            props: dict[str, Any] = {"objectType": "annotation", "isLocked": False}
            if name is not None:
                props["classification"] = {"name": name, "colorRGB": _color(name)}
            features.append(
                {
                    "type": "Feature",
                    "id": "PathAnnotationObject",
                    "geometry": shapely.geometry.mapping(geom),
                    "properties": props,
                }
            )
        write_json_atomic(path, features)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    with atomic_path(path, ".json") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)


def _color(name: str) -> int:
    """A stable QuPath colorRGB (signed 32-bit ARGB) for a class name."""
    h = sum((i + 1) * ord(c) for i, c in enumerate(name)) * 2654435761 % 2**24
    return int(h - 2**24)  # alpha 0xFF -> negative int, as QuPath writes it


def _polygonal_part(geom: BaseGeometry | None) -> BaseGeometry | None:
    """The Polygon/MultiPolygon part of a geometry (drops lines and points), or None."""
    if geom is None or geom.is_empty:
        return None
    kind = geom.geom_type
    if kind in ("Polygon", "MultiPolygon"):
        return geom
    if kind == "GeometryCollection":
        parts = [
            p
            for g in geom.geoms
            for p in ([g] if g.geom_type == "Polygon" else getattr(g, "geoms", []))
            if p.geom_type == "Polygon" and not p.is_empty
        ]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    return None


def _features(data: Any, path: str) -> list[Any]:
    if isinstance(data, dict):
        kind = data.get("type")
        if kind == "FeatureCollection":
            features = data.get("features")
            if not isinstance(features, list):
                raise AnnotationFormatError(f"{path}: FeatureCollection without a features list")
            return features
        if kind == "Feature":
            return [data]
        if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
            return [{"type": "Feature", "geometry": data, "properties": {}}]
        raise AnnotationFormatError(
            f"{path}: expected a list of Features or a FeatureCollection, got an object of "
            f"type {kind!r}"
        )
    if isinstance(data, list):
        return data
    raise AnnotationFormatError(
        f"{path}: expected a list of Features or a FeatureCollection, got {type(data).__name__}"
    )


def _feature_label(feature: Any, index: int) -> str:
    ident = feature.get("id") if isinstance(feature, dict) else None
    name = _feature_class(feature) if isinstance(feature, dict) else None
    extra = ", ".join(str(v) for v in (ident, name) if v is not None)
    return f"feature {index}" + (f" ({extra})" if extra else "")


def _feature_class(feature: Any) -> str | None:
    props = feature.get("properties") if isinstance(feature, dict) else None
    if not isinstance(props, dict):
        return None
    classification = props.get("classification")
    if isinstance(classification, dict) and classification.get("name") is not None:
        return str(classification["name"])
    for key in ("name", "label", "class"):
        if isinstance(props.get(key), str):
            return str(props[key])
    return None


def _warn(message: str) -> None:
    warnings.warn(message, AnnotationWarning, stacklevel=4)


def _feature_geometry(feature: Any, where: str) -> BaseGeometry | None:
    """A valid polygonal shapely geometry for one feature, or None (with a warning)."""
    if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
        _warn(f"{where}: not a GeoJSON Feature with a geometry; skipped")
        return None
    geometry = feature["geometry"]
    kind = geometry.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        _warn(f"{where}: geometry type {kind!r} is not a polygon; skipped")
        return None
    polygons = geometry.get("coordinates")
    if kind == "Polygon":
        polygons = [polygons]
    if not isinstance(polygons, list):
        _warn(f"{where}: coordinates are not a list; skipped")
        return None
    parts = []
    for p, rings in enumerate(polygons):
        try:
            arrays = [np.asarray(ring, dtype=np.float64)[:, :2] for ring in rings]
        except (TypeError, ValueError, IndexError):
            _warn(f"{where}: polygon {p} has malformed coordinates; skipped")
            continue
        if any(not np.isfinite(a).all() for a in arrays):
            _warn(f"{where}: polygon {p} has NaN or infinite coordinates; skipped")
            continue
        if not arrays or len(np.unique(arrays[0], axis=0)) < 3:
            _warn(f"{where}: polygon {p} has an outer ring of fewer than 3 points; skipped")
            continue
        holes = [a for a in arrays[1:] if len(np.unique(a, axis=0)) >= 3]
        parts.append(shapely.Polygon(arrays[0], holes))
    if not parts:
        return None
    geom: BaseGeometry = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        fixed = _polygonal_part(shapely.make_valid(geom))
        _warn(f"{where}: invalid polygon ({reason}); repaired with make_valid")
        if fixed is None:
            return None
        geom = fixed
    return geom
