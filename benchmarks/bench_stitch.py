"""Stitching benchmarks: whole-slide prediction against MONAI, and the slide RLE at 40000 x 50000.

Run with ``.venv/bin/python -m pytest benchmarks/bench_stitch.py -s`` (about 3-4 minutes once
the slides are cached; needs ``monai`` and ``opencv-python-headless`` in the environment, a
scenario whose package is missing is skipped). Every measured run happens in a fresh Python
process (this file run as a script), so each contender starts from the same state and its peak
memory is its own; the contenders alternate, the order rotating each round, and the ratios
quoted are the medians of the per-round paired ratios (the machine has 2 cores and other work).

What is measured
----------------
``predict``: a 10000 x 10000 tiled 512 JPEG q85 slide with a pyramid (``conftest.JPEG_10K``),
an identity model (the first channel of its input), reduce 4 (a 2500 x 2500 canvas), 256 px
model windows (``tile=1024`` at level 0), 25% overlap, Gaussian blending, batches of 8, CPU,
no workers: 169 windows for both contenders.

- ``tilestream``: ``ts.predict_slide`` on the path (the tiles of pyramid level 2 decoded by its
  background thread, windows built from them into the float batch + model + blending into
  the declared-grid canvas) followed by ``Stitcher.probabilities()`` (a read-only view of that
  canvas), so both contenders end with the blended probability array.
- ``monai``: ``slide.read(whole slide, reduce=4)`` into a float tensor, then MONAI's
  ``SlidingWindowInferer(roi_size=(256, 256), sw_batch_size=8, overlap=0.25,
  mode="gaussian")`` over it. Its time is reported with the read (the fair figure: tilestream's
  includes its reads) and without it.

Each child process imports its contender (``import_s`` and the RSS it adds are reported; for
tilestream that includes ``ts.predict_slide``, which ``import tilestream`` loads lazily), then
calls it three times on the slide: the first call is *cold* (first call in the process: torch's
and MONAI's first-call set-up, the JPEG codec's first use, fresh memory; tilestream's prediction
path calls no numba kernel), the next two are *warm* (the steady state of a multi-slide run).
Torch runs one thread in both (``torch.set_num_threads(1)``): the 2 cores are shared with other
work. ``predict_slide`` decodes the tiles in one background thread of its own (by design: the
decoding of the next tiles overlaps the model and the blending), so tilestream uses up to two
cores where MONAI's pipeline, read included, uses one. Every call's output is checked against the slide's first channel / 255 (an identity
model blended with any weights returns its input) and the model counts the windows it sees.
Peak memory (``peak_mib``): the process's resident high-water mark during the call (``VmHWM``,
reset through ``/proc/self/clear_refs`` just before it; psutil polling every 2 ms where that is
not allowed) minus its RSS right after the imports, so a warm call is charged for what earlier
calls left in the allocator or caches. The tilestream child runs a fourth call under cProfile
for a stage breakdown (printed, not timed). Targets: tilestream >= 2x faster than MONAI (with the
read) at <= 1/4 of its peak extra memory.

``predict 40000²``: the same on the 40000² JPEG slide (``conftest.JPEG_40K``, canvas 10000²,
2704 windows), three rounds of one (cold) call per contender, to show how time and memory scale;
tilestream also runs on a slide the caller opened with ``Slide.open(path)`` (the process-wide
256 MiB tile cache, which keeps every tile it decoded until the slide is closed) instead of the
path. (Since ``predict_slide`` builds float windows from the decoded tiles itself, keeping
each tile from its first window to its last, neither variant uses a slide cache on this
benchmark: the two differ only in who opens the slide.)

``rle``: ``Stitcher.to_rle`` on a 40000 x 50000 slide at reduce 4 (canvas 10000 x 12500). The
canvas is filled directly for set-up (``stitcher._sums`` / ``_weights`` written in place:
weights 1, probability 0.02 background plus ~3000 elliptic blobs of 70-165 px radius at level
0, p = 0.5 on the ellipse), not by adding windows. The anchor, "threshold the canvas,
``cv2.resize`` it to full size (``INTER_NEAREST``), Kaggle encoder", needs ~20 GB at that size,
so it runs on a 10000 x 12500 slide (canvas 2500 x 3125, the same blob density: 188 blobs) and
its time and memory are extrapolated linearly by pixel count (x16); tilestream also runs on that
smaller slide for a same-size ratio, and its RLE is checked equal to the anchor's. Targets: peak
memory of ``to_rle`` under 1.5 GB at 40000 x 50000, >= 5x faster than the anchor.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _common import loaded_conftest, status_bytes

MIB = 2**20

# predict
TILE, OVERLAP, REDUCE, BATCH = 1024, 256, 4, 8
PREDICT_ROUNDS = 5
PREDICT_ROUNDS_40K = 3
# rle
FULL = (40000, 50000)
SMALL = (10000, 12500)
BLOBS_FULL = 3000
BLOB_SEED = 20240611
RLE_ROUNDS = 3
THRESHOLD = 0.5

TABLE_PREDICT = "stitch predict"
TABLE_RLE = "stitch rle"


# ------------------------------------------------------------------------------------------
# Peak resident memory of a block (runs in the child processes)
# ------------------------------------------------------------------------------------------


def _rss() -> int:
    try:
        return status_bytes("VmRSS")
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


@contextmanager
def peak_extra(out: dict[str, Any]) -> Iterator[None]:
    """Sets ``out["peak_extra"]`` (bytes above the RSS at entry), ``out["hwm"]`` (the peak RSS of
    the whole process during the block), ``out["rss_base"]`` and ``out["peak_method"]``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = status_bytes("VmRSS")
        have_hwm = True
    except OSError:
        have_hwm = False
    if have_hwm:
        yield
        hwm = status_bytes("VmHWM")
        out.update(peak_extra=hwm - base, hwm=hwm, rss_base=base, peak_method="VmHWM")
        return
    import psutil

    proc = psutil.Process()
    base = int(proc.memory_info().rss)
    state = {"peak": base, "stop": False}

    def poll() -> None:
        while not state["stop"]:
            state["peak"] = max(state["peak"], int(proc.memory_info().rss))
            time.sleep(0.002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        state["stop"] = True
        thread.join()
        peak = max(state["peak"], int(proc.memory_info().rss))
        out.update(peak_extra=peak - base, hwm=peak, rss_base=base, peak_method="psutil 2 ms")


# ------------------------------------------------------------------------------------------
# Child: predict (tilestream or MONAI), one timed run
# ------------------------------------------------------------------------------------------


class Identity:
    """The model: the first channel of its input; counts the windows it sees."""

    def __init__(self) -> None:
        self.windows = 0

    def __call__(self, x: Any) -> Any:
        self.windows += int(x.shape[0])
        return x[:, :1]


def child_predict(args: dict[str, Any]) -> dict[str, Any]:
    """Import, then ``args["calls"]`` timed calls of one contender on the slide: the first is
    cold (first call in the process), the next ones warm (the steady state of a multi-slide
    run). Each call: seconds, peak extra RSS, windows seen by the model."""
    t0 = time.perf_counter()
    rss0 = _rss()
    import torch

    import tilestream as ts

    if args["contender"] == "monai":
        from monai.inferers import SlidingWindowInferer
    else:  # `import tilestream` loads its torch modules on first use: load them here, where
        ts.predict_slide  # noqa: B018  MONAI's are loaded too (`import_s`), not in a call
    out: dict[str, Any] = {
        "import_s": time.perf_counter() - t0,
        "rss_start": rss0,
        "rss_import": _rss(),
        "calls": [],
    }
    torch.set_num_threads(1)  # 2 cores shared with other work: one thread for both contenders
    path = args["path"]

    def tilestream_call(model: Identity, timing: dict[str, float]) -> Any:
        settings: dict[str, Any] = dict(
            tile=TILE, overlap=OVERLAP, reduce=REDUCE, batch_size=BATCH, activation=None,
            progress=False,
        )  # fmt: skip
        if not args.get("open_slide"):  # the path: predict_slide opens it with a row cache
            return ts.predict_slide(model, path, **settings).probabilities()
        with ts.Slide.open(path) as slide:  # the process-wide 256 MiB tile cache
            stitcher = ts.predict_slide(model, slide, **settings)
        return stitcher.probabilities()

    def monai_call(model: Identity, timing: dict[str, float]) -> Any:
        t = time.perf_counter()
        with ts.Slide.open(path) as slide:
            h, w = slide.shape
            img = slide.read(ts.Box(0, 0, h, w), reduce=REDUCE)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div_(255.0)
        del img
        timing["read_s"] = time.perf_counter() - t
        inferer = SlidingWindowInferer(
            roi_size=(TILE // REDUCE, TILE // REDUCE),
            sw_batch_size=BATCH,
            overlap=OVERLAP / TILE,
            mode="gaussian",
        )
        with torch.inference_mode():
            y = inferer(x, model)
        return y[0, 0].numpy()

    call = monai_call if args["contender"] == "monai" else tilestream_call
    result = None
    for _ in range(args["calls"]):
        del result
        model = Identity()
        row: dict[str, Any] = {}
        with peak_extra(row):
            t = time.perf_counter()
            result = call(model, row)
            row["seconds"] = time.perf_counter() - t
        row["windows"] = model.windows
        # the footprint of the call: peak RSS above the freshly imported process (a warm call
        # reuses memory its predecessors left in the allocator, so its peak_extra alone is not)
        row["peak"] = row["hwm"] - out["rss_import"]
        out["calls"].append(row)
    if args.get("profile"):
        out["profile"] = _profile(lambda: call(Identity(), {}))
    with ts.Slide.open(path) as slide:
        h, w = slide.shape
        want = slide.read(ts.Box(0, 0, h, w), reduce=REDUCE)[..., 0].astype(np.float32) / 255
    out["max_abs_err"] = float(np.abs(np.asarray(result) - want).max())
    out["shape"] = list(np.shape(result))
    return out


_PROFILE_KEYS = {
    ("imagecodecs.py", "jpeg_decode"): "JPEG decode",
    ("_windows.py", "_channels_first"): "tile de-interleave (HWC -> CHW)",
    ("_windows.py", "_tile_batches"): "window assembly + x/255 from tiles",
    ("reader.py", "_tile_pieces"): "window -> tile pieces",
    ("reader.py", "_read_tiles"): "window copies from tiles (read path)",
    ("_windows.py", "_window_batches"): "batch assembly + x/255 (read path)",
    ("~", "<method 'addcmul_' of 'torch._C.TensorBase' objects>"): "blend (fused multiply-add)",
    ("stitch.py", "add"): "Stitcher.add (checks, own time)",
    ("stitch.py", "_norm"): "blend normalisers",
    ("stitch.py", "probabilities"): "Stitcher.probabilities",
}


def _profile(fn: Callable[[], Any]) -> dict[str, float]:
    """Seconds of own time (cProfile tottime) of the main stages of one warm call."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    total = time.perf_counter() - t0
    stats: Any = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, _)}
    out = {"total (under cProfile)": total}
    for (file, _, name), (_, _, tottime, _, _) in stats.items():
        key = _PROFILE_KEYS.get((Path(file).name, name))
        if key is not None:
            out[key] = out.get(key, 0.0) + tottime
    return out


# ------------------------------------------------------------------------------------------
# Child: RLE of a filled canvas (tilestream to_rle or resize + Kaggle encoder)
# ------------------------------------------------------------------------------------------


def kaggle_encode(img: Any) -> str:
    """The common Kaggle/HuBMAP encoder, as notebooks copy it (as in bench_rle.py)."""
    pixels = img.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def blob_count(shape: tuple[int, int]) -> int:
    """Blobs for ``shape`` at the density of ``BLOBS_FULL`` on ``FULL``."""
    return round(BLOBS_FULL * shape[0] * shape[1] / (FULL[0] * FULL[1]))


def fill_canvas(stitcher: Any, n: int, seed: int) -> None:
    """Set-up only: write a probability map straight into the stitcher's canvas (in place, so
    the set-up peak is the canvas itself). Background 0.02, ``n`` elliptic blobs with p = 0.5
    on an ellipse of 70-165 level-0 px semi-axis, rising to 0.98 inside."""
    sums = stitcher._sums[0]
    weights = stitcher._weights
    weights.fill(1.0)
    sums.fill(0.02)
    ch, cw = stitcher.canvas_shape
    r = stitcher.reduce
    rng = np.random.default_rng(seed)
    cy, cx = rng.uniform(0, ch, n), rng.uniform(0, cw, n)
    ry = rng.uniform(70, 165, n) / r
    rx = ry * rng.uniform(0.75, 1.3, n)
    for y, x, a, b in zip(cy, cx, ry, rx, strict=True):
        y0, y1 = max(int(y - 1.5 * a), 0), min(int(y + 1.5 * a) + 1, ch)
        x0, x1 = max(int(x - 1.5 * b), 0), min(int(x + 1.5 * b) + 1, cw)
        yy = ((np.arange(y0, y1) - y) / a)[:, None]
        xx = ((np.arange(x0, x1) - x) / b)[None, :]
        p = np.clip(1.0 - 0.5 * (yy * yy + xx * xx), 0.0, 0.98).astype(np.float32)
        np.maximum(sums[y0:y1, x0:x1], p, out=sums[y0:y1, x0:x1])


def child_rle(args: dict[str, Any]) -> dict[str, Any]:
    import tilestream as ts

    out: dict[str, Any] = {"rss_import": _rss()}
    h, w = args["shape"]
    contender = args["contender"]
    if contender == "kaggle":
        import cv2

        cv2.setNumThreads(1)
    # warm-up: JIT kernels (loaded from numba's cache) and the anchor's functions
    small = ts.Stitcher((64, 80), reduce=REDUCE, tile=32, blend="mean")
    fill_canvas(small, 2, 1)
    small.to_rle(THRESHOLD)
    if contender == "kaggle":
        kaggle_encode(cv2.resize(small.mask(THRESHOLD), (80, 64), interpolation=cv2.INTER_NEAREST))
    stitcher = ts.Stitcher((h, w), reduce=REDUCE, tile=TILE, blend="gaussian", overlap=OVERLAP)
    t0 = time.perf_counter()
    fill_canvas(stitcher, args["blobs"], BLOB_SEED)
    out["setup_s"] = time.perf_counter() - t0
    out["rss_canvas"] = _rss()
    if contender == "tilestream":
        with peak_extra(out):
            t0 = time.perf_counter()
            rle = stitcher.to_rle(THRESHOLD)
            out["seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        stitcher.to_rle(THRESHOLD)
        out["seconds_repeat"] = time.perf_counter() - t0
        if args.get("breakdown"):
            out["breakdown"] = _rle_breakdown(stitcher)
    else:
        with peak_extra(out):
            t0 = time.perf_counter()
            mask = stitcher.mask(THRESHOLD)
            t1 = time.perf_counter()
            full = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
            t2 = time.perf_counter()
            rle = kaggle_encode(full)
            t3 = time.perf_counter()
            del full
        out.update(
            seconds=t3 - t0, breakdown={"mask": t1 - t0, "resize": t2 - t1, "encode": t3 - t2}
        )
    out["runs"] = rle.count(" ") // 2 + 1 if rle else 0
    out["rle_mib"] = len(rle) / MIB
    out["sha1"] = hashlib.sha1(rle.encode()).hexdigest()
    out["positive"] = float(stitcher.mask(THRESHOLD).mean())
    return out


def _rle_breakdown(stitcher: Any) -> dict[str, Any]:
    """Diagnostic second pass: where ``to_rle``'s time and memory go (private kernels)."""
    from tilestream.rle import runs_to_rle
    from tilestream.stitch import _column_runs, _scale_runs

    h, w = stitcher.shape
    mem: dict[str, Any] = {}
    t0 = time.perf_counter()
    with peak_extra(mem):
        mask = stitcher.mask(THRESHOLD)
    t1 = time.perf_counter()
    offsets, run_starts, run_ends = _column_runs(mask)
    t2 = time.perf_counter()
    starts, lengths = _scale_runs(offsets, run_starts, run_ends, stitcher.reduce, w, h)
    t3 = time.perf_counter()
    runs_to_rle(starts + 1, lengths)
    t4 = time.perf_counter()
    return {
        "mask": t1 - t0,
        "mask_peak_extra_mib": mem["peak_extra"] / MIB,
        "column_runs": t2 - t1,
        "scale_runs": t3 - t2,
        "format": t4 - t3,
    }


# ------------------------------------------------------------------------------------------
# Parent side: run children, interleaved
# ------------------------------------------------------------------------------------------


def run_child(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), kind, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def interleaved(
    contenders: list[str], rounds: int, run: Callable[[str], dict[str, Any]]
) -> list[dict[str, dict[str, Any]]]:
    """``rounds`` rounds, each running every contender once, the order rotated per round."""
    out = []
    for i in range(rounds):
        k = i % len(contenders)
        order = contenders[k:] + contenders[:k]
        out.append({c: run(c) for c in order})
    return out


def _q(values: list[float]) -> str:
    values = sorted(values)
    if len(values) < 3:
        return f"{statistics.median(values):.2f}"
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{statistics.median(values):.2f} [{q1:.2f}-{q3:.2f}]"


def _date() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


# ------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(request: pytest.FixtureRequest) -> None:
    """Run both paths once on tiny input in this process, so numba's on-disk cache is fresh
    (src edited since the last run would otherwise make a child compile inside a timed call)."""
    import tilestream as ts
    from tilestream.synthetic import SlideSpec

    bench = loaded_conftest(request.config)
    spec = bench.JPEG_10K
    tiny = bench.cached_slide(
        SlideSpec(
            height=1024,
            width=1024,
            seed=spec.seed,
            tile=spec.tile,
            compression=spec.compression,
            quality=spec.quality,
            pyramid=True,
        )
    )
    ts.predict_slide(
        Identity(),
        tiny,
        tile=TILE,
        overlap=OVERLAP,
        reduce=REDUCE,
        batch_size=BATCH,
        activation=None,
        progress=False,
    ).to_rle(THRESHOLD)


def _predict_rows(
    results: Any, scenario: str, rounds: list[dict[str, dict[str, Any]]], windows: int, side: int
) -> None:
    for rnd in rounds:
        for c, r in rnd.items():
            assert all(call["windows"] == windows for call in r["calls"]), (c, r["calls"])
            assert r["shape"] == [side, side]
            assert r["max_abs_err"] < 1e-5, (c, r["max_abs_err"])

    def cold(r: dict[str, Any], key: str) -> float:
        return float(r["calls"][0][key])

    def warm(r: dict[str, Any], key: str) -> float:
        return float(statistics.median(c[key] for c in r["calls"][1:]))

    phases = [("cold", cold)] + ([("warm", warm)] if len(rounds[0]["monai"]["calls"]) > 1 else [])
    names = list(rounds[0])
    summary: dict[str, str] = {}
    for name in names:
        rs = [r[name] for r in rounds]
        for phase, get in phases:
            row: dict[str, Any] = dict(
                table=TABLE_PREDICT,
                scenario=f"{scenario}, {phase}",
                contender=name,
                rounds=len(rs),
                median_s=statistics.median(get(x, "seconds") for x in rs),
                peak_mib=statistics.median(get(x, "peak") for x in rs) / MIB,
                peak_rss_mib=statistics.median(get(x, "hwm") for x in rs) / MIB,
            )
            if name == "monai":
                row["read_s"] = statistics.median(get(x, "read_s") for x in rs)
            else:
                speed = [get(r["monai"], "seconds") / get(r[name], "seconds") for r in rounds]
                noread = [
                    (get(r["monai"], "seconds") - get(r["monai"], "read_s"))
                    / get(r[name], "seconds")
                    for r in rounds
                ]
                mem = [get(r[name], "peak") / get(r["monai"], "peak") for r in rounds]
                row.update(
                    x_monai=statistics.median(speed),
                    x_monai_noread=statistics.median(noread),
                    mem_vs_monai=statistics.median(mem),
                )
                summary[f"{name} {phase}"] = (
                    f"speed {_q(speed)}x (MONAI without its read {_q(noread)}x), "
                    f"memory {_q(mem)} of MONAI's"
                )
            results.record(**row)
        results.record(
            table=f"{TABLE_PREDICT} imports",
            scenario=scenario,
            contender=name,
            import_s=statistics.median(x["import_s"] for x in rs),
            rss_import_mib=statistics.median(x["rss_import"] - x["rss_start"] for x in rs) / MIB,
        )

    def series(r: dict[str, Any], key: str, scale: float, fmt: str) -> str:
        return " ".join(format(c[key] / scale, fmt) for c in r["calls"])

    per_round = " | ".join(
        ", ".join(
            f"{name} {series(r[name], 'seconds', 1, '.2f')} s"
            + (f" (read {series(r[name], 'read_s', 1, '.2f')})" if name == "monai" else "")
            + f" / {series(r[name], 'peak', MIB, '.0f')} MiB"
            for name in names
        )
        for r in rounds
    )
    profiles = [r[n]["profile"] for r in rounds for n in names if "profile" in r[n]]
    if profiles:
        results.note(
            f"stitch predict {scenario}: one warm tilestream call under cProfile "
            "(own time, s): " + ", ".join(f"{k} {v:.3f}" for k, v in profiles[0].items())
        )
    results.note(
        f"stitch predict {scenario} ({_date()}), medians [quartiles] of per-round "
        f"ratios: "
        + "; ".join(f"{k}: {v}" for k, v in summary.items())
        + f". Per round (cold, warm...): {per_round}; peak via "
        f"{rounds[0]['monai']['calls'][0]['peak_method']}"
    )


def test_predict_vs_monai(compiled: None, jpeg_slide: str, results: Any) -> None:
    """10000² slide (canvas 2500²): 5 rounds, each a cold and two warm calls per contender."""
    pytest.importorskip("monai")
    load0 = _load()
    rounds = interleaved(
        ["tilestream", "monai"],
        PREDICT_ROUNDS,
        lambda c: run_child(
            "predict",
            {"contender": c, "path": jpeg_slide, "calls": 3, "profile": c == "tilestream"},
        ),
    )
    _predict_rows(results, "10000² JPEG reduce 4, 169 windows", rounds, 169, 2500)
    results.note(f"stitch predict 10000²: load average {load0} -> {_load()}")


def test_predict_vs_monai_40k(compiled: None, jpeg_slide_40k: str, results: Any) -> None:
    """40000² slide (canvas 10000²): how the memory scales; 3 rounds, one (cold) call each,
    tilestream also on a slide opened by the caller (the process-wide 256 MiB tile cache)."""
    pytest.importorskip("monai")
    load0 = _load()
    contenders = {
        "tilestream": {},
        "tilestream, Slide.open(path) (shared 256 MiB tile cache)": {"open_slide": True},
        "monai": {},
    }
    rounds = interleaved(
        list(contenders),
        PREDICT_ROUNDS_40K,
        lambda c: run_child(
            "predict", {"contender": c, "path": jpeg_slide_40k, "calls": 1, **contenders[c]}
        ),
    )
    _predict_rows(results, "40000² JPEG reduce 4, 2704 windows", rounds, 52 * 52, 10000)
    results.note(f"stitch predict 40000²: load average {load0} -> {_load()}")


def test_to_rle_vs_kaggle(compiled: None, results: Any) -> None:
    pytest.importorskip("cv2")
    small_blobs = blob_count(SMALL)
    jobs = {
        "tilestream 40000x50000": {
            "contender": "tilestream",
            "shape": FULL,
            "blobs": BLOBS_FULL,
            "breakdown": True,
        },
        "tilestream 10000x12500": {"contender": "tilestream", "shape": SMALL, "blobs": small_blobs},
        "kaggle 10000x12500": {"contender": "kaggle", "shape": SMALL, "blobs": small_blobs},
    }
    load0 = _load()
    rounds = interleaved(list(jobs), RLE_ROUNDS, lambda c: run_child("rle", jobs[c]))
    load1 = _load()
    scale = FULL[0] * FULL[1] / (SMALL[0] * SMALL[1])
    for rnd in rounds:
        assert rnd["tilestream 10000x12500"]["sha1"] == rnd["kaggle 10000x12500"]["sha1"]
    full_ratio = [
        r["kaggle 10000x12500"]["seconds"] * scale / r["tilestream 40000x50000"]["seconds"]
        for r in rounds
    ]
    same_ratio = [
        r["kaggle 10000x12500"]["seconds"] / r["tilestream 10000x12500"]["seconds"] for r in rounds
    ]
    for name in jobs:
        rs = [r[name] for r in rounds]
        row: dict[str, Any] = dict(
            table=TABLE_RLE,
            scenario="to_rle of a reduce-4 canvas",
            contender=name,
            rounds=len(rs),
            median_s=statistics.median(x["seconds"] for x in rs),
            peak_extra_mib=statistics.median(x["peak_extra"] for x in rs) / MIB,
            peak_rss_mib=statistics.median(x["hwm"] for x in rs) / MIB,
            rss_canvas_mib=statistics.median(x["rss_canvas"] for x in rs) / MIB,
            runs=rs[0]["runs"],
            rle_mib=rs[0]["rle_mib"],
            positive=rs[0]["positive"],
        )
        if "seconds_repeat" in rs[0]:
            row["repeat_s"] = statistics.median(x["seconds_repeat"] for x in rs)
        results.record(**row)
        if name.startswith("kaggle"):
            results.record(
                table=TABLE_RLE,
                scenario="to_rle of a reduce-4 canvas",
                contender="kaggle 40000x50000 (x16 extrapolated)",
                rounds=len(rs),
                median_s=row["median_s"] * scale,
                peak_extra_mib=row["peak_extra_mib"] * scale,
            )
    full = [r["tilestream 40000x50000"] for r in rounds]
    kag = [r["kaggle 10000x12500"] for r in rounds]
    bd = full[0]["breakdown"]
    kb = {k: statistics.median(x["breakdown"][k] for x in kag) for k in kag[0]["breakdown"]}
    results.note(
        f"stitch rle ({_date()}, load {load0} -> {load1}): to_rle 40000x50000 vs resize+Kaggle "
        f"extrapolated x{scale:g}: {_q(full_ratio)}x; same size 10000x12500: {_q(same_ratio)}x "
        f"(target >= 5x). to_rle 40000x50000 peak extra "
        f"{statistics.median(x['peak_extra'] for x in full) / MIB:.0f} MiB, process peak "
        f"{statistics.median(x['hwm'] for x in full) / MIB:.0f} MiB (import "
        f"{statistics.median(x['rss_import'] for x in full) / MIB:.0f} MiB, with canvas "
        f"{statistics.median(x['rss_canvas'] for x in full) / MIB:.0f} MiB); target < 1.5 GB. "
        f"Breakdown (first round, diagnostic pass): mask {bd['mask']:.2f} s "
        f"(+{bd['mask_peak_extra_mib']:.0f} MiB), column runs {bd['column_runs']:.2f} s, "
        f"scale runs {bd['scale_runs']:.2f} s, format {bd['format']:.2f} s. Anchor 10000x12500 "
        f"breakdown: mask {kb['mask']:.2f} s, resize {kb['resize']:.2f} s, encode "
        f"{kb['encode']:.2f} s; peak via {full[0]['peak_method']}. Per round (ts 40000x50000 "
        f"first/repeat call, ts 10000x12500, kaggle 10000x12500): "
        + "; ".join(
            f"{r['tilestream 40000x50000']['seconds']:.2f}/"
            f"{r['tilestream 40000x50000']['seconds_repeat']:.2f} s, "
            f"{r['tilestream 10000x12500']['seconds']:.3f} s, "
            f"{r['kaggle 10000x12500']['seconds']:.2f} s"
            for r in rounds
        )
    )
    assert statistics.median(x["peak_extra"] for x in full) < 1.5e9


if __name__ == "__main__":
    kind, payload = sys.argv[1], json.loads(sys.argv[2])
    result = child_predict(payload) if kind == "predict" else child_rle(payload)
    print(json.dumps(result))
