"""Whole-slide inference: `predict_slide` (windows -> batches -> model -> Stitcher), slide-level
Dice from two mask sources, and `predict_slides` over many slides on dask.distributed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader

from ._io import atomic_path
from ._jit import njit
from .annotations import MaskSource, RleMask
from .dataset import SlideSource, TileDataset, TileReadError
from .geometry import Box
from .hubmap import write_submission
from .reader import IMAGE_FILL, Slide, _aligned_empty
from .rle import rle_to_runs
from .sampling import GridSampler, grid_positions
from .stitch import Blend, Stitcher, StitchError
from .tissue import TissueMap

__all__ = [
    "CHECKPOINT_FORMAT",
    "DiceScore",
    "dice",
    "dice_report",
    "load_model",
    "predict_slide",
    "predict_slides",
    "tta_transforms",
]

logger = logging.getLogger("tilestream")

TTA = Literal["flips", "d4"] | None
Activation = Literal["sigmoid", "softmax"] | None
Tensor = torch.Tensor


TensorMap = Callable[[Tensor], Tensor]


def tta_transforms(tta: TTA) -> list[tuple[TensorMap, TensorMap]]:
    """``(forward, inverse)`` pairs on ``(B, C, H, W)`` tensors for test-time augmentation.

    ``None``: identity. ``"flips"``: identity, horizontal, vertical, both (4). ``"d4"``: the 8
    symmetries of the square (rotations by 90 degrees, with and without a transpose).

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(6.0).reshape(1, 1, 2, 3)
    >>> all(torch.equal(inv(fwd(x)), x) for fwd, inv in tta_transforms("flips"))
    True
    """

    def ident(t: Tensor) -> Tensor:
        return t

    if tta is None:
        return [(ident, ident)]
    pairs: list[tuple[TensorMap, TensorMap]] = []
    if tta == "flips":
        for dims in ((), (3,), (2,), (2, 3)):
            if not dims:
                pairs.append((ident, ident))
                continue

            def flip(t: Tensor, d: tuple[int, ...] = dims) -> Tensor:
                return torch.flip(t, d)

            pairs.append((flip, flip))
        return pairs
    if tta == "d4":
        for transpose in (False, True):
            for k in range(4):

                def fwd(t: Tensor, k: int = k, tr: bool = transpose) -> Tensor:
                    t = t.transpose(2, 3) if tr else t
                    return torch.rot90(t, k, (2, 3))

                def inv(t: Tensor, k: int = k, tr: bool = transpose) -> Tensor:
                    t = torch.rot90(t, -k, (2, 3))
                    return t.transpose(2, 3) if tr else t

                pairs.append((fwd, inv))
        return pairs
    raise ValueError(f'tta must be None, "flips" or "d4", got {tta!r}')


#: ``format`` value of the state-dict checkpoints :func:`load_model` rebuilds.
CHECKPOINT_FORMAT = "tilestream-smp-v1"


def load_model(path: str | os.PathLike[str], device: str | None = None) -> torch.nn.Module:
    """Load a model for inference: ``torch.export``, TorchScript, or a state-dict checkpoint.

    Parameters
    ----------
    path : path
        The model file.
    device : str, optional
        Where to load the weights (default CPU).

    Notes
    -----
    Three formats are read:

    - a ``.pt2`` file from ``torch.export.save`` (self-contained; export with a dynamic batch
      dimension, e.g. ``dynamic_shapes=({0: torch.export.Dim("batch")},)``);
    - TorchScript (``torch.jit.save``; deprecated by PyTorch but still what many Kaggle
      kernels ship; its deprecation warning is silenced here);
    - a ``torch.save`` dict ``{"format": "tilestream-smp-v1", "arch": "unet", "encoder":
      "efficientnet-b0", "classes": 1, "state_dict": ...}`` (what the examples write), rebuilt
      with segmentation-models-pytorch (``pip install segmentation-models-pytorch``), no
      pretrained download.

    Raises
    ------
    ValueError
        The file is none of these (the message says what was found).
    ImportError
        A state-dict checkpoint without segmentation-models-pytorch installed.
    """
    path = os.fspath(path)
    location = torch.device(device) if device is not None else torch.device("cpu")
    if path.endswith(".pt2"):
        exported: torch.nn.Module = torch.export.load(path).module()
        return exported.to(location)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module: torch.nn.Module = torch.jit.load(  # type: ignore[no-untyped-call]
                path, map_location=location
            )
        return module
    except (RuntimeError, ValueError):
        pass
    try:
        checkpoint = torch.load(path, map_location=location, weights_only=False)
    except Exception as err:
        raise ValueError(
            f"{path}: neither TorchScript, torch.export (.pt2) nor a torch.save checkpoint "
            f"({type(err).__name__}: {err})"
        ) from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = (
            type(checkpoint).__name__
            if not isinstance(checkpoint, dict)
            else sorted(checkpoint)[:8]
        )
        raise ValueError(
            f"{path}: neither TorchScript nor a {CHECKPOINT_FORMAT!r} checkpoint (found {found}); "
            "export with torch.jit.script/trace + torch.jit.save, or save "
            '{"format": "tilestream-smp-v1", "arch", "encoder", "classes", "state_dict"}'
        )
    try:
        import segmentation_models_pytorch as smp
    except ImportError as err:
        raise ImportError(
            f"{path} is a state-dict checkpoint: rebuilding it needs segmentation-models-pytorch "
            "(pip install segmentation-models-pytorch)"
        ) from err
    model: torch.nn.Module = smp.create_model(
        checkpoint["arch"],
        encoder_name=checkpoint["encoder"],
        encoder_weights=None,
        classes=int(checkpoint.get("classes", 1)),
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(location).eval()


def _default_preprocess(images: Tensor) -> Tensor:
    return images.float().div_(255.0)


def _slide_for_prediction(
    path: str | os.PathLike[str], tile: int, reduce: int, num_workers: int, as_float: bool
) -> Slide:
    """Open ``path`` with a private tile cache just big enough that each stored tile is decoded
    once in a row-major pass (the tile rows one row of windows touches), instead of the 256 MiB
    process-wide cache, which would keep every tile of the slide until it closes. No cache at
    all when the windows are converted straight from the decoded tiles (``as_float`` and a
    level stored at ``reduce``): :func:`_tile_float_batches` keeps the tiles it still needs."""
    slide = Slide.open(path, cache_bytes=0)
    if num_workers == 0 and as_float and _converts_tiles(slide, reduce):
        return slide
    level = slide.levels[slide.level_for(reduce)]
    th, tw = level.tile
    window_rows = -(-tile // level.downsample)
    tile_rows = min(-(-(window_rows - 1) // th) + 1, -(-level.shape[0] // th))
    across = -(-level.shape[1] // tw)
    tile_bytes = th * tw * slide.channels * np.dtype(slide.source_dtype).itemsize
    budget = tile_rows * across * tile_bytes
    if num_workers > 0:  # workers reopen the slide from its pickled options: open it with them
        return Slide.open(path, cache_bytes=budget)
    slide.cache.resize(budget)  # opened once: the cache of this process
    return slide


def _converts_tiles(slide: Slide, reduce: int) -> bool:
    """Whether reads at ``reduce`` are copies of stored tiles (see ``Slide._tile_pieces``)."""
    return slide._tile_pieces(Box(0, 0, reduce, reduce), reduce) is not None


def _window_batches(
    source: SlideSource,
    boxes: Sequence[Box],
    reduce: int,
    batch_size: int,
    *,
    as_float: bool,
    pin_memory: bool,
) -> Iterator[tuple[Tensor, list[Box]]]:
    """``(batch, boxes)`` with windows read straight into one reused ``(B, C, h, w)`` buffer (no
    dataset, collate or per-window tensors); overwritten by the next batch. ``as_float``: the
    batch is ``x / 255`` float32, else the uint8 windows. A float batch is converted straight
    from the decoded tiles when the reads at ``reduce`` are copies of stored tiles
    (:func:`_tile_float_batches`), else each window is read into a one-window uint8 buffer and
    converted at once (still in cache)."""
    if not boxes:
        return
    slide = source.slide
    side = boxes[0].height // reduce
    shape = (batch_size, slide.channels, side, side)
    if as_float:
        buffer = torch.empty(shape, dtype=torch.float32)
        if _converts_tiles(slide, reduce):
            yield from _tile_float_batches(source, boxes, reduce, buffer)
            return
        scratch = torch.empty(shape[1:], dtype=torch.uint8).numpy()  # 64-byte aligned
        floats = buffer.numpy()
        views = [scratch.transpose(1, 2, 0)] * batch_size
    else:
        buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=pin_memory)
        views = [buffer[b].numpy().transpose(1, 2, 0) for b in range(batch_size)]
    scale = np.float32(255.0)
    for start in range(0, len(boxes), batch_size):
        chunk = list(boxes[start : start + batch_size])
        for b, box in enumerate(chunk):
            try:
                slide.read(box, reduce, out=views[b])
            except Exception as err:
                raise TileReadError(f"slide {source.id} ({slide.path}), box {box}: {err}") from err
            if as_float:
                # numpy's cast-and-divide loop: bit-identical to x.float() / 255, one pass
                np.divide(scratch, scale, out=floats[b], dtype=np.float32)
        yield buffer[: len(chunk)], chunk


def _tile_float_batches(
    source: SlideSource, boxes: Sequence[Box], reduce: int, buffer: Tensor
) -> Iterator[tuple[Tensor, list[Box]]]:
    """Float batches ``x / 255`` (into ``buffer``, reused) converted straight from the decoded
    tiles, bit-identical to ``slide.read(box, reduce) / 255``.

    Each stored tile is decoded once and de-interleaved once into a channel-first uint8 copy
    (``(H, W, C)`` -> ``(C, H, W)``: once per tile pixel instead of once per window pixel, and
    windows overlap). A window inside one tile is divided by 255 straight from it into its slot
    of the batch; a window over several tiles (or past the slide's edge) is assembled in a
    one-window uint8 buffer by row copies first, as the cast-and-divide is slow into partial
    rows. A tile is held from its first use to the last window that needs it (known up front:
    the windows are given), then its buffer is reused for the next tile decoded. In a
    row-major pass that is one row of tiles plus the one or two under the current window, or
    two rows of tiles where two consecutive rows of windows straddle the same tile-row
    boundary (about what the row cache of the read path holds)."""
    slide = source.slide
    plans = []
    for box in boxes:
        plan = slide._tile_pieces(box, reduce)
        assert plan is not None  # checked by the caller: the level is stored at `reduce`
        plans.append(plan)
    last: dict[tuple[int, ...], int] = {}
    for i, (pieces, _) in enumerate(plans):
        for piece in pieces:
            last[piece.key] = i
    held: dict[tuple[int, ...], NDArray[np.uint8]] = {}
    spare: list[NDArray[np.uint8]] = []
    floats = buffer.numpy()
    window = _aligned_empty(floats.shape[1:])  # one window, uint8, channel first
    scale = np.float32(255.0)
    for start in range(0, len(boxes), len(floats)):
        chunk = list(boxes[start : start + len(floats)])
        for b, box in enumerate(chunk):
            i = start + b
            pieces, padded = plans[i]
            parts = []
            for p in pieces:
                tile = held.get(p.key)
                if tile is None:
                    try:
                        decoded = slide._decode_tile(p.key)
                    except Exception as err:
                        raise TileReadError(
                            f"slide {source.id} ({slide.path}), box {box}: {err}"
                        ) from err
                    tile = _channels_first(decoded, spare)
                    held[p.key] = tile
                h, w = p.y1 - p.y0, p.x1 - p.x0
                parts.append((p, tile[:, p.ty0 : p.ty0 + h, p.tx0 : p.tx0 + w]))
            # numpy's cast-and-divide loop: bit-identical to x.float() / 255, one pass; it runs
            # at full speed into a whole (contiguous) window, so a window made of several
            # pieces (or padded) is first assembled in uint8 (row copies, ~1/5 of the divide)
            if len(parts) == 1 and not padded:
                np.divide(parts[0][1], scale, out=floats[b], dtype=np.float32)
            else:
                if padded:
                    window.fill(IMAGE_FILL)
                for p, part in parts:
                    window[p.c0 : p.c1, p.y0 : p.y1, p.x0 : p.x1] = part
                np.divide(window, scale, out=floats[b], dtype=np.float32)
            for p in pieces:  # after the window: a released buffer is reused by the next decode
                if last[p.key] == i:
                    spare.append(held.pop(p.key))
        yield buffer[: len(chunk)], chunk


def _channels_first(
    decoded: NDArray[np.uint8], spare: list[NDArray[np.uint8]]
) -> NDArray[np.uint8]:
    """``decoded`` ``(rows, cols, C)`` copied to ``(C, rows, cols)``, into a spare buffer of
    that shape when there is one (reused memory is fast; fresh memory is not, PERF-NOTES)."""
    rows, cols, channels = decoded.shape
    shape = (channels, rows, cols)
    for k, buf in enumerate(spare):
        if buf.shape == shape:
            out = spare.pop(k)
            break
    else:
        out = _aligned_empty(shape)
    np.copyto(out, decoded.transpose(2, 0, 1))
    return out


def _loader_batches(loader: DataLoader[dict[str, Any]]) -> Iterator[tuple[Tensor, list[Box]]]:
    for batch in loader:
        yield batch["image"], [Box(*row) for row in batch["box"].tolist()]


def predict_slide(
    model: Callable[[Tensor], Tensor],
    slide: Slide | str | os.PathLike[str],
    *,
    tile: int,
    overlap: int = 0,
    reduce: int = 1,
    batch_size: int = 8,
    tta: TTA = None,
    device: str | torch.device | None = None,
    amp: bool = False,
    min_tissue: float = 0.0,
    progress: bool = True,
    store: str | os.PathLike[str] | None = None,
    resume: bool = False,
    blend: Blend = "gaussian",
    activation: Activation = "sigmoid",
    channels: int = 1,
    num_workers: int = 0,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    tissue: TissueMap | None = None,
    slide_id: str | None = None,
) -> Stitcher:
    """Predict a whole slide window by window and blend the windows into a :class:`Stitcher`.

    Parameters
    ----------
    model : callable
        A torch module (or any callable) from ``(B, C, h, w)`` float tensors to ``(B, channels,
        h, w)``, with ``h = tile // reduce``. Set to eval mode here when it is a module.
    slide : Slide or path
        The slide; a path is opened here and closed before returning. Each stored tile is
        decoded once: with the default float input on the CPU and no workers, at a
        ``reduce`` the slide stores as a level, the windows are built from the decoded tiles
        here, each tile kept from its first window to its last (one or two rows of tiles;
        the slide's own cache is not used). Otherwise the windows are read with
        :meth:`Slide.read`: a path through a private tile cache of about one row of windows,
        a :class:`Slide` through its own cache.
    tile, overlap : int
        Window side and overlap in level-0 pixels (stride ``tile - overlap``).
    reduce : int
        Reduce factor: the model sees ``tile // reduce`` pixels per side.
    batch_size : int
        Windows per forward pass.
    tta : {None, "flips", "d4"}
        Test-time augmentation: each batch is predicted under every transform and the inverse
        transformed probabilities are averaged before blending.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    amp : bool
        Autocast the forward pass (float16 on CUDA, bfloat16 on CPU).
    min_tissue : float
        Windows whose tissue fraction (thumbnail rule) is below this are not predicted; they
        count as background: probability 0, blended with their full weight (so predictions
        fade out towards skipped neighbours as they would next to a predicted empty window;
        with a ``store`` they are left out of the blend instead). 0 predicts every window.
    progress : bool
        Show a tqdm progress bar.
    store : path, optional
        A zarr canvas on disk for slides beyond RAM (see :class:`Stitcher`).
    resume : bool
        Reopen an existing ``store`` and add to it. Every window is predicted and added again,
        so use it only to continue a canvas filled elsewhere, not to re-run a slide.
    blend : {"gaussian", "pyramid", "mean", "center"}
        Window weighting.
    activation : {"sigmoid", "softmax", None}
        Applied to the model output: ``"sigmoid"`` when the model returns logits (the default
        and the segmentation-models-pytorch convention), ``None`` when it already returns
        probabilities.
    channels : int
        Channels the model must return.
    num_workers : int
        DataLoader workers reading and decoding windows while the model computes. 0 (the
        default) reads the windows in this process straight into one reused batch buffer.
    preprocess : callable, optional
        Maps the uint8 ``(B, C, h, w)`` batch (on the device) to the model input; default
        ``x / 255`` as float32 (into a reused buffer on the CPU). Do not keep references to
        the batch: its buffers are reused by the next one.
    tissue : TissueMap, optional
        A precomputed tissue map (for ``min_tissue``).
    slide_id : str, optional
        Recorded in an on-disk store.

    Returns
    -------
    Stitcher
        Call :meth:`Stitcher.to_rle`, :meth:`Stitcher.mask` or :meth:`Stitcher.probabilities`.
        In RAM (no ``store``) it declares the window grid (``Stitcher(grid=...)``): it holds
        one float32 canvas, and ``probabilities()`` returns a read-only view of it.

    Raises
    ------
    StitchError
        The model returns the wrong shape or NaN.
    TileReadError
        A window cannot be read (the message names the slide and the box).
    """
    device = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    # without workers, the default x / 255 on the CPU is done while reading, into a reused
    # float batch
    as_float = num_workers == 0 and preprocess is None and device.type == "cpu"
    opened_here = not isinstance(slide, Slide)
    opened = (
        slide
        if isinstance(slide, Slide)
        else _slide_for_prediction(slide, tile, reduce, num_workers, as_float)
    )
    try:
        return _predict(
            model,
            opened,
            tile=tile,
            overlap=overlap,
            reduce=reduce,
            batch_size=batch_size,
            tta=tta,
            device=device,
            amp=amp,
            min_tissue=min_tissue,
            progress=progress,
            store=store,
            resume=resume,
            blend=blend,
            activation=activation,
            channels=channels,
            num_workers=num_workers,
            preprocess=preprocess,
            tissue=tissue,
            slide_id=slide_id,
        )
    finally:
        if opened_here:
            opened.close()  # frees its tiles


def _predict(
    model: Callable[[Tensor], Tensor],
    slide: Slide,
    *,
    tile: int,
    overlap: int,
    reduce: int,
    batch_size: int,
    tta: TTA,
    device: str | torch.device | None,
    amp: bool,
    min_tissue: float,
    progress: bool,
    store: str | os.PathLike[str] | None,
    resume: bool,
    blend: Blend,
    activation: Activation,
    channels: int,
    num_workers: int,
    preprocess: Callable[[Tensor], Tensor] | None,
    tissue: TissueMap | None,
    slide_id: str | None,
) -> Stitcher:
    source = SlideSource(slide, tissue=tissue, id=slide_id)
    sampler = GridSampler(tile, overlap=overlap, reduce=reduce, min_tissue=min_tissue)
    # the whole slide in this process, whatever torch.distributed says
    dataset = TileDataset([source], sampler, rank=0, world_size=1)
    h, w = slide.shape
    grid = None
    if store is None:
        grid = (
            grid_positions(h, tile, sampler.stride, reduce, sampler.edge),
            grid_positions(w, tile, sampler.stride, reduce, sampler.edge),
        )
    stitcher = Stitcher(
        slide.shape,
        reduce=reduce,
        tile=tile,
        blend=blend,
        overlap=overlap,
        channels=channels,
        grid=grid,
        store=store,
        resume=resume,
        slide_id=slide_id or source.id,
    )
    device = torch.device(device) if device is not None else torch.device("cpu")
    if isinstance(model, torch.nn.Module):
        with contextlib.suppress(NotImplementedError):  # torch.export modules have no eval()
            model.eval()
    transforms = tta_transforms(tta)
    pin = device.type == "cuda"
    n = len(dataset)
    as_float = num_workers == 0 and preprocess is None and device.type == "cpu"
    batches = (
        _window_batches(
            source,
            [dataset.address(g)[1] for g in range(n)],
            reduce,
            batch_size,
            as_float=as_float,
            pin_memory=pin,
        )
        if num_workers == 0
        else _loader_batches(
            DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin)
        )
    )
    bar = _progress(math.ceil(n / batch_size), f"predict {source.id}", progress)
    autocast = (
        torch.autocast(
            device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16
        )
        if amp
        else nullcontext()
    )
    side = tile // reduce
    with torch.inference_mode(), autocast:
        for batch, boxes in batches:
            if as_float:  # converted while reading
                images = batch
            else:
                batch = batch.to(device, non_blocking=True)
                images = (preprocess or _default_preprocess)(batch)
            probs = None
            for forward, inverse in transforms:
                out = model(forward(images))
                if not isinstance(out, torch.Tensor) or tuple(out.shape) != (
                    images.shape[0],
                    channels,
                    side,
                    side,
                ):
                    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise StitchError(
                        f"the model must return shape (batch, channels, h, w) = "
                        f"{(images.shape[0], channels, side, side)} for windows of {tile} px at "
                        f"reduce {reduce}, got {got}"
                    )
                out = out.float()
                if activation == "sigmoid":
                    out = torch.sigmoid(out)
                elif activation == "softmax":
                    out = torch.softmax(out, dim=1)
                out = inverse(out)
                probs = out if probs is None else probs + out
            assert probs is not None
            if len(transforms) > 1:
                probs = probs / len(transforms)
            averaged = probs.cpu().numpy()
            for box, p in zip(boxes, averaged, strict=True):
                stitcher.add(box, p)
            bar.update(1)
    bar.close()
    stitcher.flush()
    return stitcher


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="batch", leave=False)


# --------------------------------------------------------------------------------------------
# Dice
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiceScore:
    """Pixel counts of a prediction against the truth at level 0, and their Dice."""

    intersection: int
    pred_area: int
    truth_area: int

    @property
    def dice(self) -> float:
        """``2 |P and T| / (|P| + |T|)``; 1.0 when both masks are empty (Kaggle's rule)."""
        total = self.pred_area + self.truth_area
        return 1.0 if total == 0 else 2.0 * self.intersection / total


@njit
def _runs_overlap(
    s1: NDArray[np.int64], l1: NDArray[np.int64], s2: NDArray[np.int64], l2: NDArray[np.int64]
) -> int:
    total = 0
    i = 0
    j = 0
    while i < s1.size and j < s2.size:
        a0, a1 = s1[i], s1[i] + l1[i]
        b0, b1 = s2[j], s2[j] + l2[j]
        lo = max(a0, b0)
        hi = min(a1, b1)
        if hi > lo:
            total += hi - lo
        if a1 < b1:
            i += 1
        else:
            j += 1
    return total


def _runs(source: Any, order: str) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    if isinstance(source, RleMask) and source.order == order:
        return source.starts, source.lengths
    if isinstance(source, Stitcher):
        return rle_to_runs(source.to_rle(order=order))  # type: ignore[arg-type]
    return None


def dice(
    pred: MaskSource | Stitcher,
    truth: MaskSource | Stitcher,
    *,
    window: int = 4096,
    threshold: float = 0.5,
) -> DiceScore:
    """Slide-level Dice of two masks at level 0, streamed (no full-resolution mask).

    RLE masks and stitchers are compared run against run in O(runs); other sources
    (polygons, arrays) window by window (``window`` x ``window`` level-0 pixels at a time).
    A :class:`Stitcher` is thresholded at ``threshold``.

    Examples
    --------
    >>> import numpy as np, tilestream as ts
    >>> a = ts.RleMask("1 4", (4, 4)); b = ts.ArrayMask(np.eye(4, dtype=np.uint8))
    >>> score = dice(a, b)
    >>> score.intersection, score.pred_area, score.truth_area, round(score.dice, 3)
    (1, 4, 4, 0.25)
    """
    if tuple(pred.shape) != tuple(truth.shape):
        raise ValueError(f"masks differ in shape: {tuple(pred.shape)} vs {tuple(truth.shape)}")
    for order in ("F", "C"):
        a, b = _runs(pred, order), _runs(truth, order)
        if a is not None and b is not None:
            return DiceScore(
                int(_runs_overlap(a[0], a[1], b[0], b[1])), int(a[1].sum()), int(b[1].sum())
            )
    p = pred.as_mask_source(threshold) if isinstance(pred, Stitcher) else pred
    t = truth.as_mask_source(threshold) if isinstance(truth, Stitcher) else truth
    h, w = pred.shape
    inter = pa = ta = 0
    for y in range(0, h, window):
        for x in range(0, w, window):
            box = Box(y, x, min(window, h - y), min(window, w - x))
            mp = p.read(box) > 0
            mt = t.read(box) > 0
            inter += int(np.count_nonzero(mp & mt))
            pa += int(np.count_nonzero(mp))
            ta += int(np.count_nonzero(mt))
    return DiceScore(inter, pa, ta)


def dice_report(
    pairs: Mapping[str, tuple[MaskSource | Stitcher, MaskSource | Stitcher]],
) -> list[dict[str, Any]]:
    """Per-slide Dice rows (``slide``, ``dice``, ``intersection``, ``pred_area``,
    ``truth_area``) followed by a ``mean`` row (the mean of the slide Dice scores)."""
    rows: list[dict[str, Any]] = []
    for slide_id, (pred, truth) in pairs.items():
        score = dice(pred, truth)
        rows.append(
            {
                "slide": slide_id,
                "dice": score.dice,
                "intersection": score.intersection,
                "pred_area": score.pred_area,
                "truth_area": score.truth_area,
            }
        )
    if rows:
        rows.append({"slide": "mean", "dice": float(np.mean([r["dice"] for r in rows]))})
    return rows


# --------------------------------------------------------------------------------------------
# Many slides on dask.distributed
# --------------------------------------------------------------------------------------------


def _slide_id(path: str | os.PathLike[str]) -> str:
    return Path(path).name.split(".")[0]


def _predict_one(
    model_factory: Callable[[], Any],
    path: str,
    out_dir: str,
    options: dict[str, Any],
    threshold: float,
    keep_probabilities: bool,
) -> tuple[str, str]:
    """One slide: reuse a finished RLE, else predict into a fresh store and write the RLE."""
    slide_id = _slide_id(path)
    out = Path(out_dir)
    rle_path = out / f"{slide_id}.rle"
    if rle_path.is_file():
        return slide_id, rle_path.read_text(encoding="utf-8")
    store = out / f"{slide_id}.zarr" if keep_probabilities else None
    if store is not None and store.exists():
        shutil.rmtree(store)  # a worker died mid-slide: its partial canvas is not reusable
    model = model_factory()
    stitcher = predict_slide(model, path, store=store, slide_id=slide_id, progress=False, **options)
    rle = stitcher.to_rle(threshold)
    with atomic_path(rle_path, ".rle") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(rle)
    return slide_id, rle


def predict_slides(
    model_factory: Callable[[], Any],
    slide_paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    client: Any = None,
    n_workers: int = 2,
    serial: bool = False,
    threshold: float = 0.5,
    keep_probabilities: bool = True,
    submission: str = "submission.csv",
    tile: int,
    overlap: int = 0,
    reduce: int = 1,
    batch_size: int = 8,
    tta: TTA = None,
    device: str | None = None,
    amp: bool = False,
    min_tissue: float = 0.0,
    blend: Blend = "gaussian",
    activation: Activation = "sigmoid",
    num_workers: int = 0,
    retries: int = 2,
) -> Path:
    """Predict many slides, one task per slide, and write ``submission.csv``; return its path.

    Parameters
    ----------
    model_factory : callable
        Builds the model in the worker (must pickle: a top-level function or a
        ``functools.partial``).
    slide_paths : sequence of paths
        The slides; the Kaggle id is the file name up to its first dot.
    out_dir : path
        Receives ``{id}.rle`` per finished slide (written atomically: the "done" marker),
        ``{id}.zarr`` (the probability canvas, when ``keep_probabilities``) and the submission.
    client : dask.distributed.Client, optional
        Where the tasks run; default a ``LocalCluster`` of ``n_workers`` single-threaded
        processes, closed afterwards. Scripts must guard the call with
        ``if __name__ == "__main__":`` (dask starts workers by importing the script).
    n_workers : int
        Worker processes of the default ``LocalCluster``.
    serial : bool
        Run in this process, one slide after the other (no dask).
    threshold : float
        Probability cut of the masks.
    keep_probabilities : bool
        Keep each slide's probability canvas as ``{id}.zarr`` (else predict in RAM).
    submission : str
        File name of the submission inside ``out_dir``.
    num_workers : int
        DataLoader workers per slide (reading windows while the model computes).
    retries : int
        Times dask re-runs a slide whose worker died.
    tile, overlap, reduce, batch_size, tta, device, amp, min_tissue, blend, activation :
        As in :func:`predict_slide`.

    Notes
    -----
    Re-running skips slides whose ``{id}.rle`` exists, so an interrupted run resumes where it
    stopped; a slide whose worker died is recomputed from scratch.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [os.fspath(p) for p in slide_paths]
    ids = [_slide_id(p) for p in paths]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"slide ids must be unique, repeated: {duplicates}")
    options = {
        "tile": tile,
        "overlap": overlap,
        "reduce": reduce,
        "batch_size": batch_size,
        "tta": tta,
        "device": device,
        "amp": amp,
        "min_tissue": min_tissue,
        "blend": blend,
        "activation": activation,
        "num_workers": num_workers,
    }
    results: dict[str, str] = {}
    if serial:
        for p in paths:
            slide_id, rle = _predict_one(
                model_factory, p, str(out), options, threshold, keep_probabilities
            )
            results[slide_id] = rle
    else:
        from dask.distributed import Client, LocalCluster

        own = client is None
        cluster = None
        if own:
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = Client(cluster)  # type: ignore[no-untyped-call]
        try:
            futures = [
                client.submit(
                    _predict_one,
                    model_factory,
                    p,
                    str(out),
                    options,
                    threshold,
                    keep_probabilities,
                    key=f"tilestream-predict-{i}-{_slide_id(p)}",
                    retries=retries,
                    pure=False,
                )
                for i, p in enumerate(paths)
            ]
            for slide_id, rle in client.gather(futures):
                results[slide_id] = rle
        finally:
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    return write_submission(out / submission, [(i, results[i]) for i in ids])
