"""Shipping a transformed model: torch.export, save, load, and the LibraGrad gradient back."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from archs import build

import libragrad_fx as lf
from libragrad_fx.core import export as lfx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 1


def input_grad(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out[:, TARGET].sum(), x)
    return out.detach(), grad


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module", params=["vit", "eva02"])
def round_trip(request, tmp_path_factory):
    arch = request.param
    model, x = build(arch)
    gm = lf.transform(model, x[:1])  # a batch of one: the file must still take any batch size
    path = str(tmp_path_factory.mktemp("pt2") / f"{arch}.pt2")
    lfx.save(gm, x[:1], path, label=arch)
    return arch, model, gm, lfx.load(path), x


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_reloaded_program_gives_the_libragrad_gradient(round_trip, batch):
    arch, model, gm, loaded, x = round_trip
    x = torch.randn(batch, *x.shape[1:], generator=torch.Generator().manual_seed(batch))
    out, grad = input_grad(loaded.module, x)
    expected_out, expected = input_grad(gm, x)
    _, vanilla = input_grad(model, x)
    assert torch.equal(out, expected_out)
    assert rel(grad, expected) < 1e-6, f"{arch}: reloaded vs in-memory gradient {rel(grad, expected):.2e}"
    assert rel(vanilla, expected) > 1e-2, "the LibraGrad gradient must differ from the vanilla one to test anything"


def test_rules_are_in_the_program_not_decomposed(round_trip):
    """detach stays detach (run_decompositions() would make it alias), the fused rules stay custom ops."""
    arch, _, gm, loaded, _ = round_trip
    targets = {str(n.target) for n in loaded.program.graph.nodes if n.op == "call_function"}
    assert "aten.detach.default" in targets and not any("alias" in t for t in targets)
    assert {"libragrad.layer_norm.default"} <= targets
    report = gm.libragrad_report
    pruned = {"pruning"} if report.backward else set()  # pruned projections/attention carry their own tag
    assert set(lfx.program_rules(loaded.program)) == report.families() | pruned
    assert loaded.report.to_dict() == gm.libragrad_report.to_dict()


def test_reference_output_catches_a_changed_program(round_trip):
    _, _, _, loaded, _ = round_trip
    assert lfx.reference_mismatch(loaded) is None
    weight = next(p for name, p in loaded.module.named_parameters() if name.endswith("head.weight"))
    with torch.no_grad():
        weight.add_(1.0)
    try:
        assert "differs from the recorded one" in lfx.reference_mismatch(loaded)
    finally:
        with torch.no_grad():
            weight.sub_(1.0)


def test_a_fresh_process_loads_the_file_after_import_libragrad_fx(round_trip, tmp_path):
    """What a user shipping the file does: torch.export.load in a new process, forward + backward."""
    arch, _, gm, loaded, x = round_trip
    path = tmp_path / "m.pt2"
    lfx.save(gm, x, str(path))
    _, expected = input_grad(gm, x)
    torch.save({"x": x, "grad": expected}, tmp_path / "expected.pt")
    script = (
        "import sys, torch, libragrad_fx\n"
        f"m = torch.export.load({str(path)!r}).module()\n"
        f"d = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "x = d['x'].clone().requires_grad_(True)\n"
        f"(g,) = torch.autograd.grad(m(x)[:, {TARGET}].sum(), x)\n"
        "print(float((g - d['grad']).norm() / d['grad'].norm()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-6


@pytest.mark.parametrize("train", [False, True])
def test_exported_module_is_checked_in_the_mode_it_was_exported(train):
    """``ExportedProgram.module()`` says ``training=True`` whatever the export mode (and its eval() raises); an
    eval-mode export is deterministic and gets its forward checked, a train-mode one (dropout masks, BatchNorm
    statistics) is skipped, as a train-mode nn.Module is."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8), torch.nn.GELU(), torch.nn.Dropout(0.3))
    x = torch.randn(4, 8)
    loaded = torch.export.export(net.train(train), (x,)).module()
    assert loaded.training
    check = lf.transform(loaded, x).libragrad_report.forward_check
    assert check.startswith("skipped") if train else check.startswith("bit-identical"), check
