"""Shared fixtures of the tilestream benchmarks: cached synthetic slides and a results table.

Slides are generated once per machine with :func:`tilestream.synthetic.make_slide` into
``$TILESTREAM_BENCH_DIR`` (default ``~/.cache/tilestream-bench``), under a file name derived
from the :class:`SlideSpec`, so a changed spec makes a new file and an unchanged one is reused.
``make_slide`` writes atomically (temporary file + rename), so an interrupted or concurrent
generation never leaves a half-written slide under the final name.

The benchmark modules record figures through the ``results`` fixture
(``results.record(...)``: scenario, contender, reads/s, ratio vs the scenario's anchor, ...);
at the end of the session the hook below prints them, one table per kind, so the ratios of a
run can be read (and pasted into ``docs/performance.md``) in one place. ``TILESTREAM_BENCH_JSON=path`` also writes them as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from tilestream.synthetic import SlideSpec, make_slide

_RESULTS: list[dict[str, Any]] = []
_NOTES: list[str] = []


# ------------------------------------------------------------------------------------------
# Collection: `pytest benchmarks` collects bench_*.py (pyproject's python_files is pytest's
# default, test_*.py; a bench file named on the command line is collected by pytest itself).
# ------------------------------------------------------------------------------------------


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and file_path.parent == Path(__file__).parent
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


# ------------------------------------------------------------------------------------------
# Cached synthetic slides
# ------------------------------------------------------------------------------------------


def bench_dir() -> Path:
    """Where generated slides live (``$TILESTREAM_BENCH_DIR`` or ``~/.cache/tilestream-bench``)."""
    root = os.environ.get("TILESTREAM_BENCH_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "tilestream-bench"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def slide_name(spec: SlideSpec) -> str:
    """A file name that encodes the spec (readable prefix + hash of every field)."""
    fields = asdict(spec)
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    layout = f"t{spec.tile}" if spec.tile else f"s{spec.rows_per_strip}"
    codec = spec.compression + (f"{spec.quality}" if spec.compression == "jpeg" else "")
    pyr = "pyr" if spec.pyramid else "flat"
    return f"{spec.height}x{spec.width}-{layout}-{codec}-{pyr}-{digest}.tif"


def cached_slide(spec: SlideSpec) -> str:
    """Path of the slide for ``spec``, generating it on first use (atomically)."""
    path = bench_dir() / slide_name(spec)
    if not path.exists():
        t0 = time.perf_counter()
        make_slide(path, spec)
        note(f"generated {path.name} in {time.perf_counter() - t0:.1f} s "
             f"({path.stat().st_size / 2**20:.0f} MiB)")
    return str(path)


# The slides of the reader benchmarks (H&E-like RGB, seeded).
JPEG_10K = SlideSpec(height=10000, width=10000, seed=7, tile=512, compression="jpeg",
                     quality=85, pyramid=True)
DEFLATE_10K = SlideSpec(height=10000, width=10000, seed=7, tile=512, compression="deflate",
                        pyramid=False)
STRIPPED_10K = SlideSpec(height=10000, width=10000, seed=7, tile=None, rows_per_strip=64,
                         compression="none", pyramid=False)
JPEG_40K = SlideSpec(height=40000, width=40000, seed=7, tile=512, compression="jpeg",
                     quality=85, pyramid=True)


@pytest.fixture(scope="session")
def jpeg_slide() -> str:
    return cached_slide(JPEG_10K)


@pytest.fixture(scope="session")
def deflate_slide() -> str:
    return cached_slide(DEFLATE_10K)


@pytest.fixture(scope="session")
def stripped_slide() -> str:
    return cached_slide(STRIPPED_10K)


@pytest.fixture(scope="session")
def jpeg_slide_40k() -> str:
    return cached_slide(JPEG_40K)


# ------------------------------------------------------------------------------------------
# Results table
# ------------------------------------------------------------------------------------------


def record(**row: Any) -> None:
    """Add one row to the session's results table (printed at the end of the session)."""
    _RESULTS.append(row)


def note(line: str) -> None:
    """Add a free-form line printed under the results table."""
    _NOTES.append(line)


class Results:
    """What the ``results`` fixture gives a benchmark: :func:`record` and :func:`note`."""

    record = staticmethod(record)
    note = staticmethod(note)


@pytest.fixture(scope="session")
def results() -> Results:
    return Results()


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """``x_anchor`` = reads/s / the anchor's reads/s of the same table and scenario, when absent."""
    anchors = {
        (r.get("table"), r.get("scenario")): r["reads_s"]
        for r in rows
        if r.get("anchor") and r.get("reads_s")
    }
    for r in rows:
        base = anchors.get((r.get("table"), r.get("scenario")))
        if "x_anchor" not in r and base and r.get("reads_s"):
            r["x_anchor"] = r["reads_s"] / base


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("tilestream", "numpy", "tifffile", "imagecodecs", "zarr", "tiffslide",
                 "openslide-python", "openslide-bin", "opencv-python-headless"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (missing)")
    return ", ".join(parts)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _RESULTS and not _NOTES:
        return
    _NOTES.append(f"versions: {_versions()}; python {sys.version.split()[0]}; "
                  f"{os.cpu_count()} CPUs")
    tr = terminalreporter
    tr.section("tilestream benchmarks: figures of this run")
    _add_ratios(_RESULTS)
    tables: dict[str, list[dict[str, Any]]] = {}
    for row in _RESULTS:
        tables.setdefault(str(row.get("table", "")), []).append(row)
    for title, rows in tables.items():
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys and k != "table"]
        widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys}
        tr.write_line("")
        tr.write_line(f"[{title}]")
        tr.write_line("  ".join(k.ljust(widths[k]) for k in keys))
        tr.write_line("  ".join("-" * widths[k] for k in keys))
        for row in rows:
            tr.write_line("  ".join(_fmt(row.get(k)).ljust(widths[k]) for k in keys))
    tr.write_line("")
    for line in _NOTES:
        tr.write_line(line)
    out = os.environ.get("TILESTREAM_BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps({"results": _RESULTS, "notes": _NOTES}, indent=2))
        tr.write_line(f"written {out}")
