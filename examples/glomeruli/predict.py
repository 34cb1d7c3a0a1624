"""Predict test slides with the fold ensemble of a run and write a Kaggle ``submission.csv``.

The ``fold<i>.pt`` checkpoints of a run folder are loaded with ``ts.load_model`` and averaged as
probabilities (:class:`FoldEnsemble`, so ``predict_slide`` gets ``activation=None``), with
test-time augmentation, and cut at the run's out-of-fold threshold. ``--dask N`` predicts the
slides in parallel on a local dask cluster through ``ts.predict_slides``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tilestream as ts

from .config import ConfigError, PredictConfig, TrainConfig, from_json, parse
from .data import DataProblem, load_records

__all__ = ["FoldEnsemble", "fold_checkpoints", "load_ensemble", "main", "predict"]


class FoldEnsemble(nn.Module):
    """The mean of the fold models' sigmoid outputs: probabilities, not logits."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("FoldEnsemble needs at least one model")
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.models[0](x).float().sigmoid()
        for model in self.models[1:]:
            total = total + model(x).float().sigmoid()
        out: torch.Tensor = total / len(self.models)
        return out


def fold_checkpoints(run_dir: str | Path) -> list[Path]:
    """``fold<i>.pt`` of a run folder, by fold index."""
    paths = [p for p in Path(run_dir).glob("fold*.pt") if p.stem[4:].isdigit()]
    return sorted(paths, key=lambda p: int(p.stem[4:]))


def load_ensemble(paths: Sequence[str], device: str | None = None) -> FoldEnsemble:
    """A :class:`FoldEnsemble` of checkpoints (a top-level function: dask pickles a partial)."""
    return FoldEnsemble([ts.load_model(p, device=device) for p in paths]).eval()


def run_threshold(run_dir: Path) -> float:
    """The run's out-of-fold threshold (``summary.json``), else 0.5."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        return float(json.loads(summary.read_text(encoding="utf-8"))["threshold"])
    return 0.5


def _slides(root: Path, split: str) -> list[ts.hubmap.SlideRecord]:
    records = load_records(root, splits=(split,))
    sample = root / "sample_submission.csv"
    if split == "test" and sample.is_file():  # Kaggle's row order
        order = {slide_id: k for k, slide_id in enumerate(ts.hubmap.read_rle_csv(sample))}
        records.sort(key=lambda r: (order.get(r.id, len(order)), r.id))
    return records


def predict(cfg: PredictConfig) -> Path:
    """Write ``submission.csv`` for ``cfg``; return its path."""
    started = time.monotonic()
    run_dir = Path(cfg.checkpoints)
    config_path = run_dir / "config.json"
    paths = fold_checkpoints(run_dir)
    if not config_path.is_file() or not paths:
        raise DataProblem(
            f"--checkpoints {run_dir}: expected a run folder of train_glomeruli.py with "
            f"config.json and fold<i>.pt (found: {sorted(p.name for p in run_dir.glob('*'))[:10]})"
        )
    text = config_path.read_text(encoding="utf-8")
    saved: dict[str, Any] = json.loads(text)
    train_cfg = from_json(TrainConfig, text)
    root = Path(cfg.data or saved.get("data_root") or train_cfg.data or "")
    slides = _slides(root, cfg.split)
    threshold = cfg.threshold if cfg.threshold is not None else run_threshold(run_dir)
    out = Path(cfg.out) if cfg.out else run_dir / "predict"
    out.mkdir(parents=True, exist_ok=True)
    tta = None if cfg.tta == "none" else cfg.tta
    options: dict[str, Any] = {
        "tile": train_cfg.tile,
        "overlap": train_cfg.overlap if cfg.overlap is None else cfg.overlap,
        "reduce": train_cfg.reduce,
        "batch_size": cfg.batch_size,
        "tta": tta,
        "device": cfg.device,
        "activation": None,  # the ensemble returns probabilities
    }
    print(
        f"predicting {len(slides)} {cfg.split} slide(s) from {root} with {len(paths)} fold "
        f"model(s), TTA {cfg.tta}, threshold {threshold:.2f}",
        flush=True,
    )
    if cfg.dask:
        factory = functools.partial(load_ensemble, tuple(str(p) for p in paths), cfg.device)
        submission = ts.predict_slides(
            factory,
            [r.image for r in slides],
            out,
            n_workers=cfg.dask,
            threshold=threshold,
            keep_probabilities=False,
            **options,
        )
    else:
        ensemble = load_ensemble([str(p) for p in paths], cfg.device)
        rows = []
        for record in slides:
            stitcher = ts.predict_slide(
                ensemble,
                record.image,
                progress=cfg.progress,
                num_workers=cfg.workers,
                slide_id=record.id,
                **options,
            )
            rows.append((record.id, stitcher.to_rle(threshold)))
            if record.mask is not None:
                score = ts.dice(stitcher, record.mask, threshold=threshold)
                print(f"{record.id}: Dice {score.dice:.4f} (has labels)", flush=True)
        submission = ts.hubmap.write_submission(out / "submission.csv", rows)
    print(
        f"wrote {submission} ({len(slides)} rows) in {time.monotonic() - started:.0f} s", flush=True
    )
    return submission


def main(argv: Sequence[str] | None = None) -> int:
    """``python examples/predict_glomeruli.py --checkpoints runs/<name> [--data DIR]``."""
    cfg = parse(PredictConfig, argv, description=__doc__)
    try:
        predict(cfg)
    except (ConfigError, DataProblem, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
