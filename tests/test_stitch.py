"""Stitcher: blending invariants, streamed RLE, GeoJSON, on-disk canvas, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tilestream as ts
from tilestream import stitch as stitch_module
from tilestream.sampling import grid_positions


def windows(shape: tuple[int, int], tile: int, overlap: int, reduce: int) -> list[ts.Box]:
    ys = grid_positions(shape[0], tile, tile - overlap, reduce, "pad")
    xs = grid_positions(shape[1], tile, tile - overlap, reduce, "pad")
    return [ts.Box(y, x, tile, tile) for y in ys for x in xs]


@pytest.mark.parametrize("blend", ["gaussian", "pyramid", "mean", "center"])
@pytest.mark.parametrize("overlap", [0, 16, 48])
def test_split_then_stitch_reproduces_the_image(blend: str, overlap: int) -> None:
    rng = np.random.default_rng(0)
    shape, reduce, tile = (150, 203), 2, 64
    image = rng.random((3, -(-shape[0] // reduce), -(-shape[1] // reduce))).astype(np.float32)
    stitcher = ts.Stitcher(
        shape, reduce=reduce, tile=tile, blend=blend, overlap=overlap, channels=3
    )  # type: ignore[arg-type]
    for box in windows(shape, tile, overlap, reduce):
        y, x = box.y // reduce, box.x // reduce
        window = np.zeros((3, tile // reduce, tile // reduce), np.float32)
        part = image[:, y : y + tile // reduce, x : x + tile // reduce]
        window[:, : part.shape[1], : part.shape[2]] = part
        stitcher.add(box, window)
    assert stitcher.coverage().all()
    np.testing.assert_allclose(stitcher.probabilities(), image, rtol=0, atol=2e-6)
    box = ts.Box(20, 30, 40, 60)
    np.testing.assert_allclose(stitcher.probabilities(box), image[:, 10:30, 15:45], atol=2e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 50), st.integers(1, 50), st.sampled_from([1, 2, 3, 4]), st.integers(0, 2**31))
def test_to_rle_equals_encoding_the_upsampled_mask(h: int, w: int, reduce: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    stitcher = ts.Stitcher((h, w), reduce=reduce, tile=4 * reduce, blend="mean")
    canvas = rng.random(stitcher.canvas_shape).astype(np.float32)
    for box in windows((h, w), 4 * reduce, 0, reduce):
        y, x = box.y // reduce, box.x // reduce
        window = np.zeros((4, 4), np.float32)
        part = canvas[y : y + 4, x : x + 4]
        window[: part.shape[0], : part.shape[1]] = part
        stitcher.add(box, window)
    mask = stitcher.mask(0.5)
    full = np.repeat(np.repeat(mask, reduce, 0), reduce, 1)[:h, :w]
    for order in ("F", "C"):
        assert stitcher.to_rle(0.5, order) == ts.rle_encode(full, order)  # type: ignore[arg-type]
    source = stitcher.as_mask_source()
    np.testing.assert_array_equal(source.read(ts.Box(0, 0, h, w)), full)


def test_gaussian_weights_and_center_crop() -> None:
    g = ts.blend_window(64, 64, "gaussian")
    assert g.min() >= 1e-3 and g.max() == 1.0 and g[32, 32] > g[16, 32] > g[16, 16] > 1e-3
    c = ts.blend_window(16, 16, "center", margin=4)
    assert (c[4:12, 4:12] == 1).all() and np.isclose(c[:4], 1e-3).all()
    # centre crop: a constant-per-window prediction shows only the window's own centre
    stitcher = ts.Stitcher((32, 48), tile=16, blend="center", overlap=8)
    for i, box in enumerate(windows((32, 48), 16, 8, 1)):
        stitcher.add(box, np.full((16, 16), float(i), np.float32))
    p = stitcher.probabilities()
    # windows start every 8 px: pixel (8, 8) is in the centre of window 0 only, (8, 16) in the
    # centre of window 1 (same row of windows, next column)
    assert p[8, 8] == pytest.approx(0.0, abs=0.05)
    assert p[8, 16] == pytest.approx(1.0, abs=0.05)


def test_bad_windows() -> None:
    stitcher = ts.Stitcher((100, 100), reduce=2, tile=32)
    with pytest.raises(ts.StitchError, match=r"shape \(16, 16\)"):
        stitcher.add(ts.Box(0, 0, 32, 32), np.zeros((3, 16, 16), np.float32))
    with pytest.raises(ts.StitchError, match="wholly outside"):
        stitcher.add(ts.Box(200, 0, 32, 32), np.zeros((16, 16), np.float32))
    with pytest.raises(ts.StitchError, match="floating point"):
        stitcher.add(ts.Box(0, 0, 32, 32), np.zeros((16, 16), np.uint8))
    bad = np.zeros((16, 16), np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(ts.StitchError, match="NaN"):
        stitcher.add(ts.Box(0, 0, 32, 32), bad)
    with pytest.raises(ts.BoxError):
        stitcher.add(ts.Box(1, 0, 32, 32), np.zeros((16, 16), np.float32))
    stitcher.add(ts.Box(84, 84, 32, 32), np.ones((16, 16), np.float32))  # partly outside: kept
    assert stitcher.probabilities()[45, 45] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="blend"):
        ts.Stitcher((10, 10), tile=4, blend="max")  # type: ignore[arg-type]


def test_zarr_store_matches_ram_and_refuses_other_slides(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    shape, tile = (90, 130), 32
    ram = ts.Stitcher(shape, reduce=2, tile=tile, slide_id="a")
    disk = ts.Stitcher(
        shape, reduce=2, tile=tile, store=tmp_path / "a.zarr", slide_id="a", chunk=16
    )
    boxes = windows(shape, tile, 8, 2)
    preds = [rng.random((16, 16)).astype(np.float32) for _ in boxes]
    for box, p in zip(boxes[:5], preds[:5], strict=True):
        ram.add(box, p)
        disk.add(box, p)
    disk.flush()
    with pytest.raises(ts.StitchError, match="resume=True"):
        ts.Stitcher(shape, reduce=2, tile=tile, store=tmp_path / "a.zarr", slide_id="a")
    with pytest.raises(ts.StitchError, match="belongs to slide 'a'"):
        ts.Stitcher(
            shape, reduce=2, tile=tile, store=tmp_path / "a.zarr", slide_id="b", resume=True
        )
    resumed = ts.Stitcher(
        shape, reduce=2, tile=tile, store=tmp_path / "a.zarr", slide_id="a", resume=True
    )
    assert resumed.windows == 5
    for box, p in zip(boxes[5:], preds[5:], strict=True):
        ram.add(box, p)
        resumed.add(box, p)
    np.testing.assert_allclose(resumed.probabilities(), ram.probabilities(), atol=1e-6)
    assert resumed.to_rle(0.5) == ram.to_rle(0.5)
    resumed.delete()
    assert not (tmp_path / "a.zarr").exists()


def test_to_geojson_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    stitcher = ts.Stitcher((200, 300), reduce=4, tile=200, blend="mean")
    canvas = np.zeros((50, 75), np.float32)
    yy, xx = np.mgrid[0:50, 0:75]
    canvas[(yy - 20) ** 2 + (xx - 20) ** 2 < 100] = 1.0
    canvas[30:45, 50:70] = 1.0
    canvas[35:40, 55:60] = 0.0  # a hole
    stitcher.add(ts.Box(0, 0, 200, 300), canvas)
    path = tmp_path / "pred.json"
    assert stitcher.to_geojson(path) == 2
    data = json.loads(path.read_text())
    assert {f["properties"]["classification"]["name"] for f in data} == {"glomerulus"}
    polygons = ts.PolygonMask.from_geojson(path, (200, 300))
    truth = stitcher.as_mask_source()
    score = ts.dice(polygons, truth)
    assert score.dice > 0.9


def grid_and_general(
    shape: tuple[int, int],
    tile: int,
    overlap: int,
    reduce: int,
    blend: str,
    edge: str,
    channels: int = 1,
) -> tuple[ts.Stitcher, ts.Stitcher, list[ts.Box]]:
    ys = grid_positions(shape[0], tile, tile - overlap, reduce, edge)
    xs = grid_positions(shape[1], tile, tile - overlap, reduce, edge)
    options = dict(reduce=reduce, tile=tile, blend=blend, overlap=overlap, channels=channels)
    grid = ts.Stitcher(shape, grid=(ys, xs), **options)  # type: ignore[arg-type]
    general = ts.Stitcher(shape, **options)  # type: ignore[arg-type]
    return grid, general, [ts.Box(y, x, tile, tile) for y in ys for x in xs]


def use_kernel(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``"torch"``: the fused multiply-add used once torch is imported; ``"numpy"``: the
    two-pass numpy blend of a process without torch."""
    if kernel == "torch":
        import torch  # noqa: F401  (the stitcher uses it only when it is already imported)

        assert stitch_module._loaded_torch() is not None
    else:
        monkeypatch.setattr(stitch_module, "_loaded_torch", lambda: None)


@pytest.mark.parametrize("blend", ["gaussian", "pyramid", "mean", "center"])
@pytest.mark.parametrize("overlap", [0, 16, 24, 48])
@pytest.mark.parametrize("edge", ["shift", "pad"])
@pytest.mark.parametrize("kernel", ["torch", "numpy"])
def test_declared_grid_equals_weights_canvas(
    blend: str, overlap: int, edge: str, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A declared grid (normalised on add, no weight canvas) blends exactly like the general
    stitcher, tissue-skipped windows counting as background (added as zeros there); "shift"
    grids end with a shifted edge window, "pad" grids with windows past the edge. With
    either blending kernel."""
    use_kernel(kernel, monkeypatch)
    rng = np.random.default_rng(overlap)
    shape, reduce, tile = (150, 203), 2, 64
    grid, general, boxes = grid_and_general(shape, tile, overlap, reduce, blend, edge, 2)
    skipped = set(rng.choice(len(boxes), size=len(boxes) // 3, replace=False).tolist())
    side = tile // reduce
    for k, box in enumerate(boxes):
        p = rng.random((2, side, side)).astype(np.float32)
        if k in skipped:
            general.add(box, np.zeros_like(p))
        else:
            general.add(box, p)
            grid.add(box, p)
    assert grid.windows == len(boxes) - len(skipped)
    np.testing.assert_allclose(grid.probabilities(), general.probabilities(), rtol=0, atol=2e-6)
    region = ts.Box(20, -10, 40, 300)
    np.testing.assert_allclose(
        grid.probabilities(region), general.probabilities(region), rtol=0, atol=2e-6
    )
    np.testing.assert_array_equal(grid.coverage(), general.coverage())
    for channel in (0, 1):
        for threshold in (0.0, 0.3, 0.5):
            # the float sums differ in the last bits: compare away from the threshold
            p = general.probabilities()[channel]
            clear = np.abs(p - threshold) > 1e-5
            a = grid.mask(threshold, channel=channel)
            b = general.mask(threshold, channel=channel)
            np.testing.assert_array_equal(a[clear], b[clear])


@pytest.mark.parametrize("blend", ["gaussian", "pyramid", "mean", "center"])
@pytest.mark.parametrize("kernel", ["torch", "numpy"])
def test_declared_grid_split_then_stitch_reproduces_the_image(
    blend: str, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_kernel(kernel, monkeypatch)
    rng = np.random.default_rng(3)
    shape, reduce, tile, overlap = (150, 203), 2, 64, 16
    image = rng.random((-(-shape[0] // reduce), -(-shape[1] // reduce))).astype(np.float32)
    grid, _, boxes = grid_and_general(shape, tile, overlap, reduce, blend, "shift")
    for box in boxes:
        y, x = box.y // reduce, box.x // reduce
        grid.add(box, image[y : y + tile // reduce, x : x + tile // reduce])
    assert grid.coverage().all()
    p = grid.probabilities()
    np.testing.assert_allclose(p, image, rtol=0, atol=2e-6)
    assert not p.flags.writeable and p.dtype == np.float32 and p.shape == image.shape
    assert grid.to_rle(0.5) == ts.rle_encode(
        np.repeat(np.repeat(image >= 0.5, reduce, 0), reduce, 1)[: shape[0], : shape[1]].astype(
            np.uint8
        )
    )


def test_declared_grid_refuses_other_windows(tmp_path: Path) -> None:
    stitcher = ts.Stitcher((100, 100), reduce=2, tile=32, grid=([0, 24, 48, 68], [0, 32, 68]))
    ones = np.ones((16, 16), np.float32)
    with pytest.raises(ts.StitchError, match="not a window of the declared grid"):
        stitcher.add(ts.Box(2, 0, 32, 32), ones)
    with pytest.raises(ts.StitchError, match="not a window of the declared grid"):
        stitcher.add(ts.Box(0, 0, 34, 34), np.ones((17, 17), np.float32))
    stitcher.add(ts.Box(24, 32, 32, 32), ones)
    with pytest.raises(ts.StitchError, match="already added"):
        stitcher.add(ts.Box(24, 32, 32, 32), ones)
    bad = ones.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ts.StitchError, match="NaN"):
        stitcher.add(ts.Box(0, 0, 32, 32), bad)
    stitcher.add(ts.Box(0, 0, 32, 32), ones)  # a refused window can still be added
    assert stitcher.windows == 2
    assert "grid 4x3" in repr(stitcher)
    with pytest.raises(ts.StitchError, match="increasing"):
        ts.Stitcher((100, 100), tile=32, grid=([0, 0], [0]))
    with pytest.raises(ts.StitchError, match="multiples of reduce"):
        ts.Stitcher((100, 100), reduce=2, tile=32, grid=([1], [0]))
    with pytest.raises(ts.StitchError, match="overlapping the slide"):
        ts.Stitcher((100, 100), tile=32, grid=([0, 100], [0]))
    with pytest.raises(ts.StitchError, match="one or the other"):
        ts.Stitcher((100, 100), tile=32, grid=([0], [0]), store=tmp_path / "x.zarr")


def test_declared_grid_takes_any_float_array() -> None:
    """Read-only, float64, reversed-strided and Fortran-ordered predictions (which the fused
    torch kernel cannot wrap without a copy or a warning) blend like plain float32 ones."""
    import torch  # noqa: F401  (the fused kernel is used once torch is imported)

    rng = np.random.default_rng(5)
    shape, reduce, tile, overlap = (150, 203), 2, 64, 16
    image = rng.random((-(-shape[0] // reduce), -(-shape[1] // reduce))).astype(np.float32)

    def readonly(p: np.ndarray) -> np.ndarray:
        q = p.copy()
        q.setflags(write=False)
        return q

    variants = {
        "readonly": readonly,
        "float64": lambda p: p.astype(np.float64),
        "reversed": lambda p: p[::-1, ::-1].copy()[::-1, ::-1],
        "fortran": np.asfortranarray,
    }
    for name, variant in variants.items():
        grid, _, boxes = grid_and_general(shape, tile, overlap, reduce, "gaussian", "shift")
        for box in boxes:
            y, x = box.y // reduce, box.x // reduce
            grid.add(box, variant(image[y : y + tile // reduce, x : x + tile // reduce]))
        np.testing.assert_allclose(grid.probabilities(), image, rtol=0, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("declared", [True, False])
def test_add_batch_equals_adding_one_by_one(declared: bool) -> None:
    """``add_batch`` blends bit-identically to ``add`` per window, checks the whole batch
    first (shape, dtype, NaN naming the window) and takes (B, h, w) for one channel."""
    rng = np.random.default_rng(11)
    shape, reduce, tile, overlap = (150, 203), 2, 64, 16
    grid, general, boxes = grid_and_general(shape, tile, overlap, reduce, "gaussian", "shift")
    one, batched = grid, grid_and_general(shape, tile, overlap, reduce, "gaussian", "shift")[0]
    if not declared:
        one, batched = general, ts.Stitcher(shape, reduce=reduce, tile=tile, overlap=overlap)
    side = tile // reduce
    probs = rng.random((len(boxes), 1, side, side)).astype(np.float32)
    for box, p in zip(boxes, probs, strict=True):
        one.add(box, p)
    batched.add_batch(boxes[:5], probs[:5, 0])  # (B, h, w)
    batched.add_batch(boxes[5:], probs[5:])
    batched.add_batch([], probs[:0])
    np.testing.assert_array_equal(batched.probabilities(), one.probabilities())
    assert batched.windows == one.windows == len(boxes)

    fresh = ts.Stitcher(shape, reduce=reduce, tile=tile)
    bad = probs[:3].copy()
    bad[2, 0, 5, 7] = np.inf
    with pytest.raises(ts.StitchError, match=re.escape(f"{boxes[2]} (window 2 of the batch)")):
        fresh.add_batch(boxes[:3], bad)
    assert fresh.windows == 0  # checked before any window is blended
    with pytest.raises(ts.StitchError, match=r"batch 3, got \(2, 1, 32, 32\)"):
        fresh.add_batch(boxes[:3], probs[:2])
    with pytest.raises(ts.StitchError, match=r"shape \(32, 32\).*got \(3, 2, 32, 32\)"):
        fresh.add_batch(boxes[:3], np.zeros((3, 2, side, side), np.float32))
    with pytest.raises(ts.StitchError, match="floating point"):
        fresh.add_batch(boxes[:3], np.zeros((3, 1, side, side), np.uint8))
    with pytest.raises(ts.StitchError, match="one size"):
        fresh.add_batch([boxes[0], ts.Box(0, 0, tile, 2 * tile)], probs[:2])
    with pytest.raises(ts.BoxError):
        fresh.add_batch([ts.Box(1, 0, tile, tile)], probs[:1])


@pytest.mark.parametrize("declared", [True, False])
def test_float16_canvas(tmp_path: Path, declared: bool) -> None:
    """``dtype="float16"``: half the canvas, probabilities within 4e-3 of float32's, masks
    equal away from the threshold; the dtype is checked and recorded in a store."""
    rng = np.random.default_rng(12)
    shape, reduce, tile, overlap = (150, 203), 2, 64, 16
    ys = grid_positions(shape[0], tile, tile - overlap, reduce, "shift")
    xs = grid_positions(shape[1], tile, tile - overlap, reduce, "shift")
    grid = (ys, xs) if declared else None
    opts = dict(reduce=reduce, tile=tile, overlap=overlap, grid=grid)
    full = ts.Stitcher(shape, **opts)  # type: ignore[arg-type]
    half = ts.Stitcher(shape, dtype="float16", **opts)  # type: ignore[arg-type]
    side = tile // reduce
    for y in ys:
        for x in xs:
            p = rng.random((side, side)).astype(np.float32)
            full.add(ts.Box(y, x, tile, tile), p)
            half.add(ts.Box(y, x, tile, tile), p)
    a, b = full.probabilities(), half.probabilities()
    assert b.dtype == np.float16 and a.dtype == np.float32
    assert half._sums.nbytes * 2 == full._sums.nbytes
    np.testing.assert_allclose(b.astype(np.float32), a, rtol=0, atol=4e-3)
    clear = np.abs(a - 0.5) > 4e-3
    np.testing.assert_array_equal(half.mask(0.5)[clear], full.mask(0.5)[clear])
    for bad in ("int32", "float128x", np.uint8):
        with pytest.raises(ts.StitchError, match="float16, float32 or float64"):
            ts.Stitcher(shape, tile=tile, dtype=bad)
    store = tmp_path / "h.zarr"
    disk = ts.Stitcher(shape, reduce=reduce, tile=tile, store=store, slide_id="h", dtype="float16")
    assert disk._sums.dtype == np.float16
    with pytest.raises(ts.StitchError, match="dtype float16"):
        ts.Stitcher(shape, reduce=reduce, tile=tile, store=store, slide_id="h", resume=True)
    again = ts.Stitcher(
        shape, reduce=reduce, tile=tile, store=store, slide_id="h", resume=True, dtype="float16"
    )
    assert again.dtype == np.float16
