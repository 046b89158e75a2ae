"""The optional fused rule kernels (libragrad_fx.core.kernels): the same gradients as the torch
expressions they replace, used when on and only then, and a clear error where they cannot be built.

Building them takes about 30 s once per machine (cached by torch.utils.cpp_extension); the tests are
skipped where there is no C++ compiler or ninja, as the kernels are then simply unavailable.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

import libragrad_fx as lf
import test_rule_backwards as rule_backwards
from archs import build
from libragrad_fx.core import kernels, rules

lib = torch.ops.libragrad


def _buildable() -> bool:
    from torch.utils.cpp_extension import is_ninja_available

    return is_ninja_available() and shutil.which(os.environ.get("CXX", "c++")) is not None


needs_compiler = pytest.mark.skipif(not _buildable(), reason="no C++ compiler or ninja: the kernels cannot be built")


@pytest.fixture(scope="module")
def built():
    module = kernels.enable()
    kernels.disable()
    yield module
    kernels.disable()


@pytest.fixture
def fused(built):
    """Kernels on for one test, as they were afterwards whatever happens."""
    with kernels.switched_on():
        yield built


class _Counting:
    """The built module with a call counter on each kernel."""

    def __init__(self, module) -> None:
        self.module, self.calls = module, {}

    def __getattr__(self, name):
        fn = getattr(self.module, name)

        def counted(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args)
        return counted


@needs_compiler
def test_rule_backwards_with_the_kernels_match_the_rules_in_float64(fused):
    """The float64 checks of the custom ops' backwards (1e-12 against the rule spelled out with detach),
    run again with the kernels doing the GELU and LayerNorm input gradients."""
    for approximate in ("none", "tanh"):
        rule_backwards.test_gelu(approximate)
    for affine in ("both", "weight", "none"):
        for shape in ((16,), (4, 6)):
            rule_backwards.test_layer_norm(affine, shape)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_against_the_torch_expressions(built, dtype):
    torch.manual_seed(0)
    eps = torch.finfo(dtype).eps
    x = torch.randn(6, 50, 96, dtype=dtype) * 3
    g = torch.randn_like(x)
    with torch.no_grad():  # a backward that is not differentiated: where the kernels apply
        want = rules._gelu_backward(g, x, "none")
        have = built.gelu_gate_backward(g, x)
        # Phi from 1 + erf (as the forward computes it) against erfc: equal up to rounding of Phi ~ 1
        assert (have - want).abs().max() <= 4 * eps * g.abs().max()
        strided = built.gelu_gate_backward(g.transpose(1, 2), x.transpose(1, 2))
        assert torch.equal(strided, have.transpose(1, 2))

        rows = x.reshape(-1, 96)
        w = torch.randn(96, dtype=dtype)
        mean, rstd = torch.randn(rows.shape[0], dtype=dtype), torch.rand(rows.shape[0], dtype=dtype) + 0.5
        columns = torch.randn(96, rows.shape[0], dtype=dtype).t()  # a non-contiguous gradient
        for grad in (rows, columns):
            xhat = (x.reshape(-1, 96) - mean[:, None]) * rstd[:, None]
            for weight in (w, None):
                gw = grad * (weight if weight is not None else 1)
                terms = ((gw - gw.mean(-1, keepdim=True)) * rstd[:, None], grad * xhat, grad)
                want = (terms[0], terms[1].double().sum(0), terms[2].double().sum(0))
                # worst-case rounding of a sum of m terms: m eps times the sum of their magnitudes
                bound = (64 * eps * terms[0].abs().max(), 300 * eps * terms[1].abs().sum(0),
                         300 * eps * terms[2].abs().sum(0))
                for wanted in ((True, True, True), (True, False, False), (False, True, False), (False, False, True)):
                    want_dw = wanted[1] and weight is not None
                    have = built.layer_norm_rule_backward(grad, x if want_dw else None, mean if want_dw else None,
                                                          rstd, weight, wanted[0], want_dw, wanted[2])
                    for value, expected, tol, asked in zip(have, want, bound, (wanted[0], want_dw, wanted[2])):
                        if not asked:
                            assert value is None
                            continue
                        assert ((value.double() - expected).abs() <= tol).all(), (wanted, weight is None)


@needs_compiler
def test_kernels_run_when_on_and_only_then(built, monkeypatch):
    counting = _Counting(built)
    monkeypatch.setitem(kernels._state, "module", counting)
    torch.manual_seed(0)
    x, w = torch.randn(3, 8, 16, requires_grad=True), torch.randn(16, requires_grad=True)

    def backward():
        y = lib.gelu(lib.layer_norm(x, [16], w, None, 1e-5), "none")
        torch.autograd.grad(y.sum(), x)

    kernels.disable()
    backward()
    assert counting.calls == {}
    kernels.enable()
    try:
        backward()
        assert counting.calls == {"gelu_gate_backward": 1, "layer_norm_rule_backward": 1}
        # a differentiated backward (create_graph) needs the torch expressions' graph: no kernel
        y = lib.gelu(x, "none")
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        assert counting.calls["gelu_gate_backward"] == 1 and gx.requires_grad
        # other dtypes than float32 / float64 run the torch expression too
        lib.gelu(x.detach().bfloat16().requires_grad_(), "none").sum().backward()
        assert counting.calls["gelu_gate_backward"] == 1
    finally:
        kernels.disable()


@needs_compiler
@pytest.mark.parametrize("arch", ["vit", "mixer"])
def test_transformed_models_give_the_same_maps_and_stay_complete(fused, arch):
    model, x = build(arch)
    gm = lf.transform(model, x[:1])
    x = x.requires_grad_(True)
    with_kernels = torch.autograd.grad(gm(x)[:, 1].sum(), x)[0]
    kernels.disable()
    without = torch.autograd.grad(gm(x)[:, 1].sum(), x)[0]
    scale = without.abs().max()
    assert (with_kernels - without).abs().max() <= 1e-5 * scale
    kernels.enable()
    result = lf.completeness(gm.double(), x.detach().double(), target=1)
    assert float(result.rel_error.max()) < 1e-10


@needs_compiler
def test_torch_compile_with_the_kernels_on(fused):
    """A compiled backward is traced on fake tensors, which a C++ kernel cannot read: it runs the torch
    expressions (the kernels stay eager-only) and gives the same gradient."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.GELU(),
                                torch.nn.Linear(32, 4)).eval()
    gm = lf.transform(model, torch.randn(2, 16))
    x = torch.randn(2, 16, requires_grad=True)
    (eager,) = torch.autograd.grad(gm(x)[:, 0].sum(), x)
    torch._dynamo.reset()
    # no cache: inductor picks its vector ISA from ATEN_CPU_CAPABILITY, which its cache keys leave out, so
    # code cached by an AVX512 run would be loaded by the AVX2 one
    with torch._inductor.config.patch(force_disable_caches=True):
        (compiled,) = torch.autograd.grad(torch.compile(gm)(x)[:, 0].sum(), x)
    assert (eager - compiled).abs().max() <= 1e-5 * eager.abs().max()


def test_a_failed_build_is_one_clear_error(monkeypatch):
    def no_compiler(verbose=False):
        raise OSError("c++: command not found")

    monkeypatch.setattr(kernels, "_build", no_compiler)
    monkeypatch.setitem(kernels._state, "module", None)
    monkeypatch.setitem(kernels._state, "on", None)
    with pytest.raises(RuntimeError, match=r"could not be built \(OSError: c\+\+: command not found\).*unset "
                                           + kernels.ENV):
        kernels.enable()
    monkeypatch.setenv(kernels.ENV, "1")
    monkeypatch.setitem(kernels._state, "on", None)
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert kernels.active() is False
    assert kernels.module() is None  # the rules fall back to the torch expressions


@needs_compiler
def test_the_environment_variable_turns_them_on(built):
    code = ("import torch; from libragrad_fx.core import kernels; "
            "x = torch.randn(4, 8, requires_grad=True); "
            "torch.ops.libragrad.gelu(x, 'none').sum().backward(); print(kernels.active())")
    for value, expected in (("1", "True"), ("", "False")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, kernels.ENV: value}, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == expected
