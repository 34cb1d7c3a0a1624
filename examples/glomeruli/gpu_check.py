"""The GPU check: is the accelerator kept busy by ``TileDataset``, how fast is ``predict_slide``,
and what slide Dice does the default recipe reach at full size (reduce 4, AMP, many workers)?

Four measurements, printed as a Markdown table and written to ``<out>/gpu_check.json``:

1. *train step, synthetic tensors*: images/s of forward + loss + backward + optimizer step on a
   batch already on the device (the compute ceiling);
2. *train step, fed by TileDataset*: the same step fed by a ``DataLoader`` over ``TileDataset``
   (pinned memory, persistent workers, augmentation in the workers' collate), with the share of
   the time the step waits for the loader;
3. *predict_slide*: level-0 megapixels per second over the largest training slide (windows,
   model, blending; AMP);
4. *the recipe*: a whole training run (``train.run``) under a time budget; its out-of-fold
   slide Dice.

``python examples/gpu_check.py`` takes about 7 minutes on one GPU with the defaults; ``--device
cpu`` with small settings is a smoke test (``tests/test_examples.py`` runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import tilestream as ts

from . import report
from .config import TrainConfig
from .data import AugmentCollate, build_augment, build_synthetic, load_records, tile_dataset
from .losses import build_loss
from .models import build_model
from .optim import build_optimizer
from .train import run, to_device, train_step

__all__ = ["main"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(cfg: TrainConfig, device: torch.device) -> Any:
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=cfg.amp)


def _step_fn(
    cfg: TrainConfig, device: torch.device
) -> tuple[Callable[[torch.Tensor, torch.Tensor], None], torch.nn.Module]:
    """One training step (forward, loss, backward, optimizer) of the recipe's model."""
    model = build_model(cfg.arch, cfg.encoder).to(device).to(memory_format=torch.channels_last)
    criterion = build_loss(cfg.loss).to(device)
    optimizer = build_optimizer(
        cfg.optimizer, model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, lookahead=False
    )
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        train_step(model, criterion, optimizer, scaler, _autocast(cfg, device), x, y)

    return step, model


def synthetic_rate(cfg: TrainConfig, device: torch.device, steps: int) -> dict[str, float]:
    """Images/s of the training step on random tensors already on ``device``."""
    step, _ = _step_fn(cfg, device)
    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (cfg.batch_size, 3, cfg.input_px, cfg.input_px)
    x = torch.rand(shape, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand((cfg.batch_size, 1, cfg.input_px, cfg.input_px), generator=g) > 0.8).float()
    y = y.to(device)
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator, lazy initialisation
        step(x, y)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"images_per_s": steps * cfg.batch_size / seconds, "seconds": seconds}


def loader_rate(
    cfg: TrainConfig, device: torch.device, records: Sequence[Any], steps: int
) -> dict[str, float]:
    """Images/s of the training step fed by ``TileDataset`` workers, and the waiting share."""
    step, _ = _step_fn(cfg, device)
    warm = 3
    samples = (steps + warm) * cfg.batch_size * 2  # the loader never runs dry
    dataset = tile_dataset(cfg, records, samples=samples, seed=0)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        collate_fn=AugmentCollate(build_augment(cfg.augmentations), 0),
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        prefetch_factor=4 if cfg.workers > 0 else None,
    )
    batches = iter(loader)
    waited = 0.0
    t0 = 0.0
    for i in range(warm + steps):
        if i == warm:
            _sync(device)
            t0, waited = time.perf_counter(), 0.0
        t = time.perf_counter()
        x, y = to_device(next(batches), device)
        waited += time.perf_counter() - t
        step(x, y)
    _sync(device)
    seconds = time.perf_counter() - t0
    del batches, loader
    return {
        "images_per_s": steps * cfg.batch_size / seconds,
        "waiting_share": waited / seconds,
        "seconds": seconds,
    }


def predict_rate(cfg: TrainConfig, device: torch.device, record: Any) -> dict[str, float]:
    """Level-0 megapixels per second of ``predict_slide`` over one slide (second call timed)."""
    _, model = _step_fn(cfg, device)
    model.eval()
    kwargs: dict[str, Any] = dict(
        tile=cfg.tile,
        overlap=cfg.overlap,
        reduce=cfg.reduce,
        batch_size=cfg.batch_size,
        device=device,
        amp=cfg.amp,
        progress=False,
        num_workers=min(cfg.workers, 4),
    )
    ts.predict_slide(model, record.image, **kwargs)  # warm-up: kernels, tile cache
    _sync(device)
    t0 = time.perf_counter()
    ts.predict_slide(model, record.image, **kwargs)
    _sync(device)
    seconds = time.perf_counter() - t0
    h, w = record.shape
    return {"mpx_per_s": h * w / 1e6 / seconds, "seconds": seconds, "megapixels": h * w / 1e6}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument("--data", default=None, help="HuBMAP-layout folder (default: synthetic)")
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--reduce", type=int, default=4)
    p.add_argument("--overlap", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--steps", type=int, default=60, help="timed steps per throughput figure")
    p.add_argument("--epochs", type=int, default=12, help="epochs of the recipe run")
    p.add_argument("--samples-per-epoch", type=int, default=1024)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--minutes", type=float, default=4.5, help="time budget of the recipe run")
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--out", default="runs/gpu-check")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python examples/gpu_check.py [--device cuda] [...]``; 0 on success."""
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", flush=True)
        return 2
    out = Path(args.out)
    cfg = TrainConfig(
        data=args.data,
        tile=args.tile,
        reduce=args.reduce,
        overlap=args.overlap,
        batch_size=args.batch_size,
        workers=args.workers,
        amp=args.amp,
        epochs=args.epochs,
        folds=args.folds,
        samples_per_epoch=args.samples_per_epoch,
        time_budget=args.minutes,
        device=str(device),
        out=str(out),
        name="recipe",
        fresh=True,
        submit=False,
        progress=False,
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    root = Path(cfg.data) if cfg.data else build_synthetic()
    cfg = dataclasses.replace(cfg, data=str(root))
    records = [r for r in load_records(root) if r.mask is not None]
    largest = max(records, key=lambda r: r.shape[0] * r.shape[1])
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "tilestream": ts.__version__,
        "settings": {k: getattr(args, k) for k in vars(args)},
    }
    t_all = time.perf_counter()
    print(f"gpu check on {results['device']}: synthetic-tensor steps ...", flush=True)
    results["synthetic"] = synthetic_rate(cfg, device, args.steps)
    print("  steps fed by TileDataset ...", flush=True)
    results["loader"] = loader_rate(cfg, device, records, args.steps)
    print(f"  predict_slide over {largest.id} ...", flush=True)
    results["predict"] = predict_rate(cfg, device, largest)
    print(f"  the recipe ({args.minutes} min budget) ...", flush=True)
    t = time.perf_counter()
    status = run(cfg)
    results["recipe"] = {"status": status, "seconds": time.perf_counter() - t}
    summary_path = out / "recipe" / "summary.json"
    if status == 0 and summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        results["recipe"].update(oof_dice=summary["oof_dice"], fold_dice=summary["fold_dice"])
    results["seconds"] = time.perf_counter() - t_all
    s, ld, pr = results["synthetic"], results["loader"], results["predict"]
    busy = ld["images_per_s"] / s["images_per_s"]
    dice = results["recipe"].get("oof_dice", math.nan)
    table = "\n".join(
        [
            f"GPU check: {results['device']}, batch {cfg.batch_size} of {cfg.input_px} px, "
            f"AMP {'on' if cfg.amp else 'off'}, {cfg.workers} loader workers",
            "",
            "| measurement | result |",
            "| --- | --- |",
            f"| train step, synthetic tensors | {s['images_per_s']:.0f} images/s |",
            f"| train step, fed by TileDataset | {ld['images_per_s']:.0f} images/s "
            f"({busy:.2f} of the synthetic rate; waiting for data {ld['waiting_share']:.0%}) |",
            f"| predict_slide ({pr['megapixels']:.0f} Mpx slide) | {pr['mpx_per_s']:.1f} "
            "level-0 Mpx/s |",
            f"| recipe, {args.minutes} min budget | out-of-fold slide Dice {dice:.4f} |",
            f"| whole check | {results['seconds'] / 60:.1f} min |",
        ]
    )
    print(table, flush=True)
    report.write_atomic(out / "gpu_check.json", json.dumps(results, indent=1) + "\n")
    report.write_atomic(out / "gpu_check.md", table + "\n")
    return 0 if status == 0 else 1
