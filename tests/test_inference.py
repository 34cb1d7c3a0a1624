"""predict_slide (identity models, TTA), dice, predict_slides serial vs dask, resume."""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import tilestream as ts
from tilestream import hubmap
from tilestream._windows import _converts_tiles, _window_batches
from tilestream.dataset import SlideSource
from tilestream.sampling import grid_positions


class Identity(torch.nn.Module):
    """Returns the first channel of its input: the prediction is the image itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


class Darkness(torch.nn.Module):
    """A 1x1 'segmentation' of dark pixels: logits positive where the red channel < 0.55."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.55 - x[:, :1]) * 40.0


def make_darkness() -> torch.nn.Module:
    return Darkness()


@pytest.fixture(scope="module")
def record(hubmap_root: Path) -> hubmap.SlideRecord:
    return next(r for r in hubmap.read_dataset(hubmap_root) if r.split == "train")


@pytest.mark.parametrize("tta", [None, "flips", "d4"])
def test_identity_model_reproduces_the_reduced_slide(
    record: hubmap.SlideRecord, tta: str | None
) -> None:
    with ts.Slide.open(record.image) as slide:
        stitcher = ts.predict_slide(
            Identity(),
            slide,
            tile=256,
            overlap=64,
            reduce=4,
            tta=tta,
            activation=None,  # type: ignore[arg-type]
            progress=False,
            batch_size=5,
        )
        expected = slide.thumbnail(4)[..., 0].astype(np.float32) / 255.0
    np.testing.assert_allclose(stitcher.probabilities(), expected, atol=1e-5)


def test_every_batch_path_gives_the_same_canvas(record: hubmap.SlideRecord, tmp_path: Path) -> None:
    """Direct reads with the default x / 255, a custom preprocess (uint8 batches built from
    the decoded tiles), DataLoader workers and the on-disk (sums and weights) canvas all blend
    the same probabilities; a float16 canvas to its precision."""
    options = {"tile": 256, "overlap": 64, "reduce": 4, "batch_size": 3, "progress": False}
    direct = ts.predict_slide(Darkness(), record.image, **options)  # type: ignore[arg-type]
    assert direct.grid is not None and direct.windows == len(direct.grid[0]) * len(direct.grid[1])
    expected = direct.probabilities()
    assert not expected.flags.writeable  # a view of the canvas: no copy

    def scale(x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0

    custom = ts.predict_slide(Darkness(), record.image, preprocess=scale, **options)  # type: ignore[arg-type]
    workers = ts.predict_slide(Darkness(), record.image, num_workers=1, **options)  # type: ignore[arg-type]
    disk = ts.predict_slide(Darkness(), record.image, store=tmp_path / "c.zarr", **options)  # type: ignore[arg-type]
    assert disk.grid is None and disk.store is not None
    for other in (custom, workers, disk):
        np.testing.assert_allclose(other.probabilities(), expected, rtol=0, atol=2e-6)
    assert disk.to_rle() == direct.to_rle()
    half = ts.predict_slide(Darkness(), record.image, dtype="float16", **options)  # type: ignore[arg-type]
    assert half.probabilities().dtype == np.float16
    np.testing.assert_allclose(half.probabilities(), expected, rtol=0, atol=2e-3)


def test_skipped_windows_blend_as_background(record: hubmap.SlideRecord) -> None:
    """min_tissue: a skipped window counts as a window predicting 0 (the general stitcher fed
    zeros there), and coverage is the whole declared grid."""
    tile, overlap, reduce = 256, 64, 4
    with ts.Slide.open(record.image) as slide:
        pred = ts.predict_slide(
            Identity(),
            slide,
            tile=tile,
            overlap=overlap,
            reduce=reduce,
            min_tissue=0.5,
            activation=None,
            progress=False,  # type: ignore[arg-type]
        )
        assert pred.grid is not None
        ys, xs = pred.grid
        assert 0 < pred.windows < len(ys) * len(xs)
        kept = {
            (int(b[0]), int(b[1]))
            for b in ts.GridSampler(tile, overlap=overlap, reduce=reduce, min_tissue=0.5).boxes(
                ts.SourceInfo(shape=slide.shape, tissue=ts.tissue_mask(slide))
            )
        }
        general = ts.Stitcher(slide.shape, reduce=reduce, tile=tile, overlap=overlap)
        for y in ys:
            for x in xs:
                box = ts.Box(y, x, tile, tile)
                image = slide.read(box, reduce)[..., 0].astype(np.float32) / 255.0
                general.add(box, image if (y, x) in kept else np.zeros_like(image))
    np.testing.assert_allclose(pred.probabilities(), general.probabilities(), atol=2e-6)
    assert pred.coverage().all()


def test_unreadable_window_names_slide_and_box(
    record: hubmap.SlideRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ts.Slide.open(record.image) as slide:

        def broken(*args: object, **kwargs: object) -> None:
            raise OSError("disk on fire")

        monkeypatch.setattr(slide, "read", broken)
        with pytest.raises(ts.TileReadError, match=r"box Box\(y=0, x=0.*disk on fire"):
            ts.predict_slide(Identity(), slide, tile=256, reduce=4, progress=False)


def test_unreadable_tile_names_slide_and_box(
    record: hubmap.SlideRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on the path that converts decoded tiles straight into the float batch."""
    with ts.Slide.open(record.image) as slide:
        assert _converts_tiles(slide, 1)

        def broken(*args: object, **kwargs: object) -> None:
            raise OSError("disk on fire")

        monkeypatch.setattr(slide, "_decode_tile", broken)
        with pytest.raises(ts.TileReadError, match=r"box Box\(y=0, x=0.*disk on fire"):
            ts.predict_slide(Identity(), slide, tile=64, reduce=1, progress=False)
    assert not _decoder_threads()


def _decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tilestream-decode"]


def test_decoder_thread_errors_and_stops(
    record: hubmap.SlideRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tile failing in the background decoder is raised for the first window that needs it
    (the windows before are predicted), and the thread stops with the prediction, whether the
    decoder or the model fails."""
    with ts.Slide.open(record.image) as slide:
        th, tw = slide.levels[0].tile
        real = slide._decode_tile
        bad = (0, 0, 0, 1, 2)  # level 0, page 0, plane 0, tile row 1, column 2

        def failing(key: tuple[int, int, int, int, int]) -> np.ndarray:
            if key == bad:
                raise OSError("disk on fire")
            return real(key)

        monkeypatch.setattr(slide, "_decode_tile", failing)
        seen: list[tuple[int, int]] = []

        class Recording(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x[:, :1]

        first = rf"box Box\(y={th}, x={2 * tw}, height={th}, width={tw}\).*disk on fire"
        with pytest.raises(ts.TileReadError, match=first):
            ts.predict_slide(
                Recording(), slide, tile=th, reduce=1, batch_size=1, progress=False,
                activation=None,
            )  # fmt: skip
        assert not _decoder_threads()
        monkeypatch.setattr(slide, "_decode_tile", real)

        class Failing(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                seen.append(tuple(x.shape[-2:]))
                if len(seen) == 2:
                    raise RuntimeError("model on fire")
                return x[:, :1]

        with pytest.raises(RuntimeError, match="model on fire"):
            ts.predict_slide(Failing(), slide, tile=64, reduce=1, progress=False)
        assert not _decoder_threads()


@pytest.mark.parametrize(
    ("layout", "reduce", "direct"),
    [
        ("pyramid", 1, True),
        ("pyramid", 4, True),  # pyramid level 2
        ("pyramid", 6, False),  # level 1 + 3x3 means: read, then converted
        ("flat", 2, False),  # no pyramid: 2x2 means
        ("planar", 1, True),
        ("grey", 1, True),
        ("stripped", 1, True),  # compressed strips
        ("memmap", 1, False),  # uncompressed strips are memory-mapped
    ],
)
def test_batches_equal_reads(
    tmp_path: Path, pyramid_slide: Path, layout: str, reduce: int, direct: bool
) -> None:
    """Every batch ``predict_slide`` builds without workers is bit-identical to
    ``slide.read(box, reduce) / 255`` (float) or to ``slide.read(box, reduce)`` (uint8), with
    windows past every edge and batches that do not divide the windows, and the direct path
    (tiles decoded in the background thread) decodes each stored tile exactly once."""
    rng = np.random.default_rng(reduce)
    image = rng.integers(0, 256, (150, 203, 3), np.uint8)
    writes: dict[str, tuple[np.ndarray, dict[str, object]]] = {
        "flat": (image, {"tile": (32, 32), "compression": "zlib", "photometric": "rgb"}),
        "planar": (
            image.transpose(2, 0, 1).copy(),
            {
                "tile": (48, 64),
                "compression": "zlib",
                "planarconfig": "separate",
                "photometric": "rgb",
            },
        ),
        "grey": (image[..., 1], {"tile": (32, 32), "compression": "zlib"}),
        "stripped": (image, {"rowsperstrip": 16, "compression": "zlib", "photometric": "rgb"}),
        "memmap": (image, {"rowsperstrip": 16, "photometric": "rgb"}),
    }
    path = pyramid_slide
    if layout in writes:
        data, options = writes[layout]
        path = tmp_path / f"{layout}.tif"
        tifffile.imwrite(path, data, **options)  # type: ignore[arg-type]
    tile = 24 * reduce
    with ts.Slide.open(path, cache_bytes=0) as slide:
        assert _converts_tiles(slide, reduce) == direct
        h, w = slide.shape
        boxes = [
            ts.Box(y, x, tile, tile)
            for y in range(-tile // 2 // reduce * reduce, h, 2 * tile)
            for x in range(0, w + tile // 2, 16 * reduce)
        ]
        decoded: list[tuple[int, ...]] = []
        real = slide._decode_tile

        def counting(key: tuple[int, int, int, int, int]) -> np.ndarray:
            decoded.append(key)
            return real(key)

        slide._decode_tile = counting  # type: ignore[method-assign]
        source = SlideSource(slide, id="s")
        for as_float in (True, False):  # the default x / 255, and uint8 for the GPU
            decoded.clear()
            seen = 0
            for batch, chunk in _window_batches(
                source, boxes, reduce, 5, as_float=as_float, pin_memory=False
            ):
                assert batch.dtype == (torch.float32 if as_float else torch.uint8)
                assert batch.shape[0] == len(chunk)
                for window, box in zip(batch.numpy(), chunk, strict=True):
                    expected = torch.from_numpy(slide.read(box, reduce)).permute(2, 0, 1)
                    if as_float:
                        expected = expected.float() / 255
                    np.testing.assert_array_equal(window, expected.numpy(), err_msg=str(box))
                assert chunk == boxes[seen : seen + len(chunk)]
                seen += len(chunk)
            assert seen == len(boxes)
            assert len(decoded) == len(set(decoded))
            assert bool(decoded) == direct


@pytest.mark.parametrize(("window", "stride", "rows"), [(64, 48, 1), (96, 72, 2)])
def test_tile_store_holds_at_most_two_rows_of_tiles(
    pyramid_slide: Path, monkeypatch: pytest.MonkeyPatch, window: int, stride: int, rows: int
) -> None:
    """In a row-major pass each tile is held only from its first window to its last: about one
    row of tiles (+2) when no two window rows straddle the same tile-row boundary (64 px windows
    at stride 48 over 128 px tiles, the benchmark's geometry), two rows when they do (96 at
    72: rows 432 and 504 both straddle 512), plus the few the decoder thread runs ahead, never
    the whole slide."""
    from tilestream import _windows

    allocated: list[tuple[int, ...]] = []
    real = _windows._aligned_empty

    def counting(shape: tuple[int, ...]) -> np.ndarray:
        allocated.append(tuple(shape))
        return real(shape)

    monkeypatch.setattr(_windows, "_aligned_empty", counting)
    with ts.Slide.open(pyramid_slide, cache_bytes=0) as slide:
        th, tw = slide.levels[0].tile
        h, w = slide.shape
        ys = grid_positions(h, window, stride, 1, "shift")
        xs = grid_positions(w, window, stride, 1, "shift")
        boxes = [ts.Box(y, x, window, window) for y in ys for x in xs]
        batches = _window_batches(
            SlideSource(slide, id="s"), boxes, 1, 8, as_float=True, pin_memory=False
        )
        assert sum(len(chunk) for _, chunk in batches) == len(boxes)
    tiles = [s for s in allocated if s[1:] == (th, tw)]
    across, down = -(-w // tw), -(-h // th)
    assert len(allocated) == len(tiles) + 2  # + the float batch and the one-window buffer
    # + the tiles the background decoder may run ahead
    assert (rows - 1) * across < len(tiles) <= rows * across + 2 + _windows.PREFETCH_TILES
    assert len(tiles) < across * down


def test_tta_transforms_invert_exactly() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    for tta, n in (("flips", 4), ("d4", 8)):
        pairs = ts.tta_transforms(tta)  # type: ignore[arg-type]
        assert len(pairs) == n
        outputs = {tuple(fwd(x).flatten().tolist()) for fwd, _ in pairs}
        assert len(outputs) == n  # all distinct symmetries
        for fwd, inv in pairs:
            assert torch.equal(inv(fwd(x)), x)


def test_tissue_skipped_windows_are_background_and_bad_models(record: hubmap.SlideRecord) -> None:
    with ts.Slide.open(record.image) as slide:
        full = ts.predict_slide(
            Identity(), slide, tile=256, reduce=4, activation=None, progress=False
        )
        skipped = ts.predict_slide(
            Identity(), slide, tile=256, reduce=4, activation=None, progress=False, min_tissue=0.5
        )
        assert skipped.windows < full.windows
        covered = skipped.coverage()
        assert (skipped.probabilities()[~covered] == 0).all()

        class WrongChannels(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x

        with pytest.raises(ts.StitchError, match=r"\(batch, channels, h, w\) = \(8, 1, 64, 64\)"):
            ts.predict_slide(WrongChannels(), slide, tile=256, reduce=4, progress=False)

        class Nan(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x[:, :1] * float("nan")

        with pytest.raises(ts.StitchError, match="NaN"):
            ts.predict_slide(Nan(), slide, tile=256, reduce=4, progress=False)


def test_dice_against_truth_and_brute_force(record: hubmap.SlideRecord) -> None:
    truth = record.mask
    assert isinstance(truth, ts.RleMask)
    full = truth.read(ts.Box(0, 0, *truth.shape))
    polygons = ts.PolygonMask.from_geojson(record.image.with_suffix(".json"), truth.shape)
    assert ts.dice(truth, polygons).dice == 1.0  # train.csv is the polygons as rasterised
    with ts.Slide.open(record.image) as slide:
        pred = ts.predict_slide(Darkness(), slide, tile=512, overlap=128, reduce=4, progress=False)
    rle_pred = ts.RleMask(pred.to_rle(), truth.shape)
    mine = rle_pred.read(ts.Box(0, 0, *truth.shape)).astype(bool)
    inter = int((mine & (full > 0)).sum())
    expected = 2 * inter / (mine.sum() + (full > 0).sum())
    for a, b in (
        (pred, truth),
        (rle_pred, truth),
        (pred, polygons),
        (rle_pred, ts.ArrayMask(full)),
    ):
        assert ts.dice(a, b).dice == pytest.approx(expected)
    # the stitcher's threshold reaches the run-against-run path as it does the windowed one
    areas = {t: int(pred.mask(t).sum()) for t in (0.3, 0.5, 0.7)}
    assert len(set(areas.values())) == 3  # the thresholds give different masks
    for threshold in (0.3, 0.7):
        runs = ts.dice(pred, truth, threshold=threshold)
        windows = ts.dice(pred, ts.ArrayMask(full), threshold=threshold)
        assert runs == windows
        assert runs.pred_area == int(ts.RleMask(pred.to_rle(threshold), truth.shape).lengths.sum())
    for order in ("F", "C"):
        starts, lengths = pred.runs(0.5, order)  # type: ignore[arg-type]
        expected_runs = ts.rle_to_runs(pred.to_rle(0.5, order))  # type: ignore[arg-type]
        np.testing.assert_array_equal(starts, expected_runs[0])
        np.testing.assert_array_equal(lengths, expected_runs[1])
    rows = ts.dice_report({"x": (pred, truth), "y": (truth, truth)})
    assert rows[-1]["slide"] == "mean" and rows[-1]["dice"] == pytest.approx((expected + 1) / 2)
    assert ts.DiceScore(0, 0, 0).dice == 1.0


def test_predict_slides_dask_equals_serial_and_resumes(hubmap_root: Path, tmp_path: Path) -> None:
    paths = [r.image for r in hubmap.read_dataset(hubmap_root)][:3]
    options = {"tile": 512, "overlap": 64, "reduce": 4, "batch_size": 4}
    serial = ts.predict_slides(make_darkness, paths, tmp_path / "serial", serial=True, **options)  # type: ignore[arg-type]
    assert serial.read_text().splitlines()[0] == "id,predicted"
    assert {p.name for p in (tmp_path / "serial").iterdir()} >= {
        f"{Path(p).stem}.rle" for p in paths
    }
    parallel = ts.predict_slides(make_darkness, paths, tmp_path / "dask", n_workers=2, **options)  # type: ignore[arg-type]
    assert parallel.read_text() == serial.read_text()
    # resume: a finished slide is not recomputed; a half-written canvas (dead worker) is redone
    done = tmp_path / "dask" / f"{Path(paths[0]).stem}.rle"
    stamp = done.stat().st_mtime_ns
    unfinished = tmp_path / "dask" / f"{Path(paths[1]).stem}.rle"
    unfinished.unlink()
    again = ts.predict_slides(make_darkness, paths, tmp_path / "dask", serial=True, **options)  # type: ignore[arg-type]
    assert done.stat().st_mtime_ns == stamp
    assert again.read_text() == serial.read_text()


def test_predict_slides_rejects_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        ts.predict_slides(
            functools.partial(Identity), ["a/x.tiff", "b/x.tiff"], tmp_path, tile=64, serial=True
        )


def make_darkness_or_die(marker: str) -> torch.nn.Module:
    """Kills its worker process the first time it is called (a crash mid-run), then works."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os._exit(1)
    return Darkness()


@pytest.mark.slow
def test_predict_slides_survives_a_killed_worker(hubmap_root: Path, tmp_path: Path) -> None:
    paths = [r.image for r in hubmap.read_dataset(hubmap_root)][:2]
    options = {"tile": 512, "overlap": 64, "reduce": 4, "batch_size": 4}
    expected = ts.predict_slides(make_darkness, paths, tmp_path / "serial", serial=True, **options)  # type: ignore[arg-type]
    factory = functools.partial(make_darkness_or_die, str(tmp_path / "died"))
    got = ts.predict_slides(factory, paths, tmp_path / "dask", n_workers=2, **options)  # type: ignore[arg-type]
    assert (tmp_path / "died").exists()  # a worker really died
    assert got.read_text() == expected.read_text()


def test_tile_decoder_bounds_its_buffers_and_raises_when_starved() -> None:
    """The decoder never holds more than ``capacity`` buffers however far behind the taker
    is, hands out tiles in order, and a capacity below what the taker holds raises instead
    of waiting forever."""
    from tilestream import _windows

    keys = [(0, 0, 0, 0, c) for c in range(6)]
    decoded: list[tuple[int, ...]] = []

    def decode(key: tuple[int, int, int, int, int]) -> np.ndarray:
        decoded.append(key)
        return np.full((4, 5, 3), key[-1], np.uint8)

    decoder = _windows._TileDecoder(decode, keys, 2)
    try:
        first = decoder.take(keys[0])
        assert first.shape == (3, 4, 5) and (first == 0).all()
        deadline = time.monotonic() + 5
        while len(decoded) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert len(decoded) == 2  # one held, one ready: the thread waits for a free buffer
        decoder.give_back(first)
        second = decoder.take(keys[1])
        assert (second == 1).all()
        decoder.give_back(second)
        third = decoder.take(keys[2])
        with pytest.raises(RuntimeError, match="all 2 buffers are held"):
            held = decoder.take(keys[3])  # third and held: the capacity is exhausted
            decoder.take(keys[4])
        assert (third == 2).all() and (held == 3).all()
    finally:
        decoder.close()
    assert not decoder._thread.is_alive()
