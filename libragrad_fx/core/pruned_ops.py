"""Custom ops whose backward skips the work the LibraGrad rules pruned.

Once the score path is cut, the backward of a fused kernel still pays for it: a fused qkv
projection multiplies the whole 3d-wide output gradient (two thirds of it zeros) and a fused
attention kernel computes dq and dk only to throw them away. These ops call the very kernel the
model called in the forward (same values, bit for bit) and register a backward that computes only
what can be non-zero:

* ``libragrad::linear_cols(x, W, b, live)``: ``F.linear(x, W, b)``; backward through the output
  features in ``live`` only, ``dx = dY[:, live] @ W[live]``. The dead features' gradient is zero
  by construction (:mod:`libragrad_fx.core.prune` proves it from the graph), so this is exact.
* ``libragrad::attention(q, k, v, mask, ...)``: ``F.scaled_dot_product_attention``; the attention
  weights A = softmax(q k^T s + mask) are constants (the attention rule, docs/METHOD.md section 2), so the
  backward is ``dv = A^T dO`` alone, with A recomputed from the saved q and k: no dq, dk, dmask.

Parameter gradients are computed when autograd asks for them at forward time
(``ctx.needs_input_grad``); attribution methods that want input gradients only should run under
:func:`libragrad_fx.core.frozen.frozen_parameters`, which also keeps the forward from saving inputs for
weight gradients nobody will read.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .wanted import record_inputs, wanted

__all__ = ["linear_cols", "attention", "live_ranges", "read_by_backward"]


def live_ranges(flat: Sequence[int]) -> list[tuple[int, int]]:
    """``[s0, e0, s1, e1, ...]`` -> ``[(s0, e0), (s1, e1), ...]``: the half-open live feature ranges."""
    return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]


# --- linear with column-sparse gradient --------------------------------------------------------

@torch.library.custom_op("libragrad::linear_cols", mutates_args=())
def linear_cols(input: Tensor, weight: Tensor, bias: Optional[Tensor], live: Sequence[int]) -> Tensor:
    """``F.linear`` forward; backward through the output features ``live`` (flat start/stop pairs) only."""
    return F.linear(input, weight, bias)


@linear_cols.register_fake
def _linear_cols_fake(input, weight, bias, live):
    return F.linear(input, weight, bias)  # on fake tensors: the kernel's own shape and strides


def _linear_cols_setup(ctx, inputs, output):
    input, weight, bias, live = inputs
    record_inputs(ctx, inputs)
    needs = ctx.needs_input_grad
    # the input is read by the weight gradient only: keep it alive only if that may be asked for
    ctx.save_for_backward(input if needs[1] else None, weight)
    ctx.live = live_ranges(live)
    ctx.has_bias = bias is not None


def _linear_cols_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    # under autocast the forward multiplied in the gradient's (lower) dtype: the backward does too,
    # also when it runs outside autocast
    weight = weight.to(grad.dtype)
    needs = wanted(ctx)  # a weight that requires grad, in a backward asked for inputs only: no dW
    dx = dw = db = None
    if needs[0]:
        for start, stop in ctx.live:
            part = torch.matmul(grad[..., start:stop], weight[start:stop])
            dx = part if dx is None else dx.add_(part)
    if needs[1]:
        dw = torch.zeros_like(weight)
        rows = input.reshape(-1, input.shape[-1]).to(grad.dtype)
        for start, stop in ctx.live:
            dw[start:stop] = grad[..., start:stop].reshape(-1, stop - start).t() @ rows
    if ctx.has_bias and needs[2]:
        db = grad.new_zeros(weight.shape[0])
        lead = tuple(range(grad.dim() - 1))
        for start, stop in ctx.live:
            db[start:stop] = grad[..., start:stop].sum(lead)
    return dx, dw, db, None


linear_cols.register_autograd(_linear_cols_backward, setup_context=_linear_cols_setup)


# --- attention with constant weights ------------------------------------------------------------

@torch.library.custom_op("libragrad::attention", mutates_args=())
def attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
              enable_gqa: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention`` forward; backward ``dv = A^T dO`` (q, k, mask are constants)."""
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                          is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


@attention.register_fake
def _attention_fake(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
    # on fake tensors: the shape and strides of the backend the device would pick (CPU flash
    # attention returns a transposed layout, and compiled code checks strides)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                          is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


def _attention_setup(ctx, inputs, output):
    query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa = inputs
    if dropout_p != 0.0:
        raise RuntimeError("libragrad::attention: dropout_p must be 0 (a dropped-out attention map cannot be "
                           "recomputed in the backward); put the model in eval mode")
    record_inputs(ctx, inputs)
    # dv = A^T dO needs A: q and k (and the mask) recompute it; nothing else of the score path is kept
    ctx.save_for_backward(*((query, key, attn_mask) if ctx.needs_input_grad[2] else (None, None, None)))
    ctx.settings = (is_causal, scale, enable_gqa, value.shape[-3])


def attention_weights(query: Tensor, key: Tensor, attn_mask: Optional[Tensor], is_causal: bool,
                      scale: Optional[float], enable_gqa: bool) -> Tensor:
    """A = softmax(q k^T s + mask), as F.scaled_dot_product_attention defines it (heads of k repeated for GQA)."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
    s = query.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(query * s, key.transpose(-2, -1))  # scale the smaller operand (L x E, not L x S)
    if is_causal:
        n, m = scores.shape[-2:]
        keep = torch.ones(n, m, dtype=torch.bool, device=scores.device).tril_()
        scores.masked_fill_(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores.masked_fill_(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    low = scores.dtype in (torch.float16, torch.bfloat16)
    return torch.softmax(scores, -1, dtype=torch.float32 if low else None).to(scores.dtype)


def _attention_backward(ctx, grad):
    query, key, attn_mask = ctx.saved_tensors
    is_causal, scale, enable_gqa, kv_heads = ctx.settings
    dv = None
    if wanted(ctx)[2]:
        if query.device.type == "cpu" and query.dim() == 4 and query.shape[:2] == key.shape[:2]:
            # one sample at a time: q and k are views into a fused qkv and dO a transposed view, which
            # a 3-d product reads in place (a 4-d one folds batch and heads, copying each of them)
            dv = torch.empty(grad.shape[:2] + key.shape[2:3] + grad.shape[3:], dtype=grad.dtype, device=grad.device)
            for b in range(query.shape[0]):
                weights = attention_weights(query[b], key[b], _sample(attn_mask, b), is_causal, scale, False).to(grad.dtype)
                torch.matmul(weights.transpose(-2, -1), grad[b], out=dv[b])
        else:
            weights = attention_weights(query, key, attn_mask, is_causal, scale, enable_gqa).to(grad.dtype)
            dv = torch.matmul(weights.transpose(-2, -1), grad)
        if dv.shape[-3] != kv_heads:  # GQA: each key/value head served a group of query heads
            dv = dv.unflatten(-3, (kv_heads, -1)).sum(-3)
    return None, None, dv, None, None, None, None, None


def _sample(mask: Optional[Tensor], b: int) -> Optional[Tensor]:
    """Sample ``b`` of a mask broadcastable to (batch, heads, L, S)."""
    if mask is None or mask.dim() < 4:
        return mask
    return mask[b] if mask.shape[0] > 1 else mask[0]


attention.register_autograd(_attention_backward, setup_context=_attention_setup)

OPS = {"linear": torch.ops.libragrad.linear_cols.default, "attention": torch.ops.libragrad.attention.default}


def read_by_backward(target, args: tuple, output: Tensor) -> Optional[Tensor]:
    """Which output elements the op's backward reads (1) or ignores (0), broadcastable to ``output``;
    None when it reads all of them. A local check of y = J~x + b holds on these elements only, and
    only these matter: the others carry no gradient (that is why they were pruned)."""
    if target is not OPS["linear"]:
        return None
    mask = torch.zeros(output.shape[-1], dtype=output.dtype, device=output.device)
    for start, stop in live_ranges(args[3]):
        mask[start:stop] = 1
    return mask


# --- autocast ---------------------------------------------------------------------------------

_LIB = torch.library.Library("libragrad", "IMPL")


def _lower_precision_under_autocast(name: str) -> None:
    """Give ``libragrad::name`` autocast's lower-precision cast, as the ATen op it stands for gets
    (F.linear, F.scaled_dot_product_attention): floating inputs to the autocast dtype in effect. A
    custom op has no autocast kernel, and below its autograd wrapper autocast no longer applies, so a
    float32 mask or weight would otherwise reach the kernel uncast and round differently from the
    model's own forward."""
    for device in ("cpu", "cuda"):
        key = "Autocast" + torch._C._dispatch_key_for_device(device)
        op = getattr(torch.ops.libragrad, name).default

        def kernel(_, *args, device=device, key=key, op=op):
            low = torch.get_autocast_dtype(device)
            # autocast's eligibility: floating, on its device, not float64
            cast = [a.to(low) if isinstance(a, Tensor) and a.is_floating_point() and a.dtype != torch.float64
                    and a.device.type == device else a for a in args]
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))):
                return op(*cast)

        _LIB.impl(name, kernel, key, with_keyset=True)


for _name in ("attention", "linear_cols"):
    _lower_precision_under_autocast(_name)
