"""Kaggle "HuBMAP - Hacking the Kidney" files: the dataset folder and ``submission.csv``.

The layout (the real competition's and :func:`tilestream.synthetic.make_dataset`'s)::

    root/
      train.csv                               id,encoding  (column-major RLE, 1-based)
      HuBMAP-20-dataset_information.csv       image_file,width_pixels,height_pixels,...,patient_number,...
      sample_submission.csv                   id,predicted
      train/{id}.tiff  train/{id}.json  train/{id}-anatomical-structure.json
      test/{id}.tiff   test/{id}-anatomical-structure.json
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ._io import atomic_path
from .annotations import MaskSource, PolygonMask, RleMask
from .errors import DatasetError

__all__ = [
    "SlideRecord",
    "read_dataset",
    "read_dataset_info",
    "read_rle_csv",
    "write_rle_csv",
    "write_submission",
]

TRAIN_CSV = "train.csv"
INFO_CSV = "HuBMAP-20-dataset_information.csv"
SAMPLE_SUBMISSION = "sample_submission.csv"


@dataclass(frozen=True)
class SlideRecord:
    """One slide of a HuBMAP-layout dataset.

    Attributes
    ----------
    id : str
        Kaggle image id (file stem).
    image : Path
        The TIFF.
    split : {"train", "test"}
        The sub-folder the image is in (test slides have no labels).
    shape : (int, int)
        ``(H, W)`` at level 0 (from the information CSV, else from the TIFF).
    mask : MaskSource or None
        Glomerulus labels: the ``train.csv`` RLE, else the ``{id}.json`` polygons, else None.
    regions : PolygonMask or None
        Anatomical structures (``Cortex``, ``Medulla``, ...) from
        ``{id}-anatomical-structure.json``; class names kept in ``regions.classes``.
    patient : str or None
        ``patient_number`` from the information CSV (group key for k-fold splits).
    info : mapping
        The slide's row of the information CSV.
    """

    id: str
    image: Path
    split: Literal["train", "test"]
    shape: tuple[int, int]
    mask: MaskSource | None = None
    regions: PolygonMask | None = None
    patient: str | None = None
    info: Mapping[str, str] = field(default_factory=dict)


def read_rle_csv(path: str | os.PathLike[str], value_column: str | None = None) -> dict[str, str]:
    """Read ``id,encoding`` (train.csv) or ``id,predicted`` (submissions) into ``{id: rle}``.

    Empty or NaN cells mean an empty mask (``""``).
    """
    path = Path(path)
    if csv.field_size_limit() < 2**31 - 1:  # whole-slide RLE cells are megabytes
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        column = value_column or next((c for c in ("encoding", "predicted") if c in fields), None)
        if "id" not in fields or column is None or column not in fields:
            raise DatasetError(
                f"{path}: expected columns 'id' and 'encoding' (or 'predicted'), got {fields}"
            )
        out: dict[str, str] = {}
        for row in reader:
            value = (row.get(column) or "").strip()
            out[str(row["id"]).strip()] = "" if value.lower() in ("nan", "none") else value
    return out


def read_dataset_info(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Read ``HuBMAP-20-dataset_information.csv`` into ``{id: row}`` (id = file stem)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "image_file" not in (reader.fieldnames or []):
            raise DatasetError(f"{path}: no 'image_file' column (columns: {reader.fieldnames})")
        return {Path(row["image_file"]).stem: dict(row) for row in reader}


def _info_shape(row: Mapping[str, str]) -> tuple[int, int] | None:
    try:
        h, w = int(float(row["height_pixels"])), int(float(row["width_pixels"]))
    except (KeyError, TypeError, ValueError):
        return None
    return (h, w) if h > 0 and w > 0 else None


def read_dataset(
    root: str | os.PathLike[str],
    *,
    splits: Iterable[str] = ("train", "test"),
    labels: Literal["rle", "json"] = "rle",
) -> list[SlideRecord]:
    """Read a HuBMAP-layout folder into one :class:`SlideRecord` per slide, sorted by id.

    Parameters
    ----------
    root : path
        The dataset folder.
    splits : iterable of {"train", "test"}
        Which sub-folders to read.
    labels : {"rle", "json"}
        Glomerulus labels of training slides from ``train.csv`` (default) or from the
        ``{id}.json`` polygons. Either way the other is used when the first is missing.

    Raises
    ------
    DatasetError
        Missing folder or files, ids in ``train.csv`` without an image, sizes in the
        information CSV that disagree with the TIFF. The message lists every problem found.
    """
    from .reader import Slide

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    problems: list[str] = []
    train_rle = read_rle_csv(root / TRAIN_CSV) if (root / TRAIN_CSV).is_file() else {}
    info = read_dataset_info(root / INFO_CSV) if (root / INFO_CSV).is_file() else {}
    records: list[SlideRecord] = []
    found_any = False
    for split in splits:
        folder = root / split
        if not folder.is_dir():
            continue
        found_any = True
        for image in sorted(folder.glob("*.tif*")):
            slide_id = image.stem
            row = info.get(slide_id, {})
            shape = _info_shape(row)
            try:
                with Slide.open(image) as slide:
                    actual = slide.shape
            except Exception as err:
                problems.append(f"{image}: cannot be opened ({err})")
                continue
            if shape is not None and shape != actual:
                problems.append(
                    f"{image}: {INFO_CSV} says height x width {shape[0]} x {shape[1]}, "
                    f"the TIFF is {actual[0]} x {actual[1]}"
                )
                continue
            shape = actual
            mask: MaskSource | None = None
            polygons = folder / f"{slide_id}.json"
            if split == "train":
                rle = train_rle.get(slide_id)
                if labels == "rle" and rle is not None:
                    mask = RleMask(rle, shape)
                elif polygons.is_file():
                    mask = PolygonMask.from_geojson(polygons, shape)
                elif rle is not None:
                    mask = RleMask(rle, shape)
                else:
                    problems.append(
                        f"{image}: no labels (no row in {TRAIN_CSV} and no {polygons.name})"
                    )
            anatomy = folder / f"{slide_id}-anatomical-structure.json"
            regions = PolygonMask.from_geojson(anatomy, shape) if anatomy.is_file() else None
            patient = row.get("patient_number") or None
            records.append(
                SlideRecord(
                    id=slide_id,
                    image=image,
                    split="train" if split == "train" else "test",
                    shape=shape,
                    mask=mask,
                    regions=regions,
                    patient=str(patient) if patient is not None else None,
                    info=row,
                )
            )
    if not found_any:
        problems.append(f"{root}: no 'train/' or 'test/' folder with TIFF images")
    known = {p.stem for p in (root / "train").glob("*.tif*")}
    orphans = sorted(set(train_rle) - known)
    if orphans and any((root / "train").glob("*.tif*")):
        problems.append(f"{TRAIN_CSV} lists ids without an image in train/: {', '.join(orphans)}")
    records.sort(key=lambda r: r.id)
    if problems:
        raise DatasetError(
            f"{root}: the dataset is incomplete or inconsistent:\n  - " + "\n  - ".join(problems)
        )
    return records


def write_submission(
    path: str | os.PathLike[str], predictions: Mapping[str, str] | Iterable[tuple[str, str]]
) -> Path:
    """Write a Kaggle ``submission.csv`` (``id,predicted``) atomically; return its path.

    Rows are written in the given order; an empty prediction is an empty cell.

    Examples
    --------
    >>> import tempfile, os
    >>> p = write_submission(os.path.join(tempfile.mkdtemp(), "submission.csv"), {"a1": "3 2", "b2": ""})
    >>> p.read_text().splitlines()
    ['id,predicted', 'a1,3 2', 'b2,']
    """
    return write_rle_csv(path, predictions, value_column="predicted")


def write_rle_csv(
    path: str | os.PathLike[str],
    rows: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    value_column: str = "predicted",
) -> Path:
    """Write ``id,<value_column>`` rows (``train.csv`` uses ``encoding``) atomically."""
    items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", value_column])
        for slide_id, rle in items:
            if isinstance(rle, float) and math.isnan(rle):
                rle = ""
            writer.writerow([slide_id, rle])
    return Path(path)
