"""``preset="vanilla"`` is the model itself: the same gradient, bit for bit, for every model in the tests.

The vanilla preset rewrites nothing, so its graph must give exactly the gradient the model gives
(a custom autograd Function's own backward included, a fused recurrent kernel's included). This
runs over every model class the test suite builds.
"""
from __future__ import annotations

import warnings
from typing import Callable

import pytest
import torch
import torch.nn as nn
from archs import ARCHS, build

import cli_models
import libragrad_fx as lf
import test_certificate as certificate
import test_completeness as completeness
import test_random_graphs as random_graphs
import test_rules as rules
import test_transform as transform_tests


def _x(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(*shape)


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    **{f"arch:{name}": ((lambda name=name: build(name)[0]), (lambda name=name: build(name)[1])) for name in ARCHS},
    "HandWritten": (rules.HandWritten, _x(2, 6, 16)),
    "InPlace": (rules.InPlace, _x(4, 8)),
    "TanhPooler": (rules.TanhPooler, _x(3, 8)),
    "AutowrappedFunction": (rules.AutowrappedFunction, _x(3, 8)),
    "ProductIntoNorm": (rules.ProductIntoNorm, _x(4, 8)),
    "SigmoidValues": (rules.SigmoidValues, _x(2, 5, 8)),
    "Recurrent:LSTM": (lambda: rules.Recurrent(2, False, "LSTM"), _x(3, 5, 8)),
    "Recurrent:GRU": (lambda: rules.Recurrent(2, True, "GRU"), _x(3, 5, 8)),
    "AutocastRegion": (rules.AutocastRegion, _x(2, 5, 8)),
    "Ambiguous": (rules.Ambiguous, _x(3, 4)),
    "EveryRuleOp": (rules.EveryRuleOp, _x(3, 8)),
    "Biased": (completeness.Biased, _x(2, 3, 16, 16)),
    "NegInfPadding": (completeness.NegInfPadding, _x(2, 3, 8, 8)),
    "InPlaceAfterSite": (completeness.InPlaceAfterSite, _x(2, 3, 8, 8)),
    "MaxOverTokens": (completeness.MaxOverTokens, _x(2, 5, 8)),
    "ShapeDependent": (transform_tests.ShapeDependent, _x(2, 8)),
    "tiny_mlp": (cli_models.tiny_mlp, _x(2, 3, 4, 4)),
    "OddActivation": (cli_models.OddActivation, _x(2, 3, 4, 4)),
    **{f"construct:{name}": ((lambda name=name: random_graphs.Network([(name, True)])),
                             _x(2, random_graphs.TOKENS, random_graphs.DIM)) for name in sorted(random_graphs.VOCABULARY)},
    "Lerp": (certificate.Lerp, _x(3, 8)),
    "Addcmul": (certificate.Addcmul, _x(3, 8)),
    "Baddbmm": (certificate.Baddbmm, _x(3, 5, 8)),
    "Quantised": (certificate.Quantised, _x(3, 8)),
    "Rounded": (certificate.Rounded, _x(3, 8)),
    "SpatialTransformer": (certificate.SpatialTransformer, _x(2, 3, 8, 8)),
    "Decay": (lambda: certificate.Decay(True), _x(4, 8)),
    "NestedGates": (certificate.NestedGates, _x(2, 4)),
    "Attention": (lambda: certificate.Attention(True, False), _x(3, 5, 16)),
    "TransformerEncoder": (lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                                         enable_nested_tensor=False), _x(3, 5, 16)),
}


def _gradient(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))  # every output, not one logit
    return torch.autograd.grad((out * weights).sum(), x)[0]


SLOW = {"Recurrent:GRU", "Attention", "TransformerEncoder"}
"""Captured with torch.export (seconds each): run with ``-m slow``; CI keeps the LSTM for the recurrent kernels."""


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MODELS])
def test_the_vanilla_preset_gives_the_models_own_gradient(name):
    make, example = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    x = example()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lf.LibraGradWarning)
        gm = lf.transform(model, x, preset="vanilla")
    assert not gm.libragrad_report.rewritten
    assert torch.equal(_gradient(gm, x), _gradient(model, x)), name
