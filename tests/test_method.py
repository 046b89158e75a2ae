"""The readouts docs/METHOD.md maps to the reference implementation's: the logit by default, and the softmax
probability with the softmax kept as the head (its ordinary backward) when the model ends in one."""
from __future__ import annotations

import torch
from archs import build

import libragrad_fx as lf

TARGET = 1


def _input_gradient(f, x: torch.Tensor) -> torch.Tensor:
    xi = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(xi)[:, TARGET].sum(), xi)
    return grad


def test_a_softmax_head_is_kept_so_the_probability_readout_is_the_chain_rule_through_it():
    model, x = build("vit")
    gm = lf.transform(model, x)
    with_head = lf.transform(torch.nn.Sequential(model, torch.nn.Softmax(-1)).eval(), x)
    (head,) = with_head.libragrad_report.head
    assert head.op == "nn.Softmax" and head.family == "head"
    probability = _input_gradient(with_head, x)
    expected = _input_gradient(lambda z: torch.softmax(gm(z), -1), x)  # LibraGrad to the logits, softmax as is
    assert torch.allclose(probability, expected, rtol=0, atol=1e-6 * float(expected.abs().max()))
    logit = _input_gradient(gm, x)
    assert (probability - logit).norm() > 1e-2 * logit.norm()  # two readouts, two different gradients
