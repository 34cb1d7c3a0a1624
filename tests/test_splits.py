"""Slide-level folds grouped by patient."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tilestream as ts
from tilestream import hubmap


@given(st.lists(st.sampled_from("abcdefg"), min_size=3, max_size=30), st.integers(2, 3))
def test_groups_never_cross_folds(patients: list[str], n_splits: int) -> None:
    records = [{"id": i, "patient": p} for i, p in enumerate(patients)]
    if len(set(patients)) < n_splits:
        with pytest.raises(ValueError, match="groups"):
            ts.folds(records, n_splits)
        return
    folds = ts.folds(records, n_splits)
    assert len(folds) == n_splits
    seen = []
    for fold in folds:
        valid_patients = {r["patient"] for r in fold.valid}
        assert not valid_patients & {r["patient"] for r in fold.train}
        assert len(fold.valid) + len(fold.train) == len(records)
        assert fold.valid
        seen.extend(r["id"] for r in fold.valid)
    assert sorted(seen) == list(range(len(records)))  # every slide validated exactly once
    assert ts.folds(records, n_splits) == folds  # deterministic


def test_group_options() -> None:
    records = [{"id": i, "patient": None} for i in range(4)]
    assert [len(f.valid) for f in ts.folds(records, 4)] == [1, 1, 1, 1]  # no group: own group
    by_parity = ts.folds(list(range(6)), 2, group=lambda i: i % 2)
    assert [f.valid for f in by_parity] == [[0, 2, 4], [1, 3, 5]]
    assert [len(f.valid) for f in ts.folds(list(range(5)), 5, group=None)] == [1] * 5
    with pytest.raises(ValueError, match="n_splits"):
        ts.folds(records, 1)


def test_folds_of_slide_records(hubmap_root: Path) -> None:
    records = hubmap.read_dataset(hubmap_root)
    for fold in ts.folds(records, 2):
        assert {r.patient for r in fold.valid}.isdisjoint({r.patient for r in fold.train})
