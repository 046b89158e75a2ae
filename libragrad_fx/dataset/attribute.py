"""The ``attribute`` job: one map per sample into shards, an index row per sample, overlays on request.

A shard holds ``maps`` [n, ...] (``--dtype``, float16 by default: channel sums [n, H, W] of maps
shaped like the input unless ``--channels keep``; CAM and rollout maps on the patch grid),
``sample`` [n] (global sample numbers), ``target`` [n] (-1: none) and ``value`` [n] (f_t(x));
a sample that could not be read, or has no target, has a NaN map and its reason in the index.
The index (``index.csv``) has one row per sample: ``sample, path, label, target, value,
attributed, completeness_error, shard, offset, error``; ``attributed`` and ``completeness_error``
(relative, |attributed - reference| / |reference|) for the methods meant to add up to the target
logit, computed from the float32 map before it is stored.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..core.errors import UsageError, first_line
from . import index as indexes
from .explainer import Explainer
from .loader import Batch
from .shards import Layout
from .sources import Source
from .targets import TargetSpec

__all__ = ["MapSettings", "AttributeJob", "INDEX_COLUMNS", "DTYPES"]

INDEX_COLUMNS = ["sample", "path", "label", "target", "value", "attributed", "completeness_error", "shard", "offset",
                 "error"]
DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
PNG = "png"


@dataclass(frozen=True)
class MapSettings:
    """What decides the maps (all of it goes into the manifest)."""

    model: str
    checkpoint: str | None
    model_kwargs: dict
    method: str
    preset: str
    capture: str
    target: str
    dtype: str = "float16"
    channels: str = "sum"
    precision: str = "float32"
    device: str = "cpu"
    batch_size: int = 32
    shard_size: int = 256
    ig_steps: int = 32
    sg_samples: int = 16
    seed: int = 0
    png: int = 0
    pixel_rule: str | None = None
    """A pixel readout on the layer that reads the input (``transform(pixel_rule=...)``)."""

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        if d["pixel_rule"] is None:
            del d["pixel_rule"]  # manifests written without it stay comparable
        return d


class AttributeJob:
    outputs = (indexes.INDEX, PNG)

    def __init__(self, loaded, example: Tensor, source: Source, settings: MapSettings, target: TargetSpec,
                 device: torch.device, out: Path) -> None:
        self.loaded, self.example, self.source, self.settings = loaded, example, source, settings
        self.target, self.device, self.out = target, device, out
        self.explainer: Explainer | None = None
        self.shape: tuple[int, ...] = ()

    # --- the pipeline's calls -------------------------------------------------------------------

    def start(self) -> None:
        from ..core.transform import transform

        s = self.settings
        model: nn.Module = self.loaded.model.to(self.device)
        example = self.example.to(self.device)
        if self.loaded.transformed:
            gm = model
        else:
            gm = transform(model, example, preset=s.preset, capture=s.capture, pixel_rule=s.pixel_rule)
        self.explainer = Explainer(gm, s.method, device=self.device, precision=s.precision, ig_steps=s.ig_steps,
                                   sg_samples=s.sg_samples, seed=s.seed)
        with torch.no_grad():
            output = self.explainer.method.forward((example,))
        classes = output.shape[-1] if isinstance(output, Tensor) and output.dim() == 2 else None
        if classes is None:
            raise UsageError(f"{self.loaded.label} returns {tuple(getattr(output, 'shape', ()))}: attribution targets "
                             "a logit of a [batch, classes] output")
        if self.target.kind == "class" and self.target.value >= classes:
            raise UsageError(f"--target {self.target.value} is out of range: the model has {classes} classes "
                             f"(0..{classes - 1})")
        self.classes = classes
        probe = self.explainer(example, None if self.target.kind == "predicted" else torch.zeros(1, dtype=torch.long,
                                                                                                 device=self.device))
        self.shape = tuple(self._stored(probe.maps).shape[1:])

    def shard_info(self, shard: int) -> dict[str, str]:
        s = self.settings
        return {"format": "libragrad-fx maps 1", "method": s.method, "preset": s.preset, "shard": str(shard),
                "map_shape": ",".join(map(str, self.shape))}

    def process(self, batch: Batch) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
        n, first = len(batch.indices), batch.indices[0]
        dtype = DTYPES[self.settings.dtype]
        maps = torch.full((n, *self.shape), float("nan"), dtype=dtype)
        target = torch.full((n,), -1, dtype=torch.int64)
        value = torch.full((n,), float("nan"), dtype=torch.float32)
        rows = [self._row(i) for i in batch.indices]
        for i, reason in batch.errors.items():
            rows[i - first]["error"] = reason
        run, wanted = [], []
        for j, i in enumerate(batch.readable):
            t, reason = self.target.of(self.source.samples[i])
            if t is not None and t >= self.classes:
                reason = f"no target: class {t} is out of range for {self.classes} classes"
            if reason:
                rows[i - first]["error"] = reason
            else:
                run.append(j)
                wanted.append(t)
        if run:
            x = batch.x[run].to(self.device)
            t = None if self.target.kind == "predicted" else torch.tensor(wanted, dtype=torch.long, device=self.device)
            try:
                e = self.explainer(x, t, step=first)
            except Exception as error:  # a batch the method cannot explain: its rows say why, the run goes on
                for j in run:
                    rows[batch.readable[j] - first]["error"] = f"{type(error).__name__}: {first_line(error)}"
                return {"maps": maps, "sample": torch.tensor(batch.indices), "target": target, "value": value}, rows
            stored = self._stored(e.maps).cpu()
            errors = e.completeness_error
            for k, j in enumerate(run):
                i = batch.readable[j]
                maps[i - first] = stored[k].to(dtype)
                target[i - first] = int(e.target[k])
                value[i - first] = float(e.value[k])
                row = rows[i - first]
                row.update(target=int(e.target[k]), value=float(e.value[k]))
                if errors is not None:
                    row.update(attributed=float(e.attributed[k]), completeness_error=float(errors[k]))
                if i < self.settings.png and i in batch.pictures:
                    self._overlay(i, batch.pictures[i], stored[k], int(e.target[k]))
        return {"maps": maps, "sample": torch.tensor(batch.indices, dtype=torch.int64), "target": target,
                "value": value}, rows

    def counters(self) -> list[float]:
        return []

    def finish(self, out: Path, layout: Layout, counters: list[float]) -> list[str]:
        path = indexes.merge(out, layout, INDEX_COLUMNS)
        errors = [r["completeness_error"] for r in indexes.rows(out, layout) if r.get("completeness_error") is not None]
        lines = [f"wrote {layout.count} shard(s) of {layout.size} samples to {out / 'shards'}, index {path}"]
        if errors:
            lines.append(f"median completeness error ({self.settings.method}): {statistics.median(errors):.2e} "
                         f"(relative, over {len(errors)} samples)")
        return lines

    # --- helpers ----------------------------------------------------------------------------------

    def _row(self, i: int) -> dict[str, Any]:
        s = self.source.samples[i]
        return {"sample": i, "path": s.path, "label": s.label, "target": None, "value": None, "attributed": None,
                "completeness_error": None, "error": ""}

    def _stored(self, maps: Tensor) -> Tensor:
        """Channel sums of input-shaped maps (unless ``--channels keep``)."""
        if self.settings.channels == "sum" and maps.dim() == self.example.dim():
            return maps.sum(1)
        return maps

    def _overlay(self, i: int, picture: Tensor, heat: Tensor, target: int) -> None:
        from ..viz import overlay

        signed = self.explainer.signed
        folder = self.out / PNG
        folder.mkdir(parents=True, exist_ok=True)
        overlay(picture, heat.float().nan_to_num(), folder / f"{i:06d}.png", signed=signed,
                cmap="bwr" if signed else "jet", mean=(0.0,) * 3, std=(1.0,) * 3, title=f"{i}: target {target}")
