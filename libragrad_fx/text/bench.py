"""The text benchmark (``libragrad-fx bench --text``): vanilla vs LibraGrad token attributions on the bundled
classifier, against the evidence tokens the generator knows.

Setup, fixed here and written into every output:

* sentences: ``data.generate(n, seed)`` (default the held-out seed); the target is each sentence's label;
* token scores: :class:`~libragrad_fx.text.attribution.TokenScorer` (gradient and SmoothGrad as magnitudes,
  the others signed; FullGrad with the bias shares at each token's position), one transform per backward;
  the special tokens ([CLS], [SEP]) are never ranked or deleted;
* deletion: the words are replaced by ``[MASK]`` (the bundled classifier saw 15% [MASK] in training, so a
  deleted word is in distribution), 10% of the words per step (rounded), most influential first (MIF, lower
  is better) or least influential first (LIF, higher is better); the curve is the target's softmax
  probability, its area (trapezoid over the fraction deleted) the score; SRG = LIF - MIF; "acc" variants
  count the sentences still classified as the target; ties are broken at random (seeded);
* evidence: token-level average precision of the scores against the evidence positions (the keyword, and
  its negator when negated), and how often the top-scored word is evidence (pointing game);
* completeness: the median over sentences of |sum(scores) + rest - value| / |value| for the methods meant to
  add up (IxG with no rest, IG with f(zero embeddings), FullGrad with the bias shares not on a token).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from .. import metrics
from ..bench.methods import Method, resolve, table
from . import data

__all__ = ["METHODS", "Config", "Method", "TextResult", "resolve_methods", "run"]

STEP = 0.1


_GRADIENT = (("gradient", "Gradient", False), ("input_x_gradient", "IxG", True),
             ("integrated_gradients", "IG", True), ("smoothgrad", "SmoothGrad", False), ("fullgrad", "FullGrad", True))
_BASELINES = (("attention_rollout", "Rollout", False), ("gae", "GAE", False), ("attnlrp", "AttnLRP", True))
METHODS: tuple[Method, ...] = table(_GRADIENT, _BASELINES)


def resolve_methods(keys: list[str] | None) -> list[Method]:
    """The rows for the given keys (both variants of a gradient method); None: all."""
    return resolve(METHODS, keys)


@dataclass
class Config:
    n: int = 500
    seed: int | None = None
    """Sentence seed; None: ``data.HELDOUT_SEED``."""
    batch: int = 50
    ig_steps: int = 32
    sg_samples: int = 16
    sg_stdev: float = 0.15
    lxt_python: str | None = None


@dataclass
class TextResult:
    rows: list[dict[str, Any]]
    curves: dict[str, dict[str, list[float]]]
    examples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Encoded:
    """The sentences tokenised and padded to one length (one transform serves them all)."""

    ids: Tensor
    mask: Tensor
    content: Tensor
    """[N, T] bool: the words (rankable, deletable), i.e. neither special nor padding."""
    evidence: Tensor
    """[N, T] bool: the evidence tokens."""
    labels: Tensor


def encode(tokenizer: Any, sentences: data.Sentences) -> Encoded:
    enc = tokenizer(sentences.texts, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = torch.tensor(tokenizer.all_special_ids)
    content = (mask == 1) & ~torch.isin(ids, special)
    evidence = torch.zeros_like(content)
    for i, positions in enumerate(sentences.evidence):
        evidence[i, torch.tensor(positions) + 1] = True  # word i is token i + 1 ([CLS] first)
    return Encoded(ids, mask, content, evidence, torch.tensor(sentences.labels))


def deletion(model: torch.nn.Module, ids: Tensor, mask: Tensor, content: Tensor, scores: Tensor, target: Tensor,
             mask_id: int, generator: torch.Generator) -> dict[str, Tensor]:
    """MIF and LIF curves [B, steps] of the target's probability and of "still predicted", deleting words by
    ``scores`` (ties broken at random)."""
    batch, length = ids.shape
    jitter = torch.randperm(length, generator=generator)  # random tie order, then a stable sort by score
    s = scores.double()[:, jitter].masked_fill(~content[:, jitter], -math.inf)
    order = jitter[torch.sort(s, dim=1, descending=True, stable=True).indices]
    words = content.sum(1)
    fractions = torch.arange(0, 1 + 1e-9, STEP, dtype=torch.float64)
    out: dict[str, list[Tensor]] = {"mif_prob": [], "lif_prob": [], "mif_pred": [], "lif_pred": []}
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(length).expand(batch, -1).contiguous())
    for kind in ("mif", "lif"):
        # LIF ranks the words from the least influential: reverse the order among the words only
        position = rank if kind == "mif" else (words[:, None] - 1 - rank)
        for f in fractions:
            k = torch.round(f * words).long()
            drop = content & (position < k[:, None]) & (position >= 0)
            with torch.no_grad():
                logits = model(input_ids=ids.masked_fill(drop, mask_id), attention_mask=mask).logits
            prob = logits.softmax(-1).gather(1, target[:, None])[:, 0]
            out[f"{kind}_prob"].append(prob.double())
            out[f"{kind}_pred"].append((logits.argmax(-1) == target).double())
    return {k: torch.stack(v, 1) for k, v in out.items()} | {"fractions": fractions}


def _area(curve: Tensor, fractions: Tensor) -> Tensor:
    return torch.trapezoid(curve, fractions, dim=1)


class _Scores:
    def __init__(self) -> None:
        self.parts: dict[str, list[Tensor]] = {}
        self.seconds = 0.0

    def add(self, key: str, value: Tensor) -> None:
        self.parts.setdefault(key, []).append(value.detach().double().reshape(-1))

    def get(self, key: str) -> Tensor | None:
        return torch.cat(self.parts[key]) if key in self.parts else None


def run(config: Config, methods: list[Method] | None = None,
        progress: Callable[[int, int], None] | None = None) -> TextResult:
    """Every method's token scores and metrics on the bundled classifier (module docstring)."""
    from . import model as bundled
    from .attribution import TokenScorer
    from .readouts import ClassLogits

    start = time.perf_counter()
    methods = list(methods or METHODS)
    torch.manual_seed(0)
    seed = data.HELDOUT_SEED if config.seed is None else config.seed
    tm = bundled.load()
    sentences = data.generate(config.n, seed=seed)
    enc = encode(tm.tokenizer, sentences)
    embeds = tm.embed(enc.ids)
    readout = ClassLogits(tm.model).eval()
    scorers = {p: TokenScorer(readout, embeds[:2], enc.mask[:2], preset=p) for p in ("vanilla", "libragrad")}
    with torch.no_grad():
        logits = tm.model(input_ids=enc.ids, attention_mask=enc.mask).logits
    accuracy = float((logits.argmax(-1) == enc.labels).double().mean())
    notes = [f"{config.n} sentences (seed {seed}), {sum(sentences.negated)} negated; padded to {enc.ids.shape[1]} "
             f"tokens; the bundled classifier gets {accuracy:.1%} of them right"]

    lrp = None
    if any(m.key == "attnlrp" for m in methods):
        lrp, note = _attnlrp(tm, enc, config)
        notes.append(note)
        if lrp is None:
            methods = [m for m in methods if m.key != "attnlrp"]

    scores = {m.name: _Scores() for m in methods}
    curves: dict[str, dict[str, Tensor]] = {}
    examples: dict[str, Tensor] = {}
    batches = list(range(0, config.n, config.batch))
    total, done = len(batches) * len(methods), 0
    mask_id = tm.tokenizer.mask_token_id
    for b, lo in enumerate(batches):
        sl = slice(lo, min(lo + config.batch, config.n))
        e, m_, t = embeds[sl], enc.mask[sl], enc.labels[sl]
        for method in methods:
            t0 = time.perf_counter()
            if method.key == "attnlrp":
                result_scores, result_total = lrp[0][sl], lrp[1][sl]
                value = logits[sl].gather(1, t[:, None])[:, 0].double()
                rel = (result_total - value).abs() / value.abs().clamp_min(1e-12)
            else:
                preset = "vanilla" if method.variant == "baseline" else method.variant
                result = scorers[preset].scores(method.key, e, m_, t, ig_steps=config.ig_steps,
                                                sg_samples=config.sg_samples, sg_stdev=config.sg_stdev, seed=seed + b)
                result_scores = result.scores
                rel = result.completeness() if method.complete else None
            s = scores[method.name]
            s.seconds += time.perf_counter() - t0
            s.add("ap", metrics.average_precision(result_scores.masked_fill(~enc.content[sl], -math.inf),
                                                  enc.evidence[sl]))
            top = result_scores.masked_fill(~enc.content[sl], -math.inf).argmax(1)
            s.add("pointing", enc.evidence[sl].gather(1, top[:, None])[:, 0])
            if rel is not None:
                s.add("compl_rel", rel)
            curve = deletion(tm.model, enc.ids[sl], m_, enc.content[sl], result_scores, t, mask_id,
                             torch.Generator().manual_seed(seed + b))
            for kind in ("mif", "lif"):
                for what in ("prob", "pred"):
                    s.add(f"{kind}_{what}", _area(curve[f"{kind}_{what}"], curve["fractions"]))
            acc = curves.setdefault(method.name, {"fractions": curve["fractions"]})
            for kind in ("mif_prob", "lif_prob"):
                acc[kind] = acc.get(kind, 0) + curve[kind].sum(0)
            if b == 0:
                examples[method.name] = result_scores[:8].detach()
            done += 1
            if progress is not None:
                progress(done, total)
    rows = [_summary(m, scores[m.name], config.n) for m in methods]
    curve_out = {name: {"fractions": c["fractions"].tolist(), "mif": (c["mif_prob"] / config.n).tolist(),
                        "lif": (c["lif_prob"] / config.n).tolist()} for name, c in curves.items()}
    example_rows = [{"tokens": tm.tokenizer.convert_ids_to_tokens(enc.ids[i][enc.mask[i] == 1]),
                     "label": data.LABELS[int(enc.labels[i])], "evidence": enc.evidence[i][enc.mask[i] == 1].tolist(),
                     "scores": {name: v[i][enc.mask[i] == 1].tolist() for name, v in examples.items()}}
                    for i in range(min((len(v) for v in examples.values()), default=0))]
    return TextResult(rows, curve_out, example_rows, notes, time.perf_counter() - start)


def _summary(method: Method, s: _Scores, n: int) -> dict[str, Any]:
    row: dict[str, Any] = {"model": "text-classifier", "method": method.label, "variant": method.variant,
                           "key": method.key, "n": n}
    for kind in ("mif", "lif"):
        for what in ("prob", "pred"):
            v = s.get(f"{kind}_{what}")
            row[f"{what}_{kind}"] = float(v.mean()) if v is not None else math.nan
    for what in ("prob", "pred"):
        row[f"{what}_srg"] = row[f"{what}_lif"] - row[f"{what}_mif"]
    for key in ("ap", "pointing"):
        v = s.get(key)
        row[key] = float(torch.nanmean(v)) if v is not None else math.nan
    rel = s.get("compl_rel")
    row["compl_rel_median"] = float(rel.median()) if rel is not None else math.nan
    row["ms_per_sentence"] = 1e3 * s.seconds / max(n, 1)
    return row


def _attnlrp(tm: Any, enc: Encoded, config: Config) -> tuple[tuple[Tensor, Tensor] | None, str]:
    """AttnLRP token relevance (lxt's own BERT rules, in a Python that has lxt), or None and why not."""
    from .attnlrp import LXTUnavailable, relevance

    try:
        rel, total, logit, python = relevance(tm.path, enc.ids, enc.mask, enc.labels, python=config.lxt_python)
    except (LXTUnavailable, RuntimeError) as error:
        return None, f"AttnLRP skipped: {error}"
    with torch.no_grad():
        ours = tm.model(input_ids=enc.ids, attention_mask=enc.mask).logits.gather(1, enc.labels[:, None])[:, 0]
    gap = float((logit - ours).abs().max())
    return (rel, total), (f"AttnLRP: lxt's own rules for HF BERT (lxt.efficient.monkey_patch on transformers' "
                          f"modeling_bert), input x gradient at the embeddings, computed with {python}; its forward "
                          f"differs from the model's by {gap:.1e} at most")


def config_dict(config: Config) -> dict[str, Any]:
    return asdict(config) | {"step_fraction": STEP, "deletion_token": "[MASK]"}
