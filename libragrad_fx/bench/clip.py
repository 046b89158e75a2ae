"""Text-prompted maps on the bundled CLIP: which pixels make an image match a prompt.

The quantity explained is the cosine similarity of the image's embedding with the prompt's,
``cos = <normalize(visual(x)), t / |t|>``. :class:`SimilarityReadout` is the image tower followed by
that readout, one output per prompt ``[batch, prompts]``, with the prompts' embeddings held as constants
(detached buffers). It is transformed as a whole, so the final L2 normalisation gets LibraGrad's
unit-norm rule like any other normalisation in the graph, and FullGrad adds up to the similarity
itself; an attribution target is a prompt's index.

:func:`prompt_maps` gives one map per (image, prompt) pair with any method of
:mod:`libragrad_fx.attr`; :func:`zero_shot_report` measures the model's zero-shot accuracy by prompt.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PromptedMap", "SimilarityReadout", "class_readout", "draw", "explain", "prompt_maps", "readout",
           "zero_shot_report"]

ALIASES = {"ixg": "input_x_gradient", "ig": "integrated_gradients", "rollout": "attention_rollout"}


class SimilarityReadout(nn.Module):
    """images -> cosine similarity with each of a fixed set of text embeddings, ``[batch, prompts]``.

    Args:
        visual: the image tower, images -> (n, D) embeddings.
        text: the prompts' embeddings (P, D); stored normalised and detached (a constant of the graph).
    """

    def __init__(self, visual: nn.Module, text: Tensor) -> None:
        super().__init__()
        self.visual = visual
        self.register_buffer("text", F.normalize(text.detach().float(), dim=-1))

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.visual(images), dim=-1) @ self.text.T


def readout(model, prompts: Sequence[str]) -> SimilarityReadout:
    """The similarity readout of a :class:`~libragrad_fx.bench.clip_model.ClipModel` for ``prompts``
    (eval mode; shares the model's image tower)."""
    with torch.no_grad():
        text = model.encode_text(list(prompts))
    return SimilarityReadout(model.visual, text).eval()


def class_readout(model) -> SimilarityReadout:
    """The readout over the ten class prompts ("a circle" ... "a crescent"): what ``inspect clip``, ``check clip``
    and the benchmark explain; output ``k`` is the similarity with class ``k``'s prompt."""
    from .captions import class_prompts

    return readout(model, class_prompts())


def _pairs(images: Tensor, prompts: str | Sequence[str]) -> tuple[list[str], Tensor]:
    """(distinct prompts, the index of each image's prompt among them)."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (n, 3, H, W), got {shape}")
    texts = [prompts] * images.shape[0] if isinstance(prompts, str) else list(prompts)
    if len(texts) != images.shape[0]:
        raise ValueError(f"{len(texts)} prompts for {images.shape[0]} images: pass one prompt per image, or one "
                         "string for all")
    distinct = list(dict.fromkeys(texts))
    return distinct, torch.tensor([distinct.index(t) for t in texts])


def _method(method: str) -> str:
    from libragrad_fx import attr

    name = ALIASES.get(method, method)
    if name not in attr.METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join([*ALIASES, *attr.METHODS])}")
    return name


def _pixels(heat: Tensor, size: tuple[int, int]) -> Tensor:
    """A method's output as one map per pixel (n, H, W): channels summed, patch grids repeated over their pixels."""
    heat = heat.detach()
    if heat.dim() == 4:
        return heat.sum(1)
    return F.interpolate(heat[:, None].float(), size=size, mode="nearest")[:, 0]


def prompt_maps(model, images: Tensor, prompts: str | Sequence[str], method: str = "fullgrad",
                preset: str = "libragrad", **kwargs: Any) -> Tensor:
    """One map per (image, prompt) pair, (n, H, W): where ``images[i]`` makes it match ``prompts[i]``.

    Args:
        model: a :class:`~libragrad_fx.bench.clip_model.ClipModel` (``models.load("clip")``).
        images: (n, 3, H, W) in [0, 1].
        prompts: one prompt per image, or one string for all.
        method: a name of :data:`libragrad_fx.attr.METHODS` or ``ixg``, ``ig``, ``rollout``.
        preset: the backward (``libragrad``, ``vanilla``, or an ablation preset).
        **kwargs: passed to the method's ``attribute`` (``n_steps`` for IG...).

    Gradient methods give pixel maps (channels summed; signed, except Gradient and SmoothGrad's
    magnitudes as their ``abs`` options say); CAM and rollout maps live on the patch grid and each patch's
    value is repeated over its pixels.
    """
    from libragrad_fx import attr
    from libragrad_fx.core.transform import transform

    name = _method(method)
    distinct, target = _pairs(images, prompts)
    head = readout(model, distinct)
    explainer = attr.METHODS[name](transform(head, images[:1], preset=preset))
    return _pixels(explainer.attribute(images, target=target, **kwargs), tuple(images.shape[-2:]))


@dataclass
class PromptedMap:
    """One prompt's map on one image under one backward, and what it adds up to."""

    prompt: str
    preset: str
    method: str
    map: Tensor
    """(H, W), as :func:`prompt_maps` gives it."""
    similarity: float
    """The cosine similarity of the image with the prompt (what the map explains)."""
    attributed: float | None = None
    """For the maps meant to add up (FullGrad, Input x Gradient, IG): their sum (IG: plus its baseline's
    similarity)."""
    rel_error: float | None = None
    """|attributed - similarity| / |similarity|."""


def explain(model, image: Tensor, prompts: Sequence[str], method: str = "fullgrad",
            presets: Sequence[str] = ("libragrad",), **kwargs: Any) -> list[PromptedMap]:
    """The map of every prompt on one image (3, H, W) under each backward, with its completeness."""
    from libragrad_fx import attr
    from libragrad_fx.attr.completeness import METHODS as COMPLETE
    from libragrad_fx.attr.completeness import completeness
    from libragrad_fx.core.transform import transform

    name = _method(method)
    prompts = list(dict.fromkeys(prompts))
    x = (image[0] if image.dim() == 4 else image).expand(len(prompts), -1, -1, -1).contiguous()
    head = readout(model, prompts)
    target = torch.arange(len(prompts))
    out = []
    for preset in presets:
        gm = transform(head, x[:1], preset=preset)
        heat = _pixels(attr.METHODS[name](gm).attribute(x, target=target, **kwargs), tuple(x.shape[-2:]))
        with torch.no_grad():
            sims = gm(x).diagonal()
        check = completeness(gm, x, target=target, method=name, **kwargs) if name in COMPLETE else None
        for i, text in enumerate(prompts):
            extra = {} if check is None else {"attributed": float(check.attributed[i]) + float(sims[i] - check.reference[i]),
                                              "rel_error": float(check.rel_error[i])}
            out.append(PromptedMap(text, preset, name, heat[i], float(sims[i]), **extra))
    return out


def draw(image: Tensor, maps: Sequence[PromptedMap], path: str | os.PathLike, outlines: Tensor | None = None) -> None:
    """A grid: one row per prompt, the image then each backward's map (signed: red raises the similarity,
    blue lowers it); ``outlines`` (k, H, W) bool: object masks drawn over the maps."""
    import numpy as np
    from matplotlib.figure import Figure

    from libragrad_fx.viz import to_image

    prompts = list(dict.fromkeys(m.prompt for m in maps))
    presets = list(dict.fromkeys(m.preset for m in maps))
    picture = to_image(image[0] if image.dim() == 4 else image)
    figure = Figure(figsize=(2.3 * (len(presets) + 1), 2.5 * len(prompts)), dpi=90, layout="constrained")
    axes = figure.subplots(len(prompts), len(presets) + 1, squeeze=False)
    for m in maps:
        i, j = prompts.index(m.prompt), presets.index(m.preset) + 1
        axes[i, 0].imshow(picture, interpolation="nearest")
        axes[i, 0].set_title(f"'{m.prompt}'\ncos {m.similarity:.3f}", fontsize=9)
        heat = m.map.float().numpy()
        bound = float(np.abs(heat).max()) or 1.0
        axes[i, j].imshow(heat, cmap="bwr", vmin=-bound, vmax=bound, interpolation="nearest")
        for mask in [] if outlines is None else outlines:
            axes[i, j].contour(mask.numpy().astype(float), levels=[0.5], colors="black", linewidths=0.7)
        title = f"{m.preset} {m.method}"
        if m.rel_error is not None:
            title += f"\nsum {m.attributed:.3f}, error {m.rel_error:.0e}"
        axes[i, j].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    figure.savefig(os.fspath(path), format="png")


@torch.no_grad()
def _embed(model, images: Tensor, chunk: int = 500) -> Tensor:
    """Unit image embeddings (n, D)."""
    return torch.cat([F.normalize(model.encode_image(images[i:i + chunk]), dim=-1)
                      for i in range(0, images.shape[0], chunk)])


@torch.no_grad()
def _similarities(model, embedded: Tensor, prompts: Sequence[str]) -> Tensor:
    return embedded @ F.normalize(model.encode_text(list(prompts)), dim=-1).T


@torch.no_grad()
def zero_shot_report(model, n: int, seed: int) -> dict[str, Any]:
    """Zero-shot accuracy by prompt on ``n`` one-object and ``n`` two-object images of ``seed``.

    * ``one_object_accuracy``: the best of the class prompts ("a star", "an arrow"...) is the object's
      class (``per_class`` too);
    * ``two_object_exact``: the two best class prompts are the image's two classes;
      ``two_object_found``: the share of the objects among the two best prompts;
    * ``colour_accuracy``: on one-object images, the best of "a red shape", "a yellow shape"... is the
      object's colour word (:func:`libragrad_fx.bench.captions.colour_names`);
    * ``position_accuracy``: on two-object images, the best of "a star on the left" / right / top /
      bottom is the first object's position relative to the second.
    """
    from . import captions
    from .data import CLASSES, generate, objects

    prompts = captions.class_prompts()
    one = generate(n, seed=seed, two_objects=False)
    one_embedded = _embed(model, one.images)
    classes = one.labels.argmax(1)
    best = _similarities(model, one_embedded, prompts).argmax(1)
    correct = best == classes
    per_class = {c: round(float(correct[classes == i].float().mean()), 4) for i, c in enumerate(CLASSES)}

    truth = captions.describe(objects(n, seed=seed, two_objects=False))
    colour = _similarities(model, one_embedded, [f"a {c} shape" for c in captions.COLOURS]).argmax(1)
    colour_acc = float((colour == truth.colour[:, 0]).float().mean())

    two = generate(n, seed=seed, two_objects=True)
    two_embedded = _embed(model, two.images)
    top2 = _similarities(model, two_embedded, prompts).topk(2, dim=1).indices
    hit = two.labels.gather(1, top2)  # 1 where a top prompt is present
    pair_truth = captions.describe(objects(n, seed=seed, two_objects=True))
    first = pair_truth.shape[:, 0]
    position = torch.empty(n, dtype=torch.int64)
    for c in range(len(CLASSES)):
        sel = first == c
        if sel.any():
            where = [f"{captions.prompt(c)} on the {p}" for p in captions.POSITIONS]
            position[sel] = _similarities(model, two_embedded[sel], where).argmax(1)
    return {
        "n": n,
        "prompts": prompts,
        "one_object_accuracy": float(correct.float().mean()),
        "per_class": per_class,
        "two_object_exact": float((hit.sum(1) == 2).float().mean()),
        "two_object_found": float(hit.mean()),
        "colour_accuracy": colour_acc,
        "position_accuracy": float((position == pair_truth.position[:, 0]).float().mean()),
    }
