"""The Transformer-specific baselines the paper compares against: attention rollout and its
gradient-weighted form.

* Attention rollout (Abnar & Zuidema 2020): R = prod_l (mean_h A_l + I) / 2, from the first layer to
  the last; the map is the class token's row of R over the patch tokens.
* Gradient-weighted rollout, "GAE" (Chefer et al. 2021, *Generic Attention-model Explainability*):
  R = I; R <- R + mean_h[(grad A_l * A_l)^+] R per layer; the map is again the class token's row.

A layer's attention A = softmax(q k^T s + mask) is read where it meets the values: a fused
``scaled_dot_product_attention`` (A recomputed from its q, k, mask and scale; the model's forward is
untouched) or a product ``A @ v`` whose A comes from a softmax. Its gradient is
grad A = grad O @ v^T, with grad O the gradient at the attention's output: the rewritten one on a
LibraGrad model (the paper's GAE baseline is ``GradientRollout(model, preset="vanilla")``).
Attention from a few queries to all tokens (attention pooling, class attention) reads the rolled-out
relevance out instead of the class token. Models without a class token read the mean over tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor

from libragrad_fx.attr import maps
from libragrad_fx.core.analysis import Analysis
from libragrad_fx.core.ops import Category
from libragrad_fx.attr.taps import tap

from ._base import Attribution, Inputs, Target, as_tuple, extra_args
from .compiled import Compiled
from .readout import read

__all__ = ["AttentionRollout", "GradientRollout", "GAE", "attention_sites"]

_PASS_THROUGH = {"detach", "dropout", "clone", "to", "contiguous", "identity"}


@dataclass(frozen=True)
class AttentionSite:
    """Where attention weights meet values: what to read to get A, v and the output O."""

    node: fx.Node
    """The node computing O = A v."""
    query: fx.Node | None = None
    key: fx.Node | None = None
    mask: Any = None
    scale: float | None = None
    causal: bool = False
    weights: fx.Node | None = None
    """For a product A @ v: the node holding A."""
    value: fx.Node | None = None


def _softmax_source(node: Any, analysis: Analysis) -> bool:
    """Is ``node`` a softmax, up to detaches, dropout and shape-preserving copies?"""
    while isinstance(node, fx.Node):
        facts = analysis.facts.get(node)
        if facts is None or facts.op is None:
            return False
        if facts.op.name in ("softmax",):
            return True
        if facts.op.name not in _PASS_THROUGH:
            return False
        node = facts.op.input
    return False


def attention_sites(gm: fx.GraphModule, analysis: Analysis, live: frozenset) -> list[AttentionSite]:
    """Every attention on a gradient path, in graph order."""
    sites = []
    for node in gm.graph.nodes:
        if node not in live:
            continue
        facts = analysis[node]
        op = facts.op
        if op is None:
            continue
        if op.name == "scaled_dot_product_attention":
            args = op.args
            sites.append(AttentionSite(node, args.get("query"), args.get("key"), args.get("attn_mask"),
                                       args.get("scale"), bool(args.get("is_causal", False)),
                                       value=args.get("value")))
        elif op.name == "matmul" and facts.category is Category.PRODUCT:
            a, v = op.args.get("input"), op.args.get("other")
            if _softmax_source(a, analysis) and isinstance(v, fx.Node):
                sites.append(AttentionSite(node, weights=a, value=v))
    return sites


def _attention(site: AttentionSite, values: dict[fx.Node, Tensor]) -> Tensor:
    """A [B, heads, Nq, Nk] at a site."""
    if site.weights is not None:
        return values[site.weights]
    q, k = values[site.query], values[site.key]
    if k.shape[-3] != q.shape[-3]:  # grouped-query attention: heads share keys
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    scale = site.scale if site.scale is not None else 1.0 / math.sqrt(q.shape[-1])
    logits = (q @ k.transpose(-2, -1)) * scale
    mask = values.get(site.mask) if isinstance(site.mask, fx.Node) else site.mask
    if isinstance(mask, Tensor):
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    if site.causal:
        n, m = logits.shape[-2:]
        logits = logits.masked_fill(~torch.ones(n, m, dtype=torch.bool, device=logits.device).tril(), float("-inf"))
    return logits.softmax(-1)


def _value(site: AttentionSite, values: dict[fx.Node, Tensor], heads: int) -> Tensor:
    v = values[site.value]
    return v.repeat_interleave(heads // v.shape[-3], dim=-3) if v.dim() >= 3 and v.shape[-3] != heads else v


class _Rollout(Attribution):
    """Rollout over every attention layer of the model.

    Args:
        model: a transformed GraphModule, or any ``nn.Module`` (transformed on first use).
        preset: for a plain model, the rule preset (default ``libragrad``; the gradient-weighted
            rollout's gradients follow it).
        grid: the patch grid (h, w); None: read from the model's first convolution.
        readout: ``auto`` (the mean over the last layer's rows the target's gradient reaches, i.e. the
            class token's row or the pooled tokens' rows; plain rollout runs one backward to find them),
            ``cls`` or ``mean``.
    """

    uses_gradient = False

    def __init__(self, model, *, preset: str | None = None, grid: tuple[int, int] | None = None,
                 readout: str = "auto", **transform_kwargs: Any) -> None:
        super().__init__(model, preset=preset, **transform_kwargs)
        if readout not in ("auto", "cls", "mean"):
            raise ValueError(f"unknown readout {readout!r}; valid: auto, cls, mean")
        self.grid = grid
        self.readout = readout

    def attribute(self, inputs: Inputs, target: Target = None, additional_forward_args: Any = None) -> Tensor:
        """
        Args:
            inputs: a tensor [B, ...] or a tuple of tensors (the first 4-D one is the image).
            target: the class per sample (None: the predicted class), ``"prob"`` /
                :class:`~libragrad_fx.attr.Probability`, or a callable ``output -> Tensor [B]``
                (:mod:`libragrad_fx.attr.readout`); used by the gradient-weighted form and to find the
                rows the ``auto`` readout averages.
            additional_forward_args: further positional model inputs.

        Returns:
            The relevance of each patch token on the patch grid [B, h, w].
        """
        # the auto readout asks autograd which last-layer rows the target reads, so even plain
        # rollout needs a backward (to the last attention only)
        backward = self.uses_gradient or self.readout == "auto"
        xs = tuple(x.detach().requires_grad_(backward) for x in as_tuple(inputs))
        extra = extra_args(additional_forward_args)
        compiled = self.compiled(xs, extra)
        module, sites, wanted, probe_node = _taps(compiled, type(self).__name__)
        with torch.set_grad_enabled(backward):
            output, *tapped = module(*xs, *extra)
            values = dict(zip(wanted, tapped))
            grads = {}
            if backward:
                value, _ = read(compiled, output, target, xs[0].shape[0])
                asked = sites if self.uses_gradient else sites[-1:]
                outs = [values[s.node] for s in asked]
                found = torch.autograd.grad(value.sum(), outs, allow_unused=True)
                grads = {s.node: g for s, g in zip(asked, found)}
        batch = xs[0].shape[0]
        probe = values.get(probe_node) if probe_node is not None else None
        grid = self.grid or (tuple(probe.shape[-2:]) if isinstance(probe, Tensor) and probe.dim() == 4 else None)
        with torch.no_grad():
            values = {n: v.detach() if isinstance(v, Tensor) else v for n, v in values.items()}
            relevance = self._roll(sites, values, grads, grid, _read_rows(sites[-1], grads))
        where = maps.layout((batch, relevance.shape[1], 1), batch, grid, None)
        if where is None:
            raise ValueError(f"{type(self).__name__}: {relevance.shape[1]} tokens do not form the patch grid "
                             f"{grid}; pass grid=(h, w)")
        spatial, _ = maps.as_tokens(relevance[..., None], where)
        return spatial[..., 0].reshape(batch, *where.grid)

    def _roll(self, sites: list[AttentionSite], values: dict, grads: dict, grid: tuple[int, int] | None,
              rows: Tensor | None = None) -> Tensor:
        """The relevance of each token [B, N]; ``rows`` [B, N]: the last layer's rows the target reads."""
        rolled: Tensor | None = None
        pooled: Tensor | None = None
        for site in sites:
            a = _attention(site, values)
            layer = self.layer_weights(a, site, values, grads)  # [B, Nq, Nk]
            nq, nk = layer.shape[-2:]
            if rolled is None:
                rolled = torch.eye(nk, dtype=a.dtype, device=a.device).expand(a.shape[0], nk, nk).clone()
            if nk != rolled.shape[-1]:
                raise ValueError(f"{type(self).__name__}: attention at {site.node.name} spans {nk} tokens, earlier "
                                 f"layers {rolled.shape[-1]}: rollout needs one token sequence throughout")
            if nq == nk:
                rolled = self.step(layer, rolled)
            else:  # a few queries over all tokens (attention pooling): they read the relevance out
                pooled = layer.mean(1, keepdim=True) @ rolled
        if pooled is not None:
            return pooled[:, 0]
        if self.readout == "auto" and rows is not None and rows.shape == rolled.shape[:2] and rows.any(1).all():
            # the rows the output reads (the class token's; every patch token's under mean pooling)
            weights = rows.to(rolled.dtype)
            return (weights[..., None] * rolled).sum(1) / weights.sum(1, keepdim=True)
        has_prefix = grid is not None and rolled.shape[-1] > grid[0] * grid[1]
        return rolled[:, 0] if self.readout == "cls" or (self.readout == "auto" and has_prefix) else rolled.mean(1)

    def layer_weights(self, a: Tensor, site: AttentionSite, values: dict, grads: dict) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def step(layer: Tensor, rolled: Tensor) -> Tensor:
        raise NotImplementedError


class AttentionRollout(_Rollout):
    """Attention rollout: the product of the head-averaged attention maps, each mixed half with identity."""

    def layer_weights(self, a, site, values, grads):
        return a.mean(1)

    @staticmethod
    def step(layer: Tensor, rolled: Tensor) -> Tensor:
        eye = torch.eye(layer.shape[-1], dtype=layer.dtype, device=layer.device)
        return (0.5 * layer + 0.5 * eye) @ rolled


class GradientRollout(_Rollout):
    """Chefer et al.'s gradient-weighted rollout (GAE): R += mean_h[(grad A * A)^+] R per layer."""

    uses_gradient = True

    def layer_weights(self, a, site, values, grads):
        g_out = grads.get(site.node)
        if g_out is None:
            return torch.zeros_like(a.mean(1))
        grad_a = g_out @ _value(site, values, a.shape[-3]).transpose(-2, -1)
        return (grad_a * a).clamp(min=0).mean(1)

    @staticmethod
    def step(layer: Tensor, rolled: Tensor) -> Tensor:
        return rolled + layer @ rolled


GAE = GradientRollout


def _taps(compiled: Compiled, method: str) -> tuple[fx.GraphModule, list[AttentionSite], list[fx.Node],
                                                    fx.Node | None]:
    """(the model returning every attention's inputs and output, the sites, the tapped nodes, the patch
    embedding), made once per transformed model."""
    def build():
        sites = attention_sites(compiled.gm, compiled.analysis, compiled.live)
        if not sites:
            return None
        wanted: list[fx.Node] = []
        for site in sites:
            for n in (site.node, site.query, site.key, site.mask, site.weights, site.value):
                if isinstance(n, fx.Node) and n not in wanted:
                    wanted.append(n)
        if compiled.probe is not None:
            wanted.append(compiled.probe)
        return tap(compiled.gm, wanted), sites, wanted, compiled.probe
    found = compiled.cached("rollout", build)
    if found is None:
        raise ValueError(f"{method}: no attention on the model's gradient paths "
                         "(no scaled_dot_product_attention, no softmax(...) @ v)")
    return found


def _read_rows(site: AttentionSite, grads: dict) -> Tensor | None:
    """[B, N] bool: the query rows of the last attention whose output the target's gradient reaches."""
    g = grads.get(site.node)
    if not isinstance(g, Tensor) or g.dim() < 3:
        return None
    return g.abs().sum(-1).flatten(1, -2).sum(1) > 0 if g.dim() > 3 else g.abs().sum(-1) > 0
