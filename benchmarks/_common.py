"""Helpers shared by the benchmark files (importable both under pytest, whose default import
mode puts ``benchmarks/`` on ``sys.path``, and when a bench file runs as a child script)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest


def loaded_conftest(config: pytest.Config) -> Any:
    """benchmarks/conftest.py as pytest loaded it (its slide cache, ``note``, ``bench_dir``):
    the same module object, not a second import with its own state."""
    here = (Path(__file__).resolve().parent / "conftest.py").resolve()
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).resolve() == here:
            return plugin
    raise RuntimeError("benchmarks/conftest.py is not loaded")


def status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as f:
        found = re.search(rf"{field}:\s+(\d+) kB", f.read())
    if found is None:
        raise OSError(f"{field} not in /proc/self/status")
    return int(found.group(1)) * 1024
