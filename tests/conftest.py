"""Shared fixtures: the real-data folder (skips when absent) and small synthetic slides."""

from __future__ import annotations

from pathlib import Path

import pytest

from tilestream.synthetic import SlideSpec, make_slide

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` (real files nobody on the team wrote); skip when absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent (only present in the workplace)")
    return REALDATA


@pytest.fixture(scope="session")
def pyramid_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic H&E-like slide: tiled 128 px JPEG with a pyramid (2, 4, 8)."""
    path = tmp_path_factory.mktemp("slides") / "pyramid.tif"
    make_slide(path, SlideSpec(height=900, width=1300, seed=7, tile=128, quality=90))
    return path


@pytest.fixture(scope="session")
def stripped_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic slide stored in uncompressed strips (memory-mapped by the reader)."""
    path = tmp_path_factory.mktemp("slides") / "stripped.tif"
    make_slide(
        path,
        SlideSpec(
            height=700,
            width=1000,
            seed=3,
            tile=None,
            rows_per_strip=32,
            compression="none",
            pyramid=False,
        ),
    )
    return path


@pytest.fixture(scope="session")
def hubmap_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in the Kaggle HuBMAP layout (3 train, 1 test slides)."""
    from tilestream.synthetic import DatasetSpec, make_dataset

    root = tmp_path_factory.mktemp("hubmap")
    spec = DatasetSpec(
        n_train=3, n_test=1, height=1600, width=2000, patients=2, seed=11, glomeruli_per_mpx=6.0
    )
    return make_dataset(root, spec)
