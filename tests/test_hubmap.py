"""HuBMAP files: dataset folder, CSVs, submission.csv, with real files where present."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import tilestream as ts
from tilestream import hubmap


def test_read_dataset_records(hubmap_root: Path) -> None:
    records = hubmap.read_dataset(hubmap_root)
    assert [r.id for r in records] == sorted(r.id for r in records)
    for r in records:
        assert r.image.is_file() and r.shape[0] > 0
        assert r.patient is not None and r.info["image_file"] == r.image.name
        if r.split == "train":
            assert isinstance(r.mask, ts.RleMask) and r.mask.shape == r.shape
        else:
            assert r.mask is None
    by_json = hubmap.read_dataset(hubmap_root, labels="json", splits=("train",))
    assert all(isinstance(r.mask, ts.PolygonMask) for r in by_json)
    for a, b in zip([r for r in records if r.split == "train"], by_json, strict=True):
        box = ts.Box(0, 0, *a.shape)
        np.testing.assert_array_equal(a.mask.read(box), b.mask.read(box))


def _copy(root: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(root, dest)
    return dest


def test_missing_and_inconsistent_files(hubmap_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ts.DatasetError, match="does not exist"):
        hubmap.read_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ts.DatasetError, match="no 'train/' or 'test/'"):
        hubmap.read_dataset(tmp_path / "empty")
    root = _copy(hubmap_root, tmp_path)
    info = root / "HuBMAP-20-dataset_information.csv"
    lines = info.read_text().splitlines()
    first = lines[1].split(",")
    first[1] = str(int(first[1]) + 10)  # width disagrees with the TIFF
    lines[1] = ",".join(first)
    info.write_text("\n".join(lines) + "\n")
    train_ids = [p.stem for p in sorted((root / "train").glob("*.tiff"))]
    (root / "train" / f"{train_ids[0]}.json").unlink()
    rows = hubmap.read_rle_csv(root / "train.csv")
    del rows[train_ids[0]]
    rows["abcdef123"] = "1 2"
    hubmap.write_rle_csv(root / "train.csv", rows, value_column="encoding")
    with pytest.raises(ts.DatasetError) as err:
        hubmap.read_dataset(root)
    message = str(err.value)
    assert "says height x width" in message
    assert f"{train_ids[0]}.tiff: no labels" in message
    assert "abcdef123" in message
    assert message.count("\n  - ") == 3


def test_rle_csv_nan_cells_and_submission(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("id,encoding\na,1 3\nb,\nc,NaN\n")
    assert hubmap.read_rle_csv(path) == {"a": "1 3", "b": "", "c": ""}
    out = hubmap.write_submission(tmp_path / "submission.csv", [("x", "5 2"), ("y", float("nan"))])  # type: ignore[list-item]
    assert out.read_text() == "id,predicted\nx,5 2\ny,\n"
    assert not list(tmp_path.glob(".submission.csv.*"))
    bad = tmp_path / "bad.csv"
    bad.write_text("name,value\n")
    with pytest.raises(ts.DatasetError, match="expected columns"):
        hubmap.read_rle_csv(bad)


@pytest.mark.realdata
def test_real_information_csv_and_sample_submission(realdata: Path) -> None:
    info = hubmap.read_dataset_info(realdata / "hubmap" / "HuBMAP-20-dataset_information.csv")
    assert len(info) == 13
    assert info["0486052bb"]["width_pixels"] == "34937"
    assert info["afa5e8098"]["patient_number"] == "67347"
    sample = hubmap.read_rle_csv(realdata / "hubmap" / "sample_submission.csv")
    assert len(sample) == 5 and set(sample.values()) == {""}
