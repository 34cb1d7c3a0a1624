"""Slide-level k-fold splits grouped by patient, so no validation slide's tissue is trained on."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Fold", "folds"]

T = TypeVar("T")


@dataclass(frozen=True)
class Fold(Generic[T]):
    """One split: ``index`` of ``n_splits``, the training and the validation items."""

    index: int
    train: list[T]
    valid: list[T]


def _group_of(item: Any, group: str | Callable[[Any], Hashable] | None) -> Hashable:
    if group is None:
        return id(item)
    if callable(group):
        return group(item)
    value = item.get(group) if isinstance(item, dict) else getattr(item, group, None)
    if value is None:  # an item without a group is its own group
        return ("__own__", id(item))
    return value  # type: ignore[no-any-return]


def folds(
    records: Sequence[T],
    n_splits: int,
    group: str | Callable[[Any], Hashable] | None = "patient",
) -> list[Fold[T]]:
    """Split slides into ``n_splits`` folds; all slides of a group land in the same fold.

    Parameters
    ----------
    records : sequence
        Slides (e.g. :class:`tilestream.hubmap.SlideRecord`), in any order.
    n_splits : int
        Number of folds (2 or more, at most the number of groups).
    group : str, callable or None
        Attribute or key naming the group (default ``"patient"``), a function of a record, or
        ``None`` for one group per slide. Records whose group is missing are their own group.

    Returns
    -------
    list of Fold
        Fold ``i`` validates on its groups and trains on all the others. Deterministic: groups
        are dealt largest first to the fold with the fewest slides (ties: lowest index), groups
        of equal size in sorted order.

    Examples
    --------
    >>> recs = [{"id": i, "patient": p} for i, p in enumerate("aabbcd")]
    >>> [[r["id"] for r in f.valid] for f in folds(recs, 3)]
    [[0, 1], [2, 3], [4, 5]]
    """
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    groups: dict[Hashable, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(_group_of(record, group), []).append(i)
    if len(groups) < n_splits:
        raise ValueError(
            f"cannot make {n_splits} folds from {len(groups)} groups ({len(records)} slides); "
            "lower n_splits or group by slide (group=None)"
        )
    order = sorted(groups, key=lambda g: (-len(groups[g]), str(g)))
    sizes = [0] * n_splits
    assignment: dict[Hashable, int] = {}
    for g in order:
        target = min(range(n_splits), key=lambda f: (sizes[f], f))
        assignment[g] = target
        sizes[target] += len(groups[g])
    out = []
    for f in range(n_splits):
        valid = [i for g, members in groups.items() if assignment[g] == f for i in members]
        valid_set = set(valid)
        out.append(
            Fold(
                index=f,
                train=[records[i] for i in range(len(records)) if i not in valid_set],
                valid=[records[i] for i in sorted(valid)],
            )
        )
    return out
