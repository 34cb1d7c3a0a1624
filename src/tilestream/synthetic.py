"""Synthetic H&E/PAS-like whole-slide TIFFs with known content, written in bounded memory.

The slide is a pure function of ``(seed, y, x, reduce)``: a periodic tissue texture (pink
stroma, purple nuclei, pale lumens) modulated by a low-resolution tissue field and a stain
field, over a white background. Any box of any pyramid level is rendered on demand by a numba
kernel, so a 50000 x 50000 slide is written tile by tile without holding it in memory.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tifffile
from numpy.typing import NDArray

from ._jit import njit
from .geometry import Box

__all__ = ["SlideSpec", "make_slide", "render"]

Compression = Literal["jpeg", "deflate", "zstd", "lzw", "none"]

_TEXTURE = 1024  # period of the texture, level-0 px
_FIELD_CELL = 256  # level-0 px per cell of the tissue and stain fields


@dataclass(frozen=True, kw_only=True)
class SlideSpec:
    """What :func:`make_slide` writes.

    Parameters
    ----------
    height, width : int
        Level-0 size in pixels.
    seed : int
        Everything drawn depends only on this.
    tile : int or None
        Tile side (multiple of 16) for tiled storage; ``None`` writes strips.
    rows_per_strip : int
        Rows per strip when ``tile`` is ``None``.
    compression : {"jpeg", "deflate", "zstd", "lzw", "none"}
        Codec of the stored tiles or strips.
    quality : int
        JPEG quality.
    pyramid : bool
        Write reduced levels (downsample 2, 4, ...) as SubIFDs until the level fits in a tile.
    planar : bool
        Store RGB planar-separate (``(3, H, W)``) instead of interleaved.
    tissue_fraction : float
        Approximate share of the slide covered by tissue.
    bigtiff : bool or None
        Force BigTIFF (default: when the data may pass 4 GB).
    """

    height: int
    width: int
    seed: int = 0
    tile: int | None = 512
    rows_per_strip: int = 64
    compression: Compression = "jpeg"
    quality: int = 90
    pyramid: bool = True
    planar: bool = False
    tissue_fraction: float = 0.5
    bigtiff: bool | None = None

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"height and width must be > 0, got {self.height}x{self.width}")
        if self.tile is not None and (self.tile <= 0 or self.tile % 16):
            raise ValueError(f"tile must be a positive multiple of 16, got {self.tile}")
        if self.rows_per_strip <= 0:
            raise ValueError(f"rows_per_strip must be > 0, got {self.rows_per_strip}")
        if not 0.0 < self.tissue_fraction <= 1.0:
            raise ValueError(f"tissue_fraction must be in (0, 1], got {self.tissue_fraction}")
        if self.compression not in ("jpeg", "deflate", "zstd", "lzw", "none"):
            raise ValueError(f"unknown compression {self.compression!r}")


class _Fields:
    """The seeded ingredients of a slide: texture bank, tissue field, stain field."""

    def __init__(self, spec: SlideSpec) -> None:
        rng = np.random.default_rng(spec.seed)
        self.texture = _texture(rng)
        fh = math.ceil(spec.height / _FIELD_CELL) + 2
        fw = math.ceil(spec.width / _FIELD_CELL) + 2
        noise = _smooth_noise(rng, fh, fw, scale=max(2, min(fh, fw) // 6))
        # Threshold at the quantile that gives the requested tissue fraction, keep a soft ramp.
        cut = float(np.quantile(noise, 1.0 - spec.tissue_fraction))
        self.tissue = np.clip((noise - cut) * 8.0 + 0.5, 0.0, 1.0).astype(np.float32)
        stain = _smooth_noise(rng, fh, fw, scale=max(2, min(fh, fw) // 4))
        tint = rng.uniform(0.85, 1.1, size=3).astype(np.float32)
        self.stain = (0.9 + 0.2 * stain[..., None]) * tint[None, None, :]
        self.stain = np.ascontiguousarray(self.stain, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> NDArray[np.float32]:
    """Noise in [0, 1] with features of about ``scale`` cells (sum of upsampled octaves)."""
    out = np.zeros((h, w), np.float64)
    amp, s, total = 1.0, max(1, scale), 0.0
    while s >= 1:
        coarse = rng.random((h // s + 2, w // s + 2))
        up = _bilinear_upsample(coarse, s)[:h, :w]
        out += amp * up
        total += amp
        amp *= 0.5
        s //= 2
    out /= total
    lo, hi = out.min(), out.max()
    result: NDArray[np.float32] = ((out - lo) / max(hi - lo, 1e-9)).astype(np.float32)
    return result


def _bilinear_upsample(a: NDArray[np.float64], s: int) -> NDArray[np.float64]:
    if s == 1:
        return a
    h, w = a.shape
    ys = (np.arange((h - 1) * s) / s)[:, None]
    xs = (np.arange((w - 1) * s) / s)[None, :]
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    result: NDArray[np.float64] = (
        a[y0, x0] * (1 - fy) * (1 - fx)
        + a[y0 + 1, x0] * fy * (1 - fx)
        + a[y0, x0 + 1] * (1 - fy) * fx
        + a[y0 + 1, x0 + 1] * fy * fx
    )
    return result


def _texture(rng: np.random.Generator) -> NDArray[np.uint8]:
    """A periodic _TEXTURE x _TEXTURE RGB tissue patch: stroma, nuclei, lumens."""
    n = _TEXTURE
    base = _smooth_noise(rng, n, n, scale=64)
    fine = _smooth_noise(rng, n, n, scale=4)
    stroma = np.array([236.0, 168.0, 200.0])
    dark = np.array([205.0, 120.0, 170.0])
    t = (0.6 * base + 0.4 * fine)[..., None]
    img = stroma * (1 - t) + dark * t
    yy, xx = np.mgrid[0:n, 0:n]
    # Pale lumens (tubule cavities), then nuclei on top.
    for cy, cx, ry, rx in zip(
        rng.integers(0, n, 40),
        rng.integers(0, n, 40),
        rng.integers(12, 40, 40),
        rng.integers(12, 40, 40),
        strict=True,
    ):
        d = ((yy - cy + n // 2) % n - n // 2) ** 2 / ry**2 + (
            (xx - cx + n // 2) % n - n // 2
        ) ** 2 / rx**2
        img[d < 1.0] = (248.0, 232.0, 240.0)
    nuclei = n * n // 350
    cys, cxs = rng.integers(0, n, nuclei), rng.integers(0, n, nuclei)
    radii = rng.uniform(2.5, 5.5, nuclei)
    shade = rng.uniform(0.75, 1.05, nuclei)
    purple = np.array([95.0, 60.0, 145.0])
    for cy, cx, rad, sh in zip(cys, cxs, radii, shade, strict=True):
        r = math.ceil(rad)
        ys = np.arange(cy - r, cy + r + 1) % n
        xs = np.arange(cx - r, cx + r + 1) % n
        dy = np.arange(-r, r + 1)[:, None]
        dx = np.arange(-r, r + 1)[None, :]
        inside = dy**2 + dx**2 <= rad**2
        patch = img[np.ix_(ys, xs)]
        patch[inside] = purple * sh
        img[np.ix_(ys, xs)] = patch
    img += rng.normal(0.0, 4.0, img.shape)
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))


@njit
def _render_kernel(
    texture: NDArray[np.uint8],
    tissue: NDArray[np.float32],
    stain: NDArray[np.float32],
    y0: int,
    x0: int,
    reduce: int,
    height: int,
    width: int,
    out: NDArray[np.uint8],
) -> None:
    n = texture.shape[0]
    cell = 256.0
    h, w = out.shape[0], out.shape[1]
    half = reduce // 2
    for i in range(h):
        ly = y0 + i * reduce + half
        fy = ly / cell
        iy = int(fy)
        ty = fy - iy
        for j in range(w):
            lx = x0 + j * reduce + half
            if ly < 0 or lx < 0 or ly >= height or lx >= width:
                for k in range(3):
                    out[i, j, k] = 255
                continue
            fx = lx / cell
            ix = int(fx)
            tx = fx - ix
            a = (
                tissue[iy, ix] * (1 - ty) * (1 - tx)
                + tissue[iy + 1, ix] * ty * (1 - tx)
                + tissue[iy, ix + 1] * (1 - ty) * tx
                + tissue[iy + 1, ix + 1] * ty * tx
            )
            # background: near-white glass with faint grain from the texture
            grain = (texture[ly % n, (lx * 7) % n, 1] & 7) - 3.5
            for k in range(3):
                s = (
                    stain[iy, ix, k] * (1 - ty) * (1 - tx)
                    + stain[iy + 1, ix, k] * ty * (1 - tx)
                    + stain[iy, ix + 1, k] * (1 - ty) * tx
                    + stain[iy + 1, ix + 1, k] * ty * tx
                )
                fg = texture[ly % n, lx % n, k] * s
                bg = 242.0 + grain
                v = bg + a * (fg - bg)
                if v < 0.0:
                    v = 0.0
                elif v > 255.0:
                    v = 255.0
                out[i, j, k] = np.uint8(v + 0.5)


def render(spec: SlideSpec, box: Box, reduce: int = 1) -> NDArray[np.uint8]:
    """Render ``box`` (level-0 px, aligned to ``reduce``) of the slide described by ``spec``.

    Reduced levels are point-sampled at block centres, so the pyramid :func:`make_slide`
    writes is ``render(spec, box, reduce)`` for each level. Pixels outside the slide are white.

    Examples
    --------
    >>> spec = SlideSpec(height=600, width=800, seed=1)
    >>> render(spec, Box(0, 0, 64, 64), reduce=2).shape
    (32, 32, 3)
    """
    return _render(spec, box, reduce, _Fields(spec))


def _render(spec: SlideSpec, box: Box, reduce: int, fields: _Fields) -> NDArray[np.uint8]:
    box.check_reduce(reduce)
    out = np.empty((box.height // reduce, box.width // reduce, 3), np.uint8)
    _render_kernel(
        fields.texture,
        fields.tissue,
        fields.stain,
        box.y,
        box.x,
        reduce,
        spec.height,
        spec.width,
        out,
    )
    return out


def make_slide(path: str | os.PathLike[str], spec: SlideSpec) -> str:
    """Write the slide described by ``spec`` to ``path`` (atomically) and return the path.

    Peak memory is a few tiles (tiled) or one strip band (stripped) plus the seeded fields,
    whatever the slide size: tiles are rendered and compressed one at a time.

    Examples
    --------
    >>> import tempfile, os, tilestream as ts
    >>> p = make_slide(os.path.join(tempfile.mkdtemp(), "s.tif"), SlideSpec(height=300, width=500, tile=128))
    >>> ts.Slide.open(p).levels[1].downsample
    2
    """
    path = os.fspath(path)
    fields = _Fields(spec)
    levels = [1]
    if spec.pyramid:
        side = max(spec.height, spec.width)
        unit = spec.tile or 512
        while side // (levels[-1] * 2) >= unit // 2 and levels[-1] < 2**10:
            levels.append(levels[-1] * 2)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tif", dir=directory)
    os.close(fd)
    bigtiff = spec.bigtiff if spec.bigtiff is not None else spec.height * spec.width * 3 > 2**31
    try:
        with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            for i, r in enumerate(levels):
                _write_level(tw, spec, fields, r, subifds=len(levels) - 1 if i == 0 else None)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _write_level(
    tw: tifffile.TiffWriter, spec: SlideSpec, fields: _Fields, reduce: int, subifds: int | None
) -> None:
    h, w = -(-spec.height // reduce), -(-spec.width // reduce)
    compression = None if spec.compression == "none" else spec.compression
    args: dict[str, object] = {}
    if spec.compression == "jpeg":
        args = {"level": spec.quality}
    common: dict[str, object] = {
        "dtype": np.uint8,
        "photometric": "rgb",
        "compression": compression,
        "compressionargs": args or None,
        "subfiletype": 1 if reduce > 1 else 0,
        "metadata": None,
    }
    if subifds:
        common["subifds"] = subifds
    planar = spec.planar
    if spec.tile is not None:
        t = spec.tile
        shape = (3, h, w) if planar else (h, w, 3)
        tw.write(
            _tiles(spec, fields, reduce, h, w, t, planar),
            shape=shape,
            tile=(t, t),
            planarconfig="separate" if planar else "contig",
            **common,  # type: ignore[arg-type]
        )
        return
    rps = spec.rows_per_strip
    if compression is None and not planar:
        tw.write(
            _strips(spec, fields, reduce, h, w, rps),
            shape=(h, w, 3),
            rowsperstrip=rps,
            **common,  # type: ignore[arg-type]
        )
        return
    # Compressed or planar strips: tifffile encodes strips from an array; give it a disk-backed
    # one so memory stays bounded.
    with tempfile.TemporaryDirectory(dir=os.path.dirname(tw.filehandle.path) or ".") as scratch:
        mm = np.lib.format.open_memmap(
            os.path.join(scratch, "level.npy"),
            mode="w+",
            dtype=np.uint8,
            shape=(3, h, w) if planar else (h, w, 3),
        )
        for y in range(0, h, rps):
            rows = min(rps, h - y)
            band = _render(spec, Box(y * reduce, 0, rows * reduce, w * reduce), reduce, fields)
            if planar:
                mm[:, y : y + rows] = band.transpose(2, 0, 1)
            else:
                mm[y : y + rows] = band
        mm.flush()
        tw.write(
            mm,
            rowsperstrip=rps,
            planarconfig="separate" if planar else "contig",
            **{k: v for k, v in common.items() if k != "dtype"},  # type: ignore[arg-type]
        )
        del mm


def _tiles(
    spec: SlideSpec, fields: _Fields, reduce: int, h: int, w: int, t: int, planar: bool
) -> Iterator[NDArray[np.uint8]]:
    planes = range(3) if planar else [None]
    for plane in planes:
        for ty in range(0, h, t):
            for tx in range(0, w, t):
                box = Box(ty * reduce, tx * reduce, t * reduce, t * reduce)
                tile = _render(spec, box, reduce, fields)
                if plane is None:
                    yield tile
                else:
                    yield np.ascontiguousarray(tile[:, :, plane])


def _strips(
    spec: SlideSpec, fields: _Fields, reduce: int, h: int, w: int, rps: int
) -> Iterator[bytes]:
    for y in range(0, h, rps):
        rows = min(rps, h - y)
        yield _render(spec, Box(y * reduce, 0, rows * reduce, w * reduce), reduce, fields).tobytes()
