"""tilestream: stream training tiles out of gigapixel TIFF slides and stitch predictions back."""

from __future__ import annotations

from .errors import (
    BoxError,
    CorruptSlideError,
    CorruptTileError,
    DecompressionBombError,
    EmptyImageError,
    NotATiffError,
    SlideNotFoundError,
    TilestreamError,
    TilestreamWarning,
    UnsupportedCodecError,
    UnsupportedLayoutError,
)
from .geometry import Box
from .reader import DEFAULT_CACHE_BYTES, DEFAULT_MAX_PIXELS, IMAGE_FILL, Level, Slide

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FILL",
    "Box",
    "BoxError",
    "CorruptSlideError",
    "CorruptTileError",
    "DecompressionBombError",
    "EmptyImageError",
    "Level",
    "NotATiffError",
    "Slide",
    "SlideNotFoundError",
    "TilestreamError",
    "TilestreamWarning",
    "UnsupportedCodecError",
    "UnsupportedLayoutError",
    "__version__",
]
