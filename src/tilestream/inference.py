"""Whole-slide inference: `predict_slide` (windows -> batches -> model -> Stitcher),
`predict_slides` over many slides on dask.distributed, and `load_model`.

The window batches are built in `_windows`; slide-level Dice lives in `scoring` (re-exported
here).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import DTypeLike
from torch.utils.data import DataLoader

from ._io import atomic_path
from ._windows import _loader_batches, _slide_for_prediction, _window_batches
from .dataset import SlideSource, TileDataset
from .hubmap import write_submission
from .reader import Slide
from .sampling import GridSampler
from .scoring import DiceScore, dice, dice_report  # re-exported: tilestream.inference.dice
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
    dtype: DTypeLike = np.float32,
) -> Stitcher:
    """Predict a whole slide window by window and blend the windows into a :class:`Stitcher`.

    Parameters
    ----------
    model : callable
        A torch module (or any callable) from ``(B, C, h, w)`` float tensors to ``(B, channels,
        h, w)``, with ``h = tile // reduce``. Set to eval mode here when it is a module.
    slide : Slide or path
        The slide; a path is opened here and closed before returning. Each stored tile is
        decoded once: without workers, at a ``reduce`` the slide stores as a level (or
        level 0), a background thread decodes the tiles in the order the windows need them,
        a few tiles ahead, while this thread builds the batches from the decoded tiles,
        runs the model and blends; each tile is kept from its first window to its last (one
        or two rows of tiles; the slide's own cache is not used). Otherwise the windows are
        read with :meth:`Slide.read`: a path through a private tile cache of about one row
        of windows, a :class:`Slide` through its own cache.
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
        DataLoader worker processes reading and decoding windows while the model computes.
        0 (the default) builds the windows in this process straight into one reused batch
        buffer, with the decoding in one background thread (see ``slide``): no process
        start-up, no copies between processes, and decoding overlaps the model all the same.
    preprocess : callable, optional
        Maps the uint8 ``(B, C, h, w)`` batch (on the device) to the model input; default
        ``x / 255`` as float32 (into a reused buffer on the CPU). Do not keep references to
        the batch: its buffers are reused by the next one.
    tissue : TissueMap, optional
        A precomputed tissue map (for ``min_tissue``).
    slide_id : str, optional
        Recorded in an on-disk store.
    dtype : {"float32", "float16", "float64"}
        The canvas's type (see :class:`Stitcher`): ``float16`` halves it, in RAM or on disk.

    Returns
    -------
    Stitcher
        Call :meth:`Stitcher.to_rle`, :meth:`Stitcher.mask` or :meth:`Stitcher.probabilities`.
        In RAM (no ``store``) it declares the window grid (``Stitcher(grid=...)``): it holds
        one canvas (of ``dtype``), and ``probabilities()`` returns a read-only view of it.

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
    opened_here = not isinstance(slide, Slide)
    opened = (
        slide
        if isinstance(slide, Slide)
        else _slide_for_prediction(slide, tile, reduce, num_workers)
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
            dtype=dtype,
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
    device: torch.device,
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
    dtype: DTypeLike,
) -> Stitcher:
    source = SlideSource(slide, tissue=tissue, id=slide_id)
    sampler = GridSampler(tile, overlap=overlap, reduce=reduce, min_tissue=min_tissue)
    # the whole slide in this process, whatever torch.distributed says
    dataset = TileDataset([source], sampler, rank=0, world_size=1)
    grid = sampler.positions(slide.shape) if store is None else None
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
        dtype=dtype,
    )
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
    # closing(): the generator stops its tile decoder thread also when the model raises
    with contextlib.closing(batches), torch.inference_mode(), autocast:
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
            stitcher.add_batch(boxes, probs.cpu().numpy())
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
    dtype: str = "float32",
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
    tile, overlap, reduce, batch_size, tta, device, amp, min_tissue, blend, activation, dtype :
        As in :func:`predict_slide` (``dtype="float16"`` halves each kept ``{id}.zarr``).

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
        "dtype": dtype,
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
