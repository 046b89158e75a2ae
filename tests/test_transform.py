"""The core promise on the paper's eight architectures: same forward, LibraGrad backward."""
from __future__ import annotations

import copy

import pytest
import torch
from archs import ARCHS, build
from oracle import oracle_gradient

import libragrad_fx as lf

TARGET = 1
ADDITIVE = ("bias", "pos_embed", "cls_token", "reg_token", "q_bias", "k_bias", "v_bias")


def input_grad(model, x, target=TARGET):
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out[:, target].sum(), x)
    return grad, out[:, target].detach()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def zero_additive_constants(model: torch.nn.Module) -> None:
    """Zero every bias, positional embedding and class/register token, by parameter name (so the
    check does not lean on the analysis it tests)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1] in ADDITIVE or name.endswith("bias"):
                p.zero_()


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_forward_is_bit_identical(arch, capture):
    model, x = build(arch)
    gm = lf.transform(model, x, capture=capture)
    assert gm.libragrad_report.capture == capture
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
        other = torch.randn(3, *x.shape[1:])  # another batch size than the example's
        assert torch.equal(gm(other), model(other))


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_input_gradient_equals_oracle(arch, capture):
    model, x = build(arch)
    gm = lf.transform(model, x, capture=capture)
    grad, _ = input_grad(gm, x)
    expected = oracle_gradient(model, x, TARGET)
    vanilla, _ = input_grad(model, x)
    assert rel(grad, expected) < 1e-5, f"{arch}: libragrad vs oracle {rel(grad, expected):.2e}"
    assert rel(vanilla, expected) > 1e-2, "the oracle must differ from the vanilla gradient to test anything"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_bias_free_input_x_gradient_is_complete(arch):
    """In float64: completeness is an identity, and float32 sums round differently on AVX2 and AVX512."""
    model, x = build(arch)
    zero_additive_constants(model)
    model, x = model.double(), x.double()
    errors = {}
    for preset in ("libragrad", "vanilla"):
        grad, logit = input_grad(lf.transform(model, x, preset=preset), x)
        total = (x * grad).flatten(1).sum(1)
        errors[preset] = float(((total - logit).abs() / logit.abs()).max())
    print(f"{arch}: IxG completeness rel error libragrad {errors['libragrad']:.2e}, vanilla {errors['vanilla']:.2e}")
    assert errors["libragrad"] < 1e-10
    assert errors["vanilla"] > 1e-2


EXPECTED_FAMILIES = {"vit": {"nonlinearity", "normalization", "attention"},
                     "eva02": {"nonlinearity", "normalization", "attention", "gating"},
                     "mixer": {"nonlinearity", "normalization"}}


@pytest.mark.parametrize("arch", list(EXPECTED_FAMILIES))
def test_each_ablation_leaves_exactly_its_family(arch):
    model, x = build(arch)
    full = lf.transform(model, x).libragrad_report
    assert full.families() == EXPECTED_FAMILIES[arch]
    assert not lf.transform(model, x, preset="vanilla").libragrad_report.rewritten
    for preset, family in [("no-attention", "attention"), ("no-norm", "normalization"),
                           ("no-activation", "nonlinearity"), ("no-gating", "gating")]:
        report = lf.transform(model, x, preset=preset).libragrad_report
        assert family not in report.families(), preset
        assert report.families() == full.families() - {family}, preset
        if family in full.families():
            assert {r.family for r in report.skipped} == {family}
        # the other families keep every rewrite they had under the full preset
        kept = {(r.node, r.rule) for r in report.rewritten}
        assert {(r.node, r.rule) for r in full.rewritten if r.family != family} <= kept


def test_unknown_preset_lists_the_valid_ones():
    model, x = build("vit")
    with pytest.raises(ValueError, match="no-attention.*no-gating|libragrad"):
        lf.transform(model, x, preset="libragard")


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_user_model_is_not_mutated_and_parameters_are_shared(capture):
    model, x = build("eva02")
    reference = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forwards = {name: m.forward for name, m in model.named_modules()}
    functions = (torch.nn.functional.gelu, torch.nn.functional.layer_norm,
                 torch.nn.functional.scaled_dot_product_attention, torch.Tensor.softmax)
    vanilla, _ = input_grad(reference, x)

    gm = lf.transform(model, x, capture=capture)
    input_grad(gm, x)  # a LibraGrad backward in between

    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.forward == forwards[name] for name, m in model.named_modules())
    assert functions == (torch.nn.functional.gelu, torch.nn.functional.layer_norm,
                         torch.nn.functional.scaled_dot_product_attention, torch.Tensor.softmax)
    after, _ = input_grad(model, x)
    assert torch.equal(after, vanilla), "the original model must still give the vanilla gradient"
    params = {p.data_ptr() for p in model.parameters()}
    shared = [p for p in gm.parameters() if p.data_ptr() in params]
    assert len(shared) == len(list(gm.parameters())) and shared, "parameters must be shared, not copied"


def test_tracing_leaves_no_attribute_on_the_model():
    """fx stores tensors made in forward (EVA02's RoPE tables) on the traced root: not on the user's model."""
    model, x = build("eva02")
    attributes = {name: set(vars(m)) for name, m in model.named_modules()}
    first = lf.transform(model, x, capture="fx")
    second = lf.transform(model, x, capture="fx")
    assert {name: set(vars(m)) for name, m in model.named_modules()} == attributes
    assert first.code == second.code, "two transforms of one model must give the same graph"


class DataDependent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a value: neither fx nor export can capture it
            return self.fc(x)
        return -x


class ShapeDependent(torch.nn.Module):
    """fx cannot trace a branch on a shape; torch.export can."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x):
        if x.shape[-1] == 8:
            x = torch.nn.functional.gelu(self.fc(self.norm(x)))
        return x


def test_untraceable_model_error_names_the_construct():
    x = torch.randn(2, 4)
    with pytest.raises(lf.CaptureError) as error:
        lf.transform(DataDependent(), x)
    message = str(error.value)
    assert "DataDependent" in message and "torch.fx" in message and "torch.export" in message
    assert "control flow" in message or "data-dependent" in message.lower()
    assert "\n" not in message


def test_export_fallback_needs_example_inputs_and_accepts_any_batch():
    model = ShapeDependent().eval()
    with pytest.raises(lf.CaptureError, match="example_inputs"):
        lf.transform(model)
    gm = lf.transform(model, torch.randn(1, 8))  # batch of one: still exported with a dynamic batch
    report = gm.libragrad_report
    assert report.capture == "export"
    assert report.families() == {"nonlinearity", "normalization"}
    for batch in (1, 2, 7):
        x = torch.randn(batch, 8)
        assert torch.equal(gm(x), model(x))
