"""The general rules on spellings nobody wrote a pattern for (docs/METHOD.md section 2)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import libragrad_fx as lf
from archs import Leftovers


def ixg_completeness(model: nn.Module, x: torch.Tensor, target: int = 0) -> float:
    """|sum(x * grad) - f(x)| / |f(x)|, worst over the batch (the model must have no biases)."""
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out[:, target].sum(), x)
    total = (x * grad).flatten(1).sum(1).detach()
    logit = out[:, target].detach()
    return float(((total - logit).abs() / logit.abs()).max())


class HandWritten(nn.Module):
    """Every rule family, spelled out in primitives, without any bias."""

    def __init__(self, dim: int = 16, tokens: int = 6) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(dim) + 0.5)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.rel_bias = nn.Parameter(torch.randn(tokens, tokens))
        self.up = nn.Linear(dim, 2 * dim, bias=False)
        self.se = nn.Linear(dim, dim, bias=False)
        self.head = nn.Linear(dim, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.w  # RMSNorm
        h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, keepdim=True, unbiased=False) + 1e-5)  # LN
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + self.rel_bias).softmax(-1)
        h = h + attn @ v
        a, b = self.up(h).chunk(2, dim=-1)
        a = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))  # GELU by hand
        b = b * torch.sigmoid(1.702 * b)  # QuickGELU as traced
        h = h + a * b  # a gated product of two streams
        h = h * torch.sigmoid(self.se(h.mean(1, keepdim=True)))  # squeeze-excite gate
        h = h / h.norm(dim=-1, keepdim=True)  # unit-vector normalisation
        return self.head(h.mean(1))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_hand_written_spellings_are_rewritten_and_complete(capture):
    torch.manual_seed(0)
    model = HandWritten().eval()
    x = torch.randn(2, 6, 16)
    gm = lf.transform(model, x, capture=capture)
    report = gm.libragrad_report
    assert torch.equal(gm(x), model(x))
    assert report.families() == {"nonlinearity", "normalization", "attention", "gating"}
    assert not report.unclassified
    vanilla = ixg_completeness(model, x)
    libragrad = ixg_completeness(gm, x)
    assert libragrad < 1e-4, f"libragrad {libragrad:.2e} (vanilla {vanilla:.2e})"
    assert vanilla > 1e-2


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16, bias=False)
        self.act1 = nn.SiLU(inplace=True)
        self.fc2 = nn.Linear(16, 16, bias=False)
        self.act2 = nn.ReLU6(inplace=True)
        self.fc3 = nn.Linear(16, 16, bias=False)
        self.act3 = nn.Hardswish(inplace=True)
        self.fc4 = nn.Linear(16, 2, bias=False)

    def forward(self, x):
        h = self.act1(self.fc1(x))
        h = self.act2(self.fc2(h) * 4)
        h = self.act3(self.fc3(h))
        return self.fc4(F.elu(h))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_in_place_activations_keep_the_forward_and_become_complete(capture):
    torch.manual_seed(0)
    model = InPlace().eval()
    x = torch.randn(4, 8) * 3
    gm = lf.transform(model, x, capture=capture)
    assert torch.equal(gm(x), model(x))
    ops = {r.op for r in gm.libragrad_report.rewritten}
    assert len(ops) == 4, ops  # SiLU, ReLU6 (identity rule), hard-swish, ELU (identity rule)
    assert ixg_completeness(gm, x) < 1e-4
    assert ixg_completeness(model, x) > 1e-2


def test_what_cannot_be_classified_is_reported_and_warned():
    x = torch.randn(2, 4)
    with pytest.warns(lf.UnclassifiedOpWarning, match="not classified"):
        gm = lf.transform(Leftovers(), x)
    report = gm.libragrad_report
    reasons = {u.op: u.reason for u in report.unclassified}
    assert "Tensor.softmax" in reasons and "product factor" in reasons["Tensor.softmax"]
    assert any("bessel_j0" in op for op in reasons)
    assert [h.op for h in report.head] == ["Tensor.softmax"]
    text = str(report)
    assert "unclassified (2)" in text and "bessel_j0" in text and "head (kept)" in text
    as_dict = report.to_dict()
    assert {u["node"] for u in as_dict["unclassified"]} == {u.node for u in report.unclassified}


class TanhPooler(nn.Module):
    """BERT's pooler: tanh used as an activation, not as a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(8, 8, bias=False)
        self.out = nn.Linear(8, 2, bias=False)

    def forward(self, x):
        return self.out(torch.tanh(self.dense(x)))


def test_a_gate_that_feeds_a_stream_is_an_activation():
    torch.manual_seed(0)
    model = TanhPooler()
    x = torch.randn(3, 8) * 2
    gm = lf.transform(model, x)
    rows = gm.libragrad_report.rewritten
    assert [(r.op, r.family) for r in rows] == [("torch.tanh", "nonlinearity")]
    assert "identity rule" in rows[0].rule
    assert ixg_completeness(gm, x) < 1e-4


def test_transform_is_idempotent():
    torch.manual_seed(0)
    model = HandWritten().eval()
    x = torch.randn(2, 6, 16)
    gm = lf.transform(model, x)
    again = lf.transform(gm, x)
    assert not again.libragrad_report.rewritten
    assert not again.libragrad_report.unclassified
    assert torch.equal(again(x), model(x))


def _wrapped_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x) if x.shape[-1] > 1 else x  # fx keeps this function whole (a shape branch)


torch.fx.wrap("_wrapped_gelu")


class AutowrappedFunction(nn.Module):
    """A Python function the tracer keeps whole (like timm's autowrapped ``scale_image``) hides its ops."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8, bias=False)
        self.fc2 = nn.Linear(8, 2, bias=False)

    def forward(self, x):
        return self.fc2(_wrapped_gelu(self.fc1(x)))


def test_an_autowrapped_function_is_captured_with_export_so_its_ops_are_seen():
    torch.manual_seed(0)
    model = AutowrappedFunction()
    x = torch.randn(3, 8)
    gm = lf.transform(model, x)
    report = gm.libragrad_report
    assert report.capture == "export" and any("_wrapped_gelu" in n for n in report.notes), report.notes
    assert [r.family for r in report.rewritten] == ["nonlinearity"] and not report.unclassified
    assert ixg_completeness(gm, x) < 1e-4
    with pytest.warns(lf.UnclassifiedOpWarning):  # without example inputs it stays whole, and is reported
        hidden = lf.transform(model).libragrad_report
    assert [u.op for u in hidden.unclassified] == ["test_rules._wrapped_gelu"]


class ProductIntoNorm(nn.Module):
    """A balanced product read directly by a fused norm (MetaFormer's SquaredReLU -> LayerNorm head)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16, bias=False)
        self.norm = nn.LayerNorm(8, bias=False)
        self.head = nn.Linear(8, 2, bias=False)

    def forward(self, x):
        a, b = self.fc(x).chunk(2, dim=-1)
        return self.head(self.norm(a * b) + self.norm(torch.square(F.relu(a))))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_rewritten_norm_reads_its_input_through_the_product_rule(capture):
    """The gating rule's 1/k wrapper must stay on the path when the consumer is itself replaced."""
    torch.manual_seed(0)
    model = ProductIntoNorm().eval()
    x = torch.randn(4, 8)
    gm = lf.transform(model, x, capture=capture)
    assert {r.family for r in gm.libragrad_report.rewritten} == {"gating", "normalization"}
    assert torch.equal(gm(x), model(x))
    assert ixg_completeness(gm, x) < 1e-4


class SigmoidValues(nn.Module):
    """iFormer's attention: sigmoid values, attended and multiplied by a sigmoid gate, added to the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.qk = nn.Linear(8, 16, bias=False)
        self.v_gate = nn.Linear(8, 16, bias=False)
        self.head = nn.Linear(8, 2, bias=False)

    def forward(self, x):
        q, k = self.qk(x).chunk(2, dim=-1)
        v, gate = torch.sigmoid(self.v_gate(x)).chunk(2, dim=-1)
        return self.head(x + F.scaled_dot_product_attention(q, k, v) * gate)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_stranded_elementwise_gate_is_an_activation_with_its_value_at_zero_as_bias(capture):
    torch.manual_seed(0)
    model = SigmoidValues().eval()
    x = torch.randn(2, 5, 8)
    gm = lf.transform(model, x, capture=capture)
    report = gm.libragrad_report
    assert not report.unclassified, report.unclassified
    assert any("identity rule" in r.rule and "1/2" in r.rule for r in report.rewritten), report.rewritten
    assert torch.equal(gm(x), model(x))
    local = lf.node_completeness(gm, x)
    assert local.checks and not local.violations, str(local)


class Recurrent(nn.Module):
    """Sequencer2d's token mixer: a bidirectional recurrent layer over the tokens, read by a linear layer."""

    def __init__(self, layers: int = 2, batch_first: bool = True, cell: str = "LSTM") -> None:
        super().__init__()
        kind = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(cell, nn.RNN)
        extra = {"nonlinearity": "relu"} if cell == "RNN_RELU" else {}
        self.rnn = kind(8, 6, num_layers=layers, batch_first=batch_first, bidirectional=True, bias=False, **extra)
        self.head = nn.Linear(12, 2, bias=False)
        self.batch_first = batch_first

    def forward(self, x):
        y, _ = self.rnn(x if self.batch_first else x.transpose(0, 1))
        return self.head((y if self.batch_first else y.transpose(0, 1)).mean(1))


@pytest.mark.parametrize("cell,layers,batch_first,families", [
    ("LSTM", 1, True, {"nonlinearity", "gating"}),  # tanh as activations, sigmoid gates detached
    ("LSTM", 2, False, {"nonlinearity", "gating"}),
    ("GRU", 2, True, {"nonlinearity", "gating"}),  # r, z and 1 - z detached where they gate a stream
    ("RNN", 2, False, {"nonlinearity"}),
    ("RNN_RELU", 1, True, set()),  # ReLU and linear maps: complete as they are
])
def test_a_recurrent_layer_is_unrolled_into_gates_for_the_backward(cell, layers, batch_first, families):
    torch.manual_seed(0)
    model = Recurrent(layers, batch_first, cell).eval()
    x = torch.randn(3, 5, 8) * 2
    gm = lf.transform(model, x)
    report = gm.libragrad_report
    assert report.capture == "export" and any(f"{cell} unrolled over 5 steps" in n for n in report.notes)
    assert not report.unclassified, report.unclassified
    assert report.families() == families
    assert torch.equal(gm(x), model(x))  # the fused kernel still computes the value
    assert not lf.node_completeness(gm, x).violations
    assert ixg_completeness(gm, x) < 1e-4
    if families:
        assert ixg_completeness(model, x) > 1e-2


class AutocastRegion(nn.Module):
    """EfficientViT's LiteMLA: ReLU linear attention in an autocast(enabled=False) region, divided by
    its own normaliser (a nested graph under torch.export)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24, bias=False)
        self.head = nn.Linear(8, 2, bias=False)

    def forward(self, x):
        q, k, v = F.relu(self.qkv(x)).chunk(3, dim=-1)
        with torch.autocast(device_type="cpu", enabled=False):
            v = F.pad(v, (0, 1), mode="constant", value=1.0)
            out = q @ (k.transpose(-1, -2) @ v)
            out = out[..., :-1] / (out[..., -1:] + 1e-5)
        return self.head(out.mean(1))


def test_an_autocast_region_is_inlined_so_its_ops_are_rewritten():
    torch.manual_seed(0)
    model = AutocastRegion().eval()
    x = torch.randn(2, 5, 8)
    gm = lf.transform(model, x, capture="export")
    report = gm.libragrad_report
    assert any("region inlined" in n for n in report.notes), report.notes
    assert not report.unclassified, report.unclassified
    assert "gating" in report.families()  # the normaliser, an input-dependent denominator, is detached
    assert torch.equal(gm(x), model(x))
    assert not lf.node_completeness(gm, x).violations
    assert ixg_completeness(gm, x) < 1e-4


class TrainBatchNorm(nn.Module):
    """A wrapped op (train-mode BatchNorm, a Wrap edit) read by a replaced one (SiLU, a Replace edit)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4, affine=False)
        self.act = nn.SiLU()
        self.fc = nn.Linear(4 * 6 * 6, 3, bias=False)

    def forward(self, x):
        return self.fc(self.act(self.bn(self.conv(x))).flatten(1))


def test_an_op_replaced_after_a_wrap_reads_the_wrapped_value():
    torch.manual_seed(0)
    model = TrainBatchNorm().train()
    x = torch.randn(4, 3, 8, 8)
    gm = lf.transform(model, x)
    rule = next(n for n in gm.graph.nodes if n.target is lf.rules.batch_norm_train)
    assert list(rule.users) and all(u.target is torch.ops.libragrad.silu.default for u in rule.users)
    x = x.detach().requires_grad_(True)
    out = gm(x)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    total = out[:, 0].sum().detach()  # batch statistics couple the samples: complete over the batch
    assert abs(float((x * grad).sum() - total)) < 1e-4 * abs(float(total))


class Ambiguous(nn.Module):
    """Ops whose torch schemas are ambiguous (a Scalar and a Tensor overload)."""

    def forward(self, x):
        mask = x > 0
        y = (x.masked_fill(mask, 2.0) + torch.lerp(x, x * 2, 0.3) + x.scatter(1, torch.zeros_like(x).long(), 1.0)
             + torch.masked_fill(x, mask, 3.0))
        return torch.conv2d(y[:, None, :, None], torch.ones(2, 1, 1, 1), torch.ones(2), 1, 0, 1, 1)


def test_ambiguous_schemas_get_their_argument_names():
    from libragrad_fx.core.spelling import describe

    gm = torch.fx.symbolic_trace(Ambiguous())
    named = {describe(n, gm).name: describe(n, gm).args for n in gm.graph.nodes if n.op.startswith("call")}
    assert set(named["masked_fill"]) == {"input", "mask", "value"} and named["masked_fill"]["value"] in (2.0, 3.0)
    assert named["lerp"]["weight"] == 0.3 and named["lerp"]["end"].name == "mul"
    assert named["scatter"]["src"] == 1.0
    assert {"weight", "bias", "groups"} <= set(named["conv"]) and named["conv"]["groups"] == 1


class TrainModeBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2, bias=False)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_train_mode_batch_norm_detaches_batch_statistics_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = TrainModeBatchNorm().train()
    with torch.no_grad():
        model.bn.bias.zero_()
    stats = (model.bn.running_mean.clone(), model.bn.running_var.clone())
    x = torch.randn(4, 3, 8, 8)
    gm = lf.transform(model, x)
    report = gm.libragrad_report
    assert report.forward_check.startswith("skipped")  # verifying would update the running statistics
    assert torch.equal(model.bn.running_mean, stats[0]) and torch.equal(model.bn.running_var, stats[1])
    assert [(r.op, r.family) for r in report.rewritten] == [("nn.BatchNorm2d", "normalization")]
    # batch statistics couple the samples: completeness holds for the batch total
    x = x.requires_grad_(True)
    out = gm(x)[:, 0].sum()
    (grad,) = torch.autograd.grad(out, x)
    out = out.detach()
    assert abs(float((x * grad).sum() - out)) / abs(float(out)) < 1e-4


class EveryRuleOp(nn.Module):
    """InstanceNorm (straight_through), GLU, the identity rule, a balanced product, F.normalize."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16, bias=False), nn.Linear(16, 32, bias=False)
        self.c, self.d = nn.Linear(16, 16, bias=False), nn.Linear(16, 4, bias=False)
        self.norm = nn.InstanceNorm1d(4, affine=True)

    def forward(self, x):
        h = self.norm(self.a(x).view(x.shape[0], 4, 4)).flatten(1)
        g = F.glu(self.b(h), -1)
        h = F.normalize(F.elu(self.c(g)) * g, dim=-1)
        return self.d(torch.tanh(h))


def test_every_rule_survives_export_as_one_readable_node(tmp_path):
    """Rules are custom ops (or detach): a saved program reads back, and transforming it again finds
    nothing to do (a rule traced into pieces would be rewritten twice, e.g. a 1/2 applied twice)."""
    from libragrad_fx.core import export as lx

    torch.manual_seed(0)
    model = EveryRuleOp().eval()
    x = torch.randn(3, 8)
    gm = lf.transform(model, x)
    assert gm.libragrad_report.families() == {"nonlinearity", "normalization", "gating"}
    lx.save(gm, x, str(tmp_path / "rules.pt2"))
    loaded = lx.load(str(tmp_path / "rules.pt2")).module
    again = lf.transform(loaded, x, capture="export")
    assert not again.libragrad_report.rewritten and not again.libragrad_report.unclassified
    grads = []
    for m in (gm, loaded, again):
        xx = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(m(xx)[:, 0].sum(), xx)[0])
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])
    assert ixg_completeness(loaded, x) < 1e-4
