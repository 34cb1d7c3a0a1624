"""The training loop: patient-grouped k-fold CV, random tissue tiles in, whole-slide stitched
Dice out, resumable after a kill, data-parallel under ``torchrun``.

Per fold and epoch: train on ``TileDataset`` tiles (half centred on glomeruli), compute a
tile-level validation loss on fixed validation tiles, predict every validation slide whole with
``ts.predict_slide`` and score it with ``ts.dice``. The best epoch by mean slide Dice is kept as
``fold<i>.pt`` (``ts.load_model`` reads it) with its out-of-fold predictions; early stopping
and ``--time-budget`` end a fold sooner. Every epoch ends with an atomic checkpoint in
``state/fold<i>.pt``; rerunning the same command resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

import tilestream as ts

from . import report
from .config import ConfigError, PredictConfig, TrainConfig, from_json, parse
from .data import (
    AugmentCollate,
    DataProblem,
    build_augment,
    build_synthetic,
    load_records,
    make_folds,
    synthetic_root,
    tile_dataset,
)
from .distributed import Context, setup
from .evaluate import (
    SlideResult,
    TruthBlocks,
    best_threshold,
    predict_and_score,
    tile_loss,
    truth_blocks,
)
from .losses import build_loss
from .models import build_model, check_encoder, check_weights, checkpoint_payload
from .optim import build_optimizer, build_scheduler
from .predict import predict

__all__ = ["main", "run"]

#: Seconds kept for the end of the run (threshold search, overlays, plots, log), on top of the
#: test-slide prediction, which is estimated from the validation pace (:meth:`Trainer.final_reserve_s`).
FINAL_RESERVE_S = 30.0


class StopRequested(Exception):
    """``--stop-after-epochs`` reached (a simulated kill for the resume test)."""


@dataclass
class FoldState:
    """Everything a fold needs to resume: saved in ``state/fold<i>.pt`` after each epoch."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    best_dice: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    done: bool = False
    stop_reason: str = ""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # numpy randomness here is always an explicit Generator


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def to_device(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch's images as float [0, 1] channels-last and masks as float 0/1."""
    x = batch["image"].to(device, non_blocking=True).float().div_(255)
    x = x.contiguous(memory_format=torch.channels_last)
    y = batch["mask"].to(device, non_blocking=True).float()
    return x, y


def train_step(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    autocast: Any,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """Forward (under ``autocast``), loss in float32, backward, optimizer step; the loss."""
    with autocast:
        logits = net(x)
    loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    detached: torch.Tensor = loss.detach()
    return detached


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="batch", leave=False, disable=not enabled, dynamic_ncols=True
    )


class Trainer:
    """One invocation of the training script (all selected folds, then the report)."""

    def __init__(self, cfg: TrainConfig, ctx: Context, started: float) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.started = started
        self.run_dir = Path(cfg.out) / cfg.run_name()
        self.state_dir = self.run_dir / "state"
        self.oof_dir = self.run_dir / "oof"
        self.prior_s = 0.0
        self.data_s = 0.0
        self.epochs_here = 0
        self.histories: dict[int, list[dict[str, Any]]] = {}
        self.truth: dict[str, TruthBlocks] = {}
        self.test_px = 0.0  # level-0 pixels of the test slides the submission will predict
        self.predict_s_per_px = 0.0  # validation pace of predict_slide, seconds per pixel

    # -- helpers ----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        if self.ctx.is_main:
            print(message, flush=True)

    def elapsed(self) -> float:
        """Seconds this run has used, over all invocations (resumes included)."""
        return self.prior_s + time.monotonic() - self.started

    def budget_s(self) -> float:
        return self.cfg.time_budget * 60 if self.cfg.time_budget > 0 else math.inf

    def _save_clock(self) -> None:
        report.write_atomic(self.state_dir / "clock.json", json.dumps({"seconds": self.elapsed()}))

    def out_of_time(self, epoch_s: float, later_folds: int) -> bool:
        """Whether another epoch of ``epoch_s`` seconds would eat into the time of the
        ``later_folds`` still to train: they are reserved what they need at this pace, at most
        an equal share of what is left, so a fold may overrun only into time nobody needs."""
        left = self.budget_s() - self.elapsed() - self.final_reserve_s()
        if math.isinf(left):
            return False
        need = later_folds * self.cfg.epochs * epoch_s
        reserve = min(need, left * later_folds / (later_folds + 1))
        return epoch_s > left - reserve

    def final_reserve_s(self) -> float:
        """Seconds the end of the run needs: :data:`FINAL_RESERVE_S` plus the submission's
        prediction of the test slides by every fold model, at the validation pace."""
        models = len(self.cfg.fold_indices())
        return FINAL_RESERVE_S + self.test_px * models * self.predict_s_per_px

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        cfg, ctx = self.cfg, self.ctx
        if ctx.device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        else:  # some CUDA kernels (e.g. upsampling backward) have no deterministic version
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        t0 = time.monotonic()
        if cfg.data is None:
            if not (synthetic_root() / "train.csv").is_file():
                self.say(f"building the synthetic dataset in {synthetic_root()} (once) ...")
            root = ctx.main_first(build_synthetic)
        else:
            root = Path(cfg.data)
        records = load_records(root)
        folds = make_folds(records, cfg.folds)
        self.data_s = time.monotonic() - t0
        self.say(
            f"data: {root} ({sum(r.split == 'train' for r in records)} training slides, "
            f"{len({r.patient for r in records if r.split == 'train'})} patients) "
            f"in {self.data_s:.0f} s"
        )
        if not self.prepare_run_dir(root):
            return 0
        if cfg.submit:
            for path in sorted((root / "test").glob("*.tif*")):
                try:
                    with ts.Slide.open(path) as slide:
                        self.test_px += slide.shape[0] * slide.shape[1]
                except ts.TilestreamError:
                    pass  # the submission step reports unreadable test slides
        selected = cfg.fold_indices()
        outcomes = {}
        for i in selected:
            outcomes[i] = self.train_fold(folds[i], remaining=[j for j in selected if j >= i])
        if ctx.is_main:
            self.finish(folds, outcomes, root)
        ctx.barrier()
        return 0

    def prepare_run_dir(self, root: Path) -> bool:
        """Create or reopen the run folder; False when the run is already complete."""
        cfg, ctx = self.cfg, self.ctx
        if cfg.fresh and ctx.is_main and self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        ctx.barrier()
        config_path = self.run_dir / "config.json"
        if config_path.is_file():
            old = from_json(TrainConfig, config_path.read_text(encoding="utf-8"))
            if old.settings() != cfg.settings():
                diff = report.config_changes(old.settings(), cfg.settings())
                raise ConfigError(
                    f"{self.run_dir} holds a run with other settings ({diff}); pass another "
                    "--name, or --fresh to replace it"
                )
            summary_path = self.run_dir / "summary.json"
            if summary_path.is_file():
                summary = json.loads(summary_path.read_text(encoding="utf-8"))
                self.say(report.format_summary(summary))
                self.say("this run is complete (pass --fresh to run it again)")
                return False
        clock = self.state_dir / "clock.json"
        if clock.is_file():
            self.prior_s = float(json.loads(clock.read_text())["seconds"])
            self.started = time.monotonic()
        if ctx.is_main:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.oof_dir.mkdir(parents=True, exist_ok=True)
            payload = dataclasses.asdict(cfg) | {
                "data_root": str(Path(root).resolve()),
                "world_size": ctx.world_size,
                "tilestream": ts.__version__,
                "torch": torch.__version__,
            }
            report.write_atomic(config_path, json.dumps(payload, indent=1) + "\n")
        ctx.barrier()
        return True

    # -- one fold ---------------------------------------------------------------------------

    def train_fold(
        self, fold: ts.Fold[ts.hubmap.SlideRecord], remaining: Sequence[int]
    ) -> FoldState:
        cfg, ctx = self.cfg, self.ctx
        i = fold.index
        state_path = self.state_dir / f"fold{i}.pt"
        checkpoint = (
            torch.load(state_path, map_location="cpu", weights_only=False)
            if state_path.is_file()
            else None
        )
        state = FoldState(**checkpoint["fold"]) if checkpoint else FoldState()
        self.histories[i] = state.history
        if state.done:
            self.say(
                f"fold {i}: done earlier (best Dice {state.best_dice:.4f} at epoch {state.best_epoch})"
            )
            return state

        seed = cfg.seed * 1000 + i
        _seed_everything(seed)
        device = ctx.device
        # channels_last: oneDNN convolutions on CPU run ~20% faster; the state dict is the same.
        model = build_model(cfg.arch, cfg.encoder, weights=cfg.weights)
        model = model.to(device).to(memory_format=torch.channels_last)
        criterion = build_loss(cfg.loss).to(device)
        optimizer = build_optimizer(
            cfg.optimizer,
            model.parameters(),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            lookahead=cfg.lookahead,
        )
        samples = math.ceil(cfg.samples_per_epoch / ctx.world_size) * ctx.world_size
        steps = math.ceil(samples // ctx.world_size / cfg.batch_size)
        scheduler = build_scheduler(
            cfg.scheduler, optimizer, lr=cfg.lr, total_steps=steps * cfg.epochs
        )
        use_scaler = cfg.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        train_ds = tile_dataset(cfg, fold.train, samples=samples, seed=seed)
        collate = AugmentCollate(build_augment(cfg.augmentations), seed)
        if checkpoint:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            if scheduler is not None and checkpoint["scheduler"] is not None:
                scheduler.load_state_dict(checkpoint["scheduler"])
            if scaler is not None and checkpoint.get("scaler"):
                scaler.load_state_dict(checkpoint["scaler"])
            train_ds.load_state_dict(checkpoint["dataset"])
            torch.set_rng_state(checkpoint["rng"])
            self.say(f"fold {i}: resuming after epoch {state.epoch} (state/fold{i}.pt)")
        net: torch.nn.Module = model
        if ctx.is_distributed:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        val_batches: list[dict[str, Any]] | None = None
        later_folds = len(remaining) - 1
        self.say(
            f"fold {i}: train {len(fold.train)} slides, validate {len(fold.valid)} "
            f"({', '.join(r.id for r in fold.valid)}); {steps} steps x {cfg.batch_size} tiles "
            f"of {cfg.input_px} px per epoch"
            + (f" on each of {ctx.world_size} ranks" if ctx.is_distributed else "")
        )
        autocast = (
            torch.autocast(
                device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16
            )
            if cfg.amp
            else nullcontext()
        )
        # One loader per fold: with --workers its processes (and their slide handles and tile
        # caches) live across epochs; the dataset's epoch is in shared memory and the collate
        # reads each sample's epoch from the sample.
        loader = DataLoader(
            train_ds,
            batch_size=cfg.batch_size,
            num_workers=cfg.workers,
            collate_fn=collate,
            pin_memory=device.type == "cuda",
            persistent_workers=cfg.workers > 0,
        )
        for epoch in range(state.epoch, cfg.epochs):
            t_epoch = time.monotonic()
            train_ds.set_epoch(epoch)
            net.train()
            total, count = 0.0, 0.0
            bar = _progress(
                steps, f"fold {i} epoch {epoch + 1}/{cfg.epochs}", cfg.progress and ctx.is_main
            )
            for batch in loader:
                x, y = to_device(batch, device)
                loss = train_step(net, criterion, optimizer, scaler, autocast, x, y)
                if scheduler is not None:
                    scheduler.step()
                total += float(loss) * len(x)
                count += len(x)
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4f}")
            bar.close()
            total, count = ctx.all_sum(total, count)
            train_loss = total / max(count, 1)
            train_ds.set_epoch(epoch + 1)

            decision: dict[str, Any] = {}
            if ctx.is_main:
                if val_batches is None:
                    val_ds = tile_dataset(
                        cfg, fold.valid, samples=cfg.val_samples, seed=seed + 7919
                    )
                    val_batches = list(
                        DataLoader(
                            val_ds, batch_size=cfg.batch_size, collate_fn=AugmentCollate(None, 0)
                        )
                    )
                decision = self.validate(
                    i,
                    epoch,
                    model,
                    criterion,
                    val_batches,
                    fold,
                    state,
                    train_loss,
                    optimizer,
                    t_epoch,
                )
                more = epoch + 1 < cfg.epochs
                if (
                    more
                    and not decision["done"]
                    and self.out_of_time(decision["row"]["seconds"], later_folds)
                ):
                    decision.update(done=True, reason="time budget")
            decision = ctx.broadcast(decision)
            state.epoch = epoch + 1
            state.bad_epochs = decision["bad_epochs"]
            state.best_dice, state.best_epoch = decision["best_dice"], decision["best_epoch"]
            if not ctx.is_main:
                state.history.append(decision["row"])
            if decision["done"] or state.epoch >= cfg.epochs:
                state.done = True
                state.stop_reason = decision["reason"] or "all epochs"
            if ctx.is_main:
                _save_atomic(
                    {
                        "fold": dataclasses.asdict(state),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "dataset": train_ds.state_dict(),
                        "rng": torch.get_rng_state(),
                    },
                    state_path,
                )
                self._save_clock()
                report.write_metrics(self.run_dir / "metrics.csv", self.all_rows())
            ctx.barrier()
            self.epochs_here += 1
            if state.done:
                self.say(
                    f"fold {i}: stopped ({state.stop_reason}); best Dice {state.best_dice:.4f} at epoch {state.best_epoch}"
                )
                break
            if cfg.stop_after_epochs is not None and self.epochs_here >= cfg.stop_after_epochs:
                raise StopRequested(
                    f"stopped after {self.epochs_here} epoch(s) (--stop-after-epochs)"
                )
        if (
            cfg.stop_after_epochs is not None
            and self.epochs_here >= cfg.stop_after_epochs
            and i != remaining[-1]
        ):
            raise StopRequested(f"stopped after {self.epochs_here} epoch(s) (--stop-after-epochs)")
        return state

    def validate(
        self,
        i: int,
        epoch: int,
        model: torch.nn.Module,
        criterion: torch.nn.Module,
        val_batches: list[dict[str, Any]],
        fold: ts.Fold[ts.hubmap.SlideRecord],
        state: FoldState,
        train_loss: float,
        optimizer: torch.optim.Optimizer,
        t_epoch: float,
    ) -> dict[str, Any]:
        """Rank 0: tile loss, stitched slide Dice, best checkpoint; returns the decision."""
        cfg, device = self.cfg, self.ctx.device
        val_loss = tile_loss(model, val_batches, criterion, device)
        results: dict[str, SlideResult] = {}
        t_predict, pixels = time.monotonic(), 0
        for rec in fold.valid:
            if rec.id not in self.truth:
                assert rec.mask is not None
                self.truth[rec.id] = truth_blocks(rec.mask, rec.shape, cfg.reduce)
            pixels += rec.shape[0] * rec.shape[1]
            results[rec.id] = predict_and_score(
                model,
                rec,
                tile=cfg.tile,
                overlap=cfg.overlap,
                reduce=cfg.reduce,
                batch_size=cfg.batch_size,
                device=device,
                amp=cfg.amp,
                truth=self.truth[rec.id],
                num_workers=cfg.workers,
            )
        self.predict_s_per_px = (time.monotonic() - t_predict) / max(pixels, 1)
        mean_dice = float(np.mean([r.dice for r in results.values()]))
        improved = mean_dice > state.best_dice + 1e-4
        best_dice, best_epoch = (
            (mean_dice, epoch + 1) if improved else (state.best_dice, state.best_epoch)
        )
        bad_epochs = 0 if improved else state.bad_epochs + 1
        if improved:
            for slide_id, res in results.items():
                res.save(self.oof_dir / f"{slide_id}.npz")
            _save_atomic(
                checkpoint_payload(
                    model,
                    cfg.arch,
                    cfg.encoder,
                    {
                        "fold": i,
                        "epoch": epoch + 1,
                        "dice": mean_dice,
                        "tile": cfg.tile,
                        "reduce": cfg.reduce,
                        "overlap": cfg.overlap,
                        "valid": [r.id for r in fold.valid],
                    },
                ),
                self.run_dir / f"fold{i}.pt",
            )
        seconds = time.monotonic() - t_epoch
        row: dict[str, Any] = {
            "fold": i,
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_dice": mean_dice,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 1),
        }
        row.update({f"dice_{k}": v.dice for k, v in results.items()})
        state.history.append(row)
        per_slide = " ".join(f"{k} {v.dice:.3f}" for k, v in results.items())
        print(
            f"fold {i} epoch {epoch + 1:>2}/{cfg.epochs}  train {train_loss:.4f}  val {val_loss:.4f}  "
            f"Dice {mean_dice:.4f} ({per_slide})  lr {row['lr']:.1e}  {seconds:.0f} s"
            + ("  *" if improved else ""),
            flush=True,
        )
        done = bad_epochs >= cfg.patience
        return {
            "row": row,
            "best_dice": best_dice,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "done": done,
            "reason": f"early stopping, patience {cfg.patience}" if done else "",
        }

    def all_rows(self) -> list[dict[str, Any]]:
        return [row for f in sorted(self.histories) for row in self.histories[f]]

    # -- the end ----------------------------------------------------------------------------

    def finish(
        self,
        folds: Sequence[ts.Fold[ts.hubmap.SlideRecord]],
        outcomes: Mapping[int, FoldState],
        root: Path,
    ) -> None:
        """The run's end on rank 0: threshold, reports, summary, submission; ``outcomes`` are
        the selected folds' final states (as saved in ``state/fold<i>.pt``)."""
        cfg = self.cfg
        selected = list(outcomes)
        fold_of = {r.id: f.index for f in folds if f.index in selected for r in f.valid}
        images = {r.id: r.image for f in folds for r in f.valid}
        results = {s: SlideResult.load(self.oof_dir / f"{s}.npz") for s in fold_of}
        threshold, _ = best_threshold([r.curve() for r in results.values()])
        slide_dice = report.write_oof(self.run_dir / "oof.csv", results, fold_of, threshold)
        report.write_overlays(self.run_dir / "overlays", results, images, threshold, slide_dice)
        rows = self.all_rows()
        report.write_metrics(self.run_dir / "metrics.csv", rows)
        report.plot_learning_curves(self.run_dir / "learning_curves.png", rows)
        fold_dice = {
            str(f): float(np.mean([slide_dice[s] for s, g in fold_of.items() if g == f]))
            for f in selected
        }
        wall = self.elapsed()
        summary = {
            "run": self.run_dir.name,
            "run_dir": str(self.run_dir),
            "data": str(root),
            "finished": datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M"),
            "threshold": threshold,
            "fold_dice": fold_dice,
            "slide_dice": slide_dice,
            "oof_dice": float(np.mean(list(slide_dice.values()))),
            "oof_dice_at_0.5": float(np.mean([r.dice for r in results.values()])),
            "folds": {
                str(f): {
                    "valid": [s for s, g in fold_of.items() if g == f],
                    "best_epoch": st.best_epoch,
                    "epochs_run": st.epoch,
                    "stop_reason": st.stop_reason,
                }
                for f, st in outcomes.items()
            },
            "wall_s": wall,
            "data_s": self.data_s,
            "log": str(Path(cfg.out) / "experiments.md"),
        }
        if cfg.submit and any((root / "test").glob("*.tif*")):
            try:
                submission = predict(
                    PredictConfig(
                        checkpoints=str(self.run_dir),
                        data=str(root),
                        out=str(self.run_dir),
                        tta="none",
                        threshold=threshold,
                        device=str(self.ctx.device),
                        progress=False,
                    )
                )
                summary["submission"] = str(submission)
            except DataProblem as err:
                print(f"no submission.csv: {err}", flush=True)
        summary["wall_s"] = self.elapsed()
        report.append_experiment(cfg.out, cfg, summary)
        self._save_clock()
        report.write_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        print(report.format_summary(summary), flush=True)


def run(cfg: TrainConfig) -> int:
    """Train as ``cfg`` says; return the exit status (0 done, 2 bad input, 3 stopped early)."""
    started = time.monotonic()
    try:
        check_encoder(cfg.encoder)
        check_weights(cfg.weights, cfg.encoder)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Process-wide torch settings changed here are restored on the way out (callers in the
    # same process, e.g. a test session, keep theirs).
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_num_threads(),
    )
    ctx = setup(cfg.device)
    try:
        return Trainer(cfg, ctx, started).run()
    except (ConfigError, DataProblem) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StopRequested as err:
        if ctx.is_main:
            print(f"{err}; rerun the same command to resume", flush=True)
        return 3
    finally:
        ctx.close()
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_num_threads(saved[2])


def main(argv: Sequence[str] | None = None) -> int:
    """``python examples/train_glomeruli.py [flags]`` (``--help`` lists them)."""
    cfg = parse(TrainConfig, argv, description=__doc__)
    return run(cfg)
