"""One attribution method on a batch, on a device, at a precision: maps, targets, logits and what
the maps add up to.

The method runs on the transformed model (``libragrad_fx.attr``, captum-style). ``precision``
``float16`` / ``bfloat16`` runs the forward and the backward under ``torch.autocast`` on the
model's device (the rule ops and pruned ops are plain torch code, so they follow autocast's casts);
the maps come back in float32. For the methods meant to add up to the target logit (FullGrad,
Input x Gradient; Integrated Gradients to f(x) - f(0)) the sum is kept, so the completeness error
can be reported per sample.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["Explained", "Explainer", "PRECISIONS", "autocast", "method_key"]

PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (none for float32)."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def method_key(name: str) -> str:
    """A method's key in :data:`libragrad_fx.attr.METHODS` (the CLI's short aliases resolved)."""
    from ..attr import ALIASES as METHOD_ALIASES

    return METHOD_ALIASES.get(name, name)


@dataclass
class Explained:
    maps: Tensor
    """[b, ...] float32: shaped like the input (gradient methods) or the patch grid (CAM, rollout)."""
    target: Tensor
    """[b] the class explained."""
    value: Tensor
    """[b] f_t(x), the target logit."""
    attributed: Tensor | None = None
    """[b] float64: what the map adds up to (FullGrad: with its bias terms), for complete methods."""
    reference: Tensor | None = None
    """[b] float64: what it should add up to (f_t(x); for IG, f_t(x) - f_t(0))."""

    @property
    def completeness_error(self) -> Tensor | None:
        """|attributed - reference| / |reference| [b], where defined."""
        if self.attributed is None:
            return None
        tiny = torch.finfo(torch.float64).tiny
        return (self.attributed - self.reference).abs() / self.reference.abs().clamp_min(tiny)


class Explainer:
    """``method`` (a key of ``libragrad_fx.attr.METHODS`` or a CLI alias) on the transformed ``gm``."""

    def __init__(self, gm: nn.Module, method: str, *, device: torch.device, precision: str = "float32",
                 ig_steps: int = 32, sg_samples: int = 16, sg_stdev: float = 0.15, seed: int = 0) -> None:
        from .. import attr

        self.key = method_key(method)
        if self.key not in attr.METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(attr.METHODS)}")
        self.method = attr.METHODS[self.key](gm)
        self.device, self.precision = device, precision
        self.ig_steps, self.sg_samples, self.sg_stdev, self.seed = ig_steps, sg_samples, sg_stdev, seed

    @property
    def signed(self) -> bool:
        """Whether the maps carry a sign (gradient maps) rather than weights (CAM, rollout)."""
        return self.key in ("gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "fullgrad")

    @property
    def complete(self) -> bool:
        return self.key in ("input_x_gradient", "integrated_gradients", "fullgrad")

    def __call__(self, x: Tensor, target: Tensor | None, step: int = 0) -> Explained:
        """Explain the batch ``x`` (already on the device) for ``target`` [b] (None: the predicted
        class). ``step`` seeds SmoothGrad's noise, so a batch's maps do not depend on what ran before."""
        from .. import attr
        from ..attr._base import input_gradients

        m, key = self.method, self.key
        with autocast(self.device, self.precision):
            if key == "fullgrad":
                heat, parts = m.attribute_with_totals(x, target=target)
                return Explained(heat.float(), parts.target, parts.output.float(), parts.attributed,
                                 parts.output.double())
            if key in ("gradient", "input_x_gradient"):
                (grad,), value, index = input_gradients(m, (x,), target)
                if key == "gradient":
                    return Explained(grad.float(), index, value.float())
                heat = (x * grad).float()
                return Explained(heat, index, value.float(), heat.flatten(1).sum(1, dtype=torch.float64),
                                 value.double())
            with torch.no_grad():
                output = m.forward((x,))
            index = attr.targets(output, target)
            value = attr.target_values(output, index).float()
            if key == "integrated_gradients":
                heat, delta = m.attribute(x, target=index, n_steps=self.ig_steps, return_convergence_delta=True,
                                          internal_batch_size=x.shape[0] * 8)
                total = heat.flatten(1).sum(1, dtype=torch.float64)
                return Explained(heat.float(), index, value, total, total - delta.double())
            if key == "smoothgrad":
                generator = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + step)
                flat = x.flatten(1)
                spread = float((flat.max(1).values - flat.min(1).values).mean())
                heat = m.attribute(x, target=index, nt_samples=self.sg_samples, stdevs=self.sg_stdev * spread,
                                   generator=generator, nt_samples_batch_size=8)
                return Explained(heat.float(), index, value)
            return Explained(m.attribute(x, target=index).float(), index, value)
