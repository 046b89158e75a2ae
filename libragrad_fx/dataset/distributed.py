"""The processes of one run: torch.distributed under ``torchrun``, or a single process.

``torchrun --nproc-per-node N libragrad-fx attribute ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; each joins one process group (gloo on CPU, nccl on GPU,
each rank on its own GPU). Work is split by shards: the shards still to do, in order, dealt
round-robin, so every rank knows its part without talking to the others, and the split does not
change the files (:mod:`libragrad_fx.dataset.shards`). Without those variables there is one process
and no process group.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..core.errors import UsageError

__all__ = ["World", "join", "deal"]

TIMEOUT = datetime.timedelta(hours=24)
"""How long a rank waits for the others at a barrier (ranks finish their shards at different times)."""


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.backend is None:
            return
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.backend is None:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        if self.backend is None:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.backend is not None and dist.is_initialized():
            dist.destroy_process_group()


def join(device: str) -> World:
    """This process's place in the run, and the device it computes on (``device``: ``cpu``,
    ``cuda``, ``cuda:N``; under torchrun ``cuda`` means this rank's GPU)."""
    wanted = torch.device(device)
    if wanted.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available here (torch.cuda.is_available() is False); "
                         "use --device cpu")
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        if wanted.type == "cuda" and wanted.index is None:
            wanted = torch.device("cuda", torch.cuda.current_device())
        return World(device=wanted)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if wanted.type == "cuda":
        if wanted.index is not None:
            raise UsageError(f"--device {device}: under torchrun every rank takes its own GPU; pass --device cuda")
        if local >= torch.cuda.device_count():
            raise UsageError(f"rank {rank} has local rank {local} but this machine has {torch.cuda.device_count()} "
                             "GPU(s): start at most that many processes per node")
        wanted = torch.device("cuda", local)
        torch.cuda.set_device(wanted)
        backend = "nccl"
    elif wanted.type == "cpu":
        backend = "gloo"
    else:
        raise UsageError(f"--device {device}: several processes run on cpu (gloo) or cuda (nccl)")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT, **({"device_id": wanted} if backend == "nccl" else {}))
    return World(rank, size, local, wanted, backend)


def deal(pending: list[int], world: World) -> list[int]:
    """This rank's shards: every ``size``-th of the pending ones, starting at its rank."""
    return sorted(pending)[world.rank::world.size]
