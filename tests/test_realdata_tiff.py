"""Every file under ../shared/realdata/tiff: read pixel for pixel like tifffile, or a clear error.

The reference for each file is written out explicitly (which series, which page, how the axes
map to (H, W, C), how samples convert to uint8), so a change in the reader's choices shows up
here as a named failure.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

import tilestream as ts
from naive import padded_crop, to_uint8

pytestmark = pytest.mark.realdata

Reference = Callable[[Path], np.ndarray]


def hwc(a: np.ndarray) -> np.ndarray:
    return a[..., None] if a.ndim == 2 else a


def imread(**kwargs: object) -> Reference:
    return lambda p: hwc(tifffile.imread(p, **kwargs))


def chw(**kwargs: object) -> Reference:
    return lambda p: tifffile.imread(p, **kwargs).transpose(1, 2, 0)


def converted(ref: Reference, bits: int | None = None, invert: bool = False) -> Reference:
    def load(p: Path) -> np.ndarray:
        out = to_uint8(ref(p), bits)
        return 255 - out if invert else out

    return load


def palette(p: Path) -> np.ndarray:
    with tifffile.TiffFile(p) as tif:
        cmap = tif.pages[0].colormap
        index = tif.pages[0].asarray()
    lut = np.rint(cmap.T.astype(np.float64) * 255 / 65535).astype(np.uint8)
    return lut[index]


def float_0_255(p: Path) -> np.ndarray:
    return hwc(np.rint(np.clip(tifffile.imread(p), 0, 255)).astype(np.uint8))


def deflate_extra(p: Path) -> np.ndarray:
    """libtiff semantics: each strip is the first rows*width bytes of its inflated stream."""
    with tifffile.TiffFile(p) as tif:
        page = tif.pages[0]
        h, w, rps = page.imagelength, page.imagewidth, page.rowsperstrip
        raw = p.read_bytes()
        strips = []
        for i, (off, cnt) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):
            rows = min(rps, h - i * rps)
            data = zlib.decompressobj().decompress(raw[off : off + cnt], rows * w)
            strips.append(np.frombuffer(data, np.uint8).reshape(rows, w))
    return np.concatenate(strips)[..., None]


# file -> reference image (H, W, C) uint8 of level 0
READABLE: dict[str, Reference] = {
    "bigtiff_awaresystems/Classic.tif": imread(),
    "bigtiff_awaresystems/BigTIFF.tif": imread(),
    "bigtiff_awaresystems/BigTIFFLong8Tiles.tif": imread(),
    "bigtiff_awaresystems/BigTIFFMotorola.tif": imread(),
    "bigtiff_awaresystems/BigTIFFMotorolaLongStrips.tif": imread(),
    "bigtiff_awaresystems/BigTIFFSubIFD8.tif": imread(key=0),
    "histolab/tcga-cr-7395-01a-01-ts1.svs": imread(series=0, level=0),
    "image-tiff/planar-rgb-u8.tif": chw(),
    "image-tiff/flower-rgb-planar-08.tif": chw(),
    "image-tiff/flower-rgb-planar-16.tif": converted(chw()),
    "large_image/grey10kx5k.tif": imread(),
    "large_image/small_la.tiff": imread(),
    "large_image/yb10kx5k.zstd.tiff": imread(series=0, level=0),
    **{f"large_image/test_orient{i}.tif": imread(series=0, level=0) for i in range(9)},
    "libtiff/deflate-last-strip-extra-data.tiff": deflate_extra,
    "libtiff/lzw-single-strip.tiff": converted(imread(), invert=True),  # 1-bit MinIsWhite
    "libtiff/minisblack-2c-8b-alpha.tiff": chw(),
    "libtiff/palette-1c-8b.tiff": palette,
    "libtiff/quad-lzw-compat.tiff": imread(),
    "libtiff/quad-tile.jpg.tiff": imread(),
    "libtiff/rgb-3c-16b.tiff": converted(imread()),
    "libtiff/test_float64_predictor2_be_lzw.tif": float_0_255,
    "libtiff/test_float64_predictor2_le_lzw.tif": float_0_255,
    "libtiff/tiff_with_subifd_chain.tif": imread(key=0),
    "libvips/1bit.tif": converted(imread()),
    "libvips/CMU-1-Small-Region.svs": imread(series=0),
    "libvips/multi-channel-z-series.ome.tif": lambda p: to_uint8(
        tifffile.imread(p)[:, 0].transpose(1, 2, 0)
    ),
    "openslide-python/boxes.tiff": imread(series=0, level=0),
    "openslide-python/small.svs": imread(series=0),
    "pathml/small_vectra.qptiff": chw(series=0),
    "pathml/smalltif.tif": converted(imread()),
    "skimage/multipage.tif": imread(key=0),
    "skimage/multipage_rgb.tif": lambda p: to_uint8(tifffile.imread(p)[0].transpose(1, 2, 0)),
}

# file -> (error class raised by Slide.open or by the first full read, words in the message)
BROKEN: dict[str, tuple[type[Exception], str]] = {
    "histolab/broken.svs": (ts.NotATiffError, "not a TIFF"),
    "large_image/zero_gi.tif": (ts.EmptyImageError, "zero-size"),
    "libtiff/test_ifd_loop_subifd.tif": (ts.CorruptSlideError, "IFD loop"),
    "libtiff/test_ifd_loop_to_first.tif": (ts.CorruptSlideError, "IFD loop"),
    "libtiff/test_ifd_loop_to_self.tif": (ts.CorruptSlideError, "IFD loop"),
    "libvips/ojpeg-strip.tif": (ts.UnsupportedCodecError, "old-style JPEG"),
    "libvips/ojpeg-tile.tif": (ts.UnsupportedCodecError, "old-style JPEG"),
    "libvips/subsampled.tif": (ts.UnsupportedLayoutError, "chroma-subsampled"),
    "openslide-python/unopenable.tiff": (ts.UnsupportedCodecError, "52479"),
    "openslide-python/unreadable.svs": (ts.CorruptTileError, r"level 0, tile \(row 0, col 0\)"),
}


def test_every_file_is_classified(realdata: Path) -> None:
    files = {
        p.relative_to(realdata / "tiff").as_posix()
        for p in (realdata / "tiff").rglob("*")
        if p.is_file() and p.suffix.lower() not in (".png", ".html")
    }
    assert files == set(READABLE) | set(BROKEN)


@pytest.mark.parametrize("name", sorted(READABLE))
def test_real_file_matches_reference(realdata: Path, name: str) -> None:
    path = realdata / "tiff" / name
    expected = READABLE[name](path)
    with ts.Slide.open(path) as slide:
        assert slide.shape == expected.shape[:2]
        assert slide.channels == expected.shape[2]
        np.testing.assert_array_equal(slide.read(ts.Box(0, 0, *slide.shape)), expected)
        rng = np.random.default_rng(0)
        h, w = slide.shape
        for _ in range(5):
            bh, bw = int(rng.integers(1, h + 20)), int(rng.integers(1, w + 20))
            y, x = int(rng.integers(-10, h)), int(rng.integers(-10, w))
            got = slide.read(ts.Box(y, x, bh, bw))
            np.testing.assert_array_equal(got, padded_crop(expected, y, x, bh, bw))


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_fails_clearly(realdata: Path, name: str) -> None:
    error, words = BROKEN[name]
    path = realdata / "tiff" / name
    with pytest.raises(error, match=words) as info, ts.Slide.open(path) as slide:
        slide.read(ts.Box(0, 0, *slide.shape))
    assert name.split("/")[-1] in str(info.value)
    assert isinstance(info.value, ts.TilestreamError)


def test_real_pyramids(realdata: Path) -> None:
    """Reduced reads come from the file's own pyramid levels, also for floor-halved sizes."""
    cases = {
        "histolab/tcga-cr-7395-01a-01-ts1.svs": 2,
        "large_image/yb10kx5k.zstd.tiff": 8,
        "openslide-python/boxes.tiff": 4,
    }
    for name, reduce in cases.items():
        path = realdata / "tiff" / name
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            level = next(
                i
                for i, lv in enumerate(series.levels)
                if round(series.levels[0].shape[1] / lv.shape[1]) == reduce
            )
            ref = hwc(series.levels[level].asarray())
        with ts.Slide.open(path) as slide:
            assert any(lv.downsample == reduce for lv in slide.levels), name
            h, w = ref.shape[:2]
            got = slide.read(ts.Box(0, 0, h * reduce, w * reduce), reduce)
            np.testing.assert_array_equal(got, ref, err_msg=name)


def test_real_metadata(realdata: Path) -> None:
    with ts.Slide.open(realdata / "tiff/libvips/CMU-1-Small-Region.svs") as slide:
        assert slide.mpp == pytest.approx(0.499)
        assert slide.levels[0].tile == (240, 240)
    with ts.Slide.open(realdata / "tiff/bigtiff_awaresystems/BigTIFFMotorola.tif") as slide:
        info = slide.info()
        assert info["format"] == "BigTIFF"
        assert info["byteorder"] == "big"
