"""Backward pruning: the same forward and the same gradient, with the pruned work skipped."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from archs import ARCHS, build

import libragrad_fx as lf
from libragrad_fx.core.frozen import frozen_parameters

TARGET = 1
ATTENTION_ARCHS = [a for a in ARCHS if a != "mixer"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def input_grad(model, x):
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, TARGET].sum(), x)
    return grad


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_pruned_model_has_the_same_forward_and_gradient(arch, capture):
    model, x = build(arch)
    pruned = lf.transform(model, x, capture=capture)
    reference = lf.transform(model, x, capture=capture, prune=False)
    with torch.no_grad():
        assert torch.equal(pruned(x), model(x))
    assert rel(input_grad(pruned, x), input_grad(reference, x)) < 1e-6
    with frozen_parameters(model):
        assert rel(input_grad(pruned, x), input_grad(reference, x)) < 1e-6
    kinds = {row.rule.split(" ")[0] for row in pruned.libragrad_report.backward}
    if arch == "mixer":
        assert not pruned.libragrad_report.backward  # no attention, no projection with dead features
    else:  # every layer's attention and its fused qkv (or kv) projection
        assert kinds == {"dv", "dx"}, pruned.libragrad_report.backward
    assert not reference.libragrad_report.backward


class Sliced(nn.Module):
    """A projection whose middle third feeds nothing live (a user's detach), and a kv projection
    whose keys only score."""

    def __init__(self, dim: int = 12) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 3 * dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.latent = nn.Parameter(torch.randn(1, 1, dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        a, b, c = self.proj(x).chunk(3, dim=-1)
        h = a + c + b.detach()
        k, v = self.kv(h).unflatten(-1, (2, -1)).unbind(-2)
        q = self.latent.expand(x.shape[0], -1, -1)
        pooled = F.scaled_dot_product_attention(q, k, v)
        return self.head(pooled[:, 0])


def test_live_features_are_found_through_any_rearrangement():
    torch.manual_seed(0)
    model = Sliced().eval()
    x = torch.randn(2, 5, 12)
    gm = lf.transform(model, x)
    rows = {row.node: row for row in gm.libragrad_report.backward}
    assert "[0, 12), [24, 36) of 36" in rows["proj"].why
    assert "[12, 24) of 24" in rows["kv"].why
    reference = lf.transform(model, x, prune=False)
    assert torch.equal(gm(x), model(x))
    # parameter gradients too: zero exactly where the features are dead, equal elsewhere
    for m in (gm, reference):
        m.zero_grad()
        xx = x.clone().requires_grad_(True)
        m(xx)[:, 0].sum().backward()
    for (name, p), q in zip(gm.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=1e-7), name
    assert gm.proj.weight.grad[12:24].abs().max() == 0


def test_no_example_inputs_prunes_attention_and_says_why_projections_were_not():
    model, x = build("vit")
    gm = lf.transform(model)
    kinds = {row.rule.split(" ")[0] for row in gm.libragrad_report.backward}
    assert kinds == {"dv"}
    assert any("example inputs" in note for note in gm.libragrad_report.notes)
    assert rel(input_grad(gm, x), input_grad(lf.transform(model, x, prune=False), x)) < 1e-6


@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "float_mask", "gqa", "scale"])
def test_attention_op_backward_is_dv_through_constant_weights(case):
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 7, 8)
    v = torch.randn(2, 4, 7, 5, requires_grad=True)
    kwargs: dict = {}
    if case == "causal":
        k, v = k[:, :, :6], v.detach()[:, :, :6].requires_grad_(True)
        kwargs["is_causal"] = True
    elif case == "bool_mask":
        kwargs["attn_mask"] = torch.rand(6, 7) > 0.3
        kwargs["attn_mask"][:, 0] = True
    elif case == "float_mask":
        kwargs["attn_mask"] = torch.randn(2, 1, 6, 7)
    elif case == "gqa":
        k, v = k[:, :2], v.detach()[:, :2].requires_grad_(True)
        kwargs["enable_gqa"] = True
    elif case == "scale":
        kwargs["scale"] = 0.3
    expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
    got = torch.ops.libragrad.attention(q, k, v, kwargs.get("attn_mask"), 0.0, kwargs.get("is_causal", False),
                                        kwargs.get("scale"), kwargs.get("enable_gqa", False))
    assert torch.equal(got, expected)
    grad = torch.randn_like(expected)
    (want,) = torch.autograd.grad(expected, v, grad)
    (have,) = torch.autograd.grad(got, v, grad)
    assert rel(have, want) < 1e-6


def test_layer_norm_and_gelu_backwards_match_their_rules():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, requires_grad=True)
    w = torch.randn(16, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    grad = torch.randn(3, 5, 16)
    y = torch.ops.libragrad.layer_norm(x, [16], w, b, 1e-5)
    assert torch.equal(y, F.layer_norm(x, [16], w, b, 1e-5))
    mean = x.mean(-1, keepdim=True)
    rule = (x - mean) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5).detach() * w + b
    for have, want in zip(torch.autograd.grad(y, (x, w, b), grad), torch.autograd.grad(rule, (x, w, b), grad)):
        assert rel(have, want) < 1e-6
    y = torch.ops.libragrad.gelu(x, "none")
    rule = x * (0.5 * (1 + torch.erf(x / math.sqrt(2)))).detach()
    assert rel(torch.autograd.grad(y, x, grad)[0], torch.autograd.grad(rule, x, grad)[0]) < 1e-6


def test_frozen_parameters_restores_every_flag():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].bias.requires_grad_(False)
    with frozen_parameters(model, model[0]):
        assert not any(p.requires_grad for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]
    with pytest.raises(RuntimeError), frozen_parameters(model):
        raise RuntimeError("restored on error too")
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]


def test_pruned_ops_survive_export_save_and_load(tmp_path):
    model, x = build("vit")
    gm = lf.transform(model, x)
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert {torch.ops.libragrad.linear_cols.default, torch.ops.libragrad.attention.default} <= targets
    program = torch.export.export(gm, (x,))
    path = tmp_path / "vit.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    with torch.no_grad():
        assert torch.equal(loaded(x), gm(x))
    assert rel(input_grad(loaded, x), input_grad(gm, x)) < 1e-6


@pytest.mark.slow
def test_compiled_transformed_model_is_one_graph():
    import torch._dynamo as dynamo

    model, x = build("vit")
    gm = lf.transform(model, x)
    with frozen_parameters(model):
        explained = dynamo.explain(gm)(x)
        assert explained.graph_break_count == 0 and explained.graph_count == 1
        dynamo.reset()
        compiled = torch.compile(gm, fullgraph=True)
        assert rel(input_grad(compiled, x), input_grad(gm, x)) < 1e-5
