"""RLE benchmarks on a HuBMAP-sized mask: decode, windowed decode, encode, encode memory.

Run with ``.venv/bin/python -m pytest benchmarks/bench_rle.py`` (about 2-4 minutes; needs
~10 GB of free memory for the Kaggle encoder's int64 copy).

What is measured
----------------
A 25000 x 35000 (H x W) uint8 mask with 3000 filled ellipses ("glomeruli", semi-axes 70-210
px; ~600k column-major runs, like the 617k of PERF-NOTES), drawn once per session straight
into the mask (875 MB). Its column-major RLE (1-based, Kaggle) is the input of the decoders.

Contenders, side by side in one pytest-benchmark ``group`` per scenario:

- ``decode``: ``rle_decode`` (a C-contiguous mask) vs the common Kaggle numpy decoder (split,
  slice assignment per run, ``reshape(order="F")``) followed by ``np.ascontiguousarray`` so both
  return the same C-ordered array. Target >= 4x.
- ``window``: one 1024 x 1024 window decoded from the indexed runs (``rle_to_runs`` once,
  then ``rle_decode_window`` per window, rotating through 64 seeded positions) vs decoding the
  whole mask with the Kaggle decoder and cropping it. Target >= 1000x. ``rle_decode`` + crop
  and ``reduce=4`` are shown too.
- ``encode``: ``rle_encode`` vs the common Kaggle encoder (``img.T.flatten()``, pad with
  ``[0]``, ``np.where`` of changes, ``' '.join``). Target >= 10x. Both outputs are checked equal.
- ``memory``: peak extra resident memory of each encoder (``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``; numba's allocations are invisible to tracemalloc), per pixel.
  Target < 1 byte/pixel for ours (the Kaggle encoder needs ~9).

Every function is called once on a small input first, so JIT compilation is excluded. The slow
anchors run a single round (``benchmark.pedantic``). The machine has 2 cores and other work:
quote the ratios of one run (the ``x_anchor`` column), not absolute times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from _common import status_bytes
from tilestream import (
    rle_decode,
    rle_decode_window,
    rle_encode,
    rle_to_runs,
)

H, W = 25000, 35000
N_BLOBS = 3000
SEED = 20240611
WINDOW = 1024
N_WINDOWS = 64
TABLE = "rle"

# median seconds per (scenario, contender) of this run, for the ratio columns
_TIMES: dict[tuple[str, str], float] = {}
ANCHORS = {
    "decode": "kaggle decode + ascontiguousarray",
    "window": "kaggle decode + crop",
    "encode": "kaggle encode",
}
TARGETS = {"decode": 4.0, "window": 1000.0, "encode": 10.0}


# --------------------------------------------------------------------------------------------
# The anchors: the Kaggle notebook helpers, as users copy them
# --------------------------------------------------------------------------------------------


def kaggle_decode(rle: str, shape: tuple[int, int]) -> NDArray[np.uint8]:
    s = rle.split()
    starts, lengths = (np.asarray(x, dtype=int) for x in (s[0::2], s[1::2]))
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends, strict=True):
        img[lo:hi] = 1
    return img.reshape(shape, order="F")


def kaggle_encode(img: NDArray[np.uint8]) -> str:
    pixels = img.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def blob_mask(h: int, w: int, n: int, seed: int) -> NDArray[np.uint8]:
    """``n`` filled ellipses drawn one bounding box at a time (bounded temporary memory)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    cy, cx = rng.uniform(0, h, n), rng.uniform(0, w, n)
    ry = rng.uniform(70, 165, n)
    rx = ry * rng.uniform(0.75, 1.3, n)
    for y, x, a, b in zip(cy, cx, ry, rx, strict=True):
        y0, y1 = max(int(y - a), 0), min(int(y + a) + 1, h)
        x0, x1 = max(int(x - b), 0), min(int(x + b) + 1, w)
        yy = ((np.arange(y0, y1) - y) / a)[:, None]
        xx = ((np.arange(x0, x1) - x) / b)[None, :]
        mask[y0:y1, x0:x1] |= (yy * yy + xx * xx <= 1.0).view(np.uint8)
    return mask


@pytest.fixture(scope="module")
def warm() -> None:
    """Compile every kernel on a tiny input (JIT time is not measured)."""
    small = np.zeros((9, 7), np.uint8)
    small[2:6, 1:4] = 1
    for order in ("F", "C"):
        text = rle_encode(small, order)
        rle_decode(text, small.shape, order)
        starts, lengths = rle_to_runs(text, small.shape)
        for r in (1, 2):
            rle_decode_window(starts, lengths, small.shape, 0, 0, 4, 4, order, reduce=r)


@pytest.fixture(scope="module")
def mask(warm: None, results: Any) -> NDArray[np.uint8]:
    t0 = time.perf_counter()
    m = blob_mask(H, W, N_BLOBS, SEED)
    results.note(
        f"rle: mask {H}x{W}, {N_BLOBS} ellipses, {m.mean():.1%} positive, drawn in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return m


@pytest.fixture(scope="module")
def text(mask: NDArray[np.uint8], results: Any) -> str:
    t = rle_encode(mask)
    results.note(f"rle: {len(t.split()) // 2} column-major runs, {len(t) / 2**20:.1f} MiB of text")
    return t


@pytest.fixture(scope="module")
def runs(text: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    return rle_to_runs(text, (H, W))


@pytest.fixture(scope="module")
def window_boxes() -> list[tuple[int, int]]:
    rng = np.random.default_rng(SEED + 1)
    step = 16  # aligned, so the same boxes also serve reduce=4
    return [
        (
            step * int(rng.integers(0, (H - WINDOW) // step)),
            step * int(rng.integers(0, (W - WINDOW) // step)),
        )
        for _ in range(N_WINDOWS)
    ]


# --------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------


def run_bench(
    benchmark: Any,
    results: Any,
    scenario: str,
    contender: str,
    fn: Callable[[], Any],
    rounds: int,
    pixels: int,
) -> Any:
    benchmark.group = f"rle {scenario}"
    benchmark.name = contender
    out = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        median = float(stats.stats.median)
        _TIMES[(scenario, contender)] = median
        anchor = _TIMES.get((scenario, ANCHORS[scenario]))
        results.record(
            table=TABLE,
            scenario=scenario,
            contender=contender,
            rounds=rounds,
            median_s=median,
            mpx_s=pixels / median / 1e6,
            x_anchor=None if anchor is None else anchor / median,
        )
    return out


def rotating(fn: Callable[[int, int], Any], boxes: list[tuple[int, int]]) -> Callable[[], Any]:
    state = {"i": 0}

    def call() -> Any:
        y, x = boxes[state["i"] % len(boxes)]
        state["i"] += 1
        return fn(y, x)

    return call


# --------------------------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------------------------


def test_decode_kaggle(benchmark: Any, results: Any, text: str, mask: NDArray[np.uint8]) -> None:
    out = run_bench(
        benchmark,
        results,
        "decode",
        ANCHORS["decode"],
        lambda: np.ascontiguousarray(kaggle_decode(text, (H, W))),
        rounds=1,
        pixels=H * W,
    )
    assert np.array_equal(out, mask)


def test_decode_tilestream(
    benchmark: Any, results: Any, text: str, mask: NDArray[np.uint8]
) -> None:
    out = run_bench(
        benchmark,
        results,
        "decode",
        "tilestream rle_decode",
        lambda: rle_decode(text, (H, W)),
        rounds=3,
        pixels=H * W,
    )
    assert np.array_equal(out, mask)


# --------------------------------------------------------------------------------------------
# Windowed decode
# --------------------------------------------------------------------------------------------


def test_window_kaggle(
    benchmark: Any, results: Any, text: str, window_boxes: list[tuple[int, int]]
) -> None:
    def crop(y: int, x: int) -> NDArray[np.uint8]:
        return kaggle_decode(text, (H, W))[y : y + WINDOW, x : x + WINDOW].copy()

    run_bench(
        benchmark,
        results,
        "window",
        ANCHORS["window"],
        rotating(crop, window_boxes),
        rounds=1,
        pixels=WINDOW * WINDOW,
    )


def test_window_full_decode(
    benchmark: Any, results: Any, text: str, window_boxes: list[tuple[int, int]]
) -> None:
    def crop(y: int, x: int) -> NDArray[np.uint8]:
        return rle_decode(text, (H, W))[y : y + WINDOW, x : x + WINDOW].copy()

    run_bench(
        benchmark,
        results,
        "window",
        "tilestream rle_decode + crop",
        rotating(crop, window_boxes),
        rounds=1,
        pixels=WINDOW * WINDOW,
    )


@pytest.mark.parametrize("reduce", [1, 4])
def test_window_tilestream(
    benchmark: Any,
    results: Any,
    runs: tuple[NDArray[np.int64], NDArray[np.int64]],
    window_boxes: list[tuple[int, int]],
    mask: NDArray[np.uint8],
    reduce: int,
) -> None:
    starts, lengths = runs

    def window(y: int, x: int) -> NDArray[np.uint8]:
        return rle_decode_window(starts, lengths, (H, W), y, x, WINDOW, WINDOW, reduce=reduce)

    y, x = window_boxes[0]
    if reduce == 1:
        assert np.array_equal(window(y, x), mask[y : y + WINDOW, x : x + WINDOW])
    name = "tilestream rle_decode_window" + (f" reduce={reduce}" if reduce > 1 else "")
    run_bench(
        benchmark,
        results,
        "window",
        name,
        rotating(window, window_boxes),
        rounds=200,
        pixels=WINDOW * WINDOW,
    )


# --------------------------------------------------------------------------------------------
# Encode
# --------------------------------------------------------------------------------------------


def test_encode_kaggle(benchmark: Any, results: Any, mask: NDArray[np.uint8], text: str) -> None:
    out = run_bench(
        benchmark,
        results,
        "encode",
        ANCHORS["encode"],
        lambda: kaggle_encode(mask),
        rounds=1,
        pixels=H * W,
    )
    assert out == text


def test_encode_tilestream(
    benchmark: Any, results: Any, mask: NDArray[np.uint8], text: str
) -> None:
    out = run_bench(
        benchmark,
        results,
        "encode",
        "tilestream rle_encode",
        lambda: rle_encode(mask),
        rounds=3,
        pixels=H * W,
    )
    assert out == text


# --------------------------------------------------------------------------------------------
# Peak memory of the encoders
# --------------------------------------------------------------------------------------------


def peak_extra_bytes(fn: Callable[[], Any]) -> int:
    """Peak resident memory above the current level while ``fn`` runs (Linux VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current RSS
    base = status_bytes("VmRSS")
    result = fn()
    peak = status_bytes("VmHWM") - base
    del result
    return peak


def test_encode_memory(results: Any, mask: NDArray[np.uint8]) -> None:
    try:
        peak_extra_bytes(lambda: None)
    except OSError as err:
        pytest.skip(f"cannot reset VmHWM here: {err}")
    figures = {}
    for name, fn in (
        ("tilestream rle_encode", lambda: rle_encode(mask)),
        ("kaggle encode", lambda: kaggle_encode(mask)),
    ):
        peak = peak_extra_bytes(fn)
        figures[name] = peak / mask.size
        results.record(
            table=f"{TABLE} memory",
            scenario="encode peak extra RSS",
            contender=name,
            peak_mib=peak / 2**20,
            bytes_per_px=peak / mask.size,
        )
    results.note(
        f"rle: encode peak extra memory {figures['tilestream rle_encode']:.3f} B/px (ours) vs "
        f"{figures['kaggle encode']:.2f} B/px (Kaggle); target < 1"
    )
    assert figures["tilestream rle_encode"] < 1.0


def test_targets(results: Any) -> None:
    """Print each scenario's ratio against its target (after the timed tests above)."""
    lines = []
    for scenario, anchor in ANCHORS.items():
        base = _TIMES.get((scenario, anchor))
        ours = [
            (name, t)
            for (sc, name), t in _TIMES.items()
            if sc == scenario
            and name.startswith("tilestream rle_")
            and "+ crop" not in name
            and "reduce" not in name
        ]
        if base is None or not ours:
            continue
        ratio = base / ours[0][1]
        lines.append(f"{scenario} {ratio:.1f}x (target >= {TARGETS[scenario]:g}x)")
    if lines:
        results.note("rle ratios vs anchor, this run: " + "; ".join(lines))
