"""The run folder's reports and the experiment log.

``metrics.csv`` (one row per fold and epoch), ``learning_curves.png``, ``overlays/<id>.png``
(prediction and truth outlines on a thumbnail of each validation slide), ``oof.csv`` (per-slide
out-of-fold Dice and the threshold), ``summary.json``, and one row appended to
``<out>/experiments.csv`` and ``<out>/experiments.md`` saying what changed since the previous run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tilestream as ts

from .config import BOOKKEEPING, TrainConfig
from .evaluate import OVERLAY_PX, THRESHOLDS, SlideResult

__all__ = [
    "EXPERIMENT_COLUMNS",
    "append_experiment",
    "config_changes",
    "format_summary",
    "plot_learning_curves",
    "write_atomic",
    "write_metrics",
    "write_oof",
    "write_overlays",
]

EXPERIMENT_COLUMNS = [
    "n",
    "run",
    "finished",
    "changed",
    "wall_min",
    "fold_dice",
    "cv_mean",
    "cv_std",
    "oof_dice",
    "threshold",
    "note",
]
METRIC_COLUMNS = ["fold", "epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def write_metrics(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """``metrics.csv``: fold, epoch, losses, mean slide Dice, lr, seconds, ``dice_<slide>``."""
    slides = sorted({k for row in rows for k in row if k.startswith("dice_")})
    return write_atomic(path, _csv_text(METRIC_COLUMNS + slides, rows))


def plot_learning_curves(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Losses (left) and validation slide Dice (right) per epoch, one colour per fold."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    folds = sorted({int(r["fold"]) for r in rows})
    colors = plt.get_cmap("tab10")
    for f in folds:
        mine = [r for r in rows if int(r["fold"]) == f]
        epochs = [int(r["epoch"]) for r in mine]
        c = colors(f % 10)
        ax_loss.plot(
            epochs, [r["train_loss"] for r in mine], "-o", color=c, ms=3, label=f"fold {f} train"
        )
        ax_loss.plot(
            epochs, [r["val_loss"] for r in mine], "--s", color=c, ms=3, label=f"fold {f} val tiles"
        )
        ax_dice.plot(epochs, [r["val_dice"] for r in mine], "-o", color=c, ms=3, label=f"fold {f}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.set_yscale("log")
    ax_dice.set(xlabel="epoch", ylabel="slide Dice (threshold 0.5)", title="stitched validation")
    ax_dice.set_ylim(0, 1)
    for ax in (ax_loss, ax_dice):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def write_overlays(
    folder: str | os.PathLike[str],
    results: Mapping[str, SlideResult],
    images: Mapping[str, Path],
    threshold: float,
    dice: Mapping[str, float],
) -> list[Path]:
    """``overlays/<id>.png``: truth outlines green, predicted outlines magenta, on a thumbnail."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for slide_id, res in results.items():
        with ts.Slide.open(images[slide_id]) as slide:
            # The stored thumbnails may be coarser (a reduce-8 canvas): draw on a finer image.
            thumb = slide.thumbnail(
                reduce=max(1, min(res.thumb_reduce, math.ceil(max(slide.shape) / OVERLAY_PX)))
            )
        h, w = thumb.shape[:2]
        canvas = np.ascontiguousarray(thumb[:, :, :3][:, :, ::-1])  # RGB -> BGR for cv2

        size = (w, h)
        truth_px = cv2.resize(res.truth_thumb, size, interpolation=cv2.INTER_LINEAR)
        probs_px = cv2.resize(res.probs_thumb, size, interpolation=cv2.INTER_LINEAR)
        truth = (truth_px >= 128).astype(np.uint8)
        pred = (probs_px >= round(threshold * 255)).astype(np.uint8)
        for mask, color in ((truth, (40, 200, 40)), (pred, (200, 0, 200))):
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, color, 1, lineType=cv2.LINE_AA)
        label = f"{slide_id}  Dice {dice.get(slide_id, float('nan')):.3f} @ {threshold:.2f}"
        for text, y, color in (
            (label, 18, (0, 0, 0)),
            ("truth", 36, (40, 200, 40)),
            ("prediction", 54, (200, 0, 200)),
        ):
            cv2.putText(canvas, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
        path = folder / f"{slide_id}.png"
        tmp = folder / f".{slide_id}.tmp.png"
        cv2.imwrite(str(tmp), canvas)
        os.replace(tmp, path)
        written.append(path)
    return written


def write_oof(
    path: str | os.PathLike[str],
    results: Mapping[str, SlideResult],
    fold_of: Mapping[str, int],
    threshold: float,
) -> dict[str, float]:
    """``oof.csv``: per slide, its fold, Dice at 0.5 and at the chosen threshold; return the
    latter by slide."""
    k = int(np.argmin(np.abs(THRESHOLDS - threshold)))
    rows, best = [], {}
    for slide_id, res in sorted(results.items(), key=lambda kv: (fold_of[kv[0]], kv[0])):
        at_best = float(res.curve()[k])
        best[slide_id] = at_best
        rows.append(
            {
                "slide": slide_id,
                "fold": fold_of[slide_id],
                "dice_at_0.5": res.dice,
                "dice": at_best,
                "threshold": threshold,
                "truth_px": res.truth,
            }
        )
    write_atomic(
        path, _csv_text(["slide", "fold", "dice_at_0.5", "dice", "threshold", "truth_px"], rows)
    )
    return best


# --------------------------------------------------------------------------------------------
# The experiment log
# --------------------------------------------------------------------------------------------


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def config_changes(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str:
    """``"lr 0.001 -> 0.003; epochs 8 -> 12"`` over the settings (bookkeeping fields ignored)."""
    if previous is None:
        return "first run"
    keys = [k for k in current if k not in BOOKKEEPING]
    changes = [
        f"{k} {previous.get(k)!s} -> {current[k]!s}"
        for k in keys
        if k in previous and previous[k] != current[k]
    ]
    changes += [f"{k} = {current[k]!s} (new setting)" for k in keys if k not in previous]
    return "; ".join(changes) if changes else "same settings"


def _previous_config(
    out: Path, rows: Sequence[Mapping[str, str]], run: str
) -> dict[str, Any] | None:
    for row in reversed(rows):
        if row.get("run") == run:
            continue
        path = out / row.get("run", "") / "config.json"
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
    return None


def append_experiment(
    out: str | os.PathLike[str], cfg: TrainConfig, summary: Mapping[str, Any]
) -> dict[str, Any]:
    """Append the run to ``<out>/experiments.csv`` and ``<out>/experiments.md``; return the row."""
    out = Path(out)
    csv_path, md_path = out / "experiments.csv", out / "experiments.md"
    rows = _read_rows(csv_path)
    current = cfg.settings()
    changed = config_changes(_previous_config(out, rows, summary["run"]), current)
    fold_dice = summary["fold_dice"]
    values = list(fold_dice.values())
    row = {
        "n": len(rows) + 1,
        "run": summary["run"],
        "finished": summary["finished"],
        "changed": changed,
        "wall_min": round(summary["wall_s"] / 60, 2),
        "fold_dice": " ".join(f"{v:.4f}" for v in values),
        "cv_mean": round(float(np.mean(values)), 4),
        "cv_std": round(float(np.std(values)), 4),
        "oof_dice": round(summary["oof_dice"], 4),
        "threshold": summary["threshold"],
        "note": cfg.note,
    }
    write_atomic(csv_path, _csv_text(EXPERIMENT_COLUMNS, [*rows, row]))
    header = (
        "# Experiment log\n\n"
        "One row per finished run of `examples/train_glomeruli.py` (newest last). *changed*: the "
        "settings that differ from the previous row's run. *CV Dice*: out-of-fold slide Dice per "
        "fold at the run's threshold, then mean ± std over folds; *OOF*: mean over all slides.\n\n"
        "| # | run | finished | changed vs previous | wall (min) | CV Dice per fold | "
        "mean ± std | OOF | threshold | note |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    text = md_path.read_text(encoding="utf-8") if md_path.is_file() else header
    cells = [
        str(row["n"]),
        f"`{row['run']}`",
        str(row["finished"]),
        changed,
        f"{row['wall_min']:.1f}",
        row["fold_dice"],
        f"{row['cv_mean']:.4f} ± {row['cv_std']:.4f}",
        f"{row['oof_dice']:.4f}",
        f"{row['threshold']:.2f}",
        cfg.note,
    ]
    text += "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |\n"
    write_atomic(md_path, text)
    return row


def format_summary(summary: Mapping[str, Any]) -> str:
    """The one-screen summary printed at the end of a run."""

    def minutes(s: float) -> str:
        return f"{int(s // 60)} min {s % 60:04.1f} s"

    lines = [
        "",
        "=" * 72,
        f"run        {summary['run_dir']}",
        f"data       {summary['data']}",
    ]
    for fold, dice in summary["fold_dice"].items():
        info = summary["folds"][fold]
        slides = ", ".join(f"{s} {summary['slide_dice'][s]:.3f}" for s in info["valid"])
        lines.append(
            f"fold {fold}     Dice {dice:.4f}  (best epoch {info['best_epoch']}/{info['epochs_run']}, "
            f"{info['stop_reason']}; {slides})"
        )
    values = list(summary["fold_dice"].values())
    lines += [
        f"CV Dice    {np.mean(values):.4f} ± {np.std(values):.4f} over folds; out-of-fold mean "
        f"over slides {summary['oof_dice']:.4f} (at 0.5: {summary['oof_dice_at_0.5']:.4f})",
        f"threshold  {summary['threshold']:.2f} (searched on out-of-fold probabilities)",
        f"wall time  {minutes(summary['wall_s'])} (data {summary['data_s']:.0f} s)",
        "files      metrics.csv, learning_curves.png, overlays/, oof.csv, fold*.pt"
        + (", submission.csv" if summary.get("submission") else "")
        + f"; log {summary['log']}",
        "=" * 72,
    ]
    return "\n".join(lines)
