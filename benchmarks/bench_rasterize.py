"""Polygon fill benchmarks: a whole HuBMAP-sized mask, and 1024 x 1024 windows.

Run with ``.venv/bin/python -m pytest benchmarks/bench_rasterize.py`` (needs the ``bench``
extra: opencv-python-headless, and optionally rasterio and scikit-image; a contender whose
package is missing is skipped). The whole file takes about 3 minutes on the project's
2-core machines and peaks at ~3 GB of memory (a few full-slide masks alive at once).

What is measured
----------------
A seeded 25000 x 35000 (H x W) slide with 3000 glomerulus-like polygons: noisy ellipses of
30-80 vertices, radius 80-250 px, placed uniformly (so some overlap), as shapely Polygons in
level-0 (x, y) pixels.

- ``full-slide``: the whole mask, a new zeroed (25000, 35000) uint8 array per call (~0.9 GB
  of fresh memory: its first touch is a large, noisy share of every contender's time here).
  ``tilestream`` starts from the shapely polygons (vertex extraction included);
  ``tilestream PolygonIndex`` from an index built once, untimed. The anchor ``cv2.fillPoly``
  gets its int32 fixed-point vertices (``shift=4``) ready-made, untimed, and fills all
  polygons in one call, which XORs overlapping polygons instead of uniting them (a per-polygon
  loop would unite them, slower).
- ``full-slide-into-buffer``: the same fills (and rasterio's, with ``out=``) into one
  preallocated mask, cleared (untimed) before every call: the fill itself, without fresh
  memory.
- ``full-slide-others``: ``rasterio.features.rasterize`` gets the shapely polygons
  (pixel-centre rule, like ours). ``skimage.draw.polygon`` takes ~50 s for the whole slide,
  so it fills a seeded subset of ``SKIMAGE_SUBSET`` polygons into a preallocated mask and the
  time is scaled by 3000 / ``SKIMAGE_SUBSET`` (extrapolated, allocation not counted).
- ``window-strtree``: ``WINDOWS`` seeded random 1024 x 1024 windows per round (about 6
  polygons each). ``tilestream``: ``STRtree.query`` of the window + ``ts.rasterize`` of the
  hits (what ``PolygonMask.read`` does); ``tilestream PolygonIndex``: ``index.rasterize(box)``
  (no shapely call per window); anchor ``cv2.fillPoly``: the same STRtree query, each hit's
  vertices (float arrays extracted once, untimed) shifted into the window and converted to
  int32 fixed point, then ``np.zeros`` + one ``fillPoly``.
- ``window-5-polygons``: one fixed window holding 5 polygons, filled ``WINDOWS`` times per
  round. ``tilestream``: ``ts.rasterize`` of the 5 shapely polygons; anchor ``cv2.fillPoly``:
  ``np.zeros`` + ``fillPoly`` of int32 vertices already in the window frame (its best case);
  ``cv2.fillPoly from shapely`` also converts the vertices each time.

Every scenario is timed twice: by pytest-benchmark, contender after contender (``group``
puts them side by side), and by ``test_interleaved``, which runs the contenders round-robin
(in a new random order each round) and takes, per contender, the median of its per-round speed ratio
against the anchor (``x_anchor`` > 1: faster than the anchor). Quote the interleaved ratios:
the machine has 2 cores and other work, so absolute figures drift by 20-50% during a run.
Warm-up rounds (JIT compile, first touch of the allocator) are not timed. ``test_memory``
traces the full-slide call's Python/numpy allocations (tracemalloc) beyond the mask itself.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import shapely

import tilestream as ts

try:
    PolygonIndex = ts.PolygonIndex  # type: ignore[attr-defined]
except AttributeError:  # until tilestream re-exports it
    from tilestream.rasterize import PolygonIndex

try:
    import cv2
except ImportError:  # pragma: no cover - the bench extra installs it
    cv2 = None
try:
    import rasterio.features
    from affine import Affine
except ImportError:  # pragma: no cover
    rasterio = None
try:
    import skimage.draw
except ImportError:  # pragma: no cover
    skimage = None

H, W = 25000, 35000
N_POLYGONS = 3000
SEED = 20240612
WIN = 1024
WINDOWS = 200  # windows per round in the window scenarios
SKIMAGE_SUBSET = 100
SHIFT = 4  # cv2 fixed point: 1/16 px


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


@dataclass
class Slide:
    geoms: np.ndarray  # shapely Polygons, level-0 (x, y)
    coords: list[np.ndarray]  # per polygon, (n, 2) float64 (x, y)
    cv2_pts: list[np.ndarray]  # per polygon, int32 fixed point, pixel centres at integers
    tree: shapely.STRtree
    index: Any
    windows: list[ts.Box]
    five: ts.Box  # a window with exactly 5 polygons
    buffer: np.ndarray  # one (H, W) mask reused by the into-buffer scenario
    extra: dict[str, Any] = field(default_factory=dict)


def glomeruli(rng: np.random.Generator) -> list[shapely.Polygon]:
    """Noisy ellipses: 30-80 vertices, radius 80-250 px, random aspect and rotation."""
    polys = []
    for _ in range(N_POLYGONS):
        n = int(rng.integers(30, 81))
        radius = rng.uniform(80, 250)
        cx, cy = rng.uniform(300, W - 300), rng.uniform(300, H - 300)
        aspect, theta = rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = radius * (1 + 0.06 * rng.standard_normal(n)).clip(0.8, 1.2)
        x, y = r * np.cos(t), aspect * r * np.sin(t)
        xy = np.c_[
            cx + x * np.cos(theta) - y * np.sin(theta), cy + x * np.sin(theta) + y * np.cos(theta)
        ]
        poly = shapely.Polygon(xy)
        polys.append(poly if poly.is_valid else shapely.convex_hull(poly))
    return polys


def to_cv2(xy: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Vertices as cv2 int32 fixed point, shifted so pixel centres sit at integers."""
    return np.round((xy - (dx + 0.5, dy + 0.5)) * (1 << SHIFT)).astype(np.int32)


@pytest.fixture(scope="module")
def slide() -> Slide:
    rng = np.random.default_rng(SEED)
    geoms = np.array(glomeruli(rng), dtype=object)
    coords = [shapely.get_coordinates(g) for g in geoms]
    tree = shapely.STRtree(geoms)
    windows = [
        ts.Box(int(y), int(x), WIN, WIN)
        for y, x in zip(
            rng.integers(0, H - WIN, WINDOWS), rng.integers(0, W - WIN, WINDOWS), strict=True
        )
    ]
    five = None
    for y, x in zip(rng.integers(0, H - WIN, 5000), rng.integers(0, W - WIN, 5000), strict=True):
        hits = tree.query(shapely.box(x, y, x + WIN, y + WIN), predicate="intersects")
        if hits.size == 5:
            five = ts.Box(int(y), int(x), WIN, WIN)
            break
    assert five is not None
    hits_per_window = [tree.query(shapely.box(b.x, b.y, b.right, b.bottom)).size for b in windows]
    return Slide(
        geoms=geoms, coords=coords, cv2_pts=[to_cv2(c) for c in coords], tree=tree,
        index=PolygonIndex(geoms), windows=windows, five=five, buffer=np.zeros((H, W), np.uint8),
        extra={"mean_hits": float(np.mean(hits_per_window))},
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# contenders: each makes a function that runs one round
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    name: str
    make: Callable[[Slide], Callable[[], Any]]
    anchor: bool = False
    needs: str | None = None  # module that must be importable
    setup: Callable[[Slide], None] | None = None  # untimed, before every timed round


def clear_buffer(s: Slide) -> None:
    s.buffer[...] = 0


def full_ours(s: Slide) -> Callable[[], Any]:
    box = ts.Box(0, 0, H, W)
    return lambda: ts.rasterize(s.geoms, box)


def full_index(s: Slide) -> Callable[[], Any]:
    box = ts.Box(0, 0, H, W)
    return lambda: s.index.rasterize(box)


def full_cv2(s: Slide) -> Callable[[], Any]:
    def run() -> np.ndarray:
        mask = np.zeros((H, W), np.uint8)
        cv2.fillPoly(mask, s.cv2_pts, 1, shift=SHIFT)
        return mask

    return run


def buffer_ours(s: Slide) -> Callable[[], Any]:
    box = ts.Box(0, 0, H, W)
    return lambda: ts.rasterize(s.geoms, box, out=s.buffer)


def buffer_index(s: Slide) -> Callable[[], Any]:
    box = ts.Box(0, 0, H, W)
    return lambda: s.index.rasterize(box, out=s.buffer)


def buffer_cv2(s: Slide) -> Callable[[], Any]:
    return lambda: cv2.fillPoly(s.buffer, s.cv2_pts, 1, shift=SHIFT)


def buffer_rasterio(s: Slide) -> Callable[[], Any]:
    shapes = [(g, 1) for g in s.geoms]
    return lambda: rasterio.features.rasterize(
        shapes, out=s.buffer, transform=Affine.identity(), dtype="uint8"
    )


def full_rasterio(s: Slide) -> Callable[[], Any]:
    shapes = [(g, 1) for g in s.geoms]
    return lambda: rasterio.features.rasterize(
        shapes, out_shape=(H, W), fill=0, transform=Affine.identity(), dtype="uint8"
    )


def full_skimage_extrapolated(s: Slide) -> Callable[[], Any]:
    """A subset of SKIMAGE_SUBSET polygons into a preallocated mask; scaled in report()."""
    pick = np.random.default_rng(SEED).choice(N_POLYGONS, SKIMAGE_SUBSET, replace=False)
    mask = np.zeros((H, W), np.uint8)

    def run() -> None:
        for i in pick:
            xy = s.coords[i]
            rr, cc = skimage.draw.polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=(H, W))
            mask[rr, cc] = 1

    return run


def window_ours(s: Slide) -> Callable[[], Any]:
    def run() -> None:
        for b in s.windows:
            hits = s.tree.query(shapely.box(b.x, b.y, b.right, b.bottom))
            ts.rasterize(s.geoms.take(hits), b)

    return run


def window_index(s: Slide) -> Callable[[], Any]:
    def run() -> None:
        for b in s.windows:
            s.index.rasterize(b)

    return run


def window_cv2(s: Slide) -> Callable[[], Any]:
    def run() -> None:
        for b in s.windows:
            hits = s.tree.query(shapely.box(b.x, b.y, b.right, b.bottom))
            mask = np.zeros((WIN, WIN), np.uint8)
            cv2.fillPoly(mask, [to_cv2(s.coords[i], b.x, b.y) for i in hits], 1, shift=SHIFT)

    return run


def five_ours(s: Slide) -> Callable[[], Any]:
    b = s.five
    geoms = list(s.geoms.take(s.tree.query(shapely.box(b.x, b.y, b.right, b.bottom))))

    def run() -> None:
        for _ in range(WINDOWS):
            ts.rasterize(geoms, b)

    return run


def five_index(s: Slide) -> Callable[[], Any]:
    b = s.five
    index = PolygonIndex(s.geoms.take(s.tree.query(shapely.box(b.x, b.y, b.right, b.bottom))))

    def run() -> None:
        for _ in range(WINDOWS):
            index.rasterize(b)

    return run


def five_cv2(s: Slide) -> Callable[[], Any]:
    b = s.five
    hits = s.tree.query(shapely.box(b.x, b.y, b.right, b.bottom))
    pts = [to_cv2(s.coords[i], b.x, b.y) for i in hits]

    def run() -> None:
        for _ in range(WINDOWS):
            mask = np.zeros((WIN, WIN), np.uint8)
            cv2.fillPoly(mask, pts, 1, shift=SHIFT)

    return run


def five_cv2_from_shapely(s: Slide) -> Callable[[], Any]:
    b = s.five
    geoms = list(s.geoms.take(s.tree.query(shapely.box(b.x, b.y, b.right, b.bottom))))

    def run() -> None:
        for _ in range(WINDOWS):
            mask = np.zeros((WIN, WIN), np.uint8)
            pts = [to_cv2(shapely.get_coordinates(g), b.x, b.y) for g in geoms]
            cv2.fillPoly(mask, pts, 1, shift=SHIFT)

    return run


SCENARIOS: dict[str, list[Contender]] = {
    "full-slide": [
        Contender("tilestream", full_ours),
        Contender("tilestream PolygonIndex", full_index),
        Contender("cv2.fillPoly", full_cv2, anchor=True, needs="cv2"),
    ],
    "full-slide-into-buffer": [
        Contender("tilestream (out=)", buffer_ours, setup=clear_buffer),
        Contender("tilestream PolygonIndex (out=)", buffer_index, setup=clear_buffer),
        Contender("cv2.fillPoly", buffer_cv2, anchor=True, needs="cv2", setup=clear_buffer),
        Contender("rasterio.features.rasterize (out=)", buffer_rasterio, needs="rasterio",
                  setup=clear_buffer),
    ],
    "full-slide-others": [
        Contender("tilestream", full_ours),
        Contender("cv2.fillPoly", full_cv2, anchor=True, needs="cv2"),
        Contender("rasterio.features.rasterize", full_rasterio, needs="rasterio"),
        Contender(f"skimage.draw.polygon (x{N_POLYGONS // SKIMAGE_SUBSET} extrapolated)",
                  full_skimage_extrapolated, needs="skimage"),
    ],
    "window-strtree": [
        Contender("tilestream (STRtree + rasterize)", window_ours),
        Contender("tilestream PolygonIndex", window_index),
        Contender("cv2.fillPoly (STRtree + convert + zeros)", window_cv2, anchor=True, needs="cv2"),
    ],
    "window-5-polygons": [
        Contender("tilestream", five_ours),
        Contender("tilestream PolygonIndex", five_index),
        Contender("cv2.fillPoly (ready int32 + zeros)", five_cv2, anchor=True, needs="cv2"),
        Contender("cv2.fillPoly from shapely", five_cv2_from_shapely, needs="cv2"),
    ],
}  # fmt: skip
TARGETS: dict[str, list[tuple[str, float]]] = {  # scenario -> [(contender, minimum x_anchor)]
    "full-slide": [("tilestream", 1.0), ("tilestream PolygonIndex", 1.0)],
    "full-slide-into-buffer": [("tilestream (out=)", 1.0), ("tilestream PolygonIndex (out=)", 1.0)],
    "full-slide-others": [],  # tilestream vs cv2 is measured in full-slide, without slow neighbours
    "window-strtree": [("tilestream (STRtree + rasterize)", 1.0), ("tilestream PolygonIndex", 1.0)],
    "window-5-polygons": [("tilestream", 1.0), ("tilestream PolygonIndex", 1.0)],
}
FULL = ("full-slide", "full-slide-into-buffer", "full-slide-others")
BENCH_ROUNDS = {key: 3 if key in FULL else 7 for key in SCENARIOS}
INTERLEAVED_ROUNDS = {key: 5 if key in FULL else 15 for key in SCENARIOS}
AVAILABLE = {
    "cv2": cv2 is not None,
    "rasterio": rasterio is not None,
    "skimage": skimage is not None,
}


def scale(contender: Contender) -> float:
    """Factor from a timed round to the figure reported (the skimage extrapolation)."""
    return N_POLYGONS / SKIMAGE_SUBSET if contender.make is full_skimage_extrapolated else 1.0


def per_round(scenario: str) -> int:
    return 1 if scenario in FULL else WINDOWS


def unit(scenario: str) -> str:
    return "ms" if scenario in FULL else "us_per_window"


def figure(scenario: str, seconds: float) -> float:
    return seconds * 1e3 if scenario in FULL else seconds * 1e6 / WINDOWS


def params() -> list[Any]:
    return [pytest.param(key, c, id=f"{key}-{c.name}") for key, cs in SCENARIOS.items() for c in cs]


# ------------------------------------------------------------------------------------------
# pytest-benchmark: contender after contender
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "contender"), params())
def test_fill(
    benchmark: Any, slide: Slide, results: Any, scenario: str, contender: Contender
) -> None:
    if contender.needs and not AVAILABLE[contender.needs]:
        pytest.skip(f"{contender.needs} is not installed")
    benchmark.group = scenario
    benchmark.name = contender.name
    run = contender.make(slide)
    setup = (lambda: contender.setup(slide)) if contender.setup else None
    benchmark.pedantic(
        run, setup=setup, rounds=BENCH_ROUNDS[scenario], iterations=1, warmup_rounds=1
    )
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        seconds = float(stats.stats.median) * scale(contender)
        results.record(
            table="rasterize: pytest-benchmark", scenario=scenario, contender=contender.name,
            anchor=contender.anchor, reads_s=per_round(scenario) / seconds,
            **{unit(scenario): figure(scenario, seconds)},
        )  # fmt: skip


# ------------------------------------------------------------------------------------------
# interleaved: the ratios to quote
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_interleaved(slide: Slide, results: Any, scenario: str) -> None:
    contenders = [c for c in SCENARIOS[scenario] if not c.needs or AVAILABLE[c.needs]]
    anchor = next((c for c in contenders if c.anchor), None)
    if anchor is None:
        pytest.skip("the anchor (cv2) is not installed")
    runs = {c.name: c.make(slide) for c in contenders}
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    rng = np.random.default_rng(SEED)
    for r in range(INTERLEAVED_ROUNDS[scenario] + 1):  # round 0: warm-up, not kept
        # a fresh random order each round: whoever runs after a slow contender finds its
        # freed memory handed back to the host (slow to touch again), so no fixed neighbours
        for k in rng.permutation(len(contenders)):
            c = contenders[k]
            if c.setup is not None:
                c.setup(slide)
            t0 = time.perf_counter()
            out = runs[c.name]()
            dt = time.perf_counter() - t0
            del out
            if r:
                times[c.name].append(dt * scale(c))
    ratios = {}
    for c in contenders:
        paired = [a / t for a, t in zip(times[anchor.name], times[c.name], strict=True)]
        ratios[c.name] = statistics.median(paired)
        q = statistics.quantiles(paired, n=4)
        median = statistics.median(times[c.name])
        results.record(
            table="rasterize: interleaved", scenario=scenario, contender=c.name,
            anchor=c.anchor, reads_s=per_round(scenario) / median,
            **{unit(scenario): figure(scenario, median)},
            x_anchor=ratios[c.name], x_anchor_q1=q[0], x_anchor_q3=q[2],
        )  # fmt: skip
    for name, target in TARGETS[scenario]:
        if name in ratios:
            verdict = "met" if ratios[name] >= target else "MISSED"
            results.note(
                f"rasterize {scenario}: {name} x{ratios[name]:.2f} vs {anchor.name} "
                f"(target >= x{target}): {verdict}"
            )
    ours = contenders[0].name
    for c in contenders:
        if c.name.startswith(("rasterio", "skimage")):
            paired = [t / o for t, o in zip(times[c.name], times[ours], strict=True)]
            how = (
                f"extrapolated from {SKIMAGE_SUBSET} polygons" if c.name.startswith("skimage") else
                "same pixel-centre rule"
            )  # fmt: skip
            results.note(
                f"rasterize {scenario}: {ours} is x{statistics.median(paired):.1f} "
                f"{c.name} ({how}; target >= x10)"
            )
    if scenario == "window-strtree":
        results.note(
            f"rasterize windows: {WINDOWS} random {WIN}² windows, "
            f"{slide.extra['mean_hits']:.1f} STRtree hits per window on average"
        )


# ------------------------------------------------------------------------------------------
# memory and agreement
# ------------------------------------------------------------------------------------------


def test_memory_and_agreement(slide: Slide, results: Any) -> None:
    box = ts.Box(0, 0, H, W)
    ts.rasterize(slide.geoms[:3], ts.Box(0, 0, 64, 64))  # compiled before tracing
    tracemalloc.start()
    mask = ts.rasterize(slide.geoms, box)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    extra = peak - mask.nbytes
    results.note(
        f"rasterize full-slide memory: traced peak {peak / 2**20:.0f} MiB = the mask "
        f"({mask.nbytes / 2**20:.0f} MiB) + {extra / 2**20:.1f} MiB (vertices, offsets); "
        f"the kernel's own scratch is a few arrays of one polygon's edge count"
    )
    assert extra < 64 * 2**20
    covered = int(np.count_nonzero(mask))
    note = f"rasterize full-slide: {covered} px covered ({covered / mask.size:.1%})"
    if rasterio is not None:
        ref = rasterio.features.rasterize(
            [(g, 1) for g in slide.geoms],
            out_shape=(H, W),
            transform=Affine.identity(),
            dtype="uint8",
        )
        differ = int(np.count_nonzero(ref != mask))
        note += f"; rasterio (same pixel-centre rule) differs on {differ} px"
        del ref
        assert differ <= 1e-4 * covered
    if cv2 is not None:
        ref = full_cv2(slide)()
        note += (
            f"; cv2.fillPoly differs on {int(np.count_nonzero(ref != mask))} px "
            f"(XOR of overlaps, 1/16 px vertices)"
        )
        del ref
    results.note(note)
    index_mask = slide.index.rasterize(box)
    assert np.array_equal(index_mask, mask)
