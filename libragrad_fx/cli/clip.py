"""``libragrad-fx explain clip --prompt TEXT (--image PATH | --random)``: where an image matches a prompt.

The bundled CLIP (:mod:`libragrad_fx.bench.clip`): one map per ``--prompt`` of the cosine similarity
of the image with it, vanilla beside LibraGrad with ``--compare``. ``--random`` draws a held-out
two-object image from the benchmark generator (seeded by ``--seed``).
"""
from __future__ import annotations

import argparse
import json

from ..core.errors import UsageError
from .common import emit
from .validate import output_file

__all__ = ["is_clip", "run"]


def is_clip(model: str) -> bool:
    """Whether MODEL names a bundled CLIP."""
    try:
        from ..bench import models
    except ImportError:
        return False
    return model in models.names("clip")


def _image(args: argparse.Namespace):
    """(the image [1, 3, 64, 64], its object masks [k, 64, 64] or None for a file)."""
    from ..bench.data import HELDOUT_SEED, generate
    from .images import load_image

    if args.image:
        x, _ = load_image(args.image, (1, 3, 64, 64), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        return x, None
    drawn = generate(1, seed=HELDOUT_SEED + args.seed, two_objects=True)
    return drawn.images, drawn.masks[0][drawn.labels[0] > 0]


def run(args: argparse.Namespace) -> int:
    from ..bench import clip, models

    if not args.prompt:
        raise UsageError(f"{args.model} explains the match with a text: pass --prompt TEXT (e.g. --prompt 'a star')")
    if args.target is not None:
        raise UsageError("--target does not apply to a CLIP model: the prompt is the target")
    if getattr(args, "text", None) is not None or getattr(args, "pair", None) is not None or getattr(args, "html", None):
        raise UsageError(f"{args.model} explains an image: pass --image PATH or --random, with --prompt TEXT")
    if args.out is None:
        raise UsageError("--out FILE.png is required: where to write the picture")
    output_file(args.out, suffix=".png")
    model = models.load(args.model)
    try:
        model.tokenize(args.prompt)
    except ValueError as error:
        raise UsageError(f"--prompt: {error}") from error
    x, outlines = _image(args)
    method = args.method or "fullgrad"
    presets = ("vanilla", args.preset) if args.compare and args.preset != "vanilla" else (args.preset,)
    maps = clip.explain(model, x, args.prompt, method=method, presets=presets)
    clip.draw(x, maps, args.out, outlines)
    rows = [{"prompt": m.prompt, "preset": m.preset, "method": m.method, "similarity": m.similarity,
             **({} if m.rel_error is None else {"attributed": m.attributed, "rel_error": m.rel_error})} for m in maps]
    if args.json:
        emit(json.dumps({"model": args.model, "input": args.image or "random", "out": args.out,
                         "explanations": rows}, indent=2), None)
        return 0
    for r in rows:
        line = f"{r['preset']:>10}  {method}: '{r['prompt']}', similarity {r['similarity']:.4f}"
        if "rel_error" in r:
            line += f", attribution sum {r['attributed']:.4f}, relative error {r['rel_error']:.2e}"
        print(line)
    print(f"wrote {args.out}")
    return 0
