"""The examples package (examples/glomeruli): a tiny training run end to end, prediction, resume
after a stop, torchrun with two gloo processes, and the messages for bad input.

Runs use a tiny synthetic dataset (3 training slides of ~800 x 1000 px from 2 patients, 1 test
slide), 2 folds, one epoch of 16 tiles of 64 px (tile 256 at reduce 4).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("albumentations")
pytest.importorskip("matplotlib")
pytest.importorskip("cv2")

import torch

import tilestream as ts

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.glomeruli import config, evaluate, losses, models, optim, predict, report, train  # noqa: E402
from examples.glomeruli.data import AugmentCollate, build_augment  # noqa: E402

TRAIN_SCRIPT = REPO / "examples" / "train_glomeruli.py"
PREDICT_SCRIPT = REPO / "examples" / "predict_glomeruli.py"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hubmap-tiny")
    spec = ts.synthetic.DatasetSpec(n_train=3, n_test=1, height=800, width=1000, patients=2, seed=3)
    return ts.synthetic.make_dataset(root, spec)


def tiny_flags(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(data),
        "--out",
        str(out),
        "--encoder",
        "resnet18",
        "--tile",
        "256",
        "--reduce",
        "4",
        "--overlap",
        "64",
        "--samples-per-epoch",
        "16",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--folds",
        "2",
        "--val-samples",
        "8",
        "--no-progress",
        "--time-budget",
        "0",
        *extra,
    ]


def run_script(
    args: list[str], timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"} | env
    return subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=environment
    )


@pytest.fixture(scope="module")
def trained_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert train.main(tiny_flags(tiny_data, out, "--note", "tiny test")) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------------
# The main job end to end
# --------------------------------------------------------------------------------------------


def test_train_writes_the_run_folder(trained_run: Path, tiny_data: Path) -> None:
    records = [r for r in ts.hubmap.read_dataset(tiny_data) if r.split == "train"]
    ids = {r.id for r in records}
    for name in (
        "config.json",
        "metrics.csv",
        "learning_curves.png",
        "oof.csv",
        "summary.json",
        "fold0.pt",
        "fold1.pt",
    ):
        assert (trained_run / name).is_file(), name
    saved = json.loads((trained_run / "config.json").read_text())
    assert saved["tile"] == 256 and saved["reduce"] == 4 and saved["note"] == "tiny test"
    metrics = read_csv(trained_run / "metrics.csv")
    assert [(r["fold"], r["epoch"]) for r in metrics] == [("0", "1"), ("1", "1")]
    assert {k[5:] for k in metrics[0] if k.startswith("dice_")} == ids
    for row in metrics:
        assert 0.0 <= float(row["val_dice"]) <= 1.0
        assert float(row["train_loss"]) > 0 and float(row["val_loss"]) > 0
    assert (trained_run / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.stem for p in (trained_run / "overlays").glob("*.png")} == ids
    oof = read_csv(trained_run / "oof.csv")
    assert {r["slide"] for r in oof} == ids
    summary = json.loads((trained_run / "summary.json").read_text())
    assert 0.0 < summary["threshold"] < 1.0
    assert set(summary["fold_dice"]) == {"0", "1"}
    (test,) = [r for r in ts.hubmap.read_dataset(tiny_data) if r.split == "test"]
    assert [r["id"] for r in read_csv(trained_run / "submission.csv")] == [test.id]


def test_checkpoints_load_with_tilestream(trained_run: Path) -> None:
    model = ts.load_model(trained_run / "fold0.pt")
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    raw = torch.load(trained_run / "fold0.pt", weights_only=False)
    assert raw["format"] == "tilestream-smp-v1" and raw["encoder"] == "resnet18"


def test_experiment_log_row(trained_run: Path) -> None:
    out = trained_run.parent
    rows = read_csv(out / "experiments.csv")
    assert len(rows) == 1
    row = rows[0]
    assert row["run"] == trained_run.name and row["changed"] == "first run"
    assert row["note"] == "tiny test" and len(row["fold_dice"].split()) == 2
    assert float(row["cv_std"]) >= 0 and 0 < float(row["threshold"]) < 1
    md = (out / "experiments.md").read_text()
    assert f"`{trained_run.name}`" in md and "first run" in md


def test_rerunning_a_finished_run_does_not_train_again(
    trained_run: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main(tiny_flags(tiny_data, trained_run.parent, "--note", "tiny test")) == 0
    assert "this run is complete" in capsys.readouterr().out
    assert len(read_csv(trained_run.parent / "experiments.csv")) == 1


def test_config_changes_against_the_previous_run(tmp_path: Path) -> None:
    first = config.TrainConfig(lr=1e-3, note="a")
    second = config.TrainConfig(lr=3e-3, epochs=7, note="b", workers=2)
    assert report.config_changes(None, first.settings()) == "first run"
    changed = report.config_changes(first.settings(), second.settings())
    assert changed == "lr 0.001 -> 0.003; epochs 5 -> 7"  # note, workers: bookkeeping
    assert report.config_changes(first.settings(), first.settings()) == "same settings"
    summary = {
        "run": "r1",
        "finished": "now",
        "wall_s": 60.0,
        "fold_dice": {"0": 0.9, "1": 0.8},
        "oof_dice": 0.85,
        "threshold": 0.45,
    }
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "config.json").write_text(json.dumps(first.settings()))
    report.append_experiment(tmp_path, first, summary)
    row = report.append_experiment(tmp_path, second, summary | {"run": "r2"})
    assert row["changed"] == changed and row["n"] == 2
    assert row["cv_mean"] == pytest.approx(0.85) and row["cv_std"] == pytest.approx(0.05)
    assert (tmp_path / "experiments.md").read_text().count("\n| ") == 3  # header + 2 rows


def test_predict_writes_a_submission(trained_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    assert (
        predict.main(["--checkpoints", str(trained_run), "--out", str(out), "--no-progress"]) == 0
    )
    rows = read_csv(out / "submission.csv")
    (test,) = [r for r in ts.hubmap.read_dataset(tiny_data) if r.split == "test"]
    assert [r["id"] for r in rows] == [test.id]
    mask = ts.RleMask(rows[0]["predicted"], test.shape)  # a valid RLE for the slide
    assert mask.shape == test.shape


def test_fold_ensemble_averages_probabilities() -> None:
    class Constant(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 1, *x.shape[2:]), self.value)

    ensemble = predict.FoldEnsemble([Constant(0.0), Constant(2.0)])
    out = ensemble(torch.zeros(2, 3, 4, 4))
    expected = (0.5 + torch.sigmoid(torch.tensor(2.0))) / 2
    assert torch.allclose(out, torch.full((2, 1, 4, 4), float(expected)))


# --------------------------------------------------------------------------------------------
# Resume, torchrun, dask
# --------------------------------------------------------------------------------------------


def assert_same_as_uninterrupted(
    resumed: list[dict[str, str]], data: Path, tmp_path: Path, epochs: int
) -> None:
    """The metrics of an interrupted and resumed fold-0 run equal those of a straight run."""
    straight = tmp_path / "straight"
    assert train.main(tiny_flags(data, straight, "--epochs", str(epochs), "--fold", "0")) == 0
    (straight_dir,) = straight.glob("unet-*")
    reference = read_csv(straight_dir / "metrics.csv")
    for got, want in zip(resumed, reference, strict=True):
        for key in ("train_loss", "val_loss", "val_dice"):
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_resume_after_a_stop_continues_exactly(tiny_data: Path, tmp_path: Path) -> None:
    flags = tiny_flags(tiny_data, tmp_path / "runs", "--epochs", "2", "--fold", "0")
    first = run_script([sys.executable, str(TRAIN_SCRIPT), *flags, "--stop-after-epochs", "1"])
    assert first.returncode == 3, first.stderr
    assert "rerun the same command to resume" in first.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    state = torch.load(run_dir / "state" / "fold0.pt", weights_only=False)
    assert state["fold"]["epoch"] == 1 and not state["fold"]["done"]
    assert not (run_dir / "summary.json").exists()

    second = run_script([sys.executable, str(TRAIN_SCRIPT), *flags])
    assert second.returncode == 0, second.stderr
    assert "resuming after epoch 1" in second.stdout
    assert "epoch  1/2" not in second.stdout  # epoch 1 was not trained again
    resumed = read_csv(run_dir / "metrics.csv")
    assert [r["epoch"] for r in resumed] == ["1", "2"]

    # The same run without the stop gives the same numbers (same seed, same sample stream).
    assert_same_as_uninterrupted(resumed, tiny_data, tmp_path, epochs=2)


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_and_matches(tiny_data: Path, tmp_path: Path) -> None:
    """A real kill (SIGKILL, no clean-up) after the first checkpoint: the rerun resumes from it
    and ends with the numbers of an uninterrupted run."""
    import signal
    import time

    flags = tiny_flags(tiny_data, tmp_path / "runs", "--epochs", "3", "--fold", "0")
    environment = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), *flags],
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "runs").glob("*/state/fold0.pt")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "summary.json").exists()

    rerun = run_script([sys.executable, str(TRAIN_SCRIPT), *flags])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming after epoch" in rerun.stdout
    resumed = read_csv(run_dir / "metrics.csv")
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"]

    assert_same_as_uninterrupted(resumed, tiny_data, tmp_path, epochs=3)


@pytest.mark.slow
def test_persistent_loader_workers_train_exactly_as_one_process(
    tiny_data: Path, tmp_path: Path
) -> None:
    """Two persistent DataLoader workers over two epochs feed the same augmented tiles in the
    same batches as no workers, so the run's numbers are the same."""
    metrics = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        flags = tiny_flags(tiny_data, out, "--epochs", "2", "--fold", "0")
        assert train.main([*flags, "--workers", str(workers)]) == 0
        (run_dir,) = out.glob("unet-*")
        metrics.append(read_csv(run_dir / "metrics.csv"))
    for got, want in zip(metrics[1], metrics[0], strict=True):
        for key in ("train_loss", "val_loss", "val_dice"):
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5, abs=1e-7), key


def test_gpu_check_runs_on_cpu(tiny_data: Path, tmp_path: Path) -> None:
    """The prepared GPU check (examples/gpu_check.py) end to end, on CPU with tiny settings."""
    from examples.glomeruli import gpu_check

    out = tmp_path / "check"
    flags = ["--device", "cpu", "--data", str(tiny_data), "--tile", "256", "--reduce", "4"]
    flags += ["--overlap", "64", "--batch-size", "4", "--workers", "0", "--steps", "2"]
    flags += ["--epochs", "1", "--samples-per-epoch", "8", "--folds", "2", "--minutes", "0"]
    assert gpu_check.main([*flags, "--out", str(out)]) == 0
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["synthetic"]["images_per_s"] > 0 and result["loader"]["images_per_s"] > 0
    assert 0 <= result["loader"]["waiting_share"] <= 1
    assert result["predict"]["mpx_per_s"] > 0
    assert 0 <= result["recipe"]["oof_dice"] <= 1
    assert "| train step, fed by TileDataset |" in (out / "gpu_check.md").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_gloo_processes(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    result = run_script(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            str(TRAIN_SCRIPT),
            *tiny_flags(tiny_data, out, "--fold", "0"),
        ],
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    assert (run_dir / "summary.json").is_file() and (run_dir / "fold0.pt").is_file()
    assert result.stdout.count("CV Dice") == 1  # only rank 0 reports
    assert len(read_csv(out / "experiments.csv")) == 1


@pytest.mark.slow
def test_predict_with_dask_matches_serial(trained_run: Path, tmp_path: Path) -> None:
    serial, parallel = tmp_path / "serial", tmp_path / "dask"
    common = ["--checkpoints", str(trained_run), "--tta", "none", "--no-progress"]
    assert predict.main([*common, "--out", str(serial)]) == 0
    result = run_script(
        [sys.executable, str(PREDICT_SCRIPT), *common, "--out", str(parallel), "--dask", "2"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_csv(parallel / "submission.csv") == read_csv(serial / "submission.csv")


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert train.main(tiny_flags(missing, tmp_path / "runs")) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err


def test_incomplete_data_folder_lists_every_problem(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_data, broken)
    records = [r for r in ts.hubmap.read_dataset(broken) if r.split == "train"]
    (broken / "train" / f"{records[0].id}.tiff").unlink()  # train.csv still lists it
    info = broken / "HuBMAP-20-dataset_information.csv"
    text = info.read_text().replace(f",{records[1].shape[1]},{records[1].shape[0]},", ",10,10,", 1)
    info.write_text(text)
    assert train.main(tiny_flags(broken, tmp_path / "runs")) == 2
    err = capsys.readouterr().err
    assert "cannot use this dataset" in err
    assert records[0].id in err and "without an image" in err
    assert records[1].id in err and "10 x 10" in err
    assert not (tmp_path / "runs").exists()


def test_unknown_encoder_lists_the_valid_ones(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main([*tiny_flags(tiny_data, tmp_path), "--encoder", "resnet19"]) == 2
    err = capsys.readouterr().err
    assert "unknown encoder 'resnet19'" in err
    assert "resnet18" in err and "efficientnet-b0" in err and "mobilenet_v2" in err


def test_pretrained_weights_need_a_local_file(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main([*tiny_flags(tiny_data, tmp_path), "--weights", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert "never downloaded" in err and "--weights /path/to/that/file" in err
    assert train.main([*tiny_flags(tiny_data, tmp_path), "--weights", str(tmp_path / "x.pth")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_weights_file_whole_model_or_encoder(trained_run: Path, tmp_path: Path) -> None:
    source = ts.load_model(trained_run / "fold0.pt")
    model = models.build_model("unet", "resnet18", weights=str(trained_run / "fold0.pt"))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    encoder_file = tmp_path / "encoder.pth"
    torch.save(source.encoder.state_dict(), encoder_file)
    linknet = models.build_model("linknet", "resnet18", weights=str(encoder_file))
    assert torch.equal(linknet.encoder.conv1.weight, source.encoder.conv1.weight)
    with pytest.raises(config.ConfigError, match="matches neither"):
        models.build_model("unet", "mobilenet_v2", weights=str(encoder_file))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tile", "1020"], "multiple of --reduce"),
        (["--tile", "768", "--reduce", "16"], "multiple of 32"),
        (["--fold", "3"], "--fold"),
        (["--augment", "d4,blur"], "--augment"),
        (["--overlap", "1024"], "--overlap"),
        (["--samples-per-epoch", "4"], "--samples-per-epoch"),
    ],
)
def test_bad_flags_exit_with_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        config.parse(config.TrainConfig, argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def test_flags_mirror_the_dataclass_fields() -> None:
    parser = config.build_parser(config.TrainConfig)
    flags = {a.dest for a in parser._actions if a.dest != "help"}
    assert flags == {f.name for f in config.dataclasses.fields(config.TrainConfig)}
    cfg = config.parse(config.TrainConfig, ["--batch-size", "4", "--no-progress", "--fold", "1"])
    assert cfg.batch_size == 4 and cfg.progress is False and cfg.fold_indices() == [1]
    assert config.TrainConfig().run_name() == config.TrainConfig(note="x").run_name()
    assert config.TrainConfig().run_name() != config.TrainConfig(lr=0.1).run_name()


def test_threshold_curve_equals_tilestream_dice() -> None:
    rng = np.random.default_rng(0)
    shape, reduce = (90, 70), 4  # not multiples of reduce: edge blocks are partial
    truth = ts.ArrayMask((rng.random(shape) < 0.3).astype(np.uint8))
    stitcher = ts.Stitcher(shape, reduce=reduce, tile=92, blend="mean")
    canvas = rng.random((23, 18)).astype(np.float32)
    stitcher.add(ts.Box(0, 0, 92, 72), canvas)
    blocks = evaluate.truth_blocks(truth, shape, reduce, band=8)
    curve = evaluate.dice_curve(
        *evaluate.histograms(stitcher.probabilities(), blocks), blocks.total
    )
    for k in (9, 29, 49, 69, 89):
        t = float(evaluate.THRESHOLDS[k])
        expected = ts.dice(stitcher.as_mask_source(t), truth).dice
        assert curve[k] == pytest.approx(expected, abs=1e-12), t
    threshold, best = evaluate.best_threshold([curve])
    assert best == pytest.approx(curve.max())
    assert curve[np.argmin(np.abs(evaluate.THRESHOLDS - threshold))] == best


def test_augmentation_depends_only_on_the_sample_address() -> None:
    collate = AugmentCollate(build_augment(["d4", "color", "noise"]), seed=5)
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).permute(2, 0, 1)
    mask = torch.from_numpy((rng.random((32, 32)) < 0.5).astype(np.uint8))[None]

    def sample(index: int, epoch: int = 0) -> dict[str, object]:
        return {"image": image, "mask": mask, "index": index, "epoch": epoch, "slide": "s"}

    a = collate([sample(3), sample(4)])
    b = collate([sample(4)])
    c = collate([sample(3)])
    assert torch.equal(a["image"][1], b["image"][0]) and torch.equal(a["mask"][1], b["mask"][0])
    assert torch.equal(a["image"][0], c["image"][0])
    assert not torch.equal(collate([sample(3, epoch=1)])["image"][0], c["image"][0])


@pytest.mark.parametrize("name", losses.LOSSES)
def test_losses_are_finite_and_differentiable(name: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    value = losses.build_loss(name)(logits, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and logits.grad is not None


def test_lookahead_syncs_slow_weights_and_resumes() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = optim.build_optimizer("adam", model.parameters(), lr=0.1, weight_decay=0, lookahead=True)
    assert isinstance(opt, optim.Lookahead)
    sched = optim.build_scheduler("cosine", opt, lr=0.1, total_steps=20)
    assert sched is not None
    for _ in range(5):
        opt.zero_grad()
        model(torch.ones(4, 3)).pow(2).mean().backward()
        opt.step()
        sched.step()
    assert torch.equal(opt.slow[0][0], model.weight.detach())  # synced at step k = 5
    assert opt.param_groups[0]["lr"] < 0.1  # the scheduler drives the inner optimizer
    state = opt.state_dict()
    clone = torch.nn.Linear(3, 1)
    clone.load_state_dict(model.state_dict())
    other = optim.build_optimizer(
        "adam", clone.parameters(), lr=0.1, weight_decay=0, lookahead=True
    )
    other.load_state_dict(state)
    assert other.steps == 5 and torch.equal(other.slow[0][0], opt.slow[0][0])


def test_time_budget_reserves_time_for_later_folds() -> None:
    from examples.glomeruli.distributed import Context

    ctx = Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trainer = train.Trainer(config.TrainConfig(time_budget=10, epochs=5), ctx, started=0.0)
    trainer.elapsed = lambda: 100.0  # type: ignore[method-assign]
    left = 600 - 100 - train.FINAL_RESERVE_S  # 485 s
    assert not trainer.out_of_time(30, later_folds=2)  # later folds need 300 s: plenty left
    assert not trainer.out_of_time(100, later_folds=2)  # they get at most 2/3 of what is left
    assert trainer.out_of_time(left / 3 + 1, later_folds=2)
    assert not trainer.out_of_time(left - 1, later_folds=0)
    assert trainer.out_of_time(left + 1, later_folds=0)
    # The submission's prediction is reserved too: test pixels x fold models x validation pace.
    trainer.test_px, trainer.predict_s_per_px = 2e6, 1e-5  # 20 s per model, 3 folds
    assert trainer.final_reserve_s() == pytest.approx(train.FINAL_RESERVE_S + 60)
    assert not trainer.out_of_time(left - 61, later_folds=0)
    assert trainer.out_of_time(left - 59, later_folds=0)
    unlimited = train.Trainer(config.TrainConfig(time_budget=0), ctx, started=0.0)
    assert not unlimited.out_of_time(1e9, later_folds=3)
