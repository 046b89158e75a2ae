"""Gradient (saliency) and Input x Gradient, on the rewritten backward (docs/METHOD.md section 5).

With LibraGrad, Input x Gradient is complete on a model without biases: sum(x * grad~_x f) = f(x),
f the target (a logit, or a traced readout: :mod:`libragrad_fx.attr.readout`).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ._base import Attribution, Inputs, Target, as_tuple, extra_args, input_gradients, like

__all__ = ["Gradient", "InputXGradient"]


class Gradient(Attribution):
    """grad~_x f_t(x): the gradient of the target (a logit, or a readout) with respect to each input."""

    def attribute(self, inputs: Inputs, target: Target = None, additional_forward_args: Any = None,
                  abs: bool = False) -> Tensor | tuple[Tensor, ...]:
        """
        Args:
            inputs: a tensor [B, ...] or a tuple of tensors, each attributed.
            target: what is explained: the class per sample (None: the predicted class; an int; a list or
                tensor [B]), ``"prob"`` / :class:`~libragrad_fx.attr.Probability`, or a callable
                ``output -> Tensor [B]`` (:mod:`libragrad_fx.attr.readout` states the contract).
            additional_forward_args: further positional model inputs, not attributed.
            abs: return |grad| (captum's Saliency default) instead of the signed gradient.

        Returns:
            Tensors shaped like ``inputs``.
        """
        xs = as_tuple(inputs)
        grads, _, _ = input_gradients(self, xs, target, extra_args(additional_forward_args))
        return like(inputs, tuple(g.abs() if abs else g for g in grads))


class InputXGradient(Attribution):
    """x * grad~_x f_t(x), elementwise; sums to f_t(x) on a bias-free LibraGrad model."""

    def attribute(self, inputs: Inputs, target: Target = None,
                  additional_forward_args: Any = None) -> Tensor | tuple[Tensor, ...]:
        """Args as :meth:`Gradient.attribute`. Returns tensors shaped like ``inputs``."""
        xs = as_tuple(inputs)
        grads, _, _ = input_gradients(self, xs, target, extra_args(additional_forward_args))
        return like(inputs, tuple(x.detach() * g for x, g in zip(xs, grads)))
