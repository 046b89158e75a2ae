"""A run over a dataset: shards to do, batches through a job, shard files out; safe to kill and rerun.

The steps, on every rank:

1. the job starts (model, transform, its checks); rank 0 compares the manifest with ``--out`` (a
   different command there is refused unless ``--overwrite``), writes it on a new folder and deletes
   half-written shards; the others wait;
2. every rank lists the finished shards and deals itself a part of the rest
   (:func:`libragrad_fx.dataset.distributed.deal`);
3. the job turns each batch into per-sample tensors and index rows; when a shard's last batch is
   done it is written (atomically);
4. after a barrier, rank 0 finishes the run (merges the index, aggregates) once every shard exists.

A job is an object with ``start()``, ``process(batch) -> (tensors, rows)``, ``shard_info(shard)``,
``counters()`` (numbers summed over the ranks at the end, e.g. seconds per method) and
``finish(out, layout, counters) -> summary lines``; :mod:`.attribute` and :mod:`.faithfulness`
are the two.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from ..core.errors import UsageError
from . import manifest as manifests
from .distributed import World, deal
from .loader import Batch, ImageSamples, loader
from .progress import Bar, folder_count
from .shards import SHARDS, Layout, finished, remove_partial, write_shard

__all__ = ["Job", "Run", "Outcome", "execute"]


class Job(Protocol):
    outputs: tuple[str, ...]
    """Files and folders of ``--out`` the job writes besides the shards (deleted by ``--overwrite``)."""

    def start(self) -> None: ...

    def process(self, batch: Batch) -> tuple[dict[str, Tensor], list[dict[str, Any]]]: ...

    def shard_info(self, shard: int) -> dict[str, str]: ...

    def counters(self) -> list[float]: ...

    def finish(self, out: Path, layout: Layout, counters: list[float]) -> list[str]: ...


@dataclass
class Run:
    """How to execute (none of it changes the output)."""

    out: Path
    batch: int
    workers: int = 0
    overwrite: bool = False
    max_shards: int | None = None
    progress: bool = True
    description: str = "samples"


@dataclass
class Outcome:
    samples: int
    """Samples processed in this run, all ranks."""
    errors: int
    seconds: float
    complete: bool
    """Every shard exists (the index was merged)."""
    done: int
    total: int
    lines: list[str] = field(default_factory=list)


def _clear(out: Path, job: Job) -> None:
    for name in (SHARDS, manifests.MANIFEST, *job.outputs):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _prepare(run: Run, job: Job, manifest: dict[str, Any], world: World) -> None:
    """Rank 0 checks or writes the manifest; the verdict reaches every rank."""
    problem = None
    if world.main:
        try:
            if run.overwrite:
                _clear(run.out, job)
            if not manifests.check(run.out, manifest):
                if finished(run.out):
                    raise UsageError(f"--out {str(run.out)!r} holds shards but no {manifests.MANIFEST}: they cannot "
                                     "be told apart from this run's; pass another --out, or --overwrite")
                manifests.write(run.out, manifest)
            remove_partial(run.out)
        except UsageError as error:
            problem = str(error)
    problem = world.broadcast(problem)
    if problem:
        raise UsageError(problem)


def execute(job: Job, dataset: ImageSamples, layout: Layout, manifest: dict[str, Any], run: Run,
            world: World) -> Outcome:
    """Run ``job`` over the shards of ``layout`` still missing in ``run.out`` (this rank's part)."""
    start = time.perf_counter()
    job.start()  # first: a model or target the job refuses leaves no manifest behind
    _prepare(run, job, manifest, world)
    before = finished(run.out)
    world.barrier()  # nobody writes a shard before every rank has listed the finished ones
    mine = deal([k for k in range(layout.count) if k not in before], world)
    if run.max_shards is not None:
        mine = mine[:run.max_shards]
    samples = errors = 0
    pending = sum(len(layout.range(k)) for k in range(layout.count) if k not in before)
    count = folder_count(run.out, layout, before)
    with Bar(pending, run.description, run.progress and world.main, count) as bar:
        parts: list[tuple[dict[str, Tensor], list[dict[str, Any]]]] = []
        in_shard = 0
        for batch in loader(dataset, layout, mine, run.batch, run.workers, pin=world.device.type == "cuda"):
            tensors, rows = job.process(batch)
            parts.append((tensors, rows))
            samples += len(batch.indices)
            errors += sum(1 for r in rows if r.get("error"))
            in_shard += len(batch.indices)
            if batch.indices[-1] == layout.range(batch.shard).stop - 1:
                _write(run.out, layout, batch.shard, parts, job)
                parts, in_shard = [], 0
                bar.update(force=True)
            else:
                bar.update(in_shard)
    world.barrier()
    samples, errors, *counters = world.sum([samples, errors, *job.counters()])
    done = finished(run.out)
    complete = len(done) == layout.count
    lines = job.finish(run.out, layout, counters) if complete and world.main else []
    return Outcome(int(samples), int(errors), time.perf_counter() - start, complete, len(done), layout.count, lines)


def _write(out: Path, layout: Layout, shard: int, parts: list, job: Job) -> None:
    names = list(parts[0][0])
    tensors = {k: torch.cat([p[0][k] for p in parts]) for k in names}
    rows = [row for p in parts for row in p[1]]
    for offset, row in enumerate(rows):
        row["shard"], row["offset"] = shard, offset
    write_shard(layout.path(out, shard), tensors, rows, job.shard_info(shard))
