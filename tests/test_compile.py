"""torch.compile of a transformed model: same outputs and gradients, no graph breaks.

Graph breaks are counted by ``torch._dynamo.explain`` (Dynamo's own trace, no code generated);
parity is measured with the default Inductor backend (C++ code generation on CPU: slow, so one
small ViT).
"""
from __future__ import annotations

import pytest
import torch
from archs import ARCHS, build

import libragrad_fx as lf

TARGET = 1


def grads(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output, input gradient, and every parameter's gradient (FullGrad reads the bias ones) flattened."""
    params = [p for p in model.parameters() if p.requires_grad]
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    grad, *param_grads = torch.autograd.grad(out[:, TARGET].sum(), [x, *params], allow_unused=True)
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(param_grads, params)])
    return out.detach(), grad, flat


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_compiled_matches_eager_on_vit():
    model, x = build("vit")
    gm = lf.transform(model, x)
    torch._dynamo.reset()
    compiled = torch.compile(gm)
    out, grad, params = grads(compiled, x)
    eager_out, eager_grad, eager_params = grads(gm, x)
    print(f"compile vs eager: output {rel(out, eager_out):.1e}, input grad {rel(grad, eager_grad):.1e}, "
          f"parameter grads {rel(params, eager_params):.1e}")
    assert rel(out, eager_out) < 1e-5
    assert rel(grad, eager_grad) < 1e-5
    assert rel(params, eager_params) < 1e-5


def _breaks(module: torch.nn.Module, x: torch.Tensor):
    torch._dynamo.reset()
    explained = torch._dynamo.explain(module)(x)
    torch._dynamo.reset()
    return explained


FAST = {("vit", "fx"), ("vit", "export"), ("eva02", "fx"), ("eva02", "export")}


@pytest.mark.parametrize("arch,capture", [
    pytest.param(arch, capture, marks=() if (arch, capture) in FAST else pytest.mark.slow)
    for arch in ARCHS for capture in ("fx", "export")])
def test_rewrites_add_no_graph_break(arch, capture):
    model, x = build(arch)
    gm = lf.transform(model, x, capture=capture)
    assert gm.libragrad_report.rewritten, "nothing rewritten: the test would prove nothing"
    transformed, vanilla = _breaks(gm, x), _breaks(model, x)
    reasons = [str(r.reason).splitlines()[0] for r in transformed.break_reasons]
    assert transformed.graph_break_count == vanilla.graph_break_count == 0, reasons
    assert transformed.graph_count == 1
