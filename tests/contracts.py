"""Shared test suites: every mask source (and later every sampler) subclasses one of these."""

from __future__ import annotations

import numpy as np
import pytest

import tilestream as ts
from naive import padded_mask_crop


class MaskSourceContract:
    """What every :class:`tilestream.MaskSource` must do.

    Subclasses provide the fixtures ``source`` (the MaskSource) and ``dense`` (its full
    level-0 mask as a numpy array), and ``expected_reduced(source, dense, box, reduce)``.
    """

    def expected_reduced(
        self, source: ts.MaskSource, dense: np.ndarray, box: ts.Box, reduce: int
    ) -> np.ndarray:
        raise NotImplementedError

    def test_protocol(self, source: ts.MaskSource) -> None:
        assert isinstance(source, ts.MaskSource)

    def test_full_read_equals_dense(self, source: ts.MaskSource, dense: np.ndarray) -> None:
        assert source.shape == dense.shape
        got = source.read(ts.Box(0, 0, *source.shape))
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, dense)

    def test_windows_equal_padded_crops(self, source: ts.MaskSource, dense: np.ndarray) -> None:
        rng = np.random.default_rng(1)
        h, w = dense.shape
        for _ in range(25):
            bh, bw = int(rng.integers(1, h // 2 + 2)), int(rng.integers(1, w // 2 + 2))
            y, x = int(rng.integers(-bh, h)), int(rng.integers(-bw, w))
            box = ts.Box(y, x, bh, bw)
            np.testing.assert_array_equal(source.read(box), padded_mask_crop(dense, box))

    @pytest.mark.parametrize("reduce", [2, 4])
    def test_reduced_windows(self, source: ts.MaskSource, dense: np.ndarray, reduce: int) -> None:
        rng = np.random.default_rng(reduce)
        h, w = dense.shape
        for _ in range(10):
            bh = int(rng.integers(1, h // (2 * reduce) + 2)) * reduce
            bw = int(rng.integers(1, w // (2 * reduce) + 2)) * reduce
            y = int(rng.integers(-bh, h)) // reduce * reduce
            x = int(rng.integers(-bw, w)) // reduce * reduce
            box = ts.Box(y, x, bh, bw)
            got = source.read(box, reduce)
            assert got.shape == (bh // reduce, bw // reduce)
            np.testing.assert_array_equal(got, self.expected_reduced(source, dense, box, reduce))

    def test_out_is_written_in_full(self, source: ts.MaskSource, dense: np.ndarray) -> None:
        box = ts.Box(-4, -4, 24, 32)
        out = np.full((12, 16), 77, np.uint8)
        result = source.read(box, 2, out=out)
        assert result is out
        np.testing.assert_array_equal(out, source.read(box, 2))

    def test_objects_cover_the_mask(self, source: ts.MaskSource, dense: np.ndarray) -> None:
        objects = source.objects()
        covered = np.zeros(dense.shape, bool)
        h, w = dense.shape
        for i in range(len(objects)):
            b = objects.box(i)
            assert b.clip((h, w)) is not None
            cy, cx = objects.centroids[i]
            assert b.y <= cy <= b.bottom and b.x <= cx <= b.right
            covered[max(b.y, 0) : b.bottom, max(b.x, 0) : b.right] = True
        assert covered[dense > 0].all()
        assert len(objects.classes) == len(objects)
