"""Data: the dataset folder (real Kaggle layout or the cached synthetic default), tile datasets,
and augmentation that depends only on each sample's address.

Augmentations run in the DataLoader's collate (so in the workers), seeded per sample from
``(seed, epoch, sample index)``: a resumed or re-sharded epoch sees exactly the same augmented
tiles as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tilestream as ts

from .config import TrainConfig

__all__ = [
    "DEFAULT_SYNTHETIC",
    "AugmentCollate",
    "DataProblem",
    "build_augment",
    "load_records",
    "synthetic_root",
    "tile_dataset",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The default data: 6 training slides of about 3000 x 4000 px from 3 patients and 2 test
#: slides, in the three HuBMAP TIFF layouts (built in ~1 minute on 2 cores, ~40 MB).
DEFAULT_SYNTHETIC = ts.synthetic.DatasetSpec(
    n_train=6, n_test=2, height=3000, width=4000, patients=3, seed=0
)


class DataProblem(RuntimeError):
    """The data cannot be used as given; the message lists what is wrong (exit status 2)."""


def synthetic_root(spec: ts.synthetic.DatasetSpec = DEFAULT_SYNTHETIC) -> Path:
    """The cache folder of a synthetic dataset: ``<repo>/.cache/synthetic-hubmap-<hash>``.

    ``TILESTREAM_EXAMPLES_CACHE`` replaces ``<repo>/.cache`` (a test and debug switch).
    """
    digest = hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:10]
    base = Path(os.environ.get("TILESTREAM_EXAMPLES_CACHE", REPO_ROOT / ".cache"))
    return base / f"synthetic-hubmap-{digest}"


def build_synthetic(spec: ts.synthetic.DatasetSpec = DEFAULT_SYNTHETIC) -> Path:
    """Build (once; later calls return at once) the synthetic dataset and return its folder."""
    root = synthetic_root(spec)
    root.mkdir(parents=True, exist_ok=True)
    return ts.synthetic.make_dataset(root, spec)


def load_records(
    root: str | os.PathLike[str], splits: Sequence[str] = ("train",)
) -> list[ts.hubmap.SlideRecord]:
    """The slides of ``splits`` in a HuBMAP-layout folder; problems become one
    :class:`DataProblem` listing all of them."""
    root = Path(root)
    if not root.exists():
        raise DataProblem(f"--data {root}: the folder does not exist")
    try:
        records = ts.hubmap.read_dataset(root, splits=tuple(splits))
    except ts.DatasetError as err:
        raise DataProblem(
            f"--data {root}: cannot use this dataset.\n{err}\n"
            "Expected the Kaggle 'HuBMAP - Hacking the Kidney' layout: train/<id>.tiff, "
            "train.csv (id,encoding), HuBMAP-20-dataset_information.csv, test/<id>.tiff."
        ) from err
    for split in splits:
        if not any(r.split == split for r in records):
            raise DataProblem(f"--data {root}: no slides in {root / split}")
    return records


def make_folds(
    records: Sequence[ts.hubmap.SlideRecord], k: int
) -> list[ts.Fold[ts.hubmap.SlideRecord]]:
    """Patient-grouped folds of the training slides (all slides of a patient in one fold)."""
    train = [r for r in records if r.split == "train"]
    orphans = [r.id for r in train if r.patient is None]
    if orphans:
        print(
            f"note: {len(orphans)} training slide(s) have no patient number (no row in "
            "HuBMAP-20-dataset_information.csv?); each is its own group in the folds",
            flush=True,
        )
    try:
        return ts.folds(train, k, group="patient")
    except ValueError as err:
        patients = sorted({r.patient or r.id for r in train})
        raise DataProblem(
            f"--folds {k}: {err}; the training slides belong to {len(patients)} patient(s): "
            f"{', '.join(patients)}"
        ) from err


def tile_dataset(
    cfg: TrainConfig,
    records: Sequence[ts.hubmap.SlideRecord],
    *,
    samples: int,
    seed: int,
) -> ts.TileDataset:
    """Random tiles (tissue-filtered, partly centred on glomeruli) of ``records``."""
    sampler = ts.RandomSampler(
        cfg.tile,
        reduce=cfg.reduce,
        min_tissue=cfg.min_tissue,
        positive_fraction=cfg.positive_fraction,
        jitter=0.35,
    )
    sources = [ts.SlideSource.from_record(r) for r in records]
    return ts.TileDataset(sources, sampler, samples_per_epoch=samples, seed=seed)


def build_augment(names: Sequence[str]) -> Any:
    """An albumentations ``Compose`` of the named groups, or ``None`` for no augmentation.

    ``flips``: horizontal and vertical flips; ``d4``: the 8 symmetries of the square;
    ``color``: hue/saturation/brightness/contrast jitter (stain variation); ``noise``: Gaussian
    noise and blur.
    """
    names = [n for n in names if n != "none"]
    if not names:
        return None
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never phone home
    import albumentations as A

    steps: list[Any] = []
    if "d4" in names:
        steps.append(A.D4(p=1.0))
    elif "flips" in names:
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if "color" in names:
        steps += [
            A.HueSaturationValue(hue_shift_limit=20, sat_shift_limit=40, val_shift_limit=20, p=0.9),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        ]
    if "noise" in names:
        steps += [
            A.GaussNoise(std_range=(0.01, 0.05), p=0.4),
            A.GaussianBlur(blur_limit=(3, 3), p=0.2),
        ]
    return A.Compose(steps)


class AugmentCollate:
    """Collate ``TileDataset`` samples into a batch, augmenting each one first.

    Sample ``g`` of epoch ``e`` (its ``index`` and ``epoch``, as ``TileDataset`` yields them)
    is augmented with the seed ``(seed, e, g)``, whatever process or worker handles it, so the
    collate holds no per-epoch state and persistent DataLoader workers need no update.
    """

    def __init__(self, augment: Any, seed: int) -> None:
        self.augment = augment
        self.seed = seed

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        images, masks = [], []
        for sample in samples:
            image = sample["image"]
            mask = sample["mask"]
            if self.augment is not None:
                address = [self.seed, int(sample["epoch"]), int(sample["index"])]
                state = np.random.SeedSequence(address)
                self.augment.set_random_seed(int(state.generate_state(1)[0]))
                out = self.augment(image=image.permute(1, 2, 0).numpy(), mask=mask[0].numpy())
                image = torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1)
                mask = torch.from_numpy(np.ascontiguousarray(out["mask"]))[None]
            images.append(image)
            masks.append(mask)
        return {
            "image": torch.stack(images),
            "mask": torch.stack(masks),
            "index": torch.tensor([int(s["index"]) for s in samples]),
            "slide": [s["slide"] for s in samples],
        }
