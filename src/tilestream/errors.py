"""Exception and warning classes.

Every error tilestream raises derives from :class:`TilestreamError` and also from the builtin
exception it resembles, so ``except FileNotFoundError`` and ``except ValueError`` keep working.
"""

from __future__ import annotations

__all__ = [
    "AnnotationFormatError",
    "AnnotationWarning",
    "BoxError",
    "CorruptSlideError",
    "CorruptTileError",
    "DatasetError",
    "DecompressionBombError",
    "EmptyImageError",
    "GeometryTypeError",
    "GeometryValueError",
    "NotATiffError",
    "RLEFormatError",
    "SlideNotFoundError",
    "TilestreamError",
    "TilestreamWarning",
    "UnsupportedCodecError",
    "UnsupportedLayoutError",
]


class TilestreamError(Exception):
    """Base class of every error raised by tilestream."""


class TilestreamWarning(UserWarning):
    """Base class of every warning issued by tilestream."""


class SlideNotFoundError(TilestreamError, FileNotFoundError):
    """The slide file does not exist or is not a regular file."""


class NotATiffError(TilestreamError, ValueError):
    """The file is not a TIFF (wrong magic bytes or unreadable header)."""


class CorruptSlideError(TilestreamError, ValueError):
    """The TIFF structure is broken: IFD loop, truncated IFD, offsets past the end of the file."""


class EmptyImageError(TilestreamError, ValueError):
    """The image has a zero-sized dimension."""


class UnsupportedCodecError(TilestreamError, NotImplementedError):
    """The pixel data uses a compression that imagecodecs cannot decode."""


class UnsupportedLayoutError(TilestreamError, NotImplementedError):
    """The image layout (sample format, chroma subsampling, ...) cannot be read as (H, W, C)."""


class CorruptTileError(TilestreamError, ValueError):
    """A stored tile or strip failed to decode. The message names the file, level and tile."""


class DecompressionBombError(TilestreamError, ValueError):
    """The image has more pixels than ``max_pixels`` allows."""


class BoxError(TilestreamError, ValueError):
    """A box is malformed or not aligned to the reduce factor."""


class AnnotationFormatError(TilestreamError, ValueError):
    """An annotation file is not JSON, or not a list or collection of GeoJSON features."""


class AnnotationWarning(TilestreamWarning):
    """An annotation feature was repaired, clipped or skipped (the message names it)."""


class DatasetError(TilestreamError, ValueError):
    """A dataset folder is missing files or its files disagree (the message lists each problem)."""


class RLEFormatError(TilestreamError, ValueError):
    """An RLE string is malformed (the message names the token index and the token), or the
    shape/order it is read with is invalid."""


class GeometryTypeError(TilestreamError, TypeError):
    """A geometry is not a Polygon, MultiPolygon or GeometryCollection."""


class GeometryValueError(TilestreamError, ValueError):
    """A polygon has a NaN, infinite or absurdly large (> 1e9 px) vertex."""
