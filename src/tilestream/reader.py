"""`Slide`: lazy, thread-safe reads of any region of a TIFF slide, at any reduce factor.

tifffile parses the file once; after that a read touches only the tiles or strips under the
box: their bytes are read with ``os.pread`` (no shared file offset, so threads and forked
workers never see each other's bytes), decoded by the page's imagecodecs decoder, converted to
uint8 and kept in a bounded LRU. Uncompressed contiguous images are memory-mapped instead.
"""

from __future__ import annotations

import math
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import tifffile
from numpy.typing import NDArray

from ._cache import ChunkCache
from ._resample import area_downsample
from ._tifflayout import (
    LevelPlan,
    PagePlan,
    check_ifd_chain,
    decode_lenient,
    plan_levels,
    resolution_mpp,
)
from .errors import (
    BoxError,
    CorruptSlideError,
    CorruptTileError,
    DecompressionBombError,
    NotATiffError,
    SlideNotFoundError,
    TilestreamError,
)
from .geometry import Box, check_reduce_factor

if TYPE_CHECKING:
    import dask.array

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_FILL", "Level", "Slide"]

#: Default decompression-bomb guard: level-0 height x width above this is refused.
DEFAULT_MAX_PIXELS = 2**35
#: Value of image pixels outside the slide (white, like empty glass).
IMAGE_FILL = 255
_THUMBNAIL_BAND_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Level:
    """One pyramid level of a slide.

    Attributes
    ----------
    shape : (int, int)
        ``(height, width)`` in the level's own pixels.
    downsample : int
        Level-0 pixels per level pixel along each axis.
    tile : (int, int)
        ``(rows, cols)`` of a stored tile, or ``(rows per strip, width)`` for stripped pages.
    is_tiled : bool
        Tiled (True) or stripped (False) storage.
    compression : str
        Codec name and TIFF code, e.g. ``"JPEG (7)"``.
    is_memmapped : bool
        Uncompressed contiguous data read through a memory map.
    """

    shape: tuple[int, int]
    downsample: int
    tile: tuple[int, int]
    is_tiled: bool
    compression: str
    is_memmapped: bool


class _TilePiece(NamedTuple):
    """Part of one stored tile inside a read (see :meth:`Slide._tile_pieces`): channels
    ``[c0, c1)``, rows ``[y0, y1)`` and columns ``[x0, x1)`` of the read come from the tile
    ``key`` = (level, page number in the level, plane, tile row, tile column), starting at
    its row ``ty0`` and column ``tx0``."""

    key: tuple[int, int, int, int, int]
    c0: int
    c1: int
    y0: int
    y1: int
    x0: int
    x1: int
    ty0: int
    tx0: int


def _tile_spans(
    page: PagePlan, box: Box
) -> Iterator[tuple[int, int, int, int, int, int, int, int, int]]:
    """``(plane, row, col, y0, y1, x0, x1, ty, tx)`` for every stored tile of ``page`` under
    ``box`` (level pixels, inside the level), planes outermost then row-major: tile ``(row,
    col)`` of ``plane`` starts at ``(ty, tx)`` and covers rows ``[y0, y1)`` and columns
    ``[x0, x1)`` of the box."""
    th, tw = page.tile_height, page.tile_width
    for plane in range(page.planes):
        for r in range(box.y // th, (box.bottom - 1) // th + 1):
            ty = r * th
            y0, y1 = max(box.y, ty), min(box.bottom, ty + th)
            for c in range(box.x // tw, (box.right - 1) // tw + 1):
                tx = c * tw
                x0, x1 = max(box.x, tx), min(box.right, tx + tw)
                yield plane, r, c, y0, y1, x0, x1, ty, tx


class Slide:
    """A TIFF slide read lazily as an ``(H, W, C)`` uint8 image with pyramid levels.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF, BigTIFF, OME-TIFF, SVS or other TIFF-based file.
    max_pixels : int
        Refuse images whose level 0 has more than this many pixels (decompression-bomb guard).
    cache_bytes : int, optional
        Budget of a private LRU of decoded tiles for this slide, in bytes (0 disables
        caching). By default the slide uses the process-wide cache
        (:meth:`ChunkCache.shared`, 256 MiB shared by every slide of the process).

    Notes
    -----
    The metadata is parsed when the slide is opened; pixel data is read on demand. The file
    descriptor opens on first read, in the process that reads, and is reopened transparently
    when the process id changes (forked DataLoader workers), so a slide opened in the parent is
    safe to use in children. A slide pickles by path and options (spawned workers, dask tasks).
    Reads are thread-safe. Close with :meth:`close` or a ``with`` block; a closed slide reopens
    on the next read.

    Layouts: the largest series of the file is the image; ``(H, W, S)``, ``(S, H, W)``
    (planar separate), channels spread over pages (``(C, H, W)``, ``(1, 1, C, H, W)``), grey,
    grey+alpha, RGB, RGBA and palette images; extra axes (time, Z) are read at index 0. Pyramid
    levels come from SubIFDs, reduced pages or SVS levels; a level is used when its downsample
    from level 0 is an integer. Samples are converted to uint8 as documented in
    :doc:`/conventions`.

    Examples
    --------
    >>> import tilestream as ts, numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.tif")
    >>> tifffile.imwrite(path, np.full((64, 96, 3), 7, np.uint8), tile=(32, 32))
    >>> with ts.Slide.open(path) as slide:
    ...     slide.shape, slide.channels, slide.read(ts.Box(-8, 0, 16, 16), reduce=2)[:, :, 0]
    ((64, 96), 3, array([[255, 255, 255, 255, 255, 255, 255, 255],
           [255, 255, 255, 255, 255, 255, 255, 255],
           [255, 255, 255, 255, 255, 255, 255, 255],
           [255, 255, 255, 255, 255, 255, 255, 255],
           [  7,   7,   7,   7,   7,   7,   7,   7],
           [  7,   7,   7,   7,   7,   7,   7,   7],
           [  7,   7,   7,   7,   7,   7,   7,   7],
           [  7,   7,   7,   7,   7,   7,   7,   7]], dtype=uint8))
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cache_bytes: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.max_pixels = int(max_pixels)
        self.cache_bytes = None if cache_bytes is None else int(cache_bytes)
        if self.cache_bytes is not None and self.cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        self._parse()
        self._reset_process_state()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cache_bytes: int | None = None,
    ) -> Slide:
        """Open ``path`` (parses the metadata now, reads pixels later). See :class:`Slide`.

        Raises
        ------
        SlideNotFoundError
            The path does not exist or is not a file.
        NotATiffError
            The file is not a TIFF.
        CorruptSlideError
            IFD loop, truncated file, tile offsets past the end of the file.
        EmptyImageError
            An image dimension is zero.
        UnsupportedCodecError, UnsupportedLayoutError
            The pixel data cannot be decoded as an (H, W, C) image.
        DecompressionBombError
            Level 0 has more than ``max_pixels`` pixels.
        """
        return cls(path, max_pixels=max_pixels, cache_bytes=cache_bytes)

    # ---------------------------------------------------------------------------------------
    # Parsing and process-local state
    # ---------------------------------------------------------------------------------------

    def _parse(self) -> None:
        path = self.path
        if not os.path.exists(path):
            raise SlideNotFoundError(f"{path}: no such file")
        if not os.path.isfile(path):
            raise SlideNotFoundError(f"{path}: not a regular file")
        stat = os.stat(path)
        self._file_size = stat.st_size
        # Keys of this file in a shared cache: a rewritten file gets new keys.
        self._identity = (path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._file_size < 8:
            raise NotATiffError(f"{path}: not a TIFF file ({self._file_size} bytes)")
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic[:2] not in (b"II", b"MM"):
            raise NotATiffError(
                f"{path}: not a TIFF file (header {magic!r}; a TIFF starts with b'II' or b'MM')"
            )
        check_ifd_chain(path)
        try:
            with tifffile.TiffFile(path) as tif:
                series, plans = plan_levels(tif, path)
                first = plans[0].pages[0]
                page0 = tif.pages[first.index]
                self._mpp = resolution_mpp(tif, page0)
                self._format: dict[str, Any] = {
                    "bigtiff": bool(tif.is_bigtiff),
                    "byteorder": "little" if tif.byteorder == "<" else "big",
                    "kind": str(series.kind),
                    "series": len(tif.series),
                    "series_shape": tuple(int(v) for v in series.shape),
                    "series_axes": str(series.axes),
                    "pages": len(tif.pages),
                }
        except TilestreamError:
            raise
        except tifffile.TiffFileError as err:
            if "not a TIFF" in str(err) or "not a valid TIFF" in str(err):
                raise NotATiffError(f"{path}: not a TIFF file ({err})") from err
            raise CorruptSlideError(f"{path}: damaged TIFF structure: {err}") from err
        except (ValueError, KeyError, IndexError, struct.error) as err:
            raise CorruptSlideError(f"{path}: damaged TIFF structure: {err}") from err
        self._plans: list[LevelPlan] = plans
        base = plans[0]
        if base.height * base.width > self.max_pixels:
            raise DecompressionBombError(
                f"{path}: level 0 is {base.height}x{base.width} = {base.height * base.width} "
                f"pixels, over max_pixels={self.max_pixels}; pass a larger max_pixels to "
                "Slide.open if the file is trusted"
            )
        self._channels = sum(p.channels for p in base.pages)
        self._source_dtype = base.pages[0].dtype

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._fd: int | None = None
        self._memmaps: dict[tuple[int, int], NDArray[Any]] = {}
        self._lock = threading.Lock()
        self._cache = (
            ChunkCache.shared() if self.cache_bytes is None else ChunkCache(self.cache_bytes)
        )
        self._scratch = threading.local()

    def _ensure_process(self) -> None:
        if self._pid != os.getpid():
            # Forked: nothing opened by the parent (fd, maps, locks) is used in this process.
            self._reset_process_state()

    def _file(self) -> int:
        self._ensure_process()
        fd = self._fd
        if fd is None:
            with self._lock:
                if self._fd is None:
                    try:
                        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                    except FileNotFoundError as err:
                        raise SlideNotFoundError(f"{self.path}: no such file (removed?)") from err
                fd = self._fd
        return fd

    def close(self) -> None:
        """Release the file descriptor, memory maps and cached tiles (reopens on next read)."""
        if self._pid == os.getpid():
            with self._lock:
                if self._fd is not None:
                    os.close(self._fd)
                self._fd = None
                self._memmaps.clear()
            if self.cache_bytes is None:
                self._cache.discard(self._identity)
            else:
                self._cache.clear()
        else:
            self._reset_process_state()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
                os.close(self._fd)  # type: ignore[arg-type]
        except OSError:  # pragma: no cover - interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "max_pixels": self.max_pixels, "cache_bytes": self.cache_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.max_pixels = state["max_pixels"]
        self.cache_bytes = state["cache_bytes"]
        self._parse()
        self._reset_process_state()

    def __repr__(self) -> str:
        h, w = self.shape
        return (
            f"Slide({self.path!r}, shape=({h}, {w}), channels={self._channels}, "
            f"levels={[lvl.downsample for lvl in self.levels]})"
        )

    # ---------------------------------------------------------------------------------------
    # Properties
    # ---------------------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of level 0, in pixels."""
        return (self._plans[0].height, self._plans[0].width)

    @property
    def channels(self) -> int:
        """Channels of every read: 1 grey, 2 grey+alpha, 3 RGB (also palette), 4 RGBA."""
        return self._channels

    @property
    def dtype(self) -> np.dtype[np.uint8]:
        """dtype of every read: always uint8 (see :attr:`source_dtype`)."""
        return np.dtype(np.uint8)

    @property
    def source_dtype(self) -> str:
        """dtype of the samples as stored in the file (converted to uint8 on read)."""
        return self._source_dtype

    @property
    def levels(self) -> tuple[Level, ...]:
        """Pyramid levels, level 0 first, by increasing downsample."""
        out = []
        for plan in self._plans:
            page = plan.pages[0]
            out.append(
                Level(
                    shape=(plan.height, plan.width),
                    downsample=plan.downsample,
                    tile=(page.tile_height, page.tile_width),
                    is_tiled=page.is_tiled,
                    compression=page.compression,
                    is_memmapped=page.memmap is not None,
                )
            )
        return tuple(out)

    @property
    def mpp(self) -> float | None:
        """Microns per level-0 pixel when the file says (SVS, OME, resolution tags)."""
        return self._mpp

    @property
    def cache(self) -> ChunkCache:
        """The decoded-tile cache this slide uses in this process (``hits``, ``misses``, ``nbytes``)."""
        self._ensure_process()
        return self._cache

    def info(self) -> dict[str, Any]:
        """A JSON-friendly description: layout, levels, tiling, codec, sizes, mpp."""
        return {
            "path": self.path,
            "file_bytes": self._file_size,
            "format": "BigTIFF" if self._format["bigtiff"] else "TIFF",
            "byteorder": self._format["byteorder"],
            "kind": self._format["kind"],
            "series": self._format["series"],
            "pages": self._format["pages"],
            "layout": {
                "axes": self._format["series_axes"],
                "shape": [int(v) for v in self._format["series_shape"]],
            },
            "shape": list(self.shape),
            "channels": self.channels,
            "source_dtype": self.source_dtype,
            "mpp": self.mpp,
            "levels": [
                {
                    "shape": list(lvl.shape),
                    "downsample": lvl.downsample,
                    "tile": list(lvl.tile),
                    "storage": "tiled" if lvl.is_tiled else "stripped",
                    "compression": lvl.compression,
                    "memmapped": lvl.is_memmapped,
                }
                for lvl in self.levels
            ],
        }

    # ---------------------------------------------------------------------------------------
    # Reading
    # ---------------------------------------------------------------------------------------

    def level_for(self, reduce: int) -> int:
        """Index of the level a read at ``reduce`` uses: the largest downsample dividing it."""
        check_reduce_factor(reduce)
        best = 0
        for i, plan in enumerate(self._plans):
            if reduce % plan.downsample == 0:
                best = i
        return best

    def read(
        self, box: Box, reduce: int = 1, *, out: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """Read ``box`` (level-0 pixels) at ``1/reduce`` scale.

        Parameters
        ----------
        box : Box
            Level-0 half-open box; ``y``, ``x``, ``height``, ``width`` multiples of ``reduce``.
            It may extend past the slide: the outside is filled with :data:`IMAGE_FILL` (white)
            before reducing.
        reduce : int
            Integer reduce factor. The read uses the largest pyramid level whose downsample
            divides ``reduce`` and area-averages the rest (means rounded half up).
        out : (height/reduce, width/reduce, C) uint8 array, optional
            Written in full and returned (no allocation).

        Returns
        -------
        (height/reduce, width/reduce, C) uint8 array

        Raises
        ------
        BoxError
            ``box`` is not aligned to ``reduce``.
        CorruptTileError
            A tile under the box fails to decode (the message names level and tile).
        """
        if not isinstance(box, Box):
            raise BoxError(f"box must be a tilestream.Box, got {type(box).__name__}")
        box.check_reduce(reduce)
        shape = (box.height // reduce, box.width // reduce, self._channels)
        if out is None:
            out = _aligned_empty(shape)
        elif out.shape != shape or out.dtype != np.uint8:
            raise ValueError(
                f"out must be a uint8 array of shape {shape}, got {out.dtype} {out.shape}"
            )
        self._read_into(box, reduce, out, use_cache=True)
        return out

    def _scratch_buffer(self, shape: tuple[int, int, int]) -> NDArray[np.uint8]:
        # Reused per thread: fresh memory is slow on these machines (PERF-NOTES).
        self._ensure_process()
        need = math.prod(shape)
        buf = getattr(self._scratch, "buf", None)
        if buf is None or buf.size < need:
            buf = _aligned_empty((need,))
            self._scratch.buf = buf
        return buf[:need].reshape(shape)

    def _read_level(
        self, level: int, lbox: Box, out: NDArray[np.uint8], *, use_cache: bool
    ) -> None:
        plan = self._plans[level]
        inside = lbox.clip((plan.height, plan.width))
        if inside is None:
            out.fill(IMAGE_FILL)
            return
        if inside != lbox:
            out.fill(IMAGE_FILL)
        oy, ox = inside.y - lbox.y, inside.x - lbox.x
        for page in plan.pages:
            dst = out[
                oy : oy + inside.height,
                ox : ox + inside.width,
                page.channel_offset : page.channel_offset + page.channels,
            ]
            if page.memmap is not None:
                self._read_memmap(level, page, inside, dst)
            else:
                self._read_tiles(level, page, inside, dst, use_cache=use_cache)

    def _read_memmap(self, level: int, page: PagePlan, box: Box, dst: NDArray[np.uint8]) -> None:
        self._ensure_process()
        key = (level, page.index)
        mm = self._memmaps.get(key)
        if mm is None:
            assert page.memmap is not None
            offset, dtype, shape = page.memmap
            mm = np.memmap(self.path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
            self._memmaps[key] = mm
        region = mm[:, box.y : box.bottom, box.x : box.right, :]
        if page.planes == 1:
            src = region[0]
        else:
            src = region.transpose(1, 2, 0, 3).reshape(box.height, box.width, -1)
        dst[...] = page.convert(src)

    def _read_tiles(
        self, level: int, page: PagePlan, box: Box, dst: NDArray[np.uint8], *, use_cache: bool
    ) -> None:
        cpp = page.channels_per_plane
        for plane, r, c, y0, y1, x0, x1, ty, tx in _tile_spans(page, box):
            chunk = self._chunk(level, page, plane, r, c, use_cache=use_cache)
            dst[
                y0 - box.y : y1 - box.y,
                x0 - box.x : x1 - box.x,
                plane * cpp : (plane + 1) * cpp,
            ] = chunk[y0 - ty : y1 - ty, x0 - tx : x1 - tx]

    def _tile_pieces(self, box: Box, reduce: int) -> tuple[list[_TilePiece], bool] | None:
        """The stored tiles under ``box`` at ``1/reduce`` and where each lands in the read.

        For every piece ``p``, ``read(box, reduce)[p.y0:p.y1, p.x0:p.x1, p.c0:p.c1]`` equals
        ``_decode_tile(p.key)[p.ty0:p.ty0 + p.y1 - p.y0, p.tx0:p.tx0 + p.x1 - p.x0]``; the
        pieces do not overlap, and the rest of the read (outside the slide, present when the
        flag returned is True) is :data:`IMAGE_FILL`. Lets a caller convert the pieces of
        decoded tiles straight into its own buffer (``predict_slide``'s float batch) with its
        own tile cache. ``None`` when the read is not a copy of stored tiles: ``reduce`` is not
        the downsample of a level (the read resamples) or the level is memory-mapped.
        """
        box.check_reduce(reduce)
        level = self.level_for(reduce)
        plan = self._plans[level]
        if plan.downsample != reduce or any(p.memmap is not None for p in plan.pages):
            return None
        lbox = Box._trusted(
            box.y // reduce, box.x // reduce, box.height // reduce, box.width // reduce
        )
        inside = lbox.clip((plan.height, plan.width))
        if inside is None:
            return [], True
        pieces = []
        for number, page in enumerate(plan.pages):
            cpp = page.channels_per_plane
            for plane, r, c, y0, y1, x0, x1, ty, tx in _tile_spans(page, inside):
                c0 = page.channel_offset + plane * cpp
                pieces.append(
                    _TilePiece(
                        (level, number, plane, r, c),
                        c0,
                        c0 + cpp,
                        y0 - lbox.y,
                        y1 - lbox.y,
                        x0 - lbox.x,
                        x1 - lbox.x,
                        y0 - ty,
                        x0 - tx,
                    )
                )
        return pieces, inside != lbox

    def _decode_tile(self, key: tuple[int, int, int, int, int]) -> NDArray[np.uint8]:
        """The stored tile ``key`` of :meth:`_tile_pieces` as ``(rows, cols, channels)`` uint8
        (the rows and columns may extend past the level's edge), decoded now, not cached.

        Raises
        ------
        CorruptTileError
            The tile fails to decode (the message names level and tile).
        """
        level, number, plane, row, col = key
        return self._chunk(
            level, self._plans[level].pages[number], plane, row, col, use_cache=False
        )

    def _chunk(
        self, level: int, page: PagePlan, plane: int, row: int, col: int, *, use_cache: bool
    ) -> NDArray[np.uint8]:
        self._ensure_process()  # a forked child never uses the parent's cache or descriptor
        key = (self._identity, level, page.index, plane, row, col)
        if use_cache:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        fd = self._file()
        rows, cols = page.grid
        segment = (plane * rows + row) * cols + col
        th = min(page.tile_height, page.height - row * page.tile_height)
        tw = min(page.tile_width, page.width - col * page.tile_width)

        def where() -> str:  # only built for an error message
            return (
                f"{self.path}: level {level}, tile (row {row}, col {col})"
                + (f", plane {plane}" if page.planes > 1 else "")
                + f" [{page.compression}]"
            )

        offset, count = int(page.offsets[segment]), int(page.bytecounts[segment])
        if count == 0 or offset == 0:
            chunk = np.full((th, tw, page.channels_per_plane), IMAGE_FILL, np.uint8)
        else:
            data = os.pread(fd, count, offset)
            if len(data) < count:
                raise CorruptTileError(
                    f"{where()}: {len(data)} of {count} bytes at offset {offset}; truncated file"
                )
            try:
                decoded = page.decode(data, segment, jpegtables=page.jpegtables)[0][0]
            except Exception as err:
                rows_stored = page.tile_height if page.is_tiled else th  # last strip is short
                decoded = decode_lenient(page, data, rows_stored, page.tile_width)
                if decoded is None:
                    raise CorruptTileError(f"{where()}: failed to decode: {err}") from err
            try:
                chunk = page.convert(decoded)
            except Exception as err:
                raise CorruptTileError(f"{where()}: failed to convert samples: {err}") from err
            if chunk.shape[0] < th or chunk.shape[1] < tw:
                raise CorruptTileError(
                    f"{where()}: decoded {chunk.shape[0]}x{chunk.shape[1]} pixels, "
                    f"expected at least {th}x{tw}"
                )
        if use_cache:
            self._cache.put(key, chunk)
        return chunk

    # ---------------------------------------------------------------------------------------
    # Whole-image views
    # ---------------------------------------------------------------------------------------

    def thumbnail(self, reduce: int | None = None, *, max_size: int = 1024) -> NDArray[np.uint8]:
        """The whole slide at ``1/reduce`` scale, built band by band in bounded memory.

        Parameters
        ----------
        reduce : int, optional
            Reduce factor; by default the smallest one whose result fits ``max_size``.
        max_size : int
            Longest side of the result when ``reduce`` is not given.

        Returns
        -------
        (ceil(H/reduce), ceil(W/reduce), C) uint8 array
            The last row/column average padded (white) pixels when H or W is not a multiple
            of ``reduce``.

        Notes
        -----
        Peak memory is the result plus one band of at most ~64 MB at the level read; bands are
        aligned to the stored tiles, so each tile is decoded once and the tile cache is not
        touched.
        """
        h, w = self.shape
        if reduce is None:
            reduce = max(1, math.ceil(max(h, w) / max(1, max_size)))
        check_reduce_factor(reduce)
        oh, ow = -(-h // reduce), -(-w // reduce)
        out = np.empty((oh, ow, self._channels), np.uint8)
        for y, rows in self._bands(reduce, oh, ow):
            box = Box(y * reduce, 0, rows * reduce, ow * reduce)
            self._read_into(box, reduce, out[y : y + rows], use_cache=False)
        return out

    def _bands(self, reduce: int, oh: int, ow: int) -> Iterator[tuple[int, int]]:
        plan = self._plans[self.level_for(reduce)]
        factor = reduce // plan.downsample
        tile_rows = plan.pages[0].tile_height
        step = math.lcm(tile_rows, factor)  # level rows per aligned unit
        unit_bytes = step * ow * factor * self._channels
        units = max(1, _THUMBNAIL_BAND_BYTES // max(1, unit_bytes))
        band = max(1, units * step // factor)  # output rows per band
        for y in range(0, oh, band):
            yield y, min(band, oh - y)

    def _read_into(self, box: Box, reduce: int, out: NDArray[np.uint8], *, use_cache: bool) -> None:
        level = self.level_for(reduce)
        d = self._plans[level].downsample
        factor = reduce // d
        lbox = Box._trusted(box.y // d, box.x // d, box.height // d, box.width // d)
        if factor == 1:
            self._read_level(level, lbox, out, use_cache=use_cache)
            return
        tmp = self._scratch_buffer((lbox.height, lbox.width, self._channels))
        self._read_level(level, lbox, tmp, use_cache=use_cache)
        area_downsample(tmp, factor, out)

    def to_dask(self, reduce: int = 1, *, chunk: int = 2048) -> dask.array.Array:
        """A lazy dask array of the whole slide at ``1/reduce`` scale.

        Shape ``(ceil(H/reduce), ceil(W/reduce), C)``, uint8, chunks of ``chunk`` pixels (at
        the reduced scale) per side. Each block is one :meth:`read`; the graph holds the slide
        by path, so it runs on threads, processes or a dask.distributed cluster.
        """
        import dask.array as da

        check_reduce_factor(reduce)
        view = _SlideArray(self, reduce)
        token = f"tilestream-{abs(hash((self.path, os.path.getmtime(self.path), reduce, chunk)))}"
        array: dask.array.Array = da.from_array(  # type: ignore[no-untyped-call]
            view,
            chunks=(chunk, chunk, self._channels),
            name=token,
            lock=False,
            asarray=False,
            meta=np.empty((0, 0, 0), np.uint8),
        )
        return array


class _SlideArray:
    """An array-like over a slide at a reduce factor, sliced by dask (step 1 slices only)."""

    def __init__(self, slide: Slide, reduce: int) -> None:
        self.slide = slide
        self.reduce = reduce
        h, w = slide.shape
        self.shape = (-(-h // reduce), -(-w // reduce), slide.channels)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, ...]) -> NDArray[np.uint8]:
        ys, xs = key[0], key[1]
        cs = key[2] if len(key) > 2 else slice(None)
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        r = self.reduce
        if y1 <= y0 or x1 <= x0:
            return np.empty((max(0, y1 - y0), max(0, x1 - x0), self.shape[2]), np.uint8)[:, :, cs]
        data = self.slide.read(Box(y0 * r, x0 * r, (y1 - y0) * r, (x1 - x0) * r), r)
        return data[:, :, cs]


def _aligned_empty(shape: tuple[int, ...], align: int = 64) -> NDArray[np.uint8]:
    """An uninitialised uint8 array whose data starts on an ``align``-byte boundary."""
    n = math.prod(shape)
    raw = np.empty(n + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start : start + n].reshape(shape)
