"""Targets beyond a class's logit: "prob" (S1) and callable readouts traced into the graph."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from archs import build

import libragrad_fx as lf
from libragrad_fx import attr


@pytest.fixture(scope="module")
def vit():
    model, x = build("vit")
    return model, x, lf.transform(model, x)


@pytest.fixture(scope="module")
def vit64():
    model, x = build("vit")
    model, x = model.double(), x.double()
    return model, x, lf.transform(model, x)


def margin(out: torch.Tensor) -> torch.Tensor:
    return out[:, 1] - out[:, 3]


def logit_sum(out: torch.Tensor) -> torch.Tensor:
    return out.sum(-1)


def test_callable_targets_on_a_classifier(vit64):
    """A margin and a sum of logits: gradients are the differences and sums of the logits' gradients, and
    FullGrad is complete for them (float64)."""
    _, x, gm = vit64
    ixg = attr.InputXGradient(gm)
    torch.testing.assert_close(ixg.attribute(x, target=margin), ixg.attribute(x, 1) - ixg.attribute(x, 3),
                               rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(ixg.attribute(x, target=logit_sum), sum(ixg.attribute(x, c) for c in range(5)),
                               rtol=1e-10, atol=1e-14)
    for readout in (margin, logit_sum):
        result = lf.completeness(gm, x, target=readout)
        with torch.no_grad():
            expected = readout(gm(x))
        torch.testing.assert_close(result.output, expected, rtol=0, atol=0)
        assert result.target is None
        print(f"{readout.__name__}: FullGrad rel error {float(result.rel_error.max()):.1e}")
        assert float(result.rel_error.max()) <= 1e-10


def test_prob_is_the_softmax_kept_with_its_ordinary_backward(vit):
    """target="prob": the gradient of softmax(f(x))[t] through the transformed model, t the predicted class
    (S1); Probability(c, multilabel=True): sigmoid(f_c(x))."""
    _, x, gm = vit
    xg = x.clone().requires_grad_(True)
    out = gm(xg)
    predicted = out.argmax(-1)
    (s1,) = torch.autograd.grad(out.softmax(-1).gather(1, predicted[:, None]).sum(), xg)
    gradient = attr.Gradient(gm)
    torch.testing.assert_close(gradient.attribute(x, target="prob"), s1, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(gradient.attribute(x, target=attr.Probability(predicted)), s1, rtol=1e-5, atol=1e-9)
    (sigmoid,) = torch.autograd.grad(torch.sigmoid(gm(xg)[:, 2]).sum(), xg)
    torch.testing.assert_close(gradient.attribute(x, target=attr.Probability(2, multilabel=True)), sigmoid,
                               rtol=1e-5, atol=1e-9)
    report = gradient.traced_readout("prob", x).report
    assert not report.rewritten and [row.op for row in report.head] == ["torch.softmax"], report.head
    result = attr.FullGrad(gm).decompose(x, target="prob")
    torch.testing.assert_close(result.output, out.softmax(-1).gather(1, predicted[:, None])[:, 0].detach())
    torch.testing.assert_close(result.target, predicted)


@pytest.mark.parametrize("name", list(attr.METHODS))
def test_every_method_takes_the_new_targets(vit, name):
    """A callable reading one logit gives the map of that class, for every method; "prob" gives a map."""
    _, x, gm = vit
    method = attr.METHODS[name](gm)
    kwargs = {"n_steps": 4} if name == "integrated_gradients" else {"nt_samples": 2, "generator": None} \
        if name == "smoothgrad" else {}
    if name == "smoothgrad":
        kwargs["stdevs"] = 0.0  # no noise: the two calls see the same inputs
    by_class = method.attribute(x, target=1, **kwargs)
    by_readout = method.attribute(x, target=lambda out: out[:, 1], **kwargs)
    torch.testing.assert_close(by_readout, by_class, rtol=1e-5, atol=1e-7)
    prob = method.attribute(x, target="prob", **kwargs)
    assert prob.shape == by_class.shape and torch.isfinite(prob).all() and prob.abs().sum() > 0


def test_a_readout_must_give_one_floating_value_per_sample(vit):
    _, x, gm = vit
    ixg = attr.InputXGradient(gm)
    with pytest.raises(ValueError, match=r"returned shape \(2, 5\); it must return one value per sample, shape \[2\]"):
        ixg.attribute(x, target=lambda out: out)
    with pytest.raises(TypeError, match="floating tensor of shape"):
        ixg.attribute(x, target=lambda out: out.argmax(-1))
    with pytest.raises(ValueError, match="unknown target 'logits'"):
        ixg.attribute(x, target="logits")


class TinyClip(nn.Module):
    """A CLIP-style pair of towers: a small ViT for images, token embeddings with a residual MLP block and
    mean pooling for text, each projected to a shared space; returns both embeddings."""

    def __init__(self, dim: int = 16, vocab: int = 20, width: int = 24) -> None:
        super().__init__()
        self.visual = timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=dim)
        self.token_embedding = nn.Embedding(vocab, width)
        self.text_norm = nn.LayerNorm(width)
        self.text_mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.text_projection = nn.Linear(width, dim)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.token_embedding(tokens)
        h = h + self.text_mlp(self.text_norm(h))
        return self.visual(images), self.text_projection(h.mean(1))


class Similarity(nn.Module):
    """Each image's cosine similarity with its caption, scaled and shifted (SigLIP's logit)."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.logit_bias = nn.Parameter(torch.tensor(-1.0))

    def forward(self, out: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        image, text = out
        similarity = (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1)
        return similarity * self.logit_scale.exp() + self.logit_bias


def test_an_image_text_similarity_is_explained_completely():
    """The readout is traced and rewritten: the image embedding's normalisation gets the unit-norm rule
    (the text's, which no attributed input reaches, is a constant), the readout's bias is a site, and
    FullGrad sums to the similarity in float64. Without the rule it does not."""
    torch.manual_seed(0)
    model = TinyClip().double().eval()
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    tokens = torch.randint(0, 20, (3, 5))
    readout = Similarity().double()
    for preset in ("libragrad", "vanilla"):
        fullgrad = attr.FullGrad(model, preset=preset)
        result = fullgrad.decompose(images, target=readout, additional_forward_args=(tokens,))
        with torch.no_grad():
            torch.testing.assert_close(result.output, readout(model(images, tokens)), rtol=0, atol=0)
        error = float(((result.attributed - result.output).abs() / result.output.abs()).max())
        print(f"{preset}: FullGrad of the similarity, relative error {error:.1e}")
        if preset == "vanilla":
            assert error > 1e-2
            continue
        assert error <= 1e-10
        report = fullgrad.traced_readout(readout, images, (tokens,)).report
        assert report.capture == "fx" and report.rewrites == {"normalization": 1}, report.rewritten
        assert not report.unclassified and not report.head
        assert any(s.node.startswith("readout.") and any("logit_bias" in c for c in s.constants) for s in result.sites)

    # a closure over another module's parameters: torch.fx refuses it, torch.export captures it
    def closure(out):
        image, text = out
        return (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1) * readout.logit_scale.exp()

    result = lf.completeness(model, images, target=closure, additional_forward_args=(tokens,))
    assert float(result.rel_error.max()) <= 1e-10
    with pytest.raises(TypeError, match=r"model returns tuple; a class target reads a .* \(pass target= a callable"):
        attr.Gradient(model).attribute(images, target=None, additional_forward_args=(tokens,))


def test_a_per_sample_readout_reads_each_copy_of_the_batch():
    """Integrated Gradients stacks path points into one batch: a readout holding one caption embedding per
    sample is applied to each point's samples, so batching the points does not change the result."""
    torch.manual_seed(0)
    model = TinyClip().eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = torch.randint(0, 20, (2, 5))
    with torch.no_grad():
        captions = F.normalize(model(images, tokens)[1], dim=-1)

    def similarity(out):
        return (F.normalize(out[0], dim=-1) * captions).sum(-1)

    ig = attr.IntegratedGradients(model)
    one_point_per_pass = ig.attribute(images, target=similarity, additional_forward_args=(tokens,), n_steps=4,
                                      internal_batch_size=2)
    all_points = ig.attribute(images, target=similarity, additional_forward_args=(tokens,), n_steps=4)
    torch.testing.assert_close(all_points, one_point_per_pass, rtol=1e-5, atol=1e-8)
