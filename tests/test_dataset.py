"""Samplers, TileDataset sharding over real DataLoader workers and ranks, resume, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

import tilestream as ts
from tilestream import hubmap, sampling


@pytest.fixture(scope="module")
def sources(hubmap_root: Path) -> list[ts.SlideSource]:
    records = [r for r in hubmap.read_dataset(hubmap_root) if r.split == "train"]
    return [ts.SlideSource.from_record(r) for r in records]


def random_ds(sources: list[ts.SlideSource], **kw: object) -> ts.TileDataset:
    sampler = ts.RandomSampler(128, reduce=2, min_tissue=0.3, positive_fraction=0.5)
    return ts.TileDataset(sources, sampler, samples_per_epoch=int(kw.pop("n", 40)), seed=3, **kw)  # type: ignore[arg-type]


def grid_ds(sources: list[ts.SlideSource], **kw: object) -> ts.TileDataset:
    sampler = ts.GridSampler(256, overlap=64, reduce=4, min_tissue=0.05)
    return ts.TileDataset(sources, sampler, seed=3, **kw)  # type: ignore[arg-type]


def collect(
    ds: ts.TileDataset, workers: int, context: str | None = None
) -> list[tuple[int, str, tuple[int, ...]]]:
    loader = DataLoader(ds, batch_size=None, num_workers=workers, multiprocessing_context=context)
    return [(int(s["index"]), s["slide"], tuple(s["box"].tolist())) for s in loader]


# ------------------------------------------------------------------------------------------
# samplers
# ------------------------------------------------------------------------------------------


@given(st.integers(0, 200), st.integers(1, 12))
def test_shard_range_partitions_exactly(n: int, shards: int) -> None:
    parts = [list(ts.shard_range(n, s, shards)) for s in range(shards)]
    assert [i for part in parts for i in part] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@given(
    st.integers(1, 3000),
    st.sampled_from([64, 256, 512]),
    st.sampled_from([0, 32, 64]),
    st.sampled_from([1, 2, 4]),
    st.sampled_from(["shift", "pad"]),
)
def test_grid_positions_cover_the_slide(
    length: int, tile: int, overlap: int, reduce: int, edge: str
) -> None:
    from tilestream.sampling import grid_positions

    if overlap >= tile:
        return
    starts = grid_positions(length, tile, tile - overlap, reduce, edge)
    assert starts == sorted(set(starts)) and starts[0] == 0
    assert all(s % reduce == 0 for s in starts)
    assert starts[-1] + tile >= length  # covered
    if edge == "shift" and length >= tile:
        assert starts[-1] + tile < length + reduce  # at most reduce-1 px of padding


def test_random_sampler_properties(sources: list[ts.SlideSource]) -> None:
    ds = random_ds(sources, n=300)
    positives = 0
    for g in range(300):
        k, box = ds.address(g)
        info = ds.infos[k]
        assert box.height == box.width == 128 and box.y % 2 == 0 and box.x % 2 == 0
        assert (
            box.y >= 0 and box.bottom <= info.shape[0] and box.x >= 0 and box.right <= info.shape[1]
        )
        centroids = info.centroids
        assert centroids is not None
        hit = (
            (centroids[:, 0] >= box.y)
            & (centroids[:, 0] < box.bottom)
            & (centroids[:, 1] >= box.x)
            & (centroids[:, 1] < box.right)
        ).any()
        positives += bool(hit)
        assert ds.address(g) == (k, box)  # a pure function of (seed, epoch, g)
    # half the boxes are centred on an object; some tissue boxes contain one by chance
    assert 0.45 < positives / 300 < 0.9
    ds.set_epoch(1)
    assert [ds.address(g) for g in range(20)] != [random_ds(sources).address(g) for g in range(20)]


def reference_draw(
    sampler: ts.RandomSampler, infos: list[ts.SourceInfo], p: np.ndarray, rng: np.random.Generator
) -> tuple[int, ts.Box]:
    """RandomSampler.draw written with numpy's array calls (rng.choice, sample_points)."""
    k = int(rng.choice(len(infos), p=p))
    info = infos[k]
    if (
        info.centroids is not None
        and len(info.centroids)
        and rng.random() < sampler.positive_fraction
    ):
        cy, cx = info.centroids[int(rng.integers(len(info.centroids)))]
        dy, dx = (rng.random(2) * 2 - 1) * sampler.jitter * sampler.tile / 2
        return k, sampling._aligned_box(cy + dy, cx + dx, sampler.tile, sampler.reduce, info.shape)
    best, best_fraction = None, -1.0
    for _ in range(sampler.max_tries):
        assert info.tissue is not None
        point = info.tissue.sample_points(rng, 1)[0]
        box = sampling._aligned_box(point[0], point[1], sampler.tile, sampler.reduce, info.shape)
        fraction = info.tissue.fraction(box)
        if fraction > best_fraction:
            best, best_fraction = box, fraction
        if fraction >= sampler.min_tissue:
            break
    assert best is not None
    return k, best


@pytest.mark.parametrize(
    "sampler",
    [
        ts.RandomSampler(128, reduce=2, min_tissue=0.3, positive_fraction=0.5),
        ts.RandomSampler(256, reduce=4, min_tissue=0.95, max_tries=3),
        ts.RandomSampler(64, positive_fraction=1.0, jitter=0.9),
    ],
)
def test_draw_stream_is_numpys_array_calls(
    sources: list[ts.SlideSource], sampler: ts.RandomSampler
) -> None:
    # The scalar fast path of draw() makes the same draws as the array calls it replaced.
    ds = ts.TileDataset(sources, sampler, samples_per_epoch=1, seed=11)
    p = ds._probabilities
    for g in range(300):
        got = sampler.draw(ds.infos, p, np.random.default_rng((11, 2, g)))[:2]
        assert got == reference_draw(sampler, ds.infos, p, np.random.default_rng((11, 2, g)))


def test_min_tissue_and_region_weights(sources: list[ts.SlideSource]) -> None:
    sampler = ts.RandomSampler(256, reduce=4, min_tissue=0.6, region_weights={"Medulla": 1.0})
    ds = ts.TileDataset(sources, sampler, samples_per_epoch=100, seed=1)
    fractions, medulla = [], []
    for g in range(100):
        k, box = ds.address(g)
        fractions.append(ds.infos[k].tissue.fraction(box))
        regions = sources[k].regions
        cortex_or_medulla = ts.PolygonMask(
            list(regions.geometries),
            regions.shape,
            classes=list(regions.classes),
            values={"Medulla": 1},
        )
        medulla.append(cortex_or_medulla.read(box, 4).mean())
    assert np.mean(np.array(fractions) >= 0.6) > 0.9
    assert np.mean(medulla) > 0.5  # boxes centred in the medulla


def test_grid_sampler_matches_brute_force(sources: list[ts.SlideSource]) -> None:
    ds = grid_ds(sources)
    expected = []
    for k, info in enumerate(ds.infos):
        h, w = info.shape
        for y in range(0, h, 192):
            for x in range(0, w, 192):
                yy = min(y, -(-(h - 256) // 4) * 4)
                xx = min(x, -(-(w - 256) // 4) * 4)
                box = ts.Box(yy, xx, 256, 256)
                if info.tissue.fraction(box) >= 0.05 and (k, box) not in expected:
                    expected.append((k, box))
    got = [ds.address(g) for g in range(len(ds))]
    assert sorted(got, key=str) == sorted(expected, key=str)
    assert len(got) == ds.samples_per_epoch
    for info in ds.infos:  # the declared grid: every window before the tissue filter
        ys, xs = ds.sampler.positions(info.shape)
        h, w = info.shape
        assert ys == sorted({min(y, -(-(h - 256) // 4) * 4) for y in range(0, h, 192)})
        assert xs == sorted({min(x, -(-(w - 256) // 4) * 4) for x in range(0, w, 192)})


# ------------------------------------------------------------------------------------------
# sharding over workers and ranks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [random_ds, grid_ds], ids=["random", "grid"])
def test_sharding_is_exact_over_workers_and_ranks(
    sources: list[ts.SlideSource], make: object
) -> None:
    single = collect(make(sources), 0)  # type: ignore[operator]
    assert [s[0] for s in single] == list(range(len(single)))
    for world in (1, 2, 3):
        for workers in (0, 1, 2, 3):
            union = []
            for rank in range(world):
                ds = make(sources, rank=rank, world_size=world)  # type: ignore[operator]
                got = collect(ds, workers)
                assert len(got) == len(ds)
                union.extend(got)
            assert sorted(union) == sorted(single), (world, workers)
            assert len({s[0] for s in union}) == len(union)  # no duplicates


def test_samples_content_and_transform(sources: list[ts.SlideSource]) -> None:
    ds = random_ds(sources, n=6)
    loader = DataLoader(ds, batch_size=3, num_workers=0)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (3, 1, 64, 64) and set(batch["mask"].unique().tolist()) <= {0, 1}
    assert batch["box"].shape == (3, 4) and len(batch["slide"]) == 3
    first = next(iter(ds))
    k, box = ds.address(0)
    np.testing.assert_array_equal(
        first["image"].permute(1, 2, 0).numpy(), sources[k].slide.read(box, 2)
    )
    np.testing.assert_array_equal(first["mask"][0].numpy(), sources[k].mask.read(box, 2))

    def flip(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": image[:, ::-1], "mask": mask[:, ::-1]}

    flipped = next(iter(random_ds(sources, n=6, transform=flip)))
    np.testing.assert_array_equal(flipped["image"].numpy(), first["image"].numpy()[:, :, ::-1])
    np.testing.assert_array_equal(flipped["mask"].numpy(), first["mask"].numpy()[:, :, ::-1])
    albumentations = pytest.importorskip("albumentations")
    compose = albumentations.Compose([albumentations.HorizontalFlip(p=1.0)])
    aug = next(iter(random_ds(sources, n=6, transform=compose)))
    np.testing.assert_array_equal(aug["image"].numpy(), flipped["image"].numpy())


def test_resume_yields_exactly_the_rest(sources: list[ts.SlideSource]) -> None:
    full = collect(random_ds(sources, n=30), 2)
    ds = random_ds(sources, n=30)
    ds.set_epoch(0)
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    seen = []
    for i, batch in enumerate(loader):
        ds.record(batch["index"])
        seen.extend(batch["index"].tolist())
        if i == 3:
            break
    state = ds.state_dict()
    resumed = random_ds(sources, n=30)
    resumed.load_state_dict(state)
    rest = collect(resumed, 3)  # a different number of workers
    assert len(resumed) == 30 - len(seen)
    assert sorted(s[0] for s in rest) == sorted(set(range(30)) - set(seen))
    assert sorted(rest + [f for f in full if f[0] in seen]) == sorted(full)
    with pytest.raises(ValueError, match="seed"):
        ts.TileDataset(sources, ts.RandomSampler(64), samples_per_epoch=3, seed=9).load_state_dict(
            state
        )


def test_spawn_workers(sources: list[ts.SlideSource]) -> None:
    expected = collect(random_ds(sources, n=6), 0)
    assert sorted(collect(random_ds(sources, n=6), 2, context="spawn")) == sorted(expected)


def test_corrupt_slide_skip_and_raise(sources: list[ts.SlideSource], tmp_path: Path) -> None:
    image = np.full((512, 512, 3), 200, np.uint8)
    image[:, :, 1] = 100  # saturated: all tissue
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, image, photometric="rgb", tile=(128, 128), compression="jpeg")
    with tifffile.TiffFile(path) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    raw = bytearray(path.read_bytes())
    for i in range(0, len(offsets), 2):  # every other tile unreadable
        raw[offsets[i] : offsets[i] + counts[i]] = bytes(counts[i])
    path.write_bytes(bytes(raw))
    bad = ts.SlideSource(path, id="corrupt")
    sampler = ts.GridSampler(128)
    skipping = ts.TileDataset([bad], sampler, on_error="skip")
    got = list(skipping)
    assert len(got) == 8 and skipping.skipped == 8
    raising = ts.TileDataset([bad], sampler)
    with pytest.raises(ts.TileReadError, match=r"slide corrupt .*box Box\(y=0, x=0"):
        list(raising)


def test_bad_arguments(sources: list[ts.SlideSource]) -> None:
    with pytest.raises(ValueError, match="samples_per_epoch is required"):
        ts.TileDataset(sources, ts.RandomSampler(64))
    with pytest.raises(ValueError, match="on_error"):
        ts.TileDataset(sources, ts.GridSampler(64), on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of reduce"):
        ts.RandomSampler(100, reduce=3)
    with pytest.raises(ValueError, match="overlap"):
        ts.GridSampler(64, overlap=64)
    with pytest.raises(ValueError, match="rank"):
        len(random_ds(sources, rank=2, world_size=2))
    mask = ts.RleMask("", (10, 10))
    with pytest.raises(ValueError, match="mask shape"):
        ts.SlideSource(sources[0].slide, mask=mask)


_DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    import torch.distributed as dist
    import tilestream as ts
    from tilestream import hubmap
    from torch.utils.data import DataLoader

    rank, world, root, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    records = [r for r in hubmap.read_dataset(root) if r.split == "train"]
    sources = [ts.SlideSource.from_record(r) for r in records]
    ds = ts.TileDataset(sources, ts.RandomSampler(128, reduce=2), samples_per_epoch=25, seed=5)
    got = [int(s["index"]) for s in DataLoader(ds, batch_size=None, num_workers=2)]
    with open(out, "w") as fh:
        json.dump({"rank": dist.get_rank(), "indices": got, "len": len(ds)}, fh)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def test_two_process_gloo_ranks_are_disjoint(hubmap_root: Path, tmp_path: Path) -> None:
    import json

    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    init = f"file://{tmp_path / 'rendezvous'}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(r),
                "2",
                str(hubmap_root),
                init,
                str(tmp_path / f"rank{r}.json"),
            ],
            env=env,
        )
        for r in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    a, b = (set(r["indices"]) for r in results)
    assert not a & b
    assert a | b == set(range(25))
    assert [r["len"] for r in results] == [13, 12]


def test_persistent_workers_follow_set_epoch(sources: list[ts.SlideSource]) -> None:
    ds = random_ds(sources, n=8)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    epochs = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        samples = list(loader)
        assert {s["epoch"] for s in samples} == {epoch}  # each sample carries its address
        epochs.append(sorted((s["index"], tuple(s["box"].tolist())) for s in samples))
    assert epochs[0] != epochs[1]
    fresh = random_ds(sources, n=8)
    fresh.set_epoch(1)
    assert epochs[1] == sorted((s["index"], tuple(s["box"].tolist())) for s in fresh)


def test_images_are_contiguous_chw(sources: list[ts.SlideSource]) -> None:
    sample = next(iter(random_ds(sources, n=2)))
    assert sample["image"].is_contiguous() and sample["image"].shape == (3, 64, 64)


def test_resume_then_later_epochs_with_persistent_workers(sources: list[ts.SlideSource]) -> None:
    ds = random_ds(sources, n=12)
    ds.load_state_dict({"epoch": 0, "seed": 3, "consumed": [0, 1, 2, 3]})
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    # (counted without len(loader): torch keeps a persistent iterator's first length)
    assert sum(1 for _ in loader) == 8  # the rest of epoch 0
    ds.set_epoch(1)
    assert sum(1 for _ in loader) == 12  # a whole new epoch, nothing skipped


def test_transform_must_return_numpy(sources: list[ts.SlideSource]) -> None:
    def to_tensor(image: np.ndarray, mask: np.ndarray) -> dict[str, object]:
        return {"image": torch.from_numpy(image).permute(2, 0, 1), "mask": mask}

    with pytest.raises(ts.TileReadError, match="transform must return numpy"):
        next(iter(random_ds(sources, n=2, transform=to_tensor)))
