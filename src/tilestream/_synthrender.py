"""The seeded ingredients and the numba kernel behind :mod:`tilestream.synthetic`.

A synthetic slide is a pure function of its spec: a periodic tissue texture, a low-resolution
tissue field, a cortex/medulla field, a stain field, and a list of glomeruli (analytic
lobulated shapes). :func:`render_into` evaluates it for any box at any reduce factor.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import NDArray

from ._jit import njit

__all__ = ["FIELD_CELL", "GLOM_PARAMS", "Fields", "glomerulus_outline", "render_into"]

TEXTURE = 1024  # period of the texture, level-0 px (before the slide's texture scale)
FIELD_CELL = 256  # level-0 px between nodes of the tissue, region and stain fields
BUCKET = 512  # level-0 px per cell of the glomerulus lookup grid
OUTLINE_VERTICES = 48
# glomerulus parameters, one row each:
# cy, cx, R, aspect, cos(theta), sin(theta), p1, p2, p3, sclerotic, tuft_ratio
GLOM_PARAMS = 11


class Fields:
    """Everything drawn from the seed, shared by the renderer and the label writer."""

    def __init__(
        self,
        height: int,
        width: int,
        seed: int,
        tissue_fraction: float,
        glomeruli_per_mpx: float,
        glomerulus_radius: tuple[float, float],
    ) -> None:
        rng = np.random.default_rng(seed)
        self.height, self.width = height, width
        self.texture = texture_bank(int(rng.integers(4)))
        self.texture_scale = float(rng.uniform(0.85, 1.2))
        fh = math.ceil(height / FIELD_CELL) + 2
        fw = math.ceil(width / FIELD_CELL) + 2
        noise = smooth_noise(rng, fh, fw, scale=max(2, min(fh, fw) // 5))
        cut = float(np.quantile(noise[: fh - 2, : fw - 2], 1.0 - tissue_fraction))
        self.tissue = np.clip((noise - cut) * 10.0 + 0.5, 0.0, 1.0).astype(np.float32)
        # Cortex is the outer part of the tissue: distance-like field from the tissue noise.
        depth = noise - cut
        inner = float(np.quantile(depth[depth > 0], 0.55)) if (depth > 0).any() else 1.0
        self.cortex = (depth < inner).astype(np.float32)
        stain = smooth_noise(rng, fh, fw, scale=max(2, min(fh, fw) // 3))
        tint = rng.uniform(0.88, 1.08, size=3).astype(np.float32)
        self.stain = np.ascontiguousarray(
            (0.92 + 0.16 * stain[..., None]) * tint[None, None, :], dtype=np.float32
        )
        self.glomeruli = place_glomeruli(rng, self, glomeruli_per_mpx, glomerulus_radius)
        self.bucket_offsets, self.bucket_ids, self.bucket_cols = bucket_index(
            self.glomeruli, height, width
        )

    def node_tissue(self) -> NDArray[np.bool_]:
        """Tissue at each field node (the renderer's alpha >= 0.5)."""
        tissue: NDArray[np.bool_] = self.tissue >= 0.5
        return tissue

    def node_region(self) -> NDArray[np.uint8]:
        """0 background, 1 cortex, 2 medulla at each field node."""
        tissue = self.node_tissue()
        region = np.zeros(self.tissue.shape, np.uint8)
        region[tissue & (self.cortex > 0.5)] = 1
        region[tissue & (self.cortex <= 0.5)] = 2
        return region


def smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> NDArray[np.float32]:
    """Noise in [0, 1] with features of about ``scale`` cells (octaves down to 2 cells)."""
    out = np.zeros((h, w), np.float64)
    amp, s, total = 1.0, max(2, scale), 0.0
    while s >= 2:
        coarse = rng.random((h // s + 2, w // s + 2))
        out += amp * bilinear_upsample(coarse, s)[:h, :w]
        total += amp
        amp *= 0.5
        s //= 2
    out /= total
    for _ in range(3):  # three box blurs ~ a Gaussian: no axis-aligned creases from the octaves
        out = box_blur(out, max(1, scale // 3))
    lo, hi = out.min(), out.max()
    result: NDArray[np.float32] = ((out - lo) / max(hi - lo, 1e-9)).astype(np.float32)
    return result


def box_blur(a: NDArray[np.float64], r: int) -> NDArray[np.float64]:
    """Mean over a (2r+1) x (2r+1) window, edges replicated."""
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis)
        n = a.shape[axis]
        hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        a = (hi - lo) / (2 * r + 1)
    return a


def bilinear_upsample(a: NDArray[np.float64], s: int) -> NDArray[np.float64]:
    """Upsample a 2-D grid by an integer factor with bilinear interpolation."""
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


@functools.lru_cache(maxsize=4)
def texture_bank(bank: int) -> NDArray[np.uint8]:
    """One of a few fixed texture patches (cached per process; read-only)."""
    tex = texture(np.random.default_rng(1000 + bank))
    tex.setflags(write=False)
    return tex


def texture(rng: np.random.Generator) -> NDArray[np.uint8]:
    """A periodic TEXTURE x TEXTURE RGB tissue patch: PAS-like stroma, nuclei, tubule lumens."""
    n = TEXTURE
    base = smooth_noise(rng, n, n, scale=64)
    fine = smooth_noise(rng, n, n, scale=4)
    stroma = np.array([236.0, 170.0, 205.0])
    dark = np.array([200.0, 118.0, 172.0])
    t = (0.6 * base + 0.4 * fine)[..., None]
    img = np.ascontiguousarray(stroma * (1 - t) + dark * t)
    lumens = 40
    _stamp_ellipses(
        img,
        rng.integers(0, n, lumens).astype(np.float64),
        rng.integers(0, n, lumens).astype(np.float64),
        rng.integers(12, 40, lumens).astype(np.float64),
        rng.integers(12, 40, lumens).astype(np.float64),
        np.array([190.0, 95.0, 160.0]),
        np.array([248.0, 234.0, 242.0]),
    )
    nuclei = n * n // 350
    cys = rng.integers(0, n, nuclei).astype(np.float64)
    cxs = rng.integers(0, n, nuclei).astype(np.float64)
    radii = rng.uniform(2.5, 5.5, nuclei)
    shade = rng.uniform(0.75, 1.05, nuclei)
    _stamp_discs(img, cys, cxs, radii, shade, np.array([95.0, 60.0, 145.0]))
    img += rng.normal(0.0, 4.0, img.shape)
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))


@njit
def _stamp_ellipses(
    img: NDArray[np.float64],
    cys: NDArray[np.float64],
    cxs: NDArray[np.float64],
    rys: NDArray[np.float64],
    rxs: NDArray[np.float64],
    rim: NDArray[np.float64],
    inner: NDArray[np.float64],
) -> None:
    # tubules on a periodic canvas: a basement-membrane rim around a pale lumen
    n = img.shape[0]
    for k in range(cys.size):
        reach_y = int(rys[k] * 1.17) + 1
        reach_x = int(rxs[k] * 1.17) + 1
        for dy in range(-reach_y, reach_y + 1):
            for dx in range(-reach_x, reach_x + 1):
                d = dy * dy / (rys[k] * rys[k]) + dx * dx / (rxs[k] * rxs[k])
                if d >= 1.35:
                    continue
                y = int(cys[k] + dy) % n
                x = int(cxs[k] + dx) % n
                color = inner if d < 1.0 else rim
                for c in range(3):
                    img[y, x, c] = color[c]


@njit
def _stamp_discs(
    img: NDArray[np.float64],
    cys: NDArray[np.float64],
    cxs: NDArray[np.float64],
    radii: NDArray[np.float64],
    shade: NDArray[np.float64],
    color: NDArray[np.float64],
) -> None:
    # nuclei on a periodic canvas
    n = img.shape[0]
    for k in range(cys.size):
        r = math.ceil(radii[k])
        r2 = radii[k] * radii[k]
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy * dy + dx * dx <= r2:
                    y = int(cys[k] + dy) % n
                    x = int(cxs[k] + dx) % n
                    for c in range(3):
                        img[y, x, c] = color[c] * shade[k]


def place_glomeruli(
    rng: np.random.Generator,
    fields: Fields,
    per_mpx: float,
    radius: tuple[float, float],
) -> NDArray[np.float64]:
    """Non-overlapping glomeruli, mostly in cortex, a few on the tissue edge."""
    if per_mpx <= 0:
        return np.zeros((0, GLOM_PARAMS), np.float64)
    tissue = fields.tissue[:-2, :-2]
    cortex = fields.cortex[:-2, :-2]
    area_mpx = float((tissue >= 0.5).sum()) * FIELD_CELL**2 / 1e6
    target = round(per_mpx * area_mpx)
    weight = np.where(tissue >= 0.5, np.where(cortex > 0.5, 1.0, 0.08), 0.0)
    edge = (tissue > 0.25) & (tissue < 0.75)
    weight = weight + np.where(edge, 0.35, 0.0)
    flat = weight.ravel()
    if target == 0 or flat.sum() <= 0:
        return np.zeros((0, GLOM_PARAMS), np.float64)
    flat = flat / flat.sum()
    scale = float(rng.uniform(0.85, 1.15))  # per-slide size variation
    rows: list[list[float]] = []
    attempts = 0
    while len(rows) < target and attempts < target * 20:
        attempts += 1
        node = int(rng.choice(flat.size, p=flat))
        ny, nx = divmod(node, tissue.shape[1])
        cy = (ny + rng.uniform(-0.5, 0.5)) * FIELD_CELL
        cx = (nx + rng.uniform(-0.5, 0.5)) * FIELD_CELL
        r = float(rng.uniform(*radius)) * scale
        if not (r <= cy < fields.height - r and r <= cx < fields.width - r):
            continue
        if any((cy - o[0]) ** 2 + (cx - o[1]) ** 2 < (r + o[2] + 12) ** 2 * 1.3 for o in rows):
            continue
        theta = float(rng.uniform(0, math.pi))
        rows.append(
            [
                cy,
                cx,
                r,
                float(rng.uniform(0.78, 1.0)),
                math.cos(theta),
                math.sin(theta),
                float(rng.uniform(0, 2 * math.pi)),
                float(rng.uniform(0, 2 * math.pi)),
                float(rng.uniform(0, 2 * math.pi)),
                1.0 if rng.random() < 0.12 else 0.0,
                float(rng.uniform(0.72, 0.84)),
            ]
        )
    return np.asarray(rows, np.float64).reshape(-1, GLOM_PARAMS)


@njit
def _outer_radius(r: float, phi: float, p1: float, p2: float) -> float:
    return r * (1.0 + 0.06 * math.sin(3.0 * phi + p1) + 0.04 * math.sin(5.0 * phi + p2))


def glomerulus_outline(
    g: NDArray[np.float64], vertices: int = OUTLINE_VERTICES
) -> NDArray[np.float64]:
    """The outer boundary (Bowman's capsule) of one glomerulus as ``(N, 2)`` ``(x, y)`` points."""
    cy, cx, r, aspect, cos_t, sin_t, p1, p2 = g[:8]
    phi = np.linspace(0.0, 2 * math.pi, vertices, endpoint=False)
    rho = r * (1.0 + 0.06 * np.sin(3.0 * phi + p1) + 0.04 * np.sin(5.0 * phi + p2))
    u, v = rho * np.cos(phi), rho * np.sin(phi) * aspect
    # (u, v) are coordinates along the rotated axes; rotate back to (dy, dx)
    dy = u * cos_t - v * sin_t
    dx = u * sin_t + v * cos_t
    return np.stack([cx + dx, cy + dy], axis=1)


def bucket_index(
    glomeruli: NDArray[np.float64], height: int, width: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """CSR lists of the glomeruli overlapping each BUCKET x BUCKET cell."""
    rows = math.ceil(height / BUCKET) + 1
    cols = math.ceil(width / BUCKET) + 1
    lists: list[list[int]] = [[] for _ in range(rows * cols)]
    for k, g in enumerate(glomeruli):
        reach = g[2] * 1.12
        for by in range(
            max(0, int((g[0] - reach) // BUCKET)), min(rows, int((g[0] + reach) // BUCKET) + 1)
        ):
            for bx in range(
                max(0, int((g[1] - reach) // BUCKET)), min(cols, int((g[1] + reach) // BUCKET) + 1)
            ):
                lists[by * cols + bx].append(k)
    offsets = np.zeros(rows * cols + 1, np.int64)
    offsets[1:] = np.cumsum([len(item) for item in lists])
    ids = np.asarray([k for item in lists for k in item], np.int64)
    return offsets, ids, cols


@njit
def _bilinear(field: NDArray[np.float32], iy: int, ix: int, ty: float, tx: float) -> float:
    return float(
        field[iy, ix] * (1 - ty) * (1 - tx)
        + field[iy + 1, ix] * ty * (1 - tx)
        + field[iy, ix + 1] * (1 - ty) * tx
        + field[iy + 1, ix + 1] * ty * tx
    )


@njit
def render_into(
    texture: NDArray[np.uint8],
    texture_scale: float,
    tissue: NDArray[np.float32],
    stain: NDArray[np.float32],
    glomeruli: NDArray[np.float64],
    bucket_offsets: NDArray[np.int64],
    bucket_ids: NDArray[np.int64],
    bucket_cols: int,
    y0: int,
    x0: int,
    reduce: int,
    height: int,
    width: int,
    out: NDArray[np.uint8],
) -> None:
    """Render the slide into ``out`` (h, w, 3): pixel (i, j) samples the level-0 point
    ``(y0 + (i + 0.5) * reduce, x0 + (j + 0.5) * reduce)``; outside the slide is white."""
    n = texture.shape[0]
    cell = 256.0
    h, w = out.shape[0], out.shape[1]
    rgb = np.empty(3, np.float64)
    for i in range(h):
        py = y0 + (i + 0.5) * reduce
        ly = math.floor(py)
        fy = py / cell
        iy = int(fy)
        ty = fy - iy
        for j in range(w):
            px = x0 + (j + 0.5) * reduce
            lx = math.floor(px)
            if py < 0 or px < 0 or py >= height or px >= width:
                for k in range(3):
                    out[i, j, k] = 255
                continue
            fx = px / cell
            ix = int(fx)
            tx = fx - ix
            a = _bilinear(tissue, iy, ix, ty, tx)
            sy = int(ly * texture_scale) % n
            sx = int(lx * texture_scale) % n
            grain = (texture[ly % n, (lx * 7) % n, 1] & 7) - 3.5
            for k in range(3):
                s = _bilinear(stain[:, :, k], iy, ix, ty, tx)
                fg = texture[sy, sx, k] * s
                bg = 242.0 + grain
                rgb[k] = bg + a * (fg - bg)
            # glomeruli drawn over the tissue
            b = (ly // 512) * bucket_cols + (lx // 512)
            for q in range(bucket_offsets[b], bucket_offsets[b + 1]):
                g = glomeruli[bucket_ids[q]]
                dy = py - g[0]
                dx = px - g[1]
                u = dy * g[4] + dx * g[5]
                v = (-dy * g[5] + dx * g[4]) / g[3]
                rho = math.sqrt(u * u + v * v)
                if rho > g[2] * 1.11:
                    continue
                phi = math.atan2(v, u)
                outer = _outer_radius(g[2], phi, g[6], g[7])
                if rho >= outer:
                    continue
                s0 = _bilinear(stain[:, :, 0], iy, ix, ty, tx)
                if rho >= outer * 0.93:  # Bowman's capsule: PAS-positive magenta line
                    rgb[0] = 185.0 * s0
                    rgb[1] = 85.0 * s0
                    rgb[2] = 150.0 * s0
                    break
                tuft = outer * g[10] * (1.0 + 0.09 * math.sin(7.0 * phi + g[8]))
                if g[9] > 0.5:
                    tuft = outer * 0.9
                if rho >= tuft:  # Bowman's space
                    rgb[0] = 246.0
                    rgb[1] = 236.0
                    rgb[2] = 242.0
                    break
                t0 = texture[(sy * 3) % n, (sx * 3) % n, 0]
                t1 = texture[(sy * 3) % n, (sx * 3) % n, 1]
                t2 = texture[(sy * 3) % n, (sx * 3) % n, 2]
                if g[9] > 0.5:  # sclerotic: glassy, pale, few nuclei
                    rgb[0] = 0.5 * t0 + 110.0
                    rgb[1] = 0.3 * t1 + 95.0
                    rgb[2] = 0.4 * t2 + 110.0
                else:  # cellular tuft: dense nuclei, magenta mesangium
                    rgb[0] = 0.72 * t0
                    rgb[1] = 0.55 * t1
                    rgb[2] = 0.82 * t2
                break
            for k in range(3):
                v2 = rgb[k]
                if v2 < 0.0:
                    v2 = 0.0
                elif v2 > 255.0:
                    v2 = 255.0
                out[i, j, k] = np.uint8(v2 + 0.5)
