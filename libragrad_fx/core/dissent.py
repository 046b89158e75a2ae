"""Dissent suppression: a pixel readout for the layer that reads the model's input.

A linear map or convolution y = W x + b sums contributions w_ij x_j of both signs. Split them by
sign, with x+ = max(x, 0), x- = min(x, 0), W+ = max(W, 0), W- = min(W, 0) and the bias left out:

    y_pos = W+ x+ + W- x-        (every contribution >= 0)
    y_neg = W+ x- + W- x+        (every contribution <= 0)
    y_nb  = y_pos + y_neg        (the output without its bias)

The contributions that agree with the output's sign are y_conf = y_pos where y_nb >= 0, else
y_neg. Dissent suppression keeps the forward (the model's own kernel, bit for bit) and gives the
backward of the surrogate ``r * y_conf + b`` with the ratio r = y_nb / y_conf held constant: the
gradient arriving at y is unchanged, and it reaches the input only through the agreeing
contributions, each scaled by r (0 <= r <= 1).

It stays complete: y_conf is positively homogeneous of degree one in x (piecewise linear through
0), so <d~y/dx, x> = r * y_conf = y_nb exactly and y = <d~y/dx, x> + b; the bias keeps its own
share. Where y_conf = 0 the output has no contribution of its own sign, so y_nb = 0 and r = 0:
no gradient flows there, which is also what the surrogate says. An input element that is exactly
0 counts as positive (it contributes nothing either way).

The ops here are custom ops with a registered backward, so a rewritten graph keeps each as one
node through ``torch.export`` and ``torch.compile``. They are spellings of the registry's
``linear`` and ``conv`` entries: to the analysis and to FullGrad's bias discovery they are the
linear map they compute.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .wanted import record_inputs, wanted

__all__ = ["linear_dissent", "conv_dissent", "dissent_ratio", "RULE"]

RULE = "backward of (y / y_conf).detach() * y_conf: pixel gradient through the contributions agreeing with y's sign"

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def dissent_ratio(y_pos: Tensor, y_neg: Tensor) -> tuple[Tensor, Tensor]:
    """(r = y_nb / y_conf, y_nb >= 0) from the two signed sums; r = 0 where y_conf = 0.

    The sums are clamped to their sign first: a kernel that reorders its arithmetic (Winograd)
    may leave -0-ish rounding in a sum of non-negative terms, and the edge-case argument
    (y_conf = 0 implies y_nb = 0) needs the signs exact."""
    y_pos, y_neg = y_pos.clamp(min=0), y_neg.clamp(max=0)
    y_nb = y_pos + y_neg
    agree = y_nb >= 0
    conf = torch.where(agree, y_pos, y_neg)
    safe = torch.where(conf == 0, torch.ones_like(conf), conf)
    return torch.where(conf == 0, torch.zeros_like(conf), y_nb / safe), agree


def _signed_backward(grad: Tensor, x: Tensor, w: Tensor, forward, input_grad, weight_grad,
                     needs_x: bool, needs_w: bool) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """dx, dW of ``r * y_conf`` for a bilinear map ``forward(x, w)`` (its adjoints ``input_grad(g, w)``
    and ``weight_grad(x, g)``), with r detached."""
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    ratio, agree = dissent_ratio(forward(xp, wp) + forward(xn, wn), forward(xn, wp) + forward(xp, wn))
    g = grad * ratio
    g_pos = torch.where(agree, g, torch.zeros_like(g))  # reaches y_pos = W+ x+ + W- x-
    g_neg = g - g_pos                                   # reaches y_neg = W+ x- + W- x+
    dx = dw = None
    if needs_x:
        dx = torch.where(x >= 0, input_grad(g_pos, wp) + input_grad(g_neg, wn),
                         input_grad(g_pos, wn) + input_grad(g_neg, wp))
    if needs_w:
        dw = torch.where(w >= 0, weight_grad(xp, g_pos) + weight_grad(xn, g_neg),
                         weight_grad(xn, g_pos) + weight_grad(xp, g_neg))
    return dx, dw


# --- linear ------------------------------------------------------------------------------------

@torch.library.custom_op("libragrad::linear_dissent", mutates_args=())
def _linear_dissent(input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return F.linear(input, weight, bias)


@_linear_dissent.register_fake
def _linear_dissent_fake(input, weight, bias):
    return F.linear(input, weight, bias)


def _linear_setup(ctx, inputs, output):
    input, weight, bias = inputs
    record_inputs(ctx, inputs)
    ctx.save_for_backward(*((input, weight) if any(ctx.needs_input_grad[:2]) else (None, None)))
    ctx.has_bias = bias is not None


def _linear_backward(ctx, grad):
    x, w = ctx.saved_tensors
    needs = wanted(ctx)
    db = grad.reshape(-1, grad.shape[-1]).sum(0) if ctx.has_bias and needs[2] else None
    if x is None:
        return None, None, db
    x, w = x.to(grad.dtype), w.to(grad.dtype)

    def weight_grad(a: Tensor, g: Tensor) -> Tensor:
        return g.reshape(-1, g.shape[-1]).t() @ a.reshape(-1, a.shape[-1])

    dx, dw = _signed_backward(grad, x, w, F.linear, torch.matmul, weight_grad, needs[0], needs[1])
    return dx, dw, db


_linear_dissent.register_autograd(_linear_backward, setup_context=_linear_setup)
linear_dissent = torch.ops.libragrad.linear_dissent.default
"""``F.linear(input, weight, bias)`` in the forward; dissent suppression in the backward."""


# --- convolution -------------------------------------------------------------------------------

@torch.library.custom_op("libragrad::conv_dissent", mutates_args=())
def _conv_dissent(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
                  padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    return _CONV[weight.dim() - 2](input, weight, bias, stride, padding, dilation, groups)


@_conv_dissent.register_fake
def _conv_dissent_fake(input, weight, bias, stride, padding, dilation, groups):
    return _CONV[weight.dim() - 2](input, weight, bias, stride, padding, dilation, groups)


def _conv_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    record_inputs(ctx, inputs)
    ctx.save_for_backward(*((input, weight) if any(ctx.needs_input_grad[:2]) else (None, None)))
    ctx.settings = (list(stride), list(padding), list(dilation), groups)
    ctx.has_bias = bias is not None


def _conv_backward(ctx, grad):
    x, w = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.settings
    needs = wanted(ctx)
    db = grad.sum([0, *range(2, grad.dim())]) if ctx.has_bias and needs[2] else None
    if x is None:
        return None, None, db, None, None, None, None
    x, w = x.to(grad.dtype), w.to(grad.dtype)
    conv = _CONV[w.dim() - 2]
    zeros = [0] * (w.dim() - 2)

    def forward(a: Tensor, k: Tensor) -> Tensor:
        return conv(a, k, None, stride, padding, dilation, groups)

    def adjoint(g: Tensor, a: Tensor, k: Tensor, mask: list[bool]) -> tuple:
        return torch.ops.aten.convolution_backward(g, a, k, None, stride, padding, dilation, False, zeros, groups,
                                                   mask)

    dx, dw = _signed_backward(grad, x, w, forward, lambda g, k: adjoint(g, x, k, [True, False, False])[0],
                              lambda a, g: adjoint(g, a, w, [False, True, False])[1], needs[0], needs[1])
    return dx, dw, db, None, None, None, None


_conv_dissent.register_autograd(_conv_backward, setup_context=_conv_setup)
conv_dissent = torch.ops.libragrad.conv_dissent.default
"""``F.conv{1,2,3}d(input, weight, bias, stride, padding, dilation, groups)`` in the forward; dissent
suppression in the backward."""
