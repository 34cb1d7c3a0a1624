"""RLE encode/decode: round trips, kernels against naive references, errors, windows, real files."""

from __future__ import annotations

import csv
import doctest
import gzip
import io
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

import tilestream.rle as rle_module
from naive_rle import naive_block_majority, naive_decode, naive_encode, naive_window
from tilestream.errors import BoxError, RLEFormatError, TilestreamError
from tilestream.geometry import Box
from tilestream.rle import (
    rle_decode,
    rle_decode_window,
    rle_encode,
    rle_encode_runs,
    rle_to_runs,
    runs_to_rle,
)

ORDERS = ("F", "C")
# Kernel tests are rerun with NUMBA_DISABLE_JIT=1 (plain Python): keep them small.
SMALL = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def masks(draw: st.DrawFn, max_side: int = 24) -> NDArray[np.uint8]:
    """Random 0/1 masks: any shape from 1x1 (incl. 1xN, Nx1), sparse to full, or blocky."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    kind = draw(st.sampled_from(["zeros", "ones", "random", "blocks"]))
    if kind == "zeros":
        return np.zeros((h, w), np.uint8)
    if kind == "ones":
        return np.ones((h, w), np.uint8)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "random":
        p = draw(st.sampled_from([0.05, 0.5, 0.95]))
        return (rng.random((h, w)) < p).astype(np.uint8)
    small = (rng.random((max(h // 4, 1), max(w // 4, 1))) < 0.5).astype(np.uint8)
    return np.kron(small, np.ones((4, 4), np.uint8))[:h, :w].copy()


def blob_mask(h: int, w: int, n: int, seed: int) -> NDArray[np.uint8]:
    """A mask of ``n`` random filled ellipses (glomerulus-like blobs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(2, h / 4), rng.uniform(2, w / 4)
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    return mask


# --------------------------------------------------------------------------------------------
# Round trips and kernels against the naive references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
@given(mask=masks(max_side=40))
@settings(max_examples=150, deadline=None)
def test_round_trip(mask: NDArray[np.uint8], order: str) -> None:
    text = rle_encode(mask, order)
    decoded = rle_decode(text, mask.shape, order)
    assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, mask)
    assert rle_encode(decoded, order) == text


@pytest.mark.kernels
@pytest.mark.parametrize("order", ORDERS)
@given(mask=masks(), band=st.sampled_from([None, 1, 2, 3, 8, 9]))
@SMALL
def test_encode_matches_naive(mask: NDArray[np.uint8], band: int | None, order: str) -> None:
    assert rle_encode(mask, order, band=band) == naive_encode(mask, order)


@pytest.mark.kernels
@pytest.mark.parametrize("order", ORDERS)
@given(mask=masks())
@SMALL
def test_decode_matches_naive(mask: NDArray[np.uint8], order: str) -> None:
    text = naive_encode(mask, order)
    expected = naive_decode(text, mask.shape, order)
    np.testing.assert_array_equal(rle_decode(text, mask.shape, order), expected)


@pytest.mark.kernels
def test_decode_column_major_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    # small tiles so the tiled column-major decode crosses many tile edges, with long runs
    # that wrap across columns and tiles
    monkeypatch.setattr(rle_module, "_DECODE_TILE_COLS", 3)
    monkeypatch.setattr(rle_module, "_DECODE_TILE_ROWS", 2)
    mask = blob_mask(13, 17, 4, seed=1)
    mask[:, 5:8] = 1
    mask[9:, 10] = 1
    mask[:4, 11] = 1
    text = naive_encode(mask, "F")
    np.testing.assert_array_equal(rle_decode(text, mask.shape), mask)


@pytest.mark.kernels
@pytest.mark.parametrize("order", ORDERS)
def test_run_wrapping_across_lines_and_bands_is_one_run(order: str) -> None:
    mask = np.zeros((4, 5), np.uint8)
    if order == "F":  # bottom of column 1 + top of column 2: pixels 8 and 9 (1-based)
        mask[3, 1] = mask[0, 2] = 1
    else:  # end of row 1 + start of row 2
        mask[1, 4] = mask[2, 0] = 1
    expected = "8 2" if order == "F" else "10 2"
    for band in (None, 1, 2):
        assert rle_encode(mask, order, band=band) == expected
    starts, lengths = rle_encode_runs(mask, order, band=1)
    assert starts.tolist() == [int(expected.split()[0])] and lengths.tolist() == [2]


@pytest.mark.kernels
@pytest.mark.parametrize("order", ORDERS)
def test_encode_dtypes_and_values(order: str) -> None:
    base = blob_mask(11, 9, 3, seed=2)
    expected = naive_encode(base, order)
    variants = [
        base.astype(bool),
        base * np.uint8(255),
        base * np.uint8(7),
        base.astype(np.int16) * 256,  # nonzero values whose low byte is 0
        base.astype(np.float32) * np.float32(0.25),
        base.astype(np.int64) * -3,
    ]
    for v in variants:
        assert rle_encode(v, order) == expected, v.dtype


@pytest.mark.kernels
@pytest.mark.parametrize("order", ORDERS)
def test_encode_layouts(order: str) -> None:
    big = blob_mask(30, 26, 5, seed=3)
    for view in (
        np.asfortranarray(big),  # scanned along its contiguous axis via .T
        big[::2, ::3],  # non-contiguous
        big[3:17, 5:20],
        big.T,
        [[int(v) for v in row] for row in big[:6, :7]],  # nested lists
    ):
        arr = np.asarray(view)
        assert rle_encode(view, order) == naive_encode(arr, order)


def test_docstring_examples() -> None:
    result = doctest.testmod(rle_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 15 and result.failed == 0


def test_encode_empty_and_full() -> None:
    assert rle_encode(np.zeros((3, 4), np.uint8)) == ""
    assert rle_encode(np.ones((3, 4), np.uint8)) == "1 12"
    assert rle_encode(np.ones((3, 4), np.uint8), "C") == "1 12"
    assert rle_encode(np.zeros((0, 4), np.uint8)) == ""
    starts, lengths = rle_encode_runs(np.zeros((2, 2), np.uint8))
    assert starts.dtype == np.int64 and starts.size == 0 and lengths.size == 0


@pytest.mark.kernels
def test_runs_helpers_round_trip() -> None:
    text = "1 3 7 2 15 1 100000000000 5"
    starts, lengths = rle_to_runs(text)
    assert starts.dtype == np.int64 and lengths.dtype == np.int64
    assert starts.tolist() == [1, 7, 15, 100000000000] and lengths.tolist() == [3, 2, 1, 5]
    assert runs_to_rle(starts, lengths) == text
    assert runs_to_rle(starts.astype(np.int32)[:3], lengths[:3]) == "1 3 7 2 15 1"


@pytest.mark.kernels
def test_parse_separators_and_empty_inputs() -> None:
    assert rle_to_runs(" \t1  2\n4 1\r\n")[0].tolist() == [1, 4]
    assert rle_to_runs(b"1 2 4 1")[1].tolist() == [2, 1]
    assert rle_to_runs("0001 02")[0].tolist() == [1]
    assert rle_to_runs("1 2 3 1")[0].tolist() == [1, 3]  # touching runs are accepted
    for empty in ("", "   ", "\n", None, math.nan, b""):
        np.testing.assert_array_equal(rle_decode(empty, (2, 3)), np.zeros((2, 3), np.uint8))


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

MALFORMED = [
    ("1 2 3", 2, "'3'", "start without a length"),
    ("1 2 3 1 12a 1", 4, "'12a'", "not a non-negative integer"),
    ("1 -2", 1, "'-2'", "not a non-negative integer"),
    ("1 2.5", 1, "'2.5'", "not a non-negative integer"),
    ("1,2", 0, "'1,2'", "not a non-negative integer"),
    ("1 2 x", 2, "'x'", "not a non-negative integer"),
    ("1 2 \u00e9 1", 2, "'\u00e9'", "not a non-negative integer"),
    ("1 1234567890123456789", 1, "'1234567890123456789'", "too large"),
    ("0 3", 0, "'0'", "start must be >= 1"),
    ("1 2 5 0", 3, "'0'", "length must be >= 1"),
    ("5 2 1 1", 2, "'1'", "sorted"),
    ("1 5 3 1", 2, "'3'", "must not overlap"),
    ("1 2 13 1", 2, "'13'", "past the last pixel 12"),
    ("1 2 10 5", 3, "'5'", "ends past the last pixel 12"),
]


@pytest.mark.kernels
@pytest.mark.parametrize(("text", "token", "value", "why"), MALFORMED)
def test_malformed_rle_names_token(text: str, token: int, value: str, why: str) -> None:
    with pytest.raises(RLEFormatError) as info:
        rle_decode(text, (3, 4))
    message = str(info.value)
    assert message.startswith(f"RLE token {token} ({value}): "), message
    assert why in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, TilestreamError)


def test_runs_to_rle_validates() -> None:
    with pytest.raises(RLEFormatError, match=r"RLE token 3 \('0'\)"):
        runs_to_rle(np.array([1, 5]), np.array([2, 0]))
    with pytest.raises(RLEFormatError, match="differ in length"):
        runs_to_rle(np.array([1, 5]), np.array([2]))
    with pytest.raises(RLEFormatError, match=r"RLE token 2 \('2'\)"):
        rle_to_runs("1 5 2 1")
    with pytest.raises(RLEFormatError, match="past the last pixel 6"):
        rle_to_runs("1 7", shape=(2, 3))


@pytest.mark.parametrize("shape", [(0, 3), (3,), (2, 3, 1), (2.5, 3), (True, 2), (-1, 2), "ab", 5])
def test_bad_shape(shape: object) -> None:
    with pytest.raises(RLEFormatError, match=r"shape must be 2 positive integers \(H, W\)"):
        rle_decode("1 1", shape)  # type: ignore[arg-type]


def test_bad_order_and_inputs() -> None:
    with pytest.raises(RLEFormatError, match='order must be "F"'):
        rle_decode("1 1", (2, 2), order="A")  # type: ignore[arg-type]
    with pytest.raises(RLEFormatError, match='order must be "F"'):
        rle_encode(np.zeros((2, 2)), order="f")  # type: ignore[arg-type]
    with pytest.raises(RLEFormatError, match="mask must be 2-D"):
        rle_encode(np.zeros((2, 2, 3)))
    with pytest.raises(TypeError, match="rle must be str or bytes"):
        rle_decode(12, (2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="band must be a positive integer"):
        rle_encode(np.zeros((2, 2)), band=0)
    assert rle_decode("1 1", np.array([2, 2])).shape == (2, 2)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


@st.composite
def windows(draw: st.DrawFn) -> tuple[NDArray[np.uint8], int, int, int, int, int]:
    """A mask and an r-aligned window that may lie partly or wholly outside it."""
    mask = draw(masks(max_side=20))
    h, w = mask.shape
    r = draw(st.sampled_from([1, 1, 2, 3, 4]))
    y = r * draw(st.integers(-(h + r) // r - 1, (h + r) // r))
    x = r * draw(st.integers(-(w + r) // r - 1, (w + r) // r))
    wh = r * draw(st.integers(1, (h + 2 * r) // r + 1))
    ww = r * draw(st.integers(1, (w + 2 * r) // r + 1))
    return mask, y, x, wh, ww, r


@pytest.mark.kernels
@pytest.mark.parametrize("order", ORDERS)
@given(case=windows())
@SMALL
def test_window_matches_naive(
    case: tuple[NDArray[np.uint8], int, int, int, int, int], order: str
) -> None:
    mask, y, x, h, w, r = case
    starts, lengths = rle_to_runs(naive_encode(mask, order), mask.shape)
    expected = naive_window(mask, y, x, h, w)
    if r == 1:
        got = rle_decode_window(starts, lengths, mask.shape, y, x, h, w, order)
        np.testing.assert_array_equal(got, expected)
    got = rle_decode_window(starts, lengths, mask.shape, y, x, h, w, order, reduce=r)
    np.testing.assert_array_equal(got, naive_block_majority(expected, r))


@pytest.mark.parametrize("order", ORDERS)
@given(case=windows())
@settings(max_examples=200, deadline=None)
def test_window_equals_cropped_full_decode(
    case: tuple[NDArray[np.uint8], int, int, int, int, int], order: str
) -> None:
    mask, y, x, h, w, _ = case
    text = rle_encode(mask, order)
    starts, lengths = rle_to_runs(text, mask.shape)
    full = rle_decode(text, mask.shape, order)
    got = rle_decode_window(starts, lengths, mask.shape, y, x, h, w, order=order)
    np.testing.assert_array_equal(got, naive_window(full, y, x, h, w))


@pytest.mark.parametrize("order", ORDERS)
def test_reduced_windows_leave_the_scratch_zero(order: str) -> None:
    # The block-majority kernel reuses one zeroed scratch per thread and must leave it zero,
    # whatever the window (inside, across the edge, outside, other shapes and factors).
    mask = blob_mask(60, 44, 9, seed=2)
    starts, lengths = rle_to_runs(naive_encode(mask, order), mask.shape)
    for y, x, h, w, r in [
        (0, 0, 60, 44, 4), (-8, 12, 40, 48, 4), (21, -6, 30, 18, 3), (56, 40, 8, 8, 2),
        (100, 0, 8, 8, 2), (6, -6, 12, 36, 6), (0, 0, 60, 44, 2),
    ]:  # fmt: skip
        got = rle_decode_window(starts, lengths, mask.shape, y, x, h, w, order, reduce=r)
        np.testing.assert_array_equal(got, naive_block_majority(naive_window(mask, y, x, h, w), r))
        assert not rle_module._scratch.diff.any()


def test_window_box_out_and_errors() -> None:
    mask = blob_mask(16, 12, 3, seed=4)
    starts, lengths = rle_to_runs(rle_encode(mask), mask.shape)
    whole = rle_decode_window(starts, lengths, mask.shape, Box(0, 0, 16, 12))
    np.testing.assert_array_equal(whole, mask)
    out = np.full((20, 8), 7, np.uint8)  # out is written in full, whatever it held
    got = rle_decode_window(starts, lengths, mask.shape, -2, 4, 20, 8, out=out)
    assert got is out
    np.testing.assert_array_equal(out, naive_window(mask, -2, 4, 20, 8))
    canvas = np.full((10, 10), 9, np.uint8)  # a strided view as out
    rle_decode_window(starts, lengths, mask.shape, 0, 0, 8, 8, out=canvas[1:5, 2:6], reduce=2)
    np.testing.assert_array_equal(canvas[1:5, 2:6], naive_block_majority(mask[:8, :8], 2))
    assert (canvas[5:, :] == 9).all() and (canvas[:, :2] == 9).all() and canvas[0, 5] == 9
    outside = rle_decode_window(starts, lengths, mask.shape, 100, -50, 4, 4)
    assert outside.shape == (4, 4) and not outside.any()
    with pytest.raises(BoxError, match="not aligned to reduce=4"):
        rle_decode_window(starts, lengths, mask.shape, 2, 0, 8, 8, reduce=4)
    with pytest.raises(BoxError):
        rle_decode_window(starts, lengths, mask.shape, 0, 0, 0, 8)
    with pytest.raises(ValueError, match=r"out must be a \(4, 4\) uint8 array"):
        rle_decode_window(starts, lengths, mask.shape, 0, 0, 4, 4, out=np.zeros((4, 5), np.uint8))
    with pytest.raises(RLEFormatError, match="differ in length"):
        rle_decode_window(starts, lengths[:-1], mask.shape, 0, 0, 4, 4)
    with pytest.raises(TypeError):
        rle_decode_window(starts, lengths, mask.shape, 0, 0)


def test_window_on_empty_runs() -> None:
    none = np.zeros(0, np.int64)
    assert not rle_decode_window(none, none, (5, 5), 0, 0, 5, 5).any()


# --------------------------------------------------------------------------------------------
# Lazy arrays: zarr, dask
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_encode_from_zarr_matches_numpy(order: str, monkeypatch: pytest.MonkeyPatch) -> None:
    zarr = pytest.importorskip("zarr")
    mask = blob_mask(37, 53, 6, seed=5)
    z = zarr.create_array(store={}, shape=mask.shape, chunks=(8, 16), dtype="uint8")
    z[:] = mask
    expected = rle_encode(mask, order)
    assert rle_encode(z, order) == expected
    assert rle_encode(z, order, band=5) == expected
    monkeypatch.setattr(rle_module, "_BAND_BYTES", 64)  # several chunk-aligned bands
    assert rle_encode(z, order) == expected


@pytest.mark.parametrize("order", ORDERS)
def test_encode_from_dask_matches_numpy(order: str, monkeypatch: pytest.MonkeyPatch) -> None:
    da = pytest.importorskip("dask.array")
    mask = blob_mask(41, 29, 5, seed=6)
    d = da.from_array(mask, chunks=(10, 7))
    expected = rle_encode(mask, order)
    assert rle_encode(d, order) == expected
    assert rle_encode(d > 0, order, band=4) == expected
    monkeypatch.setattr(rle_module, "_BAND_BYTES", 100)
    assert rle_encode(d, order) == expected


def test_band_bounds_follow_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(store={}, shape=(10, 100), chunks=(10, 16), dtype="uint8")
    monkeypatch.setattr(rle_module, "_BAND_BYTES", 300)  # >= 30 columns per band
    assert rle_module._band_bounds(z, 1, None) == [0, 32, 64, 96, 100]
    assert rle_module._band_bounds(np.zeros((10, 100)), 1, None) == [0, 30, 60, 90, 100]
    assert rle_module._band_bounds(z, 1, 40) == [0, 40, 80, 100]


# --------------------------------------------------------------------------------------------
# Cross-check with pycocotools (column-major RLE of COCO)
# --------------------------------------------------------------------------------------------


# pycocotools 2.0.x calls __array__ the numpy-1 way under numpy 2 (its own deprecation)
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_matches_pycocotools() -> None:
    mask_api = pytest.importorskip("pycocotools.mask")
    mask = blob_mask(47, 61, 7, seed=7)
    starts, lengths = rle_encode_runs(mask)
    # COCO's uncompressed RLE: alternating counts of 0s and 1s, column-major
    counts: list[int] = []
    pos = 0
    for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        counts += [s - 1 - pos, n]
        pos = s - 1 + n
    counts.append(mask.size - pos)
    coco = mask_api.frPyObjects({"counts": counts, "size": list(mask.shape)}, *mask.shape)
    np.testing.assert_array_equal(mask_api.decode(coco), rle_decode(rle_encode(mask), mask.shape))
    assert int(mask_api.area(mask_api.encode(np.asfortranarray(mask)))) == int(lengths.sum())


# --------------------------------------------------------------------------------------------
# Real files (../shared/realdata; skipped when absent)
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_hpa2022_rle_decodes_to_stored_mask(realdata: Path) -> None:
    folder = realdata / "hpa2022"
    if not (folder / "10078_mask.npy.gz").is_file():
        pytest.skip("hpa2022 files absent")
    with (folder / "test_metadata_10078.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    shape = (int(row["image_height"]), int(row["image_width"]))
    stored = np.load(io.BytesIO(gzip.decompress((folder / "10078_mask.npy.gz").read_bytes())))
    # SOURCES.md: column-major, 1-based; the stored .npy has two extra zero columns
    assert stored.shape == (2023, 2025) and not stored[:, 2023:].any()
    mask = rle_decode(row["rle"], shape)
    np.testing.assert_array_equal(mask, stored[:, :2023])
    assert int(mask.sum()) == int(float(row["mask_area"])) == 314450
    assert rle_encode(mask) == " ".join(row["rle"].split())


@pytest.mark.realdata
@pytest.mark.slow
def test_hubmap_whole_slide_rle_round_trips(realdata: Path) -> None:
    path = realdata / "hubmap" / "rle" / "0486052bb_predicted_rle.csv"
    info = realdata / "hubmap" / "HuBMAP-20-dataset_information.csv"
    if not path.is_file() or not info.is_file():
        pytest.skip("hubmap RLE files absent")
    header, line = path.read_text().splitlines()[:2]
    assert header == "id,predicted"
    slide_id, text = line.split(",", 1)
    with info.open(newline="") as f:
        dims = {r["image_file"]: r for r in csv.DictReader(f)}[f"{slide_id}.tiff"]
    shape = (int(dims["height_pixels"]), int(dims["width_pixels"]))
    assert shape == (25784, 34937)
    starts, lengths = rle_to_runs(text, shape)
    assert starts.size == 42366 and int(lengths.sum()) == 10144946
    mask = rle_decode(text, shape)
    assert int(mask.sum()) == 10144946
    assert rle_encode(mask) == text  # byte-identical
    # a window of the indexed runs equals the same crop of the full decode
    y, x = int(starts[100] - 1) % shape[0] - 300, int(starts[100] - 1) // shape[0] - 300
    window = rle_decode_window(starts, lengths, shape, y, x, 1024, 1024)
    np.testing.assert_array_equal(window, naive_window_fast(mask, y, x, 1024, 1024))
    assert window.any()


def naive_window_fast(mask: NDArray[np.uint8], y: int, x: int, h: int, w: int) -> NDArray[np.uint8]:
    """``mask[y:y+h, x:x+w]`` padded with 0, by slicing (for windows too big for loops)."""
    out = np.zeros((h, w), np.uint8)
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + h, mask.shape[0]), min(x + w, mask.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = mask[y0:y1, x0:x1]
    return out


@pytest.mark.kernels
@pytest.mark.parametrize("order", ORDERS)
def test_many_runs_grow_buffers(order: str) -> None:
    # 20000 (F) / 40000 (C) runs: more than the initial run and transition buffers hold
    mask = np.zeros((2, 40000), np.uint8)
    mask[:, ::2] = 1
    starts, lengths = rle_encode_runs(mask, order)
    if order == "F":
        np.testing.assert_array_equal(starts, np.arange(20000) * 4 + 1)
        assert (lengths == 2).all()
    else:
        np.testing.assert_array_equal(starts, np.arange(40000) * 2 + 1)
        assert (lengths == 1).all()
    text = runs_to_rle(starts, lengths)
    np.testing.assert_array_equal(rle_decode(text, mask.shape, order), mask)
