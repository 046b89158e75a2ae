"""FullGrad completeness and the per-node check: complete under LibraGrad, and where it breaks otherwise."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from archs import ARCHS, build

import libragrad_fx as lf
from libragrad_fx.core.spelling import describe


@pytest.mark.parametrize("arch", list(ARCHS))
def test_fullgrad_is_complete_with_biases_under_libragrad_only(arch):
    model, x = build(arch)
    model, x = model.double(), x.double()  # completeness is an identity: float32 would test the rounding
    errors = {}
    for preset in ("libragrad", "vanilla"):
        result = lf.completeness(model, x, target=1, preset=preset)
        assert result.method == "fullgrad" and result.preset == preset
        assert torch.allclose(result.output.double(), result.reference)
        errors[preset] = float(result.rel_error.max())
    print(f"{arch}: FullGrad completeness rel error libragrad {errors['libragrad']:.2e}, "
          f"vanilla {errors['vanilla']:.2e}")
    assert errors["libragrad"] < 1e-10
    assert errors["vanilla"] > 1e-1, "the vanilla gradient is not complete: the biases must not make it so"


def test_fullgrad_biases_matter_and_add_up():
    """The per-bias totals are a real share of f(x): without them FullGrad would not be complete."""
    model, x = build("vit")
    result = lf.attr.FullGrad(model).decompose(x, target=0)
    assert len(result.sites) == len(result.biases) >= 15
    share = result.bias_total.abs() / result.output.double().abs()
    assert float(share.min()) > 1e-2
    torch.testing.assert_close(result.attributed, result.output.double(), rtol=1e-4, atol=0)
    sites = {s.node: s for s in result.sites}
    assert any("cls_token" in c for s in sites.values() for c in s.constants)
    assert any("pos_embed" in c for s in sites.values() for c in s.constants)


class Biased(nn.Module):
    """Every kind of additive constant FullGrad must find, under names that say nothing."""

    def __init__(self, dim: int = 8, grid: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)
        self.bn = nn.BatchNorm2d(dim)
        self.alpha = nn.Parameter(torch.randn(1, 1, dim) * 0.5)  # a class token
        self.beta = nn.Parameter(torch.randn(1, grid * grid + 1, dim) * 0.5)  # a positional embedding
        self.register_buffer("keep", torch.rand(1, grid * grid + 1, dim) > 0.2)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 2 * dim)
        self.gn = nn.GroupNorm(2, 2 * dim)
        self.head = nn.Linear(2 * dim, 3)
        with torch.no_grad():
            self.bn.running_mean.normal_(0, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.normal_(1, 0.2)
            for module in (self.bn, self.norm, self.gn):
                module.bias.normal_(0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))  # conv bias; eval BatchNorm: b - mean * w / std
        h = h.flatten(2).transpose(1, 2)
        h = torch.cat([self.alpha.expand(h.shape[0], -1, -1), h], 1) + self.beta
        h = 0.5 - (h + 1.0)  # literal offsets
        h = h.masked_fill(~self.keep, 0.3)
        h = torch.where(h > 0, h, -0.2)  # a constant selected by an input-dependent condition
        h = h + h.mean(1, keepdim=True).detach()  # a user's .detach() entering additively
        h = F.softplus(self.norm(h))  # the identity rule's f(0) = log 2
        h = self.fc(h).transpose(1, 2)
        h = F.pad(self.gn(h), (0, 1), value=0.7)
        return self.head(h.mean(-1))


EXPECTED_CONSTANTS = ("stem.bias", "bn.running_mean", "alpha", "beta", "=1.0", "=0.5", "=0.3", "=-0.2",
                      "(detached)", "norm.bias", f"f0={math.log(2.0)}", "fc.bias", "gn.bias", "=0.7", "head.bias")


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_every_kind_of_bias_is_found_from_the_graph(capture):
    torch.manual_seed(0)
    model = Biased().eval()
    x = torch.randn(2, 3, 16, 16)
    gm = lf.transform(model, x, capture=capture)
    result = lf.attr.FullGrad(gm).decompose(x)
    described = [c for site in result.sites for c in site.constants]
    for expected in EXPECTED_CONSTANTS:
        assert any(expected in c for c in described), f"{expected} not found among {described}"
    assert len(result.sites) == len(EXPECTED_CONSTANTS)
    libragrad = lf.completeness(gm, x)
    vanilla = lf.completeness(model, x, preset="vanilla")
    assert float(libragrad.rel_error.max()) < 1e-4
    assert float(vanilla.rel_error.max()) > 1e-1
    assert not lf.node_completeness(gm, x).violations


def _vanilla_rule_ops(gm: torch.fx.GraphModule) -> set[str]:
    """The nodes of a vanilla ViT graph that LibraGrad would rewrite, read off their op names."""
    names = {"layer_norm", "gelu", "scaled_dot_product_attention"}
    return {n.name for n in gm.graph.nodes if n.op.startswith("call") and describe(n, gm) is not None
            and describe(n, gm).name in names}


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_node_check_names_every_incomplete_node_of_vanilla_vit_and_none_of_libragrad(capture):
    model, x = build("vit")
    vanilla = lf.transform(model, x, preset="vanilla", capture=capture)
    report = lf.node_completeness(vanilla, x)
    print(report)
    expected = _vanilla_rule_ops(vanilla)
    assert len(expected) == 9  # 5 LayerNorms, 2 GELUs, 2 attentions
    assert {c.node for c in report.violations} == expected
    assert all(c.error > 1e-3 for c in report.violations)
    libragrad = lf.node_completeness(lf.transform(model, x, capture=capture), x)
    print(libragrad)
    assert not libragrad.violations
    assert len(libragrad.checks) > 40 and max(c.error for c in libragrad.checks) < 1e-5


def test_node_check_points_at_gates_and_ablated_families():
    model, x = build("eva02")
    report = lf.node_completeness(model, x, preset="vanilla")
    ops = {c.op for c in report.violations}
    assert {"F.layer_norm", "nn.SiLU", "operator.mul", "F.scaled_dot_product_attention"} <= ops, ops
    gates = [c for c in report.violations if c.op == "operator.mul"]
    assert len(gates) == 2  # SwiGLU's product in each block: degree 2, counted twice by the vanilla gradient
    no_attention = lf.node_completeness(model, x, preset="no-attention")
    assert {c.op for c in no_attention.violations} == {"F.scaled_dot_product_attention"}
    no_gating = lf.node_completeness(model, x, preset="no-gating")
    assert [c.node for c in no_gating.violations] == [c.node for c in gates]


def test_ig_completeness_through_the_api():
    model, x = build("vit")
    result = lf.completeness(model, x, method="integrated_gradients", preset="vanilla", n_steps=128)
    print(result)
    assert float(result.rel_error.max()) < 1e-2
    ixg = lf.completeness(model, x, method="input_x_gradient")
    assert float(ixg.rel_error.max()) > 1e-2  # the model has biases: Input x Gradient misses them
    with pytest.raises(ValueError, match="fullgrad"):
        lf.completeness(model, x, method="saliency")


class NegInfPadding(nn.Module):
    """NASNet's max-pool spelling: pad with -inf, then max-pool (the padding never wins)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        h = F.max_pool2d(F.pad(self.conv(x), (1, 1, 1, 1), value=float("-inf")), 3, stride=2)
        return self.fc(h.flatten(1))


def test_a_minus_inf_padding_is_a_constant_not_a_violation():
    torch.manual_seed(0)
    model = NegInfPadding().eval()
    x = torch.randn(2, 3, 8, 8)
    gm = lf.transform(model, x, capture="export")
    report = lf.node_completeness(gm, x)
    assert report.checks and not report.violations, str(report)


class InPlaceAfterSite(nn.Module):
    """A bias site read by an in-place op (ResNet's BatchNorm -> ReLU(inplace=True)), and ResMLP's
    Affine spelt ``torch.addcmul(beta, alpha, x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.alpha = nn.Parameter(torch.rand(4) + 0.5)
        self.beta = nn.Parameter(torch.randn(4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(torch.addcmul(self.beta, self.alpha, h))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_fullgrad_reads_a_site_before_an_in_place_op_overwrites_it(capture):
    torch.manual_seed(0)
    model = InPlaceAfterSite().eval()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.bias.normal_()
    x = torch.randn(2, 3, 8, 8)
    gm = lf.transform(model, x, capture=capture)
    assert float(lf.completeness(gm, x, 1, method="fullgrad").rel_error.max()) < 1e-4
    assert not lf.node_completeness(gm, x).violations


class MaxOverTokens(nn.Module):
    """VOLO's head: the class token's logits plus half the max over the other tokens' (max with indices)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        logits = self.head(x)
        return logits[:, 0] + 0.5 * logits[:, 1:].max(1)[0]


def test_an_op_reading_the_values_of_a_values_and_indices_pair_is_checked_on_its_values():
    torch.manual_seed(0)
    model = MaxOverTokens().eval()
    x = torch.randn(2, 5, 8)
    gm = lf.transform(model, x)
    report = lf.node_completeness(gm, x)
    assert report.checks and not report.violations, str(report)
    assert float(lf.completeness(gm, x, 1, method="fullgrad").rel_error.max()) < 1e-4
