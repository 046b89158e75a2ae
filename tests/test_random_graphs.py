"""Random networks composed from a vocabulary of constructs: the rules are general, not per model.

Hypothesis draws a stack of blocks over tokens (batch, tokens, dim): linear and convolution, the
norms (fused and hand-written), the activations, attention variants, gated products, residual
adds, concatenations, divisions by norms and softmax-weighted sums. Nothing carries a bias, so
under ``libragrad`` Input x Gradient must be complete: sum(x * grad) = f(x). Each network must
also keep its forward bit for bit, report nothing unclassified, and be locally complete at every node.
"""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import libragrad_fx as lf

TOKENS, DIM, CLASSES = 5, 8, 3


def _linear(d_in: int = DIM, d_out: int = DIM) -> nn.Linear:
    return nn.Linear(d_in, d_out, bias=False)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = _linear()

    def forward(self, x):
        return self.fc(x)


class TokenConv(nn.Module):
    """A convolution over the token axis (channels first in between)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(DIM, DIM, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class Norm(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.rand(DIM) + 0.5)
        self.layer_norm = nn.LayerNorm(DIM, bias=False)
        self.rms_norm = nn.RMSNorm(DIM)
        self.group_norm = nn.GroupNorm(2, DIM, affine=False)

    def forward(self, x):
        if self.kind == "layer_norm":
            return self.layer_norm(x)
        if self.kind == "rms_norm":
            return self.rms_norm(x)
        if self.kind == "group_norm":  # channels first, as in a CNN
            return self.group_norm(x.transpose(1, 2)).transpose(1, 2)
        if self.kind == "layer_norm_by_hand":
            centred = x - x.mean(-1, keepdim=True)
            return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight
        if self.kind == "rms_norm_by_hand":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight
        if self.kind == "f_normalize":
            return F.normalize(x, dim=-1) * self.weight
        raise ValueError(self.kind)


NORMS = ("layer_norm", "rms_norm", "group_norm", "layer_norm_by_hand", "rms_norm_by_hand", "f_normalize")


class _LinearThen(nn.Module):
    """A linear layer followed by the construct ``kind`` (subclasses spell it out)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.fc = _linear()


class Activation(_LinearThen):
    def forward(self, x):
        h = self.fc(x)
        k = self.kind
        if k == "quick_gelu":
            return h * torch.sigmoid(1.702 * h)
        if k == "gelu_by_hand":
            return 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
        if k == "gelu_tanh":
            return F.gelu(h, approximate="tanh")
        if k == "tanh":
            return torch.tanh(h)
        if k == "squared_relu":  # MetaFormer's head: a product of degree 2
            return torch.square(F.relu(h))
        return getattr(F, k)(h)


# Zero-preserving activations only: f(0) = 0, so the network stays bias-free.
ACTIVATIONS = ("gelu", "gelu_tanh", "silu", "hardswish", "mish", "elu", "relu", "leaky_relu", "quick_gelu",
               "gelu_by_hand", "tanh", "relu6", "selu", "squared_relu")


class Attention(nn.Module):
    def __init__(self, kind: str, heads: int = 2) -> None:
        super().__init__()
        self.kind, self.heads = kind, heads
        self.qkv = _linear(DIM, 3 * DIM)
        self.proj = _linear()
        self.rel_bias = nn.Parameter(torch.randn(heads, TOKENS, TOKENS))
        self.talk = nn.Parameter(torch.randn(heads, heads) / heads)
        self.temperature = nn.Parameter(torch.rand(heads, 1, 1) + 0.5)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        kind = self.kind
        if kind == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        elif kind == "sdpa_causal":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif kind == "manual_rel_bias":
            attn = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5 + self.rel_bias).softmax(-1)
            out = attn @ v
        elif kind == "talking_heads":  # CaiT: mix the heads before and after the softmax
            logits = torch.einsum("bhqk,hg->bgqk", q @ k.transpose(-2, -1), self.talk)
            out = torch.einsum("bhqk,hg->bgqk", logits.softmax(-1), self.talk) @ v
        elif kind == "cross_covariance":  # XCiT: attention over channels, L2-normalised q and k
            qn, kn = F.normalize(q, dim=-2), F.normalize(k, dim=-2)
            attn = (qn.transpose(-2, -1) @ kn * self.temperature).softmax(-1)
            out = (attn @ v.transpose(-2, -1)).transpose(-2, -1)
        elif kind == "class_attention":  # CaiT: only the first token queries
            attn = (q[:, :, :1] @ k.transpose(-2, -1) * 0.5).softmax(-1)
            out = torch.cat([attn @ v, v[:, :, 1:]], dim=2)
        else:
            raise ValueError(kind)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


ATTENTIONS = ("sdpa", "sdpa_causal", "manual_rel_bias", "talking_heads", "cross_covariance", "class_attention")


class Gate(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.up = _linear(DIM, 2 * DIM)
        self.down = _linear()
        self.spatial = nn.Parameter(torch.randn(TOKENS, TOKENS) / TOKENS)

    def forward(self, x):
        a, b = self.up(x).chunk(2, dim=-1)
        k = self.kind
        if k == "swiglu":
            h = F.silu(a) * b
        elif k == "geglu":
            h = F.gelu(a) * b
        elif k == "glu":
            h = F.glu(self.up(x), dim=-1)
        elif k == "bilinear":  # a product of two streams, no activation
            h = a * b
        elif k == "squeeze_excite":
            h = a * torch.sigmoid(self.down(a.mean(1, keepdim=True)))
        elif k == "spatial_gating":  # gMLP: u * (W v) with W over tokens
            h = a * (self.spatial @ b)
        elif k == "nested":  # focal modulation: a product feeding a product
            h = (a * b) * F.gelu(self.down(a))
        else:
            raise ValueError(k)
        return self.down(h)


GATES = ("swiglu", "geglu", "glu", "bilinear", "squeeze_excite", "spatial_gating", "nested")


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = _linear(), _linear()
        self.merge = _linear(2 * DIM, DIM)

    def forward(self, x):
        return self.merge(torch.cat([F.gelu(self.a(x)), self.b(x)], dim=-1))


class DivideByNorm(_LinearThen):
    def forward(self, x):
        h = self.fc(x)
        if self.kind == "l2":
            return h / h.norm(dim=-1, keepdim=True)
        if self.kind == "l1":
            return h / (h.abs().sum(-1, keepdim=True) + 1e-6)
        if self.kind == "std":
            return h / h.std(-1, keepdim=True)
        raise ValueError(self.kind)


class SoftmaxPool(nn.Module):
    """Softmax-weighted sum over tokens (attention pooling with a learned scorer)."""

    def __init__(self) -> None:
        super().__init__()
        self.score = nn.Linear(DIM, 1, bias=False)

    def forward(self, x):
        weights = self.score(x).softmax(dim=1)
        return x + (weights * x).sum(1, keepdim=True)


class Residual(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)


VOCABULARY: dict[str, Callable[[str], nn.Module]] = {
    **{f"norm:{k}": (lambda k=k: Norm(k)) for k in NORMS},
    **{f"act:{k}": (lambda k=k: Activation(k)) for k in ACTIVATIONS},
    **{f"attn:{k}": (lambda k=k: Attention(k)) for k in ATTENTIONS},
    **{f"gate:{k}": (lambda k=k: Gate(k)) for k in GATES},
    **{f"div:{k}": (lambda k=k: DivideByNorm(k)) for k in ("l2", "l1", "std")},
    "linear": Linear, "conv": TokenConv, "concat": Concat, "softmax_pool": SoftmaxPool,
}


class Network(nn.Module):
    def __init__(self, blocks: list[tuple[str, bool]]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[Residual(VOCABULARY[name]()) if residual else VOCABULARY[name]()
                                      for name, residual in blocks])
        self.head = nn.Linear(DIM, CLASSES, bias=False)

    def forward(self, x):
        return self.head(self.blocks(x).mean(1))


networks = st.tuples(st.lists(st.tuples(st.sampled_from(sorted(VOCABULARY)), st.booleans()), min_size=1, max_size=5),
                     st.integers(0, 2**16))


def build(blocks: list[tuple[str, bool]], seed: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = Network(blocks).eval()
    return model, torch.randn(2, TOKENS, DIM)


def ixg_error(model: nn.Module, x: torch.Tensor) -> float:
    """|sum(x * grad) - f(x)| / |f(x)| for each sample's largest logit (no cancellation to zero)."""
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    target = out.detach().abs().argmax(1)
    chosen = out.gather(1, target[:, None])[:, 0]
    (grad,) = torch.autograd.grad(chosen.sum(), x)
    total = (x.detach() * grad).flatten(1).sum(1)
    return float(((total - chosen.detach()).abs() / chosen.detach().abs()).max())


def check(blocks: list[tuple[str, bool]], seed: int, capture: str) -> None:
    model, x = build(blocks, seed)
    gm = lf.transform(model, x, capture=capture)
    report = gm.libragrad_report
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    assert not report.unclassified, [str(u) for u in report.unclassified]
    local = lf.node_completeness(gm, x)
    assert local.checks and not local.violations, str(local)
    error = ixg_error(gm, x)
    assert error < 1e-4, f"IxG completeness {error:.2e}"


SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None)


@settings(max_examples=30, **SETTINGS)
@given(networks)
def test_random_network_is_exact_and_complete_fx(network):
    blocks, seed = network
    check(blocks, seed, "fx")


@settings(max_examples=8, **SETTINGS)
@given(networks)
def test_random_network_is_exact_and_complete_export(network):
    blocks, seed = network
    check(blocks, seed, "export")


@pytest.mark.parametrize("name", sorted(VOCABULARY))
def test_every_construct_alone(name):
    """Each construct on its own, with and without a residual, so no vocabulary entry goes untested."""
    for residual in (False, True):
        check([(name, residual)], 0, "fx")
