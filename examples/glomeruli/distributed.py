"""Processes: one plain process, or DDP under ``torchrun`` (gloo on CPU, nccl on CUDA).

``torchrun --nproc_per_node N`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous
address; :func:`setup` then joins the process group from those variables. ``TileDataset`` reads
the rank and world size from ``torch.distributed`` itself, so each rank streams its own share
of every epoch's tiles. Rank 0 validates, writes files and prints; the others wait for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Context", "setup"]

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Where this process runs: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.is_distributed:
            return value
        box: list[Any] = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def all_sum(self, *values: float) -> list[float]:
        """Element-wise sums of ``values`` over all ranks."""
        if not self.is_distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.to(self.device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the others (e.g. build a cache once)."""
        if self.is_main:
            result = fn()
            self.barrier()
            return result
        self.barrier()
        return fn()

    def close(self) -> None:
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str | None = None) -> Context:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` set), pick a device.

    On CUDA each rank takes ``cuda:LOCAL_RANK``. CPU ranks split the cores between them.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
    if dev.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    return Context(rank=rank, world_size=world, local_rank=local_rank, device=dev)
