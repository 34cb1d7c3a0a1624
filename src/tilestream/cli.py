"""The ``tilestream`` command: info, thumbnail, synthetic, tiles, predict and overlay."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._io import atomic_path
from .errors import TilestreamError
from .reader import Slide

__all__ = ["main", "write_png"]


def write_png(path: str | os.PathLike[str], image: NDArray[np.uint8]) -> None:
    """Write an ``(H, W)`` or ``(H, W, C)`` uint8 image as PNG, atomically (temp file + rename)."""
    import imagecodecs

    data = imagecodecs.png_encode(np.ascontiguousarray(image))
    with atomic_path(path, ".png") as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def _format_info(info: dict[str, Any]) -> str:
    lines = [
        f"path        {info['path']}",
        f"file        {info['format']}, {info['byteorder']}-endian, {info['file_bytes']:,} bytes, "
        f"{info['pages']} pages, {info['series']} series",
        f"layout      {info['kind']} series, axes {info['layout']['axes']} "
        f"shape {tuple(info['layout']['shape'])}",
        f"image       {info['shape'][0]} x {info['shape'][1]} px (H x W), "
        f"{info['channels']} channel(s), stored {info['source_dtype']} -> read as uint8",
        f"mpp         {info['mpp'] if info['mpp'] is not None else 'unknown'}",
        "levels      downsample  shape (H x W)      storage  tile/strip     compression",
    ]
    for i, lvl in enumerate(info["levels"]):
        shape = f"{lvl['shape'][0]} x {lvl['shape'][1]}"
        tile = f"{lvl['tile'][0]} x {lvl['tile'][1]}"
        storage = lvl["storage"] + (" (memmap)" if lvl["memmapped"] else "")
        lines.append(
            f"  {i:<9} {lvl['downsample']:<11} {shape:<18} {storage:<8} {tile:<14} "
            f"{lvl['compression']}"
        )
    return "\n".join(lines)


def _cmd_info(args: argparse.Namespace) -> int:
    with Slide.open(args.path) as slide:
        info = slide.info()
    print(json.dumps(info, indent=2) if args.json else _format_info(info))
    return 0


def _cmd_thumbnail(args: argparse.Namespace) -> int:
    with Slide.open(args.path) as slide:
        image = slide.thumbnail(reduce=args.reduce, max_size=args.max_size)
    write_png(args.output, image)
    print(f"wrote {args.output} ({image.shape[1]} x {image.shape[0]} px)")
    return 0


def _cmd_synthetic(args: argparse.Namespace) -> int:
    from .synthetic import DatasetSpec, make_dataset

    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(
            f"tilestream: error: --size must be HEIGHTxWIDTH, e.g. 6000x8000, got {args.size!r}",
            file=sys.stderr,
        )
        return 2
    spec = DatasetSpec(
        n_train=args.train,
        n_test=args.test,
        height=height,
        width=width,
        patients=args.patients,
        seed=args.seed,
        tile=None if args.stripped else args.tile,
        pyramid=args.pyramid,
        glomeruli_per_mpx=args.density,
        layouts=tuple(args.layouts.split(",")),
    )
    try:
        root = make_dataset(args.out_dir, spec, overwrite=args.overwrite)
    except FileExistsError as err:
        print(f"tilestream: error: {err} (on the command line: --overwrite)", file=sys.stderr)
        return 2
    print(f"synthetic HuBMAP dataset in {root} ({args.train} train, {args.test} test slides)")
    return 0


def _outline(mask: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Pixels of the mask whose 4-neighbourhood leaves the mask (a 1-px contour)."""
    m = mask > 0
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def contact_sheet(
    tiles: list[NDArray[np.uint8]], masks: list[NDArray[np.uint8] | None], gap: int = 4
) -> NDArray[np.uint8]:
    """Tiles in a square-ish grid on white, with the mask outline drawn in green."""
    n = len(tiles)
    cols = max(1, int(np.ceil(np.sqrt(n))))
    rows = -(-n // cols)
    h, w = tiles[0].shape[:2]
    sheet = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, np.uint8)
    for i, (tile, mask) in enumerate(zip(tiles, masks, strict=True)):
        rgb = np.repeat(tile[..., :1], 3, axis=2) if tile.shape[2] < 3 else tile[..., :3].copy()
        if mask is not None:
            rgb[_outline(mask)] = (0, 220, 0)
        r, c = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        sheet[y : y + h, x : x + w] = rgb
    return sheet


def _cmd_tiles(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .annotations import MaskSource, PolygonMask, RleMask
    from .dataset import SlideSource, TileDataset
    from .hubmap import read_dataset, read_rle_csv
    from .sampling import GridSampler, RandomSampler

    path = Path(args.path)
    mask: MaskSource | None = None
    regions = None
    if path.is_dir():
        records = sorted(  # a labelled slide first
            (r for r in read_dataset(path) if args.slide in (None, r.id)),
            key=lambda r: r.mask is None,
        )
        if not records:
            print(f"tilestream: error: no slide {args.slide!r} in {path}", file=sys.stderr)
            return 2
        source = SlideSource.from_record(records[0])
    else:
        slide = Slide.open(path)
        if args.mask:
            mask_path = Path(args.mask)
            if mask_path.suffix == ".json":
                mask = PolygonMask.from_geojson(mask_path, slide.shape)
            else:
                rles = read_rle_csv(mask_path)
                slide_id = path.name.split(".")[0]
                if slide_id not in rles:
                    print(
                        f"tilestream: error: {mask_path} has no row for id {slide_id!r}",
                        file=sys.stderr,
                    )
                    return 2
                mask = RleMask(rles[slide_id], slide.shape)
        source = SlideSource(slide, mask=mask, regions=regions)
    sampler: RandomSampler | GridSampler
    if args.sampler == "random":
        sampler = RandomSampler(
            args.tile,
            reduce=args.reduce,
            min_tissue=args.min_tissue,
            positive_fraction=args.positive_fraction if source.mask is not None else 0.0,
        )
        dataset = TileDataset([source], sampler, samples_per_epoch=args.n, seed=args.seed)
    else:
        sampler = GridSampler(args.tile, reduce=args.reduce, min_tissue=args.min_tissue)
        dataset = TileDataset([source], sampler, samples_per_epoch=args.n, seed=args.seed)
    tiles, masks = [], []
    for sample in dataset:
        tiles.append(sample["image"].permute(1, 2, 0).numpy())
        masks.append(sample["mask"][0].numpy() if "mask" in sample else None)
    if not tiles:
        print(
            "tilestream: error: the sampler produced no tiles (lower --min-tissue?)",
            file=sys.stderr,
        )
        return 2
    write_png(args.output, contact_sheet(tiles, masks))
    print(f"wrote {args.output}: {len(tiles)} tiles of {tiles[0].shape[1]} px from {source.id}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import functools
    from pathlib import Path

    from .inference import load_model, predict_slides

    load_model(args.model)  # fail early, in this process, with a clear message
    out_dir = Path(args.work_dir) if args.work_dir else Path(args.output).parent / "predictions"
    path = predict_slides(
        functools.partial(load_model, args.model, args.device),
        args.slides,
        out_dir,
        serial=args.workers <= 1,
        n_workers=max(1, args.workers),
        threshold=args.threshold,
        submission=Path(args.output).name,
        tile=args.tile,
        overlap=args.overlap,
        reduce=args.reduce,
        batch_size=args.batch_size,
        tta=None if args.tta == "none" else args.tta,
        device=args.device,
        min_tissue=args.min_tissue,
        dtype=args.dtype,
    )
    final = Path(args.output)
    if path.resolve() != final.resolve():
        os.replace(path, final)
    print(
        f"wrote {final} ({len(args.slides)} slides; per-slide RLE and probabilities in {out_dir})"
    )
    return 0


def _load_mask(spec: str, slide_path: str, shape: tuple[int, int]) -> Any:
    from pathlib import Path

    from .annotations import PolygonMask, RleMask
    from .hubmap import read_rle_csv

    path = Path(spec)
    if path.suffix in (".json", ".geojson"):
        return PolygonMask.from_geojson(path, shape)
    stem = Path(slide_path).name.split(".")[0]
    rles = read_rle_csv(path)
    if stem not in rles:
        raise ValueError(f"{path} has no row for slide id {stem!r}")
    return RleMask(rles[stem], shape)


def _cmd_overlay(args: argparse.Namespace) -> int:
    from .geometry import Box

    with Slide.open(args.slide) as slide:
        h, w = slide.shape
        reduce = max(1, -(-max(h, w) // args.max_size))
        image = slide.thumbnail(reduce)
        rgb = np.repeat(image[..., :1], 3, axis=2) if image.shape[2] < 3 else image[..., :3].copy()
        box = Box(0, 0, image.shape[0] * reduce, image.shape[1] * reduce)
        for spec, color in ((args.truth, (0, 200, 0)), (args.pred, (230, 0, 200))):
            if spec:
                mask = _load_mask(spec, args.slide, slide.shape).read(box, reduce)
                edge = _outline(mask)
                grown = edge.copy()  # 2-px lines: visible at thumbnail scale
                grown[1:] |= edge[:-1]
                grown[:, 1:] |= edge[:, :-1]
                rgb[grown] = color
    write_png(args.output, rgb)
    print(f"wrote {args.output} (truth green, prediction magenta, 1/{reduce} scale)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tilestream`` command."""
    parser = argparse.ArgumentParser(
        prog="tilestream",
        description="Gigapixel TIFF slides: inspect, make synthetic data, preview training "
        "tiles, predict and overlay (tilestream).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="layout, levels, tiling, codec and size of a slide")
    info.add_argument("path", help="TIFF / SVS / OME-TIFF file")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=_cmd_info)

    thumb = sub.add_parser("thumbnail", help="save a downsampled image of the whole slide")
    thumb.add_argument("path", help="TIFF / SVS / OME-TIFF file")
    thumb.add_argument("-o", "--output", required=True, help="output PNG path")
    size = thumb.add_mutually_exclusive_group()
    size.add_argument("--reduce", type=int, default=None, help="integer reduce factor")
    size.add_argument(
        "--max-size", type=int, default=1024, help="longest side in px (default 1024)"
    )
    thumb.set_defaults(func=_cmd_thumbnail)

    syn = sub.add_parser("synthetic", help="write a synthetic dataset in the Kaggle HuBMAP layout")
    syn.add_argument("out_dir", help="output folder (train/, test/, train.csv, ...)")
    syn.add_argument("--train", type=int, default=6, help="training slides (default 6)")
    syn.add_argument("--test", type=int, default=2, help="test slides (default 2)")
    syn.add_argument("--size", default="6000x8000", help="nominal HEIGHTxWIDTH (default 6000x8000)")
    syn.add_argument("--patients", type=int, default=3, help="distinct patients (default 3)")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--tile", type=int, default=512, help="tile side (default 512)")
    syn.add_argument("--stripped", action="store_true", help="write strips instead of tiles")
    syn.add_argument("--pyramid", action="store_true", help="write reduced levels")
    syn.add_argument("--density", type=float, default=4.0, help="glomeruli per Mpx of tissue")
    syn.add_argument(
        "--layouts",
        default="hwc,chw,tzcyx",
        help="TIFF layouts cycled over slides (hwc, chw, tzcyx)",
    )
    syn.add_argument(
        "--overwrite", action="store_true", help="replace a dataset made with other settings"
    )
    syn.set_defaults(func=_cmd_synthetic)

    tiles = sub.add_parser(
        "tiles", help="contact sheet of the tiles a sampler feeds the model, mask outlined"
    )
    tiles.add_argument("path", help="a slide, or a HuBMAP-layout dataset folder")
    tiles.add_argument("-o", "--output", required=True, help="output PNG path")
    tiles.add_argument("--sampler", choices=["random", "grid"], default="random")
    tiles.add_argument("--mask", help="labels for a slide: QuPath/GeoJSON .json or an RLE .csv")
    tiles.add_argument("--slide", help="slide id inside a dataset folder (default: the first)")
    tiles.add_argument("--tile", type=int, default=1024, help="window side, level-0 px")
    tiles.add_argument("--reduce", type=int, default=4, help="reduce factor (default 4)")
    tiles.add_argument("-n", type=int, default=16, help="number of tiles (default 16)")
    tiles.add_argument("--min-tissue", type=float, default=0.2)
    tiles.add_argument("--positive-fraction", type=float, default=0.5)
    tiles.add_argument("--seed", type=int, default=0)
    tiles.set_defaults(func=_cmd_tiles)

    pred = sub.add_parser(
        "predict", help="predict slides with a model and write a Kaggle submission.csv"
    )
    pred.add_argument(
        "model", help="torch.export .pt2, TorchScript, or a tilestream-smp-v1 checkpoint"
    )
    pred.add_argument(
        "slides", nargs="+", help="slide files (the id is the name up to its first dot)"
    )
    pred.add_argument("-o", "--output", default="submission.csv", help="submission CSV path")
    pred.add_argument("--work-dir", help="per-slide RLE and probability canvases (resumable)")
    pred.add_argument("--tile", type=int, default=1024, help="window side, level-0 px")
    pred.add_argument("--overlap", type=int, default=256, help="window overlap, level-0 px")
    pred.add_argument("--reduce", type=int, default=4, help="reduce factor (default 4)")
    pred.add_argument("--batch-size", type=int, default=8)
    pred.add_argument("--tta", choices=["none", "flips", "d4"], default="none")
    pred.add_argument("--threshold", type=float, default=0.5)
    pred.add_argument("--min-tissue", type=float, default=0.0)
    pred.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default="float32",
        help="probability canvas type; float16 halves the kept canvases (default float32)",
    )
    pred.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    pred.add_argument(
        "--workers",
        type=int,
        default=1,
        help="dask worker processes, one slide each (default 1: in this process)",
    )
    pred.set_defaults(func=_cmd_predict)

    over = sub.add_parser("overlay", help="thumbnail with prediction and truth outlines")
    over.add_argument("slide", help="the slide")
    over.add_argument("--pred", help="prediction: submission/RLE .csv or .json polygons")
    over.add_argument("--truth", help="truth: train.csv-style RLE .csv or .json polygons")
    over.add_argument("-o", "--output", required=True, help="output PNG path")
    over.add_argument("--max-size", type=int, default=2048, help="longest side in px")
    over.set_defaults(func=_cmd_overlay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tilestream`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except TilestreamError as err:
        print(f"tilestream: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"tilestream: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
