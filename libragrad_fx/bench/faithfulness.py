"""The faithfulness comparison (``libragrad-fx bench``): vanilla vs LibraGrad gradient methods and the
Transformer-specific baselines on the bundled models, scored with :mod:`libragrad_fx.metrics`.

Setup (the metrics of docs/METHOD.md section 6), fixed here and written into every output:

* images: ``data.generate(n, seed)`` (default the held-out seed), one or two objects each;
* targets: *every class present* in an image, predicted by the model or not, so a two-object image
  gives two rows (one per object) and the class-discrimination test sees both directions;
* maps: channel sums of the input-resolution methods (Gradient and SmoothGrad as magnitudes |.|,
  the others signed), patch grids for the CAMs and rollouts;
* deletion: 8x8 patches (the models' patch size; ``Config.patch`` sets another) replaced by zero, 10% of
  them per step, most or least influential first, scored by the target's sigmoid probability and by "still
  predicted" (logit > 0);
* segmentation AP and pointing game of the bilinearly upsampled map against the target object's mask;
  AP also at patch resolution (pixel maps summed per 8x8 patch first, like the patch-grid methods);
* class discrimination on two-object images: the share of the map's positive mass per pixel of the
  target object against the other object (``per_area``), and how often the target object gets more;
* completeness error |sum(map) - f_t(x)| for the maps meant to add up to the target logit (IxG, IG,
  FullGrad with its non-spatial bias terms, AttnLRP): the mean absolute error and the median relative
  error (a mean of ratios is dominated by logits near zero).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from libragrad_fx import metrics

from .methods import Method, names, resolve, table, with_pixel_rule

__all__ = ["METHODS", "Config", "Method", "ModelResult", "measure", "method_names", "resolve_methods", "run_model", "targets_of"]

PATCH = 8
STEP = 0.1


_GRADIENT = (("gradient", "Gradient", False), ("input_x_gradient", "IxG", True),
             ("integrated_gradients", "IG", True), ("smoothgrad", "SmoothGrad", False),
             ("fullgrad", "FullGrad", True), ("gradcam", "GradCAM", False), ("hirescam", "HiResCAM", False))
_BASELINES = (("attention_rollout", "Rollout", False), ("gae", "GAE", False), ("attnlrp", "AttnLRP", True))
METHODS: tuple[Method, ...] = table(_GRADIENT, _BASELINES)
"""Every row, in table order."""


def method_names() -> list[str]:
    """The ``--methods`` vocabulary: method keys and their short aliases."""
    return names(METHODS)


def resolve_methods(keys: list[str] | None, pixel_rule: str | None = None) -> list[Method]:
    """The rows for the given keys (both variants of a gradient method; with ``pixel_rule`` also each
    variant with that pixel readout); None: all."""
    return with_pixel_rule(resolve(METHODS, keys), pixel_rule)


@dataclass
class Config:
    """What a run measures; stored with its results."""

    n: int = 500
    seed: int | None = None
    """Image seed; None: ``data.HELDOUT_SEED``."""
    batch: int = 32
    """Target rows explained per attribution call."""
    ig_steps: int = 32
    sg_samples: int = 16
    sg_stdev: float = 0.15
    """SmoothGrad's noise, as a fraction of each image's value range."""
    lxt_python: str | None = None
    threads: int = 1
    baseline: str = "zero"
    """What deleted patches become: ``zero`` or ``mean`` (each image's mean colour)."""
    readout: str = "logit"
    """What the maps explain: the target's ``logit``, or its sigmoid probability ``prob`` (the head kept
    with its ordinary backward, the reference implementation's "S1")."""
    patch: int = PATCH
    """Side of the square patches deletion removes (and AP patch sums over); the models' own patch size
    by default. A smaller one ranks pixels within a token, which a pixel readout changes."""
    pixel_rule: str | None = None
    """A pixel readout measured beside each gradient method (``dissent``: rows ``<variant>+dissent``)."""


@dataclass
class Targets:
    """The rows explained: one per (image, present class)."""

    image: Tensor
    """Image index per row [R]."""
    target: Tensor
    """Class per row [R]."""
    mask: Tensor
    """The target object's mask per row [R, H, W]."""
    other: Tensor
    """The other object's mask [R, H, W] (empty on one-object images)."""
    pair: Tensor
    """The image holds two objects [R] bool."""


def targets_of(labels: Tensor, masks: Tensor) -> Targets:
    """Every present class of every image, in image order."""
    image, target = labels.nonzero(as_tuple=True)
    mask = masks[image, target]
    count = labels.sum(1).long()
    present = masks[image].flatten(2).any(2) & (torch.arange(labels.shape[1])[None] != target[:, None])
    other = (masks[image] & present[:, :, None, None]).any(1)
    return Targets(image, target, mask, other, count[image] == 2)


@dataclass
class ModelResult:
    """One model's rows, mean deletion curves and a few example maps."""

    model: str
    rows: list[dict[str, Any]]
    curves: dict[str, dict[str, list[float]]]
    """method name -> {"fractions", "mif", "lif"} mean target probability."""
    examples: dict[str, Any] = field(default_factory=dict)
    """``images`` [k, 3, H, W], ``targets`` [k], ``masks`` [k, H, W], ``maps`` {method name: [k, h, w]}."""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    baseline: str = "zero"
    """What the deletion curves replaced patches by (:attr:`Config.baseline`)."""
    readout: str = "target probability (sigmoid)"
    """What the deletion curves follow."""


# --------------------------------------------------------------------------- the maps


def _channels(a: Tensor) -> Tensor:
    return a.sum(1) if a.dim() == 4 else a


class _Maps:
    """The maps of every method for one model, given (images, targets): [B, h, w] and, for the
    methods meant to be complete, what they attribute in total [B]."""

    def __init__(self, name: str, model: torch.nn.Module, example: Tensor, config: Config) -> None:
        from libragrad_fx import attr, transform

        self.name, self.model, self.config, self.example = name, model, config, example
        self._transform = transform
        self.gm: dict[str, Any] = {}
        """Transformed models by variant (``vanilla``, ``libragrad+dissent``...), made on first use."""
        self.attr = attr
        self._made: dict[str, Any] = {}

    def graph(self, variant: str) -> Any:
        """The model transformed for ``variant``: its preset, and its pixel rule after a ``+``."""
        if variant not in self.gm:
            preset, _, pixel = variant.partition("+")
            self.gm[variant] = self._transform(self.model, self.example, preset=preset, pixel_rule=pixel or None)
        return self.gm[variant]

    def _method(self, cls: type, variant: str) -> Any:
        key = f"{cls.__name__}:{variant}"
        if key not in self._made:
            self._made[key] = cls(self.graph(variant))
        return self._made[key]

    def zero_logits(self) -> Tensor:
        """f(0) per class: Integrated Gradients' baseline value (a probability under the ``prob`` readout)."""
        if not hasattr(self, "_zero"):
            with torch.no_grad():
                self._zero = self.model(self.example.new_zeros(1, *self.example.shape[1:]))[0].double()
            if self.config.readout == "prob":
                self._zero = torch.sigmoid(self._zero)
        return self._zero

    def target(self, t: Tensor) -> Any:
        """The attribution target for class indices ``t`` under the configured readout."""
        return self.attr.Probability(t, multilabel=True) if self.config.readout == "prob" else t

    def __call__(self, method: Method, x: Tensor, t: Tensor, seed: int) -> tuple[Tensor, Tensor | None]:
        """(map [B, h, w], what it attributes in total [B] minus what it should add up to besides the
        logit, or None)."""
        a, c = self.attr, self.config
        preset = "vanilla" if method.variant == "baseline" else method.variant  # with its pixel rule, if any
        key = method.key
        index, t = t, self.target(t)
        if key == "gradient":
            return _channels(self._method(a.Gradient, preset).attribute(x, target=t, abs=True)), None
        if key == "input_x_gradient":
            m = self._method(a.InputXGradient, preset).attribute(x, target=t)
            return _channels(m), m.flatten(1).sum(1, dtype=torch.float64)
        if key == "integrated_gradients":
            m = self._method(a.IntegratedGradients, preset).attribute(x, target=t, n_steps=c.ig_steps,
                                                                      internal_batch_size=x.shape[0] * 8)
            # IG adds up to f(x) - f(0) (zero baseline): compare sum + f(0) with f(x)
            return _channels(m), m.flatten(1).sum(1, dtype=torch.float64) + self.zero_logits()[index]
        if key == "smoothgrad":
            g = torch.Generator().manual_seed(seed)
            m = self._method(a.SmoothGrad, preset).attribute(x, target=t, nt_samples=c.sg_samples,
                                                             stdevs=c.sg_stdev * _range(x), generator=g,
                                                             nt_samples_batch_size=8)
            return _channels(m).abs(), None
        if key == "fullgrad":
            heat, parts = self._method(a.FullGrad, preset).attribute_with_totals(x, target=t)
            return _channels(heat), parts.attributed
        if key == "gradcam":
            return self._method(a.GradCAM, preset).attribute(x, target=t), None
        if key == "hirescam":
            return self._method(a.HiResCAM, preset).attribute(x, target=t), None
        if key == "attention_rollout":
            return self._method(a.AttentionRollout, preset).attribute(x, target=t), None
        if key == "gae":
            return self._method(a.GradientRollout, preset).attribute(x, target=t), None
        raise ValueError(f"no map for {method.key}")


def _range(x: Tensor) -> float:
    """The images' mean value range (SmoothGrad's noise scale)."""
    flat = x.flatten(1)
    return float((flat.max(1).values - flat.min(1).values).mean())


def has_attention(maps: _Maps, x: Tensor) -> bool:
    """Whether the rollouts can read attention from this model (not from an MLP-Mixer): the same graph
    question the rollouts ask (attention on a gradient path), without running one."""
    from libragrad_fx.attr.compiled import compiled_of
    from libragrad_fx.attr.rollout import attention_sites

    model = compiled_of(maps.graph("vanilla"), 1)  # the graph facts the methods on this model read too
    return bool(attention_sites(model.gm, model.analysis, model.live))


# --------------------------------------------------------------------------- scoring


@dataclass
class _Scores:
    """Per-row scores of one method, filled batch by batch."""

    parts: dict[str, list[Tensor]] = field(default_factory=dict)
    curves: dict[str, list[Tensor]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, key: str, value: Tensor) -> None:
        self.parts.setdefault(key, []).append(value.detach().double().cpu())

    def get(self, key: str) -> Tensor | None:
        return torch.cat(self.parts[key]) if key in self.parts else None


def _score_batch(scores: _Scores, model, x: Tensor, maps_: Tensor, total: Tensor | None, logit: Tensor,
                 rows: Targets, sl: slice, baseline: str, output: metrics.Output = "sigmoid",
                 patch: int = PATCH) -> None:
    t = rows.target[sl]
    ranked = maps_  # what deletion ranks (and AP patch sums): a token-grid map under finer patches covers its pixels
    if maps_.shape[-2:] != x.shape[-2:] and patch != PATCH:
        ranked = maps_.repeat_interleave(PATCH, -2).repeat_interleave(PATCH, -1)
    result = metrics.deletion_curves(model, x, ranked, t, patch_size=patch, step_fraction=STEP, baseline=baseline,
                                     output=output)
    for kind, parts in result.auc.items():
        for name, v in parts.items():
            scores.add(f"{kind}_{name}", v)
    scores.curves.setdefault("mif", []).append(result.mif_prob)
    scores.curves.setdefault("lif", []).append(result.lif_prob)
    scores.curves["fractions"] = [result.fractions]
    scores.add("seg_ap", metrics.segmentation_ap(maps_, rows.mask[sl]))
    # the same at patch resolution: pixel maps summed per patch (what deletion ranks), upsampled
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    patches = metrics.patch_scores(ranked, tuple(x.shape[-2:]), patch).reshape(-1, h, w)
    scores.add("seg_ap_patch", metrics.segmentation_ap(patches, rows.mask[sl]))
    scores.add("pointing", metrics.pointing_game(maps_, rows.mask[sl]))
    pair = rows.pair[sl]
    if pair.any():
        d = metrics.class_discrimination(maps_[pair], rows.mask[sl][pair], rows.other[sl][pair], per_area=True)
        scores.add("disc_share", d["share"])
        scores.add("disc_rate", d["more_on_a"])
    if total is not None:
        err, rel = metrics.completeness_error(total, logit)
        scores.add("compl_abs", err)
        scores.add("compl_rel", rel)


def _summary(model: str, method: Method, scores: _Scores | None, n_images: int, n_rows: int) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "method": method.label, "variant": method.variant, "key": method.key,
                           "n_images": n_images, "n_targets": n_rows}
    keys = ("prob_srg", "prob_mif", "prob_lif", "pred_srg", "pred_mif", "pred_lif", "seg_ap", "seg_ap_patch",
            "pointing", "disc_share", "disc_rate")
    for k in keys:
        v = scores.get(k) if scores is not None else None
        row[k] = float(torch.nanmean(v)) if v is not None and v.numel() else math.nan
    v = scores.get("disc_share") if scores is not None else None
    row["n_pairs"] = 0 if v is None else int(v.numel())
    err = scores.get("compl_abs") if scores is not None else None
    rel = scores.get("compl_rel") if scores is not None else None
    row["compl_abs_mean"] = float(err.mean()) if err is not None else math.nan
    row["compl_rel_median"] = float(rel.median()) if rel is not None else math.nan
    row["ms_per_target"] = 1e3 * scores.seconds / max(n_rows, 1) if scores is not None else math.nan
    return row


# --------------------------------------------------------------------------- one model


def run_model(name: str, methods: list[Method], config: Config,
              progress: Callable[[str, int, int], None] | None = None, examples: int = 2) -> ModelResult:
    """Every method's maps and scores on one bundled model (see the module's docstring for the setup).

    ``progress(name, done, total)`` is called after every (method, batch); ``examples`` images
    (two-object ones first, each with both targets) keep their maps for the example grid.
    """
    from . import models
    from .data import HELDOUT_SEED, generate

    if name in models.names("clip"):
        from .clip_bench import run_clip

        return run_clip(name, methods, config, progress, examples)
    start = time.perf_counter()
    torch.manual_seed(0)
    seed = HELDOUT_SEED if config.seed is None else config.seed
    model = models.load(name)
    data = generate(config.n, seed=seed)
    rows = targets_of(data.labels, data.masks)
    with torch.no_grad():
        logits = torch.cat([model(data.images[i:i + 256]) for i in range(0, config.n, 256)])
    row_logit = logits[rows.image, rows.target]
    maps = _Maps(name, model, data.images[:2], config)
    notes = [f"{name}: {config.n} images (seed {seed}), {len(rows.target)} targets (every present class), "
             f"{int(rows.pair.sum())} of them on two-object images; the model predicts "
             f"{float((row_logit > 0).float().mean()):.0%} of the targets (logit > 0)"]
    value = row_logit
    if config.readout == "prob":
        value = torch.sigmoid(row_logit.double())
        notes.append(f"{name}: the maps explain the target's sigmoid probability (readout prob, the head's backward "
                     "kept as it is): the complete maps are compared with it, and no rule makes that head complete")
        if any(m.key == "attnlrp" for m in methods):
            methods = [m for m in methods if m.key != "attnlrp"]
            notes.append(f"{name}: AttnLRP left out under readout prob (lxt explains the logit)")
    return measure(name, model, data.images, rows, value, maps, notes, methods, config, progress, examples,
                   start=start)


def measure(name: str, model, images: Tensor, rows: Targets, row_logit: Tensor, maps: _Maps, notes: list[str],
            methods: list[Method], config: Config, progress: Callable[[str, int, int], None] | None = None,
            examples: int = 2, *, output: metrics.Output = "sigmoid", attnlrp: Callable | None = None,
            readout: str = "target probability (sigmoid)", start: float | None = None) -> ModelResult:
    """Every method's maps on ``rows`` of ``images`` and their scores (:func:`run_model`'s loop).

    ``model`` is what deletion runs (its output scored by ``output``, see
    :func:`libragrad_fx.metrics.deletion_curves`), ``row_logit`` what the complete maps add up to,
    ``attnlrp(name, images, target, logit, config)`` the AttnLRP maps (default: lxt on the bundled
    classifier ``name``), ``readout`` what the deletion curves' axis shows.
    """
    from .data import HELDOUT_SEED

    start = time.perf_counter() if start is None else start
    seed = HELDOUT_SEED if config.seed is None else config.seed  # SmoothGrad's noise: seed + batch
    attention = has_attention(maps, images)
    wanted = [m for m in methods if m.key not in ("attention_rollout", "gae") or attention]
    skipped = [m for m in methods if m not in wanted]
    if skipped:
        notes.append(f"{name}: {', '.join(m.label for m in skipped)} n/a (the model has no attention)")

    lrp_maps = None
    if any(m.key == "attnlrp" for m in wanted):
        lrp_maps, note = (attnlrp or _attnlrp)(name, images[rows.image], rows.target, row_logit, config)
        notes.append(note)
        if lrp_maps is None:
            wanted = [m for m in wanted if m.key != "attnlrp"]

    scores = {m.name: _Scores() for m in wanted}
    ex_rows = _example_rows(rows, examples)
    kept: dict[str, list[Tensor]] = {m.name: [] for m in wanted}
    batches = list(range(0, len(rows.target), config.batch))
    total, done = len(batches) * len(wanted), 0
    for b, lo in enumerate(batches):
        sl = slice(lo, min(lo + config.batch, len(rows.target)))
        x = images[rows.image[sl]]
        t = rows.target[sl]
        for m in wanted:
            t0 = time.perf_counter()
            if m.key == "attnlrp":
                map_, total_ = lrp_maps[0][sl], lrp_maps[1][sl]
            else:
                map_, total_ = maps(m, x, t, seed=seed + b)
            map_ = map_.detach().float()
            scores[m.name].seconds += time.perf_counter() - t0
            _score_batch(scores[m.name], model, x, map_, total_, row_logit[sl], rows, sl, config.baseline, output,
                         config.patch)
            sel = ex_rows[(ex_rows >= sl.start) & (ex_rows < sl.stop)] - sl.start
            if len(sel):
                kept[m.name].append(map_[sel])
            done += 1
            if progress is not None:
                progress(name, done, total)
    if lrp_maps is not None:
        scores["AttnLRP"].seconds += lrp_maps[2]

    table = [_summary(name, m, scores.get(m.name), config.n, len(rows.target)) for m in methods]
    curves = {m.name: {"fractions": scores[m.name].curves["fractions"][0].tolist(),
                       "mif": torch.cat(scores[m.name].curves["mif"]).mean(0).tolist(),
                       "lif": torch.cat(scores[m.name].curves["lif"]).mean(0).tolist()}
              for m in wanted if scores[m.name].curves}
    example = {"images": images[rows.image[ex_rows]], "targets": rows.target[ex_rows],
               "masks": rows.mask[ex_rows], "others": rows.other[ex_rows],
               "maps": {k: torch.cat(v) for k, v in kept.items() if v}}
    return ModelResult(name, table, curves, example, notes, time.perf_counter() - start, config.baseline, readout)


def _attnlrp(name: str, images: Tensor, target: Tensor, logit: Tensor,
             config: Config) -> tuple[tuple[Tensor, Tensor, float] | None, str]:
    """AttnLRP's (maps [R, H, W], totals [R], seconds) from lxt in its own process, and a note; None
    and the reason where lxt is missing or fails."""
    from .attnlrp import AttnLRP, LXTUnavailable

    start = time.perf_counter()
    try:
        lrp = AttnLRP.bundled(name, python=config.lxt_python, threads=config.threads)
        relevance, lrp_logit = lrp.attribute(images, target)
    except (LXTUnavailable, RuntimeError) as error:  # RuntimeError: the worker failed (e.g. lxt's imports)
        return None, f"{name}: AttnLRP skipped: {error}"
    gap = float((lrp_logit - logit).abs().max()) if len(logit) else 0.0
    maps = (relevance.sum(1), relevance.flatten(1).sum(1, dtype=torch.float64), time.perf_counter() - start)
    return maps, (f"{name}: AttnLRP (lxt's rules, uniform rule in attention) computed in a separate process with "
                  f"{lrp.python}; its forward differs from the model's by {gap:.1e} at most")


def _example_rows(rows: Targets, images: int) -> Tensor:
    """The rows of the first ``images`` two-object images (both targets of each), topped up with
    one-object images where there are fewer."""
    pairs = torch.unique(rows.image[rows.pair])[:images]
    singles = torch.unique(rows.image[~rows.pair])[:images - len(pairs)]
    return torch.nonzero(torch.isin(rows.image, torch.cat([pairs, singles]))).flatten()


def config_dict(config: Config) -> dict[str, Any]:
    d = asdict(config)
    d.update(step_fraction=STEP)
    return d
