"""Small timm models trained on :mod:`libragrad_fx.bench.data`, shipped with the package.

Each bundled model is a stock timm class with random init, trained by
``tools/train_bench_models.py`` and stored as float16 safetensors next to a JSON model card
(``weights/<name>.json``) holding the timm class, its constructor kwargs, the training
recipe and the measured held-out accuracy. The models take the generator's images as they
come ((n, 3, 64, 64) floats in [0, 1], no normalisation) and return multi-label *logits*
(n, NUM_CLASSES); apply a sigmoid for probabilities.

A card with ``"kind": "clip"`` holds an image-text model instead (:mod:`libragrad_fx.bench.clip_model`,
trained by ``tools/train_clip.py``): :func:`load` returns it, :func:`names` lists it under ``kind="clip"``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from .data import NUM_CLASSES

__all__ = ["ARCHITECTURES", "WEIGHTS_DIR", "build", "card", "classifiers", "load", "names", "summary"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# Architectures the training script can build: timm class path + constructor kwargs.
# Kept small (64x64 inputs, patch 8 -> 8x8 tokens) so CPU training takes minutes.
_SMALL = dict(img_size=64, patch_size=8, in_chans=3, num_classes=NUM_CLASSES, embed_dim=128)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # A plain ViT block (GELU MLP, absolute position embedding) with rotary positions in attention
    # (RoPE-ViT), built with timm's Eva class, which carries the rotary embedding. Without RoPE the
    # same ViT learned these images far more slowly (docs/bench-models.md).
    "vit": {
        "timm_class": "timm.models.eva.Eva",
        "kwargs": dict(
            **_SMALL, depth=4, num_heads=4, mlp_ratio=4.0, qkv_bias=True, swiglu_mlp=False,
            use_rot_pos_emb=True, ref_feat_shape=(8, 8), global_pool="avg", head_init_scale=1.0,
        ),
    },
    "eva02": {
        "timm_class": "timm.models.eva.Eva",
        "kwargs": dict(
            **_SMALL, depth=4, num_heads=4, mlp_ratio=4 * 2 / 3, qkv_bias=True, swiglu_mlp=True,
            use_rot_pos_emb=True, ref_feat_shape=(8, 8), global_pool="avg",
            # timm scales Eva's head init by 1e-3; from scratch that shrinks the body's first
            # gradients (which flow through the head weights) by the same factor.
            head_init_scale=1.0,
        ),
    },
    # DeiT-III layout with rotary positions (timm's RoPE-ViT, naver-ai/rope-vit): class token read
    # out, layer scale, axial RoPE in a fused-qkv attention (timm's AttentionRope), no absolute
    # position table.
    "deit3": {
        "timm_class": "timm.models.eva.Eva",
        "kwargs": dict(
            **_SMALL, depth=4, num_heads=4, mlp_ratio=4.0, qkv_bias=True, attn_type="rope", init_values=0.1,
            class_token=True, global_pool="token", use_abs_pos_emb=False, use_rot_pos_emb=True,
            rope_grid_indexing="xy", rope_temperature=100.0, ref_feat_shape=(8, 8), head_init_scale=1.0,
        ),
    },
    # CLIP / SigLIP image-tower layout: no class token, attention pooling by a learned latent query
    # (MAP), rotary positions as in Meta's PE-Core towers (timm builds those with Eva too).
    "siglip": {
        "timm_class": "timm.models.eva.Eva",
        "kwargs": dict(
            **_SMALL, depth=4, num_heads=4, mlp_ratio=4.0, qkv_bias=True, swiglu_mlp=False,
            use_rot_pos_emb=True, ref_feat_shape=(8, 8), class_token=False, global_pool="map",
            head_init_scale=1.0,
        ),
    },
    "mixer": {
        "timm_class": "timm.models.mlp_mixer.MlpMixer",
        "kwargs": dict(
            **_SMALL, num_blocks=6, mlp_ratio=(0.5, 4.0), global_pool="avg",
        ),
    },
}


def _resolve(path: str) -> type[nn.Module]:
    module, _, cls = path.rpartition(".")
    return getattr(importlib.import_module(module), cls)


def build(timm_class: str, kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate ``timm_class(**kwargs)`` (random init; JSON lists become tuples)."""
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return _resolve(timm_class)(**kw)


def names(kind: str = "classifier") -> list[str]:
    """Names of the bundled models of a kind (``classifier`` or ``clip``) that have a weight file and a card."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(
        p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file()
        and json.loads(p.with_suffix(".json").read_text()).get("kind", "classifier") == kind
    )


def card(name: str) -> dict[str, Any]:
    """The JSON model card of a bundled model."""
    valid = names() + names("clip")
    if name not in valid:
        raise ValueError(f"unknown bench model {name!r}; valid names: {valid}")
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


def load(name: str) -> nn.Module:
    """Build a bundled model from its card, load its float16 weights as float32, eval mode.

    Offline: reads only files inside the package.
    """
    from safetensors.torch import load_file

    meta = card(name)
    if meta.get("kind") == "clip":
        from .clip_model import build as build_clip

        model = build_clip(meta)
    else:
        model = build(meta["timm_class"], meta["kwargs"])
    state = {k: v.float() for k, v in load_file(str(WEIGHTS_DIR / f"{name}.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    return model.float().eval()


def classifiers() -> list[str]:
    """The bundled shape classifiers: names whose card reports held-out detection numbers."""
    return [name for name in names() if "heldout" in card(name)]


def summary(n: int | None = None, n_two: int | None = None) -> str:
    """A markdown table of the bundled classifiers: architecture, training run, held-out accuracy.

    Everything is measured again here on the cards' held-out sets (``n`` mixed images and ``n_two``
    two-object images of the card's seed; None: as many as the card used), so the table reproduces
    the cards rather than copying them.
    """
    from .data import generate
    from .evaluate import detection, evaluate, two_object_heldout

    rows = ["| model | timm class | params | steps | training wall (CPU) | mean per-class acc | balanced acc "
            "| exact match | 2-object recall | 2-object exact |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    images: dict[tuple, Any] = {}  # the cards share their held-out sets: render each once

    def heldout(kind: str, count: int, seed: int):
        if (kind, count, seed) not in images:
            images[kind, count, seed] = (generate(count, seed=seed) if kind == "mixed"
                                         else two_object_heldout(count, seed=seed))
        return images[kind, count, seed]

    for name in classifiers():
        meta = card(name)
        held, two = meta["heldout"], meta.get("heldout_two_objects")
        model = load(name)
        rep = evaluate(model, heldout("mixed", n or held["n"], held["seed"]))
        det = detection(model, heldout("two", n_two or (two or {}).get("n", 500), held["seed"]))
        # A continuation's card counts its whole chain of runs (steps, wall and CPU time).
        steps = int(meta.get("steps_run", meta["steps"]) + _ancestors(meta, "steps_run"))
        wall = meta["train_seconds"] + _ancestors(meta, "train_seconds")
        cpu = meta["train_cpu_seconds"] + _ancestors(meta, "train_cpu_seconds")
        rows.append(f"| {name} | `{meta['timm_class'].rsplit('.', 1)[1]}` | {meta['params'] / 1e6:.2f}M "
                    f"| {steps} | {wall / 60:.0f} min ({cpu / 60:.0f} min) "
                    f"| {rep['mean_per_class_accuracy']:.3f} | {rep['mean_balanced_accuracy']:.3f} "
                    f"| {rep['exact_match']:.3f} | {det['object_recall']:.3f} | {det['exact_match']:.3f} |")
    return "\n".join(rows)


def _ancestors(meta: dict[str, Any], key: str) -> float:
    """``key`` summed over the warm-start chain of a card (``init_from``), excluding the card itself."""
    parent = meta.get("init_from")
    return 0.0 if not parent else parent.get(key, 0.0) + _ancestors(parent, key)


if __name__ == "__main__":
    print(summary())
