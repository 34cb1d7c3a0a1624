"""A thread-safe LRU of decoded chunks bounded by bytes."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

__all__ = ["DEFAULT_CACHE_BYTES", "ChunkCache"]

#: Budget of the process-wide cache that slides share by default.
DEFAULT_CACHE_BYTES = 256 * 2**20

_shared: tuple[int, ChunkCache] | None = None
_shared_lock = threading.Lock()


class ChunkCache:
    """Least-recently-used cache of numpy arrays, bounded by their total ``nbytes``.

    Safe to share between threads (one lock around the bookkeeping; values are never mutated).
    An array larger than the whole budget is not stored. ``capacity_bytes=0`` disables caching.
    Slides share :meth:`shared` (one per process) unless given their own budget.

    Examples
    --------
    >>> import numpy as np
    >>> cache = ChunkCache(capacity_bytes=100)
    >>> cache.put("a", np.zeros(60, np.uint8)); cache.put("b", np.zeros(60, np.uint8))
    >>> cache.get("a") is None, len(cache), cache.nbytes
    (True, 1, 60)
    """

    @classmethod
    def shared(cls) -> ChunkCache:
        """The process-wide cache (``DEFAULT_CACHE_BYTES``), created anew in a forked child.

        Every slide opened without ``cache_bytes`` uses it, so the decoded-tile memory of a
        process (a DataLoader worker, a dask worker) stays bounded however many slides it
        reads. Change its budget with :meth:`resize`; a forked worker starts its own cache at
        the default budget, so resize it in the worker (e.g. in a ``worker_init_fn``).
        """
        global _shared, _shared_lock
        pid = os.getpid()
        current = _shared
        if current is not None and current[0] == pid:
            return current[1]
        if current is not None:  # forked: the parent's lock may have been held at the fork
            _shared_lock = threading.Lock()
        with _shared_lock:
            if _shared is None or _shared[0] != pid:
                _shared = (pid, cls(DEFAULT_CACHE_BYTES))
            return _shared[1]

    def resize(self, capacity_bytes: int) -> None:
        """Change the budget, evicting least recently used arrays if it shrank."""
        if capacity_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {capacity_bytes}")
        with self._lock:
            self.capacity_bytes = int(capacity_bytes)
            self._evict()

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = int(capacity_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock: threading.Lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached array for ``key`` (marked as recently used), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Store ``value``, evicting the least recently used arrays to stay within budget."""
        size = int(value.nbytes)
        if size > self.capacity_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= int(old.nbytes)
            self._items[key] = value
            self._bytes += size
            self._evict()

    def _evict(self) -> None:
        while self._bytes > self.capacity_bytes and self._items:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= int(evicted.nbytes)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def discard(self, prefix: Hashable) -> None:
        """Drop every entry whose key is a tuple starting with ``prefix``."""
        with self._lock:
            for key in [k for k in self._items if isinstance(k, tuple) and k and k[0] == prefix]:
                self._bytes -= int(self._items.pop(key).nbytes)
