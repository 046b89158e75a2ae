"""A hand-written LibraGrad, independent of the graph rewrite (docs/METHOD.md section 4, the gradient oracle).

Eager execution under a ``TorchFunctionMode`` that swaps each fused call for its LibraGrad form:
(a) attention with q, k and the additive logit bias detached, (b) LayerNorm / GroupNorm / RMSNorm
and unit-vector normalisation with the scale statistic detached, (c) GELU as x * Phi(x).detach(),
SiLU as x * sigmoid(x).detach(), sigmoid gates detached; (d) timm's SwiGLU has its product's
gradient halved by a module override. Forward values agree with the model to float rounding only:
the oracle is for gradients.
"""
from __future__ import annotations

import copy
import math
import types

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(shape), 0))
    mean = x.mean(dims, keepdim=True)
    std = torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
    y = (x - mean) / std.detach()
    return y * weight + bias if bias is not None else (y * weight if weight is not None else y)


def _group_norm(x, groups, weight=None, bias=None, eps=1e-5):
    n = x.shape[0]
    g = x.reshape(n, groups, -1)
    y = ((g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + eps).detach())
    y = y.reshape(x.shape)
    shape = [1, -1] + [1] * (x.dim() - 2)
    if weight is not None:
        y = y * weight.view(shape)
    return y + bias.view(shape) if bias is not None else y


def _rms_norm(x, shape, weight=None, eps=None):
    dims = tuple(range(-len(shape), 0))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x / torch.sqrt(x.pow(2).mean(dims, keepdim=True) + eps).detach()
    return y * weight if weight is not None else y


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        gate = 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    else:
        gate = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    return x * gate.detach()


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = (q.detach() @ k.detach().transpose(-2, -1)) * scale
    if attn_mask is not None:
        logits = logits + attn_mask.detach()
    if is_causal:
        n, m = logits.shape[-2:]
        logits = logits.masked_fill(~torch.ones(n, m, dtype=torch.bool).tril(), float("-inf"))
    return logits.softmax(-1) @ v


def _normalize(x, p=2.0, dim=1, eps=1e-12, out=None):
    return x / x.norm(p, dim, keepdim=True).clamp_min(eps).detach()


_SWAP = {
    F.layer_norm: _layer_norm, F.group_norm: _group_norm, F.rms_norm: _rms_norm,
    F.gelu: _gelu, torch._C._nn.gelu: _gelu,
    F.silu: lambda x, inplace=False: x * torch.sigmoid(x).detach(),
    F.scaled_dot_product_attention: _sdpa, torch._C._nn.scaled_dot_product_attention: _sdpa,
    F.normalize: _normalize,
    torch.sigmoid: lambda x: torch.sigmoid(x).detach(),  # sigmoid is a gate in these models
}


class OracleMode(TorchFunctionMode):
    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        swap = _SWAP.get(func)
        return swap(*args, **kwargs) if swap is not None else func(*args, **kwargs)


def _swiglu_forward(self, x):
    gate = self.act(self.fc1_g(x))
    value = self.fc1_x(x)
    x = 0.5 * (gate.detach() * value + gate * value.detach())  # (d): the product's gradient halved
    x = self.norm(self.drop(x))
    return self.drop(self.fc2(x))


def _glu_mlp_forward(self, x):
    a, b = self.fc1(x).chunk(2, dim=self.chunk_dim)
    value, gate = (a, self.act(b)) if self.gate_last else (b, self.act(a))
    x = 0.5 * (gate.detach() * value + gate * value.detach())  # (d), chunked spelling
    x = self.norm(self.drop1(x))
    return self.drop2(self.fc2(x))


def oracle_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose gated MLPs (SwiGLU, GluMlp) halve their product's gradient."""
    from timm.layers.mlp import GluMlp, SwiGLU

    clone = copy.deepcopy(model)
    for module in clone.modules():
        if isinstance(module, SwiGLU):
            module.forward = types.MethodType(_swiglu_forward, module)
        elif isinstance(module, GluMlp):
            module.forward = types.MethodType(_glu_mlp_forward, module)
    return clone


def oracle_gradient(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    clone = oracle_model(model)
    x = x.detach().clone().requires_grad_(True)
    with OracleMode():
        out = clone(x)
    (grad,) = torch.autograd.grad(out[:, target].sum(), x)
    return grad
