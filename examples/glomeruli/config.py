"""Settings: one frozen keyword-only dataclass per script; the command-line flags are its fields.

``TrainConfig`` holds every training flag (``--batch-size`` is ``batch_size``), validates them in
``__post_init__`` and is saved as ``config.json`` in each run folder. ``PredictConfig`` does the
same for ``predict_glomeruli.py``. Parsers are built from the fields, so a new setting is one new
field with a ``help`` entry in its metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

__all__ = [
    "AUGMENTS",
    "ConfigError",
    "PredictConfig",
    "TrainConfig",
    "build_parser",
    "parse",
]

Arch = Literal["unet", "linknet", "fpn", "unetplusplus"]
LossName = Literal["bce", "dice", "jaccard", "bce_jaccard", "bce_dice", "lovasz", "focal"]
OptimizerName = Literal["adam", "adamw", "sgd"]
SchedulerName = Literal["onecycle", "cosine", "none"]
TTAName = Literal["none", "flips", "d4"]
AUGMENTS = ("none", "flips", "d4", "color", "noise")

#: Fields that do not change what a run computes: left out of the run name's hash and of the
#: "what changed" column of the experiment log.
BOOKKEEPING = frozenset(
    {"out", "name", "note", "fresh", "progress", "workers", "submit", "stop_after_epochs"}
)


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; the message names the flag and the fix."""


def _help(text: str, *, hidden: bool = False) -> dict[str, Any]:
    return {"help": text, "hidden": hidden}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything ``train_glomeruli.py`` does; each field is the flag ``--field-name``."""

    data: str | None = field(
        default=None,
        metadata=_help(
            "HuBMAP-layout folder (train/, test/, train.csv, HuBMAP-20-dataset_information.csv); "
            "default: a small synthetic dataset built once into .cache/"
        ),
    )
    arch: Arch = field(default="unet", metadata=_help("segmentation-models-pytorch architecture"))
    encoder: str = field(
        default="resnet18",
        metadata=_help("encoder name (efficientnet-b0..b7, resnet18/34/50, mobilenet_v2, ...)"),
    )
    weights: str | None = field(
        default=None,
        metadata=_help(
            "local file with pretrained weights (a state dict of the whole model or of the "
            "encoder); nothing is ever downloaded"
        ),
    )
    loss: LossName = field(default="bce_dice", metadata=_help("training loss"))
    tile: int = field(default=1024, metadata=_help("tile side in level-0 pixels"))
    reduce: int = field(
        default=8, metadata=_help("reduce factor: the model sees tile/reduce pixels per side")
    )
    overlap: int = field(
        default=256, metadata=_help("overlap of validation/prediction windows, level-0 pixels")
    )
    batch_size: int = field(default=16, metadata=_help("tiles per batch (per process)"))
    lr: float = field(default=3e-3, metadata=_help("peak learning rate"))
    weight_decay: float = field(default=1e-4, metadata=_help("weight decay"))
    epochs: int = field(default=5, metadata=_help("epochs per fold (early stopping may end it)"))
    samples_per_epoch: int = field(
        default=256, metadata=_help("training tiles per epoch, over all processes")
    )
    val_samples: int = field(
        default=48, metadata=_help("fixed validation tiles for the tile-level validation loss")
    )
    positive_fraction: float = field(
        default=0.5, metadata=_help("share of tiles centred on a glomerulus")
    )
    min_tissue: float = field(
        default=0.25, metadata=_help("minimum tissue fraction of a random training tile")
    )
    optimizer: OptimizerName = field(default="adamw", metadata=_help("optimizer"))
    lookahead: bool = field(default=False, metadata=_help("wrap the optimizer in Lookahead"))
    scheduler: SchedulerName = field(
        default="onecycle", metadata=_help("learning-rate schedule (stepped per batch)")
    )
    amp: bool = field(
        default=False,
        metadata=_help("mixed precision (float16 on CUDA, bfloat16 on CPU: slow on most CPUs)"),
    )
    augment: str = field(
        default="d4,color",
        metadata=_help(f"augmentations, comma-separated: {', '.join(AUGMENTS)}"),
    )
    folds: int = field(default=3, metadata=_help("k of the patient-grouped k-fold split"))
    fold: str = field(default="all", metadata=_help("fold to train: an index or 'all'"))
    patience: int = field(
        default=4, metadata=_help("early stopping: epochs without a better slide Dice")
    )
    seed: int = field(default=0, metadata=_help("seed of everything random"))
    workers: int = field(default=0, metadata=_help("DataLoader workers per process"))
    time_budget: float = field(
        default=9.0,
        metadata=_help(
            "minutes for the whole run (data, all folds, report); later epochs are skipped to "
            "fit; 0: no limit"
        ),
    )
    device: str | None = field(
        default=None, metadata=_help("torch device (default: cuda when available, else cpu)")
    )
    out: str = field(default="runs", metadata=_help("folder of run folders and the experiment log"))
    name: str | None = field(
        default=None,
        metadata=_help(
            "run folder name (default: arch-encoder-<hash of the settings>, so rerunning the "
            "same command resumes it)"
        ),
    )
    note: str = field(default="", metadata=_help("free text for the experiment log"))
    fresh: bool = field(
        default=False, metadata=_help("delete the run folder first instead of resuming it")
    )
    submit: bool = field(
        default=True,
        metadata=_help(
            "at the end, write submission.csv for the test slides with the fold ensemble "
            "(no TTA; predict_glomeruli.py adds it)"
        ),
    )
    progress: bool = field(default=True, metadata=_help("progress bars"))
    stop_after_epochs: int | None = field(
        default=None,
        metadata=_help(
            "(dev) exit with status 3 after this many epochs, as if killed", hidden=True
        ),
    )

    def __post_init__(self) -> None:
        def bad(flag: str, message: str) -> ConfigError:
            return ConfigError(f"--{flag.replace('_', '-')}: {message}")

        if self.tile <= 0 or self.reduce <= 0:
            raise bad("tile", f"tile and reduce must be positive, got {self.tile}, {self.reduce}")
        if self.tile % self.reduce:
            raise bad("tile", f"must be a multiple of --reduce {self.reduce}, got {self.tile}")
        if (self.tile // self.reduce) % 32:
            raise bad(
                "tile",
                f"the model input tile/reduce = {self.tile // self.reduce} px must be a multiple "
                "of 32 (encoders downsample 5 times)",
            )
        if not 0 <= self.overlap < self.tile or self.overlap % self.reduce:
            raise bad(
                "overlap",
                f"must be in [0, tile={self.tile}) and a multiple of --reduce {self.reduce}, "
                f"got {self.overlap}",
            )
        for name in ("batch_size", "epochs", "samples_per_epoch", "val_samples", "patience"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.samples_per_epoch < self.batch_size:
            raise bad(
                "samples_per_epoch",
                f"must be >= --batch-size {self.batch_size}, got {self.samples_per_epoch}",
            )
        if not self.lr > 0:
            raise bad("lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        for name in ("positive_fraction", "min_tissue"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, f"must be in [0, 1], got {getattr(self, name)}")
        if self.folds < 2:
            raise bad("folds", f"must be >= 2, got {self.folds}")
        if self.fold != "all":
            try:
                index = int(self.fold)
            except ValueError:
                raise bad("fold", f"must be an index or 'all', got {self.fold!r}") from None
            if not 0 <= index < self.folds:
                raise bad("fold", f"must be in [0, {self.folds}) or 'all', got {index}")
        parts = [p.strip() for p in self.augment.split(",") if p.strip()]
        unknown = [p for p in parts if p not in AUGMENTS]
        if unknown or not parts:
            raise bad("augment", f"unknown {unknown or [self.augment]}; choose from {AUGMENTS}")
        object.__setattr__(self, "augment", ",".join(parts))
        if self.time_budget < 0:
            raise bad("time_budget", f"must be >= 0 minutes (0: no limit), got {self.time_budget}")
        if self.workers < 0:
            raise bad("workers", f"must be >= 0, got {self.workers}")
        if self.name is not None and (
            not self.name or "/" in self.name or self.name in {".", ".."}
        ):
            raise bad("name", f"must be a plain folder name, got {self.name!r}")
        if self.stop_after_epochs is not None and self.stop_after_epochs < 1:
            raise bad("stop_after_epochs", f"must be >= 1, got {self.stop_after_epochs}")

    # -- derived ----------------------------------------------------------------------------

    @property
    def input_px(self) -> int:
        """Side of the model input in pixels."""
        return self.tile // self.reduce

    @property
    def augmentations(self) -> tuple[str, ...]:
        """The ``--augment`` list without ``none``."""
        return tuple(p for p in self.augment.split(",") if p != "none")

    def fold_indices(self) -> list[int]:
        """The folds ``--fold`` selects."""
        return list(range(self.folds)) if self.fold == "all" else [int(self.fold)]

    def settings(self) -> dict[str, Any]:
        """The fields that change what a run computes (bookkeeping fields left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in BOOKKEEPING}

    def digest(self) -> str:
        """Eight hex digits identifying :meth:`settings`."""
        text = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:8]

    def run_name(self) -> str:
        """``--name``, else ``<arch>-<encoder>-<digest>``."""
        return self.name or f"{self.arch}-{self.encoder}-{self.digest()}"


@dataclass(frozen=True, kw_only=True)
class PredictConfig:
    """Everything ``predict_glomeruli.py`` does; each field is the flag ``--field-name``."""

    checkpoints: str = field(
        metadata=_help("run folder holding fold<i>.pt, config.json and oof.csv")
    )
    data: str | None = field(
        default=None,
        metadata=_help("HuBMAP-layout folder whose test/*.tiff to predict (default: the run's)"),
    )
    split: Literal["test", "train"] = field(default="test", metadata=_help("slides to predict"))
    tta: TTAName = field(default="flips", metadata=_help("test-time augmentation"))
    threshold: float | None = field(
        default=None, metadata=_help("probability cut (default: the run's out-of-fold threshold)")
    )
    batch_size: int = field(default=16, metadata=_help("windows per forward pass"))
    overlap: int | None = field(
        default=None, metadata=_help("window overlap in level-0 px (default: the run's)")
    )
    out: str | None = field(
        default=None, metadata=_help("output folder (default: <checkpoints>/predict)")
    )
    dask: int = field(
        default=0, metadata=_help("predict slides in parallel on a local dask cluster of N workers")
    )
    workers: int = field(default=0, metadata=_help("DataLoader workers reading windows"))
    device: str | None = field(default=None, metadata=_help("torch device"))
    progress: bool = field(default=True, metadata=_help("progress bars"))

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"--threshold: must be in (0, 1), got {self.threshold}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size: must be >= 1, got {self.batch_size}")
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"--overlap: must be >= 0, got {self.overlap}")
        if self.dask < 0 or self.workers < 0:
            raise ConfigError("--dask and --workers must be >= 0")


# --------------------------------------------------------------------------------------------
# Command lines from dataclasses
# --------------------------------------------------------------------------------------------

C = TypeVar("C", TrainConfig, PredictConfig)


def _unwrap_optional(tp: Any) -> Any:
    """``X`` for ``X | None``, else ``tp``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def build_parser(cls: type[C], description: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one ``--flag`` per field of ``cls`` (booleans get ``--no-``)."""
    parser = argparse.ArgumentParser(
        description=description or cls.__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = argparse.SUPPRESS if f.metadata.get("hidden") else f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        tp = _unwrap_optional(hints[f.name])
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(tp) is Literal:
            kwargs["choices"] = list(get_args(tp))
        elif tp in (int, float, str):
            kwargs["type"] = tp
            kwargs["metavar"] = {"int": "N", "float": "X", "str": "TEXT"}[tp.__name__]
            if f.name in ("data", "weights", "checkpoints", "out"):
                kwargs["metavar"] = "PATH"
        else:  # pragma: no cover - a field of an unsupported type is a programming error
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported type {tp!r}")
        parser.add_argument(flag, **kwargs)
    return parser


def parse(cls: type[C], argv: Sequence[str] | None = None, description: str | None = None) -> C:
    """Parse ``argv`` into ``cls``; bad values exit with status 2 and the flag's message."""
    parser = build_parser(cls, description)
    namespace = parser.parse_args(argv)
    try:
        return cls(**vars(namespace))
    except ConfigError as err:
        parser.error(str(err))  # exits with status 2
        raise  # pragma: no cover


def from_json(cls: type[C], text: str) -> C:
    """Rebuild a config from ``config.json`` (unknown keys ignored, so old runs still load)."""
    data = json.loads(text)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
