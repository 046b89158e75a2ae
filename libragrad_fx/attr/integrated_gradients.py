"""Integrated Gradients (Sundararajan et al. 2017) on the rewritten backward.

    IG_i(x) = (x_i - x'_i) * integral_0^1 grad~_i f(x' + a (x - x')) da

approximated by a quadrature over ``n_steps`` points (captum's rules: Riemann left/right/middle/
trapezoid, Gauss-Legendre). With the vanilla gradient the path integral sums to f(x) - f(x')
(the fundamental theorem of calculus); the rewritten gradient is not the gradient of a function,
so with LibraGrad that sum carries no such promise.
"""
from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from ._base import Attribution, Inputs, Target, as_tuple, extra_args, input_gradients, like, repeat_batch
from .readout import repeat, resolve

__all__ = ["IntegratedGradients", "quadrature", "METHODS"]

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
Baselines = Union[None, float, Tensor, tuple]


def quadrature(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """(points a_k in [0, 1], weights w_k) with integral_0^1 g(a) da ~ sum_k w_k g(a_k)."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()
    if method not in METHODS:
        raise ValueError(f"unknown integration method {method!r}; valid: {', '.join(METHODS)}")
    if n_steps < 2:
        raise ValueError(f"{method} needs n_steps >= 2, got {n_steps}")
    weights = [1.0 / n_steps] * n_steps
    rule = method.split("_")[1]
    if rule == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        points = torch.linspace(0, 1, n_steps)
    elif rule == "left":
        points = torch.linspace(0, 1 - 1 / n_steps, n_steps)
    elif rule == "middle":
        points = torch.linspace(1 / (2 * n_steps), 1 - 1 / (2 * n_steps), n_steps)
    else:
        points = torch.linspace(1 / n_steps, 1, n_steps)
    return points.tolist(), weights


def _baselines(baselines: Baselines, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    if baselines is None:
        return tuple(torch.zeros_like(x) for x in inputs)
    values = baselines if isinstance(baselines, tuple) else (baselines,) * len(inputs)
    if len(values) != len(inputs):
        raise ValueError(f"{len(values)} baselines for {len(inputs)} inputs")
    return tuple(torch.as_tensor(b, dtype=x.dtype, device=x.device).expand_as(x) for b, x in zip(values, inputs))


class IntegratedGradients(Attribution):
    """Integrated Gradients along the straight path from a baseline to the input."""

    def attribute(self, inputs: Inputs, baselines: Baselines = None, target: Target = None,
                  additional_forward_args: Any = None, n_steps: int = 50, method: str = "gausslegendre",
                  internal_batch_size: int | None = None, return_convergence_delta: bool = False):
        """
        Args:
            inputs: a tensor [B, ...] or a tuple of tensors, each attributed.
            baselines: x' per input: None (zeros), a number, or a tensor broadcastable to the input.
            target: the class per sample (None: the class predicted at ``inputs``), ``"prob"`` /
                :class:`~libragrad_fx.attr.Probability`, or a callable ``output -> Tensor [B]`` (called
                once per path point, on the B samples' outputs there).
            additional_forward_args: further positional model inputs, not attributed.
            n_steps: quadrature points along the path.
            method: ``gausslegendre`` (default) or ``riemann_{left,right,middle,trapezoid}``.
            internal_batch_size: rows per forward pass (path points times samples); None: all at once.
            return_convergence_delta: also return sum(IG) - (f(x) - f(x')) per sample (f: the target).

        Returns:
            Tensors shaped like ``inputs``, and the delta [B] if asked for.
        """
        xs = tuple(x.detach() for x in as_tuple(inputs))
        extra = extra_args(additional_forward_args)
        bases = _baselines(baselines, xs)
        batch = xs[0].shape[0]
        # the class predicted at the input is explained all along the path
        target = resolve(target, lambda: self.output(xs, extra), batch, xs[0].device)
        points, weights = quadrature(method, n_steps)
        per_chunk = n_steps if internal_batch_size is None else max(1, internal_batch_size // batch)
        total = [torch.zeros_like(x) for x in xs]
        for start in range(0, n_steps, per_chunk):
            alphas = points[start:start + per_chunk]
            scaled = tuple(torch.cat([b + a * (x - b) for a in alphas]) for x, b in zip(xs, bases))
            steps = len(alphas)
            grads, _, _ = input_gradients(self, scaled, repeat(target, steps), repeat_batch(extra, steps), batch)
            w = torch.tensor(weights[start:start + per_chunk], dtype=xs[0].dtype, device=xs[0].device)
            for i, g in enumerate(grads):
                g = g.reshape(steps, *xs[i].shape)
                total[i] = total[i] + (g * w.reshape(-1, *[1] * xs[i].dim())).sum(0)
        attributions = tuple(t * (x - b) for t, x, b in zip(total, xs, bases))
        result = like(inputs, attributions)
        if not return_convergence_delta:
            return result
        end, _ = self.value(xs, target, extra, batch)
        start_value, _ = self.value(bases, target, extra, batch)
        attributed = sum(a.flatten(1).sum(1) for a in attributions)
        return result, attributed - (end - start_value)

