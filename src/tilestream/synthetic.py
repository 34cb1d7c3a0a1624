"""Synthetic PAS/H&E-like kidney slides and HuBMAP-layout datasets with known truth.

A slide is a pure function of its :class:`SlideSpec`: a periodic tissue texture (stroma,
nuclei, tubules) modulated by low-resolution tissue, cortex/medulla and stain fields, plus
glomeruli (a lobulated tuft inside Bowman's capsule; some sclerotic, a few on the tissue edge).
Any box of any pyramid level is rendered on demand by a numba kernel, so a 50000 x 50000 slide
is written tile by tile in bounded memory.

:func:`make_dataset` writes the exact Kaggle "HuBMAP - Hacking the Kidney" layout (TIFFs in the
competition's layout quirks, glomerulus and anatomy JSON, ``train.csv`` whose RLE equals the
JSON polygons as :func:`tilestream.rasterize` fills them, the information CSV with patients
shared by several slides, ``sample_submission.csv``), so the main job, the tests and the
benchmarks run anywhere.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import shapely
import tifffile
from numpy.typing import NDArray

from ._io import atomic_path
from ._synthrender import FIELD_CELL, Fields, glomerulus_outline, render_into
from .annotations import MaskArray, PolygonMask, write_json_atomic
from .geometry import Box
from .hubmap import INFO_CSV, SAMPLE_SUBMISSION, TRAIN_CSV, write_rle_csv, write_submission
from .rle import rle_encode

__all__ = [
    "DatasetSpec",
    "SlideSpec",
    "make_dataset",
    "make_slide",
    "render",
    "slide_labels",
]

Compression = Literal["jpeg", "deflate", "zstd", "lzw", "none"]
Layout = Literal["hwc", "chw", "tzcyx"]


@dataclass(frozen=True, kw_only=True)
class SlideSpec:
    """What :func:`make_slide` writes.

    Parameters
    ----------
    height, width : int
        Level-0 size in pixels.
    seed : int
        Everything drawn (tissue, stain, glomeruli) depends only on this.
    tile : int or None
        Tile side (multiple of 16) for tiled storage; ``None`` writes strips.
    rows_per_strip : int
        Rows per strip when ``tile`` is ``None``.
    compression : {"jpeg", "deflate", "zstd", "lzw", "none"}
        Codec of the stored tiles or strips.
    quality : int
        JPEG quality.
    pyramid : bool
        Write reduced levels (downsample 2, 4, ...) as SubIFDs until a level fits in a tile
        (``layout="hwc"`` and ``"chw"`` only).
    layout : {"hwc", "chw", "tzcyx"}
        The HuBMAP TIFF quirks: interleaved RGB, tifffile shape ``(H, W, 3)``; planar RGB in
        one page, ``(3, H, W)``; OME-TIFF with one page per channel, ``(1, 1, 3, H, W)``.
    tissue_fraction : float
        Approximate share of the slide covered by tissue.
    glomeruli_per_mpx : float
        Glomeruli per megapixel of tissue (0: plain tissue). Real HuBMAP slides have ~3-4.
    glomerulus_radius : (float, float)
        Range of capsule radii in level-0 pixels (scaled per slide by 0.85-1.15).
    bigtiff : bool or None
        Force BigTIFF (default: when the data may pass 2 GB).
    """

    height: int
    width: int
    seed: int = 0
    tile: int | None = 512
    rows_per_strip: int = 64
    compression: Compression = "jpeg"
    quality: int = 90
    pyramid: bool = True
    layout: Layout = "hwc"
    tissue_fraction: float = 0.5
    glomeruli_per_mpx: float = 0.0
    glomerulus_radius: tuple[float, float] = (70.0, 150.0)
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
        if self.layout not in ("hwc", "chw", "tzcyx"):
            raise ValueError(f'layout must be "hwc", "chw" or "tzcyx", got {self.layout!r}')
        lo, hi = self.glomerulus_radius
        if not 0 < lo <= hi:
            raise ValueError(
                f"glomerulus_radius must be 0 < low <= high, got {self.glomerulus_radius}"
            )
        if self.glomeruli_per_mpx < 0:
            raise ValueError(f"glomeruli_per_mpx must be >= 0, got {self.glomeruli_per_mpx}")


@functools.lru_cache(maxsize=4)
def _fields(spec: SlideSpec) -> Fields:
    return Fields(
        spec.height,
        spec.width,
        spec.seed,
        spec.tissue_fraction,
        spec.glomeruli_per_mpx,
        spec.glomerulus_radius,
    )


def render(spec: SlideSpec, box: Box, reduce: int = 1) -> NDArray[np.uint8]:
    """Render ``box`` (level-0 px, aligned to ``reduce``) of the slide described by ``spec``.

    Reduced pixels are point-sampled at the centres of their blocks, so the pyramid
    :func:`make_slide` writes is ``render(spec, box, reduce)`` for each level. Pixels outside
    the slide are white.

    Examples
    --------
    >>> spec = SlideSpec(height=600, width=800, seed=1)
    >>> render(spec, Box(0, 0, 64, 64), reduce=2).shape
    (32, 32, 3)
    """
    return _render(box, reduce, _fields(spec))


def _render(box: Box, reduce: int, fields: Fields) -> NDArray[np.uint8]:
    box.check_reduce(reduce)
    out = np.empty((box.height // reduce, box.width // reduce, 3), np.uint8)
    render_into(
        fields.texture,
        fields.texture_scale,
        fields.tissue,
        fields.stain,
        fields.glomeruli,
        fields.bucket_offsets,
        fields.bucket_ids,
        fields.bucket_cols,
        box.y,
        box.x,
        reduce,
        fields.height,
        fields.width,
        out,
    )
    return out


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlideLabels:
    """The known truth of a synthetic slide (level-0 ``(x, y)`` polygons, GeoJSON order)."""

    glomeruli: list[shapely.Polygon]
    sclerotic: list[bool]
    regions: dict[str, shapely.MultiPolygon | shapely.Polygon] = field(default_factory=dict)


def slide_labels(spec: SlideSpec) -> SlideLabels:
    """Glomerulus outlines and anatomical regions (``Cortex``, ``Medulla``) of a slide.

    Glomeruli are the outer boundary of Bowman's capsule as 48-vertex polygons; regions are
    unions of the tissue field's cells, smoothed, clipped to the slide.
    """
    fields = _fields(spec)
    bounds = shapely.box(0, 0, spec.width, spec.height)
    glomeruli = [shapely.Polygon(glomerulus_outline(g)) for g in fields.glomeruli]
    sclerotic = [bool(g[9] > 0.5) for g in fields.glomeruli]
    region = fields.node_region()
    regions: dict[str, Any] = {}
    half = FIELD_CELL / 2
    for value, name in ((1, "Cortex"), (2, "Medulla")):
        ys, xs = np.nonzero(region == value)
        if ys.size == 0:
            continue
        cells = shapely.box(
            xs * FIELD_CELL - half,
            ys * FIELD_CELL - half,
            xs * FIELD_CELL + half,
            ys * FIELD_CELL + half,
        )
        merged = shapely.union_all(cells).buffer(half / 2).buffer(-half / 2)
        clipped = shapely.intersection(merged, bounds)
        if not clipped.is_empty:
            regions[name] = clipped
    return SlideLabels(glomeruli, sclerotic, regions)


# --------------------------------------------------------------------------------------------
# Writing slides
# --------------------------------------------------------------------------------------------


def make_slide(path: str | os.PathLike[str], spec: SlideSpec) -> str:
    """Write the slide described by ``spec`` to ``path`` (atomically) and return the path.

    Peak memory is a few tiles (tiled) or one band of strips plus the seeded fields, whatever
    the slide size: tiles are rendered and compressed one at a time. Compressed or planar
    strips go through a temporary disk-backed array beside ``path``.

    Examples
    --------
    >>> import tempfile, os, tilestream as ts
    >>> spec = SlideSpec(height=300, width=500, tile=128)
    >>> p = make_slide(os.path.join(tempfile.mkdtemp(), "s.tif"), spec)
    >>> ts.Slide.open(p).levels[1].downsample
    2
    """
    path = os.fspath(path)
    fields = _fields(spec)
    levels = [1]
    if spec.pyramid and spec.layout != "tzcyx":
        side = max(spec.height, spec.width)
        unit = spec.tile or 512
        while side // (levels[-1] * 2) >= unit // 2 and levels[-1] < 2**10:
            levels.append(levels[-1] * 2)
    bigtiff = spec.bigtiff if spec.bigtiff is not None else spec.height * spec.width * 3 > 2**31
    with (
        atomic_path(path, ".tif") as tmp,
        tifffile.TiffWriter(tmp, bigtiff=bigtiff, ome=spec.layout == "tzcyx") as tw,
    ):
        for i, r in enumerate(levels):
            _write_level(tw, spec, fields, r, subifds=len(levels) - 1 if i == 0 else None)
    return path


def _write_level(
    tw: tifffile.TiffWriter, spec: SlideSpec, fields: Fields, reduce: int, subifds: int | None
) -> None:
    h, w = -(-spec.height // reduce), -(-spec.width // reduce)
    compression = None if spec.compression == "none" else spec.compression
    common: dict[str, Any] = {
        "dtype": np.uint8,
        "compression": compression,
        "compressionargs": {"level": spec.quality} if spec.compression == "jpeg" else None,
        "subfiletype": 1 if reduce > 1 else 0,
    }
    if subifds:
        common["subifds"] = subifds
    planes = spec.layout != "hwc"
    if spec.layout == "tzcyx":
        shape: tuple[int, ...] = (1, 1, 3, h, w)
        common.update(photometric="minisblack", metadata={"axes": "TZCYX"})
    elif spec.layout == "chw":
        shape = (3, h, w)
        common.update(photometric="rgb", planarconfig="separate", metadata=None)
    else:
        shape = (h, w, 3)
        common.update(photometric="rgb", planarconfig="contig", metadata=None)
    if spec.tile is not None:
        t = spec.tile
        tw.write(_tiles(fields, reduce, h, w, t, planes), shape=shape, tile=(t, t), **common)
        return
    rps = spec.rows_per_strip
    if compression is None and not planes:
        tw.write(_strips(fields, reduce, h, w, rps), shape=shape, rowsperstrip=rps, **common)
        return
    # Compressed or planar strips: tifffile encodes strips from an array; hand it a disk-backed
    # one so memory stays bounded.
    with tempfile.TemporaryDirectory(dir=os.path.dirname(tw.filehandle.path) or ".") as scratch:
        mm = np.lib.format.open_memmap(
            os.path.join(scratch, "level.npy"), mode="w+", dtype=np.uint8, shape=shape
        )
        for y in range(0, h, rps):
            rows = min(rps, h - y)
            band = _render(Box(y * reduce, 0, rows * reduce, w * reduce), reduce, fields)
            if spec.layout == "tzcyx":
                mm[0, 0, :, y : y + rows] = band.transpose(2, 0, 1)
            elif spec.layout == "chw":
                mm[:, y : y + rows] = band.transpose(2, 0, 1)
            else:
                mm[y : y + rows] = band
        mm.flush()
        common.pop("dtype")
        tw.write(mm, rowsperstrip=rps, **common)
        del mm


def _tiles(
    fields: Fields, reduce: int, h: int, w: int, t: int, planes: bool
) -> Iterator[NDArray[np.uint8]]:
    for plane in range(3) if planes else [None]:
        for ty in range(0, h, t):
            for tx in range(0, w, t):
                tile = _render(
                    Box(ty * reduce, tx * reduce, t * reduce, t * reduce), reduce, fields
                )
                yield tile if plane is None else np.ascontiguousarray(tile[:, :, plane])


def _strips(fields: Fields, reduce: int, h: int, w: int, rps: int) -> Iterator[bytes]:
    for y in range(0, h, rps):
        rows = min(rps, h - y)
        yield _render(Box(y * reduce, 0, rows * reduce, w * reduce), reduce, fields).tobytes()


# --------------------------------------------------------------------------------------------
# Datasets in the HuBMAP layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """What :func:`make_dataset` writes.

    Parameters
    ----------
    n_train, n_test : int
        Slides in ``train/`` (with labels) and ``test/`` (without).
    height, width : int
        Nominal slide size; each slide varies by up to ``size_jitter`` (relative).
    size_jitter : float
        Relative size variation between slides.
    patients : int
        Distinct patients; slides are dealt to them round-robin, so each patient has several.
    seed : int
        Everything depends only on this.
    layouts : sequence of {"hwc", "chw", "tzcyx"}
        TIFF layouts, cycled over the slides (HuBMAP mixes all three).
    tile : int or None
        Tile side, or ``None`` for strips (HuBMAP slides are mostly stripped).
    compression, quality, pyramid :
        As in :class:`SlideSpec`.
    tissue_fraction, glomeruli_per_mpx, glomerulus_radius :
        As in :class:`SlideSpec`.
    """

    n_train: int = 6
    n_test: int = 2
    height: int = 6000
    width: int = 8000
    size_jitter: float = 0.25
    patients: int = 3
    seed: int = 0
    layouts: tuple[str, ...] = ("hwc", "chw", "tzcyx")
    tile: int | None = 512
    compression: Compression = "jpeg"
    quality: int = 90
    pyramid: bool = False
    tissue_fraction: float = 0.55
    glomeruli_per_mpx: float = 4.0
    glomerulus_radius: tuple[float, float] = (70.0, 150.0)

    def __post_init__(self) -> None:
        if self.n_train < 0 or self.n_test < 0 or self.n_train + self.n_test == 0:
            raise ValueError(
                f"need at least one slide, got n_train={self.n_train}, n_test={self.n_test}"
            )
        if self.patients < 1:
            raise ValueError(f"patients must be >= 1, got {self.patients}")
        if not 0 <= self.size_jitter < 1:
            raise ValueError(f"size_jitter must be in [0, 1), got {self.size_jitter}")
        if not self.layouts:
            raise ValueError("layouts must name at least one layout")
        bad = [lay for lay in self.layouts if lay not in ("hwc", "chw", "tzcyx")]
        if bad:
            raise ValueError(f'unknown layouts {bad}; choose from "hwc", "chw", "tzcyx"')

    def slide_specs(self) -> list[tuple[str, str, SlideSpec]]:
        """``(split, id, SlideSpec)`` of every slide, in writing order."""
        rng = np.random.default_rng(self.seed)
        out = []
        for k in range(self.n_train + self.n_test):
            split = "train" if k < self.n_train else "test"
            slide_id = hashlib.sha1(f"{self.seed}-{k}".encode()).hexdigest()[:9]
            jitter = 1.0 + rng.uniform(-self.size_jitter, self.size_jitter, size=2)
            spec = SlideSpec(
                height=max(256, int(self.height * jitter[0])) // 4 * 4,
                width=max(256, int(self.width * jitter[1])) // 4 * 4,
                seed=int(rng.integers(2**31)),
                tile=self.tile,
                compression=self.compression,
                quality=self.quality,
                pyramid=self.pyramid,
                layout=cast(Layout, self.layouts[k % len(self.layouts)]),
                tissue_fraction=self.tissue_fraction,
                glomeruli_per_mpx=self.glomeruli_per_mpx,
                glomerulus_radius=self.glomerulus_radius,
            )
            out.append((split, slide_id, spec))
        return out


_INFO_COLUMNS = [
    "image_file", "width_pixels", "height_pixels", "anatomical_structures_segmention_file",
    "glomerulus_segmentation_file", "patient_number", "race", "ethnicity", "sex", "age",
    "weight_kilograms", "height_centimeters", "bmi_kg/m^2", "laterality", "percent_cortex",
    "percent_medulla",
]  # fmt: skip
_MARKER = ".tilestream-dataset.json"


def make_dataset(
    root: str | os.PathLike[str], spec: DatasetSpec | None = None, *, overwrite: bool = False
) -> Path:
    """Write a synthetic dataset in the Kaggle HuBMAP layout under ``root``; return ``root``.

    Deterministic by ``spec.seed``. A finished dataset leaves a marker holding its spec: calling
    again with the same spec returns at once (a cache), a different spec raises unless
    ``overwrite``. Each file is written atomically, and an interrupted run resumes where it
    stopped. ``train.csv`` holds, for every training slide, exactly the RLE of its JSON
    glomerulus polygons as :func:`tilestream.rasterize` fills them (column-major, 1-based),
    encoded band by band without a full-resolution mask.

    Examples
    --------
    >>> import tempfile, tilestream as ts
    >>> from tilestream.synthetic import DatasetSpec, make_dataset
    >>> root = make_dataset(tempfile.mkdtemp(), DatasetSpec(n_train=2, n_test=1, height=600, width=800))
    >>> sorted(r.split for r in ts.hubmap.read_dataset(root))
    ['test', 'train', 'train']
    """
    spec = spec or DatasetSpec()
    root = Path(root)
    marker = root / _MARKER
    wanted = json.loads(json.dumps(asdict(spec)))
    if marker.is_file():
        existing = json.loads(marker.read_text())
        if existing == wanted:
            return root
        if not overwrite:
            raise FileExistsError(
                f"{root} holds a synthetic dataset made with another spec; pass overwrite=True "
                "or choose another folder"
            )
        for sub in ("train", "test"):
            shutil.rmtree(root / sub, ignore_errors=True)
        marker.unlink()
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "test").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed + 1)
    patients = [
        str(int(n)) for n in rng.choice(np.arange(60000, 70000), spec.patients, replace=False)
    ]
    train_rows: list[tuple[str, str]] = []
    info_rows: list[dict[str, Any]] = []
    test_ids: list[str] = []
    for k, (split, slide_id, slide_spec) in enumerate(spec.slide_specs()):
        folder = root / split
        image = folder / f"{slide_id}.tiff"
        if not image.is_file():
            make_slide(image, slide_spec)
        labels = slide_labels(slide_spec)
        shape = (slide_spec.height, slide_spec.width)
        anatomy = folder / f"{slide_id}-anatomical-structure.json"
        if not anatomy.is_file():
            names = list(labels.regions)
            PolygonMask(list(labels.regions.values()), shape, classes=names).to_geojson(anatomy)
        if split == "train":
            glom_json = folder / f"{slide_id}.json"
            if not glom_json.is_file():
                PolygonMask(
                    labels.glomeruli, shape, classes=["glomerulus"] * len(labels.glomeruli)
                ).to_geojson(glom_json)
            # The RLE of the polygons as written (re-read, so it matches the file exactly).
            polygons = PolygonMask.from_geojson(glom_json, shape)
            train_rows.append((slide_id, rle_encode(MaskArray(polygons))))
        else:
            test_ids.append(slide_id)
        cortex = labels.regions.get("Cortex")
        medulla = labels.regions.get("Medulla")
        area_c = cortex.area if cortex is not None else 0.0
        area_m = medulla.area if medulla is not None else 0.0
        pct = round(100 * area_c / max(area_c + area_m, 1.0))
        info_rows.append(
            {
                "image_file": image.name,
                "width_pixels": slide_spec.width,
                "height_pixels": slide_spec.height,
                "anatomical_structures_segmention_file": anatomy.name,
                "glomerulus_segmentation_file": f"{slide_id}.json" if split == "train" else "",
                "patient_number": patients[k % len(patients)],
                "race": ("White", "Black or African American", "Asian")[k % 3],
                "ethnicity": "Not Hispanic or Latino",
                "sex": ("Female", "Male")[k % 2],
                "age": 40 + (k * 7) % 35,
                "weight_kilograms": 60.0 + (k * 13) % 50,
                "height_centimeters": 155.0 + (k * 11) % 40,
                "bmi_kg/m^2": 25.0,
                "laterality": ("Left", "Right")[k % 2],
                "percent_cortex": pct,
                "percent_medulla": 100 - pct,
            }
        )
    write_rle_csv(root / TRAIN_CSV, train_rows, value_column="encoding")
    write_submission(root / SAMPLE_SUBMISSION, [(i, "") for i in test_ids])
    _write_csv(root / INFO_CSV, _INFO_COLUMNS, info_rows)
    write_json_atomic(marker, wanted)
    return root


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
