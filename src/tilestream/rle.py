"""Run-length encoding of binary masks: RLE string <-> mask, full, windowed and streamed.

An RLE is ``"start length start length ..."`` with 1-based starts. Pixels are numbered
column-major by default (``order="F"``: top to bottom, then left to right; the Kaggle/HuBMAP
and COCO convention) or row-major (``order="C"``). The flat index of pixel ``(row, col)`` of an
``(H, W)`` mask is ``col * H + row`` (F) or ``row * W + col`` (C), plus 1. An empty mask encodes
as ``""``.

Everything here runs in numba kernels (``nogil``, single-threaded): the string is parsed by a
kernel over its bytes, masks are written and scanned in their C order without transposing, and
the output string is built as ASCII digits in a byte buffer. Masks are ``(H, W) uint8`` in
{0, 1}, C-contiguous.

Layers: :func:`rle_to_runs` / :func:`runs_to_rle` convert between strings and ``(starts,
lengths)`` int64 arrays; :func:`rle_decode` / :func:`rle_encode` convert strings and whole
masks; :func:`rle_decode_window` decodes one window (optionally block-majority reduced) from
indexed runs; :func:`rle_encode_runs` encodes any sliceable 2-D array (numpy, zarr, dask) band
by band in bounded memory.

All functions are pure and thread-safe; kernels release the GIL.
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from ._jit import njit
from .errors import RLEFormatError
from .geometry import Box

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "Order",
    "rle_decode",
    "rle_decode_window",
    "rle_encode",
    "rle_encode_runs",
    "rle_to_runs",
    "runs_to_rle",
]

Order = Literal["F", "C"]
_I = TypeVar("_I", bound=np.generic)

#: Target size of one band of :func:`rle_encode_runs` (bytes of the normalised band buffer).
_BAND_BYTES = 16 << 20
#: Most significant digits an RLE integer may have (keeps ``start + length`` inside int64).
_MAX_DIGITS = 18
#: Tile of the column-major full decode: columns per band, rows per block (cache/TLB blocking).
_DECODE_TILE_COLS = 256
_DECODE_TILE_ROWS = 256


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


_scratch = threading.local()


def _zeroed_scratch(rows: int, cols: int) -> NDArray[np.int32]:
    """An all-zero ``(rows, cols)`` int32 C-contiguous array, reused per thread.

    Kernels given it must leave it zero (they undo what they add), so reuse costs neither
    clearing nor fresh memory (both slow on the project's machines; see PERF-NOTES).
    """
    need = rows * cols
    buf: NDArray[np.int32] | None = getattr(_scratch, "diff", None)
    if buf is None or buf.size < need:
        buf = np.zeros(max(need, 1 << 16), np.int32)
        _scratch.diff = buf
    return buf[:need].reshape(rows, cols)


def _check_order(order: object) -> Order:
    if order == "F":
        return "F"
    if order == "C":
        return "C"
    raise RLEFormatError(
        f'order must be "F" (column-major, Kaggle/COCO) or "C" (row-major), got {order!r}'
    )


def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        dims: tuple[Any, ...] = tuple(shape)
    except TypeError:
        dims = ()
    ok = len(dims) == 2 and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d > 0
        for d in dims
    )
    if not ok:
        raise RLEFormatError(f"shape must be 2 positive integers (H, W), got {shape!r}")
    return int(dims[0]), int(dims[1])


def _rle_bytes(rle: object) -> NDArray[np.uint8]:
    """The RLE as a uint8 array of its (UTF-8) bytes; ``None``/NaN become empty."""
    if rle is None or (isinstance(rle, float) and math.isnan(rle)):
        return np.zeros(0, np.uint8)
    if isinstance(rle, str):
        raw: bytes = rle.encode("utf-8", errors="replace")
    elif isinstance(rle, (bytes, bytearray, memoryview)):
        raw = bytes(rle)
    else:
        raise TypeError(
            f"rle must be str or bytes (or None/NaN for empty), got {type(rle).__name__}"
        )
    return np.frombuffer(raw, np.uint8)


def _token_text(buf: NDArray[np.uint8], lo: int) -> str:
    """The whitespace-delimited token that starts at byte ``lo`` (shortened when long)."""
    hi = lo
    n = buf.size
    while hi < n and hi - lo < 41 and not (buf[hi] == 32 or 9 <= buf[hi] <= 13):
        hi += 1
    text = buf[lo:hi].tobytes().decode("utf-8", errors="replace")
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------------------------
# Kernels: parsing and validating
# --------------------------------------------------------------------------------------------


@njit
def _is_space(c: int) -> bool:
    return c == 32 or (c >= 9 and c <= 13)


@njit
def _parse_tokens(buf: NDArray[np.uint8]) -> tuple[NDArray[np.int64], int, int, int]:
    """Parse whitespace-separated non-negative integers from ASCII bytes.

    Returns ``(values, status, token, byte)``: status 0 ok, 1 a token is not an integer,
    2 an integer has more than 18 significant digits; ``token`` is the bad token's 0-based
    index and ``byte`` its first byte.
    """
    n = buf.size
    count = 0
    in_tok = False
    for i in range(n):
        if _is_space(buf[i]):
            in_tok = False
        elif not in_tok:
            in_tok = True
            count += 1
    values = np.empty(count, np.int64)
    k = -1
    in_tok = False
    v = 0
    nd = 0
    tok_lo = 0
    for i in range(n):
        c = buf[i]
        if _is_space(c):
            if in_tok:
                values[k] = v
                in_tok = False
            continue
        if not in_tok:
            in_tok = True
            k += 1
            v = 0
            nd = 0
            tok_lo = i
        d = int(c) - 48
        if d < 0 or d > 9:
            return values, 1, k, tok_lo
        if v > 0 or d > 0:
            nd += 1
            if nd > 18:
                return values, 2, k, tok_lo
        v = v * 10 + d
    if in_tok:
        values[k] = v
    return values, 0, -1, 0


@njit
def _check_runs(
    starts: NDArray[np.int64], lengths: NDArray[np.int64], npix: int
) -> tuple[int, int]:
    """First bad run: ``(run, code)``; code 0 ok, 1 start < 1, 2 length < 1, 3 overlaps or is
    before the previous run, 4 starts past ``npix``, 5 ends past ``npix`` (``npix < 0``: no
    limit)."""
    prev_end = 1  # one past the last pixel of the previous run (1-based)
    for i in range(starts.size):
        s = starts[i]
        n = lengths[i]
        if s < 1:
            return i, 1
        if n < 1:
            return i, 2
        if s < prev_end:
            return i, 3
        if npix >= 0:
            if s > npix:
                return i, 4
            if n > npix - s + 1:
                return i, 5
        prev_end = s + n
    return -1, 0


# --------------------------------------------------------------------------------------------
# Kernels: decoding
# --------------------------------------------------------------------------------------------


@njit
def _decode_runs_flat(
    starts: NDArray[np.int64], lengths: NDArray[np.int64], flat: NDArray[np.uint8]
) -> None:
    """Set ``flat[start-1 : start-1+length] = 1`` for every run (row-major full decode)."""
    for i in range(starts.size):
        s = starts[i] - 1
        flat[s : s + lengths[i]] = 1


@njit
def _decode_runs_colmajor(
    starts: NDArray[np.int64],
    lengths: NDArray[np.int64],
    out: NDArray[np.uint8],
    tile_cols: int,
    tile_rows: int,
) -> None:
    """Column-major runs into a C-ordered ``(H, W)`` mask, without a transpose.

    Walks the mask in tiles of ``tile_cols`` columns x ``tile_rows`` rows; within a tile, each
    column writes the part of each run that falls in it. Each column keeps a cursor into the
    sorted runs, so every run is visited once per tile it crosses. The tiling keeps the rows
    being written in cache and TLB (a plain per-run column walk touches a new page per pixel).
    Runs must be validated (sorted, non-overlapping, inside ``H * W``).
    """
    h, w = out.shape
    n = starts.size
    cursor = np.empty(tile_cols, np.int64)
    i0 = 0
    for c0 in range(0, w, tile_cols):
        c1 = min(w, c0 + tile_cols)
        for k in range(c1 - c0):
            base = (c0 + k) * h
            while i0 < n and starts[i0] - 1 + lengths[i0] <= base:
                i0 += 1
            cursor[k] = i0
        if cursor[0] >= n:  # no run reaches this band
            break
        for r0 in range(0, h, tile_rows):
            r1 = min(h, r0 + tile_rows)
            for k in range(c1 - c0):
                c = c0 + k
                base = c * h
                i = cursor[k]
                while i < n:
                    s = starts[i] - 1 - base
                    if s >= r1:
                        break
                    e = s + lengths[i]
                    for r in range(max(s, r0), min(e, r1)):
                        out[r, c] = 1
                    if e > r1:
                        break
                    i += 1
                cursor[k] = i


@njit
def _next_run(starts: NDArray[np.int64], lengths: NDArray[np.int64], i: int, a: int) -> int:
    """Index of the first run at or after ``i`` that ends after 0-based flat position ``a``.

    Run ends are sorted (runs are sorted and disjoint), so this gallops forward from ``i``
    (a hint: where the previous, smaller ``a`` stopped) and finishes with a binary search:
    O(log distance), touching memory near ``i``.
    """
    n = starts.size
    if i >= n or starts[i] - 1 + lengths[i] > a:
        return i
    lo = i  # invariant: run lo ends at or before a
    step = 1
    hi = i + 1
    while hi < n and starts[hi] - 1 + lengths[hi] <= a:
        lo = hi
        step *= 2
        hi = lo + step
    hi = min(hi, n)  # run hi ends after a, or hi == n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if starts[mid] - 1 + lengths[mid] <= a:
            lo = mid
        else:
            hi = mid
    return hi


@njit
def _window_rows(
    starts: NDArray[np.int64],
    lengths: NDArray[np.int64],
    width: int,
    r_lo: int,
    r_hi: int,
    c_lo: int,
    c_hi: int,
    y_off: int,
    x_off: int,
    out: NDArray[np.uint8],
) -> None:
    """Row-major runs into ``out[row - y_off, col - x_off]`` for rows ``[r_lo, r_hi)`` and
    columns ``[c_lo, c_hi)`` of a ``width``-wide mask (clipped to the image by the caller).
    Each row's part of a run is one contiguous fill. ``out`` must be zero. Writes are clipped
    to the window, so malformed runs cannot write out of bounds."""
    i = 0
    for row in range(r_lo, r_hi):
        base = row * width
        a = base + c_lo
        b = base + c_hi
        i = _next_run(starts, lengths, i, a)
        j = i
        while j < starts.size and starts[j] - 1 < b:
            lo = max(starts[j] - 1, a) - base - x_off
            hi = min(starts[j] - 1 + lengths[j], b) - base - x_off
            out[row - y_off, lo:hi] = 1
            j += 1


@njit
def _window_cols(
    starts: NDArray[np.int64],
    lengths: NDArray[np.int64],
    height: int,
    c_lo: int,
    c_hi: int,
    r_lo: int,
    r_hi: int,
    x_off: int,
    y_off: int,
    out: NDArray[np.uint8],
) -> None:
    """Column-major runs into ``out[row - y_off, col - x_off]`` for columns ``[c_lo, c_hi)``
    and rows ``[r_lo, r_hi)`` of a ``height``-tall mask (clipped to the image by the caller).

    Writing a run down a column of a C-ordered window costs a cache line per pixel, so each
    column segment only marks its ends (+1 at its first row, -1 after its last row, mod 256)
    and one pass of row additions (``out[r] += out[r - 1]``, contiguous) fills the segments.
    ``out`` must be zero. Writes are clipped to the window."""
    h = out.shape[0]
    i = 0
    for col in range(c_lo, c_hi):
        base = col * height
        a = base + r_lo
        b = base + r_hi
        i = _next_run(starts, lengths, i, a)
        j = i
        x = col - x_off
        while j < starts.size and starts[j] - 1 < b:
            top = max(starts[j] - 1, a) - base - y_off
            stop = min(starts[j] - 1 + lengths[j], b) - base - y_off
            out[top, x] = (int(out[top, x]) + 1) & 255
            if stop < h:
                out[stop, x] = (int(out[stop, x]) + 255) & 255
            j += 1
    for r in range(max(r_lo - y_off, 1), min(r_hi - y_off + 1, h)):
        out[r] += out[r - 1]


@njit
def _window_majority(
    starts: NDArray[np.int64],
    lengths: NDArray[np.int64],
    line_len: int,
    line_lo: int,
    line_hi: int,
    pos_lo: int,
    pos_hi: int,
    line_off: int,
    pos_off: int,
    r: int,
    is_colmajor: bool,
    diff: NDArray[np.int32],
    out: NDArray[np.uint8],
) -> None:
    """Block majority of the runs in a window, written to every pixel of ``out``.

    The flat pixel index is ``line * line_len + pos``: lines are columns and positions rows for
    column-major runs (``is_colmajor``; ``out[pos // r, line // r]``), rows and columns for
    row-major runs (``out[line // r, pos // r]``), both relative to ``(line_off, pos_off)``.
    The window covers lines ``[line_lo, line_hi)`` and positions ``[pos_lo, pos_hi)`` (clipped
    to the image by the caller).

    Each run segment adds its pixel count per block as differences along the position axis of
    ``diff[line block, position block]`` (at most four writes: the first and last blocks, and
    the span of full blocks between), so the cost is O(segments), not O(blocks covered). Then
    each line block that received a segment is prefix-summed over the blocks it spans, and
    ``out`` is 1 where ``2 * count >= r * r``. ``diff`` (int32, at least ``(line blocks,
    position blocks + 1)``) must be zero on entry and is left zero."""
    if is_colmajor:
        n_pos, n_lines = out.shape
    else:
        n_lines, n_pos = out.shape
    out[:, :] = 0
    lo = np.full(n_lines, n_pos + 1, np.int64)  # first and last diff index written, per
    hi = np.full(n_lines, -1, np.int64)  # line block
    i = 0
    for line in range(line_lo, line_hi):
        base = line * line_len
        a = base + pos_lo
        b = base + pos_hi
        li = (line - line_off) // r
        i = _next_run(starts, lengths, i, a)
        j = i
        while j < starts.size and starts[j] - 1 < b:
            q0 = max(starts[j] - 1, a) - base - pos_off
            q1 = min(starts[j] - 1 + lengths[j], b) - base - pos_off
            j += 1
            if q1 <= q0:  # only with unsorted runs: never index outside the window
                continue
            b0 = q0 // r
            b1 = (q1 - 1) // r
            if b0 == b1:
                v0, v1, full = q1 - q0, 0, 0
            else:
                v0, v1, full = (b0 + 1) * r - q0, q1 - b1 * r, r
            # count(b0) += v0; count(b0 < k < b1) += r; count(b1) += v1 (when b1 > b0)
            diff[li, b0] += v0
            diff[li, b0 + 1] += full - v0
            diff[li, b1] += v1 - full
            diff[li, b1 + 1] -= v1
            lo[li] = min(lo[li], b0)
            hi[li] = max(hi[li], b1 + 1)
    half = r * r
    for li in range(n_lines):
        stop = hi[li] + 1
        last = min(stop, n_pos)
        acc = 0
        if is_colmajor:
            for k in range(lo[li], last):
                acc += diff[li, k]
                diff[li, k] = 0
                out[k, li] = 2 * acc >= half
        else:
            for k in range(lo[li], last):
                acc += diff[li, k]
                diff[li, k] = 0
                out[li, k] = 2 * acc >= half
        for k in range(last, stop):  # the difference past the last block
            diff[li, k] = 0


# --------------------------------------------------------------------------------------------
# Kernels: encoding
# --------------------------------------------------------------------------------------------


@njit
def _grow(a: NDArray[_I], n: int, need: int) -> NDArray[_I]:
    """``a`` if it holds ``need`` items, else a copy of ``a[:n]`` in a larger array (growth by
    doubling). Callers reserve room before their inner loops: an array reassigned inside a hot
    loop costs numba a reference-count update per iteration."""
    if need <= a.size:
        return a
    b = np.empty(max(2 * a.size, need, 1024), a.dtype)
    b[:n] = a[:n]
    return b


@njit
def _append_run(rs: NDArray[np.int64], rl: NDArray[np.int64], nr: int, s: int, n: int) -> int:
    """Append the run ``(s, n)`` (0-based start) at ``nr`` (room reserved by the caller), or
    extend the previous run when they touch (a run that wraps across a line or band boundary).
    Returns the new count."""
    if nr > 0 and rs[nr - 1] + rl[nr - 1] == s:
        rl[nr - 1] += n
        return nr
    rs[nr] = s
    rl[nr] = n
    return nr + 1


_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HIGH = np.uint64(0x8080808080808080)


@njit
def _nonzero_bytes(x: np.uint64) -> np.uint64:
    """Bit ``8b + 7`` set where byte ``b`` of ``x`` is nonzero, all other bits clear."""
    return (((x & _LOW7) + _LOW7) | x) & _HIGH


@njit
def _row_transitions(
    words: NDArray[np.uint64],
    r: int,
    nw: int,
    tcol: NDArray[np.int32],
    trow: NDArray[np.int32],
    nt: int,
    counts: NDArray[np.int64],
) -> int:
    """Record the columns whose nonzero state differs between rows ``r - 1`` and ``r`` of
    ``words`` as transitions ``(col, r - 1)``; return the new count."""
    zero = np.uint64(0)
    one = np.uint64(1)
    for q in range(nw):
        x = words[r, q]
        y = words[r - 1, q]
        if x == y:
            continue
        flips = _nonzero_bytes(x) ^ _nonzero_bytes(y)
        if flips == zero:
            continue
        for b in range(8):
            if (flips >> np.uint64(8 * b + 7)) & one:
                c = 8 * q + b
                tcol[nt] = c
                trow[nt] = r - 1
                nt += 1
                counts[c + 1] += 1
    return nt


@njit
def _band_runs_across(
    words: NDArray[np.uint64],
    width: int,
    line0: int,
    line_len: int,
    rs: NDArray[np.int64],
    rl: NDArray[np.int64],
    nr: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Runs of a band whose pixels are numbered down its columns (column-major over a C band).

    ``words`` holds the band's bytes as ``(line_len + 2, nw)`` uint64 (8 columns per word,
    little-endian): row 0 and row ``line_len + 1`` are zero, rows ``1..line_len`` are the band,
    columns past ``width`` are zero. Column ``c`` has flat pixels ``(line0 + c) * line_len +
    row``. The band is scanned row by row, in memory order: where a row's nonzero pattern
    differs from the row above, a column starts or stops a run (8 columns per word; equal words
    are skipped with one test). The transitions are then bucketed by column (a counting sort)
    and paired into runs, appended to ``rs``/``rl`` (0-based starts) with :func:`_append_run`.
    Returns ``(rs, rl, nr)`` (the arrays grow as needed).
    """
    h = words.shape[0] - 2
    nw = (width + 7) // 8
    tcol = np.empty(4096, np.int32)
    trow = np.empty(4096, np.int32)
    nt = 0
    counts = np.zeros(width + 1, np.int64)
    for r in range(1, h + 2):
        if nt + width > tcol.size:
            tcol = _grow(tcol, nt, nt + width)
            trow = _grow(trow, nt, nt + width)
        nt = _row_transitions(words, r, nw, tcol, trow, nt, counts)
    for c in range(width):
        counts[c + 1] += counts[c]
    rows = np.empty(nt, np.int32)
    fill = counts[:width].copy()
    for k in range(nt):
        c = tcol[k]
        rows[fill[c]] = trow[k]
        fill[c] += 1
    rs = _grow(rs, nr, nr + nt // 2)
    rl = _grow(rl, nr, nr + nt // 2)
    for c in range(width):
        base = (line0 + c) * line_len
        for k in range(counts[c], counts[c + 1], 2):
            nr = _append_run(rs, rl, nr, base + rows[k], rows[k + 1] - rows[k])
    return rs, rl, nr


@njit
def _row_runs_along(
    row: NDArray[np.uint64],
    width: int,
    base: int,
    rs: NDArray[np.int64],
    rl: NDArray[np.int64],
    nr: int,
    state: int,
    run_start: int,
) -> tuple[int, int, int]:
    """Scan one row of words (see :func:`_band_runs_along`); returns ``(nr, state,
    run_start)``."""
    zero = np.uint64(0)
    nfull = width // 8
    nw = (width + 7) // 8
    for j in range(nw):
        x = row[j]
        if j < nfull:
            if state == 0:
                if x == zero:
                    continue
            elif _nonzero_bytes(x) == _HIGH:
                continue
            nb = 8
        else:
            nb = width - 8 * nfull
        for b in range(nb):
            v = 1 if (x >> np.uint64(8 * b)) & np.uint64(0xFF) else 0
            if v != state:
                p = base + 8 * j + b
                if v:
                    run_start = p
                else:
                    rs[nr] = run_start
                    rl[nr] = p - run_start
                    nr += 1
                state = v
    return nr, state, run_start


@njit
def _band_runs_along(
    words: NDArray[np.uint64],
    width: int,
    pos0: int,
    rs: NDArray[np.int64],
    rl: NDArray[np.int64],
    nr: int,
    state: int,
    run_start: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64], int, int, int]:
    """Runs of a band whose pixels are numbered along its rows (row-major over a C band).

    ``words`` holds the band's bytes as ``(rows, nw)`` uint64 (little-endian); the first
    ``width`` bytes of each row are pixels (nonzero = foreground), flat index ``pos0 + row *
    width + col``. Whole words are skipped while they continue the current state (all zero, or
    no zero byte). ``state``/``run_start`` carry an open run across bands; returns them
    updated.
    """
    for r in range(words.shape[0]):
        need = nr + width // 2 + 1  # runs that can end in one row
        rs = _grow(rs, nr, need)
        rl = _grow(rl, nr, need)
        nr, state, run_start = _row_runs_along(
            words[r], width, pos0 + r * width, rs, rl, nr, state, run_start
        )
    return rs, rl, nr, state, run_start


@njit
def _n_digits(v: int) -> int:
    d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d


@njit
def _write_int(out: NDArray[np.uint8], pos: int, v: int) -> int:
    """Write ``v >= 0`` as ASCII digits at ``out[pos:]``; return the position after it."""
    nd = _n_digits(v)
    for k in range(pos + nd - 1, pos - 1, -1):
        out[k] = 48 + v % 10
        v //= 10
    return pos + nd


@njit
def _format_runs(starts: NDArray[np.int64], lengths: NDArray[np.int64]) -> NDArray[np.uint8]:
    """``"s0 l0 s1 l1 ..."`` as ASCII bytes (uint8 array); values written as given."""
    n = starts.size
    total = 0
    for i in range(n):
        total += _n_digits(starts[i]) + _n_digits(lengths[i]) + 2
    out = np.empty(max(total - 1, 0), np.uint8)
    pos = 0
    for i in range(n):
        if i:
            out[pos] = 32
            pos += 1
        pos = _write_int(out, pos, starts[i])
        out[pos] = 32
        pos = _write_int(out, pos + 1, lengths[i])
    return out


# --------------------------------------------------------------------------------------------
# Strings <-> runs
# --------------------------------------------------------------------------------------------


def _runs_error(
    run: int,
    code: int,
    starts: NDArray[np.int64],
    lengths: NDArray[np.int64],
    shape: tuple[int, int] | None,
) -> RLEFormatError:
    s, n = int(starts[run]), int(lengths[run])
    if code == 1:
        return RLEFormatError(
            f"RLE token {2 * run} ('{s}'): start must be >= 1 (starts are 1-based)"
        )
    if code == 2:
        return RLEFormatError(f"RLE token {2 * run + 1} ('{n}'): run length must be >= 1")
    if code == 3:
        ps, pn = int(starts[run - 1]), int(lengths[run - 1])
        return RLEFormatError(
            f"RLE token {2 * run} ('{s}'): run starts inside or before the previous run "
            f"(pixels {ps}..{ps + pn - 1}); runs must be sorted and must not overlap"
        )
    npix = -1 if shape is None else shape[0] * shape[1]  # codes 4 and 5 need a shape
    if code == 4:
        return RLEFormatError(
            f"RLE token {2 * run} ('{s}'): start is past the last pixel {npix} of shape {shape}"
        )
    return RLEFormatError(
        f"RLE token {2 * run + 1} ('{n}'): run {s}..{s + n - 1} ends past the last pixel "
        f"{npix} of shape {shape}"
    )


def _validate_runs(
    starts: NDArray[np.int64], lengths: NDArray[np.int64], shape: tuple[int, int] | None
) -> None:
    npix = -1 if shape is None else shape[0] * shape[1]
    run, code = _check_runs(starts, lengths, npix)
    if code:
        raise _runs_error(int(run), int(code), starts, lengths, shape)


def rle_to_runs(
    rle: str | bytes | None, shape: tuple[int, int] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Parse an RLE string into validated ``(starts, lengths)`` arrays.

    Parameters
    ----------
    rle : str or bytes
        ``"start length start length ..."``, whitespace-separated, 1-based starts. ``""``,
        whitespace only, ``None`` or NaN (an empty CSV cell) mean no runs.
    shape : (int, int), optional
        ``(H, W)`` of the mask; when given, runs must end within ``H * W`` pixels.

    Returns
    -------
    starts, lengths : (N,) int64 arrays
        1-based starts (as in the string) and run lengths, sorted, non-overlapping.

    Raises
    ------
    RLEFormatError
        The RLE is malformed: a token that is not a non-negative integer (or has more than 18
        digits), an odd number of tokens, a start of 0, a length of 0, runs out of order or
        overlapping, or a run past ``H * W``. The message names the 0-based token index and
        the token. Touching runs (``"1 2 3 1"``) are accepted.
    TypeError
        ``rle`` is not a string or bytes.

    Examples
    --------
    >>> starts, lengths = rle_to_runs("2 3 9 2")
    >>> starts, lengths
    (array([2, 9]), array([3, 2]))
    >>> rle_to_runs("")
    (array([], dtype=int64), array([], dtype=int64))
    >>> rle_to_runs("1 2 12a 1")
    Traceback (most recent call last):
    ...
    tilestream.errors.RLEFormatError: RLE token 2 ('12a'): not a non-negative integer
    """
    if shape is not None:
        shape = _check_shape(shape)
    buf = _rle_bytes(rle)
    values, status, token, byte = _parse_tokens(buf)
    if status:
        text = _token_text(buf, int(byte))
        why = (
            "not a non-negative integer"
            if status == 1
            else f"integer too large (more than {_MAX_DIGITS} digits)"
        )
        raise RLEFormatError(f"RLE token {int(token)} ({text!r}): {why}")
    if values.size % 2:
        last = values.size - 1
        raise RLEFormatError(
            f"RLE token {last} ('{int(values[last])}'): start without a length (odd number of "
            f"tokens, {values.size}); an RLE is 'start length' pairs"
        )
    starts = values[0::2].copy()
    lengths = values[1::2].copy()
    _validate_runs(starts, lengths, shape)
    return starts, lengths


def runs_to_rle(starts: NDArray[np.integer[Any]], lengths: NDArray[np.integer[Any]]) -> str:
    """Format ``(starts, lengths)`` as an RLE string ``"s0 l0 s1 l1 ..."``.

    Parameters
    ----------
    starts, lengths : (N,) integer arrays
        1-based starts and run lengths: sorted, non-overlapping, all >= 1.

    Returns
    -------
    str
        The RLE; ``""`` when there are no runs.

    Raises
    ------
    RLEFormatError
        The runs are malformed (the message names the token index, ``2 * run`` for a start and
        ``2 * run + 1`` for a length), or the arrays differ in length.

    Examples
    --------
    >>> import numpy as np
    >>> runs_to_rle(np.array([2, 9]), np.array([3, 2]))
    '2 3 9 2'
    >>> runs_to_rle(np.array([], int), np.array([], int))
    ''
    """
    s = np.ascontiguousarray(starts, dtype=np.int64).reshape(-1)
    n = np.ascontiguousarray(lengths, dtype=np.int64).reshape(-1)
    if s.size != n.size:
        raise RLEFormatError(f"starts and lengths differ in length: {s.size} != {n.size}")
    _validate_runs(s, n, None)
    return str(_format_runs(s, n).tobytes().decode("ascii"))


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def rle_decode(
    rle: str | bytes | None, shape: tuple[int, int], order: Order = "F"
) -> NDArray[np.uint8]:
    """Decode an RLE string into a mask.

    Parameters
    ----------
    rle : str or bytes
        ``"start length ..."``, 1-based starts. ``""``, whitespace, ``None`` or NaN give an
        all-zero mask.
    shape : (int, int)
        ``(H, W)`` of the mask.
    order : {"F", "C"}
        Pixel numbering: ``"F"`` column-major (top to bottom, then left to right; Kaggle,
        HuBMAP, COCO), ``"C"`` row-major.

    Returns
    -------
    (H, W) uint8 array, C-contiguous, values 0/1

    Raises
    ------
    RLEFormatError
        Malformed RLE (see :func:`rle_to_runs`; the message names the token index), a run past
        ``H * W``, a bad ``shape`` or ``order``.

    Notes
    -----
    Column-major runs are written straight into the C-ordered mask in cache-sized tiles; no
    transposed copy is made. Peak memory is the mask plus the parsed runs (16 bytes per run).

    Examples
    --------
    >>> rle_decode("2 3 9 2", (4, 3))
    array([[0, 0, 1],
           [1, 0, 1],
           [1, 0, 0],
           [1, 0, 0]], dtype=uint8)
    >>> rle_decode("2 3 9 2", (4, 3), order="C")
    array([[0, 1, 1],
           [1, 0, 0],
           [0, 0, 1],
           [1, 0, 0]], dtype=uint8)
    >>> rle_decode("", (2, 2))
    array([[0, 0],
           [0, 0]], dtype=uint8)
    """
    order = _check_order(order)
    h, w = _check_shape(shape)
    starts, lengths = rle_to_runs(rle, (h, w))
    out = np.zeros((h, w), np.uint8)
    if starts.size:
        if order == "C" or w == 1 or h == 1:
            _decode_runs_flat(starts, lengths, out.reshape(-1))
        else:
            _decode_runs_colmajor(starts, lengths, out, _DECODE_TILE_COLS, _DECODE_TILE_ROWS)
    return out


def rle_decode_window(
    starts: NDArray[np.integer[Any]],
    lengths: NDArray[np.integer[Any]],
    shape: tuple[int, int],
    box_y: int | Box,
    box_x: int | None = None,
    h: int | None = None,
    w: int | None = None,
    order: Order = "F",
    out: NDArray[np.uint8] | None = None,
    *,
    reduce: int = 1,
) -> NDArray[np.uint8]:
    """Decode one window of a mask from its runs, optionally reduced by block majority.

    Only the runs that cross the window are visited: each column (``order="F"``) or row
    (``"C"``) of the window binary-searches its first run in ``starts``, so the cost is
    O(window lines * log(runs) + run segments in the window), independent of the mask size.

    Parameters
    ----------
    starts, lengths : (N,) integer arrays
        1-based starts and lengths, sorted and non-overlapping, as returned by
        :func:`rle_to_runs` (validated there, once; not re-validated here).
    shape : (int, int)
        ``(H, W)`` of the whole mask.
    box_y, box_x, h, w : int
        The window ``[box_y, box_y + h) x [box_x, box_x + w)`` in level-0 pixels ``(row, col)``.
        It may extend past the mask, or lie outside it; pixels outside the mask are 0. A
        :class:`~tilestream.Box` may be passed as ``box_y`` instead of the four integers.
    order : {"F", "C"}
        Pixel numbering of the runs (column-major by default).
    out : (h // reduce, w // reduce) uint8 array, optional
        Written in full (every pixel is set, to 0 or 1) and returned. Any strides.
    reduce : int
        Block-majority reduction: reduced pixel ``(i, j)`` is 1 when at least half of its
        ``reduce x reduce`` level-0 pixels are 1 (pixels outside the mask count as 0). The box
        must be aligned: ``box_y``, ``box_x``, ``h`` and ``w`` multiples of ``reduce``.

    Returns
    -------
    (h // reduce, w // reduce) uint8 array, values 0/1
        ``out`` when given, else a new C-contiguous array.

    Raises
    ------
    BoxError
        ``h`` or ``w`` not positive, a non-integer field, or a box not aligned to ``reduce``.
    RLEFormatError
        Bad ``shape`` or ``order``, or ``starts`` and ``lengths`` of different lengths.
    ValueError
        ``out`` has the wrong shape or dtype, or is read-only.

    Examples
    --------
    >>> starts, lengths = rle_to_runs("2 3 9 2")   # the (4, 3) mask of rle_decode's example
    >>> rle_decode_window(starts, lengths, (4, 3), 1, 1, 2, 3)
    array([[0, 1, 0],
           [0, 0, 0]], dtype=uint8)
    >>> rle_decode_window(starts, lengths, (4, 3), -2, 0, 4, 4, reduce=2)  # 2 of 4 -> 1
    array([[0, 0],
           [0, 1]], dtype=uint8)
    """
    order = _check_order(order)
    height, width = _check_shape(shape)
    if isinstance(box_y, Box):
        if box_x is not None or h is not None or w is not None:
            raise TypeError("pass either a Box or box_y, box_x, h, w, not both")
        box = box_y
    else:
        if box_x is None or h is None or w is None:
            raise TypeError("rle_decode_window needs box_y, box_x, h and w (or a Box)")
        box = Box(box_y, box_x, h, w)
    box.check_reduce(reduce)
    s = np.ascontiguousarray(starts, dtype=np.int64).reshape(-1)
    n = np.ascontiguousarray(lengths, dtype=np.int64).reshape(-1)
    if s.size != n.size:
        raise RLEFormatError(f"starts and lengths differ in length: {s.size} != {n.size}")
    out_shape = (box.height // reduce, box.width // reduce)
    if out is None:
        out = np.empty(out_shape, np.uint8)
    elif out.shape != out_shape or out.dtype != np.uint8:
        raise ValueError(f"out must be a {out_shape} uint8 array, got {out.shape} {out.dtype}")
    elif not out.flags.writeable:
        raise ValueError("out is read-only")
    top, left = max(box.y, 0), max(box.x, 0)
    bottom, right = min(box.bottom, height), min(box.right, width)
    if bottom <= top or right <= left or s.size == 0:
        out[...] = 0
    elif reduce == 1:
        out[...] = 0
        if order == "F":
            _window_cols(s, n, height, left, right, top, bottom, box.x, box.y, out)
        else:
            _window_rows(s, n, width, top, bottom, left, right, box.y, box.x, out)
    elif order == "F":  # lines are columns, positions rows
        diff = _zeroed_scratch(out_shape[1], out_shape[0] + 1)
        _window_majority(
            s, n, height, left, right, top, bottom, box.x, box.y, reduce, True, diff, out
        )
    else:
        diff = _zeroed_scratch(out_shape[0], out_shape[1] + 1)
        _window_majority(
            s, n, width, top, bottom, left, right, box.y, box.x, reduce, False, diff, out
        )
    return out


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _band_bounds(mask: Any, axis: int, band: int | None) -> list[int]:
    """Band boundaries along ``axis``: ``band`` lines each, or ~``_BAND_BYTES`` per band
    aligned to the array's chunks (zarr: ``chunks`` ints, dask: ``chunks`` tuples)."""
    size = int(mask.shape[axis])
    other = max(int(mask.shape[1 - axis]), 1)
    if band is not None:
        if isinstance(band, bool) or not isinstance(band, (int, np.integer)) or band < 1:
            raise RLEFormatError(f"band must be a positive integer, got {band!r}")
        return [*range(0, size, int(band)), size]
    target = max(8, _BAND_BYTES // other)
    chunk_edges: list[int] | None = None
    chunks = getattr(mask, "chunks", None)
    if not isinstance(mask, np.ndarray) and chunks is not None:
        try:
            c = chunks[axis]
            if isinstance(c, (int, np.integer)):
                chunk_edges = [*range(0, size, int(c)), size]
            else:
                chunk_edges = [0, *np.cumsum([int(x) for x in c]).tolist()]
        except (TypeError, IndexError):
            chunk_edges = None
    if not chunk_edges or chunk_edges[-1] != size:
        return [*range(0, size, target), size]
    bounds = [0]
    for edge in chunk_edges[1:]:
        if edge - bounds[-1] >= target or edge == size:
            bounds.append(edge)
    return bounds


def _load_band(
    buf: NDArray[np.uint64], band: NDArray[Any], row0: int, rows: int, cols: int
) -> None:
    """Copy ``band`` (``rows x cols``) into ``buf`` rows ``row0..row0+rows`` as bytes (uint64
    words, 8 bytes per word): uint8 and bool as they are, other dtypes as ``band != 0``; bytes
    past ``cols`` in those rows are zeroed."""
    u8 = buf.view(np.uint8)
    dst = u8[row0 : row0 + rows, :cols]
    if band.dtype == np.uint8 or band.dtype == np.bool_:
        np.copyto(dst, band, casting="unsafe")
    else:
        np.not_equal(band, 0, out=dst.view(np.bool_))
    u8[row0 : row0 + rows, cols:] = 0


def rle_encode_runs(
    mask: Any, order: Order = "F", *, band: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Encode a 2-D mask into ``(starts, lengths)``, band by band in bounded memory.

    Parameters
    ----------
    mask : (H, W) array-like
        Any 2-D array with ``shape`` and slicing (numpy, zarr, dask, memmap); 0 is background,
        any other value (including NaN) is foreground.
    order : {"F", "C"}
        Pixel numbering: ``"F"`` column-major (Kaggle, HuBMAP, COCO), ``"C"`` row-major.
    band : int, optional
        Columns (``"F"``) or rows (``"C"``) pulled from ``mask`` at a time with
        ``np.asarray(mask[:, c0:c1])`` (or ``mask[r0:r1]``). By default ~16 MiB per band,
        aligned to the array's chunks when it has them.

    Returns
    -------
    starts, lengths : (N,) int64 arrays
        1-based starts and lengths; runs are maximal (a run that wraps from the end of one
        column to the start of the next, in flat order, is one run).

    Raises
    ------
    RLEFormatError
        ``mask`` is not 2-D, or ``order`` is not "F" or "C".

    Notes
    -----
    Peak extra memory is one normalised band (~16 MiB by default, plus what ``mask[...]`` of a
    lazy array materialises) and the runs (16 bytes per run, doubled while growing): below one
    byte per pixel for any realistic mask. Column-major runs of a C-ordered array are found
    without a transpose: each band is scanned in memory order, 8 columns per 64-bit word, and
    the run boundaries are bucketed by column. A numpy array in Fortran order is scanned along
    its contiguous axis instead.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.array([[0, 0, 1], [1, 0, 1], [1, 0, 0], [1, 0, 0]], np.uint8)
    >>> rle_encode_runs(mask)
    (array([2, 9]), array([3, 2]))
    >>> rle_encode_runs(mask, order="C")
    (array([ 3,  6, 10]), array([2, 2, 1]))
    """
    order = _check_order(order)
    if not hasattr(mask, "shape") or not hasattr(mask, "__getitem__"):
        mask = np.asarray(mask)
    if len(mask.shape) != 2:
        raise RLEFormatError(
            f"mask must be 2-D (H, W), got shape {tuple(mask.shape)}; squeeze the channel "
            "axis first"
        )
    height, width = (int(d) for d in mask.shape)
    rs = np.empty(1 << 14, np.int64)
    rl = np.empty(1 << 14, np.int64)
    nr = 0
    if height == 0 or width == 0:
        return rs[:0].copy(), rl[:0].copy()
    if isinstance(mask, np.ndarray) and mask.flags.f_contiguous and not mask.flags.c_contiguous:
        # Fortran-ordered numpy array: the transposed view is C-ordered and numbers its
        # pixels the other way round, so scan that (flat indices are identical).
        mask = mask.T
        height, width = width, height
        order = "C" if order == "F" else "F"
    if order == "F":
        bounds = _band_bounds(mask, 1, band)
        widest = max(b - a for a, b in itertools.pairwise(bounds))
        # one zero row above and below the band: the scan compares each row with the previous
        buf = np.zeros((height + 2, (widest + 7) // 8), np.uint64)
        for c0, c1 in itertools.pairwise(bounds):
            _load_band(buf, np.asarray(mask[:, c0:c1]), 1, height, c1 - c0)
            rs, rl, nr = _band_runs_across(buf, c1 - c0, c0, height, rs, rl, nr)
    else:
        bounds = _band_bounds(mask, 0, band)
        tallest = max(b - a for a, b in itertools.pairwise(bounds))
        buf = np.empty((tallest, (width + 7) // 8), np.uint64)
        state, run_start = 0, 0
        for r0, r1 in itertools.pairwise(bounds):
            _load_band(buf, np.asarray(mask[r0:r1]), 0, r1 - r0, width)
            rs, rl, nr, state, run_start = _band_runs_along(
                buf[: r1 - r0], width, r0 * width, rs, rl, nr, state, run_start
            )
        if state:
            rs = _grow(rs, nr, nr + 1)
            rl = _grow(rl, nr, nr + 1)
            nr = _append_run(rs, rl, nr, run_start, height * width - run_start)
    starts = rs[:nr].copy()
    starts += 1
    return starts, rl[:nr].copy()


def rle_encode(mask: Any, order: Order = "F", *, band: int | None = None) -> str:
    """Encode a 2-D mask as an RLE string.

    Parameters
    ----------
    mask : (H, W) array-like
        Any 2-D array with ``shape`` and slicing (numpy, zarr, dask, memmap); 0 is background,
        any other value is foreground. Read band by band (see :func:`rle_encode_runs`).
    order : {"F", "C"}
        Pixel numbering: ``"F"`` column-major (Kaggle, HuBMAP, COCO), ``"C"`` row-major.
    band : int, optional
        Columns (``"F"``) or rows (``"C"``) per band; by default ~16 MiB per band.

    Returns
    -------
    str
        ``"start length ..."`` with 1-based starts and maximal runs; ``""`` for an empty mask.

    Raises
    ------
    RLEFormatError
        ``mask`` is not 2-D, or ``order`` is not "F" or "C".

    Notes
    -----
    Never materialises the mask as integers: peak extra memory is one band plus the runs and
    the output string, well below one byte per pixel.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.array([[0, 0, 1], [1, 0, 1], [1, 0, 0], [1, 0, 0]], np.uint8)
    >>> rle_encode(mask)
    '2 3 9 2'
    >>> rle_encode(mask, order="C")
    '3 2 6 2 10 1'
    >>> rle_encode(np.zeros((3, 3), bool))
    ''
    """
    starts, lengths = rle_encode_runs(mask, order, band=band)
    return str(_format_runs(starts, lengths).tobytes().decode("ascii"))
