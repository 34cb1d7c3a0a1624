"""The project's main job.

Until the training pipeline lands (examples issue), this runs a short demo of what tilestream
does today: it writes a synthetic H&E-like whole-slide TIFF (tiled JPEG with a pyramid), opens
it lazily, prints its layout, reads tiles at several reduce factors, and saves a thumbnail.

    python examples/train_glomeruli.py [--out runs/demo] [--size 12000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import tilestream as ts
from tilestream.cli import write_png
from tilestream.synthetic import SlideSpec, make_slide


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--size", type=int, default=12000, help="slide side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "synthetic_slide.tif"
    t0 = time.perf_counter()
    spec = SlideSpec(height=args.size, width=args.size * 5 // 4, seed=args.seed, tile=512)
    make_slide(path, spec)
    print(
        f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s"
    )

    with ts.Slide.open(path) as slide:
        print(json.dumps(slide.info(), indent=1))
        rng = np.random.default_rng(args.seed)
        h, w = slide.shape
        for reduce in (1, 4, 16):
            t0 = time.perf_counter()
            n = 32
            for _ in range(n):
                y = int(rng.integers(0, h - 1024)) // reduce * reduce
                x = int(rng.integers(0, w - 1024)) // reduce * reduce
                tile = slide.read(ts.Box(y, x, 1024, 1024), reduce=reduce)
            dt = time.perf_counter() - t0
            print(
                f"reduce={reduce:>2}: {n / dt:7.1f} random 1024 px windows/s -> tiles {tile.shape}"
            )
        thumb = slide.thumbnail(max_size=1024)
    write_png(out / "thumbnail.png", thumb)
    print(f"saved {out / 'thumbnail.png'} {thumb.shape[1]}x{thumb.shape[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
