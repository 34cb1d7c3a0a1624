"""`TileDataset`: a torch IterableDataset of (image, mask) tiles from many slides, sharded
exactly over DataLoader workers and DDP ranks, reproducible and resumable.

Every sample has an address ``(seed, epoch, g)`` where ``g`` is its index in the epoch's sample
list. Rank ``r`` of ``R`` takes the ``r``-th contiguous part of the list and its DataLoader
worker ``w`` of ``W`` the ``w``-th part of that (shard ``r * W + w`` of ``R * W``), so the union
over any number of workers and ranks is the single-process list, with no duplicates. Resuming
skips the indices already consumed, whatever the new sharding.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import IterableDataset, get_worker_info

from .annotations import MaskSource, PolygonMask
from .errors import TilestreamError
from .geometry import Box
from .reader import Slide
from .sampling import GridSampler, RandomSampler, SourceInfo, shard_range
from .tissue import TissueMap, tissue_mask

if TYPE_CHECKING:
    from .hubmap import SlideRecord

__all__ = ["SlideSource", "TileDataset", "TileReadError"]

logger = logging.getLogger("tilestream")

Sampler = RandomSampler | GridSampler
Transform = Callable[..., Mapping[str, Any]]


class TileReadError(TilestreamError, RuntimeError):
    """Reading a sample failed; the message names the slide and the box."""


class SlideSource:
    """One slide with its optional labels, as a :class:`TileDataset` input.

    Parameters
    ----------
    slide : Slide or path
        The slide (opened here to learn its shape; pixels are read later, in the workers).
    mask : MaskSource, optional
        Labels read with each tile (``RleMask``, ``PolygonMask``, ``ArrayMask``).
    regions : PolygonMask, optional
        Named regions (``Cortex``, ``Medulla``, ...) for region-weighted sampling.
    id : str, optional
        Name of the slide in samples (default: the file stem).
    tissue : TissueMap, optional
        A precomputed tissue map (default: computed on first need from the thumbnail).
    """

    def __init__(
        self,
        slide: Slide | str | os.PathLike[str],
        mask: MaskSource | None = None,
        regions: PolygonMask | None = None,
        id: str | None = None,
        tissue: TissueMap | None = None,
    ) -> None:
        self.slide = slide if isinstance(slide, Slide) else Slide.open(slide)
        self.mask = mask
        self.regions = regions
        self.id = id if id is not None else Path(self.slide.path).stem
        self.tissue = tissue
        if mask is not None and tuple(mask.shape) != self.slide.shape:
            raise ValueError(
                f"slide {self.id}: mask shape {tuple(mask.shape)} differs from the slide's "
                f"{self.slide.shape}"
            )

    @classmethod
    def from_record(cls, record: SlideRecord) -> SlideSource:
        """A source from a :class:`tilestream.hubmap.SlideRecord`."""
        return cls(record.image, mask=record.mask, regions=record.regions, id=record.id)

    def __repr__(self) -> str:
        return (
            f"SlideSource({self.id!r}, shape={self.slide.shape}, mask={type(self.mask).__name__})"
        )


def _shard_of(rank: int, world: int, worker: int, workers: int, n: int) -> range:
    outer = shard_range(n, rank, world)
    inner = shard_range(len(outer), worker, workers)
    return range(outer.start + inner.start, outer.start + inner.stop)


class TileDataset(IterableDataset[dict[str, Any]]):
    """Stream ``(image, mask)`` tiles sampled from slides, sharded over workers and ranks.

    Parameters
    ----------
    sources : sequence of SlideSource
        The slides.
    sampler : RandomSampler or GridSampler
        Where tiles come from.
    samples_per_epoch : int, optional
        Samples per epoch over all ranks and workers (required with a random sampler; a grid
        sampler yields its whole list, or its first ``samples_per_epoch`` windows).
    transform : callable, optional
        Called as ``transform(image=HWC uint8, mask=HW uint8)`` (``mask`` left out when there
        is none) and returning a mapping with numpy ``"image"`` (h, w, C) (and ``"mask"``
        (h, w)): an albumentations ``Compose`` works as is (without ``ToTensorV2``).
    seed : int
        Base of every sample's random stream.
    on_error : {"raise", "skip"}
        On a tile that cannot be read: raise :class:`TileReadError` naming slide and box, or
        log it (logger ``"tilestream"``), count it in :attr:`skipped` (of the process that
        read it: a DataLoader worker's count stays in the worker) and go on.
    rank, world_size : int, optional
        Override the rank and world size (default: from ``torch.distributed`` when it is
        initialised, else 0 and 1).
    max_open_slides : int
        Slides a worker keeps open at once (least recently used are closed).

    Yields
    ------
    dict
        ``image``: uint8 tensor ``(C, h, w)`` (contiguous without a transform; with one, a
        ``(C, h, w)`` view of the transform's HWC output); ``mask``: uint8 tensor ``(1, h, w)`` when the
        source has a mask; ``slide``: the slide id; ``box``: int64 tensor
        ``(y, x, height, width)`` at level 0; ``index``: the sample's index in the epoch;
        ``epoch``: the epoch it was drawn in.

    Notes
    -----
    Slides, masks and tissue maps pickle by value or path, so the dataset works with
    ``num_workers=0``, fork and spawn. Slides reopen in each worker; decoded tiles go to each
    process's bounded cache. To resume mid-epoch, call :meth:`record` with each consumed
    batch's ``index`` and save :meth:`state_dict`; after :meth:`load_state_dict` the epoch
    yields exactly the samples not yet consumed (with any number of workers or ranks: with
    DDP, give every rank the union of all ranks' consumed indices).
    """

    def __init__(
        self,
        sources: Sequence[SlideSource],
        sampler: Sampler,
        *,
        samples_per_epoch: int | None = None,
        transform: Transform | None = None,
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        rank: int | None = None,
        world_size: int | None = None,
        max_open_slides: int = 16,
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("TileDataset needs at least one SlideSource")
        if on_error not in ("raise", "skip"):
            raise ValueError(f'on_error must be "raise" or "skip", got {on_error!r}')
        if not isinstance(sampler, RandomSampler | GridSampler):
            raise TypeError(
                f"sampler must be a RandomSampler or GridSampler, got {type(sampler).__name__}"
            )
        if isinstance(sampler, RandomSampler) and samples_per_epoch is None:
            raise ValueError("samples_per_epoch is required with a RandomSampler")
        if samples_per_epoch is not None and samples_per_epoch < 0:
            raise ValueError(f"samples_per_epoch must be >= 0, got {samples_per_epoch}")
        self.sources = list(sources)
        self.sampler = sampler
        self.transform = transform
        self.seed = int(seed)
        self.on_error = on_error
        self.max_open_slides = max(1, int(max_open_slides))
        self._rank, self._world = rank, world_size
        # The epoch lives in shared memory so that persistent DataLoader workers (which keep
        # their own copy of the dataset) see set_epoch() from the main process.
        self._epoch = mp.get_context().RawValue("q", 0)
        self._consumed: set[int] = set()
        self._consumed_epoch = 0  # the epoch the consumed indices belong to
        self.skipped = 0
        self.infos = [self._prepare(src) for src in self.sources]
        if isinstance(sampler, GridSampler):
            per_slide = [sampler.boxes(info) for info in self.infos]
            self._grid = (
                np.concatenate(
                    [
                        np.column_stack([np.full(len(b), k, np.int64), b])
                        for k, b in enumerate(per_slide)
                    ]
                )
                if per_slide
                else np.zeros((0, 5), np.int64)
            )
            total = len(self._grid)
            self.samples_per_epoch = (
                total if samples_per_epoch is None else min(total, samples_per_epoch)
            )
            self._probabilities = np.zeros(0)
        else:
            self._grid = np.zeros((0, 5), np.int64)
            self.samples_per_epoch = int(samples_per_epoch or 0)
            self._probabilities = sampler.slide_probabilities(self.infos)

    # -- preparation (main process, once) --------------------------------------------------

    def _prepare(self, source: SlideSource) -> SourceInfo:
        sampler = self.sampler
        tissue = source.tissue
        if tissue is None and (sampler.needs_tissue or sampler.needs_regions):
            tissue = tissue_mask(source.slide)
            source.tissue = tissue
        centroids = None
        if sampler.needs_objects and source.mask is not None:
            centroids = np.asarray(source.mask.objects().centroids, np.float64)
        regions = None
        names: tuple[str, ...] = ()
        if sampler.needs_regions and source.regions is not None and tissue is not None:
            names = tuple(sorted({str(n) for n in source.regions.classes if n is not None}))
            regions = _region_raster(source.regions, names, tissue)
        return SourceInfo(
            shape=source.slide.shape,
            tissue=tissue,
            centroids=centroids,
            regions=regions,
            region_names=names,
        )

    # -- epochs, sharding, resume ----------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The current epoch (shared with DataLoader workers, persistent ones included)."""
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (samples differ between epochs); forgets consumed indices.

        Persistent DataLoader workers see the new epoch at their next ``iter()``.
        """
        if int(epoch) != self.epoch:
            self._consumed.clear()
        self._epoch.value = int(epoch)
        self._consumed_epoch = int(epoch)

    def record(self, indices: Any) -> None:
        """Mark samples as consumed (pass each batch's ``"index"`` after using it)."""
        values = indices.tolist() if hasattr(indices, "tolist") else indices
        if isinstance(values, int):
            values = [values]
        if self._consumed_epoch != self.epoch:
            self._consumed.clear()
            self._consumed_epoch = self.epoch
        self._consumed.update(int(v) for v in values)

    def state_dict(self) -> dict[str, Any]:
        """Epoch, seed and consumed sample indices: all that resuming needs."""
        return {"epoch": self.epoch, "seed": self.seed, "consumed": sorted(self._consumed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the current epoch yields only samples not in ``state["consumed"]``."""
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"state was saved with seed {state['seed']}, this dataset has seed {self.seed}"
            )
        self._epoch.value = int(state["epoch"])
        self._consumed = {int(v) for v in state["consumed"]}
        self._consumed_epoch = int(state["epoch"])

    def rank_world(self) -> tuple[int, int]:
        """``(rank, world_size)``: the overrides, else ``torch.distributed``, else (0, 1)."""
        rank, world = self._rank, self._world
        if rank is None or world is None:
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized():
                rank = dist.get_rank() if rank is None else rank
                world = dist.get_world_size() if world is None else world
        rank = 0 if rank is None else int(rank)
        world = 1 if world is None else int(world)
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world_size={world}), got {rank}")
        return rank, world

    def shard_indices(self, worker: int = 0, num_workers: int = 1) -> range:
        """Sample indices of shard ``rank * num_workers + worker`` this epoch (before resume)."""
        rank, world = self.rank_world()
        return _shard_of(rank, world, worker, num_workers, self.samples_per_epoch)

    def __len__(self) -> int:
        """Samples this rank yields this epoch over all its workers (consumed ones excluded)."""
        rank, world = self.rank_world()
        part = shard_range(self.samples_per_epoch, rank, world)
        if self._consumed_epoch != self.epoch:
            return len(part)
        return len(part) - sum(1 for g in self._consumed if g in part)

    # -- sampling --------------------------------------------------------------------------

    def address(self, index: int) -> tuple[int, Box]:
        """``(source index, level-0 box)`` of sample ``index`` this epoch."""
        if isinstance(self.sampler, GridSampler):
            order = index
            if self.sampler.shuffle:
                order = int(self._grid_order()[index])
            k, y, x, h, w = (int(v) for v in self._grid[order])
            return k, Box._trusted(y, x, h, w)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        k, box, _ = self.sampler.draw(self.infos, self._probabilities, rng)
        return k, box

    def _grid_order(self) -> NDArray[np.int64]:
        cached = getattr(self, "_order_cache", None)
        if cached is not None and cached[0] == self.epoch:
            return cached[1]  # type: ignore[no-any-return]
        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self._grid))
        self._order_cache = (self.epoch, order)
        return order

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        indices = self.shard_indices(worker, workers)
        # consumed indices only apply to the epoch they were recorded in (persistent workers
        # keep this object across epochs and read the epoch from shared memory)
        epoch = self.epoch
        consumed = self._consumed if self._consumed_epoch == epoch else set()
        opened: OrderedDict[int, None] = OrderedDict()
        reduce = self.sampler.reduce
        for g in indices:
            if g in consumed:
                continue
            k, box = self.address(g)
            source = self.sources[k]
            opened.pop(k, None)
            opened[k] = None
            if len(opened) > self.max_open_slides:
                oldest, _ = opened.popitem(last=False)
                self.sources[oldest].slide.close()
            try:
                sample = self._read(source, box, reduce)
            except Exception as err:
                message = f"slide {source.id} ({source.slide.path}), box {box}: {err}"
                if self.on_error == "raise":
                    raise TileReadError(message) from err
                self.skipped += 1
                logger.warning("skipping sample %d: %s", g, message)
                continue
            sample["slide"] = source.id
            sample["box"] = torch.tensor([box.y, box.x, box.height, box.width], dtype=torch.int64)
            sample["index"] = g
            sample["epoch"] = epoch
            yield sample

    def _read(self, source: SlideSource, box: Box, reduce: int) -> dict[str, Any]:
        mask = source.mask.read(box, reduce) if source.mask is not None else None
        if self.transform is None:
            # Read straight into a (C, h, w) tensor through an (h, w, C) view of it: the
            # channel transpose happens in the reader's own copy, not in the collate.
            chw = torch.empty(
                (source.slide.channels, box.height // reduce, box.width // reduce),
                dtype=torch.uint8,
            )
            source.slide.read(box, reduce, out=chw.numpy().transpose(1, 2, 0))
            sample: dict[str, Any] = {"image": chw}
            if mask is not None:
                sample["mask"] = torch.from_numpy(mask)[None]
            return sample
        image = source.slide.read(box, reduce)
        out = (
            self.transform(image=image, mask=mask)
            if mask is not None
            else self.transform(image=image)
        )
        if not isinstance(out.get("image"), np.ndarray) or np.ndim(out["image"]) != 3:
            raise TypeError(
                "transform must return numpy arrays: image (h, w, C) and mask (h, w), got image "
                f"{type(out.get('image')).__name__} {tuple(getattr(out.get('image'), 'shape', ()))}; drop "
                "ToTensorV2 / Normalize-to-tensor steps (TileDataset makes the tensors)"
            )
        image = np.ascontiguousarray(out["image"])
        if mask is not None:
            mask = np.ascontiguousarray(out["mask"])
        sample = {"image": torch.from_numpy(image).permute(2, 0, 1)}
        if mask is not None:
            sample["mask"] = torch.from_numpy(mask)[None]
        return sample


def _region_raster(
    regions: PolygonMask, names: tuple[str, ...], tissue: TissueMap
) -> NDArray[np.uint8]:
    """Region class index per tissue-map pixel (pixel-centre rule), 0 where none."""
    h, w = tissue.mask.shape
    r = tissue.reduce
    coded = PolygonMask(
        list(regions.geometries),
        regions.shape,
        classes=list(regions.classes),
        values={name: i + 1 for i, name in enumerate(names)},
    )
    return coded.read(Box(0, 0, h * r, w * r), r)
