"""Dataset benchmarks: training tiles per second through a DataLoader, per-worker memory, and
how often a grid pass decodes each stored tile.

Run with ``.venv/bin/python -m pytest benchmarks/bench_dataset.py`` (needs the ``bench``
extra: tiffslide, opencv-python-headless, psutil; a test whose package is missing is skipped).
About 5-7.5 minutes once the data is cached; the first run generates the slides (three 10000²
with a pyramid, three without, one 40000²: ~6 min) into ``$TILESTREAM_BENCH_DIR`` (default
``~/.cache/tilestream-bench``), with their glomerulus labels beside them (``*-glomeruli.json``,
GeoJSON polygons; ``*-glomeruli.rle``, the column-major RLE of those polygons; remade when the
code deriving them changes). Figures and their reading: docs/performance.md, "Dataset".

The pipeline
------------
Random 1024² level-0 windows read at reduce=4 (256² tiles), with masks, 50% of the windows
centred on a glomerulus, the rest drawn over tissue with at least 20% tissue; batches of 32; a
``torch.utils.data.DataLoader`` with 2 workers (fork), re-created every epoch (the default,
``persistent_workers=False``). Synthetic HuBMAP-like slides (``make_slide``, tiled 512 JPEG q85,
3.5 glomeruli per megapixel of tissue).

Contenders (``test_loader_10k``, three 10000² slides with a pyramid)
-------------------------------------------------------------------
- ``tilestream, RLE masks``: ``TileDataset`` over ``SlideSource(path, mask=RleMask(rle))``;
  ``RandomSampler(1024, reduce=4, min_tissue=0.2, positive_fraction=0.5)``.
- ``tilestream, polygon masks``: the same with ``PolygonMask.from_geojson`` (the polygons the
  RLE was made from).
- ``tiffslide + cv2 (user way)``, the anchor: a map-style ``Dataset`` as Kaggle notebooks write
  it: each whole-slide mask decoded once in ``__init__`` (in the parent, before the fork) with
  the common numpy RLE decoder; ``__getitem__`` reads the 1024² window at level 0 with
  tiffslide's ``read_region``, ``cv2.resize(INTER_AREA)`` to 256², crops the mask and
  ``cv2.resize(INTER_NEAREST)``. Slides are opened lazily per worker process (a handle opened
  before the fork is shared by the workers: see PERF-NOTES). It reads exactly the windows the
  RLE tilestream dataset draws (a prefix of them: it is slower, so it gets fewer per round).
- ``pre-cut PNG + cv2.imread``: the iafoss approach. The windows of epoch 0 are cut once to
  256² PNG pairs (image + mask; the cutting is timed and reported separately), then a
  map-style ``Dataset`` ``cv2.imread``'s them (+ ``cvtColor`` BGR->RGB). It re-reads the same
  windows every epoch: fixed tiles, not random windows.
- ``DataLoader only``: a dataset returning a ready 3x256x256 tile and mask: the ceiling that
  the DataLoader's inter-process transfer puts on every contender.

Every contender returns the same sample layout (``image`` uint8 ``(3, 256, 256)``, ``mask``
uint8 ``(1, 256, 256)``; tilestream adds ``slide``, ``box``, ``index``) and is collated by the
default collate.

Timing policy
-------------
Contenders run round-robin, order rotated each round, a fresh DataLoader per round and per
contender; round ``r`` uses epoch ``r`` of the random windows. Before a round the files it
reads are re-read into the page cache (warm figures). *tiles/s* is the steady rate: tiles
after the first batch of each worker divided by the time after it (worker start-up, fork and
first fills excluded); *incl. start-up* divides all tiles by the time from ``iter(loader)``.
The ratio to the anchor is the median over rounds of the per-round ratio (with quartiles): the
machine has 2 cores and other work, so absolute figures drift. Worker memory is sampled from
the parent every 0.2 s with psutil (RSS; USS, the pages unique to the worker, every 0.6 s);
RSS counts the pages a forked worker shares with its parent (torch alone is ~0.5 GB), so both
are given.

Other tests
-----------
- ``test_loader_no_pyramid``: tilestream vs the user way on the same slides written without a
  pyramid (HuBMAP's own files mostly have none): tilestream then reads level 0 too.
- ``test_slide_size``: tilestream on one 10000² vs one 40000² slide, same sampler settings,
  interleaved, in a fresh Python process (so that the worker RSS counts only what a training
  script would hold: torch, tilestream and the datasets), in two DataLoader modes: workers
  forked every epoch (torch's default; each epoch starts with empty tile caches) and
  ``persistent_workers=True`` (the recommended mode: workers and their caches kept, the epoch
  set through ``set_epoch``). The ratio target is read per epoch (epochs after the first for
  persistent workers; the first epoch and the whole run are reported too); the rate over the
  second half of each epoch is also given (tile cache warm). Worker RSS, USS and PSS: RSS
  includes the pages shared with the parent after the fork.
- ``test_grid_pass``: ``GridSampler`` passes over a whole slide with ``num_workers=0``; decoded
  chunks (misses of ``ChunkCache.shared()``) against the stored tiles of the level read and the
  tiles the windows touch.
- ``test_sample_stages``: pytest-benchmark of each step of one sample in one process with
  torch at 1 thread, as in a worker (sampler draw, image read into an array and into a CHW
  tensor as ``TileDataset`` does, mask reads, tensor conversion, collate of ``TileDataset``'s
  contiguous CHW samples and of permuted HWC views; the user way's and PNG's steps).
- ``test_contenders_agree``: the contenders read the same pixels where they should.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate as collate

import tilestream as ts
from _common import loaded_conftest
from tilestream.synthetic import SlideSpec, slide_labels

TILE = 1024  # level-0 window side
REDUCE = 4
OUT = TILE // REDUCE  # 256² tiles
BATCH = 32
WORKERS = 2
MIN_TISSUE = 0.2
POSITIVE = 0.5
GLOMERULI_PER_MPX = 3.5
SEED = 0

ROUNDS = 4  # interleaved rounds of test_loader_10k
N_FAST = 2048  # tiles per round for tilestream and the DataLoader-only ceiling
N_USER = 256  # tiles per round for the user way (a prefix of tilestream's windows)
N_PNG = 1024  # pre-cut PNG pairs (epoch 0's first windows), all read every round
NOPYR_ROUNDS = 3
NOPYR_FAST = 320
NOPYR_USER = 192
SIZE_ROUNDS = 4  # epochs per slide and worker mode
SIZE_N = 6144
#: test_slide_size's DataLoader modes: workers forked every epoch (torch's default,
#: ``persistent_workers=False``) and kept across epochs (``persistent_workers=True``)
SIZE_MODES = ("fresh", "persistent")
STAGE_BOXES = 64  # windows per pytest-benchmark round of test_sample_stages
RSS_PERIOD_S = 0.2
USS_EVERY = 3  # USS (smaps) every 3rd RSS sample

_SLIDE = dict(tile=512, compression="jpeg", quality=85, glomeruli_per_mpx=GLOMERULI_PER_MPX)
SIZES_10K = ((10000, 10000), (9600, 11200), (10400, 9200))
SPECS_10K = tuple(
    SlideSpec(height=h, width=w, seed=101 + i, pyramid=True, **_SLIDE)  # type: ignore[arg-type]
    for i, (h, w) in enumerate(SIZES_10K)
)
SPECS_10K_FLAT = tuple(
    SlideSpec(height=h, width=w, seed=101 + i, pyramid=False, **_SLIDE)  # type: ignore[arg-type]
    for i, (h, w) in enumerate(SIZES_10K)
)
SPEC_40K = SlideSpec(height=40000, width=40000, seed=104, pyramid=True, **_SLIDE)  # type: ignore[arg-type]

MIB = 2**20


# ------------------------------------------------------------------------------------------
# Data: slides (conftest's cache) and their glomerulus labels (GeoJSON + RLE beside them)
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlideData:
    """A cached synthetic slide and its labels."""

    id: str
    path: str
    spec: SlideSpec
    rle_path: str
    geojson: str

    @property
    def shape(self) -> tuple[int, int]:
        return (self.spec.height, self.spec.width)

    def rle(self) -> str:
        return Path(self.rle_path).read_text()

    def rle_mask(self) -> ts.RleMask:
        return ts.RleMask(self.rle(), self.shape)

    def polygon_mask(self) -> ts.PolygonMask:
        return ts.PolygonMask.from_geojson(self.geojson, self.shape)


class _PolygonRaster:
    """(H, W) array-like whose slices are rasterized on demand (band-wise rle_encode input)."""

    def __init__(self, mask: ts.PolygonMask) -> None:
        self.mask = mask
        self.shape = mask.shape
        self.ndim = 2
        self.dtype = np.dtype(np.uint8)

    def __getitem__(self, key: tuple[slice, slice]) -> NDArray[np.uint8]:
        y0, y1, _ = key[0].indices(self.shape[0])
        x0, x1, _ = key[1].indices(self.shape[1])
        return self.mask.read(ts.Box(y0, x0, y1 - y0, x1 - x0))


def _labels_version() -> str:
    """Hash of the code that derives the labels (outlines, GeoJSON, rasterizer, RLE): cached
    labels are remade when it changes, so the RLE always equals the polygons as filled now."""
    root = Path(ts.__file__).parent
    digest = hashlib.sha1()
    for name in ("synthetic.py", "_synthrender.py", "annotations.py", "rasterize.py", "rle.py"):
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:10]


def prepare_slide(bench: Any, spec: SlideSpec, slide_id: str) -> SlideData:
    """The slide (generated once) with its glomerulus polygons and RLE (computed once)."""
    path = bench.cached_slide(spec)
    stem = f"{path[: -len('.tif')]}-glomeruli-{_labels_version()}"
    geojson, rle_path = stem + ".json", stem + ".rle"
    if not (os.path.exists(geojson) and os.path.exists(rle_path)):
        t0 = time.perf_counter()
        shape = (spec.height, spec.width)
        glomeruli = slide_labels(spec).glomeruli
        ts.PolygonMask(glomeruli, shape, classes=["glomerulus"] * len(glomeruli)).to_geojson(
            geojson
        )
        # The RLE of the polygons as written (re-read), as make_dataset builds train.csv.
        text = ts.rle_encode(_PolygonRaster(ts.PolygonMask.from_geojson(geojson, shape)))
        tmp = f"{rle_path}.{os.getpid()}.tmp"
        Path(tmp).write_text(text)
        os.replace(tmp, rle_path)
        bench.note(
            f"labelled {Path(path).name}: {len(glomeruli)} glomeruli, "
            f"{len(text.split()) // 2} runs, in {time.perf_counter() - t0:.1f} s"
        )
    return SlideData(slide_id, path, spec, rle_path, geojson)


_WARM_BUF = bytearray(8 * MIB)


def warm(paths: Sequence[str]) -> None:
    """Re-read files into the page cache (it is trimmed in the background here)."""
    view = memoryview(_WARM_BUF)
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(view):
                pass


# ------------------------------------------------------------------------------------------
# Contenders
# ------------------------------------------------------------------------------------------


def sampler() -> ts.RandomSampler:
    return ts.RandomSampler(TILE, reduce=REDUCE, min_tissue=MIN_TISSUE, positive_fraction=POSITIVE)


def tile_dataset(sources: Sequence[ts.SlideSource], n: int, epoch: int) -> ts.TileDataset:
    ds = ts.TileDataset(sources, sampler(), samples_per_epoch=n, seed=SEED)
    ds.set_epoch(epoch)
    return ds


def windows_of(ds: ts.TileDataset, n: int) -> list[tuple[int, ts.Box]]:
    """The first ``n`` ``(source index, box)`` of the dataset's current epoch."""
    return [ds.address(g) for g in range(n)]


def kaggle_rle_decode(rle: str, shape: tuple[int, int]) -> NDArray[np.uint8]:
    """The common Kaggle HuBMAP decoder: a column-major RLE to an (H, W) mask (F-ordered view)."""
    s = rle.split()
    starts, lengths = (np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2]))
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends, strict=True):
        img[lo:hi] = 1
    return img.reshape(shape[1], shape[0]).T


def _tensors(image: NDArray[np.uint8], mask: NDArray[np.uint8]) -> dict[str, torch.Tensor]:
    return {"image": torch.from_numpy(image).permute(2, 0, 1), "mask": torch.from_numpy(mask)[None]}


class UserWayDataset(Dataset[dict[str, torch.Tensor]]):
    """tiffslide ``read_region`` at level 0 + ``cv2.resize``; whole-slide masks decoded once."""

    def __init__(
        self,
        paths: Sequence[str],
        masks: Sequence[NDArray[np.uint8]],
        windows: Sequence[tuple[int, ts.Box]],
    ) -> None:
        self.paths = list(paths)
        self.masks = list(masks)  # decoded in the parent, before the fork (shared copy-on-write)
        self.windows = [(k, b.y, b.x) for k, b in windows]
        self._pid = -1
        self._slides: dict[int, Any] = {}

    def _slide(self, k: int) -> Any:
        import tiffslide

        if self._pid != os.getpid():  # never use a handle opened in another process
            self._pid, self._slides = os.getpid(), {}
        slide = self._slides.get(k)
        if slide is None:
            slide = self._slides[k] = tiffslide.TiffSlide(self.paths[k])
        return slide

    def close(self) -> None:
        if self._pid == os.getpid():
            for slide in self._slides.values():
                slide.close()
        self._slides = {}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        import cv2

        k, y, x = self.windows[i]
        image = self._slide(k).read_region((x, y), 0, (TILE, TILE), as_array=True)
        image = cv2.resize(image, (OUT, OUT), interpolation=cv2.INTER_AREA)
        mask = self.masks[k][y : y + TILE, x : x + TILE]
        mask = cv2.resize(mask, (OUT, OUT), interpolation=cv2.INTER_NEAREST)
        return _tensors(image, mask)


class PngDataset(Dataset[dict[str, torch.Tensor]]):
    """Pre-cut 256² PNG pairs read with ``cv2.imread`` (the iafoss kernels)."""

    def __init__(self, files: Sequence[tuple[str, str]]) -> None:
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        import cv2

        image_path, mask_path = self.files[i]
        image = cv2.cvtColor(cv2.imread(image_path), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
        return _tensors(image, mask)


class NullDataset(Dataset[dict[str, torch.Tensor]]):
    """No work per tile: the DataLoader's own ceiling (collate + inter-process transfer)."""

    def __init__(self, n: int) -> None:
        self.n = n
        rng = np.random.default_rng(0)
        self.sample = _tensors(
            rng.integers(0, 256, (OUT, OUT, 3), dtype=np.uint8),
            rng.integers(0, 2, (OUT, OUT), dtype=np.uint8),
        )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.sample


def cut_pngs(
    sources: Sequence[ts.SlideSource], windows: Sequence[tuple[int, ts.Box]], folder: Path
) -> tuple[list[tuple[str, str]], float, float]:
    """Cut the windows to 256² PNG pairs; returns the files, read seconds, write seconds.

    Pixels come from tilestream (the PNGs hold exactly tilestream's tiles), one process.
    """
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    t_read = t_write = 0.0
    for i, (k, box) in enumerate(windows):
        t0 = time.perf_counter()
        image = sources[k].slide.read(box, REDUCE)
        mask = sources[k].mask.read(box, REDUCE)  # type: ignore[union-attr]
        t1 = time.perf_counter()
        image_path, mask_path = str(folder / f"{i:05d}.png"), str(folder / f"{i:05d}-mask.png")
        cv2.imwrite(image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(mask_path, mask)
        t_read += t1 - t0
        t_write += time.perf_counter() - t1
        files.append((image_path, mask_path))
    return files, t_read, t_write


# ------------------------------------------------------------------------------------------
# Running a DataLoader: steady rate, start-up, worker memory
# ------------------------------------------------------------------------------------------


class WorkerMemory:
    """Samples the RSS (and every few samples the USS/PSS) of DataLoader workers: the given
    processes, or every child of this process."""

    def __init__(self, pids: set[int] | None = None) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._pids = pids
        self.parent_rss = self._me.memory_info().rss
        self.rss: dict[int, int] = {}
        self.uss: dict[int, int] = {}
        self.pss: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self, full: bool) -> None:
        for child in self._me.children():
            if self._pids is not None and child.pid not in self._pids:
                continue
            try:
                pid = child.pid
                self.rss[pid] = max(self.rss.get(pid, 0), child.memory_info().rss)
                if full:
                    info = child.memory_full_info()
                    self.uss[pid] = max(self.uss.get(pid, 0), info.uss)
                    self.pss[pid] = max(self.pss.get(pid, 0), getattr(info, "pss", 0))
            except self._psutil.Error:
                continue

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(RSS_PERIOD_S):
            self._sample(full=i % USS_EVERY == USS_EVERY - 1)
            i += 1

    def sample_now(self) -> None:
        self._sample(full=True)


@dataclass
class LoaderRun:
    tiles: int
    total_s: float
    steady_tiles: int
    steady_s: float
    second_half_tiles: int
    second_half_s: float
    worker_rss: int = 0  # peak over workers, bytes
    worker_uss: int = 0
    worker_pss: int = 0
    parent_rss: int = 0

    @property
    def steady_rate(self) -> float:
        return self.steady_tiles / self.steady_s

    @property
    def total_rate(self) -> float:
        return self.tiles / self.total_s

    @property
    def second_half_rate(self) -> float:
        return self.second_half_tiles / self.second_half_s


class PersistentLoader:
    """A ``DataLoader(..., persistent_workers=True)`` and the process ids of its workers."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.loader = DataLoader(
            dataset, batch_size=BATCH, num_workers=WORKERS, persistent_workers=True
        )
        self.pids: set[int] | None = None


def _child_pids() -> set[int]:
    import psutil

    return {c.pid for c in psutil.Process().children()}


def run_loader(
    dataset: Any, expect: int, *, memory: bool = True, persistent: PersistentLoader | None = None
) -> LoaderRun:
    """Iterate one epoch through ``DataLoader(batch_size=32, num_workers=2)``, a new one (its
    workers forked for this epoch) or ``persistent``'s (workers forked on its first epoch)."""
    loader = (
        persistent.loader
        if persistent is not None
        else DataLoader(dataset, batch_size=BATCH, num_workers=WORKERS)
    )
    stamps: list[tuple[float, int]] = []
    before = _child_pids() if memory else set()
    t0 = time.perf_counter()
    it = iter(loader)  # forks the workers (a persistent loader: on its first epoch only)
    mem = None
    if memory:
        pids = _child_pids() - before
        if persistent is not None:
            persistent.pids = persistent.pids or pids
            pids = persistent.pids
        mem = WorkerMemory(pids).__enter__()
    try:
        n = 0
        for batch in it:
            n += int(batch["image"].shape[0])
            stamps.append((time.perf_counter(), n))
            if mem is not None and len(stamps) == max(2, (expect // BATCH) - 2):
                mem.sample_now()  # near the end, workers at their fullest
    finally:
        if mem is not None:
            mem.__exit__()
        if persistent is None:
            del it
    assert n == expect, (n, expect)
    assert len(stamps) > 2 * WORKERS, "too few batches for a steady rate"
    t_end = stamps[-1][0]
    t_first, n_first = stamps[WORKERS - 1]  # every worker has delivered its first batch
    t_half, n_half = stamps[len(stamps) // 2]
    run = LoaderRun(
        tiles=n, total_s=t_end - t0, steady_tiles=n - n_first, steady_s=t_end - t_first,
        second_half_tiles=n - n_half, second_half_s=t_end - t_half,
    )  # fmt: skip
    if mem is not None:
        run.worker_rss = max(mem.rss.values(), default=0)
        run.worker_uss = max(mem.uss.values(), default=0)
        run.worker_pss = max(mem.pss.values(), default=0)
        run.parent_rss = mem.parent_rss
    return run


@dataclass
class Contender:
    name: str
    make: Callable[[int], tuple[Any, int, list[str]]]  # round -> (dataset, tiles, files to warm)
    anchor: bool = False
    runs: list[LoaderRun] = field(default_factory=list)


def interleave(contenders: list[Contender], rounds: int) -> None:
    """Round-robin, order rotated each round; each round builds, warms, then times."""
    for r in range(rounds):
        shift = r % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            dataset, n, files = c.make(r)
            warm(files)
            c.runs.append(run_loader(dataset, n))


def paired(c: Contender, anchor: Contender, attr: str = "steady_rate") -> list[float]:
    return [getattr(a, attr) / getattr(b, attr) for a, b in zip(c.runs, anchor.runs, strict=True)]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def record_contenders(
    results: Any, table: str, scenario: str, contenders: list[Contender]
) -> dict[str, float]:
    """One row per contender; returns the median paired ratio to the anchor (steady rates)."""
    anchor = next(c for c in contenders if c.anchor)
    ratios = {}
    for c in contenders:
        q1, med, q3 = quartiles(paired(c, anchor))
        ratios[c.name] = med
        results.record(
            table=table, scenario=scenario, contender=c.name, anchor=c.anchor,
            tiles_s=statistics.median(r.steady_rate for r in c.runs),
            tiles_s_incl_startup=statistics.median(r.total_rate for r in c.runs),
            x_anchor=med, x_anchor_q1=q1, x_anchor_q3=q3,
            x_anchor_incl_startup=statistics.median(paired(c, anchor, "total_rate")),
            worker_rss_mib=max(r.worker_rss for r in c.runs) / MIB,
            worker_uss_mib=max(r.worker_uss for r in c.runs) / MIB,
            tiles_per_round=c.runs[0].tiles,
        )  # fmt: skip
    return ratios


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------


@dataclass
class Setup:
    slides: list[SlideData]
    rle_sources: list[ts.SlideSource]
    poly_sources: list[ts.SlideSource]
    kaggle_masks: list[NDArray[np.uint8]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.slides]


def make_setup(slides: list[SlideData], *, polygons: bool = True) -> Setup:
    rle_sources = [ts.SlideSource(s.path, mask=s.rle_mask(), id=s.id) for s in slides]
    # Tissue maps and label objects are prepared by the TileDataset (once, in the parent).
    ts.TileDataset(rle_sources, sampler(), samples_per_epoch=1)
    poly_sources = (
        [
            ts.SlideSource(s.path, mask=s.polygon_mask(), id=s.id, tissue=src.tissue)
            for s, src in zip(slides, rle_sources, strict=True)
        ]
        if polygons
        else []
    )
    # One read of each kind in the parent (numba kernels loaded before the workers fork).
    box = ts.Box(0, 0, TILE, TILE)
    for src in rle_sources + poly_sources:
        src.slide.read(box, REDUCE)
        src.mask.read(box, REDUCE)  # type: ignore[union-attr]
    return Setup(slides, rle_sources, poly_sources)


@pytest.fixture(scope="session")
def setup_10k(request: pytest.FixtureRequest) -> Setup:
    bench = loaded_conftest(request.config)
    slides = [prepare_slide(bench, spec, f"s{i}") for i, spec in enumerate(SPECS_10K)]
    return make_setup(slides)


@pytest.fixture(scope="session")
def setup_10k_flat(request: pytest.FixtureRequest) -> Setup:
    bench = loaded_conftest(request.config)
    slides = [prepare_slide(bench, spec, f"f{i}") for i, spec in enumerate(SPECS_10K_FLAT)]
    return make_setup(slides, polygons=False)


@pytest.fixture(scope="session")
def slide_40k(request: pytest.FixtureRequest) -> SlideData:
    return prepare_slide(loaded_conftest(request.config), SPEC_40K, "s40k")


def kaggle_masks(setup: Setup, results: Any) -> list[NDArray[np.uint8]]:
    if not setup.kaggle_masks:
        t0 = time.perf_counter()
        setup.kaggle_masks = [kaggle_rle_decode(s.rle(), s.shape) for s in setup.slides]
        results.note(
            f"user way: Kaggle RLE decode of {len(setup.slides)} whole-slide masks in the parent: "
            f"{time.perf_counter() - t0:.2f} s, {sum(m.nbytes for m in setup.kaggle_masks) / MIB:.0f} MiB"
        )
    return setup.kaggle_masks


# ------------------------------------------------------------------------------------------
# 1. Three 10000² slides: tilestream vs the user way vs pre-cut PNGs vs the DataLoader ceiling
# ------------------------------------------------------------------------------------------


def test_loader_10k(
    setup_10k: Setup, results: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("tiffslide")
    pytest.importorskip("cv2")
    pytest.importorskip("psutil")
    s = setup_10k
    masks = kaggle_masks(s, results)

    png_windows = windows_of(tile_dataset(s.rle_sources, N_PNG, 0), N_PNG)
    t0 = time.perf_counter()
    files, t_read, t_write = cut_pngs(s.rle_sources, png_windows, tmp_path_factory.mktemp("png"))
    t_cut = time.perf_counter() - t0
    png_bytes = sum(os.path.getsize(p) for pair in files for p in pair)
    png_paths = [p for pair in files for p in pair]
    results.note(
        f"PNG cutting (one process, tilestream reads + cv2.imwrite): {N_PNG} pairs in {t_cut:.1f} s "
        f"({1e3 * t_cut / N_PNG:.1f} ms/pair: read {1e3 * t_read / N_PNG:.1f}, PNG encode+write "
        f"{1e3 * t_write / N_PNG:.1f}); {png_bytes / MIB:.0f} MiB on disk"
    )

    def ts_contender(sources: list[ts.SlideSource]) -> Callable[[int], tuple[Any, int, list[str]]]:
        return lambda r: (tile_dataset(sources, N_FAST, r + 1), N_FAST, s.paths)

    def user(r: int) -> tuple[Any, int, list[str]]:
        windows = windows_of(tile_dataset(s.rle_sources, N_FAST, r + 1), N_USER)
        return UserWayDataset(s.paths, masks, windows), N_USER, s.paths

    contenders = [
        Contender("tilestream, RLE masks", ts_contender(s.rle_sources)),
        Contender("tilestream, polygon masks", ts_contender(s.poly_sources)),
        Contender("tiffslide + cv2 (user way)", user, anchor=True),
        Contender("pre-cut PNG + cv2.imread", lambda r: (PngDataset(files), N_PNG, png_paths)),
        Contender("DataLoader only (no work)", lambda r: (NullDataset(N_FAST), N_FAST, [])),
    ]
    interleave(contenders, ROUNDS)
    table = "dataset: 10000² x3, 1024 -> 256 px, batch 32, 2 workers"
    ratios = record_contenders(results, table, "with pyramid", contenders)

    by = {c.name: c for c in contenders}
    rle, poly = by["tilestream, RLE masks"], by["tilestream, polygon masks"]
    png, null = by["pre-cut PNG + cv2.imread"], by["DataLoader only (no work)"]
    for c in (rle, poly):
        vs_png = quartiles(paired(c, png))
        vs_null = quartiles(paired(c, null))
        verdict = "met" if ratios[c.name] >= 3.0 else "MISSED"
        results.note(
            f"target [{c.name}] >= 3x user way: {ratios[c.name]:.2f}x -> {verdict}; "
            f"vs PNG: {vs_png[1]:.2f}x [{vs_png[0]:.2f}-{vs_png[2]:.2f}] "
            f"({'met' if vs_png[1] >= 1.5 else 'MISSED'} for >= 1.5x); "
            f"share of the DataLoader-only ceiling: {vs_null[1]:.2f}"
        )
    png_null = quartiles(paired(png, null))
    results.note(f"PNG loader / DataLoader-only ceiling: {png_null[1]:.2f}")
    assert all(len(c.runs) == ROUNDS for c in contenders)


# ------------------------------------------------------------------------------------------
# 1b. The same slides without a pyramid (both read level 0)
# ------------------------------------------------------------------------------------------


def test_loader_no_pyramid(setup_10k_flat: Setup, results: Any) -> None:
    pytest.importorskip("tiffslide")
    pytest.importorskip("cv2")
    pytest.importorskip("psutil")
    s = setup_10k_flat
    masks = kaggle_masks(s, results)

    def user(r: int) -> tuple[Any, int, list[str]]:
        windows = windows_of(tile_dataset(s.rle_sources, NOPYR_FAST, r + 1), NOPYR_USER)
        return UserWayDataset(s.paths, masks, windows), NOPYR_USER, s.paths

    contenders = [
        Contender(
            "tilestream, RLE masks",
            lambda r: (tile_dataset(s.rle_sources, NOPYR_FAST, r + 1), NOPYR_FAST, s.paths),
        ),
        Contender("tiffslide + cv2 (user way)", user, anchor=True),
    ]
    interleave(contenders, NOPYR_ROUNDS)
    table = "dataset: 10000² x3, 1024 -> 256 px, batch 32, 2 workers"
    ratios = record_contenders(results, table, "no pyramid", contenders)
    results.note(
        f"no pyramid: tilestream (RLE) / user way = {ratios['tilestream, RLE masks']:.2f}x "
        "(both decode level 0)"
    )
    assert all(len(c.runs) == NOPYR_ROUNDS for c in contenders)


# ------------------------------------------------------------------------------------------
# 2. Slide size: one 10000² vs one 40000² slide (fresh process, interleaved)
# ------------------------------------------------------------------------------------------


def _size_main(args: dict[str, Any]) -> None:
    """In a fresh process: interleaved epochs of tilestream on each slide; prints JSON."""
    import psutil

    rss_start = psutil.Process().memory_info().rss
    sources = {}
    for key, spec in args["slides"].items():
        shape = (spec["height"], spec["width"])
        mask = ts.RleMask(Path(spec["rle"]).read_text(), shape)
        sources[key] = [ts.SlideSource(spec["path"], mask=mask, id=key)]
        ts.TileDataset(sources[key], sampler(), samples_per_epoch=1)  # tissue + objects
        sources[key][0].slide.read(ts.Box(0, 0, TILE, TILE), REDUCE)
        mask.read(ts.Box(0, 0, TILE, TILE), REDUCE)
    ts.ChunkCache.shared().clear()  # the parent's reads above: workers start empty anyway
    keys = list(sources)
    out: dict[str, Any] = {mode: {k: [] for k in keys} for mode in SIZE_MODES}
    out["parent_rss_before_data"] = rss_start
    # Tiles a worker decodes per epoch (its cache starts empty): distinct tiles of the level
    # read under worker 0's windows of the first epoch.
    out["decodes_per_worker"] = {}
    for key, srcs in sources.items():
        ds = tile_dataset(srcs, args["n"], 1)
        boxes = [ds.address(g)[1] for g in ds.shard_indices(0, WORKERS)]
        rows = np.array([[b.y, b.x, b.height, b.width] for b in boxes], np.int64)
        out["decodes_per_worker"][key] = touched_tiles(srcs[0].slide, rows, REDUCE)
    persistent = {key: PersistentLoader(tile_dataset(sources[key], args["n"], 1)) for key in keys}
    combos = [(mode, key) for mode in SIZE_MODES for key in keys]
    for r in range(args["rounds"]):
        shift = r % len(combos)
        for mode, key in combos[shift:] + combos[:shift]:
            warm([sources[key][0].slide.path])
            if mode == "persistent":
                keep = persistent[key]
                keep.dataset.set_epoch(r + 1)
                run = run_loader(keep.dataset, args["n"], persistent=keep)
            else:
                run = run_loader(tile_dataset(sources[key], args["n"], r + 1), args["n"])
            out[mode][key].append(
                {
                    "steady": run.steady_rate, "total": run.total_rate,
                    "second_half": run.second_half_rate, "rss": run.worker_rss,
                    "uss": run.worker_uss, "pss": run.worker_pss, "parent_rss": run.parent_rss,
                    "tiles": run.tiles, "seconds": run.total_s,
                }
            )  # fmt: skip
    out["load_average"] = os.getloadavg()
    print(json.dumps(out))


def test_slide_size(setup_10k: Setup, slide_40k: SlideData, results: Any) -> None:
    pytest.importorskip("psutil")
    small = setup_10k.slides[0]
    args = {
        "rounds": SIZE_ROUNDS,
        "n": SIZE_N,
        "slides": {
            key: {"path": d.path, "rle": d.rle_path, "height": d.spec.height, "width": d.spec.width}
            for key, d in (("10000²", small), ("40000²", slide_40k))
        },
    }
    proc = subprocess.run(
        [sys.executable, __file__, "size", json.dumps(args)],
        check=True, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    label = {"fresh": "workers forked every epoch", "persistent": "persistent_workers=True"}
    results.note(f"slide size: load average at the end {out['load_average']}")
    worst_uss = 0.0
    for mode in SIZE_MODES:
        table = (
            f"dataset: slide size, tilestream RLE, 1 slide, batch 32, 2 workers, {label[mode]}, "
            "fresh process"
        )
        rates = out[mode]
        for key in ("10000²", "40000²"):
            runs = rates[key]
            warm_runs = runs[1:] if mode == "persistent" else runs
            results.record(
                table=table, scenario=f"one {key} slide", contender="tilestream, RLE masks",
                tiles_s=statistics.median(r["steady"] for r in warm_runs),
                tiles_s_incl_startup=statistics.median(r["total"] for r in warm_runs),
                tiles_s_second_half=statistics.median(r["second_half"] for r in warm_runs),
                tiles_s_first_epoch=runs[0]["steady"],
                tiles_s_all_epochs=sum(r["tiles"] for r in runs) / sum(r["seconds"] for r in runs),
                worker_rss_mib=max(r["rss"] for r in runs) / MIB,
                worker_uss_mib=max(r["uss"] for r in runs) / MIB,
                worker_pss_mib=max(r["pss"] for r in runs) / MIB,
                parent_rss_mib=max(r["parent_rss"] for r in runs) / MIB,
                tiles_per_round=SIZE_N,
                tiles_decoded_per_worker=out["decodes_per_worker"][key],
            )  # fmt: skip
        small, large = rates["10000²"], rates["40000²"]
        pairs = list(zip(small, large, strict=True))
        first = [b["steady"] / a["steady"] for a, b in pairs[:1]]
        later = [b["steady"] / a["steady"] for a, b in pairs[1:]]
        q1, med, q3 = quartiles(first + later if mode == "fresh" else later)
        whole = (sum(r["tiles"] for r in large) / sum(r["seconds"] for r in large)) / (
            sum(r["tiles"] for r in small) / sum(r["seconds"] for r in small)
        )
        halves = statistics.median(b["second_half"] / a["second_half"] for a, b in pairs)
        which = "every epoch" if mode == "fresh" else "epochs 2+ (workers kept)"
        results.note(
            f"target [slide size, {label[mode]}] tiles/s 40000² / 10000² >= 0.9, {which}: "
            f"{med:.2f} [{q1:.2f}-{q3:.2f}] -> {'met' if med >= 0.9 else 'MISSED'} "
            f"(first epoch {first[0]:.2f}; all {len(pairs)} epochs, start-ups included, "
            f"{whole:.2f}; second half of each epoch {halves:.2f})"
        )
        rss = max(r["rss"] for key in rates for r in rates[key]) / MIB
        uss = max(r["uss"] for key in rates for r in rates[key]) / MIB
        pss = max(r["pss"] for key in rates for r in rates[key]) / MIB
        worst_uss = max(worst_uss, uss)
        results.note(
            f"target [worker RSS, {label[mode]}] < 600 MB: peak RSS {rss:.0f} MiB = "
            f"{rss * MIB / 1e6:.0f} MB ({'met' if rss * MIB < 600e6 else 'MISSED'}), "
            f"peak USS {uss:.0f} MiB, peak PSS {pss:.0f} MiB; parent RSS "
            f"{out['parent_rss_before_data'] / MIB:.0f} MiB after imports, "
            f"{max(r['parent_rss'] for r in rates['40000²']) / MIB:.0f} MiB at the fork"
        )
    # Sanity only: a worker's unique memory is bounded by the tile cache, not by the slide.
    assert worst_uss * MIB < 2 * ts.DEFAULT_CACHE_BYTES + 512 * MIB


# ------------------------------------------------------------------------------------------
# 3. Grid passes: each stored tile decoded about once
# ------------------------------------------------------------------------------------------


def touched_tiles(slide: ts.Slide, boxes: NDArray[np.int64], reduce: int) -> int:
    """Distinct stored tiles of the level a read at ``reduce`` uses, under the boxes."""
    level = slide.levels[slide.level_for(reduce)]
    d = level.downsample
    th, tw = level.tile
    seen: set[tuple[int, int]] = set()
    for y, x, h, w in boxes.tolist():
        y0, x0 = max(y // d, 0), max(x // d, 0)
        y1, x1 = min((y + h) // d, level.shape[0]), min((x + w) // d, level.shape[1])
        for r in range(y0 // th, (y1 - 1) // th + 1):
            for c in range(x0 // tw, (x1 - 1) // tw + 1):
                seen.add((r, c))
    return len(seen)


GRID_CASES = {
    "10k, level 0, 1024 windows, overlap 256": ("10k", ts.GridSampler(1024, overlap=256)),
    "10k, reduce 4, 1024 windows": ("10k", ts.GridSampler(1024, reduce=4)),
    "40k, reduce 4, 1024 windows": ("40k", ts.GridSampler(1024, reduce=4)),
    "40k, reduce 4, overlap 256": ("40k", ts.GridSampler(1024, reduce=4, overlap=256)),
    "40k, reduce 4, min_tissue 0.2": ("40k", ts.GridSampler(1024, reduce=4, min_tissue=0.2)),
    "40k, reduce 4, shuffled": ("40k", ts.GridSampler(1024, reduce=4, shuffle=True)),
}


@pytest.mark.parametrize("case", list(GRID_CASES))
def test_grid_pass(case: str, setup_10k: Setup, slide_40k: SlideData, results: Any) -> None:
    which, grid = GRID_CASES[case]
    data = setup_10k.slides[0] if which == "10k" else slide_40k
    source = ts.SlideSource(data.path, mask=data.rle_mask(), id=data.id)
    ds = ts.TileDataset([source], grid, seed=SEED)
    boxes = np.concatenate([grid.boxes(info) for info in ds.infos])  # the pass's windows
    level_index = source.slide.level_for(grid.reduce)
    level = source.slide.levels[level_index]
    stored = math.ceil(level.shape[0] / level.tile[0]) * math.ceil(level.shape[1] / level.tile[1])
    touched = touched_tiles(source.slide, boxes, grid.reduce)
    warm([data.path])
    cache = ts.ChunkCache.shared()
    cache.clear()
    hits0, misses0 = cache.hits, cache.misses
    t0 = time.perf_counter()
    # batch_size=None: samples one by one (no collate), the decode count is what is measured
    n = sum(1 for _ in DataLoader(ds, batch_size=None, num_workers=0))
    elapsed = time.perf_counter() - t0
    decoded, hits = cache.misses - misses0, cache.hits - hits0
    results.record(
        table="dataset: grid pass, num_workers=0, no collate, decoded chunks", scenario=case,
        contender="tilestream GridSampler", windows=n, level=level_index,
        stored_tiles=stored, touched_tiles=touched, decoded=decoded, cache_hits=hits,
        x_decoded_per_touched=decoded / max(touched, 1), x_decoded_per_stored=decoded / stored,
        tiles_s=n / elapsed,
    )  # fmt: skip
    if not grid.shuffle:
        results.note(
            f"target [grid pass: {case}] decoded / touched tiles ~1: {decoded}/{touched} = "
            f"{decoded / max(touched, 1):.3f} -> {'met' if decoded <= 1.05 * touched else 'MISSED'}"
        )
    assert n == len(boxes)
    assert decoded >= touched  # every touched tile must have been decoded at least once


# ------------------------------------------------------------------------------------------
# Per-sample stages in one process (pytest-benchmark)
# ------------------------------------------------------------------------------------------


@dataclass
class StageContext:
    setup: Setup
    ds: ts.TileDataset
    windows: list[tuple[int, ts.Box]]
    images: list[NDArray[np.uint8]]
    masks: list[NDArray[np.uint8]]
    user: UserWayDataset
    png: PngDataset
    tiffslides: list[Any]
    uncached: list[ts.Slide]  # the same slides with cache_bytes=0


@pytest.fixture(scope="session")
def stages(
    setup_10k: Setup, results: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StageContext]:
    pytest.importorskip("tiffslide")
    pytest.importorskip("cv2")
    import tiffslide

    s = setup_10k
    ds = tile_dataset(s.rle_sources, STAGE_BOXES, 50)
    windows = windows_of(ds, STAGE_BOXES)
    images = [s.rle_sources[k].slide.read(b, REDUCE) for k, b in windows]
    masks = [s.rle_sources[k].mask.read(b, REDUCE) for k, b in windows]  # type: ignore[union-attr]
    files, _, _ = cut_pngs(s.rle_sources, windows, tmp_path_factory.mktemp("png-stages"))
    user = UserWayDataset(s.paths, kaggle_masks(s, results), windows)
    slides = [tiffslide.TiffSlide(p) for p in s.paths]
    uncached = [ts.Slide.open(p, cache_bytes=0) for p in s.paths]
    yield StageContext(s, ds, windows, images, masks, user, PngDataset(files), slides, uncached)
    user.close()
    for handle in slides + uncached:
        handle.close()


def _stage_fns(c: StageContext) -> dict[str, Callable[[], Any]]:
    import cv2

    s = c.setup
    w = c.windows
    big = [
        c.tiffslides[k].read_region((b.x, b.y), 0, (TILE, TILE), as_array=True) for k, b in w[:8]
    ]
    samples = [_tensors(i, m) for i, m in zip(c.images, c.masks, strict=True)]
    for smp, (k, b) in zip(samples, w, strict=True):
        smp.update(slide=s.rle_sources[k].id, box=torch.tensor([b.y, b.x, b.height, b.width]))
    ts_samples = list(c.ds)  # what TileDataset yields: contiguous (C, h, w) images
    assert all(smp["image"].is_contiguous() for smp in ts_samples)
    chw = torch.empty((3, OUT, OUT), dtype=torch.uint8)

    def each(f: Callable[[int, ts.Box], Any]) -> Callable[[], None]:
        return lambda: [f(k, b) for k, b in w]

    return {
        "ts sampler draw (address)": lambda: [c.ds.address(g) for g in range(len(w))],
        "ts Slide.read reduce=4 (cache warm)": each(
            lambda k, b: s.rle_sources[k].slide.read(b, REDUCE)
        ),
        "ts Slide.read reduce=4 into a CHW tensor (cache warm)": each(
            lambda k, b: s.rle_sources[k].slide.read(b, REDUCE, out=chw.numpy().transpose(1, 2, 0))
        ),
        "ts Slide.read reduce=4 (cache off)": each(lambda k, b: c.uncached[k].read(b, REDUCE)),
        "ts RleMask.read reduce=4": each(lambda k, b: s.rle_sources[k].mask.read(b, REDUCE)),  # type: ignore[union-attr]
        "ts PolygonMask.read reduce=4": each(lambda k, b: s.poly_sources[k].mask.read(b, REDUCE)),  # type: ignore[union-attr]
        "tensors of an HWC tile (from_numpy, permute, box): user way, PNG": lambda: [
            (_tensors(i, m), torch.tensor([b.y, b.x, b.height, b.width]))
            for i, m, (_, b) in zip(c.images, c.masks, w, strict=True)
        ],
        "ts whole sample (TileDataset iteration)": lambda: sum(1 for _ in c.ds),
        "collate, TileDataset samples (contiguous CHW)": lambda: [
            collate(ts_samples[i : i + BATCH]) for i in range(0, len(ts_samples), BATCH)
        ],
        "collate, permuted HWC views (user way, PNG)": lambda: [
            collate(samples[i : i + BATCH]) for i in range(0, len(samples), BATCH)
        ],
        "user tiffslide read_region 1024 (x8)": lambda: [
            c.tiffslides[k].read_region((b.x, b.y), 0, (TILE, TILE), as_array=True)
            for k, b in w[:8]
        ],
        "user cv2.resize INTER_AREA (x8)": lambda: [
            cv2.resize(a, (OUT, OUT), interpolation=cv2.INTER_AREA) for a in big
        ],
        "user mask crop + INTER_NEAREST": each(
            lambda k, b: cv2.resize(
                c.user.masks[k][b.y : b.bottom, b.x : b.right],
                (OUT, OUT),
                interpolation=cv2.INTER_NEAREST,
            )
        ),
        "png cv2.imread image + mask": lambda: [c.png[i] for i in range(len(c.png))],
    }


STAGES = [
    "ts sampler draw (address)",
    "ts Slide.read reduce=4 (cache warm)",
    "ts Slide.read reduce=4 into a CHW tensor (cache warm)",
    "ts Slide.read reduce=4 (cache off)",
    "ts RleMask.read reduce=4",
    "ts PolygonMask.read reduce=4",
    "tensors of an HWC tile (from_numpy, permute, box): user way, PNG",
    "ts whole sample (TileDataset iteration)",
    "collate, TileDataset samples (contiguous CHW)",
    "collate, permuted HWC views (user way, PNG)",
    "user tiffslide read_region 1024 (x8)",
    "user cv2.resize INTER_AREA (x8)",
    "user mask crop + INTER_NEAREST",
    "png cv2.imread image + mask",
]


@pytest.mark.parametrize("stage", STAGES)
def test_sample_stages(benchmark: Any, stages: StageContext, results: Any, stage: str) -> None:
    fn = _stage_fns(stages)[stage]
    per = 8 if "(x8)" in stage else STAGE_BOXES
    benchmark.group = "dataset: one sample's stages, one process (64 windows per round)"
    benchmark.extra_info["per_round"] = per
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker (intra-op threads stall under load)
    try:
        fn()  # warm-up: caches, lazy handles, kernels
        benchmark.pedantic(fn, rounds=5, iterations=1)
    finally:
        torch.set_num_threads(threads)
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    if stats is not None:
        us = 1e6 * stats.median / per
        results.record(
            table="dataset: per-sample stages, one process (median of 5 rounds)",
            scenario="10000² x3, 1024 -> 256", contender=stage, us_per_tile=us,
            tiles_s_one_core=1e6 / us,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------
# Correctness: the contenders read the same windows and pixels
# ------------------------------------------------------------------------------------------


def test_contenders_agree(
    setup_10k: Setup, setup_10k_flat: Setup, results: Any, tmp_path: Path
) -> None:
    pytest.importorskip("tiffslide")
    cv2 = pytest.importorskip("cv2")
    s, flat = setup_10k, setup_10k_flat
    ds = tile_dataset(s.rle_sources, 16, 99)
    windows = windows_of(ds, 16)
    samples = list(ds)
    assert [tuple(x["box"].tolist()) for x in samples] == [
        (b.y, b.x, b.height, b.width) for _, b in windows
    ]
    # PNG round trip is lossless: the PNG loader returns tilestream's tiles.
    files, _, _ = cut_pngs(s.rle_sources, windows, tmp_path)
    png = PngDataset(files)
    for i, smp in enumerate(samples):
        assert torch.equal(png[i]["image"], smp["image"])
        assert torch.equal(png[i]["mask"], smp["mask"])
    # Without a pyramid both read level 0 and area-average: equal within rounding.
    user = UserWayDataset(flat.paths, kaggle_masks(flat, results), windows)
    agree, image_diff = [], 0
    for i, (k, b) in enumerate(windows):
        want = flat.rle_sources[k].slide.read(b, REDUCE)
        got = user[i]["image"].permute(1, 2, 0).numpy()
        image_diff = max(image_diff, int(np.abs(got.astype(np.int16) - want).max()))
        # Masks: block majority (tilestream) vs one pixel per block (INTER_NEAREST).
        mask = flat.rle_sources[k].mask.read(b, REDUCE)  # type: ignore[union-attr]
        agree.append(float((user[i]["mask"][0].numpy() == mask).mean()))
        # The Kaggle decoder and RleMask agree at level 0.
        full = flat.rle_sources[k].mask.read(b)  # type: ignore[union-attr]
        np.testing.assert_array_equal(full, user.masks[k][b.y : b.bottom, b.x : b.right])
    user.close()
    results.note(
        f"agreement (no pyramid): user-way image vs tilestream max |diff| {image_diff}; "
        f"256² masks INTER_NEAREST vs block majority agree on {100 * min(agree):.2f}%+ of pixels"
    )
    assert image_diff <= 1
    assert min(agree) > 0.97
    # Polygon and RLE masks of the same polygons: equal at level 0.
    for k, b in windows[:4]:
        np.testing.assert_array_equal(s.rle_sources[k].mask.read(b), s.poly_sources[k].mask.read(b))  # type: ignore[union-attr]
    assert cv2 is not None


if __name__ == "__main__":  # the fresh process of test_slide_size
    if len(sys.argv) == 3 and sys.argv[1] == "size":
        _size_main(json.loads(sys.argv[2]))
    else:
        raise SystemExit(f"usage: {sys.argv[0]} size ARGS_JSON")
