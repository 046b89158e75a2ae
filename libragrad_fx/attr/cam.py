"""Class activation maps on token representations: GradCAM, HiResCAM, XGradCAM.

For a layer's activations A and the target's gradient G = grad~_A f_t, both [B, positions, C]
(tokens of a transformer, prefix tokens dropped; pixels of a convolution):

* GradCAM (Selvaraju et al. 2017):  cam_n = sum_c A_nc * mean_m G_mc
* HiResCAM (Draelos & Carin 2020):  cam_n = sum_c A_nc * G_nc
* XGradCAM (Fu et al. 2020):        cam_n = sum_c A_nc * (sum_m G_mc A_mc / sum_m A_mc)

then ReLU. With LibraGrad, G is the rewritten gradient; f_t is the target (a logit, ``"prob"``, or a
callable readout: :mod:`libragrad_fx.attr.readout`). The layer is chosen by node name or module path
(``blocks.3``); by default, the last block's output. Each layer is tapped once per transformed model
(:mod:`libragrad_fx.attr.compiled`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import Tensor

from libragrad_fx.attr import maps
from libragrad_fx.attr.taps import find_layer, tap

from ._base import Attribution, Inputs, Target, as_tuple, extra_args
from .compiled import Compiled
from .readout import read

__all__ = ["GradCAM", "HiResCAM", "XGradCAM"]


class _CAM(Attribution):
    """A CAM on one layer's token representations.

    Args:
        model: a transformed GraphModule, or any ``nn.Module`` (transformed on first use).
        layer: a node name, or a module path (its output: the last node it computes); None: the
            last block's output (the last of ``blocks.0``, ``blocks.1``...), or, where the target
            reads only the class token after it (so that no patch token has a gradient there), the
            block before's.
        preset: for a plain model, the rule preset (default ``libragrad``).
        grid: the patch grid (h, w); None: read from the model's first convolution.
        relu: keep only positive evidence (the methods' definition); False for the signed map.
    """

    def __init__(self, model, layer: str | None = None, *, preset: str | None = None,
                 grid: tuple[int, int] | None = None, relu: bool = True, **transform_kwargs: Any) -> None:
        super().__init__(model, preset=preset, **transform_kwargs)
        self.layer = layer
        self.grid = grid
        self.relu = relu
        self._used: str | None = None

    def layer_node(self, inputs: Inputs, additional_forward_args: Any = None) -> fx.Node:
        """The node whose output the map is computed on (for ``layer=None``: the last block's)."""
        xs = as_tuple(inputs)
        return _tap(self.compiled(xs, extra_args(additional_forward_args)), self.layer)[1]

    @property
    def used_layer(self) -> str | None:
        """The layer the last map was computed on (the block before the last where that one had no
        gradient on its patch tokens)."""
        return self._used

    def attribute(self, inputs: Inputs, target: Target = None, additional_forward_args: Any = None) -> Tensor:
        """
        Args:
            inputs: a tensor [B, ...] or a tuple of tensors (the first 4-D one is the image).
            target: what is explained: the class per sample (None: the predicted class; an int; a list or
                tensor [B]), ``"prob"`` / :class:`~libragrad_fx.attr.Probability`, or a callable
                ``output -> Tensor [B]`` (:mod:`libragrad_fx.attr.readout`).
            additional_forward_args: further positional model inputs.

        Returns:
            The map on the layer's grid [B, h, w] (:func:`libragrad_fx.attr.maps.upsample` brings it to the image).
        """
        xs = tuple(x.detach().requires_grad_(True) for x in as_tuple(inputs))
        extra = extra_args(additional_forward_args)
        compiled = self.compiled(xs, extra)
        a, g, where = self._read(compiled, xs, extra, target, self.layer)
        self._used = self.layer
        if self.layer is None and not g.any():
            earlier = compiled.blocks[:-1]
            if earlier:  # a class-token readout follows the last block: its patch tokens have no gradient
                a, g, where = self._read(compiled, xs, extra, target, earlier[-1])
                self._used = earlier[-1]
        cam = self.combine(a, g)
        if self.relu:
            cam = cam.clamp(min=0)
        return cam.reshape(cam.shape[0], *where.grid)

    def _read(self, compiled: Compiled, xs: tuple[Tensor, ...], extra: tuple, target: Target,
              layer: str | None) -> tuple[Tensor, Tensor, maps.Layout]:
        """A layer's activations and the target's gradient there, at its spatial positions [B, n, C]."""
        module, node = _tap(compiled, layer)
        with torch.enable_grad():
            output, activations, *probe = module(*xs, *extra)
            value, _ = read(compiled, output, target, xs[0].shape[0])
            (gradient,) = torch.autograd.grad(value.sum(), activations)
        image = next((x for x in xs if x.dim() == 4), None)
        grid = self.grid or (tuple(probe[0].shape[-2:]) if probe and probe[0].dim() == 4 else None)
        where = maps.layout(activations.shape, xs[0].shape[0], grid, tuple(image.shape[-2:]) if image is not None
                            else None)
        if where is None:
            raise ValueError(f"{type(self).__name__}: the output of {node.name} has shape "
                             f"{tuple(activations.shape)}, which is not laid out on the image (grid {grid}); "
                             "choose a layer with token or spatial outputs, or pass grid=(h, w)")
        a, _ = maps.as_tokens(activations.detach(), where)
        g, _ = maps.as_tokens(gradient, where)
        return a, g, where

    @staticmethod
    def combine(a: Tensor, g: Tensor) -> Tensor:
        """[B, n, C] activations and gradients -> [B, n] map."""
        raise NotImplementedError


class GradCAM(_CAM):
    """GradCAM: channel weights are the gradient's mean over positions."""

    @staticmethod
    def combine(a: Tensor, g: Tensor) -> Tensor:
        return (a * g.mean(1, keepdim=True)).sum(-1)


class HiResCAM(_CAM):
    """HiResCAM: activations times gradients, elementwise, summed over channels."""

    @staticmethod
    def combine(a: Tensor, g: Tensor) -> Tensor:
        return (a * g).sum(-1)


class XGradCAM(_CAM):
    """XGradCAM: channel weights are the activation-weighted gradient, normalised by the activations."""

    @staticmethod
    def combine(a: Tensor, g: Tensor) -> Tensor:
        total = a.sum(1, keepdim=True)
        weights = (g * a).sum(1, keepdim=True) / torch.where(total.abs() > 1e-7, total, torch.full_like(total, 1e-7))
        return (a * weights).sum(-1)


def _tap(compiled: Compiled, layer: str | None) -> tuple[fx.GraphModule, fx.Node]:
    """(the model returning the layer's output and the patch embedding's, the layer's node), made once
    per transformed model and layer."""
    def build() -> tuple[fx.GraphModule, fx.Node]:
        node = find_layer(compiled.gm, layer, compiled.live)
        probe = compiled.probe
        return tap(compiled.gm, [node] + ([probe] if probe is not None else [])), node
    return compiled.cached(("cam", layer), build)
