"""FullGrad (Srinivas & Fleuret 2019) on the rewritten backward (docs/METHOD.md sections 1 and 5).

    f_t(x) = sum(x * grad~_x f_t) + sum_j <grad~_{y_j} f_t, b_j>

The input part is Input x Gradient; each bias b_j is the constant entering the stream at its site
y_j, found from the graph (:mod:`libragrad_fx.attr.biases`). With LibraGrad the parts sum to f_t(x) to
float precision on any model; with the vanilla gradient they do not (:func:`libragrad_fx.completeness`
measures both). f_t is the target: a logit, or a readout traced into a graph whose own biases count
too (:mod:`libragrad_fx.attr.readout`).

One forward and one backward, at the price of Input x Gradient: the backward asks for the input
gradient only, and a hook on each site reduces ``grad~_y f_t * b`` as the backward passes it, to a
total per sample and, for a site laid out on the image, a map on its token/pixel grid (summed over
channels). No site's gradient or contribution is kept at full size (unless asked for:
``keep_contributions``).

The map (:meth:`FullGrad.attribute`) is signed and keeps the sums: Input x Gradient plus each
site's grid map shared equally by the pixels and channels each cell covers. What falls on no
spatial position (class tokens, pooled features, the classifier's bias) stays out of the map and
in :class:`FullGradResult`'s totals.
"""
from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from libragrad_fx.attr import maps
from libragrad_fx.attr.biases import Biases, BiasSite

from ._base import Attribution, Inputs, Target, as_tuple, extra_args, like
from .compiled import Compiled
from .readout import CompiledReadout, read

__all__ = ["FullGrad", "FullGradResult"]


@dataclass
class FullGradResult:
    """FullGrad's decomposition of f_t(x), per sample."""

    target: Tensor | None
    """The class attributed, per sample [B] (None for a callable readout)."""
    output: Tensor
    """f_t(x) [B]: the target's value (a logit, a probability, a readout's value)."""
    inputs: tuple[Tensor, ...]
    """x * grad~_x f_t for each input, shaped like it."""
    biases: dict[str, Tensor]
    """Per bias site (node name; a readout's sites as ``readout.<node>``): <grad~_y f_t, b> per sample
    [B] (float64)."""
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

    def biases(self, inputs: Inputs, additional_forward_args: Any = None) -> Biases:
        """The bias sites of the model (found once, on first use)."""
        return self.compiled(as_tuple(inputs), extra_args(additional_forward_args)).biases

    def decompose(self, inputs: Inputs, target: Target = None, additional_forward_args: Any = None,
                  keep_contributions: bool = False) -> FullGradResult:
        """f_t(x) split into the inputs' and the biases' shares, per sample.

        Args:
            inputs: a tensor [B, ...] or a tuple of tensors, each attributed.
            target: what is explained: the class per sample (None: the predicted class; an int; a list or
                tensor [B]), ``"prob"`` / :class:`~libragrad_fx.attr.Probability`, or a callable
                ``output -> Tensor [B]`` (:mod:`libragrad_fx.attr.readout`: its biases are sites too).
            additional_forward_args: further positional model inputs, not attributed (a float tensor
                among them that enters additively is a bias like any other constant).
            keep_contributions: keep each site's elementwise map grad~_y f_t * b (full size: memory).
        """
        return self._run(inputs, target, additional_forward_args, keep_contributions)[0]

    def attribute(self, inputs: Inputs, target: Target = None,
                  additional_forward_args: Any = None) -> Tensor | tuple[Tensor, ...]:
        """The FullGrad map, shaped like ``inputs``: Input x Gradient plus the bias maps laid on the
        image (first 4-D input), sums kept. Args as :meth:`decompose`."""
        return self.attribute_with_totals(inputs, target, additional_forward_args)[0]

    def attribute_with_totals(self, inputs: Inputs, target: Target = None, additional_forward_args: Any = None
                              ) -> tuple[Tensor | tuple[Tensor, ...], FullGradResult]:
        """:meth:`attribute`'s map and :meth:`decompose`'s result from one forward and backward."""
        result, shares = self._run(inputs, target, additional_forward_args, keep_contributions=False)
        maps_ = list(result.inputs)
        placed = shares.pixels()
        if placed is not None:
            x = maps_[shares.image]
            maps_[shares.image] = x + (placed / x.shape[1])[:, None].to(x.dtype)
        return like(inputs, tuple(maps_)), result

    def _run(self, inputs: Inputs, target: Target, additional_forward_args: Any,
             keep_contributions: bool) -> tuple[FullGradResult, "_BiasShares"]:
        extra = extra_args(additional_forward_args)
        compiled = self.compiled(as_tuple(inputs), extra)
        biases = compiled.biases
        xs = tuple(x.detach().requires_grad_(True) for x in as_tuple(inputs))
        batch = xs[0].shape[0]
        image = next((i for i, x in enumerate(xs) if x.dim() == 4), None)
        shares = _BiasShares(batch, image, tuple(xs[image].shape[-2:]) if image is not None else None,
                             keep_contributions, xs[0].device)
        shares.expect(biases.outputs)
        active = _ACTIVE.set(shares)
        try:
            with torch.enable_grad():
                output, *probe = _module(compiled)(*xs, *extra)
                probe = probe[0] if probe else None
                shares.grid = self.grid or (tuple(probe.shape[-2:]) if probe is not None and probe.dim() == 4
                                            else None)
                del probe
                value, index = read(compiled, output, target, batch, watch=shares.read)
                del output
                grads = torch.autograd.grad(value.sum(), xs, allow_unused=True)
        finally:
            _ACTIVE.reset(active)
        input_part = tuple(x.detach() * (torch.zeros_like(x) if g is None else g) for x, g in zip(xs, grads))
        result = FullGradResult(index, value.detach(), input_part, shares.totals, list(biases.sites) + shares.sites,
                                shares.contributions)
        return result, shares


_ACTIVE: contextvars.ContextVar["_BiasShares | None"] = contextvars.ContextVar("libragrad_fullgrad", default=None)
"""The call whose bias sites the watched modules report to (None outside FullGrad's forward)."""


def _watch(value: Tensor, bias: Tensor, site: str) -> None:
    """Called by the watched modules as soon as a site's value and bias exist (a graph node)."""
    shares = _ACTIVE.get()
    if shares is not None:
        shares.watch(site, value, bias)


def _module(compiled: Compiled) -> torch.fx.GraphModule:
    """``(*inputs) -> (output, [patch embedding output])``, each site handed to :func:`_watch` in the
    forward (made once per model)."""
    probe = [compiled.probe] if compiled.probe is not None else []
    return compiled.cached("fullgrad", lambda: compiled.biases.watched_module(_watch, probe))


class _BiasShares:
    """Each bias site's share <grad~_y f_t, b>, reduced as the backward passes the site (a tensor hook):
    a total per sample [B] (float64) and, for a site laid out on the image, its map on its grid,
    summed over channels and added up per grid. Nothing full-size is kept unless ``keep``."""

    def __init__(self, batch: int, image: int | None, image_size: tuple[int, int] | None, keep: bool,
                 device: torch.device) -> None:
        self.batch, self.image, self.image_size, self.keep, self.device = batch, image, image_size, keep, device
        self.grid: tuple[int, int] | None = None
        """The token grid (set after the forward, before the backward runs the hooks)."""
        self.totals: dict[str, Tensor] = {}
        self.grids: dict[tuple[int, int], Tensor] = {}
        self.contributions: dict[str, Tensor] = {}
        self.sites: list[BiasSite] = []
        """The readout's sites (``readout.<node>``)."""

    def expect(self, names: list[str]) -> None:
        """Sites whose total is zero unless the backward reaches them (in the order given)."""
        for name in names:
            self.totals.setdefault(name, torch.zeros(self.batch, dtype=torch.float64, device=self.device))

    def watch(self, name: str, value: Tensor, bias: Tensor) -> None:
        """Reduce ``grad * bias`` when the backward passes ``value`` (a hook holds the bias, not the value)."""
        if isinstance(value, Tensor) and value.requires_grad:
            value.register_hook(functools.partial(self._reduce, name, bias))

    def read(self, readout: CompiledReadout, args: tuple) -> Tensor:
        """Evaluate a traced readout with its bias sites watched too (``readout.<node>``)."""
        module = readout.cached("fullgrad", lambda: readout.biases.watched_module(_readout_watch))
        self.expect([f"readout.{n}" for n in readout.biases.outputs])
        known = {s.node for s in self.sites}
        self.sites += [BiasSite(f"readout.{s.node}", s.op, s.constants) for s in readout.biases.sites
                       if f"readout.{s.node}" not in known]
        (value,) = module(*args)
        return value

    def _reduce(self, name: str, constant: Tensor, grad: Tensor) -> None:
        where = maps.layout(grad.shape, self.batch, self.grid, self.image_size) if self.image_size else None
        if where is None:
            total = _total(grad, constant, self.batch)
        else:
            channels = -1 if where.kind == "nhwc" or (where.kind == "tokens" and where.dim == 1) else 1
            summed = _channel_sum(grad, constant, channels)  # [B, h, w] or [B, N]
            total = summed.reshape(self.batch, -1).sum(1, dtype=torch.float64)
            grid_map = summed[:, where.prefix:] if where.kind == "tokens" else summed
            grid_map = grid_map.reshape(self.batch, *where.grid).double()
            self.grids[where.grid] = grid_map + self.grids[where.grid] if where.grid in self.grids else grid_map
        self.totals[name] = self.totals[name] + total
        if self.keep:
            self.contributions[name] = _product(grad, constant)

    def pixels(self) -> Tensor | None:
        """The sites' grid maps spread over the image [B, H, W] (sums kept), or None."""
        if self.image_size is None or not self.grids:
            return None
        return sum(maps.spread(m, self.image_size) for m in self.grids.values())


def _readout_watch(value: Tensor, bias: Tensor, site: str) -> None:
    """:func:`_watch` for a readout's sites, named apart from the model's."""
    _watch(value, bias, f"readout.{site}")


def _product(grad: Tensor, constant: Tensor) -> Tensor:
    """grad * b elementwise, 0 where no gradient reaches (a -inf padding is a constant: 0, not 0 * inf)."""
    return torch.where(grad != 0, grad * constant, torch.zeros((), dtype=grad.dtype, device=grad.device))


def _channel_vector(constant: Tensor, grad: Tensor, dim: int) -> Tensor | None:
    """The constant as a vector along ``dim`` if it is one (a linear/conv/norm bias), else None."""
    dim = dim % grad.dim()
    shape = [1] * (grad.dim() - constant.dim()) + list(constant.shape)
    if len(shape) != grad.dim() or shape[dim] != grad.shape[dim] or any(
            size != 1 for i, size in enumerate(shape) if i != dim):
        return None
    return constant.reshape(-1).to(grad.dtype)


def _channel_sum(grad: Tensor, constant: Tensor, dim: int) -> Tensor:
    """sum over ``dim`` of grad * b, without a full-size product where b is a vector along ``dim``
    (a layer's bias: finite, or the forward would not be)."""
    vector = _channel_vector(constant, grad, dim)
    if vector is not None and dim % grad.dim() == grad.dim() - 1:
        return grad @ vector
    if vector is not None and dim == 1 and grad.dim() == 4:
        return F.conv2d(grad, vector.reshape(1, -1, 1, 1))[:, 0]
    dim, lead = dim % grad.dim(), grad.dim() - constant.dim()  # lead: dimensions the bias is broadcast over
    if lead >= 0 and (dim < lead or constant.shape[dim - lead] == 1):
        # the bias does not vary along the summed channels (a token-mixing bias on [B, C, N]): sum first
        out = (grad.sum(dim, keepdim=True) * constant).squeeze(dim)
    else:
        out = (grad * constant).sum(dim)
    if out.isnan().any():  # 0 * inf where a non-finite constant gets no gradient: read as 0
        out = _product(grad, constant).sum(dim)
    return out


def _total(grad: Tensor, constant: Tensor, batch: int) -> Tensor:
    """<grad, b> per sample [B] (float64) of a site not laid out on the image."""
    if grad.dim() >= 2 and (grad.shape[0] % batch == 0 or batch in grad.shape[:-1]):
        return maps.per_sample(_channel_sum(grad, constant, -1), batch, torch.float64)
    return maps.per_sample(_product(grad, constant), batch, torch.float64)
