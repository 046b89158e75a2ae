"""The ``bench --data`` job: the benchmark's faithfulness comparison on the user's labelled images.

The maps are the benchmark's (:class:`libragrad_fx.bench.faithfulness._Maps`: every gradient method
under the vanilla and the LibraGrad backward, rollout and GAE where the model has attention) and the
scores :mod:`libragrad_fx.metrics`' (deletion MIF / LIF / SRG, segmentation AP, pointing game,
class discrimination, completeness error), per sample, into the shards; rank 0 aggregates them with
the benchmark's own summary and writes its table and deletion plot.

* target: the sample's label by default (``--target`` as in ``attribute``);
* deletion: patches of the model's patch size replaced in the model's input space (``zero``: the
  normalised zero, i.e. the normalisation's mean colour; ``mean``: each image's mean), scored by the
  target's softmax probability (or sigmoid for multi-label models such as the bundled ones);
* masks (``--masks DIR``, one image per sample at the same relative path, ImageNet-S style):
  ``binary`` values: nonzero pixels are the target's object; ``class`` values: pixels equal to the
  target class + 1 are its object and other nonzero pixels another object (class discrimination);
  ImageNet-S's ignored pixels (1000) count as background. A sample without a mask has no AP, pointing
  or discrimination score.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import metrics
from ..core.errors import UsageError, first_line
from .explainer import autocast
from .loader import Batch
from .shards import Layout, read_rows, read_tensors
from .sources import Source
from .targets import TargetSpec

__all__ = ["BenchSettings", "BenchJob", "SCORES", "patch_size"]

SCORES = ("prob_mif", "prob_lif", "prob_srg", "pred_mif", "pred_lif", "pred_srg", "seg_ap", "seg_ap_patch",
          "pointing", "disc_share", "disc_rate", "compl_abs", "compl_rel")
"""Per-sample scores of each method (the benchmark's keys)."""
SAMPLES = "samples.csv"
IGNORED = 1000
"""ImageNet-S marks the pixels its annotators left out with 1000: they count as background."""


@dataclass(frozen=True)
class BenchSettings:
    """What decides the numbers (all of it goes into the manifest)."""

    model: str
    checkpoint: str | None
    model_kwargs: dict
    capture: str
    methods: tuple[str, ...]
    target: str
    output: str
    patch: int
    baseline: str
    masks: str | None
    mask_values: str
    n: int
    ig_steps: int
    sg_samples: int
    seed: int
    precision: str
    device: str
    batch: int
    shard_size: int

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def patch_size(model: torch.nn.Module, label: str) -> int:
    """The model's patch size: timm's ``patch_embed.patch_size``, else the first convolution whose
    stride equals its kernel (a patch embedding)."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is not None:
        patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
        if patch[0] == patch[1]:
            return int(patch[0])
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.kernel_size == module.stride and module.stride[0] > 1 \
                and module.stride[0] == module.stride[1]:
            return int(module.stride[0])
    raise UsageError(f"cannot tell the patch size of {label} (deletion removes patches): pass --patch N")


class BenchJob:
    outputs = (SAMPLES, "results.csv", "results.md", "deletion.png")

    def __init__(self, loaded, example: Tensor, source: Source, settings: BenchSettings, methods: list,
                 target: TargetSpec, device: torch.device) -> None:
        self.loaded, self.example, self.source, self.settings = loaded, example, source, settings
        self.methods, self.target, self.device = methods, target, device
        self.notes: list[str] = []
        self.seconds: dict[str, float] = {}
        self.targets_run = 0

    # --- the pipeline's calls -------------------------------------------------------------------

    def start(self) -> None:
        from ..bench.faithfulness import Config, _Maps, has_attention

        s = self.settings
        self.model = self.loaded.model.to(self.device)
        example = self.example.to(self.device)
        config = Config(n=s.n, batch=s.batch, ig_steps=s.ig_steps, sg_samples=s.sg_samples, baseline=s.baseline)
        self.maps = _Maps(self.loaded.label, self.model, example, config)
        with torch.no_grad():
            self.classes = int(self.model(example).shape[-1])
        if self.target.kind == "class" and self.target.value >= self.classes:
            raise UsageError(f"--target {self.target.value} is out of range: the model has {self.classes} classes")
        attention = has_attention(self.maps, example)
        dropped = [m for m in self.methods if m.key == "attnlrp" or (m.key in ("attention_rollout", "gae")
                                                                     and not attention)]
        self.wanted = [m for m in self.methods if m not in dropped]
        if any(m.key == "attnlrp" for m in dropped):
            self.notes.append("AttnLRP runs on the bundled benchmark only (bench without --data)")
        if any(m.key in ("attention_rollout", "gae") for m in dropped):
            self.notes.append("Rollout and GAE n/a: the model has no attention")
        if not self.wanted:
            raise UsageError("--methods: none of them applies to this model")
        self.seconds = {m.name: 0.0 for m in self.wanted}

    def shard_info(self, shard: int) -> dict[str, str]:
        return {"format": "libragrad-fx bench 1", "shard": str(shard)}

    def counters(self) -> list[float]:
        return [float(self.targets_run), *(self.seconds[m.name] for m in self.wanted)]

    def process(self, batch: Batch) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
        n, first = len(batch.indices), batch.indices[0]
        steps = math.ceil(1 / _STEP - 1e-9) + 1
        tensors: dict[str, Tensor] = {}
        for m in self.wanted:
            for key in SCORES:
                tensors[f"{m.name}|{key}"] = torch.full((n,), math.nan, dtype=torch.float64)
            for key in ("mif", "lif"):
                tensors[f"{m.name}|curve_{key}"] = torch.full((n, steps), math.nan, dtype=torch.float32)
        tensors["sample"] = torch.tensor(batch.indices, dtype=torch.int64)
        rows = [self._row(i) for i in batch.indices]
        for i, reason in batch.errors.items():
            rows[i - first]["error"] = reason
        run, wanted = [], []
        for i in batch.readable:
            t, reason = self.target.of(self.source.samples[i])
            if t is not None and t >= self.classes:
                reason = f"no target: class {t} is out of range for {self.classes} classes"
            rows[i - first]["error"] = reason
            if not reason:
                run.append(i)
                wanted.append(t)
        if not run:
            return tensors, rows
        x = batch.x[[batch.readable.index(i) for i in run]].to(self.device)
        with torch.no_grad(), autocast(self.device, self.settings.precision):
            logits = self.model(x).float()
        t = logits.argmax(1) if self.target.kind == "predicted" else torch.tensor(wanted, device=self.device)
        value = logits.gather(1, t[:, None])[:, 0]
        at = [i - first for i in run]
        for k, i in enumerate(run):
            rows[i - first].update(target=int(t[k]), value=float(value[k]), mask=batch.mask_notes.get(i, ""))
        masks = self._masks(batch, run, t)
        self.targets_run += len(run)
        for m in self.wanted:
            try:
                scores = self._score(m, x, t, value, masks, step=first)
            except Exception as error:  # a method that fails on a batch: its scores stay NaN, the reason in the row
                for i in run:
                    note = f"{m.name}: {type(error).__name__}: {first_line(error)}"
                    rows[i - first]["error"] = "; ".join(filter(None, [rows[i - first]["error"], note]))
                continue
            for key, (where, v) in scores.items():
                tensors[f"{m.name}|{key}"][[at[j] for j in where]] = v.detach().cpu().to(
                    tensors[f"{m.name}|{key}"].dtype)
        return tensors, rows

    def finish(self, out: Path, layout: Layout, counters: list[float]) -> list[str]:
        from ..bench import figures
        from ..bench.faithfulness import ModelResult, _Scores, _summary

        scores = {m.name: _Scores() for m in self.wanted}
        curves: dict[str, dict[str, list[Tensor]]] = {m.name: {"mif": [], "lif": []} for m in self.wanted}
        explained = 0
        with open(out / f"{SAMPLES}.partial", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_SAMPLE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for shard in range(layout.count):
                path = layout.path(out, shard)
                rows, tensors = read_rows(path), read_tensors(path)
                explained += sum(1 for r in rows if r["target"] is not None)
                for m in self.wanted:
                    for key in SCORES:
                        v = tensors[f"{m.name}|{key}"]
                        if torch.isfinite(v).any():
                            scores[m.name].add(key, v[torch.isfinite(v)])
                    for key in ("mif", "lif"):
                        c = tensors[f"{m.name}|curve_{key}"]
                        curves[m.name][key].append(c[torch.isfinite(c).all(1)])
                for k, row in enumerate(rows):
                    for m in (self.wanted if row["target"] is not None else [None]):
                        cells = {key: _cell(tensors[f"{m.name}|{key}"][k]) for key in SCORES} if m else {}
                        writer.writerow({**row, **cells, "method": m.label if m else "",
                                         "variant": m.variant if m else ""})
        os.replace(out / f"{SAMPLES}.partial", out / SAMPLES)

        targets_run, *seconds = counters
        label = self.loaded.label
        table = []
        for m, spent in zip(self.wanted, seconds):
            row = _summary(label, m, scores[m.name], explained, explained)
            row["ms_per_target"] = 1e3 * spent / targets_run if targets_run else math.nan
            table.append(row)
        mean_curves = {}
        for m in self.wanted:
            mif, lif = torch.cat(curves[m.name]["mif"]), torch.cat(curves[m.name]["lif"])
            if len(mif):
                fractions = _fractions(self.settings, self.example)
                mean_curves[m.name] = {"fractions": fractions, "mif": mif.mean(0).tolist(),
                                       "lif": lif.mean(0).tolist()}
        result = ModelResult(label, table, mean_curves, notes=self.notes, baseline=self.settings.baseline)
        figures.write_csv(table, out / "results.csv")
        notes = "\nNotes:\n\n" + "".join(f"- {n}\n" for n in self.notes) if self.notes else ""
        (out / "results.md").write_text(self._preamble(explained) + figures.markdown([result]) + notes)
        if mean_curves:
            figures.plot_deletion(result, out / "deletion.png")
        best = max(table, key=lambda r: -math.inf if math.isnan(r["prob_srg"]) else r["prob_srg"])
        return [f"wrote {out / 'results.md'}, results.csv, {SAMPLES}, deletion.png: {explained} targets, "
                f"{len(self.wanted)} methods; best SRG {best['prob_srg']:.3f} ({best['variant']} {best['method']})"]

    # --- helpers ----------------------------------------------------------------------------------

    def _row(self, i: int) -> dict[str, Any]:
        s = self.source.samples[i]
        return {"sample": i, "path": s.path, "label": s.label, "target": None, "value": None, "mask": "", "error": ""}

    def _masks(self, batch: Batch, run: list[int], t: Tensor) -> tuple[list[int], Tensor, Tensor] | None:
        """(positions in ``run`` with a mask, target-object masks [k, H, W], other-object masks)."""
        where = [k for k, i in enumerate(run) if i in batch.masks]
        if not where:
            return None
        values = torch.stack([batch.masks[run[k]] for k in where]).to(self.device)
        values = values.masked_fill(values == IGNORED, 0)
        if self.settings.mask_values == "class":
            own = (t[where] + 1)[:, None, None]
            return where, values == own, (values != 0) & (values != own)
        return where, values != 0, torch.zeros_like(values, dtype=torch.bool)

    def _score(self, m, x: Tensor, t: Tensor, value: Tensor, masks, step: int) -> dict[str, tuple[list[int], Tensor]]:
        """Per-sample scores of method ``m`` on the batch: key -> (positions in the batch, values)."""
        s = self.settings
        everyone = list(range(len(t)))
        start = time.perf_counter()
        with autocast(self.device, s.precision):
            heat, total = self.maps(m, x, t, seed=s.seed + step)
        heat = heat.detach().float()
        self.seconds[m.name] += time.perf_counter() - start
        out: dict[str, tuple[list[int], Tensor]] = {}
        with autocast(self.device, s.precision):
            deletion = metrics.deletion_curves(self.model, x, heat, t, patch_size=s.patch, step_fraction=_STEP,
                                               baseline=s.baseline, output=s.output)
        for kind, parts in deletion.auc.items():
            for name, v in parts.items():
                out[f"{kind}_{name}"] = (everyone, v)
        out["curve_mif"], out["curve_lif"] = (everyone, deletion.mif_prob), (everyone, deletion.lif_prob)
        if masks is not None:
            where, own, other = masks
            maps_ = heat[where]
            out["seg_ap"] = (where, metrics.segmentation_ap(maps_, own))
            h, w = x.shape[-2] // s.patch, x.shape[-1] // s.patch
            patches = metrics.patch_scores(maps_, tuple(x.shape[-2:]), s.patch).reshape(-1, h, w)
            out["seg_ap_patch"] = (where, metrics.segmentation_ap(patches, own))
            out["pointing"] = (where, metrics.pointing_game(maps_, own))
            pairs = [j for j, k in enumerate(where) if other[j].any()]
            if pairs:
                d = metrics.class_discrimination(maps_[pairs], own[pairs], other[pairs], per_area=True)
                out["disc_share"] = ([where[j] for j in pairs], d["share"])
                out["disc_rate"] = ([where[j] for j in pairs], d["more_on_a"])
        if total is not None:
            err, rel = metrics.completeness_error(total.double()[:, None], value)
            out["compl_abs"], out["compl_rel"] = (everyone, err), (everyone, rel)
        return out

    def _preamble(self, explained: int) -> str:
        s = self.settings
        target = {"label": "its label", "predicted": "the predicted class"}.get(self.target.kind,
                                                                                 self.target.describe())
        deleted = "zero in the model's input space" if s.baseline == "zero" else "each image's mean colour"
        masks = (f"masks from {s.masks} ({s.mask_values} values)" if s.masks else "no masks (AP, pointing and "
                 "discrimination n/a)")
        return (f"Faithfulness of vanilla and LibraGrad attributions of {self.loaded.label} on "
                f"{self.source.location}: {explained} images explained for {target}. SRG/MIF/LIF: areas under "
                f"the target's {s.output} probability as {s.patch}x{s.patch} patches are replaced by {deleted}, "
                f"10% per step (SRG acc: the same with 'still predicted'); {masks}." + "".join(
                    note for key, note in (("integrated_gradients", f" IG: {s.ig_steps} steps."),
                                           ("smoothgrad", f" SmoothGrad: {s.sg_samples} samples."))
                    if any(m.key == key for m in self.wanted)) + "\n\n")


_STEP = 0.1
_SAMPLE_COLUMNS = ["sample", "path", "label", "target", "value", "mask", "method", "variant", *SCORES, "error"]


def _fractions(settings: BenchSettings, example: Tensor) -> list[float]:
    patches = (example.shape[-2] // settings.patch) * (example.shape[-1] // settings.patch)
    steps = math.ceil(1 / _STEP - 1e-9)
    return [round(min(k * _STEP, 1.0) * patches) / patches for k in range(steps + 1)]


def _cell(value: Tensor) -> str:
    v = float(value)
    return "" if math.isnan(v) else repr(v)
