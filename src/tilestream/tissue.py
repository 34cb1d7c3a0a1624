"""Tissue detection on a low-resolution image, and O(1) tissue fractions of boxes.

The rule is the one the public HuBMAP kernels use on each tile, applied once to the slide's
thumbnail: a pixel is tissue when its HSV saturation exceeds a threshold (40 of 255) and it is
neither near-black (scanner borders, pen, dust) nor near-white glass. Otsu's threshold on the
saturation is the alternative for stains whose saturation differs. A summed-area table over
the mask then answers "what fraction of this box is tissue?" in constant time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from .geometry import Box

if TYPE_CHECKING:
    from .reader import Slide

__all__ = ["TissueMap", "otsu_threshold", "tissue_from_rgb", "tissue_mask"]


@dataclass(frozen=True, eq=False)
class TissueMap:
    """A boolean tissue mask at ``1/reduce`` scale with a summed-area table.

    Mask pixel ``(i, j)`` covers level-0 pixels ``[i*reduce, (i+1)*reduce) x
    [j*reduce, (j+1)*reduce)``. Plain arrays: cheap to pickle to DataLoader workers.

    Parameters
    ----------
    mask : (h, w) bool array
        Tissue at the reduced scale.
    reduce : int
        Level-0 pixels per mask pixel.
    shape : (int, int)
        ``(H, W)`` of the slide at level 0.

    Examples
    --------
    >>> import numpy as np, tilestream as ts
    >>> m = ts.TissueMap(np.array([[1, 0], [1, 1]], bool), reduce=4, shape=(8, 8))
    >>> m.fraction(ts.Box(0, 0, 8, 8)), m.fraction(ts.Box(0, 4, 4, 4)), m.fraction(ts.Box(-8, 0, 16, 8))
    (0.75, 0.0, 0.375)
    """

    mask: NDArray[np.bool_]
    reduce: int
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        mask = np.ascontiguousarray(self.mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"tissue mask must be 2-D, got shape {mask.shape}")
        object.__setattr__(self, "mask", mask)
        # int32 counts while they fit: the table is pickled to (or shared with) every worker
        dtype = np.int32 if mask.size < 2**31 else np.int64
        table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype)
        np.cumsum(np.cumsum(mask, axis=0, dtype=dtype), axis=1, out=table[1:, 1:])
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_flat", np.flatnonzero(mask))

    @property
    def area(self) -> int:
        """Tissue area in level-0 pixels (mask pixels times ``reduce**2``)."""
        return int(self._flat.size) * self.reduce * self.reduce  # type: ignore[attr-defined]

    def fraction(self, box: Box) -> float:
        """Share of ``box`` covered by tissue (parts outside the slide count as no tissue).

        O(1): four lookups in the summed-area table. The box is measured on the mask grid,
        rounded outwards to whole mask pixels.
        """
        r = self.reduce
        h, w = self.mask.shape
        y0, x0 = box.y // r, box.x // r
        y1, x1 = -(-box.bottom // r), -(-box.right // r)
        area = (y1 - y0) * (x1 - x0)
        cy0, cy1 = min(max(y0, 0), h), min(max(y1, 0), h)
        cx0, cx1 = min(max(x0, 0), w), min(max(x1, 0), w)
        t = self._table  # type: ignore[attr-defined]
        count = int(t[cy1, cx1] - t[cy0, cx1] - t[cy1, cx0] + t[cy0, cx0])
        return count / max(area, 1)

    def fractions(self, boxes: NDArray[np.integer]) -> NDArray[np.float64]:
        """:meth:`fraction` of many boxes at once: ``boxes`` is ``(N, 4)`` ``(y, x, h, w)``."""
        b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        r = self.reduce
        h, w = self.mask.shape
        y0 = np.floor_divide(b[:, 0], r)
        x0 = np.floor_divide(b[:, 1], r)
        y1 = -np.floor_divide(-(b[:, 0] + b[:, 2]), r)
        x1 = -np.floor_divide(-(b[:, 1] + b[:, 3]), r)
        area = (y1 - y0) * (x1 - x0)
        cy0, cy1 = np.clip(y0, 0, h), np.clip(y1, 0, h)
        cx0, cx1 = np.clip(x0, 0, w), np.clip(x1, 0, w)
        t = self._table  # type: ignore[attr-defined]
        count = t[cy1, cx1] - t[cy0, cx1] - t[cy1, cx0] + t[cy0, cx0]
        fractions: NDArray[np.float64] = count / np.maximum(area, 1)
        return fractions

    def sample_points(self, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
        """``n`` level-0 ``(row, col)`` points drawn uniformly over the tissue."""
        flat = self._flat  # type: ignore[attr-defined]
        if flat.size == 0:
            raise ValueError("the tissue mask is empty: nothing to sample")
        pick = flat[rng.integers(0, flat.size, n)]
        rows, cols = np.divmod(pick, self.mask.shape[1])
        offsets = rng.random((n, 2)) * self.reduce
        return np.stack([rows * self.reduce + offsets[:, 0], cols * self.reduce + offsets[:, 1]], 1)

    def sample_point(self, rng: np.random.Generator) -> tuple[float, float]:
        """One level-0 ``(row, col)`` point drawn uniformly over the tissue.

        The same draw as ``sample_points(rng, 1)[0]`` (same values, same use of ``rng``),
        without the array overhead: the sampler calls it once per box.
        """
        flat = self._flat  # type: ignore[attr-defined]
        if flat.size == 0:
            raise ValueError("the tissue mask is empty: nothing to sample")
        row, col = divmod(int(flat[rng.integers(0, flat.size)]), self.mask.shape[1])
        uy, ux = rng.random(2).tolist()
        r = self.reduce
        return row * r + uy * r, col * r + ux * r

    def __getstate__(self) -> dict[str, object]:
        return {"mask": self.mask, "reduce": self.reduce, "shape": self.shape}

    def __setstate__(self, state: dict[str, object]) -> None:
        object.__setattr__(self, "reduce", state["reduce"])
        object.__setattr__(self, "shape", state["shape"])
        object.__setattr__(self, "mask", state["mask"])
        self.__post_init__()


def otsu_threshold(values: NDArray[np.uint8]) -> int:
    """Otsu's threshold of uint8 values: the cut maximising the between-class variance.

    Examples
    --------
    >>> import numpy as np
    >>> otsu_threshold(np.array([10] * 50 + [200] * 50, np.uint8))
    10
    """
    hist = np.bincount(np.asarray(values, np.uint8).ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0
    levels = np.arange(256, dtype=np.float64)
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    mean0 = np.cumsum(hist * levels) / np.maximum(weight0, 1)
    mean1 = (np.sum(hist * levels) - np.cumsum(hist * levels)) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return int(np.argmax(between))


def saturation_value(rgb: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """HSV saturation and value of an ``(h, w, 3)`` uint8 image, OpenCV's 0-255 scale."""
    value = rgb.max(axis=2)
    spread = value - rgb.min(axis=2)
    saturation = np.zeros(value.shape, np.uint8)
    nonzero = value > 0
    saturation[nonzero] = (
        (spread[nonzero].astype(np.uint32) * 255 + value[nonzero] // 2) // value[nonzero]
    ).astype(np.uint8)
    return saturation, value


def tissue_mask(
    slide: Slide,
    reduce: int | None = None,
    *,
    method: Literal["saturation", "otsu"] = "saturation",
    saturation_threshold: int = 40,
    dark_threshold: int = 30,
    white_threshold: int = 235,
    max_size: int = 2048,
) -> TissueMap:
    """Detect tissue on the slide's thumbnail.

    Parameters
    ----------
    slide : Slide
        The slide (its thumbnail is read band by band, in bounded memory).
    reduce : int, optional
        Level-0 pixels per mask pixel. Default: the smallest power of two whose thumbnail
        fits ``max_size`` on its longer side.
    method : {"saturation", "otsu"}
        ``"saturation"``: HSV saturation > ``saturation_threshold`` (the HuBMAP kernels' rule,
        40 of 255). ``"otsu"``: saturation above Otsu's threshold of the thumbnail.
    saturation_threshold : int
        Saturation cut for ``method="saturation"``.
    dark_threshold : int
        Pixels whose HSV value (max of R, G, B) is below this are not tissue (black borders,
        pen marks, dust).
    white_threshold : int
        Pixels brighter than this in every channel are glass.
    max_size : int
        Longest side of the thumbnail when ``reduce`` is not given.

    Returns
    -------
    TissueMap

    Notes
    -----
    Grey slides (one channel) have no saturation: tissue is what is darker than Otsu's
    threshold of the intensity (and not near-black).
    """
    h, w = slide.shape
    if reduce is None:
        reduce = 1
        while max(h, w) / reduce > max_size:
            reduce *= 2
    thumb = slide.thumbnail(reduce)
    return TissueMap(
        tissue_from_rgb(
            thumb,
            method=method,
            saturation_threshold=saturation_threshold,
            dark_threshold=dark_threshold,
            white_threshold=white_threshold,
        ),
        reduce=reduce,
        shape=(h, w),
    )


def tissue_from_rgb(
    image: NDArray[np.uint8],
    *,
    method: Literal["saturation", "otsu"] = "saturation",
    saturation_threshold: int = 40,
    dark_threshold: int = 30,
    white_threshold: int = 235,
) -> NDArray[np.bool_]:
    """The tissue rule of :func:`tissue_mask` applied to an ``(h, w, C)`` uint8 image."""
    if method not in ("saturation", "otsu"):
        raise ValueError(f'method must be "saturation" or "otsu", got {method!r}')
    if image.ndim != 3:
        raise ValueError(f"image must be (h, w, C), got shape {image.shape}")
    channels = image.shape[2]
    if channels < 3:
        grey = image[..., 0]
        cut = otsu_threshold(grey)
        tissue: NDArray[np.bool_] = (grey <= cut) & (grey >= dark_threshold)
        return tissue
    rgb = image[..., :3]
    saturation, value = saturation_value(rgb)
    cut = saturation_threshold if method == "saturation" else otsu_threshold(saturation)
    glass = rgb.min(axis=2) > white_threshold
    tissue = (saturation > cut) & (value >= dark_threshold) & ~glass
    return tissue
