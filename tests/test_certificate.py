"""The report is a certificate: every op is complete or named, never silent.

Each model here is one the report used to get wrong: fused arithmetic filed as linear, a custom
autograd Function traced through, a non-differentiable op or an input-dependent sampling grid on
the gradient path, a gate spelled out, PyTorch's own transformer modules. Each must either become
complete or be reported; ``verify="gradient"`` checks every op on a gradient path, in float64.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import libragrad_fx as lf
from archs import Leftovers
from libragrad_fx.core import transform as driver
from libragrad_fx.core.analysis import Analysis, Kind
from libragrad_fx.core.capture import capture
from libragrad_fx.core.report import Report


def certified(model: nn.Module, x, capture: str = "auto", preset: str = "libragrad"):
    """Transform in float64 with the gradient check; no op may be incomplete without being reported."""
    model = model.double().eval()
    xs = tuple(t.double() for t in (x if isinstance(x, tuple) else (x,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lf.UnclassifiedOpWarning)
        gm = lf.transform(model, xs if len(xs) > 1 else xs[0], capture=capture, preset=preset, verify="gradient")
    report = gm.libragrad_report
    assert report.gradient is not None and report.gradient.checks
    assert not report.silent(), report.gradient_lines()
    return gm, report


def fullgrad_error(gm, x) -> float:
    return float(lf.completeness(gm, x.double(), target=0).rel_error.max())


def _linear(i: int = 8, o: int = 8) -> nn.Linear:
    return nn.Linear(i, o, bias=False)


class Lerp(nn.Module):
    def __init__(self, gate: bool = True) -> None:
        super().__init__()
        self.a, self.b, self.c, self.head = _linear(), _linear(), _linear(), _linear(8, 2)
        self.gate = gate

    def forward(self, x):
        weight = torch.sigmoid(self.c(x)) if self.gate else self.c(x)
        return self.head(torch.lerp(self.a(x), self.b(x), weight))


class Addcmul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = _linear(), _linear(), _linear(8, 2)

    def forward(self, x):
        return self.head(torch.addcmul(x, self.a(x), self.b(x), value=0.5))


class Baddbmm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = _linear(), _linear(), _linear(8, 2)

    def forward(self, x):
        return self.head(torch.baddbmm(x, self.a(x), self.b(x).transpose(1, 2) @ x).mean(1))


FUSED = {"lerp_gate": (Lerp, (3, 8)), "lerp_stream": (lambda: Lerp(gate=False), (3, 8)),
         "addcmul": (Addcmul, (3, 8)), "baddbmm": (Baddbmm, (3, 5, 8))}


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("name", list(FUSED))
def test_products_inside_fused_arithmetic_are_balanced(name, capture):
    build, shape = FUSED[name]
    torch.manual_seed(0)
    model, x = build(), torch.randn(*shape)
    gm, report = certified(model, x, capture)
    assert not report.unclassified, report.unclassified
    assert report.families() & {"gating"}, report.rewritten
    assert not report.gradient.violations, str(report.gradient)
    assert torch.equal(gm(x.double()), model(x.double()))
    assert fullgrad_error(gm, x) < 1e-10


class StraightThrough(torch.autograd.Function):
    """Rounding forward, identity backward (a quantisation-aware straight-through estimator)."""

    @staticmethod
    def forward(ctx, x, scale):
        return torch.round(x * scale) / scale

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Quantised(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(StraightThrough.apply(self.a(x), 4.0))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_custom_autograd_function_keeps_its_backward_and_is_reported(capture):
    torch.manual_seed(0)
    model, x = Quantised().eval(), torch.randn(3, 8)
    with pytest.warns(lf.UnclassifiedOpWarning, match="StraightThrough"):
        gm = lf.transform(model, x, capture=capture)
    report = gm.libragrad_report
    assert [u.reason for u in report.unclassified] == [
        "a custom torch.autograd.Function: kept as one call with its own backward, which no rule reaches"]
    vanilla = lf.transform(model, x, capture=capture, preset="vanilla")
    for m in (gm, vanilla):
        xx = x.clone().requires_grad_(True)
        got = torch.autograd.grad(m(xx)[:, 0].sum(), xx)[0]
        xx = x.clone().requires_grad_(True)
        expected = torch.autograd.grad(model(xx)[:, 0].sum(), xx)[0]
        assert torch.equal(got, expected) and got.abs().sum() > 0  # the estimator's gradient, not zero


def test_a_saved_program_keeps_the_custom_function(tmp_path):
    from libragrad_fx.core import export as saved

    torch.manual_seed(0)
    model, x = Quantised().eval(), torch.randn(3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lf.UnclassifiedOpWarning)
        saved.save(lf.transform(model, x), x, str(tmp_path / "q.pt2"))
    loaded = saved.load(str(tmp_path / "q.pt2")).module
    assert any(n.target is lf.core.functions.autograd_function for n in loaded.graph.nodes)
    xx = x.clone().requires_grad_(True)
    got = torch.autograd.grad(loaded(xx)[:, 0].sum(), xx)[0]
    xx = x.clone().requires_grad_(True)
    assert torch.equal(got, torch.autograd.grad(model(xx)[:, 0].sum(), xx)[0])


class Rounded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = _linear(), _linear(8, 2)

    def forward(self, x):
        h = self.a(x) * 3
        return self.head(h + torch.round(h))


class SpatialTransformer(nn.Module):
    """F.grid_sample(h, F.affine_grid(theta(h))): the sampling grid depends on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.theta = nn.Linear(4 * 8 * 8, 6)
        self.head = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        h = self.conv(x)
        grid = F.affine_grid(self.theta(h.flatten(1)).view(-1, 2, 3), h.shape, align_corners=False)
        return self.head(F.grid_sample(h, grid, align_corners=False).flatten(1))


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("build,shape,reason", [
    (Rounded, (3, 8), "non-differentiable"),
    (SpatialTransformer, (2, 3, 8, 8), "grid depends on the input"),
])
def test_non_differentiable_ops_and_input_dependent_grids_are_reported(build, shape, reason, capture):
    torch.manual_seed(0)
    gm, report = certified(build(), torch.randn(*shape), capture)
    assert any(reason in u.reason for u in report.unclassified), report.unclassified
    assert report.gradient.violations  # it is not complete: and the report says so


class Decay(nn.Module):
    """A selective scan's decay, spelled ``exp(-softplus(z))`` or ``sigmoid(-z)``, as a gate of the
    state (a product) and, where the initial state is a constant, as a value added to the stream."""

    def __init__(self, spelled_out: bool) -> None:
        super().__init__()
        self.z, self.u, self.head = _linear(), _linear(), _linear(8, 2)
        self.h0 = nn.Parameter(torch.randn(8))
        self.spelled_out = spelled_out

    def forward(self, x):
        z = self.z(x)
        decay = torch.exp(-F.softplus(z)) if self.spelled_out else torch.sigmoid(-z)
        h = decay * self.h0 + self.u(x)  # a constant initial state: the decay reaches the stream additively
        h = decay * h + self.u(x)  # the decay gates a stream
        return self.head(h)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_gate_spelled_out_gets_the_rule_of_the_function_it_computes(capture):
    torch.manual_seed(0)
    x = torch.randn(4, 8, dtype=torch.float64)
    results = {}
    for spelled_out in (False, True):
        torch.manual_seed(1)
        gm, report = certified(Decay(spelled_out), x, capture)
        assert not report.unclassified and not report.gradient.violations
        rules = sorted((r.family, r.rule) for r in report.rewritten)
        xx = x.clone().requires_grad_(True)
        grad = torch.autograd.grad(gm(xx)[:, 0].sum(), xx)[0]
        results[spelled_out] = (rules, grad, fullgrad_error(gm, x))
    (rules, grad, error), (rules_out, grad_out, error_out) = results[False], results[True]
    assert rules == rules_out, (rules, rules_out)  # sigmoid's identity rule (f(0) = 1/2) and its detach
    assert any("1/2" in rule for _, rule in rules)
    torch.testing.assert_close(grad_out, grad, rtol=1e-12, atol=1e-12)
    assert error < 1e-10 and error_out < 1e-10


@pytest.mark.parametrize("build,shape", [(Leftovers, (2, 4)), (Rounded, (3, 8)), (Baddbmm, (3, 5, 8)),
                                         (SpatialTransformer, (2, 3, 8, 8))])
def test_every_input_dependent_node_lands_in_exactly_one_bucket(build, shape):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lf.UnclassifiedOpWarning)
        gm = lf.transform(build().eval(), torch.randn(*shape))
    report = gm.libragrad_report
    captured = capture(build().eval(), torch.randn(*shape))
    analysis = Analysis(captured.gm, captured.input_names)
    dependent = [n for n, f in analysis.facts.items() if n.op.startswith("call") and f.kind is not Kind.CONST]
    assert sum(report.buckets.values()) == len(dependent)
    assert report.buckets.get("unclassified", 0) == len(report.unclassified)
    assert report.buckets.get("head", 0) == len(report.head)
    assert "input-dependent nodes" in str(report)


def test_one_warning_names_the_unclassified_nodes():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lf.transform(Leftovers(), torch.randn(2, 4))
    found = [w for w in caught if issubclass(w.category, lf.LibraGradWarning)]
    assert len(found) == 1 and issubclass(found[0].category, lf.UnclassifiedOpWarning)
    assert "bessel_j0" in str(found[0].message) and "softmax" in str(found[0].message)


class NestedGates(nn.Module):
    """Ten sigmoids of sigmoids added to a stream: each round of the analysis settles one."""

    def __init__(self, depth: int = 10) -> None:
        super().__init__()
        self.fc, self.depth = _linear(4, 4), depth

    def forward(self, x):
        h = self.fc(x)
        g = h
        for _ in range(self.depth):
            g = torch.sigmoid(g)
        return h + g


def test_an_analysis_that_does_not_converge_says_so_and_reports_what_is_left():
    with pytest.warns(lf.UnclassifiedOpWarning):
        gm = lf.transform(NestedGates(), torch.randn(2, 4))
    report = gm.libragrad_report
    assert any("unresolved after 8 rounds" in n for n in report.notes), report.notes
    assert report.unclassified
    settled = lf.transform(NestedGates(depth=3), torch.randn(2, 4)).libragrad_report
    assert not settled.unclassified and not any("rounds" in n for n in settled.notes)


class NoMetaKernel(nn.Module):
    """An op without a meta kernel (nonzero), in training mode: no shape run can succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.head = nn.Linear(4, 12), nn.Linear(4, 2)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        n = torch.nonzero(x[0, :, 0] > -100).shape[0]  # data-dependent, always every token
        out = F.scaled_dot_product_attention(q, k, v)[:, :n]
        return self.head(F.dropout(out, 0.0, self.training).mean(1))


def test_a_failed_shape_run_says_where_and_why():
    torch.manual_seed(0)
    model = NoMetaKernel().train()
    gm = lf.transform(model, torch.randn(2, 5, 4), capture="fx")
    notes = " ".join(gm.libragrad_report.notes)
    assert "shape run failed" in notes and "nonzero" in notes and "example inputs" not in notes, notes


def test_forward_differences_within_rounding_are_reported_and_beyond_it_raise():
    torch.manual_seed(0)
    model, x = nn.Linear(8, 3).eval(), torch.randn(4, 8)

    class Nudged(nn.Module):
        def __init__(self, by: float) -> None:
            super().__init__()
            self.model, self.by = model, by

        def forward(self, x):
            y = self.model(x)
            return y + self.by * y.detach().abs().max()

    report = Report("Linear", "libragrad", "fx", nodes=4)
    assert driver._forward_check(model, model, x, None, report).startswith("bit-identical")
    eps = torch.finfo(torch.float32).eps
    text = driver._forward_check(model, Nudged(2 * eps), x, None, report)
    assert text.startswith("within rounding") and "bit-identical" not in text
    with pytest.raises(lf.ForwardMismatchError, match="differs"):
        driver._forward_check(model, Nudged(1e-3), x, None, report)


# CI runs two corners of each matrix (the fused fast path's, and the other settings'); the rest are slow
_CI_CORNERS = {(True, True, "eval"), (False, False, "train")}
ENCODERS = [pytest.param(bias, batch_first, mode, id=f"bias={bias}-batch_first={batch_first}-{mode}",
                         marks=() if (bias, batch_first, mode) in _CI_CORNERS else pytest.mark.slow)
            for bias in (True, False) for batch_first in (True, False) for mode in ("eval", "train")]


def _strict_transform(model: nn.Module, mode: str):
    """The model in ``mode`` transformed with the per-op gradient check, any LibraGradWarning an error."""
    model = model.eval() if mode == "eval" else model.train()
    x = torch.randn(3, 5, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lf.LibraGradWarning)
        return lf.transform(model, x, verify="gradient"), x


@pytest.mark.parametrize("bias,batch_first,mode", ENCODERS)
def test_stock_transformer_encoder_transforms(bias, batch_first, mode):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, bias=bias, batch_first=batch_first)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    gm, x = _strict_transform(model, mode)
    report = gm.libragrad_report
    assert report.families() == {"attention", "normalization"} and not report.unclassified
    assert not report.gradient.violations, str(report.gradient)
    if mode == "eval":
        assert report.forward_check.startswith("bit-identical"), report.forward_check
        with torch.enable_grad():
            xx = x.clone().requires_grad_(True)
            assert torch.equal(gm(xx), model(xx))
            with torch.no_grad():
                fast = model(x)  # eval, no grad, batch first: PyTorch's fused fast path, which rounds differently
            differs = not torch.equal(fast, model(xx).detach())
        assert differs == any("torch.no_grad()" in n for n in report.notes), report.notes
        if bias and batch_first:
            assert differs
    else:
        assert report.forward_check.startswith("skipped")


class Attention(nn.Module):
    """nn.MultiheadAttention as a model would use it: self-attention, the output only."""

    def __init__(self, bias: bool, batch_first: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, bias=bias, batch_first=batch_first)
        self.head = nn.Linear(16, 2)

    def forward(self, x):  # x: [batch, tokens, features]
        x = x if self.attn.batch_first else x.transpose(0, 1)
        out, _ = self.attn(x, x, x, need_weights=False)
        return self.head(out.mean(1 if self.attn.batch_first else 0))


@pytest.mark.parametrize("bias,batch_first,mode", ENCODERS)
def test_stock_multihead_attention_transforms(bias, batch_first, mode):
    torch.manual_seed(0)
    model = Attention(bias, batch_first)
    gm, x = _strict_transform(model, mode)
    report = gm.libragrad_report
    assert "attention" in report.families() and not report.unclassified
    assert not report.gradient.violations, str(report.gradient)
    if mode == "eval":
        assert report.forward_check.startswith("bit-identical"), report.forward_check
        assert float(lf.completeness(gm, x, target=0).rel_error.max()) < 1e-4


@pytest.mark.slow
def test_multihead_attention_returning_its_weights_reports_them():
    """The averaged attention weights are a gate returned as an output: not a logit, so reported."""
    model = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(3, 5, 16)
    with pytest.warns(lf.UnclassifiedOpWarning):
        gm = lf.transform(model, (x, x, x), verify="gradient")
    report = gm.libragrad_report
    assert [u.op for u in report.unclassified] == ["aten.softmax.int"]
    assert not report.silent()


def test_verify_gradient_puts_per_node_results_in_the_report():
    torch.manual_seed(0)
    gm, report = certified(Addcmul(), torch.randn(3, 8))
    data = report.to_dict()["gradient"]
    assert data["checks"] and all({"node", "op", "error", "bias"} <= set(c) for c in data["checks"])
    again = lf.Report.from_dict(report.to_dict())
    assert [c.node for c in again.gradient.checks] == [c.node for c in report.gradient.checks]
    assert "gradient check" in str(report)
    with pytest.raises(ValueError, match="example_inputs"):
        lf.transform(Addcmul(), verify="gradient")
    with pytest.raises(ValueError, match="verify"):
        lf.transform(Addcmul(), torch.randn(3, 8), verify="everything")
