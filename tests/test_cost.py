"""What an explanation costs, counted (not timed): FLOPs and bytes saved for the backward."""
from __future__ import annotations

import contextlib

import pytest
import torch
from archs import build

import libragrad_fx as lf
from libragrad_fx.bench.cost import measure
from libragrad_fx.core.frozen import frozen_parameters

TARGET = 1
FLOAT = 4  # bytes


def ixg(model, x):
    def call():
        xx = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xx)[:, TARGET].sum(), xx)
        return grad
    return call


def costs(model, gm, x, frozen: bool):
    state = list(model.parameters()) + list(model.buffers())
    with frozen_parameters(model) if frozen else contextlib.nullcontext():
        return measure(ixg(model, x), state), measure(ixg(gm, x), state)


def vit_shape(model, x):
    """(blocks, tokens, width, heads, head width) of a timm ViT."""
    blocks, width = len(model.blocks), model.embed_dim
    tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    heads = model.blocks[0].attn.num_heads
    return blocks, tokens, width, heads, width // heads


@pytest.mark.parametrize("frozen", [True, False])
def test_flops_follow_the_pruned_graph(frozen):
    """Same forward FLOPs (same kernels); the backward saves exactly the pruned products: per block
    two thirds of the qkv input gradient (dq, dk columns) and three of the five attention products
    (the flash backward's dS V^T, dS K, dS^T Q; A = softmax(q k^T) is recomputed, dv = A^T dO kept)."""
    model, x = build("vit")
    gm = lf.transform(model, x)
    vanilla, libragrad = costs(model, gm, x, frozen)
    assert libragrad.forward_flops == vanilla.forward_flops > 0
    blocks, n, d, h, e = vit_shape(model, x)
    rows = x.shape[0] * n
    qkv = 2 * rows * (2 * d) * d
    attention = 3 * 2 * x.shape[0] * h * n * n * e
    assert vanilla.backward_flops - libragrad.backward_flops == blocks * (qkv + attention)


def test_input_gradients_cost_the_same_whether_parameters_require_grad():
    """A Python rule backward computes no parameter gradient that autograd.grad(f, x) does not read."""
    model, x = build("eva02")
    gm = lf.transform(model, x)
    frozen = costs(model, gm, x, True)
    free = costs(model, gm, x, False)
    assert free[1].backward_flops == frozen[1].backward_flops
    assert free[0].backward_flops == frozen[0].backward_flops


def test_libragrad_keeps_less_for_the_backward_than_vanilla():
    """With parameters frozen, LibraGrad keeps neither a LayerNorm's input (its rule reads rstd only)
    nor the attention output (dv = A^T dO does not read it), which vanilla keeps: at least
    (2 * blocks + 1) + blocks activations of tokens x width floats less."""
    model, x = build("vit")
    gm = lf.transform(model, x)
    vanilla, libragrad = costs(model, gm, x, True)
    blocks, n, d, _, _ = vit_shape(model, x)
    activation = x.shape[0] * n * d * FLOAT
    assert vanilla.saved_bytes - libragrad.saved_bytes >= (3 * blocks + 1) * activation
    assert libragrad.saved_bytes <= 0.9 * vanilla.saved_bytes


def test_a_call_with_several_backward_passes_reports_its_largest():
    model, x = build("vit")
    state = list(model.parameters()) + list(model.buffers())
    with frozen_parameters(model):
        once = measure(ixg(model, x), state)
        twice = measure(lambda: (ixg(model, x)(), ixg(model, x[:1])()), state)
    assert twice.saved_bytes == once.saved_bytes
    assert twice.forward_flops == once.forward_flops * 3 // 2
