"""FullGrad (Srinivas & Fleuret 2019) on the rewritten backward (docs/METHOD.md sections 1 and 5).

    f_t(x) = sum(x * grad~_x f_t) + sum_j <grad~_{y_j} f_t, b_j>

The input part is Input x Gradient; each bias b_j is the constant entering the stream at its site
y_j, found from the graph (:mod:`libragrad_fx.attr.biases`). With LibraGrad the parts sum to f_t(x) to
float precision on any model; with the vanilla gradient they do not (:func:`libragrad_fx.completeness`
measures both). One forward and one backward: the gradients at the input and at every site come
from the same ``torch.autograd.grad`` call.

The map (:meth:`FullGrad.attribute`) is signed and keeps the sums: Input x Gradient plus each
site's map ``grad~_y f * b`` summed over channels onto its spatial grid and shared equally by the
pixels and channels each cell covers. What falls on no spatial position (class tokens, pooled
features, the classifier's bias) stays out of the map and in :class:`FullGradResult`'s totals.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor

from libragrad_fx.attr import maps
from libragrad_fx.attr.biases import Biases, BiasSite
from libragrad_fx.attr.taps import patch_embedding

from ._base import Attribution, Inputs, Target, as_tuple, extra_args, like, target_values, targets

__all__ = ["FullGrad", "FullGradResult"]


@dataclass
class FullGradResult:
    """FullGrad's decomposition of f_t(x), per sample."""

    target: Tensor
    """The class attributed, per sample [B]."""
    output: Tensor
    """f_t(x) [B]."""
    inputs: tuple[Tensor, ...]
    """x * grad~_x f_t for each input, shaped like it."""
    biases: dict[str, Tensor]
    """Per bias site (node name): <grad~_y f_t, b> per sample [B] (float64)."""
    sites: list[BiasSite]
    contributions: dict[str, Tensor] = field(default_factory=dict, repr=False)
    """Per site, grad~_y f_t * b elementwise (shaped like the site's output), when asked for."""

    @property
    def input_total(self) -> Tensor:
        """sum(x * grad~_x f_t) per sample [B] (float64)."""
        return sum(a.detach().flatten(1).sum(1, dtype=torch.float64) for a in self.inputs)

    @property
    def bias_total(self) -> Tensor:
        """The biases' share of f_t(x) per sample [B] (float64)."""
        return sum(self.biases.values(), torch.zeros_like(self.output, dtype=torch.float64))

    @property
    def attributed(self) -> Tensor:
        """Everything FullGrad attributes: equals f_t(x) when it is complete [B] (float64)."""
        return self.input_total + self.bias_total


class FullGrad(Attribution):
    """Input x Gradient plus every bias's gradient x bias; complete under LibraGrad.

    Args:
        model: a transformed GraphModule, or any ``nn.Module`` (transformed on first use).
        preset: for a plain model, the rule preset (default ``libragrad``).
        grid: the patch grid (h, w) token sequences are laid out on; None: read from the model's
            first convolution (its patch embedding).
        **transform_kwargs: passed to :func:`libragrad_fx.transform`.
    """

    def __init__(self, model, *, preset: str | None = None, grid: tuple[int, int] | None = None,
                 **transform_kwargs: Any) -> None:
        super().__init__(model, preset=preset, **transform_kwargs)
        self.grid = grid
        self._biases: Biases | None = None
        self._module: fx.GraphModule | None = None

    def biases(self, inputs: Inputs, additional_forward_args: Any = None) -> Biases:
        """The bias sites of the model (found once, on first use)."""
        xs = as_tuple(inputs)
        gm = self.graph_module(xs, extra_args(additional_forward_args))
        if self._biases is None or self._biases.gm is not gm:
            names = [n.name for n in gm.graph.nodes if n.op == "placeholder"][:len(xs)]
            self._biases = Biases(gm, names)
            probe = patch_embedding(gm, self._biases.analysis, self._biases.live)
            self._module = self._biases.module_with([probe] if probe is not None else [])
        return self._biases

    def decompose(self, inputs: Inputs, target: Target = None, additional_forward_args: Any = None,
                  keep_contributions: bool = False) -> FullGradResult:
        """f_t(x) split into the inputs' and the biases' shares, per sample.

        Args:
            inputs: a tensor [B, ...] or a tuple of tensors, each attributed.
            target: the class per sample (None: the predicted class; an int; a list or tensor [B]).
            additional_forward_args: further positional model inputs, not attributed (a float tensor
                among them that enters additively is a bias like any other constant).
            keep_contributions: keep each site's elementwise map grad~_y f_t * b.
        """
        result, _ = self._run(inputs, target, additional_forward_args, keep_contributions)
        return result

    def attribute(self, inputs: Inputs, target: Target = None,
                  additional_forward_args: Any = None) -> Tensor | tuple[Tensor, ...]:
        """The FullGrad map, shaped like ``inputs``: Input x Gradient plus the bias maps laid on the
        image (first 4-D input), sums kept. Args as :meth:`decompose`."""
        return self.attribute_with_totals(inputs, target, additional_forward_args)[0]

    def attribute_with_totals(self, inputs: Inputs, target: Target = None, additional_forward_args: Any = None
                              ) -> tuple[Tensor | tuple[Tensor, ...], FullGradResult]:
        """:meth:`attribute`'s map and :meth:`decompose`'s result from one forward and backward."""
        result, probe = self._run(inputs, target, additional_forward_args, keep_contributions=True)
        xs = as_tuple(inputs)
        maps_ = list(result.inputs)
        image = next((i for i, x in enumerate(xs) if x.dim() == 4), None)
        if image is not None:
            x = xs[image]
            grid = self.grid or (tuple(probe.shape[-2:]) if probe is not None and probe.dim() == 4 else None)
            placed = bias_pixels(result.contributions, x.shape[0], grid, tuple(x.shape[-2:]))
            if placed is not None:
                maps_[image] = maps_[image] + (placed / x.shape[1])[:, None].to(x.dtype)
        return like(inputs, tuple(maps_)), result

    def _run(self, inputs: Inputs, target: Target, additional_forward_args: Any,
             keep_contributions: bool) -> tuple[FullGradResult, Tensor | None]:
        biases = self.biases(inputs, additional_forward_args)
        xs = tuple(x.detach().requires_grad_(True) for x in as_tuple(inputs))
        batch = xs[0].shape[0]
        with torch.enable_grad():
            output, values, constants, *probe = self._module(*xs, *extra_args(additional_forward_args))
            index = targets(output, target)
            value = target_values(output, index)
            live = [i for i, v in enumerate(values) if isinstance(v, Tensor) and v.requires_grad]
            grads = torch.autograd.grad(value.sum(), xs + tuple(values[i] for i in live), allow_unused=True)
        input_part = tuple(x.detach() * (torch.zeros_like(x) if g is None else g) for x, g in zip(xs, grads))
        site_grads = dict(zip(live, grads[len(xs):]))
        totals, contributions = {}, {}
        for i, name in enumerate(biases.outputs):
            g = site_grads.get(i)
            if g is None:
                totals[name] = torch.zeros(batch, dtype=torch.float64, device=value.device)
                continue
            c = torch.where(g != 0, g * constants[i], torch.zeros((), dtype=g.dtype, device=g.device))
            totals[name] = maps.per_sample(c, batch, torch.float64)
            if keep_contributions:
                contributions[name] = c
        result = FullGradResult(index, value.detach(), input_part, totals, list(biases.sites), contributions)
        return result, (probe[0].detach() if probe else None)


def bias_pixels(contributions: dict[str, Tensor], batch: int, grid: tuple[int, int] | None,
                image_size: tuple[int, int]) -> Tensor | None:
    """The sum of the sites' maps that have a spatial layout, spread over the image [B, H, W]."""
    total = None
    for c in contributions.values():
        where = maps.layout(c.shape, batch, grid, image_size)
        if where is None:
            continue
        grid_map, _ = maps.to_grid(c.detach(), where)
        pixels = maps.spread(grid_map.double(), image_size)
        total = pixels if total is None else total + pixels
    return total

