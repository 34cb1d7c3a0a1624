"""From a parsed TIFF to read plans: which pages, tiles and channels make each pyramid level.

This module turns tifffile's view of a file (series, levels, pages) into small plain objects
the reader walks on every read: per level, the pages that supply its channels; per page, the
tile grid, the byte offsets of each tile or strip, the decoder and the rule that converts its
samples to uint8. It also checks the IFD chain for loops before tifffile walks it.

Conversion to uint8 (the documented rule, applied per decoded tile so tiles stay independent):

- unsigned integers are scaled linearly from ``[0, 2**BitsPerSample - 1]`` to ``[0, 255]`` and
  rounded (8-bit data is copied unchanged; 12-bit data in 16-bit words uses 4095 as full scale);
- signed integers are first shifted to unsigned (``v + 2**(bits-1)``);
- floating point samples are either ``[0, 1]`` intensities (times 255) or 0-255 values, decided
  once per slide from the smallest level's first tiles (maximum <= 1 means ``[0, 1]``); then
  clipped to ``[0, 255]`` and rounded;
- 1-bit (bilevel) data becomes 0 / 255; ``MinIsWhite`` data is inverted so 255 is white;
- palette images are expanded through their colour map to RGB.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from .errors import (
    CorruptSlideError,
    EmptyImageError,
    UnsupportedCodecError,
    UnsupportedLayoutError,
)

__all__ = [
    "LevelPlan",
    "PagePlan",
    "check_ifd_chain",
    "decode_lenient",
    "plan_levels",
    "resolution_mpp",
]

Converter = Callable[[NDArray[Any]], NDArray[np.uint8]]

# Compression codes tifffile maps to a decoder that cannot decode them in practice.
_UNSUPPORTED_COMPRESSION = {
    6: "old-style JPEG (compression 6) is not supported; re-encode the file, "
    "e.g. `tiffcp -c jpeg in.tif out.tif` or `vips copy in.tif out.tif[compression=jpeg]`",
}
_JPEG_COMPRESSIONS = {6, 7, 34892, 33007}
_MAX_IFDS = 1_000_000


# --------------------------------------------------------------------------------------------
# IFD chain check
# --------------------------------------------------------------------------------------------


def check_ifd_chain(path: str) -> None:
    """Walk the IFD chain (and SubIFD chains) of ``path``; raise on loops or bad offsets.

    tifffile stops at a loop with a logged message and returns what it read so far; a loop means
    the file is damaged, so tilestream refuses it with :class:`CorruptSlideError`.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        header = fh.read(16)
        order = {b"II": "<", b"MM": ">"}.get(header[:2])
        if order is None or len(header) < 8:
            return  # tifffile reports "not a TIFF"
        magic = struct.unpack(order + "H", header[2:4])[0]
        if magic == 42:
            first = struct.unpack(order + "I", header[4:8])[0]
            count_fmt, entry_size, off_fmt = "H", 12, "I"
        elif magic == 43 and len(header) >= 16:
            first = struct.unpack(order + "Q", header[8:16])[0]
            count_fmt, entry_size, off_fmt = "Q", 20, "Q"
        else:
            return
        count_size = struct.calcsize(count_fmt)
        off_size = struct.calcsize(off_fmt)
        seen: set[int] = set()
        stack = [(first, "IFD chain")]
        while stack:
            offset, where = stack.pop()
            index = 0
            chain: set[int] = set()
            while offset:
                if offset in chain:
                    raise CorruptSlideError(
                        f"{path}: IFD loop: {where} returns to the IFD at byte offset {offset} "
                        f"(after {index} IFDs); the file is damaged"
                    )
                if offset in seen:
                    break  # a tail shared with a chain already walked (SubIFD lists do this)
                if offset + count_size > size:
                    raise CorruptSlideError(
                        f"{path}: IFD offset {offset} in {where} is past the end of the file "
                        f"({size} bytes); the file is truncated"
                    )
                chain.add(offset)
                seen.add(offset)
                if len(seen) > _MAX_IFDS:
                    raise CorruptSlideError(f"{path}: more than {_MAX_IFDS} IFDs")
                fh.seek(offset)
                n = struct.unpack(order + count_fmt, fh.read(count_size))[0]
                table = fh.read(n * entry_size + off_size)
                if len(table) < n * entry_size + off_size:
                    raise CorruptSlideError(
                        f"{path}: IFD at byte offset {offset} ({n} entries) is cut off by the "
                        "end of the file; the file is truncated"
                    )
                for k in range(n):
                    entry = table[k * entry_size : (k + 1) * entry_size]
                    tag = struct.unpack(order + "H", entry[:2])[0]
                    if tag == 330:  # SubIFDs
                        for sub in _subifd_offsets(fh, order, entry, magic, size):
                            stack.append((sub, f"SubIFD chain of the IFD at {offset}"))
                offset = struct.unpack(order + off_fmt, table[n * entry_size :])[0]
                index += 1


def _subifd_offsets(fh: Any, order: str, entry: bytes, magic: int, size: int) -> list[int]:
    dtype = struct.unpack(order + "H", entry[2:4])[0]
    if magic == 42:
        count = struct.unpack(order + "I", entry[4:8])[0]
        inline, value = 4, entry[8:12]
    else:
        count = struct.unpack(order + "Q", entry[4:12])[0]
        inline, value = 8, entry[12:20]
    item = {4: 4, 13: 4, 16: 8, 18: 8}.get(dtype)
    if item is None or count == 0 or count > 4096:
        return []
    nbytes = item * count
    if nbytes <= inline:
        raw = value[:nbytes]
    else:
        where = struct.unpack(order + ("I" if magic == 42 else "Q"), value)[0]
        if where + nbytes > size:
            return []
        pos = fh.tell()
        fh.seek(where)
        raw = fh.read(nbytes)
        fh.seek(pos)
    fmt = order + ("I" if item == 4 else "Q") * count
    return [int(v) for v in struct.unpack(fmt, raw) if v]


# --------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class PagePlan:
    """How to read one TIFF page: its tile grid, byte ranges, decoder and uint8 conversion."""

    path: str
    index: int  # page index in the file, for messages
    height: int
    width: int
    tile_height: int  # rows per tile, or rows per strip
    tile_width: int  # columns per tile (image width for strips)
    is_tiled: bool
    planes: int  # separately stored sample planes (PlanarConfiguration 2), else 1
    channels_per_plane: int  # output channels each plane yields (after palette expansion)
    channel_offset: int  # first output channel this page fills
    offsets: NDArray[np.int64]
    bytecounts: NDArray[np.int64]
    decode: Callable[..., Any]
    jpegtables: bytes | None
    convert: Converter
    compression: str
    dtype: str
    memmap: tuple[int, str, tuple[int, ...]] | None = None  # (offset, dtype, (planes, H, W, S))
    compression_code: int = 1
    predictor: int = 1
    raw_dtype: str = "|u1"  # stored dtype with byte order
    samples: int = 1  # contiguous samples per pixel in a segment

    @property
    def grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of tiles or strips."""
        return (
            math.ceil(self.height / self.tile_height),
            math.ceil(self.width / self.tile_width),
        )

    @property
    def channels(self) -> int:
        return self.planes * self.channels_per_plane


@dataclass(eq=False)
class LevelPlan:
    """One pyramid level: its shape, its downsample from level 0 and the pages that fill it."""

    height: int
    width: int
    downsample: int
    pages: list[PagePlan] = field(default_factory=list)


def plan_levels(
    tif: tifffile.TiffFile, path: str
) -> tuple[tifffile.TiffPageSeries, list[LevelPlan]]:
    """Pick the image series (the largest) and plan each of its pyramid levels."""
    candidates = [s for s in tif.series if s.shape and len(s.pages) > 0]
    if not candidates:
        raise EmptyImageError(f"{path}: the TIFF holds no image")
    series = max(candidates, key=_series_area)
    plans: list[LevelPlan] = []
    base_hw: tuple[int, int] | None = None
    for number, level in enumerate(series.levels):
        try:
            plan = _plan_level(level, path, number)
        except (EmptyImageError, UnsupportedCodecError, UnsupportedLayoutError):
            if number == 0:
                raise
            continue  # an unreadable reduced level is skipped; level 0 stays the truth
        if base_hw is None:
            base_hw = (plan.height, plan.width)
            plans.append(plan)
            continue
        factor = _downsample(base_hw, (plan.height, plan.width))
        if factor is None or any(factor == p.downsample for p in plans):
            continue
        plan.downsample = factor
        plans.append(plan)
    plans.sort(key=lambda p: p.downsample)
    _set_float_scale(plans)
    return series, plans


def _set_float_scale(plans: list[LevelPlan]) -> None:
    """Choose the full scale of float samples once per slide: 1.0 or 255.0.

    Float TIFFs come both as [0, 1] intensities and as 0-255 values. The smallest level's first
    tiles decide: a maximum <= 1 means [0, 1]; otherwise values are taken as 0-255. The choice is
    made once at open, so every tile of the slide is converted alike.
    """
    smallest = plans[-1]
    if np.dtype(smallest.pages[0].dtype).kind != "f":
        return
    peak = 0.0
    for page in smallest.pages:
        rows, cols = page.grid
        for segment in range(min(page.planes * rows * cols, 16)):
            count = int(page.bytecounts[segment])
            if not count:
                continue
            with open(page.path, "rb") as fh:
                fh.seek(int(page.offsets[segment]))
                data = fh.read(count)
            try:
                decoded = page.decode(data, segment, jpegtables=page.jpegtables)[0]
            except Exception:
                continue
            peak = max(peak, float(np.nanmax(decoded)) if decoded.size else 0.0)
    scale = 1.0 if peak <= 1.0 else 255.0
    for plan in plans:
        for page in plan.pages:
            page.convert = _float_converter(scale, page.convert)


def _float_converter(full: float, then: Converter) -> Converter:
    def convert(a: NDArray[Any]) -> NDArray[np.uint8]:
        return then(a * (1.0 / full) if full != 1.0 else a)

    return convert


def _series_area(series: tifffile.TiffPageSeries) -> int:
    axes, shape = series.axes, series.shape
    height = shape[axes.index("Y")] if "Y" in axes else 0
    width = shape[axes.index("X")] if "X" in axes else 0
    return int(height) * int(width)


def _downsample(base: tuple[int, int], level: tuple[int, int]) -> int | None:
    """The integer downsample of a level, or None when it is not (close to) an integer."""
    if level[0] <= 0 or level[1] <= 0:
        return None
    ratio = base[1] / level[1]
    factor = round(ratio)
    if factor < 2 or abs(ratio - factor) > 0.02 * factor:
        return None
    # floor or ceil halving both allowed: the level must cover base / factor to within a pixel
    if abs(level[0] - base[0] / factor) > 1.0 + 0.01 * level[0]:
        return None
    return factor


def _plan_level(level: tifffile.TiffPageSeries, path: str, number: int) -> LevelPlan:
    axes = level.get_axes(False)
    shape = level.get_shape(False)
    pages = list(level.pages)
    if not pages or pages[0] is None:
        raise EmptyImageError(f"{path}: level {number} has no pages")
    # The leading axes enumerate pages; find the longest prefix whose product is the page count.
    lead = 0
    for k in range(len(axes) + 1):
        if any(a in "YX" for a in axes[:k]):
            break
        if math.prod(shape[:k]) == len(pages):
            lead = k
    lead_axes, lead_shape = axes[:lead], shape[:lead]
    channel_axes = [i for i, a in enumerate(lead_axes) if a in "CS"]
    channel_axis = channel_axes[0] if channel_axes else None
    n_channel_pages = lead_shape[channel_axis] if channel_axis is not None else 1
    page_plans: list[PagePlan] = []
    channel = 0
    for c in range(n_channel_pages):
        index = [0] * lead
        if channel_axis is not None:
            index[channel_axis] = c
        flat = int(np.ravel_multi_index(index, lead_shape)) if lead else 0
        page = pages[flat]
        if page is None:
            raise CorruptSlideError(f"{path}: level {number} is missing page {flat}")
        plan = _plan_page(page, path, number, channel)
        if page_plans and (plan.height, plan.width) != (page_plans[0].height, page_plans[0].width):
            raise UnsupportedLayoutError(
                f"{path}: level {number} mixes page sizes {page_plans[0].height}x"
                f"{page_plans[0].width} and {plan.height}x{plan.width}"
            )
        channel += plan.channels
        page_plans.append(plan)
    first = page_plans[0]
    return LevelPlan(height=first.height, width=first.width, downsample=1, pages=page_plans)


def _plan_page(page: Any, path: str, level: int, channel_offset: int) -> PagePlan:
    keyframe = page.keyframe if hasattr(page, "keyframe") and page.keyframe is not None else page
    sep, depth, height, width, contig = keyframe.shaped
    where = f"{path}: level {level}, page {page.index}"
    if 0 in (sep, depth, height, width, contig):
        raise EmptyImageError(f"{where}: image has a zero-size dimension (shape {keyframe.shaped})")
    if depth != 1:
        raise UnsupportedLayoutError(
            f"{where}: volumetric pages (ImageDepth={depth}) are not supported"
        )
    compression = int(keyframe.compression)
    codec = _codec_name(compression)
    if compression in _UNSUPPORTED_COMPRESSION:
        raise UnsupportedCodecError(f"{where}: {_UNSUPPORTED_COMPRESSION[compression]}")
    if compression != 1:
        try:
            tifffile.TIFF.DECOMPRESSORS[compression]
        except KeyError as err:
            raise UnsupportedCodecError(
                f"{where}: compression {codec} cannot be decoded by imagecodecs "
                f"{_imagecodecs_version()}; re-encode the file with a standard codec "
                "(JPEG, Deflate, LZW, Zstd)"
            ) from err
    if keyframe.dtype is None or keyframe.sampleformat in (5, 6):
        raise UnsupportedLayoutError(
            f"{where}: sample format {int(keyframe.sampleformat)} with "
            f"{keyframe.bitspersample} bits per sample is not supported"
        )
    if keyframe.is_subsampled and (compression not in _JPEG_COMPRESSIONS or sep > 1):
        raise UnsupportedLayoutError(
            f"{where}: chroma-subsampled YCbCr without JPEG compression is not supported; "
            "convert it to RGB first"
        )
    if keyframe.is_tiled:
        tile_h, tile_w = int(keyframe.tilelength), int(keyframe.tilewidth)
    else:
        tile_h, tile_w = min(int(keyframe.rowsperstrip), int(height)), int(width)
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    bytecounts = np.asarray(page.databytecounts, dtype=np.int64)
    expected = sep * math.ceil(height / tile_h) * math.ceil(width / tile_w)
    if offsets.size < expected or bytecounts.size < expected:
        raise CorruptSlideError(
            f"{where}: {offsets.size} tile offsets for {expected} tiles; the file is damaged"
        )
    filesize = os.path.getsize(path)
    end = offsets[:expected] + bytecounts[:expected]
    if expected and int(end.max()) > filesize:
        bad = int(np.argmax(end > filesize))
        raise CorruptSlideError(
            f"{where}: tile {bad} ends at byte {int(end[bad])}, past the end of the file "
            f"({filesize} bytes); the file is truncated"
        )
    convert, per_plane = _converter(keyframe)
    memmap = None
    if (
        compression == 1
        and keyframe.is_contiguous
        and keyframe.fillorder == 1
        and keyframe.predictor == 1
        and keyframe.bitspersample in (8, 16, 32, 64)
        and int(bytecounts[: max(expected, 1)].sum()) >= keyframe.nbytes
    ):
        dtype = np.dtype(page.parent.byteorder + keyframe.dtype.char)
        memmap = (int(offsets[0]), dtype.str, (int(sep), int(height), int(width), int(contig)))
    return PagePlan(
        path=path,
        index=int(page.index),
        height=int(height),
        width=int(width),
        tile_height=tile_h,
        tile_width=tile_w,
        is_tiled=bool(keyframe.is_tiled),
        planes=int(sep),
        channels_per_plane=per_plane,
        channel_offset=channel_offset,
        offsets=offsets,
        bytecounts=bytecounts,
        decode=keyframe.decode,
        jpegtables=keyframe.jpegtables,
        convert=convert,
        compression=codec,
        dtype=str(keyframe.dtype),
        memmap=memmap,
        compression_code=compression,
        predictor=int(keyframe.predictor),
        raw_dtype=np.dtype(page.parent.byteorder + keyframe.dtype.char).str,
        samples=int(contig),
    )


def _codec_name(compression: int) -> str:
    try:
        return f"{tifffile.COMPRESSION(compression).name} ({compression})"
    except ValueError:
        return f"unknown ({compression})"


def _imagecodecs_version() -> str:
    try:
        import imagecodecs

        return str(imagecodecs.__version__)
    except ImportError:  # pragma: no cover - a core dependency
        return "(not installed)"


# --------------------------------------------------------------------------------------------
# Sample conversion to uint8
# --------------------------------------------------------------------------------------------


def _converter(page: Any) -> tuple[Converter, int]:
    """The function mapping a decoded (h, w, s) segment to uint8, and its channel count."""
    dtype = np.dtype(page.dtype)
    samples = int(page.shaped[4])
    bits = page.bitspersample
    bits = int(bits[0]) if isinstance(bits, tuple) else int(bits)
    photometric = int(page.photometric)
    scale: Converter
    if dtype == np.bool_:

        def scale(a: NDArray[Any]) -> NDArray[np.uint8]:
            return a.view(np.uint8) * np.uint8(255)
    elif dtype == np.uint8 and bits == 8:

        def scale(a: NDArray[Any]) -> NDArray[np.uint8]:
            return a if a.dtype == np.uint8 else a.astype(np.uint8)
    elif dtype.kind in "ui":
        nbits = min(bits, dtype.itemsize * 8)
        full = float(2**nbits - 1)
        shift = 2 ** (nbits - 1) if dtype.kind == "i" else 0

        def scale(a: NDArray[Any]) -> NDArray[np.uint8]:
            v = a.astype(np.float64)
            if shift:
                v += shift
            np.multiply(v, 255.0 / full, out=v)
            np.clip(v, 0.0, 255.0, out=v)
            return np.rint(v).astype(np.uint8)
    elif dtype.kind == "f":

        def scale(a: NDArray[Any]) -> NDArray[np.uint8]:
            v = np.nan_to_num(a.astype(np.float64), nan=0.0)
            np.clip(v, 0.0, 1.0, out=v)
            return np.rint(v * 255.0).astype(np.uint8)
    else:  # pragma: no cover - rejected earlier by dtype checks
        raise UnsupportedLayoutError(f"samples of dtype {dtype} are not supported")

    if photometric == 3 and page.colormap is not None and samples == 1:  # palette
        cmap = np.asarray(page.colormap)
        lut = np.rint(cmap.T.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        if cmap.max() <= 255:  # some writers store 8-bit colour maps
            lut = cmap.T.astype(np.uint8)
        lut = np.ascontiguousarray(lut)

        def palette(a: NDArray[Any]) -> NDArray[np.uint8]:
            idx = np.clip(a[..., 0].astype(np.intp), 0, lut.shape[0] - 1)
            return lut[idx]

        return palette, 3
    if photometric == 0:  # MinIsWhite: invert so that 255 is white

        def invert(a: NDArray[Any]) -> NDArray[np.uint8]:
            return np.uint8(255) - scale(a)

        return invert, samples
    return scale, samples


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------

_MPP_RE = re.compile(r"MPP\s*=\s*([0-9.eE+-]+)")
_OME_SIZE_RE = re.compile(r'PhysicalSizeX="([0-9.eE+-]+)"(?:[^>]*PhysicalSizeXUnit="([^"]+)")?')
_UNIT_TO_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def resolution_mpp(tif: tifffile.TiffFile, page: Any) -> float | None:
    """Microns per level-0 pixel, from SVS, OME or resolution tags; ``None`` when unknown."""
    description = str(getattr(page, "description", "") or "")
    match = _MPP_RE.search(description)
    if match:
        return _plausible(float(match.group(1)))
    ome = tif.ome_metadata if tif.is_ome else None
    if ome:
        match = _OME_SIZE_RE.search(ome)
        if match:
            unit = _UNIT_TO_UM.get(match.group(2) or "µm")
            if unit is not None:
                return _plausible(float(match.group(1)) * unit)
    try:
        unit = int(page.tags.valueof(296, 2))  # ResolutionUnit, default inch
        xres = page.tags.valueof(282)
    except Exception:
        return None
    if xres is None or unit not in (2, 3):
        return None
    num, den = xres if isinstance(xres, tuple) else (xres, 1)
    if not num or not den:
        return None
    per_unit = num / den  # pixels per inch or per cm
    return _plausible((25400.0 if unit == 2 else 10000.0) / per_unit)


def _plausible(mpp: float) -> float | None:
    return mpp if 0.01 <= mpp <= 100.0 else None


def decode_lenient(page: PagePlan, data: bytes, rows: int, cols: int) -> NDArray[Any] | None:
    """Decode a Deflate segment whose stream holds more bytes than the segment needs.

    libtiff reads only the bytes a strip needs and ignores trailing data (GDAL writes such
    files); tifffile refuses them. Returns the ``(rows, cols, samples)`` segment, or ``None``
    when this recovery does not apply.
    """
    if page.compression_code not in (8, 32946) or page.predictor != 1:
        return None
    dtype = np.dtype(page.raw_dtype)
    if dtype.kind not in "uif":
        return None
    need = rows * cols * page.samples * dtype.itemsize
    try:
        raw = zlib.decompressobj().decompress(data, need)
    except zlib.error:
        return None
    if len(raw) < need:
        return None
    return np.frombuffer(raw, dtype).reshape(rows, cols, page.samples)
