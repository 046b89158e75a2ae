"""Every custom op's backward against its rule spelled out with detach, in float64.

The custom ops keep the model's forward kernel and register a backward written for speed (fused
kernels, statistics saved from the forward, gradients only where the running backward reads them).
Here each one is checked against the plain rule (``x * Phi(x).detach()``, LayerNorm with the
standard deviation detached, ...) to 1e-12 in float64, for the input and for the parameters, asked
for together and one at a time.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import libragrad_fx  # noqa: F401  (registers torch.ops.libragrad)

TOL = 1e-12
lib = torch.ops.libragrad


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-300)) if a.shape == b.shape else math.inf


def leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_(True)


def assert_same_gradients(have_out, want_out, tensors, grad=None):
    """Same value, and the same gradient for every subset of ``tensors`` asked on its own and all together."""
    assert rel(have_out, want_out) < TOL
    grad = torch.randn_like(want_out) if grad is None else grad
    subsets = [tensors] + [[t] for t in tensors] if len(tensors) > 1 else [tensors]
    for subset in subsets:
        have = torch.autograd.grad(have_out, subset, grad, retain_graph=True, allow_unused=True)
        want = torch.autograd.grad(want_out, subset, grad, retain_graph=True, allow_unused=True)
        for h, w in zip(have, want):
            assert (h is None) == (w is None)
            assert h is None or rel(h, w) < TOL


def phi_gate(x: torch.Tensor, approximate: str) -> torch.Tensor:
    if approximate == "tanh":
        return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    torch.manual_seed(0)
    x = leaf(4, 7, 33, scale=3)
    assert_same_gradients(lib.gelu(x, approximate), x * phi_gate(x, approximate).detach(), [x])


def test_silu_hardswish_mish():
    torch.manual_seed(0)
    x = leaf(5, 64, scale=4)
    with torch.no_grad():  # the tails: sigmoid rounds to 0 and to 1, exp would overflow in float32
        x[0, :4] = torch.tensor([-800.0, -40.0, 40.0, 800.0])
    assert_same_gradients(lib.silu(x), x * torch.sigmoid(x).detach(), [x])
    assert_same_gradients(lib.hardswish(x), x * (F.relu6(x + 3) / 6).detach(), [x])
    assert_same_gradients(lib.mish(x), x * torch.tanh(F.softplus(x)).detach(), [x])


def test_silu_tails_in_float32():
    x = torch.tensor([-800.0, -90.0, -20.0, 0.0, 17.0, 20.0, 90.0, 800.0], requires_grad=True)
    (grad,) = torch.autograd.grad(lib.silu(x).sum(), x)
    assert torch.isfinite(grad).all()
    info = torch.finfo(x.dtype)
    assert torch.allclose(grad, torch.sigmoid(x.detach()), rtol=2 * info.eps, atol=info.tiny)


def layer_norm_rule(x, shape, w, b, eps):
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    centred = x - x.mean(dims, keepdim=True)
    y = centred / torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + eps).detach()
    return y * (w if w is not None else 1) + (b if b is not None else 0)


@pytest.mark.parametrize("affine", ["both", "weight", "none"])
@pytest.mark.parametrize("shape", [(16,), (4, 6)])
def test_layer_norm(affine, shape):
    torch.manual_seed(0)
    x = leaf(3, 5, *shape, scale=2)
    w = leaf(*shape) if affine != "none" else None
    b = leaf(*shape) if affine == "both" else None
    have = lib.layer_norm(x, list(shape), w, b, 1e-5)
    assert torch.equal(have, F.layer_norm(x, shape, w, b, 1e-5))
    assert_same_gradients(have, layer_norm_rule(x, shape, w, b, 1e-5), [t for t in (x, w, b) if t is not None])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_norm_forward_is_the_models_kernel(dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 9, 48, dtype=dtype) * 3 + 1
    w, b = torch.randn(48, dtype=dtype), torch.randn(48, dtype=dtype)
    assert torch.equal(lib.layer_norm(x, [48], w, b, 1e-6), F.layer_norm(x, [48], w, b, 1e-6))
    assert torch.equal(lib.layer_norm(x, [9, 48], None, None, 1e-6), F.layer_norm(x, [9, 48], None, None, 1e-6))


def test_layer_norm_without_forward_statistics(monkeypatch):
    """Where the forward left no statistics (a traced program), setup_context computes them."""
    from libragrad_fx.core import rules

    torch.manual_seed(0)
    x, w = leaf(3, 16), leaf(16)
    monkeypatch.setattr(rules, "_FORWARD_STATISTICS", _Forgetful())
    have = lib.layer_norm(x, [16], w, None, 1e-5)
    assert_same_gradients(have, layer_norm_rule(x, (16,), w, None, 1e-5), [x, w])


def test_forward_statistics_are_taken_or_die_with_their_output():
    from libragrad_fx.core import rules

    x = leaf(3, 16)
    y = lib.layer_norm(x, [16], None, None, 1e-5)
    assert len(rules._FORWARD_STATISTICS) == 0  # taken by setup_context
    with torch.no_grad():
        y = lib.layer_norm(x, [16], None, None, 1e-5)
    assert len(rules._FORWARD_STATISTICS) == 1  # no backward: left, until the output goes
    del y
    assert len(rules._FORWARD_STATISTICS) == 0


class _Forgetful(dict):
    """A statistics table that keeps nothing."""

    def __setitem__(self, key, value) -> None:
        pass


@pytest.mark.parametrize("weight", [True, False])
def test_rms_norm(weight):
    torch.manual_seed(0)
    x = leaf(3, 5, 16, scale=2)
    w = leaf(16) if weight else None
    have = lib.rms_norm(x, [16], w, 1e-6)
    assert torch.equal(have, F.rms_norm(x, [16], w, 1e-6))
    want = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6).detach() * (w if w is not None else 1)
    assert_same_gradients(have, want, [t for t in (x, w) if t is not None])


def test_group_norm():
    torch.manual_seed(0)
    x = leaf(2, 6, 5, 4, scale=2)
    w, b = leaf(6), leaf(6)
    have = lib.group_norm(x, 3, w, b, 1e-5)
    assert torch.equal(have, F.group_norm(x, 3, w, b, 1e-5))
    g = x.reshape(2, 3, -1)
    centred = (g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + 1e-5).detach()
    want = centred.reshape(x.shape) * w.view(1, 6, 1, 1) + b.view(1, 6, 1, 1)
    assert_same_gradients(have, want, [x, w, b])


def test_normalize_glu_identity_rule():
    torch.manual_seed(0)
    x = leaf(4, 10, scale=2)
    have = lib.normalize(x, 2.0, -1, 1e-12)
    assert_same_gradients(have, x / x.norm(dim=-1, keepdim=True).detach(), [x])
    a, b = x.chunk(2, -1)
    assert_same_gradients(lib.glu(x, -1), a * torch.sigmoid(b).detach(), [x])
    with torch.no_grad():
        x[0, :3] = torch.tensor([0.0, 1e-20, -1e-20])  # where the identity rule's gate is guarded
    y = torch.tanh(x)
    gate = torch.where(x.abs() > torch.finfo(x.dtype).eps, y / torch.where(x == 0, 1.0, x), torch.ones_like(x))
    assert_same_gradients(lib.identity_rule(x, y, 0.0, 1.0), x * gate.detach(), [x])


def test_pruned_linear_and_attention():
    torch.manual_seed(0)
    x, w, b = leaf(2, 5, 8), leaf(12, 8), leaf(12)
    live = [0, 4, 8, 12]
    have = lib.linear_cols(x, w, b, live)
    keep = torch.ones(12, dtype=torch.float64)
    keep[4:8] = 0
    want = F.linear(x, w, b) * keep + (F.linear(x, w, b) * (1 - keep)).detach()  # dead features: no gradient
    assert torch.equal(have, F.linear(x, w, b))
    assert_same_gradients(have, want, [x, w, b])
    q, k, v = leaf(2, 3, 6, 4), leaf(2, 3, 7, 4), leaf(2, 3, 7, 5)
    have = lib.attention(q, k, v, None, 0.0, False, None, False)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2, -1)
    assert_same_gradients(have, weights.detach() @ v, [q, k, v])


def test_a_backward_asked_for_the_input_computes_no_parameter_gradient():
    """With parameters requiring grad, ``torch.autograd.grad(y, x)`` runs no weight-gradient work."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    x, w, b = leaf(4, 8), leaf(12, 8), leaf(12)
    y = lib.linear_cols(x, w, b, [0, 4]).sum()
    with Ops() as ops:
        torch.autograd.grad(y, x)
    assert ops.calls["mm"] + ops.calls["addmm"] + ops.calls["matmul"] == 1 and not ops.calls["sum"], ops.calls
    g, beta = leaf(8), leaf(8)
    y = lib.layer_norm(x, [8], g, beta, 1e-5).sum()
    with Ops() as ops:
        (dx,) = torch.autograd.grad(y, x, retain_graph=True)
    assert not ops.calls["native_layer_norm_backward"] and not ops.calls["sum"], ops.calls
    assert rel(dx, torch.autograd.grad(layer_norm_rule(x, (8,), g, beta, 1e-5).sum(), x)[0]) < TOL
    with Ops() as ops:  # and the weight's when it is asked for
        torch.autograd.grad(y, (x, g))
    assert ops.calls["native_layer_norm_backward"] == 1


@pytest.mark.parametrize("activation", [lambda x: lib.gelu(x, "none"), lambda x: lib.gelu(x, "tanh"), lib.silu,
                                        lib.hardswish, lib.mish], ids=["gelu", "gelu-tanh", "silu", "hardswish", "mish"])
def test_a_differentiated_backward_keeps_its_graph(activation):
    """create_graph=True (a gradient that is differentiated again): the same first gradient, with a graph."""
    torch.manual_seed(0)
    x = leaf(3, 17, scale=3)
    (plain,) = torch.autograd.grad(activation(x).sum(), x)
    (graphed,) = torch.autograd.grad(activation(x).sum(), x, create_graph=True)
    assert graphed.requires_grad and rel(graphed, plain) < TOL
    (second,) = torch.autograd.grad(graphed.sum(), x)
    assert torch.isfinite(second).all()


def test_layer_norm_zero_centred_backward():
    """dx from ATen's fused LayerNorm backward at x_hat = 0 (a shared zero input): the rule's value, in
    float64 and float32, and the zero buffer is read, never written."""
    from libragrad_fx.core import rules

    torch.manual_seed(0)
    for dtype, tol in ((torch.float64, TOL), (torch.float32, 1e-6)):
        for shape, norm in (((7, 3, 8), (3, 8)), ((2, 5, 24), (24,)), ((7, 3, 8), (3, 8))):  # grows, then reuses
            x = torch.randn(shape, dtype=dtype, requires_grad=True)
            w = torch.randn(norm, dtype=dtype, requires_grad=True)
            grad = torch.randn(shape, dtype=dtype)
            (have,) = torch.autograd.grad(lib.layer_norm(x, list(norm), w, None, 1e-5), x, grad)
            x64, w64 = x.detach().double().requires_grad_(), w.detach().double()
            (want,) = torch.autograd.grad(layer_norm_rule(x64, norm, w64, None, 1e-5), x64, grad.double())
            assert rel(have.double(), want) < tol
        zeros = rules._ZEROS[(torch.device("cpu"), dtype)]
        assert zeros.numel() >= 2 * 5 * 24 and not zeros.any()
        views = [v for key, pair in rules._ZERO_VIEWS.items() if key[:2] == (torch.device("cpu"), dtype) for v in pair]
        assert views and all(v.untyped_storage().data_ptr() == zeros.untyped_storage().data_ptr() for v in views)


def test_layer_norm_differentiated_backward_keeps_its_graph():
    torch.manual_seed(0)
    x, w = leaf(3, 16), leaf(16)
    (plain,) = torch.autograd.grad(lib.layer_norm(x, [16], w, None, 1e-5).pow(2).sum(), x)
    (graphed,) = torch.autograd.grad(lib.layer_norm(x, [16], w, None, 1e-5).pow(2).sum(), x, create_graph=True)
    assert graphed.requires_grad and rel(graphed, plain) < TOL
    (second,) = torch.autograd.grad(graphed.sum(), x)
    want = torch.autograd.grad(torch.autograd.grad(layer_norm_rule(x, (16,), w, None, 1e-5).pow(2).sum(), x,
                                                   create_graph=True)[0].sum(), x)[0]
    assert rel(second, want) < TOL
