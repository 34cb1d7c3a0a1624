"""Samplers: where tiles come from. Random (tissue-filtered, object-centred, region-weighted)
and sliding-window boxes, and the exact partition of a sample list into shards.

A sampler is configuration only. :class:`~tilestream.TileDataset` prepares what it needs about
each slide once (:class:`SourceInfo`: shape, tissue map, label objects, region raster) and then
asks for the box of sample ``g``: a random sampler draws it from a generator seeded with
``(seed, epoch, g)``, a grid sampler looks it up in its list. Either way a sample is a pure
function of its address, so sharding, resuming and reproducing are exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .geometry import Box, check_reduce_factor
from .tissue import TissueMap

__all__ = ["GridSampler", "RandomSampler", "SourceInfo", "grid_positions", "shard_range"]


@dataclass(frozen=True, eq=False)
class SourceInfo:
    """What samplers know about one slide (prepared once, pickled to workers).

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` at level 0.
    tissue : TissueMap or None
        Low-resolution tissue mask.
    centroids : (N, 2) float array or None
        ``(row, col)`` level-0 centres of the labelled objects (for positive sampling).
    regions : (h, w) uint8 array or None
        Region class index per tissue-map pixel (0 = none), on the tissue map's grid.
    region_names : tuple of str
        Name of region class ``k`` (index ``k - 1``).
    """

    shape: tuple[int, int]
    tissue: TissueMap | None = None
    centroids: NDArray[np.float64] | None = None
    regions: NDArray[np.uint8] | None = None
    region_names: tuple[str, ...] = ()
    _region_pixels: dict[str | None, NDArray[np.int64]] = field(default_factory=dict, repr=False)

    def region_pixels(self, name: str | None) -> NDArray[np.int64]:
        """Flat indices of tissue-map pixels that are tissue and in region ``name``.

        ``None`` means tissue outside every named region.
        """
        cached = self._region_pixels.get(name)
        if cached is not None:
            return cached
        if self.tissue is None or self.regions is None:
            pixels = np.zeros(0, np.int64)
        else:
            code = (
                0
                if name is None
                else (self.region_names.index(name) + 1 if name in self.region_names else -1)
            )
            pixels = (
                np.flatnonzero(self.tissue.mask & (self.regions == code))
                if code >= 0
                else np.zeros(0, np.int64)
            )
        self._region_pixels[name] = pixels
        return pixels

    @property
    def tissue_area(self) -> float:
        """Tissue area in level-0 pixels (the whole slide when no tissue map)."""
        if self.tissue is None:
            return float(self.shape[0] * self.shape[1])
        return float(self.tissue.area)


def shard_range(n: int, shard: int, n_shards: int) -> range:
    """The ``shard``-th of ``n_shards`` contiguous, near-equal parts of ``range(n)``.

    The parts are disjoint, cover ``range(n)`` exactly and differ in length by at most one.

    Examples
    --------
    >>> [list(shard_range(7, s, 3)) for s in range(3)]
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in [0, {n_shards}), got {shard}")
    base, extra = divmod(n, n_shards)
    start = shard * base + min(shard, extra)
    return range(start, start + base + (1 if shard < extra else 0))


def _choose(probabilities: NDArray[np.float64], rng: np.random.Generator) -> int:
    """``int(rng.choice(len(probabilities), p=probabilities))``: the same draw (one
    ``rng.random()`` against the normalised cumulative sum), without ``choice``'s checks."""
    cdf = np.cumsum(probabilities)
    cdf /= cdf[-1]
    return int(cdf.searchsorted(rng.random(), side="right"))


def _aligned_box(cy: float, cx: float, tile: int, reduce: int, shape: tuple[int, int]) -> Box:
    """A tile x tile box centred near (cy, cx), aligned to reduce, kept inside the slide
    when the slide is at least a tile large."""
    y = math.floor((cy - tile / 2) / reduce) * reduce
    x = math.floor((cx - tile / 2) / reduce) * reduce
    h, w = shape
    if h >= tile:
        y = min(max(y, 0), (h - tile) // reduce * reduce)
    if w >= tile:
        x = min(max(x, 0), (w - tile) // reduce * reduce)
    return Box._trusted(y, x, tile, tile)


@dataclass(frozen=True)
class RandomSampler:
    """Random boxes over tissue, centred on labelled objects, or weighted by region.

    Parameters
    ----------
    tile : int
        Box side in level-0 pixels (the model sees ``tile // reduce``).
    reduce : int
        Reduce factor of the reads; box corners are multiples of it.
    min_tissue : float
        Tissue boxes whose tissue fraction is below this are redrawn (up to ``max_tries``;
        the best draw is kept).
    positive_fraction : float
        Probability that a box is centred (with jitter) on a labelled object of the slide.
    jitter : float
        Offset of an object-centred box from the object's centre: uniform in
        ``[-jitter * tile / 2, jitter * tile / 2]`` in each axis.
    region_weights : mapping of region name (or None) to weight, optional
        Draw tissue boxes from regions with these weights, e.g.
        ``{"Cortex": 0.7, "Medulla": 0.2, None: 0.1}`` (``None``: tissue in no named region).
        Regions missing from a slide are left out and the rest renormalised.
    slide_weights : sequence of float, optional
        Probability of each slide. Default: proportional to tissue area.
    max_tries : int
        Redraws allowed to meet ``min_tissue``.

    Notes
    -----
    A box is kept inside the slide when the slide is at least one tile large. The draw for
    sample ``g`` of an epoch uses ``numpy.random.default_rng((seed, epoch, g))``.
    """

    tile: int
    _: KW_ONLY
    reduce: int = 1
    min_tissue: float = 0.0
    positive_fraction: float = 0.0
    jitter: float = 0.25
    region_weights: Mapping[str | None, float] | None = None
    slide_weights: Sequence[float] | None = None
    max_tries: int = 16

    def __post_init__(self) -> None:
        check_reduce_factor(self.reduce)
        if self.tile <= 0 or self.tile % self.reduce:
            raise ValueError(
                f"tile must be a positive multiple of reduce={self.reduce}, got {self.tile}"
            )
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ValueError(f"min_tissue must be in [0, 1], got {self.min_tissue}")
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {self.positive_fraction}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        if self.region_weights is not None and (
            not self.region_weights or any(w < 0 for w in self.region_weights.values())
        ):
            raise ValueError(
                f"region_weights must be non-negative weights, got {self.region_weights}"
            )
        if self.max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {self.max_tries}")

    @property
    def needs_tissue(self) -> bool:
        """Whether slides need a tissue map (boxes are drawn over tissue)."""
        return True

    @property
    def needs_objects(self) -> bool:
        """Whether label objects are needed (object-centred boxes)."""
        return self.positive_fraction > 0

    @property
    def needs_regions(self) -> bool:
        """Whether region rasters are needed (region-weighted boxes)."""
        return self.region_weights is not None

    def slide_probabilities(self, infos: Sequence[SourceInfo]) -> NDArray[np.float64]:
        """Probability of drawing each slide."""
        if self.slide_weights is not None:
            weights = np.asarray(self.slide_weights, np.float64)
            if weights.shape != (len(infos),) or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(
                    f"slide_weights must be {len(infos)} non-negative weights with a positive "
                    f"sum, got {list(self.slide_weights)}"
                )
        else:
            weights = np.array([info.tissue_area for info in infos], np.float64)
            if weights.sum() <= 0:
                weights = np.ones(len(infos))
        probabilities: NDArray[np.float64] = weights / weights.sum()
        return probabilities

    def draw(
        self,
        infos: Sequence[SourceInfo],
        probabilities: NDArray[np.float64],
        rng: np.random.Generator,
    ) -> tuple[int, Box, bool]:
        """One sample: ``(slide index, box, is_positive)``.

        The draws are those of ``rng.choice(len(infos), p=probabilities)`` and scalar numpy
        calls, made without the per-call overhead of the array forms (the stream is the same).
        """
        k = _choose(probabilities, rng)
        info = infos[k]
        if (
            self.positive_fraction > 0
            and info.centroids is not None
            and len(info.centroids)
            and rng.random() < self.positive_fraction
        ):
            cy, cx = info.centroids[int(rng.integers(len(info.centroids)))].tolist()
            uy, ux = rng.random(2).tolist()
            dy = (uy * 2 - 1) * self.jitter * self.tile / 2
            dx = (ux * 2 - 1) * self.jitter * self.tile / 2
            return k, _aligned_box(cy + dy, cx + dx, self.tile, self.reduce, info.shape), True
        best: Box | None = None
        best_fraction = -1.0
        for _ in range(self.max_tries):
            cy, cx = self._tissue_point(info, rng)
            box = _aligned_box(cy, cx, self.tile, self.reduce, info.shape)
            fraction = info.tissue.fraction(box) if info.tissue is not None else 1.0
            if fraction > best_fraction:
                best, best_fraction = box, fraction
            if fraction >= self.min_tissue:
                break
        assert best is not None
        return k, best, False

    def _tissue_point(self, info: SourceInfo, rng: np.random.Generator) -> tuple[float, float]:
        tissue = info.tissue
        if tissue is None or tissue.area == 0:
            return float(rng.random() * info.shape[0]), float(rng.random() * info.shape[1])
        if self.region_weights is not None and info.regions is not None:
            names = [
                n for n, w in self.region_weights.items() if w > 0 and info.region_pixels(n).size
            ]
            if names:
                weights = np.array([self.region_weights[n] for n in names], np.float64)
                name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
                pixels = info.region_pixels(name)
                flat = int(pixels[int(rng.integers(pixels.size))])
                row, col = divmod(flat, tissue.mask.shape[1])
                oy, ox = rng.random(2) * tissue.reduce
                return row * tissue.reduce + oy, col * tissue.reduce + ox
        return tissue.sample_point(rng)


def grid_positions(length: int, tile: int, stride: int, reduce: int, edge: str) -> list[int]:
    """Window starts along one axis (level-0 px, multiples of ``reduce``).

    ``edge="shift"``: the last window is moved back to end at the slide edge (rounded up to
    ``reduce``), so windows stay inside the slide when it is at least one tile long.
    ``edge="pad"``: windows continue at ``stride`` until the slide is covered; the last ones
    extend past the edge and are padded.

    Examples
    --------
    >>> grid_positions(1000, 256, 192, 4, "shift"), grid_positions(1000, 256, 192, 4, "pad")
    ([0, 192, 384, 576, 744], [0, 192, 384, 576, 768])
    """
    if stride <= 0:
        raise ValueError(f"stride must be > 0, got {stride}")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    end = starts[-1] + tile
    if end < length:
        if edge == "shift":
            starts.append(-(-(length - tile) // reduce) * reduce)
        else:
            while end < length:
                starts.append(starts[-1] + stride)
                end = starts[-1] + tile
    return starts


@dataclass(frozen=True)
class GridSampler:
    """The sliding window over whole slides, skipping windows without enough tissue.

    Parameters
    ----------
    tile : int
        Window side in level-0 pixels.
    overlap : int
        Pixels shared by neighbouring windows (stride = ``tile - overlap``), a multiple of
        ``reduce``.
    reduce : int
        Reduce factor of the reads.
    min_tissue : float
        Windows whose tissue fraction is below this are skipped; 0 keeps every window.
    edge : {"shift", "pad"}
        ``"shift"`` (default): the last row/column of windows is moved back to end at the slide
        edge (no padding when the slide is at least a tile large). ``"pad"``: windows continue
        on the stride grid and the part past the edge is padded.
    shuffle : bool
        Visit the windows in an order drawn from ``(seed, epoch)`` instead of row-major.

    Notes
    -----
    Windows are listed slide by slide in row-major order and shards take contiguous runs of
    the list, so a worker reads neighbouring windows and reuses their shared tiles.
    """

    tile: int
    _: KW_ONLY
    overlap: int = 0
    reduce: int = 1
    min_tissue: float = 0.0
    edge: Literal["shift", "pad"] = "shift"
    shuffle: bool = False

    def __post_init__(self) -> None:
        check_reduce_factor(self.reduce)
        if self.tile <= 0 or self.tile % self.reduce:
            raise ValueError(
                f"tile must be a positive multiple of reduce={self.reduce}, got {self.tile}"
            )
        if not 0 <= self.overlap < self.tile or self.overlap % self.reduce:
            raise ValueError(
                f"overlap must be in [0, tile={self.tile}) and a multiple of reduce={self.reduce}, "
                f"got {self.overlap}"
            )
        if self.edge not in ("shift", "pad"):
            raise ValueError(f'edge must be "shift" or "pad", got {self.edge!r}')
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ValueError(f"min_tissue must be in [0, 1], got {self.min_tissue}")

    @property
    def stride(self) -> int:
        """Distance between window starts, level-0 px."""
        return self.tile - self.overlap

    @property
    def needs_tissue(self) -> bool:
        """Whether slides need a tissue map (only to skip windows)."""
        return self.min_tissue > 0

    @property
    def needs_objects(self) -> bool:
        """Grid windows ignore label objects."""
        return False

    @property
    def needs_regions(self) -> bool:
        """Grid windows ignore regions."""
        return False

    def positions(self, shape: tuple[int, int]) -> tuple[list[int], list[int]]:
        """The level-0 window starts ``(ys, xs)`` on a slide of ``shape`` ``(H, W)``: every
        window is ``Box(y, x, tile, tile)`` for ``y`` in ``ys`` and ``x`` in ``xs`` (before
        ``min_tissue``), the grid a ``Stitcher(grid=...)`` declares."""
        h, w = shape
        return (
            grid_positions(h, self.tile, self.stride, self.reduce, self.edge),
            grid_positions(w, self.tile, self.stride, self.reduce, self.edge),
        )

    def boxes(self, info: SourceInfo) -> NDArray[np.int64]:
        """``(N, 4)`` ``(y, x, height, width)`` windows of one slide, row-major."""
        ys, xs = self.positions(info.shape)
        yy, xx = np.meshgrid(np.asarray(ys, np.int64), np.asarray(xs, np.int64), indexing="ij")
        boxes = np.stack(
            [yy.ravel(), xx.ravel(), np.full(yy.size, self.tile), np.full(yy.size, self.tile)], 1
        ).astype(np.int64)
        if self.min_tissue > 0 and info.tissue is not None:
            keep = info.tissue.fractions(boxes) >= self.min_tissue
            boxes = boxes[keep]
        return boxes
