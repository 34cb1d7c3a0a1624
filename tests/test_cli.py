"""The tilestream command: info and thumbnail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch
import zarr

import tilestream as ts
from tilestream.cli import main


def test_info_table_and_json(pyramid_slide: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(pyramid_slide)]) == 0
    out = capsys.readouterr().out
    assert "900 x 1300 px" in out
    assert "JPEG (7)" in out
    assert "128 x 128" in out
    assert main(["info", "--json", str(pyramid_slide)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [900, 1300]
    assert len(info["levels"]) == 5


def test_thumbnail_png(pyramid_slide: Path, tmp_path: Path) -> None:
    out = tmp_path / "thumb.png"
    assert main(["thumbnail", str(pyramid_slide), "-o", str(out), "--max-size", "200"]) == 0
    image = imagecodecs.png_decode(out.read_bytes())
    with ts.Slide.open(pyramid_slide) as slide:
        np.testing.assert_array_equal(image, slide.thumbnail(max_size=200))
    assert not list(tmp_path.glob(".tmp-*"))
    assert main(["thumbnail", str(pyramid_slide), "-o", str(out), "--reduce", "8"]) == 0
    assert imagecodecs.png_decode(out.read_bytes()).shape == (113, 163, 3)


def test_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.tif" in err and "not a TIFF" in err
    assert main(["info", str(tmp_path / "missing.tif")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_console_script(pyramid_slide: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tilestream.cli", "info", str(pyramid_slide)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "levels" in result.stdout


def test_synthetic_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    args = ["synthetic", str(out), "--train", "2", "--test", "1", "--size", "600x800", "--stripped"]
    assert main(args) == 0
    assert "2 train, 1 test" in capsys.readouterr().out
    records = ts.hubmap.read_dataset(out)
    assert len(records) == 3
    assert records[0].info != {}
    assert main(["synthetic", str(out), "--size", "60x"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert main(["synthetic", str(out), "--train", "1", "--size", "600x800"]) == 2
    assert "another spec" in capsys.readouterr().err


def test_tiles_contact_sheet(hubmap_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    assert main(["tiles", str(hubmap_root), "-o", str(out), "-n", "4", "--tile", "256"]) == 0
    sheet = imagecodecs.png_decode(out.read_bytes())
    assert sheet.shape == (2 * 68 + 4, 2 * 68 + 4, 3)
    assert ((sheet == (0, 220, 0)).all(axis=2)).any()  # some glomerulus outline drawn
    record = next(r for r in ts.hubmap.read_dataset(hubmap_root) if r.split == "train")
    args = [
        "tiles",
        str(record.image),
        "-o",
        str(out),
        "--sampler",
        "grid",
        "-n",
        "3",
        "--mask",
        str(record.image.with_suffix(".json")),
        "--tile",
        "512",
    ]
    assert main(args) == 0
    csv_args = [
        "tiles",
        str(record.image),
        "-o",
        str(out),
        "-n",
        "2",
        "--mask",
        str(hubmap_root / "train.csv"),
    ]
    assert main(csv_args) == 0
    assert main(["tiles", str(hubmap_root), "-o", str(out), "--slide", "nope"]) == 2


class _Dark(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.55 - x[:, :1]) * 40.0


def test_predict_and_overlay_commands(hubmap_root: Path, tmp_path: Path) -> None:
    model_path = tmp_path / "model.pt2"
    batch = torch.export.Dim("batch")
    exported = torch.export.export(
        _Dark(), (torch.rand(2, 3, 128, 128),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(exported, model_path)
    records = ts.hubmap.read_dataset(hubmap_root)
    slides = [str(r.image) for r in records[:2]]
    out = tmp_path / "submission.csv"
    args = [
        "predict",
        str(model_path),
        *slides,
        "-o",
        str(out),
        "--tile",
        "512",
        "--reduce",
        "4",
        "--overlap",
        "64",
        "--tta",
        "flips",
    ]
    assert main(args) == 0
    rows = ts.hubmap.read_rle_csv(out)
    assert list(rows) == [r.id for r in records[:2]]
    assert all(rows.values())
    half = tmp_path / "half"
    again = [half / "s.csv" if a == str(out) else a for a in args]
    assert main([str(a) for a in again] + ["--dtype", "float16", "--work-dir", str(half)]) == 0
    assert list(ts.hubmap.read_rle_csv(half / "s.csv")) == list(rows)
    kept = zarr.open_group(str(half / f"{records[0].id}.zarr"), mode="r")
    assert kept["sums"].dtype == np.float16
    overlay = tmp_path / "overlay.png"
    train = next(r for r in records if r.split == "train")
    args = [
        "overlay",
        str(train.image),
        "--truth",
        str(hubmap_root / "train.csv"),
        "--pred",
        str(train.image.with_suffix(".json")),
        "-o",
        str(overlay),
        "--max-size",
        "400",
    ]
    assert main(args) == 0
    picture = imagecodecs.png_decode(overlay.read_bytes())
    assert max(picture.shape[:2]) <= 400
    assert ((picture == (0, 200, 0)).all(axis=2)).any() and (
        (picture == (230, 0, 200)).all(axis=2)
    ).any()
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert main(["predict", str(tmp_path / "junk.pt"), slides[0], "-o", str(out)]) == 2


def test_load_model_torchscript(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        scripted = torch.jit.trace(_Dark(), torch.rand(1, 3, 16, 16))
        torch.jit.save(scripted, tmp_path / "model.pt")
    loaded = ts.load_model(tmp_path / "model.pt")
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(loaded(x), _Dark()(x))


def test_load_model_state_dict_checkpoint(tmp_path: Path) -> None:
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = smp.create_model("unet", encoder_name="resnet18", encoder_weights=None, classes=1)
    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "format": "tilestream-smp-v1",
            "arch": "unet",
            "encoder": "resnet18",
            "classes": 1,
            "state_dict": model.state_dict(),
        },
        path,
    )
    loaded = ts.load_model(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model.eval()(x))
    torch.save({"weights": 1}, path)
    with pytest.raises(ValueError, match="neither TorchScript"):
        ts.load_model(path)
