"""Token scores from any attribution method, on a readout transformed once.

Every method runs on the rewritten readout (``preset``: ``libragrad``, ``vanilla`` or an ablation) at the
input embeddings ``[B, T, H]`` and gives one score per token ``[B, T]``:

* ``gradient``, ``smoothgrad``: the L2 norm of the (averaged) gradient over the hidden dimension (a
  magnitude, unsigned);
* ``input_x_gradient``, ``integrated_gradients``: the attribution summed over the hidden dimension
  (signed); IG from zero embeddings;
* ``fullgrad``: Input x Gradient plus every bias's share ``<grad~_y f, b>`` that sits at a token position
  (a site whose value is laid out ``[B, T, ...]``, or ``[B, heads, T, ...]``: position and token-type
  embeddings, the biases of every per-token linear map and norm, ...), summed onto that position.
  Bias shares with no token position (after pooling: the pooler's and the classifier's biases, a
  pooler activation's f(0)) are the named *rest*;
* ``attention_rollout``, ``gae``: the rolled-out relevance of each token (the row the readout reads).

``complete`` methods also return what the scores leave out, by name, so that scores plus rest add up to
the readout (:class:`Scores`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch import Tensor

from .. import attr
from ..core.transform import transform

__all__ = ["METHODS", "ALIASES", "COMPLETE", "Scores", "TokenScorer", "resolve_method"]

METHODS = ("gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "fullgrad", "attention_rollout",
           "gae")
ALIASES = {alias: key for alias, key in attr.ALIASES.items() if key in METHODS}
COMPLETE = ("input_x_gradient", "integrated_gradients", "fullgrad")
"""Methods whose scores are meant to add up to the readout (with their rest)."""


def resolve_method(name: str) -> str:
    method = ALIASES.get(name, name)
    if method not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(list(METHODS) + list(ALIASES))}")
    return method


@dataclass
class Scores:
    """One method's token scores for a batch."""

    scores: Tensor
    """[B, T] float64."""
    value: Tensor
    """The readout's value per sample [B] (float64)."""
    rest: dict[str, Tensor] = field(default_factory=dict)
    """What the scores leave out of ``value``, by name, per sample [B] (float64)."""

    def completeness(self) -> Tensor | None:
        """|sum(scores) + sum(rest) - value| / |value| per sample [B]."""
        total = self.scores.sum(1) + sum(self.rest.values(), torch.zeros_like(self.value))
        return (total - self.value).abs() / self.value.abs().clamp_min(1e-12)


class TokenScorer:
    """The readout ``readout`` transformed once (with ``preset``) and every method on it.

    Args:
        readout: a module ``(inputs_embeds, attention_mask) -> [B, K]`` (:mod:`libragrad_fx.text.readouts`).
        example: example embeddings [B, T, H] (the transform is specific to the sequence length T).
        mask: the example's integer attention mask [B, T], or None when no sample is padded.
        preset: the rule preset (``libragrad``, ``vanilla``, ...).
    """

    def __init__(self, readout: nn.Module, example: Tensor, mask: Tensor | None = None,
                 preset: str = "libragrad") -> None:
        self.readout = readout.eval()
        self.preset = preset
        self.masked = mask is not None
        example_inputs = (example, mask) if mask is not None else example
        self.gm = transform(self.readout, example_inputs, preset=preset)
        self._methods: dict[str, attr.Attribution] = {}
        self._sites: dict[str, str] | None = None

    @property
    def report(self):
        return self.gm.libragrad_report

    def _method(self, cls: type, **kwargs) -> attr.Attribution:
        key = f"{cls.__name__}{sorted(kwargs.items())}"
        if key not in self._methods:
            self._methods[key] = cls(self.gm, **kwargs)
        return self._methods[key]

    def _extra(self, mask: Tensor | None) -> tuple:
        if self.masked != (mask is not None):
            raise ValueError("pass an attention mask exactly when the scorer was built with one")
        return () if mask is None else (mask,)

    @torch.no_grad()
    def values(self, embeds: Tensor, mask: Tensor | None, target: Tensor) -> Tensor:
        """The readout's value at ``target`` per sample [B] (float64)."""
        out = self.gm(embeds, *self._extra(mask))
        return out.gather(1, target[:, None])[:, 0].double()

    def scores(self, method: str, embeds: Tensor, mask: Tensor | None, target: Tensor, *, ig_steps: int = 32,
               sg_samples: int = 16, sg_stdev: float = 0.15, seed: int = 0) -> Scores:
        """Token scores of ``method`` for ``embeds`` [B, T, H] and the readout index ``target`` [B]."""
        method = resolve_method(method)
        extra = self._extra(mask)
        batch, length = embeds.shape[:2]
        value = self.values(embeds, mask, target)
        if method == "gradient":
            g = self._method(attr.Gradient).attribute(embeds, target=target, additional_forward_args=extra)
            return Scores(g.double().norm(dim=-1), value)
        if method == "smoothgrad":
            flat = embeds.flatten(1)
            stdev = sg_stdev * float((flat.max(1).values - flat.min(1).values).mean())
            g = self._method(attr.SmoothGrad).attribute(embeds, target=target, additional_forward_args=extra,
                                                       nt_samples=sg_samples, stdevs=stdev,
                                                       generator=torch.Generator().manual_seed(seed),
                                                       nt_samples_batch_size=4)
            return Scores(g.double().norm(dim=-1), value)
        if method == "input_x_gradient":
            a = self._method(attr.InputXGradient).attribute(embeds, target=target, additional_forward_args=extra)
            return Scores(a.double().sum(-1), value)
        if method == "integrated_gradients":
            a = self._method(attr.IntegratedGradients).attribute(embeds, target=target, additional_forward_args=extra,
                                                                 n_steps=ig_steps, internal_batch_size=batch * 8)
            start = self.values(torch.zeros_like(embeds), mask, target)
            return Scores(a.double().sum(-1), value, {"f(zero embeddings)": start})
        if method == "fullgrad":
            return self._fullgrad(embeds, extra, target, value, batch, length)
        cls = attr.AttentionRollout if method == "attention_rollout" else attr.GradientRollout
        relevance = self._method(cls, grid=(1, length)).attribute(embeds, target=target,
                                                                  additional_forward_args=extra)
        return Scores(relevance.reshape(batch, length).double(), value)

    def _fullgrad(self, embeds: Tensor, extra: tuple, target: Tensor, value: Tensor, batch: int,
                  length: int) -> Scores:
        fullgrad = self._method(attr.FullGrad)
        result = fullgrad.decompose(embeds, target=target, additional_forward_args=extra, keep_contributions=True)
        scores = result.inputs[0].double().sum(-1)
        rest: dict[str, Tensor] = {}
        names = self._site_names(fullgrad, embeds, extra)
        for name, total in result.biases.items():
            contribution = result.contributions.get(name)
            placed = _per_token(contribution, batch, length) if contribution is not None else None
            if placed is not None:
                scores = scores + placed
            elif bool(total.abs().max() > 0):
                label = names.get(name.split("[")[0], name)
                rest[label] = rest.get(label, torch.zeros_like(total)) + total
        return Scores(scores, value, rest)

    def _site_names(self, fullgrad: attr.FullGrad, embeds: Tensor, extra: tuple) -> dict[str, str]:
        """Site node -> a readable name: the constants that enter there (``model.classifier.bias``)."""
        if self._sites is None:
            sites = fullgrad.biases(embeds, extra).sites
            self._sites = {s.node: _site_label(s) for s in sites}
        return self._sites


def _site_label(site) -> str:
    """``bert.pooler.dense.bias`` for a parameter (the readout's ``model.`` prefix dropped), else the node and
    what enters there (``tanh (f0=0.0)``)."""
    sources = [c.split("=", 1)[-1] for c in site.constants]
    if all("." in s and " " not in s and not s[0].isdigit() for s in sources):
        return ", ".join(s.removeprefix("model.") for s in sources)
    return f"{site.node} ({', '.join(site.constants)})"


def _per_token(contribution: Tensor, batch: int, length: int) -> Tensor | None:
    """A site's elementwise share summed onto the token positions [B, T] (float64), or None where the
    site has no token dimension (pooled features, logits)."""
    c = contribution.detach()
    if c.dim() >= 3 and c.shape[0] == batch and c.shape[1] == length:
        return c.double().reshape(batch, length, -1).sum(-1)
    if c.dim() == 4 and c.shape[0] == batch and c.shape[2] == length:  # [B, heads, T, d]
        return c.double().sum((1, 3))
    return None
