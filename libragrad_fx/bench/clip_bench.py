"""The prompt-conditioned benchmark (``libragrad-fx bench --models clip``): does a map of "a star" point at the
star and not at the cross beside it?

On two-object held-out images (``data.generate(n, seed, two_objects=True)``) each object is prompted in
turn with its class prompt ("a star"; :func:`libragrad_fx.bench.captions.class_prompts`), and the map of
the cosine similarity with that prompt (:class:`libragrad_fx.bench.clip.SimilarityReadout` over the ten
class prompts, target = the prompt) is scored against that object's mask by the classifier bench's own
code (:func:`libragrad_fx.bench.faithfulness.measure`): segmentation AP, pointing game, discrimination (the
share of the map's positive mass per pixel on the prompted object against the other one), completeness,
and deletion: the similarity as patches are deleted (MIF / LIF / SRG; "SRG acc": whether the prompt is
still the best of the ten class prompts).

AttnLRP runs lxt's rules on the image tower with the prompts' embeddings folded into its projection
(``t . visual(x)`` for each prompt); the final L2 normalisation, which lxt has no rule for, divides by
the embedding's norm taken as a constant (the unit-norm rule LibraGrad applies too).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from .faithfulness import Config, Method, ModelResult, _Maps, measure, targets_of

__all__ = ["READOUT", "attnlrp_maps", "preamble", "run_clip"]

READOUT = "cosine similarity with the prompt"

def preamble(config: Config) -> str:
    """What a CLIP table measures, for the head of ``results.md``."""
    from .data import HELDOUT_SEED

    seed = HELDOUT_SEED if config.seed is None else config.seed
    deleted = "zero" if config.baseline == "zero" else "each image's mean colour"
    return (f"Prompt-conditioned faithfulness on the bundled CLIP: {config.n} two-object images (libragrad_fx.bench.data, "
            f"seed {seed}, two_objects=True), each object prompted in turn by its class prompt ('a star'); the map "
            "explains the cosine similarity of the image with the prompt. SRG/MIF/LIF: areas under that similarity as "
            f"8x8 patches are replaced by {deleted}, 10% per step, most (MIF) or least (LIF) influential first (SRG acc: "
            "the same with 'the prompt is still the best of the ten class prompts'); AP: segmentation average "
            "precision of the map against the prompted object's mask (AP patch: of the map summed per patch); "
            "Point: pointing game; Disc: the share of the map's positive mass per pixel on the prompted object vs the "
            "other object (0.5: none); Compl. err: median |sum(map) - cos| / |cos| for maps meant to add up to the "
            f"similarity. IG: {config.ig_steps} Gauss-Legendre steps from a zero baseline; SmoothGrad: "
            f"{config.sg_samples} samples, noise {config.sg_stdev} of the image range; Gradient and SmoothGrad maps are "
            "magnitudes.\n\n")


def _similarity(z: Tensor) -> Tensor:
    """Deletion scores the readout's output as it is: the cosine similarity."""
    return z


def run_clip(name: str, methods: list[Method], config: Config,
             progress: Callable[[str, int, int], None] | None = None, examples: int = 2) -> ModelResult:
    """Every method's prompted maps and their scores on the bundled CLIP ``name`` (see the module docstring)."""
    from . import models
    from .clip import class_readout
    from .data import HELDOUT_SEED, generate

    start = time.perf_counter()
    torch.manual_seed(0)
    seed = HELDOUT_SEED if config.seed is None else config.seed
    model = models.load(name)
    head = class_readout(model)
    data = generate(config.n, seed=seed, two_objects=True)
    rows = targets_of(data.labels, data.masks)
    with torch.no_grad():
        sims = torch.cat([head(data.images[i:i + 256]) for i in range(0, config.n, 256)])
    row_sim = sims[rows.image, rows.target]
    top2 = sims.topk(2, dim=1).indices
    found = float(data.labels.gather(1, top2).mean())
    maps = _Maps(name, head, data.images[:2], config)
    notes = [f"{name}: {config.n} two-object images (seed {seed}), each object prompted in turn: "
             f"{len(rows.target)} (image, prompt) pairs; the two best class prompts hold {found:.0%} of the objects; "
             f"median similarity with the prompt {float(row_sim.median()):.3f}"]
    return measure(name, head, data.images, rows, row_sim, maps, notes, methods, config, progress, examples,
                   output=_similarity, attnlrp=attnlrp_maps(model, head), readout=READOUT, start=start)


def attnlrp_maps(model, head, variant: str = "attnlrp") -> Callable:
    """AttnLRP's maps for the similarity readout (see the module docstring); ``variant`` as in
    :class:`libragrad_fx.bench.attnlrp.AttnLRP`."""

    def run(name: str, images: Tensor, target: Tensor, sim: Tensor,
            config: Config) -> tuple[tuple[Tensor, Tensor, float] | None, str]:
        from .attnlrp import AttnLRP, LXTUnavailable
        from .models import card

        start = time.perf_counter()
        visual = card(name)["visual"]
        state = {k: v.detach().clone() for k, v in model.visual.state_dict().items()}
        text = head.text  # [P, D], unit rows
        state["head.weight"] = text @ state["head.weight"]
        state["head.bias"] = text @ state["head.bias"]
        kwargs = {**visual["kwargs"], "num_classes": text.shape[0]}
        try:
            lrp = AttnLRP(visual["timm_class"], kwargs, state, variant=variant, python=config.lxt_python,
                          threads=config.threads)
            relevance, dot = lrp.attribute(images, target)
        except (LXTUnavailable, RuntimeError) as error:
            return None, f"{name}: AttnLRP skipped: {error}"
        with torch.no_grad():
            norm = torch.cat([model.encode_image(images[i:i + 256]).norm(dim=-1) for i in range(0, len(images), 256)])
        relevance = relevance / norm.view(-1, 1, 1, 1)
        gap = float((dot / norm - sim).abs().max()) if len(sim) else 0.0
        maps = (relevance.sum(1), relevance.flatten(1).sum(1, dtype=torch.float64), time.perf_counter() - start)
        return maps, (f"{name}: AttnLRP (lxt's rules, uniform rule in attention; the L2 normalisation's norm a "
                      f"constant) computed in a separate process with {lrp.python}; its similarity differs from the "
                      f"model's by {gap:.1e} at most")

    return run

