"""Slide: layouts, codecs, reduce, padding, cache, threads, pickling, fork/spawn, bad input."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import shutil
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

import tilestream as ts
from naive import area_mean, padded_crop, to_uint8
from tilestream.synthetic import SlideSpec, make_slide


def smooth_image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """A non-constant, JPEG-friendly test image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = [127 + 100 * np.sin(yy / (7 + 3 * k) + k) * np.cos(xx / (11 + 2 * k)) for k in range(c)]
    img = np.stack(base, axis=-1) + rng.normal(0, 3, (h, w, c))
    return np.clip(img, 0, 255).astype(np.uint8)


def full_read(slide: ts.Slide) -> np.ndarray:
    return slide.read(ts.Box(0, 0, *slide.shape))


def random_boxes(shape: tuple[int, int], n: int, seed: int, reduce: int = 1) -> list[ts.Box]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h = int(rng.integers(1, 200)) * reduce
        w = int(rng.integers(1, 200)) * reduce
        y = int(rng.integers(-150, shape[0] + 50)) // reduce * reduce
        x = int(rng.integers(-150, shape[1] + 50)) // reduce * reduce
        out.append(ts.Box(y, x, h, w))
    return out


# ------------------------------------------------------------------------------------------
# Layouts and codecs written with tifffile, compared pixel for pixel with tifffile.imread
# ------------------------------------------------------------------------------------------

LAYOUTS: dict[str, dict[str, Any]] = {
    "hwc-tiled": {"tile": (64, 64)},
    "hwc-stripped": {"rowsperstrip": 16},
    "hwc-one-strip": {},
    "planar-tiled": {"tile": (64, 64), "planarconfig": "separate"},
    "planar-stripped": {"rowsperstrip": 16, "planarconfig": "separate"},
    "bigtiff-le": {"tile": (32, 48), "bigtiff": True},
    "bigtiff-be": {"tile": (32, 48), "bigtiff": True, "byteorder": ">"},
    "classic-be-stripped": {"rowsperstrip": 7, "byteorder": ">"},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("compression", [None, "deflate", "lzw", "jpeg", "zstd"])
def test_layouts_match_tifffile(tmp_path: Path, layout: str, compression: str | None) -> None:
    options = dict(LAYOUTS[layout])
    bigtiff = options.pop("bigtiff", False)
    byteorder = options.pop("byteorder", "<")
    planar = options.get("planarconfig") == "separate"
    if compression == "jpeg" and planar:
        pytest.skip("tifffile writes no planar JPEG")
    image = smooth_image(150, 203, 3)
    data = image.transpose(2, 0, 1).copy() if planar else image
    path = tmp_path / "img.tif"
    tifffile.imwrite(
        path,
        data,
        photometric="rgb",
        compression=compression,
        bigtiff=bigtiff,
        byteorder=byteorder,
        **options,
    )
    reference = tifffile.imread(path)
    if planar:
        reference = reference.transpose(1, 2, 0)
    with ts.Slide.open(path) as slide:
        assert slide.shape == (150, 203)
        assert slide.channels == 3
        np.testing.assert_array_equal(full_read(slide), reference)
        for box in random_boxes(slide.shape, 20, seed=1):
            expected = padded_crop(reference, box.y, box.x, box.height, box.width)
            np.testing.assert_array_equal(slide.read(box), expected)
        if compression is None and layout == "hwc-stripped":
            assert slide.levels[0].is_memmapped


@pytest.mark.parametrize(
    "codec", ["jpeg2000", "webp", "packbits", "lzma", "png", "jpegxl", "jpegxr", "lerc"]
)
def test_more_codecs(tmp_path: Path, codec: str) -> None:
    image = smooth_image(96, 130, 3, seed=2)
    path = tmp_path / "codec.tif"
    try:
        tifffile.imwrite(path, image, photometric="rgb", compression=codec, tile=(64, 64))
        reference = tifffile.imread(path)
    except Exception as err:  # encoder missing from this imagecodecs build
        pytest.skip(f"imagecodecs cannot write/read {codec}: {err}")
    with ts.Slide.open(path) as slide:
        np.testing.assert_array_equal(full_read(slide), reference)


def test_grey_rgba_and_sixteen_bit(tmp_path: Path) -> None:
    grey = smooth_image(70, 90, 1)[..., 0]
    tifffile.imwrite(tmp_path / "grey.tif", grey, tile=(32, 32))
    rgba = smooth_image(70, 90, 4)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    deep = (smooth_image(70, 90, 3).astype(np.uint16) * 257 + 3).astype(np.uint16)
    tifffile.imwrite(tmp_path / "u16.tif", deep, photometric="rgb", compression="zlib")
    twelve = smooth_image(70, 90, 1)[..., 0].astype(np.uint16) * 16
    tifffile.imwrite(tmp_path / "u12.tif", twelve, bitspersample=12)
    signed = (smooth_image(70, 90, 3).astype(np.int16) - 128).astype(np.int8)
    tifffile.imwrite(tmp_path / "i8.tif", signed, photometric="rgb")
    with ts.Slide.open(tmp_path / "grey.tif") as s:
        assert s.channels == 1
        np.testing.assert_array_equal(full_read(s)[..., 0], grey)
    with ts.Slide.open(tmp_path / "rgba.tif") as s:
        assert s.channels == 4
        np.testing.assert_array_equal(full_read(s), rgba)
    with ts.Slide.open(tmp_path / "u16.tif") as s:
        assert s.source_dtype == "uint16"
        np.testing.assert_array_equal(full_read(s), to_uint8(deep))
    with ts.Slide.open(tmp_path / "u12.tif") as s:
        np.testing.assert_array_equal(full_read(s)[..., 0], to_uint8(twelve, bits=12))
    with ts.Slide.open(tmp_path / "i8.tif") as s:
        np.testing.assert_array_equal(full_read(s), to_uint8(signed))


def test_channels_across_pages_and_extra_axes(tmp_path: Path) -> None:
    """(C, H, W) as pages, the HuBMAP (1, 1, 3, H, W) layout, and a Z axis read at index 0."""
    image = smooth_image(60, 80, 3)
    chw = image.transpose(2, 0, 1).copy()
    tifffile.imwrite(tmp_path / "ome.ome.tif", chw[None, None], metadata={"axes": "TZCYX"})
    tifffile.imwrite(tmp_path / "imagej.tif", chw[None], imagej=True, metadata={"axes": "ZCYX"})
    stack = np.stack([chw, 255 - chw])  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "z.ome.tif", stack, metadata={"axes": "ZCYX"})
    for name in ("ome.ome.tif", "imagej.tif", "z.ome.tif"):
        with ts.Slide.open(tmp_path / name) as s:
            assert s.channels == 3, name
            np.testing.assert_array_equal(full_read(s), image, err_msg=name)


def test_largest_series_is_the_image(tmp_path: Path) -> None:
    small = smooth_image(20, 30, 3, seed=1)
    big = smooth_image(120, 90, 3, seed=2)
    with tifffile.TiffWriter(tmp_path / "multi.tif") as tw:
        tw.write(small, photometric="rgb", metadata=None)
        tw.write(big, photometric="rgb", tile=(32, 32), metadata=None)
    with ts.Slide.open(tmp_path / "multi.tif") as s:
        assert s.shape == (120, 90)
        np.testing.assert_array_equal(full_read(s), big)


# ------------------------------------------------------------------------------------------
# Reduce factors and pyramid levels
# ------------------------------------------------------------------------------------------


@pytest.mark.kernels
@pytest.mark.parametrize("reduce", [2, 3, 4])
def test_reduce_without_pyramid_is_area_mean(tmp_path: Path, reduce: int) -> None:
    image = smooth_image(61, 77, 3)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, image, photometric="rgb", tile=(32, 32), compression="zlib")
    with ts.Slide.open(path) as slide:
        assert slide.level_for(reduce) == 0
        for box in random_boxes(slide.shape, 6, seed=reduce, reduce=reduce)[:4]:
            small = ts.Box(box.y, box.x, min(box.height, 20 * reduce), min(box.width, 20 * reduce))
            expected = area_mean(
                padded_crop(image, small.y, small.x, small.height, small.width), reduce
            )
            np.testing.assert_array_equal(slide.read(small, reduce), expected)


def test_pyramid_level_selection(pyramid_slide: Path) -> None:
    with tifffile.TiffFile(pyramid_slide) as tif:
        levels = [lvl.asarray() for lvl in tif.series[0].levels]
    with ts.Slide.open(pyramid_slide) as slide:
        assert [lvl.downsample for lvl in slide.levels] == [1, 2, 4, 8, 16]
        assert [lvl.shape for lvl in slide.levels] == [lv.shape[:2] for lv in levels]
        assert slide.level_for(1) == 0
        assert slide.level_for(2) == 1
        assert slide.level_for(6) == 1  # 6 = 2 x 3
        assert slide.level_for(12) == 2
        assert slide.level_for(16) == 4
        assert slide.level_for(24) == 3
        assert slide.level_for(3) == 0
        box = ts.Box(96, 160, 256, 384)
        np.testing.assert_array_equal(slide.read(box, 2), levels[1][48:176, 80:272])
        np.testing.assert_array_equal(slide.read(box, 4), levels[2][24:88, 40:136])
        # 16 x 2 = 32: level 4 then a 2x2 area mean, padded past the level's edge
        box32 = ts.Box(0, 0, 1024, 1536)
        expected = area_mean(padded_crop(levels[4], 0, 0, 64, 96), 2)
        np.testing.assert_array_equal(slide.read(box32, 32), expected)
        # reduce 6 on level 1 with a 3x3 mean; partly outside the slide
        box6 = ts.Box(840, 1260, 120, 60)
        lv = levels[1]
        expected = area_mean(padded_crop(lv, 420, 630, 60, 30), 3)
        np.testing.assert_array_equal(slide.read(box6, 6), expected)


def test_alignment_and_box_errors(pyramid_slide: Path) -> None:
    with ts.Slide.open(pyramid_slide) as slide:
        with pytest.raises(ts.BoxError, match="not aligned to reduce=4"):
            slide.read(ts.Box(2, 0, 64, 64), 4)
        with pytest.raises(ts.BoxError, match="positive integer"):
            slide.read(ts.Box(0, 0, 64, 64), 0)
        with pytest.raises(ts.BoxError):
            slide.read((0, 0, 64, 64))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="out must be"):
            slide.read(ts.Box(0, 0, 8, 8), out=np.empty((4, 4, 3), np.uint8))


def test_read_into_out_and_wholly_outside(pyramid_slide: Path) -> None:
    with ts.Slide.open(pyramid_slide) as slide:
        out = np.zeros((32, 32, 3), np.uint8)
        result = slide.read(ts.Box(100, 100, 64, 64), 2, out=out)
        assert result is out
        np.testing.assert_array_equal(out, slide.read(ts.Box(100, 100, 64, 64), 2))
        outside = slide.read(ts.Box(-500, 5000, 40, 40))
        assert outside.shape == (40, 40, 3)
        assert (outside == ts.IMAGE_FILL).all()


def test_read_returns_aligned_buffer(pyramid_slide: Path) -> None:
    with ts.Slide.open(pyramid_slide) as slide:
        for box in random_boxes(slide.shape, 5, seed=9):
            assert slide.read(box).ctypes.data % 64 == 0


def test_stripped_memmap(stripped_slide: Path) -> None:
    reference = tifffile.imread(stripped_slide)
    with ts.Slide.open(stripped_slide) as slide:
        assert slide.levels[0].is_memmapped
        for box in random_boxes(slide.shape, 30, seed=4):
            expected = padded_crop(reference, box.y, box.x, box.height, box.width)
            np.testing.assert_array_equal(slide.read(box), expected)


# ------------------------------------------------------------------------------------------
# Tile pieces: the stored tiles under a read (predict_slide's float batches are built from them)
# ------------------------------------------------------------------------------------------


def assemble_pieces(slide: ts.Slide, box: ts.Box, reduce: int) -> np.ndarray:
    """A read rebuilt from ``_tile_pieces`` and ``_decode_tile``; checks the pieces tile the
    inside of the read exactly once and that the padding flag says whether anything is left."""
    plan = slide._tile_pieces(box, reduce)
    assert plan is not None
    pieces, padded = plan
    shape = (box.height // reduce, box.width // reduce, slide.channels)
    out = np.full(shape, ts.IMAGE_FILL, np.uint8)
    covered = np.zeros(shape, np.int64)
    for p in pieces:
        tile = slide._decode_tile(p.key)
        h, w = p.y1 - p.y0, p.x1 - p.x0
        assert h > 0 and w > 0 and p.c1 > p.c0
        out[p.y0 : p.y1, p.x0 : p.x1, p.c0 : p.c1] = tile[p.ty0 : p.ty0 + h, p.tx0 : p.tx0 + w]
        covered[p.y0 : p.y1, p.x0 : p.x1, p.c0 : p.c1] += 1
    assert covered.max(initial=0) <= 1
    assert padded == (not covered.all())
    return out


def piece_layouts(tmp_path: Path) -> dict[str, Path]:
    """Tiled, stripped (compressed), planar, grey, RGBA, 16-bit and channels-across-pages
    slides: every layout whose reads are copies of stored tiles."""
    image = smooth_image(150, 203, 3, seed=5)
    chw = image.transpose(2, 0, 1).copy()
    files: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
        "tiled-jpeg": (image, {"tile": (64, 64), "compression": "jpeg", "photometric": "rgb"}),
        "tiled-odd": (image, {"tile": (32, 48), "compression": "zlib", "photometric": "rgb"}),
        "stripped": (image, {"rowsperstrip": 16, "compression": "zlib", "photometric": "rgb"}),
        "planar-tiled": (
            chw,
            {
                "tile": (64, 64),
                "planarconfig": "separate",
                "compression": "zlib",
                "photometric": "rgb",
            },
        ),
        "planar-stripped": (
            chw,
            {
                "rowsperstrip": 16,
                "planarconfig": "separate",
                "compression": "zlib",
                "photometric": "rgb",
            },
        ),
        "grey": (image[..., 0], {"tile": (32, 32), "compression": "zlib"}),
        "rgba": (
            smooth_image(150, 203, 4, seed=6),
            {
                "tile": (64, 64),
                "compression": "zlib",
                "photometric": "rgb",
                "extrasamples": ["unassalpha"],
            },
        ),
        "uint16": (
            (image.astype(np.uint16) * 257 + 3).astype(np.uint16),
            {"tile": (64, 64), "compression": "zlib", "photometric": "rgb"},
        ),
        "pages": (chw[None, None], {"metadata": {"axes": "TZCYX"}, "compression": "zlib"}),
    }
    paths = {}
    for name, (data, options) in files.items():
        path = tmp_path / f"{name}.ome.tif" if name == "pages" else tmp_path / f"{name}.tif"
        tifffile.imwrite(path, data, **options)
        paths[name] = path
    return paths


def test_tile_pieces_rebuild_every_read(tmp_path: Path, pyramid_slide: Path) -> None:
    cases = [(path, 1) for path in piece_layouts(tmp_path).values()]
    cases += [(pyramid_slide, r) for r in (1, 2, 4, 8, 16)]  # levels of the pyramid
    for path, reduce in cases:
        with ts.Slide.open(path) as slide:
            h, w = slide.shape
            boxes = [
                *random_boxes(slide.shape, 12, seed=reduce, reduce=reduce),
                ts.Box(0, 0, h // reduce * reduce, w // reduce * reduce),
                ts.Box(-4 * reduce, -8 * reduce, 40 * reduce, 24 * reduce),  # top-left corner
                ts.Box(-500 * reduce, 0, 8 * reduce, 8 * reduce),  # wholly outside
            ]
            for box in boxes:
                np.testing.assert_array_equal(
                    assemble_pieces(slide, box, reduce),
                    slide.read(box, reduce),
                    err_msg=f"{path.name} {box} reduce {reduce}",
                )


def test_tile_pieces_refuse_resampled_and_memmapped_reads(
    pyramid_slide: Path, stripped_slide: Path
) -> None:
    with ts.Slide.open(pyramid_slide) as slide:
        assert slide._tile_pieces(ts.Box(0, 0, 48, 48), 6) is None  # level 1 + 3x3 means
        assert slide._tile_pieces(ts.Box(0, 0, 64, 64), 32) is None  # level 4 + 2x2 means
        with pytest.raises(ts.BoxError, match="not aligned"):
            slide._tile_pieces(ts.Box(2, 0, 64, 64), 4)
    with ts.Slide.open(stripped_slide) as slide:
        assert slide.levels[0].is_memmapped
        assert slide._tile_pieces(ts.Box(0, 0, 64, 64), 1) is None


# ------------------------------------------------------------------------------------------
# Thumbnail, dask, cache
# ------------------------------------------------------------------------------------------


def test_thumbnail_equals_reduced_read(pyramid_slide: Path, stripped_slide: Path) -> None:
    for path in (pyramid_slide, stripped_slide):
        with ts.Slide.open(path) as slide:
            h, w = slide.shape
            for reduce in (4, 6, 16):
                thumb = slide.thumbnail(reduce)
                oh, ow = -(-h // reduce), -(-w // reduce)
                assert thumb.shape == (oh, ow, 3)
                expected = slide.read(ts.Box(0, 0, oh * reduce, ow * reduce), reduce)
                np.testing.assert_array_equal(thumb, expected)
            assert max(slide.thumbnail(max_size=100).shape[:2]) <= 100


def test_thumbnail_memory_is_bounded(tmp_path: Path) -> None:
    """A thumbnail never holds the full level: peak allocation far below the slide size."""
    path = tmp_path / "big.tif"
    make_slide(
        path,
        SlideSpec(height=3000, width=4000, seed=1, tile=256, pyramid=False, compression="deflate"),
    )
    with ts.Slide.open(path) as slide:
        slide.thumbnail(16)  # compile kernels first
        tracemalloc.start()
        thumb = slide.thumbnail(16)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    full_bytes = 3000 * 4000 * 3
    assert thumb.shape == (188, 250, 3)
    assert peak < full_bytes / 2, f"thumbnail peak {peak} B vs slide {full_bytes} B"


def test_to_dask(pyramid_slide: Path) -> None:
    with ts.Slide.open(pyramid_slide) as slide:
        arr = slide.to_dask(reduce=2, chunk=100)
        assert arr.shape == (450, 650, 3)
        assert arr.dtype == np.uint8
        np.testing.assert_array_equal(arr.compute(), slide.thumbnail(2))
        np.testing.assert_array_equal(
            arr[33:170, 99:301].compute(), slide.read(ts.Box(66, 198, 274, 404), 2)
        )
        full = slide.to_dask(chunk=256)
        np.testing.assert_array_equal(full[..., 1].compute(), full_read(slide)[..., 1])


def test_cache_is_bounded_and_hits(pyramid_slide: Path) -> None:
    budget = 4 * 128 * 128 * 3
    with ts.Slide.open(pyramid_slide, cache_bytes=budget) as slide:
        for box in random_boxes(slide.shape, 30, seed=5):
            slide.read(box)
            assert slide.cache.nbytes <= budget
        box = ts.Box(0, 0, 100, 100)
        slide.read(box)
        hits = slide.cache.hits
        slide.read(box)
        assert slide.cache.hits == hits + 1
    with ts.Slide.open(pyramid_slide, cache_bytes=0) as slide:
        a = slide.read(ts.Box(10, 10, 300, 300))
        assert slide.cache.nbytes == 0
    with ts.Slide.open(pyramid_slide) as slide:
        np.testing.assert_array_equal(a, slide.read(ts.Box(10, 10, 300, 300)))
    with pytest.raises(ValueError, match="cache_bytes"):
        ts.Slide.open(pyramid_slide, cache_bytes=-1)


def _shared_cache_size(_: int) -> int:
    return len(ts.ChunkCache.shared())


def test_slides_share_one_bounded_process_cache(pyramid_slide: Path, stripped_slide: Path) -> None:
    shared = ts.ChunkCache.shared()
    a, b = ts.Slide.open(pyramid_slide), ts.Slide.open(pyramid_slide)
    assert a.cache is shared and b.cache is shared
    old = shared.capacity_bytes
    try:
        shared.resize(6 * 128 * 128 * 3)
        for box in random_boxes(a.shape, 20, seed=21):
            a.read(box)
            b.read(box)
            assert shared.nbytes <= shared.capacity_bytes
        hits = shared.hits
        b.read(ts.Box(0, 0, 64, 64))
        a.read(ts.Box(0, 0, 64, 64))  # same file: a's read hits b's tiles
        assert shared.hits == hits + 1
        a.close()  # drops this file's tiles, keeps the cache object
        assert all(k[0] != a._identity for k in shared._items)
    finally:
        shared.resize(old)
    if "fork" in mp.get_all_start_methods():
        b.read(ts.Box(0, 0, 300, 300))
        assert len(shared) > 0
        with mp.get_context("fork").Pool(2) as pool:
            sizes = pool.map(_shared_cache_size, range(4))
        assert sizes == [0, 0, 0, 0]  # a forked child starts its own empty cache


# ------------------------------------------------------------------------------------------
# Concurrency, pickling, fork and spawn
# ------------------------------------------------------------------------------------------


def test_threads_read_consistently(pyramid_slide: Path) -> None:
    boxes = random_boxes((900, 1300), 40, seed=11)
    with ts.Slide.open(pyramid_slide, cache_bytes=0) as ref:
        expected = [ref.read(b) for b in boxes]
    slide = ts.Slide.open(pyramid_slide, cache_bytes=8 * 128 * 128 * 3)
    results: dict[int, list[np.ndarray]] = {}

    def work(k: int) -> None:
        order = np.random.default_rng(k).permutation(len(boxes))
        got = [None] * len(boxes)
        for i in order:
            got[i] = slide.read(boxes[i])
        results[k] = got  # type: ignore[assignment]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
    slide.close()


def test_pickle_by_path(pyramid_slide: Path) -> None:
    with ts.Slide.open(pyramid_slide, cache_bytes=1234567) as slide:
        before = slide.read(ts.Box(50, 60, 200, 200))
        blob = pickle.dumps(slide)
        assert len(blob) < 1000
        clone = pickle.loads(blob)
        assert clone.cache_bytes == 1234567
        np.testing.assert_array_equal(clone.read(ts.Box(50, 60, 200, 200)), before)
        clone.close()


def _read_boxes(args: tuple[ts.Slide, list[ts.Box]]) -> list[np.ndarray]:
    slide, boxes = args
    return [slide.read(b) for b in boxes]


_FORK_SLIDE: ts.Slide | None = None


def _read_inherited(boxes: list[ts.Box]) -> list[np.ndarray]:
    assert _FORK_SLIDE is not None
    return [_FORK_SLIDE.read(b) for b in boxes]


def test_fork_reopens_in_children(pyramid_slide: Path) -> None:
    """A slide opened and read in the parent is inherited by forked workers safely."""
    global _FORK_SLIDE
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("fork is not available on this platform")
    boxes = random_boxes((900, 1300), 24, seed=13)
    slide = ts.Slide.open(pyramid_slide)
    expected = [slide.read(b) for b in boxes]  # parent has its fd open and cache filled
    _FORK_SLIDE = slide
    try:
        with mp.get_context("fork").Pool(2) as pool:
            chunks = [boxes[i::4] for i in range(4)]
            results = pool.map(_read_inherited, chunks)
    finally:
        _FORK_SLIDE = None
    for i, got in enumerate(results):
        for a, b in zip(got, expected[i::4], strict=True):
            np.testing.assert_array_equal(a, b)
    slide.close()


def test_spawn_workers(pyramid_slide: Path) -> None:
    boxes = random_boxes((900, 1300), 6, seed=17)
    with ts.Slide.open(pyramid_slide) as slide:
        expected = [slide.read(b) for b in boxes]
        with mp.get_context("spawn").Pool(1) as pool:
            (got,) = pool.map(_read_boxes, [(slide, boxes)])
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def test_missing_and_not_a_tiff(tmp_path: Path) -> None:
    with pytest.raises(ts.SlideNotFoundError, match="no such file") as info:
        ts.Slide.open(tmp_path / "nope.tif")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ts.SlideNotFoundError, match="not a regular file"):
        ts.Slide.open(tmp_path)
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(ts.NotATiffError, match=r"empty\.tif"):
        ts.Slide.open(tmp_path / "empty.tif")
    (tmp_path / "png.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ts.NotATiffError, match="not a TIFF") as err:
        ts.Slide.open(tmp_path / "png.tif")
    assert isinstance(err.value, ValueError)
    (tmp_path / "header.tif").write_bytes(b"II*\x00\xff\xff\xff\x00" + bytes(8))
    with pytest.raises(ts.TilestreamError, match=r"header\.tif"):
        ts.Slide.open(tmp_path / "header.tif")


def test_truncated_file(pyramid_slide: Path, tmp_path: Path) -> None:
    data = pyramid_slide.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ts.TilestreamError, match=r"cut\.tif"):
        ts.Slide.open(cut)


def test_corrupt_tile_names_level_and_tile(tmp_path: Path) -> None:
    path = tmp_path / "bad.tif"
    tifffile.imwrite(
        path, smooth_image(128, 128, 3), photometric="rgb", tile=(64, 64), compression="jpeg"
    )
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[3], page.databytecounts[3]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + count] = bytes(count)  # zero the JPEG stream of tile (1, 1)
    path.write_bytes(bytes(raw))
    with ts.Slide.open(path) as slide:
        slide.read(ts.Box(0, 0, 64, 64))  # other tiles still read
        with pytest.raises(ts.CorruptTileError, match=r"level 0, tile \(row 1, col 1\)") as err:
            slide.read(ts.Box(60, 60, 10, 10))
        assert "bad.tif" in str(err.value)


def test_decompression_bomb_guard(pyramid_slide: Path) -> None:
    with pytest.raises(ts.DecompressionBombError, match="max_pixels=1000"):
        ts.Slide.open(pyramid_slide, max_pixels=1000)
    assert ts.Slide.open(pyramid_slide, max_pixels=900 * 1300).shape == (900, 1300)


def test_file_removed_after_open(tmp_path: Path, pyramid_slide: Path) -> None:
    path = tmp_path / "gone.tif"
    shutil.copy(pyramid_slide, path)
    slide = ts.Slide.open(path)
    os.unlink(path)
    with pytest.raises(ts.SlideNotFoundError, match=r"gone\.tif"):
        slide.read(ts.Box(0, 0, 10, 10))


def test_info_and_repr(pyramid_slide: Path) -> None:
    with ts.Slide.open(pyramid_slide) as slide:
        info = slide.info()
        assert info["shape"] == [900, 1300]
        assert info["levels"][0]["compression"] == "JPEG (7)"
        assert info["levels"][0]["tile"] == [128, 128]
        assert info["levels"][0]["storage"] == "tiled"
        assert [lv["downsample"] for lv in info["levels"]] == [1, 2, 4, 8, 16]
        assert "pyramid.tif" in repr(slide)
        assert slide.dtype == np.uint8
        assert slide.mpp is None
