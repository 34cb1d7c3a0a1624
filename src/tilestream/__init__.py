"""tilestream: stream training tiles out of gigapixel TIFF slides and stitch predictions back."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import hubmap, synthetic
from ._cache import DEFAULT_CACHE_BYTES, ChunkCache
from .annotations import ArrayMask, LabelObjects, MaskArray, MaskSource, PolygonMask, RleMask
from .errors import (
    AnnotationFormatError,
    AnnotationWarning,
    BoxError,
    CorruptSlideError,
    CorruptTileError,
    DatasetError,
    DecompressionBombError,
    EmptyImageError,
    NotATiffError,
    RLEFormatError,
    SlideNotFoundError,
    TilestreamError,
    TilestreamWarning,
    UnsupportedCodecError,
    UnsupportedLayoutError,
)
from .geometry import Box
from .rasterize import rasterize
from .reader import DEFAULT_MAX_PIXELS, IMAGE_FILL, Level, Slide
from .rle import (
    rle_decode,
    rle_decode_window,
    rle_encode,
    rle_encode_runs,
    rle_to_runs,
    runs_to_rle,
)
from .sampling import GridSampler, RandomSampler, SourceInfo, shard_range
from .scoring import DiceScore, dice, dice_report
from .splits import Fold, folds
from .stitch import Stitcher, StitchError, blend_window
from .tissue import TissueMap, tissue_mask

if TYPE_CHECKING:
    from .dataset import SlideSource, TileDataset, TileReadError
    from .inference import (
        load_model,
        predict_slide,
        predict_slides,
        tta_transforms,
    )

__version__ = "0.1.0.dev0"

#: Names whose modules import torch (~2 s and ~500 MiB): loaded on first use, so that the
#: reader, labels and the command line start without it.
_LAZY = {
    "SlideSource": "dataset",
    "TileDataset": "dataset",
    "TileReadError": "dataset",
    "load_model": "inference",
    "predict_slide": "inference",
    "predict_slides": "inference",
    "tta_transforms": "inference",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tilestream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FILL",
    "AnnotationFormatError",
    "AnnotationWarning",
    "ArrayMask",
    "Box",
    "BoxError",
    "ChunkCache",
    "CorruptSlideError",
    "CorruptTileError",
    "DatasetError",
    "DecompressionBombError",
    "DiceScore",
    "EmptyImageError",
    "Fold",
    "GridSampler",
    "LabelObjects",
    "Level",
    "MaskArray",
    "MaskSource",
    "NotATiffError",
    "PolygonMask",
    "RLEFormatError",
    "RandomSampler",
    "RleMask",
    "Slide",
    "SlideNotFoundError",
    "SlideSource",
    "SourceInfo",
    "StitchError",
    "Stitcher",
    "TileDataset",
    "TileReadError",
    "TilestreamError",
    "TilestreamWarning",
    "TissueMap",
    "UnsupportedCodecError",
    "UnsupportedLayoutError",
    "__version__",
    "blend_window",
    "dice",
    "dice_report",
    "folds",
    "hubmap",
    "load_model",
    "predict_slide",
    "predict_slides",
    "rasterize",
    "rle_decode",
    "rle_decode_window",
    "rle_encode",
    "rle_encode_runs",
    "rle_to_runs",
    "runs_to_rle",
    "shard_range",
    "synthetic",
    "tissue_mask",
    "tta_transforms",
]
