"""The dissent pixel readout: same forward, the sign-split backward on the layer that reads the input,
FullGrad still complete, token-level gradients untouched, finite at the edges, kept by torch.export."""
from __future__ import annotations

import json

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from archs import build

import libragrad_fx as lf
from libragrad_fx.core import export as lfx
from libragrad_fx.core.dissent import conv_dissent, dissent_ratio, linear_dissent
from libragrad_fx.passes.pixel import input_layers

D = torch.float64


def reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, f) -> torch.Tensor:
    """The rule written out with autograd: r * y_conf + b, r = (y_nb / y_conf) detached."""
    xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
    y_pos = f(xp, wp) + f(xn, wn)
    y_neg = f(xn, wp) + f(xp, wn)
    y_nb = f(x, w)
    conf = torch.where(y_nb >= 0, y_pos, y_neg)
    return (y_nb / conf).detach() * conf + (0 if b is None else b)


def grads(y: torch.Tensor, inputs: tuple, seed: int = 0) -> tuple:
    g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(y, inputs, g)


def leaves(*shapes, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, dtype=D, generator=gen).requires_grad_(True) for s in shapes]


@pytest.mark.parametrize("stride,padding,dilation,groups", [(4, 0, 1, 1), (1, 1, 1, 1), (2, 2, 2, 3)])
def test_conv_backward_is_the_rule(stride, padding, dilation, groups):
    x, w, b = leaves((2, 6, 9, 9), (6, 6 // groups, 3, 3), (6,))
    settings = ([stride] * 2, [padding] * 2, [dilation] * 2, groups)
    y = conv_dissent(x, w, b, *settings)
    assert torch.equal(y, F.conv2d(x, w, b, stride, padding, dilation, groups))
    got = grads(y, (x, w, b))
    want = grads(reference(x, w, b.view(-1, 1, 1), lambda a, k: F.conv2d(a, k, None, stride, padding, dilation,
                                                                         groups)), (x, w, b))
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    vanilla = grads(F.conv2d(x, w, b, stride, padding, dilation, groups), (x,))[0]
    assert not torch.allclose(got[0], vanilla), "the rule must change the input gradient to test anything"


def test_linear_backward_is_the_rule():
    x, w, b = leaves((3, 4, 7), (5, 7), (5,))
    y = linear_dissent(x, w, b)
    assert torch.equal(y, F.linear(x, w, b))
    for g, r in zip(grads(y, (x, w, b)), grads(reference(x, w, b, F.linear), (x, w, b))):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["linear", "conv1d", "conv2d", "conv3d"])
def test_each_output_adds_up(op):
    """<d~y_o/dx, x> = y_o - b_o for every output o (the map is locally complete), in float64."""
    if op == "linear":
        x, w = leaves((4, 6), (3, 6))
        y_nb = F.linear(x, w)
        out = linear_dissent(x, w, None)
    else:
        d = int(op[4])
        x, w = leaves((1, 2) + (5,) * d, (3, 2) + (2,) * d)
        y_nb = getattr(F, op)(x, w)
        out = conv_dissent(x, w, None, [1] * d, [0] * d, [1] * d, 1)
    flat = out.flatten()
    for o in range(0, flat.numel(), max(flat.numel() // 7, 1)):
        (g,) = torch.autograd.grad(flat[o], x, retain_graph=True)
        assert abs(float(((g * x).sum() - y_nb.flatten()[o]).detach())) < 1e-12


def test_edge_cases_are_finite_and_follow_the_rule():
    """y_conf = 0 happens only with y_nb = 0: no gradient there; an input of 0 counts as positive."""
    w = torch.tensor([[1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [-2.0, 0.5]], dtype=D)
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], dtype=D, requires_grad=True)
    y = linear_dissent(x, w, None)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(g).all()
    # row 0: y = 1 - 1 = 0 with contributions of both signs -> r = 0 for output 0; output 2: all agree
    ratio, agree = dissent_ratio(F.linear(x.clamp(min=0), w.clamp(min=0)) + F.linear(x.clamp(max=0), w.clamp(max=0)),
                                 F.linear(x.clamp(max=0), w.clamp(min=0)) + F.linear(x.clamp(min=0), w.clamp(max=0)))
    assert torch.isfinite(ratio).all() and (ratio >= 0).all() and (ratio <= 1).all()
    assert ratio[0, 0] == 0 and ratio[0, 1] == 0 and ratio[1].eq(0).all()  # y_nb = 0, or no contribution at all
    assert ratio[0, 2] == 1  # every contribution agrees
    # an all-zero input: no contribution of either sign, zero gradient (not NaN)
    assert g[1].eq(0).all()
    # x = (0, 2): the 0 counts as positive: output 2 (r = 1, W+ = (1, 1)) gives 1; output 3 (y = 1 > 0,
    # agreeing part W+ x+ = 0.5 * 2, r = 1) gives W+[3, 0] = 0 to the zero input; output 0: y = -2, agreeing
    # part W- x+ = -2, r = 1: W-[0, 0] = 0
    assert g[2, 0] == 1.0
    for dtype in (torch.float32, torch.float64):
        for x0 in (torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)):
            xi = x0.to(dtype).requires_grad_(True)
            k = torch.randn(4, 3, 4, 4, dtype=dtype).abs()  # one sign only: y_neg = 0 (or y_pos = 0) everywhere
            k[1] = 0  # an output channel with no contribution at all
            (gi,) = torch.autograd.grad(conv_dissent(xi, k, None, [4, 4], [0, 0], [1, 1], 1).sum(), xi)
            assert torch.isfinite(gi).all()
            if x0.abs().max() > 0:  # every contribution agrees with its output: r = 1, the plain gradient
                (plain,) = torch.autograd.grad(F.conv2d(xi, k, None, 4).sum(), xi)
                torch.testing.assert_close(gi, plain)


class _Tiny(nn.Module):
    """A patch embedding, a block, a head: the ViT shape in a few lines."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.proj(x).flatten(2).transpose(1, 2)
        t = t + self.fc(F.gelu(self.norm(t)))
        return self.head(t.mean(1))


def _grab(gm: fx.GraphModule, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the logit sum, the value of the node that the rewrite made for ``name``) from one run of ``gm``."""
    kept = {}

    class Run(fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            if n.name == name or name in n.meta.get("libragrad_for", ()):
                kept["value"] = value
            return value

    return Run(gm).run(x)[:, 1].sum(), kept


@pytest.mark.parametrize("preset", ["libragrad", "vanilla"])
def test_transform_rewrites_the_patch_embedding_only(preset):
    torch.manual_seed(0)
    model, x = _Tiny().eval(), torch.randn(2, 3, 8, 8)
    plain = lf.transform(model, x, preset=preset)
    gm = lf.transform(model, x, preset=preset, pixel_rule="dissent")
    assert torch.equal(gm(x), model(x)) and torch.equal(gm(x), plain(x))
    report = gm.libragrad_report
    rows = [r for r in report.rewritten if r.family == "pixel"]
    assert [(r.node, r.op) for r in rows] == [("proj", "nn.Conv2d")] and "reads the input x" in rows[0].why
    assert report.pixel_rule == "dissent" and "pixel rule dissent" in str(report)
    assert report.rewrites.get("pixel") == 1 and plain.libragrad_report.rewrites.get("pixel") is None
    targets = {n.target for n in gm.graph.nodes}
    assert conv_dissent in targets and linear_dissent not in targets  # the block's linear maps are left alone
    # the token-level gradient (at the convolution's output) is the same; the pixel gradient is not
    xs = x.clone().requires_grad_(True)
    out_a, a = _grab(plain, xs, "proj")
    out_b, b = _grab(gm, xs, "proj")
    ga, px_a = torch.autograd.grad(out_a, (a["value"], xs))
    gb, px_b = torch.autograd.grad(out_b, (b["value"], xs))
    assert torch.equal(ga, gb)
    assert not torch.allclose(px_a, px_b)


def test_fullgrad_stays_complete_on_a_vit():
    model, x = build("vit")
    model, x = model.double(), x.double()
    gm = lf.transform(model, x, pixel_rule="dissent")
    assert gm.libragrad_report.rewrites["pixel"] == 1
    result = lf.completeness(gm, x, target=1)
    assert float(result.rel_error.max()) < 1e-10
    ixg = lf.attr.InputXGradient(gm).attribute(x, target=1)
    plain = lf.attr.InputXGradient(lf.transform(model, x)).attribute(x, target=1)
    assert (ixg - plain).norm() > 1e-2 * plain.norm(), "the pixel maps must differ to test anything"
    # summed over each patch (the convolution's receptive field) the two maps agree: same token gradient
    patch = 8
    torch.testing.assert_close(F.avg_pool2d(ixg.sum(1), patch), F.avg_pool2d(plain.sum(1), patch))


def test_attribution_objects_take_the_pixel_rule():
    model, x = build("mixer")
    fullgrad = lf.attr.FullGrad(model, pixel_rule="dissent")
    heat = fullgrad.attribute(x, target=1)
    assert fullgrad.graph_module((x,)).libragrad_report.pixel_rule == "dissent"
    assert heat.shape == x.shape and torch.isfinite(heat).all()
    with pytest.raises(ValueError, match="pixel_rule"):
        lf.transform(model, x, pixel_rule="sharpen")


def test_input_facing_maps_are_found_on_the_graph():
    """Through affine preprocessing to the first map; a norm first: no such layer, said in a note."""
    class Stem(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(6, 4)
            self.c = nn.Linear(4, 2)

        def forward(self, x):
            x = (x - 0.5) * 2.0  # input standardisation
            return self.c(self.a(x) + self.b(x.flip(-1)))

    gm = lf.transform(Stem().eval(), torch.randn(3, 6), pixel_rule="dissent")
    assert sorted(r.node for r in gm.libragrad_report.rewritten if r.family == "pixel") == ["a", "b"]
    x = torch.randn(3, 6, requires_grad=True)
    (g,) = torch.autograd.grad(gm(x)[:, 0].sum(), x)
    assert torch.isfinite(g).all()

    normed = nn.Sequential(nn.LayerNorm(6), nn.Linear(6, 2)).eval()
    gm = lf.transform(normed, torch.randn(3, 6), pixel_rule="dissent")
    assert "pixel" not in gm.libragrad_report.rewrites
    assert any("no linear map or convolution reads the input directly" in n and "layer_norm" in n
               for n in gm.libragrad_report.notes)


def test_a_map_whose_weight_reads_the_input_is_left_to_the_rules():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 6))

        def forward(self, x):
            return F.linear(x, self.w * x.mean())  # a product of two input-dependent factors

    gm = lf.transform(Dynamic().eval(), torch.randn(3, 6), pixel_rule="dissent")
    assert "pixel" not in gm.libragrad_report.rewrites
    assert any("the input reaches linear's weight" in n for n in gm.libragrad_report.notes)


def test_a_text_model_has_no_such_layer():
    """Token ids select embeddings: nothing reads them linearly, and the transform says so."""
    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(10, 4), nn.Linear(4, 2)

        def forward(self, ids):
            return self.fc(self.emb(ids)).mean(1)

    ids = torch.randint(0, 10, (2, 5))
    gm = lf.transform(Text().eval(), ids, pixel_rule="dissent", capture="export")
    assert "pixel" not in gm.libragrad_report.rewrites
    assert any("pixel rule dissent: no input carries a gradient" in n for n in gm.libragrad_report.notes)


def test_export_round_trip_keeps_the_rule(tmp_path):
    model, x = build("vit")
    gm = lf.transform(model, x[:1], pixel_rule="dissent")
    path = str(tmp_path / "vit_ds.pt2")
    lfx.save(gm, x[:1], path, label="vit")
    loaded = lfx.load(path)
    targets = {str(n.target) for n in loaded.program.graph.nodes if n.op == "call_function"}
    assert "libragrad.conv_dissent.default" in targets
    assert "pixel" in lfx.program_rules(loaded.program)
    assert loaded.report.pixel_rule == "dissent"
    xs = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(gm(xs)[:, 1].sum(), xs)
    (got,) = torch.autograd.grad(loaded.module(xs)[:, 1].sum(), xs)
    assert torch.equal(loaded.module(x), gm(x))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_input_layers_of_the_bundled_shapes():
    for arch in ("vit", "mixer", "eva02"):
        model, x = build(arch)
        from libragrad_fx.core.analysis import Analysis
        from libragrad_fx.core.capture import capture

        gm = capture(model, x).gm
        found, blocked = input_layers(Analysis(gm))
        assert len(found) == 1 and not blocked, (arch, found, blocked)


def test_no_graph_break_under_torch_compile():
    model, x = build("vit")
    gm = lf.transform(model, x, pixel_rule="dissent")
    torch._dynamo.reset()
    explained = torch._dynamo.explain(gm)(x)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_functional_and_aten_spellings(capture):
    """F.conv2d with its settings as arguments (fx), aten.conv2d (export): the same rule, same settings."""
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, 3, 3, dtype=D))
            self.b = nn.Parameter(torch.randn(4, dtype=D))

        def forward(self, x):
            return F.conv2d(x, self.w, self.b, stride=2, padding=1).mean((2, 3))

    torch.manual_seed(0)
    model, x = Functional().eval(), torch.randn(2, 3, 9, 9, dtype=D)
    gm = lf.transform(model, x, pixel_rule="dissent", capture=capture)
    assert [r.family for r in gm.libragrad_report.rewritten] == ["pixel"]
    assert torch.equal(gm(x), model(x))
    xs = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(gm(xs)[:, 1].sum(), xs)
    surrogate = reference(xs, model.w, model.b.view(-1, 1, 1), lambda a, k: F.conv2d(a, k, None, 2, 1))
    (want,) = torch.autograd.grad(surrogate.mean((2, 3))[:, 1].sum(), xs)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_command_line(capsys, tmp_path):
    from libragrad_fx.cli import main

    assert main(["inspect", "vit", "--pixel-rule", "dissent", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pixel_rule"] == "dissent" and data["rewrites"]["pixel"] == 1
    assert main(["bench", "--text", "--pixel-rule", "dissent", "--out", str(tmp_path / "b")]) == 2
    assert "token ids" in capsys.readouterr().err
    assert main(["inspect", "vit", "--pixel-rule", "sharpen"]) == 2
