"""Reading samples in batches: a torch ``Dataset`` over the global order and a ``DataLoader`` over
one rank's shards.

Batches never cross a shard boundary, so a batch holds the same samples however many processes
run: the numbers do not depend on the split. A file that cannot be read (not an image, truncated,
missing) is not an exception: its item carries the reason, and the batch the readable rest.
Workers (``--workers``) decode ahead of the model; the DataLoader keeps a bounded number of
batches in flight, so memory does not grow with the dataset.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..core.errors import first_line
from .preprocess import Preprocess
from .shards import Layout
from .sources import Sample

__all__ = ["Item", "Batch", "ImageSamples", "ShardBatches", "collate", "loader", "mask_file"]


@dataclass
class Item:
    index: int
    x: Tensor | None = None
    picture: Tensor | None = None
    mask: Tensor | None = None
    error: str = ""
    mask_note: str = ""


@dataclass
class Batch:
    """Consecutive samples of one shard: every index, and the readable ones stacked."""

    shard: int
    indices: list[int]
    errors: dict[int, str]
    """Unreadable samples: index -> reason."""
    readable: list[int] = field(default_factory=list)
    x: Tensor | None = None
    """Model inputs of the readable samples [b, C, H, W]."""
    pictures: dict[int, Tensor] = field(default_factory=dict)
    """The images in [0, 1] of the samples that asked for them (overlays, masks' figures)."""
    masks: dict[int, Tensor] = field(default_factory=dict)
    """Object masks (integer values [H, W]) of the readable samples that have one."""
    mask_notes: dict[int, str] = field(default_factory=dict)

    def pin_memory(self) -> "Batch":
        """Page-locked inputs (the DataLoader calls this with ``pin_memory``: faster copies to a GPU)."""
        if self.x is not None:
            self.x = self.x.pin_memory()
        return self


def mask_file(masks: Path, sample: Sample) -> Path | None:
    """The mask of ``sample`` under ``masks``: the same relative path as a ``.png`` (ImageNet-S style),
    or the same file name as given; None where neither exists."""
    rel = Path(sample.path)
    if rel.is_absolute():
        rel = Path(rel.name)
    for candidate in (masks / rel.with_suffix(".png"), masks / rel):
        if candidate.is_file():
            return candidate
    return None


class ImageSamples(Dataset):
    """Sample ``i`` of the global order as an :class:`Item` (never raises for a bad file)."""

    def __init__(self, samples: list[Sample], preprocess: Preprocess, *, masks: Path | None = None,
                 pictures_below: int = 0) -> None:
        self.samples, self.preprocess, self.masks, self.pictures_below = samples, preprocess, masks, pictures_below

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        sample = self.samples[index]
        try:
            picture = self.preprocess.picture(sample.file)
        except Exception as error:  # any unreadable file is a row with its reason, not a stop
            return Item(index, error=f"{type(error).__name__}: {first_line(error)}")
        item = Item(index, self.preprocess.normalize(picture))
        if index < self.pictures_below:
            item.picture = picture
        if self.masks is not None:
            path = mask_file(self.masks, sample)
            if path is None:
                item.mask_note = "no mask"
            else:
                try:
                    item.mask = self.preprocess.mask(str(path))
                except Exception as error:
                    item.mask_note = f"mask unreadable: {type(error).__name__}: {first_line(error)}"
        return item


class ShardBatches(Sampler[list[int]]):
    """The batches of ``shards`` (in order): consecutive samples, at most ``batch`` each, never two shards in one."""

    def __init__(self, layout: Layout, shards: list[int], batch: int) -> None:
        self.layout, self.shards, self.batch = layout, list(shards), batch

    def __iter__(self) -> Iterator[list[int]]:
        for shard in self.shards:
            r = self.layout.range(shard)
            for start in range(r.start, r.stop, self.batch):
                yield list(range(start, min(start + self.batch, r.stop)))

    def __len__(self) -> int:
        return sum(-(-len(self.layout.range(s)) // self.batch) for s in self.shards)


def collate(items: list[Item], layout: Layout) -> Batch:
    indices = [it.index for it in items]
    good = [it for it in items if not it.error]
    return Batch(
        shard=indices[0] // layout.size, indices=indices, errors={it.index: it.error for it in items if it.error},
        readable=[it.index for it in good], x=torch.stack([it.x for it in good]) if good else None,
        pictures={it.index: it.picture for it in good if it.picture is not None},
        masks={it.index: it.mask for it in good if it.mask is not None},
        mask_notes={it.index: it.mask_note for it in good if it.mask_note})


class _Collate:
    """Picklable collate (spawned workers)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def __call__(self, items: list[Item]) -> Batch:
        return collate(items, self.layout)


def loader(dataset: ImageSamples, layout: Layout, shards: list[int], batch: int, workers: int,
           pin: bool = False) -> DataLoader:
    """A DataLoader over ``shards`` in order (workers keep the order; each decodes with one thread);
    ``pin``: page-locked batches, for a GPU."""
    kwargs: dict[str, Any] = {"pin_memory": pin}
    if workers > 0:
        kwargs.update(num_workers=workers, prefetch_factor=2, worker_init_fn=_one_thread)
    return DataLoader(dataset, batch_sampler=ShardBatches(layout, shards, batch), collate_fn=_Collate(layout),
                      **kwargs)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
