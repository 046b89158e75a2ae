"""Attribution methods on the transformed model: API, captum parity, the integrator, CAMs, rollouts."""
from __future__ import annotations

import copy
from collections import Counter

import pytest
import timm
import torch
import torch.fx as fx
from archs import ARCHS, build, randomize_zeros
from fullgrad_reference import fullgrad_direct

import libragrad_fx as lf
from libragrad_fx import attr
from libragrad_fx.attr import maps
from libragrad_fx.core.analysis import Analysis

captum_attr = pytest.importorskip("captum.attr")

GRADIENT_METHODS = [attr.Gradient, attr.InputXGradient, attr.IntegratedGradients, attr.SmoothGrad, attr.FullGrad]
GRID_METHODS = [attr.GradCAM, attr.HiResCAM, attr.XGradCAM, attr.AttentionRollout, attr.GradientRollout]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def vit():
    model, x = build("vit")
    return model, x, lf.transform(model, x), lf.transform(model, x, preset="vanilla")


def test_every_method_on_a_plain_model(vit):
    model, x, _, _ = vit
    for method in GRADIENT_METHODS:
        out = method(model).attribute(x)
        assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0, method.__name__
    for method in GRID_METHODS:
        out = method(model).attribute(x)
        assert out.shape == (2, 4, 4) and torch.isfinite(out).all() and out.abs().sum() > 0, method.__name__


def test_model_and_preset_resolution(vit):
    model, x, gm, vanilla = vit
    assert attr.Gradient(model).preset == "libragrad"
    assert attr.Gradient(vanilla).preset == "vanilla"
    torch.testing.assert_close(attr.Gradient(model).attribute(x, 1), attr.Gradient(gm).attribute(x, 1), rtol=0, atol=0)
    x_ = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(x_)[:, 1].sum(), x_)
    torch.testing.assert_close(attr.Gradient(model, preset="vanilla").attribute(x, 1), plain, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="preset 'libragrad', not 'vanilla'"):
        attr.Gradient(gm, preset="vanilla")
    with pytest.raises(ValueError, match="plain models"):
        attr.Gradient(gm, capture="fx")


def test_targets(vit):
    _, x, gm, _ = vit
    with torch.no_grad():
        predicted = gm(x).argmax(-1)
    ixg = attr.InputXGradient(gm)
    torch.testing.assert_close(ixg.attribute(x), ixg.attribute(x, target=predicted.tolist()))
    per_sample = ixg.attribute(x, target=[0, 3])
    torch.testing.assert_close(per_sample[1:], ixg.attribute(x[1:], target=3))
    torch.testing.assert_close(ixg.attribute(x, target=2), ixg.attribute(x, target=torch.tensor([2, 2])))
    with pytest.raises(ValueError, match="out of range"):
        ixg.attribute(x, target=7)
    with pytest.raises(ValueError, match="one per sample"):
        ixg.attribute(x, target=[0, 1, 2])


@pytest.mark.parametrize("preset", ["libragrad", "vanilla"])
def test_captum_parity(vit, preset):
    """A transformed model is a plain nn.Module: captum's methods on it give our maps."""
    _, x, gm, vanilla = vit
    model = gm if preset == "libragrad" else vanilla
    target = torch.tensor([1, 3])
    ours = attr.InputXGradient(model).attribute(x, target=target)
    theirs = captum_attr.InputXGradient(model).attribute(x.clone().requires_grad_(True), target=target).detach()
    print(f"{preset}: InputXGradient max abs diff {float((ours - theirs).abs().max()):.1e}")
    assert float((ours - theirs).abs().max()) <= 1e-6 * float(theirs.abs().max())
    baselines = torch.randn_like(x) * 0.1
    for method, batch in [("gausslegendre", None), ("riemann_trapezoid", 6), ("riemann_left", None)]:
        ours = attr.IntegratedGradients(model).attribute(x, baselines, target, n_steps=16, method=method,
                                                         internal_batch_size=batch)
        theirs = captum_attr.IntegratedGradients(model).attribute(x, baselines, target=target, n_steps=16,
                                                                  method=method, internal_batch_size=batch)
        print(f"{preset}: IntegratedGradients {method} max abs diff {float((ours - theirs).abs().max()):.1e}")
        assert float((ours - theirs).abs().max()) <= 1e-6 * float(theirs.abs().max())


def test_integrated_gradients_sums_to_the_output_difference_on_vanilla_vit(vit):
    _, x, _, vanilla = vit
    baselines = torch.full_like(x, 0.5)
    ig = attr.IntegratedGradients(vanilla)
    maps_, delta = ig.attribute(x, baselines, target=2, n_steps=128, return_convergence_delta=True)
    with torch.no_grad():
        difference = vanilla(x)[:, 2] - vanilla(baselines)[:, 2]
    relative = (delta.abs() / difference.abs()).max()
    print(f"IG (128 steps) on vanilla ViT: |sum - (f(x) - f(x'))| / |f(x) - f(x')| = {float(relative):.1e}")
    assert relative < 1e-2
    torch.testing.assert_close(maps_.flatten(1).sum(1) - difference, delta, rtol=0, atol=1e-6)
    chunked = ig.attribute(x, baselines, target=2, n_steps=128, internal_batch_size=40)
    torch.testing.assert_close(chunked, maps_, rtol=1e-5, atol=1e-8)


def test_smoothgrad_is_the_gradient_without_noise_and_reproducible(vit):
    _, x, gm, _ = vit
    sg = attr.SmoothGrad(gm)
    gradient = attr.Gradient(gm).attribute(x, 1)
    torch.testing.assert_close(sg.attribute(x, 1, nt_samples=3, stdevs=0.0), gradient)
    torch.testing.assert_close(sg.attribute(x, 1, nt_samples=2, stdevs=0.0, nt_type="smoothgrad_sq"), gradient ** 2)
    assert float(sg.attribute(x, 1, nt_samples=2, stdevs=0.0, nt_type="vargrad").abs().max()) < 1e-12
    noisy = [sg.attribute(x, 1, nt_samples=4, nt_samples_batch_size=3, generator=torch.Generator().manual_seed(5))
             for _ in range(2)]
    torch.testing.assert_close(noisy[0], noisy[1])
    assert rel(noisy[0], gradient) > 1e-3


def test_fullgrad_map_keeps_each_patch_total(vit):
    """The map's bias part, summed over each patch, is what the bias sites put on that patch's token."""
    _, x, gm, _ = vit
    fullgrad = attr.FullGrad(gm)
    full_map = fullgrad.attribute(x, target=1)
    result = fullgrad.decompose(x, target=1, keep_contributions=True)
    assert full_map.shape == x.shape
    expected = torch.zeros(2, 4, 4, dtype=torch.float64)
    for c in result.contributions.values():
        c = c.double()
        if c.dim() == 3 and c.shape[1] == 17:  # [B, class token + 4 x 4 patches, D]
            expected += c[:, 1:].sum(-1).reshape(2, 4, 4)
        elif c.dim() == 4:  # the patch embedding's [B, D, 4, 4]
            expected += c.sum(1)
    bias_part = maps.aggregate((full_map - result.inputs[0]).double(), (4, 4))
    torch.testing.assert_close(bias_part, expected, rtol=1e-5, atol=1e-9)
    unplaced = result.attributed - full_map.double().flatten(1).sum(1)
    assert float(unplaced.abs().min()) > 0  # the class token and the classifier's bias sit on no patch


CONVNETS = ("resnet10t", "convnext_atto")  # channels-first sites, eval BatchNorm, LayerNorm2d


@pytest.mark.parametrize("arch", list(ARCHS) + list(CONVNETS))
def test_fullgrad_reduced_in_the_backward_equals_the_direct_computation(arch):
    """The map and every site's total, reduced by hooks as the backward passes each site (norm biases read
    as vectors), equal returning every site, asking for its full gradient and placing each contribution
    (every bias but a linear map's evaluated on zeros): float64, and float32 within its precision."""
    if arch in CONVNETS:
        torch.manual_seed(0)
        model = randomize_zeros(timm.create_model(arch, pretrained=False, num_classes=5)).eval()
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    else:
        model, x = build(arch)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        model, x = model.to(dtype), x.to(dtype)
        gm = lf.transform(model, x)
        heat, result = attr.FullGrad(gm).attribute_with_totals(x, target=1)
        expected_heat, expected_totals = fullgrad_direct(gm, x, 1)
        assert list(result.biases) == list(expected_totals)
        torch.testing.assert_close(heat, expected_heat, rtol=tol, atol=tol * float(expected_heat.abs().max()))
        scale = float(result.output.abs().max())
        for site, total in expected_totals.items():
            torch.testing.assert_close(result.biases[site], total, rtol=tol, atol=tol * scale)
        error = float(((result.attributed - result.output.double()).abs() / result.output.double().abs()).max())
        assert error <= (1e-10 if dtype is torch.float64 else 1e-4), (dtype, error)


def test_methods_read_the_graph_once(vit, monkeypatch):
    """Built on a transformed model, no method re-analyses, re-taps or re-traces it per call: after a first
    round of every method with every kind of target (and completeness), more rounds, with new method
    objects, analyse nothing, compile no GraphModule and trace nothing; the first analysed the graph once."""
    model, x, _, _ = vit
    gm = lf.transform(model, x)
    analysed, built = Counter(), Counter()
    analysis_init, module_init, trace = Analysis.__init__, fx.GraphModule.__init__, fx.Tracer.trace

    def spy_analysis(self, graph_module, *args, **kwargs):
        analysed["model" if graph_module is gm else "other"] += 1
        analysis_init(self, graph_module, *args, **kwargs)

    def spy_module(self, *args, **kwargs):
        built["GraphModule"] += 1
        module_init(self, *args, **kwargs)

    def spy_trace(self, *args, **kwargs):
        built["trace"] += 1
        return trace(self, *args, **kwargs)

    monkeypatch.setattr(Analysis, "__init__", spy_analysis)
    monkeypatch.setattr(fx.GraphModule, "__init__", spy_module)
    monkeypatch.setattr(fx.Tracer, "trace", spy_trace)

    def margin(out):
        return out[:, 1] - out[:, 3]

    options = {"integrated_gradients": {"n_steps": 3}, "smoothgrad": {"nt_samples": 2}}

    def every_method():
        for name, cls in attr.METHODS.items():
            method = cls(gm)
            for target in (None, 2, "prob", margin):
                method.attribute(x, target=target, **options.get(name, {}))
        for target in (None, margin):
            lf.completeness(gm, x, target=target)
            lf.completeness(gm, x, target=target, method="input_x_gradient")
        lf.node_completeness(gm, x)

    every_method()
    assert analysed["model"] == 1, analysed
    analysed.clear()
    built.clear()
    every_method()
    every_method()
    assert not analysed and not built, (analysed, built)
    fullgrad = attr.FullGrad(gm)
    assert fullgrad.biases(x) is attr.GradCAM(gm).compiled((x,)).biases
    clone = copy.deepcopy(gm)  # what was read from the graph stays with the model it was read from
    assert attr.FullGrad(clone).compiled((x,)) is not fullgrad.compiled((x,))
    torch.testing.assert_close(attr.FullGrad(clone).attribute(x, target=margin), fullgrad.attribute(x, target=margin))


def test_cam_layers(vit):
    model, x, gm, _ = vit
    cam = attr.GradCAM(gm)
    assert cam.layer_node(x).name == "add_4"  # the last block's output
    out = cam.attribute(x, 1)
    assert cam.used_layer == "blocks.0", "a class-token readout follows blocks.1: its patch tokens have no gradient"
    torch.testing.assert_close(out, attr.GradCAM(gm, layer="blocks.0").attribute(x, 1))
    torch.testing.assert_close(out, attr.GradCAM(gm, layer="add_2").attribute(x, 1))
    with pytest.raises(ValueError, match="no node or module named 'blocks.9'"):
        attr.GradCAM(gm, layer="blocks.9").attribute(x)
    with pytest.raises(ValueError, match="not laid out on the image"):
        attr.GradCAM(gm, layer="head").attribute(x)


def test_hirescam_equals_activations_times_gradients_read_with_hooks(vit):
    model, x, _, _ = vit
    ours = attr.HiResCAM(model, layer="blocks.0", preset="vanilla", relu=False).attribute(x, 1)
    seen = {}
    handle = model.blocks[0].register_forward_hook(lambda m, i, o: seen.update(a=o))
    try:
        output = model(x)
        (grad,) = torch.autograd.grad(output[:, 1].sum(), seen["a"])
    finally:
        handle.remove()
    expected = (seen["a"] * grad)[:, 1:].sum(-1).reshape(2, 4, 4)
    torch.testing.assert_close(ours, expected.detach(), rtol=1e-5, atol=1e-8)
    grad_cam = attr.GradCAM(model, layer="blocks.0", preset="vanilla", relu=False).attribute(x, 1)
    weights = grad[:, 1:].mean(1, keepdim=True)
    torch.testing.assert_close(grad_cam, (seen["a"][:, 1:] * weights).sum(-1).reshape(2, 4, 4).detach(),
                               rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("preset", ["libragrad", "vanilla"])
def test_rollouts_read_fused_and_manual_attention_alike(vit, preset):
    model, x, _, _ = vit
    manual = copy.deepcopy(model)
    for module in manual.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    for method in (attr.AttentionRollout, attr.GradientRollout):
        fused_map = method(model, preset=preset).attribute(x, 1)
        manual_map = method(manual, preset=preset).attribute(x, 1)
        torch.testing.assert_close(manual_map, fused_map, rtol=1e-4, atol=1e-7)
    rollout = attr.AttentionRollout(model).attribute(x)
    assert float(rollout.min()) > 0


def test_rollout_on_attention_pooling_and_its_absence():
    model, x = build("siglip")
    out = attr.GradientRollout(model).attribute(x)
    assert out.shape == (2, 4, 4) and out.abs().sum() > 0
    mixer, x = build("mixer")
    with pytest.raises(ValueError, match="no attention"):
        attr.AttentionRollout(mixer).attribute(x)


def test_gae_reads_the_rows_the_head_reads():
    """A class token the head never reads (mean pooling over patches): GAE averages the patch rows, not the
    class token's row (which gets no gradient and would give a map of ~0)."""
    torch.manual_seed(0)
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=4)
    pooled = timm.models.vision_transformer.VisionTransformer(class_token=True, global_pool="avg", **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    auto = attr.GradientRollout(pooled).attribute(x, 1)
    cls = attr.GradientRollout(pooled, readout="cls").attribute(x, 1)
    # R = I + non-negative terms: averaged over the patch rows, the patch columns sum to >= 1 (each row's own 1);
    # the class token's row has its 1 on the class token, off the grid, and only gradient terms on it
    assert bool((auto.sum((1, 2)) >= 1 - 1e-6).all()) and bool((cls.sum((1, 2)) < 0.1).all())
    token = timm.models.vision_transformer.VisionTransformer(class_token=True, global_pool="token", **kw).eval()
    torch.testing.assert_close(attr.GradientRollout(token).attribute(x, 1),
                               attr.GradientRollout(token, readout="cls").attribute(x, 1))


def test_rollout_reads_the_rows_the_head_reads():
    """Plain rollout has no gradient to weight by, but its auto readout still asks autograd which rows the
    head reads: the patch rows' mean under mean pooling, the class token's row under token pooling."""
    torch.manual_seed(0)
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    pooled = timm.models.vision_transformer.VisionTransformer(class_token=True, global_pool="avg", **kw).eval()
    torch.testing.assert_close(attr.AttentionRollout(pooled).attribute(x, 1), _patch_rows_mean(pooled, x))
    assert not torch.allclose(attr.AttentionRollout(pooled).attribute(x, 1),
                              attr.AttentionRollout(pooled, readout="cls").attribute(x, 1))
    token = timm.models.vision_transformer.VisionTransformer(class_token=True, global_pool="token", **kw).eval()
    torch.testing.assert_close(attr.AttentionRollout(token).attribute(x, 1),
                               attr.AttentionRollout(token, readout="cls").attribute(x, 1))
    # frozen parameters and no gradient on the input requested by the caller: still found
    for p in pooled.parameters():
        p.requires_grad_(False)
    torch.testing.assert_close(attr.AttentionRollout(pooled).attribute(x, 1), _patch_rows_mean(pooled, x))


def _patch_rows_mean(model, x):
    """Rollout by hand from the model's attention maps (timm's fused_attn off): the mean of the patch rows."""
    maps_ = []
    for blk in model.blocks:
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_hook(lambda m, i, o: maps_.append(o.mean(1)))
    with torch.no_grad():
        model(x)
    for blk in model.blocks:
        blk.attn.fused_attn = True
        blk.attn.attn_drop._forward_hooks.clear()
    n = maps_[0].shape[-1]
    rolled = torch.eye(n).expand(x.shape[0], n, n)
    for a in maps_:
        rolled = (0.5 * a + 0.5 * torch.eye(n)) @ rolled
    return rolled[:, 1:, 1:].mean(1).reshape(x.shape[0], 4, 4)
