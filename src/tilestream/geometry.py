"""Boxes in level-0 pixels and the maths of reduce factors.

A :class:`Box` is a half-open rectangle ``[y, y + height) x [x, x + width)`` in level-0 pixel
coordinates ``(row, col)``. It may lie partly or wholly outside the slide; readers pad what
falls outside.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BoxError

__all__ = ["Box"]


@dataclass(frozen=True, slots=True)
class Box:
    """A half-open rectangle in level-0 pixels, ``(row, col)`` frame.

    Parameters
    ----------
    y, x : int
        Top-left corner (row, column). May be negative.
    height, width : int
        Size in level-0 pixels, both > 0.

    Examples
    --------
    >>> b = Box(10, 20, 100, 50)
    >>> b.bottom, b.right
    (110, 70)
    >>> b.intersection(Box(0, 0, 50, 50))
    Box(y=10, x=20, height=40, width=30)
    """

    y: int
    x: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("y", "x", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                try:
                    as_int = int(value)
                except (TypeError, ValueError):
                    as_int = None
                if as_int is None or as_int != value:
                    raise BoxError(f"Box.{name} must be an integer, got {value!r}")
                object.__setattr__(self, name, as_int)
        if self.height <= 0 or self.width <= 0:
            raise BoxError(
                f"Box height and width must be > 0, got height={self.height}, width={self.width}"
            )

    @classmethod
    def from_bounds(cls, top: int, left: int, bottom: int, right: int) -> Box:
        """Build a box from half-open bounds ``[top, bottom) x [left, right)``."""
        return cls(top, left, bottom - top, right - left)

    @classmethod
    def _trusted(cls, y: int, x: int, height: int, width: int) -> Box:
        # Internal fast path: the caller guarantees ints and positive sizes (no validation).
        box = object.__new__(cls)
        object.__setattr__(box, "y", y)
        object.__setattr__(box, "x", x)
        object.__setattr__(box, "height", height)
        object.__setattr__(box, "width", width)
        return box

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.y + self.height

    @property
    def right(self) -> int:
        """One past the last column."""
        return self.x + self.width

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    def intersection(self, other: Box) -> Box | None:
        """The overlap of two boxes, or ``None`` when they do not overlap."""
        top, left = max(self.y, other.y), max(self.x, other.x)
        bottom, right = min(self.bottom, other.bottom), min(self.right, other.right)
        if bottom <= top or right <= left:
            return None
        return Box._trusted(top, left, bottom - top, right - left)

    def clip(self, shape: tuple[int, int]) -> Box | None:
        """The part of the box inside an image of ``shape`` (H, W), or ``None``."""
        return self.intersection(Box._trusted(0, 0, int(shape[0]), int(shape[1])))

    def translate(self, dy: int, dx: int) -> Box:
        """The box moved by ``(dy, dx)``."""
        return Box._trusted(self.y + int(dy), self.x + int(dx), self.height, self.width)

    def check_reduce(self, reduce: int) -> None:
        """Raise :class:`BoxError` unless every field is a multiple of ``reduce``."""
        check_reduce_factor(reduce)
        bad = [n for n in ("y", "x", "height", "width") if getattr(self, n) % reduce]
        if bad:
            raise BoxError(
                f"{self} is not aligned to reduce={reduce}: {', '.join(bad)} not a multiple of "
                f"{reduce}; snap the box with Box.aligned(reduce)"
            )

    def aligned(self, reduce: int) -> Box:
        """The smallest box aligned to ``reduce`` that contains this one."""
        check_reduce_factor(reduce)
        top, left = (self.y // reduce) * reduce, (self.x // reduce) * reduce
        bottom = -(-self.bottom // reduce) * reduce
        right = -(-self.right // reduce) * reduce
        return Box.from_bounds(top, left, bottom, right)

    def scaled(self, reduce: int) -> Box:
        """The box on the grid reduced by ``reduce`` (fields divided; must be aligned)."""
        self.check_reduce(reduce)
        r = reduce
        return Box._trusted(self.y // r, self.x // r, self.height // r, self.width // r)


def check_reduce_factor(reduce: int) -> int:
    """Validate a reduce factor (a positive integer) and return it."""
    if isinstance(reduce, bool) or not isinstance(reduce, int) or reduce < 1:
        raise BoxError(f"reduce must be a positive integer, got {reduce!r}")
    return reduce
